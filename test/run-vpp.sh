#!/usr/bin/env bash
# The end-to-end tests with VPP forwarding agents (the plugin) instead of
# host agents. Needs VPP (VPP_PREFIX, default /opt/vpp) and `make plugin`.
set -u
cd "$(dirname "$0")/.."
VPP_PREFIX=${VPP_PREFIX:-/opt/vpp}
if [ ! -x "$VPP_PREFIX/bin/vpp" ] || [ ! -f "$VPP_PREFIX/include/vnet/vnet.h" ]; then
    echo "vpp-test: skipped, no VPP install at $VPP_PREFIX (bin/vpp and include/vnet/vnet.h)"
    exit 0
fi
VPP_PREFIX=$VPP_PREFIX cargo build --release -q -p affinity-plugin --features vpp || exit 1
T=${CARGO_TARGET_DIR:-target}
mkdir -p "$T/vpp-plugins"
cp "$T/release/libaffinity_plugin.so" "$T/vpp-plugins/affinity_plugin.so"
VPP_PREFIX=$VPP_PREFIX test/vpp-forward-check.sh; fwd=$?
VPP_PREFIX=$VPP_PREFIX test/vpp-errors-check.sh; err=$?
VPP_PREFIX=$VPP_PREFIX test/vpp-nat-checksum-check.sh; natck=$?
VPP_PREFIX=$VPP_PREFIX test/vpp-mixed-frame-check.sh; mixed=$?
AGENT_KIND=vpp VPP_PREFIX=$VPP_PREFIX test/run-e2e.sh; e2e=$?
[ "$fwd" = 0 ] && [ "$err" = 0 ] && [ "$natck" = 0 ] && [ "$mixed" = 0 ] && [ "$e2e" = 0 ]
