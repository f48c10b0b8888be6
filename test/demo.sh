#!/usr/bin/env bash
# make demo: build the lab, drive traffic, and print what happened — every
# figure below is read from the running lab. VPP agents are used when VPP
# with the affinity plugin is installed; host agents otherwise.
set -u
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then echo "demo: needs root (network namespaces)"; exit 1; fi
source test/lab.sh
trap 'lab_down; rm -rf "$LAB_DIR"' EXIT
trap 'exit 130' INT TERM
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [ -x "$VPP_BIN/vpp" ] && [ -f "$VPP_PLUGIN_DIR/affinity_plugin.so" ]; then
    AGENT_KIND=vpp
    KIND="VPP $("$VPP_BIN/vpp" --version 2>/dev/null | head -1 | awk '{print $2}') with affinity_plugin.so"
else
    KIND="host agents on TUN (no VPP found)"
fi
say "Building the lab: 2 clients, 2 forwarding agents ($KIND), 2 managers, 3 backends"
lab_up
if [ "$AGENT_KIND" = vpp ]; then
    for ns in aff-c1 aff-c2 aff-b1 aff-b2 aff-b3 aff-m1 aff-m2; do nsx $ns ethtool -K eth0 tx off rx off >/dev/null 2>&1; done
    for i in 1 2; do for ifc in ethc eths ethm; do nsx aff-a$i ethtool -K $ifc tx off rx off >/dev/null 2>&1; done; done
fi
start_agent 1; start_agent 2
start_manager 1 "$(manager_config 1 0)"
start_manager 2 "$(manager_config 2 100)"
ready() { [ "$(agent_cmd 1 wildcard | awk '/^wildcard/ {print $3}')" -ge 30 ] 2>/dev/null && manager_cmd 1 status | grep -q '198.51.100.13:8080 *healthy'; }
wait_for 30 ready || { echo "lab did not come up"; exit 1; }
sleep 1

say "Services (primary manager's view)"
manager_cmd 1 status | grep -E '^(service|  backend)'

say "Traffic: 20 HTTP requests from each client to $VIP:80, 6 UDP queries"
out=$( (client c1 http $VIP 80 20; client c2 http $VIP 80 20) )
echo "$out" | awk '{print "  " $0}' | head -8
echo "  ..."
say "Which backend served each client"
echo "$out" | grep '^backend' | sed -E 's/ client=([0-9.]+):[0-9]+.*/ \1/' | sort | uniq -c | awk '{printf "  client %-14s -> %-10s %3d requests\n", $3, $2, $1}'
say "Per-backend counts"
echo "$out" | grep -o '^backend-[0-9]' | sort | uniq -c | awk '{printf "  %-10s %3d\n", $2, $1}'
client c2 udp $VIP 53 6 41000 | sed 's/^/  udp: /' | head -3

say "Fixed affinities per agent (flows still inside their 2 s sticky time)"
for i in 1 2; do echo "  agent $i: $(agent_cmd $i fixed | head -1)"; agent_cmd $i fixed | sed -n '2,5p'; done
say "Punted vs fast-path packets"
for i in 1 2; do
    s=$(agent_cmd $i stats)
    printf '  agent %s: %6s packets, %6s fixed-affinity hits (fast path), %4s punted to a manager, %4s returned\n' $i \
        "$(awk '$2=="packets"{print $1}' <<<"$s")" "$(awk '$2=="fixed-hit"{print $1}' <<<"$s")" "$(awk '$2=="punted"{print $1}' <<<"$s")" "$(awk '$2=="returned-packets"{print $1}' <<<"$s")"
done

say "Failover: a connection is held open, then the primary manager is killed"
GO="$LAB_DIR/go"; HOLD="$LAB_DIR/hold.out"
client c1 hold $VIP 9000 "$GO" "$HOLD" &
HOLD_PID=$!
wait_for 5 grep -q before "$HOLD"
echo "  before: $(cat "$HOLD")"
ip netns pids aff-m1 | xargs -r kill -9
echo "  primary manager killed"
t=$(client c2 first-success $VIP 80 5)
echo "  first new connection served by the backup after ${t}s"
touch "$GO"; wait $HOLD_PID
echo "  after:  $(tail -1 "$HOLD")"
client c1 http $VIP 80 6 | grep -o '^backend-[0-9]' | sort | uniq -c | awk '{printf "  new flows via the backup: %s %d\n", $2, $1}'
manager_cmd 2 status | grep -E '^counter (flows-created|rx-interest-match)' | sed 's/^/  backup /'
say "Done; cleaning up"
