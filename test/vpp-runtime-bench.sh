#!/usr/bin/env bash
# Clocks per packet of the affinity node next to VPP's own: the lb
# plugin's lb4-nat4-port (a VIP with NAT to one application server) and
# nat44-ed-in2out, in the same VPP run, each fed by the packet generator
# with 64-byte TCP packets of 1,179,648 flows (131072 sources x 9 ports;
# BENCH_SOURCES sets the sources, a power of two up to 131072: at 128,
# 1152 flows, every table is in cache and what is left is each node's
# own work).
# Needs VPP (VPP_PREFIX, default /opt/vpp) and `make plugin`. Prints
# `name value unit` lines.
#
# Then the same affinity and lb traffic with two workers (`cpu { main-core
# 0 workers 2 }`; on a 2-core host VPP is shown 4 CPUs and its pins are
# folded onto the real ones, see PG_ONLINE_CPUS in vpp-pg.sh: worker 0 on
# core 1, worker 1 on core 0 with the main thread), the flows split in two
# halves, one per worker, each stream running for timed windows: each
# worker's clocks/packet when it runs alone, then when both run at once,
# and the ratio (how much the other worker's traffic costs this one:
# shared cache lines, and on a 2-core host also the CPU shared with the
# main thread and the rest of the machine; lb's ratio, whose state is per
# thread, shows how much of it the host alone accounts for).
# BENCH_WORKERS=0 skips that part. Each figure is the median of
# BENCH_ROUNDS (9) rounds, with the range as NAME_min and NAME_max. Nine,
# not five: on a shared host a round now and then runs 10-50 % slow for
# one node and not the other (each node's part of a round lasts well under
# a second), and the median of five moves with three such rounds, the
# median of nine only with five.
# BENCH_FIXED_TABLE_SIZE sets startup.conf's fixed-table-size (2400000:
# the 1.18 M flows with room; the table itself keeps twice its capacity).
#
# VPP's clocks are wall-clock cycles: a frame during which the kernel ran
# another task counts that task's time too. On a shared host the
# one-thread VPP therefore runs SCHED_FIFO (BENCH_RT, priority 50; empty =
# normal scheduling): it spins only while a stream runs, a few seconds in
# all, and the kernel's RT throttling leaves others 5 % of that core. The
# two workers spin all the time, so they only get nice -20 (BENCH_NICE).
#
# lb's sticky table is sized for the flows (lb conf buckets-log2 20: 1 M
# buckets of 4 entries, 64 MiB per thread), as lb needs to keep each flow
# on its application server; with the default 1024 buckets it forgets
# nearly every flow and the node costs ~45 clocks, a table in L1. lb's
# table lives in VPP's main heap, on 4 KiB pages here (the lab's setting,
# no hugepages reserved); ours is advised for transparent huge pages
# (forwarding-agent/src/huge_pages.rs). With a hugepage main heap lb's
# figure would be lower, its TLB misses gone.
set -u
cd "$(dirname "$0")/.."
P=${VPP_PREFIX:-/opt/vpp}
[ -x "$P/bin/vpp" ] && [ -f target/vpp-plugins/affinity_plugin.so ] || { echo "vpp-runtime-bench: skipped, needs $P/bin/vpp and make plugin"; exit 0; }
source test/vpp-pg.sh

# The interfaces (the checks' pg0, pg1 and pg3 from pg_lab_interfaces;
# pg2, nat44-ed's inside, and pg4, lb's clients), the affinities, the lb
# VIP and the nat44-ed set-up;
# stream NAME[0|1] sends the flows of its half (0: 198.18/16, 1:
# 198.19/16) or all of them (no suffix), on worker W.
setup() {
    { pg_lab_interfaces; cat <<CLI; } | pg_vpp_cli | grep -v "^$" | sed "s/^/  vpp: /" >&2
create packet-generator interface pg2
create packet-generator interface pg4
set interface ip address pg2 192.0.2.1/25
set interface ip address pg4 192.0.2.129/25
set interface state pg2 up
set interface state pg4 up
set ip neighbor pg3 203.0.113.99 02:00:00:00:00:03
test affinity fill 198.18.0.0 $SOURCES ports 1024 9 dst 203.0.113.10 80 nat 198.51.100.2 8080
lb conf buckets-log2 20 timeout 3600
lb vip 203.0.113.11/32 protocol tcp port 80 encap nat4 type clusterip target_port 8080
lb as 203.0.113.11/32 protocol tcp port 80 198.51.100.2
CLI
}
# stream NAME NODE-INTERFACE DST FLAGS WORKER SOURCES LIMIT
stream() {
    V packet-generator new "{ name $1 limit $7 size 64-64 interface $2 node ip4-input worker $5 data { TCP: $6 -> $3 TCP: 1024 - 1032 -> 80 $4 incrementing 24 } }" >/dev/null
}
SOURCES=${BENCH_SOURCES:-131072}
case $SOURCES in 2|4|8|16|32|64|128|256|512|1024|2048|4096|8192|16384|32768|65536|131072) ;;
    *) echo "vpp-runtime-bench: BENCH_SOURCES must be a power of two from 2 to 131072" >&2; exit 2 ;; esac
# addr N: the address N past 198.18.0.0 (the sources' first).
addr() { local a=$((0xc6120000 + $1)); echo "$((a >> 24 & 255)).$((a >> 16 & 255)).$((a >> 8 & 255)).$((a & 255))"; }
ALL="198.18.0.0 - $(addr $((SOURCES - 1)))"
HALF0="198.18.0.0 - $(addr $((SOURCES / 2 - 1)))" HALF1="$(addr $((SOURCES / 2))) - $(addr $((SOURCES - 1)))"
done_stream() { V show packet-generator | awk -v s="$1" '$1 == s {print $2}' | grep -q No; }
# Runs the given streams at once, until all are done (bounded, 60 s).
run() {
    local s
    for s in "$@"; do V packet-generator enable-stream "$s"; done
    for _ in $(seq 240); do
        sleep 0.25
        for s in "$@"; do done_stream "$s" || continue 2; done
        return
    done
}
# clocks NODE THREAD: the node's clocks/packet on that thread in the
# runtime text on stdin.
clocks() { awk -v n="$1" -v t="$2" '/^Thread / {th = $2} th == t && $1 == n {printf "%.0f\n", $6}'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.3f\n", a / b; else print "nan" }'; }
# figure NAME UNIT VALUES...: the median of the rounds, then their range
# (NAME_min, NAME_max), as `name value unit` lines.
figure() {
    local name=$1 unit=$2
    shift 2
    printf '%s\n' "$@" | grep -v nan | sort -g | awk -v n="$name" -v u="$unit" '
        { v[NR] = $1 }
        END {
            if (NR == 0) { print n " nan " u; exit }
            m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            f = u == "x" ? "%s %.2f %s\n" : "%s %.0f %s\n"
            printf f, n, m, u; printf f, n "_min", v[1], u; printf f, n "_max", v[NR], u
        }'
}
ROUNDS=${BENCH_ROUNDS:-9}

# -- one thread (the main thread runs everything) ------------------------
PG_RT=${BENCH_RT-50} pg_vpp_start vppbench 2G 32768 64M "nat_plugin.so lb_plugin.so" "agent-address 192.0.2.1 fixed-table-size ${BENCH_FIXED_TABLE_SIZE:-2400000}"
setup
V nat44 plugin enable sessions 3000000 >/dev/null
V nat44 add address 203.0.113.20 - 203.0.113.60 >/dev/null
V set interface nat44 in pg2 out pg3 >/dev/null
stream aff pg0 203.0.113.10 ACK 0 "$ALL" 4718592
stream lb pg4 203.0.113.11 ACK 0 "$ALL" 4718592
stream nat pg2 203.0.113.99 SYN 0 "$ALL" 1179648
# Warm-up: nat44-ed creates its 1.18 M sessions (slow path), lb its
# sticky entries, all tables warm.
run nat; run nat; run lb; run aff
# Rounds of one stream each, alternated, so a burst of load elsewhere on
# the host touches all three alike; the median of the rounds is the figure
# and the ratios are the medians of each round's ratio.
A=() L=() N=() RL=() RN=()
for _ in $(seq "$ROUNDS"); do
    V clear runtime
    run nat; run lb; run aff
    rt=$(V show runtime)
    a=$(clocks affinity 0 <<<"$rt") l=$(clocks lb4-nat4-port 0 <<<"$rt") n=$(clocks nat44-ed-in2out 0 <<<"$rt")
    A+=("$a") L+=("$l") N+=("$n")
    RL+=("$(div "$a" "$l")") RN+=("$(div "$a" "$n")")
done
sessions=$(V show nat44 summary | awk '/total sessions/ {print $3}')
figure vpp_affinity_clocks_per_pkt clocks "${A[@]}"
figure vpp_lb4_nat4_port_clocks_per_pkt clocks "${L[@]}"
figure vpp_nat44_ed_in2out_clocks_per_pkt clocks "${N[@]}"
echo "vpp_nat44_ed_sessions $sessions sessions"
figure ratio_affinity_vs_lb4_nat4_port x "${RL[@]}"
figure ratio_affinity_vs_nat44_ed x "${RN[@]}"
[ "${BENCH_WORKERS:-2}" = 0 ] && exit 0

# -- two workers, half the flows each -------------------------------------
kill -9 "$PG_PID" 2>/dev/null; wait "$PG_PID" 2>/dev/null; PG_PID=""
unset PG_RT
ip netns del "$PG_NS" 2>/dev/null; rm -rf "$PG_DIR"
PG_NICE=${BENCH_NICE--20} PG_ONLINE_CPUS=0-3 pg_vpp_start vppbench2w 2G 65536 64M "lb_plugin.so" "agent-address 192.0.2.1 fixed-table-size ${BENCH_FIXED_TABLE_SIZE:-2400000}" "" "main-core 0 workers 2"
setup
# Streams without a limit, measured over timed windows: a stream's end
# and the CLI polls that find it would fall inside a short run.
for w in 0 1; do
    h=HALF$w
    stream aff$w pg0 203.0.113.10 ACK $w "${!h}" 0
    stream lb$w pg4 203.0.113.11 ACK $w "${!h}" 0
done
# window STREAMS...: runs them, and prints the runtime of 1.5 s of it.
window() {
    local s
    for s in "$@"; do V packet-generator enable-stream "$s"; done
    sleep 0.5
    V clear runtime
    sleep 1.5
    V show runtime
    for s in "$@"; do V packet-generator disable-stream "$s"; done
}
# Warm-up: every flow seen (lb's sticky entries made), tables warm.
window lb0 lb1 >/dev/null; window aff0 aff1 >/dev/null
for n in aff lb; do
    node=$([ $n = aff ] && echo affinity || echo lb4-nat4-port)
    name=$([ $n = aff ] && echo affinity || echo lb4_nat4_port)
    A0=() A1=() B0=() B1=() R0=() R1=()
    for _ in $(seq "$ROUNDS"); do
        a0=$(window ${n}0 | clocks $node 1)
        a1=$(window ${n}1 | clocks $node 2)
        rt=$(window ${n}0 ${n}1)
        b0=$(clocks $node 1 <<<"$rt") b1=$(clocks $node 2 <<<"$rt")
        A0+=("$a0") A1+=("$a1") B0+=("$b0") B1+=("$b1")
        R0+=("$(div "$b0" "$a0")") R1+=("$(div "$b1" "$a1")")
    done
    figure "vpp_2w_${name}_worker0_alone_clocks_per_pkt" clocks "${A0[@]}"
    figure "vpp_2w_${name}_worker0_both_clocks_per_pkt" clocks "${B0[@]}"
    figure "ratio_2w_${name}_worker0_both_vs_alone" x "${R0[@]}"
    figure "vpp_2w_${name}_worker1_alone_clocks_per_pkt" clocks "${A1[@]}"
    figure "vpp_2w_${name}_worker1_both_clocks_per_pkt" clocks "${B1[@]}"
    figure "ratio_2w_${name}_worker1_both_vs_alone" x "${R1[@]}"
done
