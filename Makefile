# affinity: distributed NAT and L4 load balancing for VPP.
# `make help` lists the targets.

SHELL := /bin/bash
CARGO ?= cargo
# Where VPP is installed (headers, vppapigen, plugin dir). Empty = look in the standard places.
VPP_PREFIX ?= $(firstword $(wildcard /opt/vpp /usr/local/include/vnet/.. /usr/include/vnet/..))
export VPP_PREFIX
# Debian packages the build, the tests and the lab need beyond the Rust toolchain.
DEBS := iproute2 python3 procps psmisc ethtool
# With VPP found, bindgen (over VPP's headers) needs libclang too.
DEBS += $(if $(VPP_PREFIX),libclang-dev)
DEPS_STAMP := target/.debs-installed$(if $(VPP_PREFIX),-vpp)
FUZZ_SECONDS ?= 60

.PHONY: help build test demo plugin install bench fuzz clean deps lint unit e2e fuzz-build vpp-test

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

deps: $(DEPS_STAMP) ## Install the Debian packages the tests need (once, as root)
$(DEPS_STAMP):
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "make: installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "make: need root to apt-get install$$missing" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@mkdir -p target && touch $@

build: ## Build everything (the VPP plugin only where VPP is found)
	$(CARGO) build --release --workspace
	@$(MAKE) --no-print-directory plugin

test: deps lint unit fuzz-build e2e vpp-test ## fmt, clippy, unit/property tests, fuzz build, lab end-to-end tests
	@echo "make test: all stages passed"

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --workspace

fuzz-build: ## Build the fuzz targets (plain cargo; `make fuzz` runs them)
	$(CARGO) build --manifest-path fuzz/Cargo.toml --bins

e2e: deps ## End-to-end tests in the namespace lab with host agents
	test/run-e2e.sh

vpp-test: deps ## The same tests with VPP agents (skipped without VPP)
	test/run-vpp.sh

demo: deps build ## Start the lab, drive traffic, show the result, clean up
	test/demo.sh

plugin: ## Build affinity_plugin.so against VPP (VPP_PREFIX, default /opt/vpp)
	@if [ -z "$(VPP_PREFIX)" ] || [ ! -f "$(VPP_PREFIX)/include/vnet/vnet.h" ]; then \
	  echo "plugin: skipped, VPP headers not found (set VPP_PREFIX to a VPP install)"; \
	else \
	  $(CARGO) build --release -p affinity-plugin --features vpp && \
	  mkdir -p target/vpp-plugins && cp target/release/libaffinity_plugin.so target/vpp-plugins/affinity_plugin.so && \
	  echo "plugin: target/vpp-plugins/affinity_plugin.so, target/release/affinity.api.json"; \
	fi

install: plugin ## Install the plugin and its .api.json where VPP looks for them
	@if [ -f target/vpp-plugins/affinity_plugin.so ]; then \
	  d=$$(dirname $$(find $(VPP_PREFIX)/lib* -maxdepth 3 -type d -name vpp_plugins | head -1)); \
	  install -D -m 0755 target/vpp-plugins/affinity_plugin.so $$d/vpp_plugins/affinity_plugin.so && \
	  install -D -m 0644 target/release/affinity.api.json $(VPP_PREFIX)/share/vpp/api/plugins/affinity.api.json && \
	  echo "install: $$d/vpp_plugins/affinity_plugin.so, $(VPP_PREFIX)/share/vpp/api/plugins/affinity.api.json"; \
	else echo "install: nothing to install (no VPP)"; fi

bench: ## Benchmarks; ends with one `name value unit` line per figure
	@rm -f target/bench-figures.txt
	$(CARGO) bench --workspace
	@test/vpp-runtime-bench.sh | tee -a target/bench-figures.txt
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
