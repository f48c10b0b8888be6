# Sourced by the packet-generator VPP scripts (vpp-forward-check.sh,
# vpp-runtime-bench.sh): one VPP with our plugin in its own network
# namespace, 4k pages, cleaned up on exit. The namespace and VPP's shared
# memory prefix carry a per-run id (aff<5 hex>-NAME), so runs on one host
# do not collide; cleanup removes only this run's namespace and VPP.
#   pg_vpp_start NAME HEAP BUFFERS STATSEG "PLUGIN.so ..." "AFFINITY SECTION" ["UNIX EXTRA"] ["CPU SECTION"]
#   pg_vpp_cli < lines     one vppctl command per line, output on stdout
#   pg_lab_interfaces      the checks' common interfaces, as CLI lines
#   V ARGS...              one vppctl command
# Optional, in the environment: PG_PLUGIN_DIR (where affinity_plugin.so is,
# default target/vpp-plugins: A/B runs of two builds), PG_RT (run VPP
# SCHED_FIFO at this priority: a busy host cannot preempt it mid-frame,
# which VPP's clocks would count), PG_NICE (nice value), PG_ONLINE_CPUS
# (below).
P=${VPP_PREFIX:-/opt/vpp}

V() { "$P/bin/vppctl" -s "$PG_DIR/cli.sock" "$@" | tr -d '\r'; }

pg_vpp_cli() { while read -r line; do [ -n "$line" ] && V $line; done; }

# The VPP checks' interfaces, as CLI lines for pg_vpp_cli: the clients'
# side pg0 (198.18.0.1/15, the affinity feature on it), the backends' pg1
# (198.51.100.1/24, backend 198.51.100.2 at 02:00:00:00:00:02) and the
# VIPs' pg3 (203.0.113.1/24), all up.
pg_lab_interfaces() {
    cat <<CLI
create packet-generator interface pg0
create packet-generator interface pg1
create packet-generator interface pg3
set interface ip address pg0 198.18.0.1/15
set interface ip address pg1 198.51.100.1/24
set interface ip address pg3 203.0.113.1/24
set interface state pg0 up
set interface state pg1 up
set interface state pg3 up
set ip neighbor pg1 198.51.100.2 02:00:00:00:00:02
set interface affinity pg0
CLI
}

pg_vpp_start() {
    local name=$1 heap=$2 buffers=$3 statseg=$4 plugins="" p
    for p in $5; do plugins="$plugins plugin $p { enable }"; done
    PG_ID=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n' | cut -c1-5)
    PG_DIR=$(mktemp -d "/tmp/affinity-$name-$PG_ID.XXXXXX")
    PG_NS=aff$PG_ID-$name
    PG_PID=""
    # Only this run's VPP (recorded PID) and whatever runs in its own namespace.
    trap '[ -n "$PG_PID" ] && kill -9 "$PG_PID" 2>/dev/null; ip netns pids "$PG_NS" 2>/dev/null | xargs -r kill -9; ip netns del "$PG_NS" 2>/dev/null; rm -rf "$PG_DIR"' EXIT
    cat >"$PG_DIR/startup.conf" <<CONF
unix { cli-listen $PG_DIR/cli.sock log $PG_DIR/vpp.log nodaemon ${7:-} }
api-segment { prefix $PG_NS }
socksvr { socket-name $PG_DIR/api.sock }
memory { main-heap-size $heap main-heap-page-size 4k }
buffers { buffers-per-numa $buffers page-size 4k }
statseg { size $statseg page-size 4k socket-name $PG_DIR/stats.sock }
plugins { path $P/lib/x86_64-linux-gnu/vpp_plugins:${PG_PLUGIN_DIR:-$PWD/target/vpp-plugins}
  plugin default { disable }$plugins plugin affinity_plugin.so { enable } }
affinity { $6 }
cpu { ${8:-} }
CONF
    ip netns add "$PG_NS"
    if [ -n "${PG_ONLINE_CPUS:-}" ]; then
        # VPP pins each worker to a core of its own, none shared with the
        # main thread, and refuses more workers than the host has cores
        # (vlib/threads.c). PG_ONLINE_CPUS (e.g. 0-3) is the CPU list VPP
        # reads as online, in this run's own mount namespace (ip netns exec
        # makes one), and test/vpp-cpu-wrap.c maps each pin onto a real
        # core (cpu modulo the host's count), so threads share cores.
        echo "$PG_ONLINE_CPUS" >"$PG_DIR/online"
        cc -O2 -shared -fPIC -o "$PG_DIR/cpuwrap.so" test/vpp-cpu-wrap.c -ldl || return 1
        PG_REAL_CPUS=$(nproc) LD_PRELOAD="$PG_DIR/cpuwrap.so" ip netns exec "$PG_NS" ${PG_NICE:+nice -n "$PG_NICE"} sh -c 'mount --bind "$1/online" /sys/devices/system/cpu/online && exec "$2/bin/vpp" -c "$1/startup.conf"' sh "$PG_DIR" "$P" >"$PG_DIR/out.log" 2>&1 &
    else
        ip netns exec "$PG_NS" ${PG_RT:+chrt -f "$PG_RT"} ${PG_NICE:+nice -n "$PG_NICE"} "$P/bin/vpp" -c "$PG_DIR/startup.conf" >"$PG_DIR/out.log" 2>&1 &
    fi
    PG_PID=$!
    for _ in $(seq 50); do "$P/bin/vppctl" -s "$PG_DIR/cli.sock" show version >/dev/null 2>&1 && return; sleep 0.2; done
}
