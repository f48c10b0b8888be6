# affinity: distributed NAT and L4 load balancing for VPP.
# `make help` lists the targets.

SHELL := /bin/bash
CARGO ?= cargo
# Where VPP is installed (headers, vppapigen, plugin dir). Empty = look in the standard places.
VPP_PREFIX ?= $(firstword $(wildcard /opt/vpp /usr/local/include/vnet/.. /usr/include/vnet/..))
export VPP_PREFIX
# Debian packages the build, the tests and the lab need beyond the Rust toolchain.
DEBS := iproute2 python3 procps psmisc ethtool
DEPS_STAMP := target/.debs-installed
FUZZ_SECONDS ?= 60

.PHONY: help build test demo plugin install bench fuzz clean deps lint unit e2e fuzz-build vpp-test

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

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

test: deps lint unit fuzz-build e2e vpp-test ## fmt, clippy, unit/property tests, fuzz build, lab end-to-end tests
	@echo "make test: all stages passed"

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --workspace

fuzz-build: ## Build the fuzz targets (plain cargo; `make fuzz` runs them)
	$(CARGO) build --manifest-path fuzz/Cargo.toml --bins

e2e: deps
	@if [ -x test/run-e2e.sh ]; then test/run-e2e.sh; else echo "e2e: skipped, test/run-e2e.sh not present"; fi

vpp-test:
	@if [ -x test/run-vpp.sh ]; then test/run-vpp.sh; else echo "vpp-test: skipped, test/run-vpp.sh not present"; fi

demo: deps build ## Start the lab, drive traffic, show the result, clean up
	@if [ -x test/demo.sh ]; then test/demo.sh; else echo "demo: test/demo.sh is not written yet; nothing to show" >&2; exit 1; fi

plugin: ## Build affinity_plugin.so against VPP (VPP_PREFIX=/opt/vpp)
	$(CARGO) build --release -p affinity-plugin

install: plugin ## Install the plugin and its .api.json where VPP looks for them
	@if [ -x vpp-plugin/install.sh ]; then vpp-plugin/install.sh; else echo "install: skipped, vpp-plugin/install.sh not present" >&2; exit 1; fi

bench: ## Benchmarks; ends with one `name value unit` line per figure
	@rm -f target/bench-figures.txt
	$(CARGO) bench --workspace
	@echo "== figures =="; cat target/bench-figures.txt 2>/dev/null || echo "no figures recorded"

fuzz: ## Run each fuzz target for FUZZ_SECONDS (needs cargo-fuzz; installed if missing)
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@for t in $$(cd fuzz && $(CARGO) fuzz list); do \
	  echo "fuzz: $$t for $(FUZZ_SECONDS)s"; \
	  (cd fuzz && $(CARGO) +nightly fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS)) || exit 1; \
	done

clean: ## Remove build output
	$(CARGO) clean
	rm -rf fuzz/target
