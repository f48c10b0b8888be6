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
trap 'lab_down; rm -rf "$LAB_DIR"' EXIT
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
    start_agent 1 "$@"
    start_agent 2 "$@"
    wait_for 5 test -S "$LAB_DIR/a1.sock" && wait_for 5 test -S "$LAB_DIR/a2.sock"
}
stop_managers() { for i in 1 2; do lab_kill_ns $LAB-m$i 9; done; sleep 0.2; }
fixed_count() { agent_cmd "$1" fixed | awk '/^fixed affinities:/ {print $3}'; }
fixed_le() { [ "$(fixed_count "$1")" -le "$2" ]; }
fixed_zero_both() { [ "$(fixed_count 1)" = 0 ] && [ "$(fixed_count 2)" = 0 ]; }
wildcards_ge() { [ "$(wildcard_count "$1")" -ge "$2" ]; }
wildcards_zero() { [ "$(wildcard_count "$1")" = 0 ]; }
manager_status_has() { manager_cmd "$1" status | grep -q "$2"; }
not_healthy() { ! healthy "$1"; }
web_wildcard_present() { agent_cmd "$1" wildcard | grep -q '203.0.113.10/32:80 '; }
skip() { echo "SKIP $1: $2"; }
wildcard_count() { agent_cmd "$1" wildcard | awk '/^wildcard affinities:/ {print $3}'; }
counter() { agent_cmd "$1" stats | awk -v n="$2" '$2 == n {print $1}'; }
healthy() { manager_cmd 1 status | grep -q "backend 198.51.100.1$1:8080 *healthy"; }

lab_up
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
    if /usr/bin/python3 -c "import vpp_papi" 2>/dev/null; then
        if api=$(/usr/bin/python3 test/papi_check.py "$LAB_DIR/vpp-a1/api.sock" "${VPP_PREFIX:-/opt/vpp}/share/vpp/api" target/release 2>&1); then
            pass vpp-api "vpp_papi: $api"
        else
            fail vpp-api "$api"
        fi
    else
        skip vpp-api "vpp_papi is not importable by /usr/bin/python3 (install it from VPP's src/vpp-api/python)"
    fi
    vppctl_a 1 clear trace >/dev/null
    vppctl_a 1 trace add af-packet-input 500 >/dev/null
    before_clear=$(counter 1 packets)
    vppctl_a 1 clear affinity stats >/dev/null
    client c1 http $VIP 80 1 >/dev/null
    after_clear=$(counter 1 packets)
    trace=$(vppctl_a 1 show trace max 1000 | tr -d '\r')
    errors=$(vppctl_a 1 show errors | tr -d '\r')
    if grep -q 'affinity: fixed nat' <<<"$trace" && grep -q 'before 198.18.0.11' <<<"$trace" && grep -q 'packets punted to a service manager' <<<"$errors" \
        && [ "${after_clear:-0}" -gt 0 ] && [ "${after_clear:-0}" -lt "${before_clear:-0}" ]; then
        pass vpp-cli "show trace: $(grep -m1 -A2 'affinity: fixed nat' <<<"$trace" | tr -s ' ' | tr '\n' ' '); show errors lists the node's counters; clear affinity stats: packets $before_clear -> $after_clear after one request"
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
wait_for 5 manager_status_has 1 retry-without-optional-action
denies=$(manager_cmd 1 status | awk '$2 == "deny-unsupported-action" {print $3}')
retried=$(manager_cmd 1 status | awk '$2 == "retry-without-optional-action" {print $3}')
wait_for 5 web_wildcard_present 1 && wait_for 5 web_wildcard_present 2
wait_for 10 healthy 1 && wait_for 10 healthy 2 && wait_for 10 healthy 3
u_out=$(client c1 http $VIP 80 3)
ok=$(grep -c '^backend-' <<<"$u_out")
if [ "${denies:-0}" -gt 0 ] && [ "${retried:-0}" -gt 0 ] && [ "$ok" = 3 ]; then
    pass unsupported-action "agents sent ${denies} denies for the advertise action; the manager retried without it and 3/3 requests were served"
else
    fail unsupported-action "denies=${denies:-0} retried=${retried:-0} ok=$ok"
    echo "$u_out" | sed 's/^/  client: /'; agent_cmd 1 wildcard | head -12 | sed 's/^/  a1: /'
    agent_cmd 1 stats | awk '$1 > 0' | sed 's/^/  a1: /'; grep -i 'deny\|retry' "$LAB_DIR"/m1.log | tail -n 4 | sed 's/^/  m1: /' 
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
if [ "${n_status:-0}" = 4 ] && [ "$a2_wild" = 0 ] && web_wildcard_present 1; then
    pass agent-without-nat "agent 2 (NAT disabled) installed 0 wildcards; manager status: not used for 4/4 services, 'cannot perform nat'; agent 1 keeps the service"
else
    fail agent-without-nat "status lines=${n_status:-0} agent-2 wildcards=$a2_wild"
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
#     route is withdrawn. (VPP agents: the FIB part is not implemented.)
if [ "$AGENT_KIND" = vpp ]; then
    skip advertise-route "the VPP agent does not install advertised prefixes in the FIB yet"
else
    stop_managers
    WEB_EXTRA='advertise = true' start_manager 1 "$(WEB_EXTRA='advertise = true' manager_config 1 0)"
    adv_route() { ip -n $LAB-a$1 route show proto 197 | grep -q '^203\.0\.113\.10 .*dev afftun0'; }
    no_adv_route() { ! adv_route "$1"; }
    wait_for 10 adv_route 1 && wait_for 5 adv_route 2; r_up=$?
    r_text=$(ip -n $LAB-a1 route show proto 197 | head -n 1)
    stop_managers
    wait_for 6 no_adv_route 1 && wait_for 6 no_adv_route 2; r_down=$?
    if [ "$r_up" = 0 ] && [ "$r_down" = 0 ]; then
        pass advertise-route "both agents installed '$r_text' (proto 197) while advertised, and withdrew it when the wildcard expired"
    else
        fail advertise-route "route up=$r_up down=$r_down; a1 proto-197 routes: $(ip -n $LAB-a1 route show proto 197 | tr '\n' ';')"
    fi
    start_manager 1 "$(manager_config 1 0)"
    wait_for 10 web_wildcard_present 1 && wait_for 10 web_wildcard_present 2
    wait_for 10 healthy 1 && wait_for 10 healthy 2 && wait_for 10 healthy 3
fi

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

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
