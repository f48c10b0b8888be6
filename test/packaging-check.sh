#!/usr/bin/env bash
# Packaging checks (issue 15): `make install` into a temporary root puts the
# binaries, example configs, systemd units and the dissector in place, the
# units pass `systemd-analyze verify`, `make uninstall` removes them; `make
# help` lists every target; the Makefile exports no empty VPP_PREFIX.
set -u
cd "$(dirname "$0")/.."
PASSED=0
FAILED=0
pass() { echo "PASS $1: $2"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL $1: $2"; FAILED=$((FAILED + 1)); }
ROOT=$(mktemp -d /tmp/affinity-install.XXXXXX)
trap 'rm -rf "$ROOT"' EXIT
TARGET=${CARGO_TARGET_DIR:-target}

# make help: every target of the Makefile, with its line.
targets=$(grep -oE '^[a-z][a-z0-9-]*:' Makefile | tr -d : | sort -u)
help=$(make --no-print-directory help)
missing=$(for t in $targets; do grep -qE "^  make $t +[^ ]" <<<"$help" || echo "$t"; done)
if [ -z "$missing" ]; then
    pass make-help "lists all $(wc -w <<<"$targets") targets"
else
    fail make-help "missing: $missing"
fi

# VPP_PREFIX: unset for cargo when no VPP is found (an empty value differs
# from unset for build.rs's rerun-if-env-changed, and rebuilt everything).
env_seen=$(make --no-print-directory -s build CARGO='sh -c "env | grep ^VPP_PREFIX= || echo unset" --' 2>/dev/null | sed -n 1p)
case "$env_seen" in
    unset) pass vpp-prefix-env "without VPP, make runs cargo with VPP_PREFIX unset, as a plain cargo build does" ;;
    VPP_PREFIX=?*) pass vpp-prefix-env "VPP found: cargo sees $env_seen" ;;
    *) fail vpp-prefix-env "cargo saw: $env_seen" ;;
esac

# And for real: after `make build`, a plain `cargo build --release` (and
# `make build` again after it) compiles nothing.
if make --no-print-directory -s build >/dev/null 2>&1; then
    plain=$(env -u VPP_PREFIX cargo build --release --workspace 2>&1 | grep -c '^ *Compiling')
    again=$(make --no-print-directory build 2>&1 | grep -c '^ *Compiling')
    if [ "$plain" = 0 ] && [ "$again" = 0 ]; then
        pass no-rebuild "make build, cargo build --release, make build: the second and third compiled nothing"
    else
        fail no-rebuild "cargo build --release after make build compiled $plain crates, make build after it $again"
    fi
else
    fail no-rebuild "make build failed"
fi

# make install / uninstall into a temporary root, from the debug build.
cargo build -q -p affinity-manager -p affinity-host-agent || exit 1
if make --no-print-directory -s install DESTDIR="$ROOT" PREFIX=/usr PROFILE=debug >"$ROOT.log" 2>&1; then
    want="usr/bin/affinity-manager usr/bin/affinity-agent etc/affinity/manager.toml etc/default/affinity-agent
          lib/systemd/system/affinity-manager.service lib/systemd/system/affinity-agent.service
          usr/share/doc/affinity/examples/manager.toml"
    absent=$(for f in $want; do [ -e "$ROOT/$f" ] || echo "$f"; done)
    lua=$(find "$ROOT/usr/lib" -path '*/wireshark/plugins/affinity.lua' | head -1)
    [ -n "$lua" ] || absent="$absent wireshark/plugins/affinity.lua"
    if [ -z "$absent" ] && grep -q '^ExecReload=/bin/kill -HUP $MAINPID' "$ROOT"/lib/systemd/system/affinity-*.service \
        && [ "$(grep -c '^ExecReload=/bin/kill -HUP' "$ROOT"/lib/systemd/system/affinity-*.service | awk -F: '{s+=$2} END {print s}')" = 2 ] \
        && "$ROOT/usr/bin/affinity-manager" --check-config "$ROOT/etc/affinity/manager.toml" >/dev/null; then
        pass install "binaries, configs (the example checks ok), units with ExecReload=SIGHUP, ${lua#"$ROOT"}"
    else
        fail install "missing: ${absent:-none}"
    fi
else
    fail install "make install failed: $(tail -3 "$ROOT.log")"
fi
rm -f "$ROOT.log"

# systemd-analyze verify on the installed units, their binaries pointed at
# the temporary root (verify checks that ExecStart= commands exist; --root
# would need a whole systemd tree there).
if command -v systemd-analyze >/dev/null; then
    mkdir -p "$ROOT/verify"
    for u in affinity-manager affinity-agent; do
        sed "s|/usr/bin/affinity|$ROOT/usr/bin/affinity|g" "$ROOT/lib/systemd/system/$u.service" >"$ROOT/verify/$u.service"
    done
    if out=$(systemd-analyze verify --man=no "$ROOT"/verify/*.service 2>&1) && [ -z "$out" ]; then
        pass systemd-verify "systemd-analyze verify: both installed units clean"
    else
        fail systemd-verify "$out"
    fi
    rm -rf "$ROOT/verify"
else
    echo "SKIP systemd-verify: systemd-analyze missing (make deps installs systemd)"
fi

make --no-print-directory -s uninstall DESTDIR="$ROOT" PREFIX=/usr >/dev/null
left=$(cd "$ROOT" && find . -type f | grep -v -e '^./etc/affinity/manager.toml$' -e '^./etc/default/affinity-agent$' | sort)
if [ -z "$left" ]; then
    pass uninstall "removed everything but the configs in /etc"
else
    fail uninstall "left: $left"
fi

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
