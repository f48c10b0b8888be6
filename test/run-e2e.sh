#!/usr/bin/env bash
# End-to-end tests in the namespace lab: real TCP/HTTP and UDP through two
# forwarding agents under a primary and a backup manager.
set -u
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ] || ! ip netns list >/dev/null 2>&1; then
    echo "e2e: skipped, needs root and network namespaces (ip netns)"
    exit 0
fi
if [ ! -c /dev/net/tun ]; then
    echo "e2e: skipped, /dev/net/tun is missing"
    exit 0
fi
cargo build --release -q --workspace --bins || exit 1
source test/lab.sh
if [ "$AGENT_KIND" = vpp ]; then
    if [ ! -x "$VPP_BIN/vpp" ] || [ ! -f "$VPP_PLUGIN_DIR/affinity_plugin.so" ]; then
        echo "vpp e2e: skipped, needs $VPP_BIN/vpp and $VPP_PLUGIN_DIR/affinity_plugin.so (make plugin)"
        exit 0
    fi
fi
# On a failure, the tails of the lab's logs go to the output before the lab
# is removed (CI keeps nothing else of it).
dump_logs() {
    [ "${FAILED:-0}" != 0 ] || return 0
    local f
    for f in "$LAB_DIR"/*.log "$LAB_DIR"/*.log.before-restart; do
        [ -s "$f" ] || continue
        echo "--- last lines of $(basename "$f")"
        tail -n 25 "$f" | sed 's/^/  /'
    done
}
trap 'dump_logs; lab_down; rm -rf "$LAB_DIR"' EXIT
trap 'exit 130' INT TERM

PASSED=0
FAILED=0
pass() { echo "PASS $1: $2"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL $1: $2"; FAILED=$((FAILED + 1)); }
ms() { echo $(( $(date +%s%N) / 1000000 )); }
ns_empty() { [ -z "$(ip netns pids "$1")" ]; }
restart_agents() {
    for i in 1 2; do lab_kill_ns $LAB-a$i 9; done
    wait_for 5 ns_empty $LAB-a1; wait_for 5 ns_empty $LAB-a2
    if [ "$AGENT_KIND" = vpp ]; then
        start_agent 1; start_agent 2
        wait_for 10 vppctl_a 1 show version && wait_for 10 vppctl_a 2 show version
        return
    fi
    # What each agent logged before it was stopped (a crash's last words).
    for i in 1 2; do
        [ -f "$LAB_DIR/a$i.log" ] && cat "$LAB_DIR/a$i.log" >>"$LAB_DIR/a$i.log.before-restart"
    done
    start_agent 1 "$@"
    start_agent 2 "$@"
    wait_for 5 test -S "$LAB_DIR/a1.sock" && wait_for 5 test -S "$LAB_DIR/a2.sock"
}
# lab_back_up WHAT: after a restart, says which agent or manager is not
# running or not answering, with its log's last lines (the checks after it
# would otherwise fail with no traffic and no reason).
lab_back_up() {
    local i
    for i in 1 2; do
        if ! agent_cmd "$i" status >/dev/null 2>&1; then
            echo "NOTE $1: agent $i does not answer on its socket; its log:"
            tail -n 15 "$LAB_DIR/a$i.log" 2>/dev/null | sed 's/^/  /'
        fi
        if ! manager_cmd "$i" status >/dev/null 2>&1; then
            echo "NOTE $1: manager $i does not answer on its socket; its log:"
            tail -n 15 "$LAB_DIR/m$i.log" 2>/dev/null | sed 's/^/  /'
        fi
    done
    echo "NOTE $1: agent 1 wildcards $(wildcard_count 1 2>/dev/null), agent 2 wildcards $(wildcard_count 2 2>/dev/null)"
    manager_cmd 1 status 2>&1 | head -n 12 | sed 's/^/  m1: /'
}
stop_managers() { for i in 1 2; do lab_kill_ns $LAB-m$i 9; done; sleep 0.2; }
fixed_count() { agent_cmd "$1" fixed | awk '/^fixed affinities:/ {print $3}'; }
fixed_le() { [ "$(fixed_count "$1")" -le "$2" ]; }
fixed_zero_both() { [ "$(fixed_count 1)" = 0 ] && [ "$(fixed_count 2)" = 0 ]; }
wildcards_ge() { [ "$(wildcard_count "$1")" -ge "$2" ]; }
wildcards_zero() { [ "$(wildcard_count "$1")" = 0 ]; }
manager_status_has() { manager_cmd "$1" status | grep -q "$2"; }
# backend_seen N: how each running manager sees web backend N (healthy or
# UNHEALTHY), one line per manager that answers. The managers
# check health on their own, so a test waits for every one that may pick
# a backend, not only manager 1 (a first request decided while manager 2
# still counted backends 1-2 as down went all to backend 3).
backend_seen() {
    local m
    for m in 1 2; do
        manager_cmd "$m" status 2>/dev/null \
            | awk -v a="198.51.100.1$1:8080" '$1 == "backend" && $2 == a {print $3; exit}'
    done
}
healthy() { local s; s=$(backend_seen "$1"); [ -n "$s" ] && ! grep -vqx healthy <<<"$s"; }
not_healthy() { ! backend_seen "$1" | grep -qx healthy; }
web_wildcard_present() { agent_cmd "$1" wildcard | grep -q '203.0.113.10/32:80 '; }
skip() { echo "SKIP $1: $2"; }
wildcard_count() { agent_cmd "$1" wildcard | awk '/^wildcard affinities:/ {print $3}'; }
counter() { agent_cmd "$1" stats | awk -v n="$2" '$2 == n {print $1}'; }

lab_up
# The control LAN's traffic, for the dissector check (section 14): captured
# on its bridge, where no test stops processes.
CAP_PID=
if command -v tcpdump >/dev/null; then
    lab_spawn $LAB-sw "$LAB_DIR/tcpdump.log" tcpdump -i brm -U -s 0 -w "$LAB_DIR/control.pcap" udp port 1637 or udp port 1638
    CAP_PID=$LAST_PID
fi
if [ "$AGENT_KIND" = vpp ]; then
    # af_packet sees the kernel's partial checksums unless offload is off.
    for ns in c1 c2 b1 b2 b3 m1 m2; do nsx $LAB-$ns ethtool -K eth0 tx off rx off >/dev/null 2>&1; done
    for i in 1 2; do for ifc in ethc eths ethm; do nsx $LAB-a$i ethtool -K $ifc tx off rx off >/dev/null 2>&1; done; done
fi
restart_agents
M1=$(manager_config 1 0)
M2=$(manager_config 2 100)
start_manager 1 "$M1"
start_manager 2 "$M2"
wait_for 20 wildcards_ge 1 30 && wait_for 5 wildcards_ge 2 30 \
    && wait_for 15 healthy 1 && wait_for 10 healthy 2 && wait_for 10 healthy 3 \
    || { echo "lab did not come up: agent 1 has $(wildcard_count 1) wildcards, agent 2 $(wildcard_count 2)"; manager_cmd 1 status | grep backend; exit 1; }

# 1. Load balancing with NAT both ways.
out=$(client c1 http $VIP 80 15; client c2 http $VIP 80 15)
n_ok=$(grep -c '^backend-' <<<"$out")
n_backends=$(grep -o '^backend-[0-9]' <<<"$out" | sort -u | wc -l)
bad_peer=$(grep '^backend-' <<<"$out" | grep -vc "peer=$VIP:80")
bad_client=$(grep '^backend-' <<<"$out" | grep -vEc 'client=198\.18\.0\.1[12]:')
if [ "$n_ok" = 30 ] && [ "$n_backends" -ge 2 ] && [ "$bad_peer" = 0 ] && [ "$bad_client" = 0 ]; then
    pass load-balancing "30/30 HTTP requests over $n_backends backends; clients saw only $VIP:80, backends saw the client addresses"
else
    fail load-balancing "ok=$n_ok backends=$n_backends wrong-peer=$bad_peer wrong-client=$bad_client"; echo "$out" | head -5
fi
per_backend=$(grep -o '^backend-[0-9]' <<<"$out" | sort | uniq -c | tr '\n' ' ')

# 2. FIGURE 5: backends 2 and 3 answer through agent 2, which learns the flow by punting.
punts2=$(counter 2 punted)
if grep -qE '^backend-[23]' <<<"$out" && [ "${punts2:-0}" -gt 0 ]; then
    pass figure-5 "replies of flows to backend-2/3 crossed agent 2 (it punted ${punts2} packets and got the same fixed affinities); per backend: $per_backend"
else
    fail figure-5 "agent 2 punted ${punts2:-0}; per backend: $per_backend"
fi

# VPP only: the binary API from vpp_papi, the node's error counters and trace.
if [ "$AGENT_KIND" = vpp ]; then
    # vpp_papi from `make deps`'s virtual environment (PAPI_PYTHON), else the system's.
    PAPI_PYTHON=${PAPI_PYTHON:-$( [ -x target/papi-venv/bin/python3 ] && echo target/papi-venv/bin/python3 || echo /usr/bin/python3)}
    if "$PAPI_PYTHON" -c "import vpp_papi" 2>/dev/null; then
        if api=$("$PAPI_PYTHON" test/papi_check.py "$LAB_DIR/vpp-a1/api.sock" "${VPP_PREFIX:-/opt/vpp}/share/vpp/api" "${CARGO_TARGET_DIR:-target}/release" 2>&1); then
            pass vpp-api "vpp_papi: $api"
        else
            fail vpp-api "$api"
        fi
    else
        skip vpp-api "vpp_papi is not importable by $PAPI_PYTHON (make deps installs it into target/papi-venv where VPP is found)"
    fi
    vppctl_a 1 clear trace >/dev/null
    vppctl_a 1 trace add af-packet-input 500 >/dev/null
    before_clear=$(counter 1 packets)
    vppctl_a 1 clear affinity stats >/dev/null
    client c1 http $VIP 80 1 >/dev/null
    after_clear=$(counter 1 packets)
    trace=$(vppctl_a 1 show trace max 1000 | tr -d '\r')
    errors=$(vppctl_a 1 show errors | tr -d '\r')
    # The trace is the core's decision: which affinity (fixed slot or
    # wildcard id), which action set, what was done, the tuple before/after.
    fixed_nat='affinity: fixed slot [0-9]+ action-set [0-9]+ nat -> pass'
    wild='affinity: wildcard id [0-9]+ action-set [0-9]+ .*-> (punt|pass)'
    if grep -qE "$fixed_nat" <<<"$trace" && grep -q 'before TCP 198.18.0.11' <<<"$trace" \
        && awk '$2 == "affinity" && $3 == "punted"' <<<"$errors" | grep -q . \
        && [ "${after_clear:-0}" -gt 0 ] && [ "${after_clear:-0}" -lt "${before_clear:-0}" ]; then
        pass vpp-cli "show trace: $(grep -m1 -A2 -E "$fixed_nat" <<<"$trace" | tr -s ' ' | tr '\n' ' ')| $(grep -m1 -E "$wild" <<<"$trace" | tr -s ' '); show errors lists the core's counters (punted: $(awk '$2 == "affinity" && $3 == "punted" {print $1}' <<<"$errors")); clear affinity stats: packets $before_clear -> $after_clear after one request"
    else
        fail vpp-cli "trace/counters missing or clear failed (packets $before_clear -> $after_clear)"; echo "$trace" | grep -A3 affinity | head -8
    fi
fi

# 3. UDP: one client port maps to one backend; different ports spread.
u1=$(client c2 udp $VIP 53 5 40001)
same=$(grep -o '^backend-[0-9]' <<<"$u1" | sort -u | wc -l)
spread=$(for p in 40002 40003 40004; do client c2 udp $VIP 53 1 $p; done | grep -o '^backend-[0-9]' | sort -u | wc -l)
if [ "$(grep -c "peer=$VIP:53" <<<"$u1")" = 5 ] && [ "$same" = 1 ] && [ "$spread" -ge 2 ] && grep -q 'client=198.18.0.12:40001' <<<"$u1"; then
    pass udp "5/5 datagrams from one port answered by one backend from $VIP:53; 3 other ports spread over $spread backends"
else
    fail udp "replies=$(grep -c "peer=$VIP:53" <<<"$u1") backends-for-one-port=$same spread=$spread"; echo "$u1" | head -3
fi

# 4. Connection close: affinities deleted after the 2 s sticky timer.
sleep 3
before=$(fixed_count 1)
t0=$(ms)
client c1 http $VIP 80 1 >/dev/null
sleep 0.5
during=$(fixed_count 1)
wait_for 6 fixed_le 1 "$before"
gone=$(( $(ms) - t0 ))
if [ "$during" -gt "$before" ] && [ "$gone" -ge 2000 ] && [ "$gone" -le 4500 ]; then
    pass connection-close "flow's 2 affinities stayed through the sticky timer and were deleted ${gone} ms after the request"
else
    fail connection-close "before=$before during=$during deleted after ${gone} ms"
fi

# 5. Source NAT: backends see the SNAT address; clients still see the VIP.
s_out=$(client c1 http $VIP 8080 6)
if [ "$(grep -c 'client=198.51.100.250:4' <<<"$s_out")" = 6 ] && [ "$(grep -c "peer=$VIP:8080" <<<"$s_out")" = 6 ]; then
    pass source-nat "6/6 requests reached backends from 198.51.100.250:40000-40099; weights 1:2 gave $(grep -o '^backend-[0-9]' <<<"$s_out" | sort | uniq -c | tr '\n' ' ')"
else
    fail source-nat "$(echo "$s_out" | head -3)"
fi

# 6. Health check failure and drain by weight 0.
lab_kill_ns $LAB-b1 TERM
wait_for 5 not_healthy 1
h_out=$(client c1 http $VIP 80 12)
manager_cmd 1 drain web 198.51.100.12:8080 >/dev/null; manager_cmd 2 drain web 198.51.100.12:8080 >/dev/null
d_out=$(client c2 http $VIP 80 12)
if [ "$(grep -c '^backend-[23]' <<<"$h_out")" = 12 ] && [ "$(grep -c '^backend-3' <<<"$d_out")" = 12 ]; then
    pass health-and-drain "backend-1 down: 12/12 new flows on backends 2-3; backend-2 drained (weight 0): 12/12 on backend-3"
else
    fail health-and-drain "$(echo "$h_out" | sort | uniq -c | head -3) / $(echo "$d_out" | sort | uniq -c | head -3)"
fi
start_backend 1
manager_cmd 1 set-weight web 198.51.100.12:8080 1 >/dev/null; manager_cmd 2 set-weight web 198.51.100.12:8080 1 >/dev/null
wait_for 10 healthy 1
echo_listening() { nsx $LAB-b1 ss -ltn | grep -q '198.51.100.11:9000 '; }
wait_for 5 echo_listening

# 7. Failover: kill the primary; the held connection keeps working and new
#    connections are served by the backup.
GO="$LAB_DIR/go"; HOLD="$LAB_DIR/hold.out"
client c1 hold $VIP 9000 "$GO" "$HOLD" &
HOLD_PID=$!
wait_for 12 grep -q before "$HOLD"
lab_kill_ns $LAB-m1 9
takeover=$(client c2 first-success $VIP 80 5)
touch "$GO"; wait $HOLD_PID
after_ok=$(client c2 http $VIP 80 5 | grep -c '^backend-')
b_before=$(grep before "$HOLD" | grep -o '^backend-[0-9]'); b_after=$(grep after "$HOLD" | grep -o '^backend-[0-9]')
if [ -n "$b_before" ] && [ "$b_before" = "$b_after" ] && [ "$after_ok" = 5 ] && [ "$takeover" != never ] && awk -v t="$takeover" 'BEGIN{exit !(t <= 1.5)}'; then
    pass failover "first new connection served by the backup ${takeover}s after the primary was killed; held connection kept working on $b_before; 5/5 later requests ok"
else
    fail failover "takeover=${takeover}s held: '$b_before' -> '$b_after' later ok=$after_ok"
    sed 's/^/  hold: /' "$HOLD"; tail -n 5 "$LAB_DIR"/m2.log | sed 's/^/  m2: /'
fi

# 8. No refresh: with every manager gone, agents drop wildcards after their
#    1 s TTL and fixed affinities after theirs (12 s), each within TTL + 2 s.
stop_managers
t0=$(ms)
wait_for 4 wildcards_zero 1
w_gone=$(( $(ms) - t0 ))
wait_for 16 fixed_zero_both
f_gone=$(( $(ms) - t0 ))
if [ "$w_gone" -le 3000 ] && [ "$f_gone" -le 14000 ]; then
    pass no-refresh "wildcards gone ${w_gone} ms and all fixed affinities gone ${f_gone} ms after the last manager stopped (TTLs 1 s and 12 s)"
else
    fail no-refresh "wildcards gone after ${w_gone} ms, fixed after ${f_gone} ms"
fi

# 9. Wrong auth key: rejected and counted, nothing installed; the right key works.
printf 'agent-secret\n' >"$LAB_DIR/key"; printf 'wrong-secret\n' >"$LAB_DIR/badkey"
VPP_AFFINITY_EXTRA="auth-key-file $LAB_DIR/key auth-key-id 7" restart_agents --key-file "$LAB_DIR/key" --key-id 7
AUTH_SECTION="[auth]
keys = [{ id = 7, file = \"$LAB_DIR/badkey\", send = true }]" start_manager 1 "$(AUTH_SECTION="[auth]
keys = [{ id = 7, file = \"$LAB_DIR/badkey\", send = true }]" manager_config 1 0)"
auth_failures() { [ "$(counter 1 control-auth-failed)" -gt 0 ] 2>/dev/null; }
wait_for 8 auth_failures
sleep 1
rejected=$(counter 1 control-auth-failed); installed=$(wildcard_count 1)
stop_managers
start_manager 1 "$(AUTH_SECTION="[auth]
keys = [{ id = 7, file = \"$LAB_DIR/key\", send = true }]" manager_config 1 0)"
wait_for 10 wildcards_ge 1 1 && wait_for 10 healthy 1 && wait_for 10 healthy 2 && wait_for 10 healthy 3
good=$(client c1 http $VIP 80 3 | grep -c '^backend-')
if [ "${rejected:-0}" -gt 0 ] && [ "$installed" = 0 ] && [ "$good" = 3 ]; then
    pass wrong-auth-key "${rejected} messages signed with the wrong key rejected and counted, 0 affinities installed; with the right key 3/3 requests ok"
else
    fail wrong-auth-key "rejected=${rejected:-0} installed=$installed good=$good"
    agent_cmd 1 stats | head -8; tail -n 3 "$LAB_DIR"/m1.log; [ "$AGENT_KIND" = vpp ] && tail -n 5 "$LAB_DIR"/vpp-a1/out.log
fi

# 10. Unsupported action: the agents refuse 'advertise'; the manager retries without it.
stop_managers
VPP_AFFINITY_EXTRA="disable-action advertise" restart_agents --disable-action advertise
WEB_EXTRA='advertise = true
optional_actions = ["advertise"]' start_manager 1 "$(WEB_EXTRA='advertise = true
optional_actions = ["advertise"]' manager_config 1 0)"
# `status` lists every event counter, at 0 too: wait for the count.
retried_some() { [ "$(manager_cmd 1 status | awk '$2 == "retry-without-optional-action" {print $3}')" -gt 0 ] 2>/dev/null; }
wait_for 5 retried_some
denies=$(manager_cmd 1 status | awk '$2 == "deny-unsupported-action" {print $3}')
retried=$(manager_cmd 1 status | awk '$2 == "retry-without-optional-action" {print $3}')
wait_for 5 web_wildcard_present 1 && wait_for 5 web_wildcard_present 2
wait_for 10 healthy 1 && wait_for 10 healthy 2 && wait_for 10 healthy 3
u_out=$(client c1 http $VIP 80 3)
ok=$(grep -c '^backend-' <<<"$u_out")
tries=1
if [ "$ok" != 3 ]; then
    # Seen twice in CI, never locally: nothing served right after the
    # retry. What the manager saw is printed, then one more try 3 s on;
    # a service that stays broken still fails below.
    echo "NOTE unsupported-action: first try served $ok/3; manager counters and log:"
    manager_cmd 1 status | awk '$1 == "counter" && $3 > 0' | sed 's/^/  m1: /'
    manager_cmd 1 status | grep -E 'backend|not used' | sed 's/^/  m1: /'
    agent_cmd 1 stats | awk '$1 > 0' | sed 's/^/  a1: /'
    tail -n 8 "$LAB_DIR"/m1.log | sed 's/^/  m1 log: /'
    sleep 3
    u_out=$(client c1 http $VIP 80 3)
    ok=$(grep -c '^backend-' <<<"$u_out")
    tries=2
fi
if [ "${denies:-0}" -gt 0 ] && [ "${retried:-0}" -gt 0 ] && [ "$ok" = 3 ]; then
    pass unsupported-action "agents sent ${denies} denies for the advertise action; the manager retried without it and 3/3 requests were served (try $tries)"
else
    fail unsupported-action "denies=${denies:-0} retried=${retried:-0} ok=$ok"
    echo "$u_out" | sed 's/^/  client: /'; agent_cmd 1 wildcard | head -12 | sed 's/^/  a1: /'
    agent_cmd 1 stats | awk '$1 > 0' | sed 's/^/  a1: /'; grep -i 'deny\|retry' "$LAB_DIR"/m1.log | tail -n 4 | sed 's/^/  m1: /'
    manager_cmd 1 status | awk '$1 == "counter" && $3 > 0' | sed 's/^/  m1: /'
    manager_cmd 1 status | grep -E 'backend|not used|refus' | sed 's/^/  m1: /'
    tail -n 8 "$LAB_DIR"/m1.log | sed 's/^/  m1 log: /' 
fi

# 10b. An agent that cannot NAT (issue 13): agent 2 runs with NAT disabled.
#     The wildcards list NAT as a required action, so it denies them and
#     installs none (nothing it forwards is left untranslated); the manager
#     stops using it for every service and says why in `status`.
stop_managers
VPP_AFFINITY_EXTRA="" restart_agents
lab_kill_ns $LAB-a2 9; wait_for 5 ns_empty $LAB-a2
if [ "$AGENT_KIND" = vpp ]; then
    VPP_AFFINITY_EXTRA="disable-action nat" start_agent 2
    wait_for 10 vppctl_a 2 show version
else
    start_agent 2 --disable-action nat
    wait_for 5 test -S "$LAB_DIR/a2.sock"
fi
start_manager 1 "$(manager_config 1 0)"
nat_refused() { manager_status_has 1 'agent 192.0.2.2:1637 not used for service web: cannot perform nat'; }
wait_for 10 nat_refused
n_status=$(manager_cmd 1 status | grep -c '^agent 192.0.2.2:1637 not used for service .*: cannot perform nat')
wait_for 10 web_wildcard_present 1
a2_wild=$(wildcard_count 2)
# A host agent 2 started once, and its start line names the disabled
# action (CI at a1f7529: a stale a2.sock let two agent 2s race, and a2.log
# showed two starts). Read after the manager's refusal, so the line is out.
a2_start=ok a2_lines=""
if [ "$AGENT_KIND" != vpp ]; then
    a2_lines=$(grep 'affinity-agent running' "$LAB_DIR/a2.log")
    if [ "$(grep -c . <<<"$a2_lines")" != 1 ] || ! grep -qE 'disabled_actions=nat( |$)' <<<"$a2_lines"; then
        a2_start="start lines: ${a2_lines//$'\n'/ | }"
    fi
fi
if [ "${n_status:-0}" = 4 ] && [ "$a2_wild" = 0 ] && web_wildcard_present 1 && [ "$a2_start" = ok ]; then
    pass agent-without-nat "agent 2 (NAT disabled) installed 0 wildcards; manager status: not used for 4/4 services, 'cannot perform nat'; agent 1 keeps the service${a2_lines:+; agent 2 started once, disabled_actions=nat}"
else
    fail agent-without-nat "status lines=${n_status:-0} agent-2 wildcards=$a2_wild agent-2 $a2_start"
    manager_cmd 1 status | grep '^agent' | sed 's/^/  m1: /'
fi

# Back to two agents that can NAT, for what follows.
stop_managers
restart_agents
start_manager 1 "$(manager_config 1 0)"
wait_for 10 web_wildcard_present 1 && wait_for 10 web_wildcard_present 2
wait_for 10 healthy 1 && wait_for 10 healthy 2 && wait_for 10 healthy 3

# 10c. Advertise into routing (issue 13, seed FIG 10H): while the web service
#     advertises its virtual address, each host agent holds a kernel route
#     for it tagged with route protocol 197 (for BIRD/FRR to redistribute);
#     when the wildcard goes (the manager stops, its 1 s TTL runs out), the
#     route is withdrawn. A VPP agent installs the prefix in its FIB under
#     the plugin's FIB source (`show ip fib` names it: "affinity").
stop_managers
WEB_EXTRA='advertise = true' start_manager 1 "$(WEB_EXTRA='advertise = true' manager_config 1 0)"
if [ "$AGENT_KIND" = vpp ]; then
    adv_fib() { vppctl_a "$1" show ip fib 203.0.113.10/32 | tr -d '\r'; }
    adv_route() { adv_fib "$1" | grep -q '^ *affinity refs:'; }
else
    adv_route() { ip -n $LAB-a$1 route show proto 197 | grep -q '^203\.0\.113\.10 .*dev afftun0'; }
fi
no_adv_route() { ! adv_route "$1"; }
wait_for 10 adv_route 1 && wait_for 5 adv_route 2; r_up=$?
if [ "$AGENT_KIND" = vpp ]; then
    r_text=$(adv_fib 1 | grep -E '^203\.0\.113\.10/32|^ *affinity refs:' | tr -s ' ' | tr '\n' ' ')
else
    r_text=$(ip -n $LAB-a1 route show proto 197 | head -n 1)
fi
stop_managers
wait_for 6 no_adv_route 1 && wait_for 6 no_adv_route 2; r_down=$?
if [ "$r_up" = 0 ] && [ "$r_down" = 0 ]; then
    pass advertise-route "both agents installed '$r_text' while advertised, and withdrew it when the wildcard expired"
elif [ "$AGENT_KIND" = vpp ]; then
    fail advertise-route "route up=$r_up down=$r_down; a1: $(adv_fib 1 | tr '\n' ';')"
else
    fail advertise-route "route up=$r_up down=$r_down; a1 proto-197 routes: $(ip -n $LAB-a1 route show proto 197 | tr '\n' ';')"
fi
start_manager 1 "$(manager_config 1 0)"
wait_for 10 web_wildcard_present 1 && wait_for 10 web_wildcard_present 2
wait_for 10 healthy 1 && wait_for 10 healthy 2 && wait_for 10 healthy 3

# 11. VPP only: the same traffic with a worker thread (`cpu { workers 1 }`):
#     packets are processed on the worker, control updates arrive meanwhile,
#     and the per-thread counters are summed in `show affinity stats`.
if [ "$AGENT_KIND" = vpp ]; then
    stop_managers
    VPP_CPU="cpu { main-core 0 corelist-workers 1 }" restart_agents
    for i in 1 2; do for ifc in ethc eths ethm; do vppctl_a $i set interface rx-mode host-$ifc interrupt >/dev/null 2>&1; done; done
    start_manager 1 "$M1"; start_manager 2 "$M2"
    wait_for 20 wildcards_ge 1 30 && wait_for 15 healthy 1 && wait_for 10 healthy 2 && wait_for 10 healthy 3
    w_out=$(client c1 http $VIP 80 10; client c2 http $VIP 80 10)
    w_ok=$(grep -c '^backend-' <<<"$w_out")
    workers=$(vppctl_a 1 show threads | tr -d '\r' | grep -c 'vpp_wk_')
    # Vectors our node handled on the worker thread.
    on_worker=$(vppctl_a 1 show runtime | tr -d '\r' | awk '/^Thread [0-9]+ vpp_wk_/ {w=1} /^Thread 0 / {w=0} w && $1 == "affinity" {print $4; exit}')
    summed=$(counter 1 packets)
    if [ "$w_ok" = 20 ] && [ "$workers" -ge 1 ] && [ "${on_worker:-0}" -gt 0 ] && [ "${summed:-0}" -ge "${on_worker:-0}" ]; then
        pass vpp-workers "with 1 worker thread: 20/20 HTTP requests served; agent 1's worker processed ${on_worker} packets in our node, show affinity stats sums ${summed}"
    else
        fail vpp-workers "ok=$w_ok workers=$workers on-worker=${on_worker:-0} summed=${summed:-0}"
        echo "$w_out" | sort | uniq -c | head -4
    fi
fi

# 12. VPP only: a manager's UDP GSO burst reaches af_packet unsegmented when
#     the sender's veth keeps its offloads; the agent applies every message.
if [ "$AGENT_KIND" = vpp ]; then
    returned() { counter 1 returned-packets; }
    r0=$(returned)
    nsx $LAB-m1 ethtool -K eth0 tx on >/dev/null 2>&1
    nsx $LAB-m1 /usr/bin/python3 test/gso_burst.py 192.0.2.10 192.0.2.1 198.51.100.11 60
    nsx $LAB-m1 ethtool -K eth0 tx off >/dev/null 2>&1
    got_all() { [ $(( $(returned) - r0 )) -ge 60 ]; }
    wait_for 3 got_all
    r1=$(returned)
    if [ $(( r1 - r0 )) = 60 ]; then
        pass vpp-gso-burst "60 messages sent as one UDP GSO send through a veth with offloads on: all 60 applied (returned packets ${r0} -> ${r1})"
    else
        fail vpp-gso-burst "returned packets ${r0} -> ${r1}, expected +60"
    fi
fi

# 13. Lab isolation (issue 15): a second lab is built and removed next to
#     this one; this lab keeps its namespaces and its service, the other
#     leaves nothing behind.
other=$( (unset LAB_ID LAB_DIR; source test/lab.sh; lab_up >/dev/null 2>&1
    up=$(ip netns list | grep -c "^$LAB-"); lab_down; rm -rf "$LAB_DIR"
    echo "$LAB $up $(ip netns list | grep -c "^$LAB-")") )
read -r o_lab o_up o_left <<<"$other"
mine=$(ip netns list | awk '{print $1}' | grep -cxFf "$LAB_DIR/netns")
iso_ok=$(client c1 http $VIP 80 3 | grep -c '^backend-')
if [ "$o_lab" != "$LAB" ] && [ "${o_up:-0}" = 10 ] && [ "${o_left:-1}" = 0 ] && [ "$mine" = 10 ] && [ "$iso_ok" = 3 ]; then
    pass lab-isolation "lab $o_lab built (10 namespaces) and removed beside lab $LAB, which kept its 10 namespaces and served 3/3 requests; $o_lab left 0 namespaces"
else
    fail lab-isolation "other lab ${o_lab:-?}: up=${o_up:-?} left=${o_left:-?}; this lab $LAB: $mine/10 namespaces, $iso_ok/3 requests"
fi

# 14. Operator experience (issue 15): command lines, logs, JSON, metrics,
#     sockets and bind errors, the TUN brought up, the dissector.
M=$BIN/affinity-manager
v_out=$("$M" --version); v_rc=$?
bogus=$("$M" --bogus 2>&1); b_rc=$?
"$M" --help >/dev/null; h_rc=$?
a_help_rc=$("$AGENT_BIN" --help >/dev/null 2>&1; echo $?)
a_bad=$("$AGENT_BIN" --socket "$LAB_DIR/a1.sock" bogus 2>&1); a_bad_rc=$?
if [ "$v_rc" = 0 ] && [[ "$v_out" == "affinity-manager "* ]] && [ "$b_rc" = 2 ] && grep -q "unexpected argument '--bogus'" <<<"$bogus" \
    && grep -q '^Usage:' <<<"$bogus" && [ "$h_rc" = 0 ] && [ "$a_help_rc" = 0 ] && [ "$a_bad_rc" = 2 ]; then
    pass cli "manager --version ($v_out) and --help exit 0, --bogus: usage and exit 2; agent --help exits 0, an unknown command exits 2"
else
    fail cli "manager --version rc=$v_rc ($v_out), --bogus rc=$b_rc, --help rc=$h_rc; agent --help rc=$a_help_rc, unknown command rc=$a_bad_rc"
    echo "$bogus" | head -4
fi

json_ok() { python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if eval(sys.argv[1]) else 1)' "$1"; }
m_json=$(manager_cmd 1 status --json | json_ok 'd["services"][0]["backends"][0]["address"].count(".") == 3 and "flows-created" in d["counters"]' && echo ok)
if [ "$AGENT_KIND" = vpp ]; then a_json=ok; else
    a_json=$(agent_cmd 1 stats --json | json_ok '"ipv6-passed" in d["counters"] and "packets" in d["counters"]' \
        && agent_cmd 1 status --json | json_ok 'isinstance(d["wildcard"], list) and d["wildcard"][0]["dst"].count(".") == 3' && echo ok)
fi
scrape() { nsx "$1" python3 -c 'import sys,urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())' "$2"; }
metrics=$(scrape $LAB-m1 http://192.0.2.10:9638/metrics)
no_help=$(awk '/^# TYPE / {t[$3]=1} /^# HELP / {h[$3]=1} END {for (n in t) if (!(n in h)) print n}' <<<"$metrics")
if [ "$m_json" = ok ] && [ "$a_json" = ok ] && [ -z "$no_help" ] && grep -q '^affinity_manager_config_reloads_total{result="failed"} ' <<<"$metrics" \
    && grep -q '^affinity_manager_build_info{version=' <<<"$metrics" && grep -q '^affinity_manager_uptime_seconds ' <<<"$metrics" \
    && grep -q '^affinity_manager_events_total{event="snat-ports-exhausted"} 0' <<<"$metrics"; then
    pass json-and-metrics "status --json (manager, agent) parse with dotted-quad addresses; /metrics: $(grep -c '^# TYPE' <<<"$metrics") families each with HELP, build info, uptime, reloads, unseen events at 0"
else
    fail json-and-metrics "manager json=${m_json:-bad} agent json=${a_json:-bad} families without HELP: ${no_help:-none}"
    head -5 <<<"$metrics"
fi

# Manager 1 was restarted since the earlier drains and hellos: one control
# action now, and SIGHUP makes the host agents say hello again.
manager_cmd 1 set-weight web 198.51.100.12:8080 1 >/dev/null
if [ "$AGENT_KIND" != vpp ]; then
    lab_kill_ns $LAB-a1 HUP; lab_kill_ns $LAB-a2 HUP
    hello_seen() { grep -q 'agent hello' "$LAB_DIR"/m1.log; }
    wait_for 3 hello_seen
fi
esc=$(cat "$LAB_DIR"/m1.log "$LAB_DIR"/m2.log $( [ "$AGENT_KIND" = vpp ] || echo "$LAB_DIR"/a1.log) | grep -c $'\e')
debug=$(cat "$LAB_DIR"/m1.log "$LAB_DIR"/m2.log | grep -cE 'Some\(|listen=[0-9]+[^.0-9]')
m_logs=$( { [ "$AGENT_KIND" = vpp ] || grep -q 'agent hello agent=192.0.2.1:1637' "$LAB_DIR"/m1.log; } \
    && grep -q 'control action command=set-weight web 198.51.100.12:8080 1' "$LAB_DIR"/m1.log && echo ok)
if [ "$AGENT_KIND" = vpp ]; then a_logs=ok; else
    a_logs=$(grep -q 'affinity-agent running.*managers=192.0.2.10' "$LAB_DIR"/a1.log && grep -q 'manager heard manager=192.0.2.1[01]' "$LAB_DIR"/a1.log && echo ok)
fi
if [ "$esc" = 0 ] && [ "$debug" = 0 ] && [ "$m_logs" = ok ] && [ "$a_logs" = ok ]; then
    pass logs "no colour codes in log files, no Some(...)/Debug values; manager logs agent hellos and control actions; agent logs its start with its managers and each manager heard"
else
    fail logs "escape sequences=$esc debug-formatted=$debug manager lines=${m_logs:-missing} agent lines=${a_logs:-missing}"
    tail -n 3 "$LAB_DIR"/m1.log; [ "$AGENT_KIND" = vpp ] || tail -n 3 "$LAB_DIR"/a1.log
fi

if [ "$AGENT_KIND" != vpp ]; then
    # A second agent in agent 1's namespace on a TUN it creates itself.
    lab_spawn $LAB-a1 "$LAB_DIR/t.log" "$AGENT_BIN" --tun afftest0 --address 192.0.2.1 --listen 1640 \
        --socket "$LAB_DIR/t.sock" --metrics 192.0.2.1:9640
    t_pid=$LAST_PID
    wait_for 5 test -S "$LAB_DIR/t.sock"
    t_up=$(ip -n $LAB-a1 link show afftest0 2>/dev/null | grep -c '[<,]UP[,>]')
    # The kernel's own IPv6 packets on the new TUN (router solicitation,
    # MLD) reach the agent: counted as ipv6-passed, not malformed-passed.
    t_scraped() { scrape $LAB-a1 http://192.0.2.1:9640/metrics | grep -qE '^affinity_agent_events_total\{counter="ipv6-passed"\} [1-9]'; }
    wait_for 5 t_scraped && t_metrics=1 || t_metrics=0
    t_v6=$("$AGENT_BIN" --socket "$LAB_DIR/t.sock" stats --json | python3 -c 'import json,sys; c=json.load(sys.stdin)["counters"]; print(c["ipv6-passed"], c["malformed-passed"])')
    t_bind=$(nsx $LAB-a1 "$AGENT_BIN" --tun afftest1 --address 192.0.2.1 --listen 1640 --socket "$LAB_DIR/t2.sock" 2>&1)
    kill -TERM "$t_pid"
    gone() { ! kill -0 "$t_pid" 2>/dev/null; }
    wait_for 5 gone
    if [ "$t_up" = 1 ] && [ "$t_metrics" = 1 ] && [ "${t_v6#* }" = 0 ] && grep -q 'UDP 0.0.0.0:1640: Address already in use' <<<"$t_bind" \
        && [ ! -e "$LAB_DIR/t.sock" ] && grep -q 'status socket removed' "$LAB_DIR/t.log"; then
        pass agent-tun-socket "the agent brought its new TUN afftest0 up, served /metrics, counted the kernel's IPv6 packets there as ipv6-passed (${t_v6% *}), malformed-passed 0; a second one on its port said 'UDP 0.0.0.0:1640: Address already in use', SIGTERM removed its status socket"
    else
        fail agent-tun-socket "up=$t_up metrics=$t_metrics ipv6-passed/malformed-passed=$t_v6 bind error: $t_bind; socket left: $( [ -e "$LAB_DIR/t.sock" ] && echo yes || echo no)"
        tail -n 3 "$LAB_DIR/t.log"
    fi
    ip -n $LAB-a1 link del afftest0 2>/dev/null; ip -n $LAB-a1 link del afftest1 2>/dev/null
fi

m_bind=$(nsx $LAB-m1 "$M" --config "$M1" 2>&1)
# Manager 2 was stopped with SIGKILL earlier (its socket file stays, as a
# crash leaves it): started again, it replaces that file; SIGTERM removes it.
start_manager 2 "$M2"
m2_up() { manager_cmd 2 status; }
wait_for 5 m2_up
lab_kill_ns $LAB-m2 15
m2_gone() { ns_empty $LAB-m2; }
wait_for 5 m2_gone
if grep -q 'service messages on 192.0.2.10:1638: Address already in use' <<<"$m_bind" && [ ! -e "$LAB_DIR/m2.sock" ] \
    && grep -q 'control socket removed' "$LAB_DIR/m2.log"; then
    pass manager-bind-socket "a second manager on its address said 'service messages on 192.0.2.10:1638: Address already in use'; SIGTERM removed manager 2's control socket"
else
    fail manager-bind-socket "bind error: $m_bind; m2.sock left: $( [ -e "$LAB_DIR/m2.sock" ] && echo yes || echo no)"
fi

if [ -n "$CAP_PID" ] && command -v tshark >/dev/null; then
    kill -INT "$CAP_PID" 2>/dev/null; sleep 1
    [ -n "${KEEP_CAPTURE:-}" ] && cp "$LAB_DIR/control.pcap" "$KEEP_CAPTURE"
    # The lab's UDP service on port 53 echoes text, not DNS: inside punted
    # packets Wireshark's DNS dissectors would call it malformed.
    TS=(tshark -n -X lua_script:dissector/affinity.lua --disable-protocol dns --disable-protocol mdns -r "$LAB_DIR/control.pcap")
    frames=$("${TS[@]}" -Y 'udp.port == 1637 or udp.port == 1638' 2>/dev/null | wc -l)
    undecoded=$("${TS[@]}" -Y '(udp.port == 1637 or udp.port == 1638) and not affinity' 2>/dev/null | wc -l)
    bad=$("${TS[@]}" -Y '_ws.malformed or _ws.expert.severity >= 0x00800000' 2>/dev/null | wc -l)
    types=$("${TS[@]}" -T fields -e affinity.type -Y affinity 2>/dev/null | tr ',' '\n' | sort -n | uniq -c | awk '{printf "%s%s x%s", sep, $2, $1; sep=", "}')
    if [ "$frames" -gt 0 ] && [ "$undecoded" = 0 ] && [ "$bad" = 0 ]; then
        pass dissector "tshark decoded all $frames service-message frames of the lab capture, none malformed; message types seen: $types"
    else
        fail dissector "frames=$frames undecoded=$undecoded malformed/error=$bad types: $types"
        "${TS[@]}" -Y '_ws.malformed or _ws.expert.severity >= 0x00800000' 2>/dev/null | head -5
    fi
else
    skip dissector "needs tcpdump and tshark (make deps)"
fi

# 14-16. Flow lifecycle (issue 11): agents report activity every second
#     (the VPP agent too: activity-report-interval-ms in startup.conf), the
#     transitory TCP timeout is 10 s.
stop_managers
REPORT_S=1
VPP_AFFINITY_EXTRA="activity-report-interval-ms $((REPORT_S * 1000))" \
    restart_agents --activity-report-interval-ms $((REPORT_S * 1000))
M1=$(manager_config 1 0 "tcp_transitory_timeout = 10")
M2=$(manager_config 2 100 "tcp_transitory_timeout = 10")
start_manager 1 "$M1"; start_manager 2 "$M2"
wait_for 20 wildcards_ge 1 30 && wait_for 15 healthy 1 && wait_for 10 healthy 2 && wait_for 10 healthy 3 ||
    lab_back_up lifecycle-lab
mgr_flows() { manager_cmd 1 status | head -n 1 | sed -E 's/.*\(([0-9]+) flows\).*/\1/'; }
flows_le() { [ "$(mgr_flows)" -le "$1" ]; }

# 14. A UDP client keeps sending (every 0.5 s) while its backend is removed
#     by reload: its datagrams reach another backend within one fixed TTL.
STREAM="$LAB_DIR/udp-stream.out"
s0=$(ms)
client c2 udp-stream $VIP 53 16 40100 0.5 >"$STREAM" &
STREAM_PID=$!
wait_for 5 grep -q ' backend-' "$STREAM"
first=$(awk '$2 ~ /^backend-/ {print $2; exit}' "$STREAM")
n=${first#backend-}
sleep 2
for f in "$M1" "$M2"; do sed -i "/\[\[service.backend\]\]/{N;/198.51.100.1$n:5353/d}" "$f"; done
reload_at=$(( $(ms) - s0 ))
lab_kill_ns $LAB-m1 HUP; lab_kill_ns $LAB-m2 HUP
wait $STREAM_PID
# The first reply from another backend after the reload, and whether any
# later reply still came from the removed one.
moved=$(awk -v r="$reload_at" -v b="$first" '$1 * 1000 >= r && $2 ~ /^backend-/ && $2 != b {print int($1 * 1000 - r); exit}' "$STREAM")
stale=$(awk -v r="$reload_at" -v b="$first" -v m="${moved:-0}" '$1 * 1000 >= r + m && $2 == b' "$STREAM" | wc -l)
if [ -n "$moved" ] && [ "$moved" -le $(( ${FIXED_TTL:-12} * 1000 )) ] && [ "$stale" = 0 ]; then
    pass udp-backend-removed "$first removed by reload: the client's datagrams reached $(awk -v r="$reload_at" '$1 * 1000 >= r && $2 ~ /^backend-/ {print $2}' "$STREAM" | sort -u | tr '\n' ' ')${moved} ms after the reload (fixed TTL ${FIXED_TTL:-12} s), none to $first after that"
else
    fail udp-backend-removed "first=$first moved=${moved:-never} stale=$stale"; sed 's/^/  /' "$STREAM" | tail -n 12
fi

# 15. A TCP client reopens a closed 5-tuple at once (HTTP/1.0: closed after
#     each answer) on the weighted-round-robin SNAT service, waits past the
#     5 s sticky time, and is still served, by the same backend.
r_out=$(client c1 reuse $VIP 8080 41000 7)
b1=$(awk '$1 == "first" {print $2}' <<<"$r_out"); b2=$(awk '$1 == "second" {print $2}' <<<"$r_out")
reopened=$(manager_cmd 1 status | awk '$2 == "flows-reopened" {print $3}')
if [ -n "$b1" ] && [ "$b1" = "$b2" ] && [ "${reopened:-0}" -ge 1 ]; then
    pass tcp-reuse-after-close "198.18.0.11:41000 reopened right after close on $b1 and was served by it 7 s later, past the 5 s sticky time (manager: flows-reopened ${reopened})"
else
    fail tcp-reuse-after-close "first=${b1:-none} second=${b2:-none} reopened=${reopened:-0}"; echo "$r_out" | sed 's/^/  /'
fi

# 16. Flood: 10 000 SYNs from spoofed 198.19.x.y at 1000/s, never answered.
#     The manager's flows fall back to what was there within the transitory
#     timeout (10 s, plus a report and a renewal interval), and new
#     connections work throughout.
base=$(mgr_flows)
client c1 synflood $VIP 80 10000 1000 >"$LAB_DIR/flood.out" 2>&1 &
FLOOD_PID=$!
during=0
for k in 1 2 3 4 5; do sleep 1.5; during=$(( during + $(client c2 http $VIP 80 1 | grep -c '^backend-') )); done
wait $FLOOD_PID
peak=$(mgr_flows)
t0=$(ms)
wait_for 40 flows_le $(( base + 5 ))
fell=$(( $(ms) - t0 ))
left=$(mgr_flows)
after=$(client c2 http $VIP 80 3 | grep -c '^backend-')
limit=$(( (10 + REPORT_S + ${FIXED_TTL:-12} / 3 + 3) * 1000 ))
if [ "$peak" -ge 5000 ] && [ "$left" -le $(( base + 5 )) ] && [ "$fell" -le "$limit" ] && [ "$during" = 5 ] && [ "$after" = 3 ]; then
    pass syn-flood "$(cat "$LAB_DIR/flood.out"); manager flows $base -> $peak -> $left, back ${fell} ms after the flood (limit ${limit} ms); 5/5 requests during it and 3/3 after were served"
else
    fail syn-flood "flows $base -> $peak -> $left after ${fell} ms (limit ${limit}); during=$during/5 after=$after/3; $(cat "$LAB_DIR/flood.out")"
    manager_cmd 1 status | grep -E 'flows by state|counter (flows|rx-activity)' | sed 's/^/  m1: /'
fi

# 17. Visibility (issue 15): `affinity-manager stats` sums the agents'
#     activity reports per backend. Six UDP flows of 10 datagrams each
#     (one source port each, so one backend each): the per-backend packet
#     and byte counts the manager shows grow by what the lab sent and got
#     back (within the packets the agents punted meanwhile: a punted packet
#     is counted when the manager's answer returns it), /metrics agrees, and
#     `connections` lists a held TCP connection with both sides and agents.
S0="$LAB_DIR/stats0.json"; S1="$LAB_DIR/stats1.json"; U="$LAB_DIR/udp-stats.out"; : >"$U"
punts() { echo $(( $(counter 1 punted) + $(counter 2 punted) )); }
pu0=$(punts)
manager_cmd 1 stats --json >"$S0"
for sp in 40201 40202 40203 40204 40205 40206; do client c1 udp $VIP 53 10 $sp >>"$U"; done
pu1=$(punts)
stats_match() {
    manager_cmd 1 stats --json >"$S1" || return 1
    python3 - "$S0" "$S1" "$U" $(( pu1 - pu0 )) <<'PY'
import collections, json, sys
s0, s1 = (json.load(open(p)) for p in sys.argv[1:3])
tol = int(sys.argv[4])
sent = collections.defaultdict(lambda: [0, 0, 0, 0])  # pkts in, bytes in, pkts out, bytes out
flows = {}
replies = [l for l in open(sys.argv[3]) if l.startswith("backend-")]
for l in replies:
    name, client, body = l.split(" ")[:3]
    flows[client.split(":")[1]] = "198.51.100.1" + name.split("-")[1] + ":5353"
for sport, b in flows.items():
    sent[b][0] += 10
    sent[b][1] += sum(28 + len(f"q{i}") for i in range(10))
for l in replies:
    name, client = l.split(" ")[:2]
    b = flows[client.split(":")[1]]
    sent[b][2] += 1
    sent[b][3] += 28 + len(l.rsplit(" peer=", 1)[0].encode())
def backends(s):
    svc = next(x for x in s["services"] if x["name"] == "dns")
    return {b["address"]: b["traffic"] for b in svc["backends"]}
b0, b1 = backends(s0), backends(s1)
ok = len(flows) == 6 and len(replies) == 60
parts = []
for b, t in sorted(b1.items()):
    got = [t[k] - b0.get(b, {}).get(k, 0) for k in ("packets_in", "bytes_in", "packets_out", "bytes_out")]
    want = sent.get(b, [0, 0, 0, 0])
    ok = ok and abs(got[0] - want[0]) <= tol and abs(got[2] - want[2]) <= tol and (tol > 0 or got == want)
    parts.append(f"{b} in {got[0]}/{want[0]} pkts {got[1]}/{want[1]} B, out {got[2]}/{want[2]} pkts {got[3]}/{want[3]} B")
print(f"{len(flows)} flows, {len(replies)}/60 replies; shown/sent per backend: " + "; ".join(parts) + f" (punts meanwhile: {tol})")
sys.exit(0 if ok else 1)
PY
}
st_ok=1
for k in $(seq 1 $(( REPORT_S * 2 + 4 ))); do
    sleep 1
    if st_msg=$(stats_match); then st_ok=0; break; fi
done
dns_metrics=$(scrape $LAB-m1 http://192.0.2.10:9638/metrics | grep '^affinity_manager_backend_packets_total{service="dns"')
m_in=$(awk '/direction="in"/ {s += $2} END {print s + 0}' <<<"$dns_metrics")
j_in=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(sum(b["traffic"]["packets_in"] for s in d["services"] if s["name"]=="dns" for b in s["backends"]))' "$S1")
dns_text=$(manager_cmd 1 stats | grep -A4 '(dns)' | tr -s ' ')
if [ "$st_ok" = 0 ] && [ "$m_in" = "$j_in" ] && grep -q 'UDP 203.0.113.10:53 (dns)' <<<"$dns_text"; then
    pass stats "manager 1 stats: $st_msg; /metrics backend_packets_total in = $m_in as in stats --json; text: $(head -n 3 <<<"$dns_text" | tr '\n' '|')"
else
    fail stats "${st_msg:-no stats}; metrics in=$m_in json in=$j_in"
    echo "$dns_text" | sed 's/^/  m1: /'
fi

GO2="$LAB_DIR/go2"; HOLD2="$LAB_DIR/hold2.out"
client c1 hold $VIP 9000 "$GO2" "$HOLD2" &
HOLD2_PID=$!
wait_for 12 grep -q before "$HOLD2"
h_port=$(grep before "$HOLD2" | sed -E 's/.*client=[0-9.]+:([0-9]+).*/\1/')
h_backend=$(grep before "$HOLD2" | grep -o '^backend-[0-9]')
h_addr="198.51.100.1${h_backend#backend-}:9000"
conn_has() {
    manager_cmd 1 connections echo --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
c = [c for c in d["connections"] if c["client"] == "198.18.0.11:" + sys.argv[1]]
sys.exit(0 if len(c) == 1 and c[0]["virtual_address"] == "203.0.113.10:9000" and c[0]["backend"] == sys.argv[2]
         and c[0]["source_to_backend"] == c[0]["client"] and c[0]["state"] == "established"
         and c[0]["agents"] and c[0]["expires_in_s"] > 0 else 1)' "$h_port" "$h_addr"
}
# Established once the agents reported packets both ways (a report interval).
wait_for $(( REPORT_S * 2 + 3 )) conn_has; c_rc=$?
c_line=$(manager_cmd 1 connections echo "$h_addr" | grep "198.18.0.11:$h_port " | tr -s ' ')
touch "$GO2"; wait $HOLD2_PID
if [ "$c_rc" = 0 ] && [ -n "$c_line" ]; then
    pass connections "manager 1 connections echo $h_addr lists the held connection: $c_line"
else
    fail connections "held 198.18.0.11:${h_port:-?} on ${h_addr}: not listed as established; $(manager_cmd 1 connections echo | head -n 5 | tr -s ' ' | tr '\n' '|')"
fi

# Agent restarts under load (issue 16, item 5): a lab of its own (~20 s),
# host agents only (the warm-up is the host agent's --warm-up-ms).
if [ "$AGENT_KIND" = host ]; then
    r=$(SKIP_BUILD=1 LAB_ID='' LAB_DIR='' test/restart-check.sh 2>&1)
    case $(grep -m1 'agent-restart:' <<<"$r") in
        "PASS agent-restart: "*) pass agent-restart "$(grep -m1 -o 'agent-restart: .*' <<<"$r" | cut -d' ' -f2-)" ;;
        *) fail agent-restart "$(tail -n 3 <<<"$r" | tr '\n' ' ')" ;;
    esac
fi

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
