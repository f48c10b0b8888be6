# affinity: distributed NAT and L4 load balancing for VPP.
# `make help` lists the targets.

SHELL := /bin/bash
CARGO ?= cargo
# Where VPP is installed (headers, vppapigen, plugin dir). Empty = look in the standard places.
VPP_PREFIX ?= $(firstword $(wildcard /opt/vpp /usr/local/include/vnet/.. /usr/include/vnet/..))
# Exported only when set: vpp-plugin/build.rs reruns when VPP_PREFIX
# changes, and "" (exported empty) differs from unset (a plain `cargo
# build`), so exporting it empty rebuilt the plugin and everything above it
# at each switch between `make build` and `cargo build --release`.
ifeq ($(strip $(VPP_PREFIX)),)
unexport VPP_PREFIX
else
export VPP_PREFIX
endif
# Where cargo puts its output (honours CARGO_TARGET_DIR like cargo does).
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
# Debian packages the build, the tests and the lab need beyond the Rust
# toolchain: the lab (iproute2, procps, psmisc, ethtool, python3), the
# dissector test (tshark, tcpdump) and the systemd unit check (systemd).
DEBS := iproute2 python3 procps psmisc ethtool tshark tcpdump systemd
# With VPP found, bindgen (over VPP's headers) needs libclang too, and the
# binary API test runs vpp_papi from a virtual environment (python3-venv).
DEBS += $(if $(VPP_PREFIX),libclang-dev python3-venv)
# The stamp names the package list, so adding a package installs it again.
DEPS_STAMP := target/.debs-$(shell echo $(DEBS) | md5sum | cut -c1-8)
# vpp_papi for the binary API test, from the registry, where VPP is found
# (2.4.2 drives our API; Debian does not package it).
PAPI_VENV := target/papi-venv
VPP_PAPI_VERSION ?= 2.4.2
# Where `make install` puts things (Debian's places under PREFIX=/usr).
DESTDIR ?=
PREFIX ?= /usr/local
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
UNITDIR ?= $(if $(filter /usr,$(PREFIX)),/lib/systemd/system,$(PREFIX)/lib/systemd/system)
# Wireshark loads Lua plugins only from its global folder (and the user's),
# whatever PREFIX is: the folder tshark names, else Debian's.
WIRESHARK_LUADIR ?= $(or $(shell tshark -G folders 2>/dev/null | awk -F'\t' '/^Global Lua Plugins:/ {print $$NF}'),/usr/lib/$(shell dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)/wireshark/plugins)
FUZZ_SECONDS ?= 60

.PHONY: help build test demo plugin install uninstall install-plugin bench fuzz clean deps lint unit e2e fuzz-build vpp-test packaging

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

deps: $(DEPS_STAMP) ## Install the Debian packages the tests need (once, as root)
$(DEPS_STAMP):
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "make: installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "make: need root to apt-get install$$missing" >&2; exit 1; fi; \
	  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections 2>/dev/null || true; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@if [ -n "$(VPP_PREFIX)" ] && [ ! -x $(PAPI_VENV)/bin/python3 ]; then \
	  echo "make: vpp-papi $(VPP_PAPI_VERSION) into $(PAPI_VENV) (VPP found at $(VPP_PREFIX))"; \
	  python3 -m venv $(PAPI_VENV) && $(PAPI_VENV)/bin/pip install -q vpp-papi==$(VPP_PAPI_VERSION); \
	fi
	@mkdir -p target && touch $@

build: ## Build everything (the VPP plugin only where VPP is found)
	$(CARGO) build --release --workspace
	@$(MAKE) --no-print-directory plugin

test: deps lint unit fuzz-build packaging e2e vpp-test ## fmt, clippy, unit/property tests, fuzz build, packaging, lab end-to-end tests
	@echo "make test: all stages passed"

lint: ## cargo fmt --check, clippy -D warnings, and rustdoc without warnings
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --quiet

unit: ## Unit and property tests (cargo test --workspace)
	$(CARGO) test --workspace

packaging: deps ## make install/uninstall into a temporary root; systemd-analyze verify on the units; make help and VPP_PREFIX checks
	test/packaging-check.sh

fuzz-build: ## Build the fuzz targets (plain cargo; `make fuzz` runs them)
	$(CARGO) build --manifest-path fuzz/Cargo.toml --bins

e2e: deps ## End-to-end tests in the namespace lab with host agents
	test/run-e2e.sh

vpp-test: deps ## The same tests with VPP agents (skipped without VPP)
	PAPI_PYTHON=$(abspath $(PAPI_VENV))/bin/python3 test/run-vpp.sh

demo: deps build ## Start the lab, drive traffic, show the result, clean up
	test/demo.sh

plugin: ## Build affinity_plugin.so against VPP (VPP_PREFIX, default /opt/vpp)
	@if [ -z "$(VPP_PREFIX)" ] || [ ! -f "$(VPP_PREFIX)/include/vnet/vnet.h" ]; then \
	  echo "plugin: skipped, VPP headers not found (set VPP_PREFIX to a VPP install)"; \
	else \
	  $(CARGO) build --release -p affinity-plugin --features vpp && \
	  mkdir -p $(TARGET_DIR)/vpp-plugins && cp $(TARGET_DIR)/release/libaffinity_plugin.so $(TARGET_DIR)/vpp-plugins/affinity_plugin.so && \
	  echo "plugin: $(TARGET_DIR)/vpp-plugins/affinity_plugin.so, $(TARGET_DIR)/release/affinity.api.json"; \
	fi

BIN_FILES := affinity-manager affinity-agent
# Which build `make install` takes the binaries from (release or debug).
PROFILE ?= release

install: ## Install binaries, example configs, systemd units, the Wireshark dissector (DESTDIR, PREFIX); the VPP plugin where VPP is found
	@for b in $(BIN_FILES); do [ -x $(TARGET_DIR)/$(PROFILE)/$$b ] || { echo "install: $(TARGET_DIR)/$(PROFILE)/$$b missing: run make build first" >&2; exit 1; }; done
	install -D -m 0755 $(TARGET_DIR)/$(PROFILE)/affinity-manager $(DESTDIR)$(PREFIX)/bin/affinity-manager
	install -D -m 0755 $(TARGET_DIR)/$(PROFILE)/affinity-agent $(DESTDIR)$(PREFIX)/bin/affinity-agent
	install -D -m 0644 manager/examples/manager.toml $(DESTDIR)$(PREFIX)/share/doc/affinity/examples/manager.toml
	install -D -m 0644 host-agent/examples/affinity-agent.default $(DESTDIR)$(PREFIX)/share/doc/affinity/examples/affinity-agent.default
	@if [ ! -e $(DESTDIR)$(SYSCONFDIR)/affinity/manager.toml ]; then \
	  install -D -m 0644 manager/examples/manager.toml $(DESTDIR)$(SYSCONFDIR)/affinity/manager.toml; fi
	@if [ ! -e $(DESTDIR)$(SYSCONFDIR)/default/affinity-agent ]; then \
	  install -D -m 0644 host-agent/examples/affinity-agent.default $(DESTDIR)$(SYSCONFDIR)/default/affinity-agent; fi
	sed 's|@BINDIR@|$(PREFIX)/bin|g; s|@SYSCONFDIR@|$(SYSCONFDIR)|g' packaging/affinity-manager.service | install -D -m 0644 /dev/stdin $(DESTDIR)$(UNITDIR)/affinity-manager.service
	sed 's|@BINDIR@|$(PREFIX)/bin|g; s|@SYSCONFDIR@|$(SYSCONFDIR)|g' packaging/affinity-agent.service | install -D -m 0644 /dev/stdin $(DESTDIR)$(UNITDIR)/affinity-agent.service
	install -D -m 0644 dissector/affinity.lua $(DESTDIR)$(WIRESHARK_LUADIR)/affinity.lua
	@$(MAKE) --no-print-directory install-plugin
	@echo "install: done under $(DESTDIR)$(PREFIX) (configs in $(DESTDIR)$(SYSCONFDIR), units in $(DESTDIR)$(UNITDIR))"

install-plugin: plugin ## Install the VPP plugin and its .api.json where VPP looks for them (only where VPP is found)
	@if [ -f $(TARGET_DIR)/vpp-plugins/affinity_plugin.so ]; then \
	  d=$$(dirname $$(find $(VPP_PREFIX)/lib* -maxdepth 3 -type d -name vpp_plugins | head -1)); \
	  install -D -m 0755 $(TARGET_DIR)/vpp-plugins/affinity_plugin.so $(DESTDIR)$$d/vpp_plugins/affinity_plugin.so && \
	  install -D -m 0644 $(TARGET_DIR)/release/affinity.api.json $(DESTDIR)$(VPP_PREFIX)/share/vpp/api/plugins/affinity.api.json && \
	  echo "install: $(DESTDIR)$$d/vpp_plugins/affinity_plugin.so, $(DESTDIR)$(VPP_PREFIX)/share/vpp/api/plugins/affinity.api.json"; \
	else echo "install: no VPP plugin to install (no VPP)"; fi

uninstall: ## Remove what `make install` installed (configs in SYSCONFDIR are kept)
	rm -f $(DESTDIR)$(PREFIX)/bin/affinity-manager $(DESTDIR)$(PREFIX)/bin/affinity-agent
	rm -f $(DESTDIR)$(UNITDIR)/affinity-manager.service $(DESTDIR)$(UNITDIR)/affinity-agent.service
	rm -f $(DESTDIR)$(WIRESHARK_LUADIR)/affinity.lua
	rm -rf $(DESTDIR)$(PREFIX)/share/doc/affinity
	@echo "uninstall: done (kept $(DESTDIR)$(SYSCONFDIR)/affinity/manager.toml and $(DESTDIR)$(SYSCONFDIR)/default/affinity-agent if present)"

bench: ## Benchmarks (cargo benches, VPP runtime where found, the lab SYN flood as root); ends with one `name value unit` line per figure
	@rm -f target/bench-figures.txt
	$(CARGO) bench --workspace
	@# With VPP found: the plugin built, then our node next to lb and nat44-ed.
	@$(MAKE) --no-print-directory plugin
	@test/vpp-runtime-bench.sh | tee -a target/bench-figures.txt
	@test/flood-bench.sh | tee -a target/bench-figures.txt
	@# The same flood at a VPP agent (the plugin), where VPP is found.
	@AGENT_KIND=vpp test/flood-bench.sh | sed 's/^/vpp_/' | tee -a target/bench-figures.txt
	@echo "== figures =="; cat target/bench-figures.txt 2>/dev/null || echo "no figures recorded"

fuzz: ## Run each fuzz target for FUZZ_SECONDS (needs cargo-fuzz; installed if missing)
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@for t in $$(cd fuzz && $(CARGO) fuzz list); do \
	  echo "fuzz: $$t for $(FUZZ_SECONDS)s"; \
	  (cd fuzz && mkdir -p corpus/$$t && $(CARGO) +nightly fuzz run $$t corpus/$$t $$([ -d seeds/$$t ] && echo seeds/$$t) -- -max_total_time=$(FUZZ_SECONDS)) || exit 1; \
	done

clean: ## Remove build output
	$(CARGO) clean
	rm -rf fuzz/target
