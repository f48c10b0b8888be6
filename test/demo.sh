#!/usr/bin/env bash
# make demo: build the lab, drive traffic, and print what happened — every
# figure below is read from the running lab, and every claim is checked:
# each step ends with PASS or FAIL, a closing summary lists them all, and
# the exit status is 1 (naming the failed steps) if any failed. VPP agents
# are used when VPP with the affinity plugin is installed; host agents
# otherwise. The lab is this run's own (per-run namespace prefix, see
# lab.sh), so a demo can run next to another demo or the e2e tests.
#
# DEMO_BREAK=STEP disturbs one step on purpose, to see the check fail:
#   balance   drain backends 2 and 3 (weight 0) before the traffic
#   failover  kill the backup manager together with the primary
#   held      destroy the held connection's socket on its backend (ss -K)
set -u
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then echo "demo: needs root (network namespaces)"; exit 1; fi
BREAK=${DEMO_BREAK:-}
case "$BREAK" in
"" | balance | failover | held) ;;
*) echo "demo: DEMO_BREAK=$BREAK: expected balance, failover or held" >&2; exit 2 ;;
esac
source test/lab.sh
trap 'lab_down; rm -rf "$LAB_DIR"' EXIT
trap 'exit 130' INT TERM
# Headings in bold on a terminal only (a log file gets no escape codes).
if [ -t 1 ]; then say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }; else say() { printf '\n== %s\n' "$*"; }; fi

# verdict STEP OK DETAIL: OK is 0 for a pass (a shell status).
STEPS=()
FAILED=()
verdict() {
    local step=$1 ok=$2 detail=$3 r=PASS
    [ "$ok" = 0 ] || { r=FAIL; FAILED+=("$step"); }
    STEPS+=("$(printf '%s %-10s %s' "$r" "$step" "$detail")")
    printf '  => %s %s: %s\n' "$r" "$step" "$detail"
}
summary() {
    say "Summary (lab $LAB)"
    local s
    for s in "${STEPS[@]}"; do echo "  $s"; done
    if [ "${#FAILED[@]}" -gt 0 ]; then
        echo "demo: FAILED step(s): ${FAILED[*]}"
        return 1
    fi
    echo "demo: all ${#STEPS[@]} steps passed"
}
# count PATTERN TEXT: lines of TEXT matching the extended regex PATTERN.
count() { grep -cE -- "$1" <<<"$2"; }

if [ -x "$VPP_BIN/vpp" ] && [ -f "$VPP_PLUGIN_DIR/affinity_plugin.so" ]; then
    AGENT_KIND=vpp
    KIND="VPP $("$VPP_BIN/vpp" --version 2>/dev/null | head -1 | awk '{print $2}') with affinity_plugin.so"
else
    KIND="host agents on TUN (no VPP found)"
fi
say "Building the lab $LAB: 2 clients, 2 forwarding agents ($KIND), 2 managers, 3 backends"
[ -n "$BREAK" ] && echo "  DEMO_BREAK=$BREAK: the '$BREAK' step is disturbed on purpose and should FAIL"
lab_up
if [ "$AGENT_KIND" = vpp ]; then
    for ns in c1 c2 b1 b2 b3 m1 m2; do nsx "$LAB-$ns" ethtool -K eth0 tx off rx off >/dev/null 2>&1; done
    for i in 1 2; do for ifc in ethc eths ethm; do nsx "$LAB-a$i" ethtool -K $ifc tx off rx off >/dev/null 2>&1; done; done
fi
# The managers' first health checks must find the backends listening, or
# the backends start "healthy", fall, and rise again under the traffic.
backends_listening() { for b in 1 2 3; do nsx "$LAB-b$b" ss -ltn | grep -q "198.51.100.1$b:8080 " || return 1; done; }
wait_for 10 backends_listening
start_agent 1; start_agent 2
start_manager 1 "$(manager_config 1 0)"
M1_PID=$LAST_PID
start_manager 2 "$(manager_config 2 100)"
M2_PID=$LAST_PID
# The web service's 3 backends, each "healthy" (not "unhealthy").
healthy_all() { [ "$(manager_cmd 1 status | awk '/^service / {web = ($2 == "web")} web && /^  backend .* healthy /' | wc -l)" = 3 ]; }
ready() { [ "$(agent_cmd 1 wildcard | awk '/^wildcard/ {print $3}')" -ge 30 ] 2>/dev/null && healthy_all; }
if wait_for 30 ready; then
    verdict lab 0 "agents got $(agent_cmd 1 wildcard | awk '/^wildcard/ {print $3}') wildcard affinities, all 3 web backends healthy"
else
    verdict lab 1 "not up within 30 s: agent 1 has $(agent_cmd 1 wildcard 2>&1 | head -1); $(manager_cmd 1 status 2>&1 | awk '/^service / {web = ($2 == "web")} web && /^  backend .* healthy /' | wc -l) of 3 web backends healthy"
    summary
    exit 1
fi
sleep 1

say "Services (primary manager's view)"
manager_cmd 1 status | grep -E '^(service|  backend)'

if [ "$BREAK" = balance ]; then
    for m in 1 2; do for b in 12 13; do manager_cmd $m drain web 198.51.100.$b:8080 >/dev/null; done; done
    echo "  DEMO_BREAK=balance: backends 2 and 3 drained"
fi
say "Traffic: 20 HTTP requests from each client to $VIP:80, 6 UDP queries from 198.18.0.12:41000 to $VIP:53"
unhealthy_before=$(manager_cmd 1 status | awk '$2 == "backend-went-unhealthy" {print $3}')
out=$( (client c1 http $VIP 80 20; client c2 http $VIP 80 20) )
echo "$out" | awk '{print "  " $0}' | head -8
echo "  ... ($(wc -l <<<"$out") lines)"
say "Which backend served each client"
echo "$out" | grep '^backend' | sed -E 's/ client=([0-9.]+):[0-9]+.*/ \1/' | sort | uniq -c | awk '{printf "  client %-14s -> %-10s %3d requests\n", $3, $2, $1}'
say "Per-backend counts"
echo "$out" | grep -o '^backend-[0-9]' | sort | uniq -c | awk '{printf "  %-10s %3d\n", $2, $1}'
n_ok=$(count '^backend-[0-9] ' "$out")
# Maglev over the client's address and port: 40 flows, 3 equal backends,
# 13.3 each on average. Balanced: each gets at least 3 and none more than
# 24 (60 %); a fair hash misses that about once in 10^4 runs.
least=40 most=0
for b in 1 2 3; do
    c=$(count "^backend-$b " "$out")
    [ "$c" -lt "$least" ] && least=$c
    [ "$c" -gt "$most" ] && most=$c
done
per=$(grep -o '^backend-[0-9]' <<<"$out" | sort | uniq -c | awk '{printf "%s%s=%d", sep, $2, $1; sep=" "}')
unhealthy_after=$(manager_cmd 1 status | awk '$2 == "backend-went-unhealthy" {print $3}')
flaps=$(( ${unhealthy_after:-0} - ${unhealthy_before:-0} ))
[ "$n_ok" = 40 ] && [ "$least" -ge 3 ] && [ "$most" -le 24 ]
verdict balance $? "$n_ok/40 requests answered; per backend: ${per:-none} (each needs 3 to 24); health changes to unhealthy meanwhile: $flaps"
if [ "$BREAK" = balance ]; then
    for m in 1 2; do for b in 12 13; do manager_cmd $m set-weight web 198.51.100.$b:8080 1 >/dev/null; done; done
fi

udp=$(client c2 udp $VIP 53 6 41000)
sed 's/^/  udp: /' <<<"$udp" | head -3
# NAT both ways: the clients talked to the virtual address only (replies
# were translated back), the backends saw the clients' own addresses
# (destination NAT only, no source rewrite).
wrong_peer=$(grep '^backend-' <<<"$out" | grep -vc " peer=$VIP:80\$")
wrong_client=$(grep '^backend-' <<<"$out" | grep -vEc ' client=198\.18\.0\.1[12]:')
udp_ok=$(grep -E '^backend-[0-9] ' <<<"$udp" | grep ' client=198\.18\.0\.12:41000 ' | grep -c " peer=$VIP:53\$")
[ "$n_ok" -gt 0 ] && [ "$wrong_peer" = 0 ] && [ "$wrong_client" = 0 ] && [ "$udp_ok" = 6 ]
verdict nat $? "TCP: $n_ok replies all from $VIP:80 (wrong: $wrong_peer), backends saw 198.18.0.11/12 (wrong: $wrong_client); UDP: $udp_ok/6 replies from $VIP:53 to 198.18.0.12:41000"

say "Source NAT: 6 requests from 198.18.0.11 to $VIP:8080 (web-snat: weights backend-1 1, backend-2 2)"
s_out=$(client c1 http $VIP 8080 6)
sed 's/^/  /' <<<"$s_out"
s_snat=$(count '^backend-[12] client=198\.51\.100\.250:400[0-9][0-9] ' "$s_out")
s_peer=$(grep '^backend-' <<<"$s_out" | grep -c " peer=$VIP:8080\$")
s_per=$(grep -o '^backend-[0-9]' <<<"$s_out" | sort | uniq -c | awk '{printf "%s%s=%d", sep, $2, $1; sep=" "}')
[ "$s_snat" = 6 ] && [ "$s_peer" = 6 ]
verdict source-nat $? "$s_snat/6 reached backend-1/2 from 198.51.100.250:40000-40099, $s_peer/6 replies from $VIP:8080; per backend: ${s_per:-none}"

say "Fixed affinities per agent (first 4 rows each; open flows carry the ${FIXED_TTL:-12} s fixed TTL the manager renews, closed ones are deleted 2 s after their close)"
for i in 1 2; do
    echo "  agent $i: $(agent_cmd $i fixed limit 4 | head -1)"
    agent_cmd $i fixed limit 4 | sed -n '2,5p'
done
say "Punted vs fast-path packets"
for i in 1 2; do
    s=$(agent_cmd $i stats)
    pk[$i]=$(awk '$2=="packets"{print $1}' <<<"$s"); fh[$i]=$(awk '$2=="fixed-hit"{print $1}' <<<"$s")
    pu[$i]=$(awk '$2=="punted"{print $1}' <<<"$s"); rp[$i]=$(awk '$2=="returned-packets"{print $1}' <<<"$s")
    printf '  agent %s: %6s packets, %6s fixed-affinity hits (fast path), %4s punted to a manager, %4s returned\n' $i \
        "${pk[$i]}" "${fh[$i]}" "${pu[$i]}" "${rp[$i]}"
done
# Every flow's first packet is punted; the rest of the flow hits the
# fixed affinity the manager installed.
[ "${fh[1]:-0}" -gt "${pu[1]:-0}" ] 2>/dev/null && [ "${pu[1]:-0}" -gt 0 ]
verdict fast-path $? "agent 1: ${fh[1]:-?} fast-path hits > ${pu[1]:-?} punts > 0"

say "Failover: a connection is held open, then the primary manager is killed"
GO="$LAB_DIR/go"; HOLD="$LAB_DIR/hold.out"
client c1 hold $VIP 9000 "$GO" "$HOLD" &
HOLD_PID=$!
wait_for 12 grep -q before "$HOLD"
echo "  before: $(grep -v '^retry' "$HOLD" | head -1)"
b_before=$(grep ' before$' "$HOLD" | grep -o '^backend-[0-9]')
kill -9 "$M1_PID"
echo "  primary manager (pid $M1_PID) killed"
if [ "$BREAK" = failover ]; then kill -9 "$M2_PID"; echo "  DEMO_BREAK=failover: backup manager (pid $M2_PID) killed too"; fi
t=$(client c2 first-served $VIP 80 5)
[ "$t" = never ] && echo "  no new connection served within 5 s" || echo "  first new connection served by the backup after ${t}s (a new attempt every 10 ms)"
if [ "$BREAK" = held ] && [ -n "$b_before" ]; then
    # Only the held connection: its socket on the backend is destroyed.
    nsx "$LAB-b${b_before#backend-}" ss -K -tn dst 198.18.0.11 sport = 9000 >/dev/null
    echo "  DEMO_BREAK=held: the held connection's socket on $b_before destroyed (ss -K)"
fi
touch "$GO"; wait $HOLD_PID
echo "  after:  $(tail -1 "$HOLD")"
later=$(client c1 http $VIP 80 6)
grep -o '^backend-[0-9]' <<<"$later" | sort | uniq -c | awk '{printf "  new flows via the backup: %s %d\n", $2, $1}'
later_ok=$(count '^backend-[0-9] ' "$later")
manager_cmd 2 status 2>/dev/null | grep -E '^counter (flows-created|rx-interest-match)' | sed 's/^/  backup /'
[ "$t" != never ] && awk -v t="$t" 'BEGIN { exit !(t <= 1.0) }' && [ "$later_ok" = 6 ]
ok=$?
[ "$t" = never ] && t_text="no new connection served within 5 s" || t_text="first new connection ${t}s"
verdict failover $ok "$t_text after the primary was killed (needs <= 1 s); $later_ok/6 later requests served by the backup"
b_after=$(grep ' after$' "$HOLD" | grep -o '^backend-[0-9]')
[ -n "$b_before" ] && [ "$b_before" = "$b_after" ]
verdict held $? "held connection: before on ${b_before:-nothing}, after on ${b_after:-nothing ($(tail -1 "$HOLD"))}"

summary
