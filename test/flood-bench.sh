#!/usr/bin/env bash
# The SYN flood bench (issue 14's anchor figures) in the namespace lab with a
# host agent (AGENT_KIND=vpp: a VPP agent with the plugin): spoofed SYNs at
# the SYN-proxied virtual address while legitimate clients open new
# connections and a few held connections carry lines. Prints `name value
# unit` lines on stdout (run by `make bench`); progress and diagnostics go
# to stderr.
#
#   flood    aff-c1 -> agent 1: FLOOD_RATE SYNs/s for FLOOD_SECS s from
#            spoofed 198.19.0.0/16 (test/flood.py syn), never answered
#   legit    aff-c2 -> agent 1: LEGIT_RATE new HTTP connections/s to :80
#            during the flood (and, as a baseline, BASE_SECS s before it)
#   held     aff-c2: HELD connections to the echo service :9000, opened
#            before the flood, a line every 10 ms until after it
#   manager  aff-m1, services web :80 and echo :9000 with syn_proxy = true
#   backends aff-b1..b3 (all routed back through agent 1: the SYN proxy
#            needs a connection's answers back at the agent that proxied it)
#   compare  then, for COMPARE_SECS s (0 = skipped), the same flood with
#            syn_proxy off (a reload): the SYNs reach the manager within the
#            agent's punt budget and the manager's own bounds take over
#            (max_half_open_flows = HALF_OPEN, the receive queue), with
#            LEGIT_RATE new connections/s beside it (noproxy_legit_*)
#
# Reuses test/lab.sh: its per-run namespace prefix, record and teardown
# (only what this run created is removed). Needs root, ip netns and
# /dev/net/tun; skipped (exit 0) without them.
set -u
cd "$(dirname "$0")/.."
FLOOD_RATE=${FLOOD_RATE:-10000}
FLOOD_SECS=${FLOOD_SECS:-30}
LEGIT_RATE=${LEGIT_RATE:-20}
BASE_SECS=${BASE_SECS:-10}
HELD=${HELD:-4}
COMPARE_SECS=${COMPARE_SECS:-10}
HALF_OPEN=${HALF_OPEN:-20000}
log() { echo "flood-bench: $*" >&2; }
if [ "$(id -u)" != 0 ] || ! ip netns list >/dev/null 2>&1 || [ ! -c /dev/net/tun ]; then
    log "skipped, needs root, network namespaces (ip netns) and /dev/net/tun"
    exit 0
fi
cargo build --release -q -p affinity-manager -p affinity-host-agent --bins >&2 || exit 1
source test/lab.sh
# AGENT_KIND=vpp: the agent is VPP with the plugin (VPP_PREFIX, `make
# plugin`), as in the VPP lab (test/run-vpp.sh); skipped without them.
if [ "$AGENT_KIND" = vpp ] && { [ ! -x "$VPP_BIN/vpp" ] || [ ! -f "$VPP_PLUGIN_DIR/affinity_plugin.so" ]; }; then
    log "skipped with AGENT_KIND=vpp, needs $VPP_BIN/vpp and $VPP_PLUGIN_DIR/affinity_plugin.so (make plugin)"
    exit 0
fi
# KEEP_LAB_DIR=1 keeps the run's logs and captures (the namespaces go).
trap 'lab_down; [ -n "${KEEP_LAB_DIR:-}" ] || rm -rf "$LAB_DIR"' EXIT
trap 'exit 130' INT TERM

# CPU time (clock ticks) a process has used: utime + stime of /proc/PID/stat
# (fields 14 and 15, counted after the command name's closing parenthesis).
cpu_ticks() { awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$1/stat" 2>/dev/null || echo 0; }
HZ=$(getconf CLK_TCK)
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
# % of one core between two (ticks, ms) samples.
cpu_pct() { awk -v t="$1" -v ms="$2" -v hz="$HZ" 'BEGIN { printf "%.1f", (ms > 0 ? t / hz * 100000 / ms : 0) }'; }
mgr_counter() { manager_cmd 1 status | awk -v n="$1" '$1 == "counter" && $2 == n {print $3}'; }
agent_counter() { agent_cmd 1 stats | awk -v n="$1" '$2 == n {print $1}'; }
fixed_count() { agent_cmd 1 fixed | awk '/^fixed affinities:/ {print $3}'; }
# Fixed affinities on agent 1 with a flood address (198.19.0.0/16) as
# source or destination.
fixed_flood() {
    if [ "$AGENT_KIND" = vpp ]; then
        # VPP's CLI prints rows as text: one fixed affinity per line.
        agent_cmd 1 fixed limit 1000000 | grep -c '198\.19\.'
        return
    fi
    agent_cmd 1 fixed --json limit 1000000 | python3 -c '
import json, sys
rows = json.load(sys.stdin)["rows"]
print(sum(1 for r in rows if r["src"].startswith("198.19.") or r["dst"].startswith("198.19.")))'
}
# The manager's flows (ended ones too) whose client is a flood address.
mgr_flood_flows() {
    manager_cmd 1 connections --json --limit 1000000 | python3 -c '
import json, sys
print(sum(1 for c in json.load(sys.stdin)["connections"] if c["client"].startswith("198.19.")))'
}
healthy_all() { [ "$(manager_cmd 1 status | grep -c 'backend 198.51.100.1[123]:8080 *healthy')" = 3 ]; }
web_wildcard() { agent_cmd 1 wildcard | grep -q '203.0.113.10/32:80 '; }

log "lab $LAB in $LAB_DIR"
lab_up >&2 || exit 1
# Every backend answers through agent 1 (lab.sh routes b2 and b3 through
# agent 2, FIGURE 5; a SYN-proxied connection must come back to its agent).
for b in 2 3; do
    ip -n $LAB-b$b route replace default via 198.51.100.1
    ip -n $LAB-b$b route replace 198.51.100.250/32 via 198.51.100.1
done
start_agent 1
AGENT_PID=$LAST_PID
if [ "$AGENT_KIND" = vpp ]; then
    wait_for 15 vppctl_a 1 show version >/dev/null || { log "VPP agent 1 did not start"; exit 1; }
    # VPP daemonises (no `nodaemon` in the lab's startup.conf): its CPU is
    # the running vpp's, not the spawned PID's.
    AGENT_PID=$(pgrep -f -- "$LAB_DIR/vpp-a1/startup.conf" | head -n 1)
else
    wait_for 5 test -S "$LAB_DIR/a1.sock" || { log "agent 1 did not start"; exit 1; }
fi
M1="$LAB_DIR/m1.toml"
cat >"$M1" <<TOML
[manager]
listen = "192.0.2.10:1638"
name = "manager-1"
control_socket = "$LAB_DIR/m1.sock"
wildcard_ttl = 3
fixed_ttl = 12
max_half_open_flows = $HALF_OPEN

[agents]
multicast_group = "239.255.16.37"
multicast_interface = "192.0.2.10"

[[service]]
name = "web"
virtual = "$VIP:80"
protocol = "tcp"
client_domain = "198.18.0.0/15"
algorithm = "maglev"
syn_proxy = true
health = { kind = "http", interval_ms = 300, timeout_ms = 200, rise = 2, fall = 2 }
[[service.backend]]
address = "198.51.100.11:8080"
[[service.backend]]
address = "198.51.100.12:8080"
[[service.backend]]
address = "198.51.100.13:8080"

[[service]]
name = "echo"
virtual = "$VIP:9000"
protocol = "tcp"
client_domain = "198.18.0.0/15"
algorithm = "maglev"
syn_proxy = true
[[service.backend]]
address = "198.51.100.11:9000"
[[service.backend]]
address = "198.51.100.12:9000"
[[service.backend]]
address = "198.51.100.13:9000"
TOML
start_manager 1 "$M1"
MGR_PID=$LAST_PID
wait_for 20 web_wildcard && wait_for 20 healthy_all || {
    log "lab did not come up"; manager_cmd 1 status >&2; agent_cmd 1 wildcard >&2; exit 1; }
warm=$(client c2 http $VIP 80 5 | grep -c '^backend-')
log "warm-up: $warm/5 HTTP requests through the SYN proxy served"

# Held connections: open before everything else, carrying lines throughout.
STOP="$LAB_DIR/held.stop"
client c2 streams $VIP 9000 "$HELD" "$STOP" >"$LAB_DIR/held.out" 2>&1 &
HELD_PID=$!
sleep 2

if [ -n "${KEEP_LAB_DIR:-}" ]; then
    lab_spawn $LAB-sw "$LAB_DIR/tcpdump-brs.log" tcpdump -i brs -U -s 128 -w "$LAB_DIR/server.pcap" tcp
    lab_spawn $LAB-sw "$LAB_DIR/tcpdump-brc.log" tcpdump -i brc -U -s 128 -w "$LAB_DIR/client.pcap" tcp and host 198.18.0.12
fi
traffic() { nsx $LAB-$1 python3 "$ROOT/test/flood.py" "${@:2}"; }

# Baseline: the legitimate load alone.
log "baseline: $LEGIT_RATE new connections/s for $BASE_SECS s, no flood"
c0=$(cpu_ticks $MGR_PID); t0=$(now_ms)
base_out=$(traffic c2 connect $VIP 80 "$LEGIT_RATE" "$BASE_SECS")
c1=$(cpu_ticks $MGR_PID); t1=$(now_ms)
base_cpu=$(cpu_pct $((c1 - c0)) $((t1 - t0)))
log "baseline: $base_out; manager CPU $base_cpu %"

# The flood, with the legitimate load beside it.
fixed0=$(fixed_count); flood_fixed0=$(fixed_flood)
rx0=$(mgr_counter rx-interest-match); created0=$(mgr_counter flows-created)
answered0=$(agent_counter syn-proxy-syn-answered); punted0=$(agent_counter punted)
CAP_PID=
if command -v tcpdump >/dev/null; then
    lab_spawn $LAB-m1 "$LAB_DIR/tcpdump.log" tcpdump -i eth0 -U -s 0 -w "$LAB_DIR/control.pcap" udp dst port 1638
    CAP_PID=$LAST_PID
    sleep 0.5
fi
log "flood: $FLOOD_RATE spoofed SYNs/s for $FLOOD_SECS s at $VIP:80, $LEGIT_RATE new connections/s beside it"
c0=$(cpu_ticks $MGR_PID); a0=$(cpu_ticks $AGENT_PID); t0=$(now_ms)
traffic c1 syn $VIP 80 "$FLOOD_RATE" "$FLOOD_SECS" >"$LAB_DIR/flood.out" 2>&1 &
FLOOD_PID=$!
legit_out=$(traffic c2 connect $VIP 80 "$LEGIT_RATE" "$FLOOD_SECS")
wait $FLOOD_PID
c1=$(cpu_ticks $MGR_PID); a1=$(cpu_ticks $AGENT_PID); t1=$(now_ms)
flood_cpu=$(cpu_pct $((c1 - c0)) $((t1 - t0)))
agent_cpu=$(cpu_pct $((a1 - a0)) $((t1 - t0)))
sleep 1
[ -n "$CAP_PID" ] && kill "$CAP_PID" 2>/dev/null
fixed1=$(fixed_count); flood_fixed1=$(fixed_flood)
rx1=$(mgr_counter rx-interest-match); created1=$(mgr_counter flows-created)
answered1=$(agent_counter syn-proxy-syn-answered); punted1=$(agent_counter punted)
flood_flows=$(mgr_flood_flows)
touch "$STOP"
wait $HELD_PID
held_out=$(cat "$LAB_DIR/held.out")
flood_out=$(cat "$LAB_DIR/flood.out")
log "flood generator: $flood_out"
log "legitimate during the flood: $legit_out"
log "held connections: $held_out"
agent_cmd 1 stats | awk '$1 > 0 && $2 ~ /syn-proxy|admission|punt|drop/' | sed 's/^/flood-bench: agent 1: /' >&2
log "agent: fixed $fixed0 -> $fixed1 (flood addresses $flood_fixed0 -> $flood_fixed1), syn-proxy-syn-answered +$((answered1 - answered0)), punted +$((punted1 - punted0)); manager: rx-interest-match +$((rx1 - rx0)), flows-created +$((created1 - created0)), flows of flood clients $flood_flows"

# Service messages to the manager that name a flood address (198.19.0.0/16)
# in an affinity: what the flood made agents send it (the capture holds
# every datagram to the manager's port during the flood).
flood_msgs=n/a
if [ -n "$CAP_PID" ] && command -v tshark >/dev/null; then
    flood_msgs=$(tshark -n -r "$LAB_DIR/control.pcap" -X lua_script:dissector/affinity.lua \
        --disable-protocol dns --disable-protocol mdns \
        -Y 'affinity.src == 198.19.0.0/16 || affinity.dst == 198.19.0.0/16' 2>/dev/null | wc -l)
    total_msgs=$(tshark -n -r "$LAB_DIR/control.pcap" 2>/dev/null | wc -l)
    log "capture: $total_msgs datagrams to the manager during the flood, $flood_msgs naming a flood address"
fi

num() { awk -v k="$2" '{for (i = 1; i < NF; i++) if ($i == k) {print $(i + 1); exit}}' <<<"$1"; }
attempts=$(num "$legit_out" attempts); ok=$(num "$legit_out" ok)
base_attempts=$(num "$base_out" attempts); base_ok=$(num "$base_out" ok)
held_ok=$(sed -n 's/.* ok=\([0-9]*\).*/\1/p' <<<"$held_out")
held_n=$(sed -n 's/.*conns=\([0-9]*\).*/\1/p' <<<"$held_out")
pct() { awk -v a="${1:-0}" -v b="${2:-0}" 'BEGIN { printf "%.2f", (b > 0 ? a * 100 / b : 0) }'; }
echo "flood_syn_rate_achieved $(num "$flood_out" rate) syn/s"
echo "flood_syns_sent $(num "$flood_out" sent) syns"
echo "flood_agent_syns_answered $((answered1 - answered0)) syns"
echo "flood_manager_punts $flood_msgs messages"
echo "flood_manager_flows $flood_flows flows"
echo "flood_manager_interest_matches $((rx1 - rx0)) messages"
echo "flood_manager_cpu $flood_cpu %core"
echo "baseline_manager_cpu $base_cpu %core"
echo "flood_agent_cpu $agent_cpu %core"
echo "flood_agent_fixed_before $fixed0 entries"
echo "flood_agent_fixed_after $fixed1 entries"
echo "flood_agent_fixed_flood_addresses $flood_fixed1 entries"
echo "flood_legit_success $(pct "$ok" "$attempts") %"
echo "flood_legit_attempts ${attempts:-0} connections"
echo "baseline_legit_success $(pct "$base_ok" "$base_attempts") %"
# Connection setup and answer time (connect() to the whole HTTP answer) of
# the successful connections, and those that took a retransmission (200 ms
# or more: Linux's minimum RTO), without and during the flood.
echo "baseline_legit_request_p50 $(num "$base_out" setup_p50_ms) ms"
echo "baseline_legit_request_p90 $(num "$base_out" setup_p90_ms) ms"
echo "baseline_legit_slow $(pct "$(num "$base_out" slow_200ms)" "$base_ok") %"
echo "flood_legit_request_p50 $(num "$legit_out" setup_p50_ms) ms"
echo "flood_legit_request_p90 $(num "$legit_out" setup_p90_ms) ms"
echo "flood_legit_slow $(pct "$(num "$legit_out" slow_200ms)" "$ok") %"
echo "flood_established_held ${held_n:-0} connections"
echo "flood_established_survived ${held_ok:-0} connections"

# Without the SYN proxy: the same flood, for comparison.
[ "$COMPARE_SECS" -gt 0 ] || exit 0
sed -i 's/^syn_proxy = true$/syn_proxy = false/' "$M1"
kill -HUP "$MGR_PID"
wait_for 10 grep -q "configuration reloaded" "$LAB_DIR/m1.log" || { log "manager did not reload"; exit 1; }
sleep 2
rx0=$(mgr_counter rx-interest-match); created0=$(mgr_counter flows-created)
refused0=$(mgr_counter half-open-limit-refused); qdrop0=$(mgr_counter rx-queue-dropped)
evicted0=$(mgr_counter half-open-evicted)
admit0=$(agent_counter punt-admission-drop-new-flow); fixed0=$(fixed_count)
log "compare: $FLOOD_RATE spoofed SYNs/s for $COMPARE_SECS s with syn_proxy off (max_half_open_flows $HALF_OPEN), $LEGIT_RATE new connections/s beside it"
c0=$(cpu_ticks $MGR_PID); t0=$(now_ms)
traffic c1 syn $VIP 80 "$FLOOD_RATE" "$COMPARE_SECS" >"$LAB_DIR/cmp.out" 2>&1 &
FLOOD_PID=$!
cmp_legit=$(traffic c2 connect $VIP 80 "$LEGIT_RATE" "$COMPARE_SECS")
wait $FLOOD_PID
cmp_out=$(cat "$LAB_DIR/cmp.out")
sleep 1
c1=$(cpu_ticks $MGR_PID); t1=$(now_ms)
rx1=$(mgr_counter rx-interest-match); created1=$(mgr_counter flows-created)
refused1=$(mgr_counter half-open-limit-refused); qdrop1=$(mgr_counter rx-queue-dropped)
evicted1=$(mgr_counter half-open-evicted)
admit1=$(agent_counter punt-admission-drop-new-flow); fixed1=$(fixed_count)
log "compare: generator $cmp_out"
log "compare: legitimate during the flood: $cmp_legit"
manager_cmd 1 status | grep -E '^  admission|^receive-queue' | sed 's/^/flood-bench: compare: manager /' >&2
log "compare: manager rx-activity-report $(mgr_counter rx-activity-report), agent activity-reports-sent $(agent_counter activity-reports-sent) activity-reports-prompt-sent $(agent_counter activity-reports-prompt-sent)"
cmp_attempts=$(num "$cmp_legit" attempts); cmp_ok=$(num "$cmp_legit" ok)
echo "noproxy_syn_rate_achieved $(num "$cmp_out" rate) syn/s"
echo "noproxy_agent_admission_dropped $((${admit1:-0} - ${admit0:-0})) syns"
echo "noproxy_manager_interest_matches $((rx1 - rx0)) messages"
echo "noproxy_manager_flows_created $((created1 - created0)) flows"
echo "noproxy_manager_half_open_refused $((refused1 - refused0)) syns"
echo "noproxy_manager_half_open_evicted $((${evicted1:-0} - ${evicted0:-0})) flows"
echo "noproxy_legit_success $(pct "$cmp_ok" "$cmp_attempts") %"
echo "noproxy_legit_attempts ${cmp_attempts:-0} connections"
echo "noproxy_manager_rx_queue_dropped $((qdrop1 - qdrop0)) datagrams"
echo "noproxy_manager_rx_kernel_dropped $(mgr_counter rx-kernel-dropped) datagrams"
echo "noproxy_manager_cpu $(cpu_pct $((c1 - c0)) $((t1 - t0))) %core"
echo "noproxy_agent_fixed_before $fixed0 entries"
echo "noproxy_agent_fixed_after $fixed1 entries"
