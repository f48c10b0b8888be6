#!/usr/bin/env bash
# One decision and one reason at the VPP boundary, checked in VPP: packet
# generator traffic hits two fixed affinities, one whose forward action has
# no address (the core drops its packets, counter
# drop-forward-address-zero) and one that translates (NAT). Then
#  - `show errors` must file the dropped packets under that reason (the
#    node's error counters are the core's counters: b->error from the
#    reason the core returned), and
#  - `show trace` must name, for each packet, the fixed affinity (slot and
#    action set) and what the core did, with the 5-tuple before and after;
#  - the timer process must sleep while nothing is due.
# Needs VPP (VPP_PREFIX, default /opt/vpp) and the plugin in
# target/vpp-plugins. Prints PASS/FAIL lines like run-e2e.sh; exit 1 on FAIL.
set -u
cd "$(dirname "$0")/.."
source test/vpp-pg.sh
pg_vpp_start vpperr 256M 8192 16M "" "agent-address 192.0.2.1 fixed-table-size 4096" "poll-sleep-usec 100"
pg_vpp_cli >/dev/null <<CLI
create packet-generator interface pg0
create packet-generator interface pg1
set interface ip address pg0 198.18.0.1/15
set interface ip address pg1 198.51.100.1/24
set interface state pg0 up
set interface state pg1 up
set ip neighbor pg1 198.51.100.2 02:00:00:00:00:02
set interface affinity pg0
test affinity fill 198.18.0.30 1 ports 1024 1 dst 203.0.113.10 80 forward 0.0.0.0
test affinity fill 198.18.0.40 1 ports 1024 1 dst 203.0.113.10 80 nat 198.51.100.2 8080
packet-generator new { name zero limit 2 size 64-64 interface pg0 node ip4-input data { TCP: 198.18.0.30 -> 203.0.113.10 TCP: 1024 -> 80 ACK incrementing 24 } }
packet-generator new { name nat limit 1 size 64-64 interface pg0 node ip4-input data { TCP: 198.18.0.40 -> 203.0.113.10 TCP: 1024 -> 80 ACK incrementing 24 } }
trace add pg-input 10
CLI
V packet-generator enable-stream zero >/dev/null
V packet-generator enable-stream nat >/dev/null
sleep 0.5
errors=$(V show errors)
trace=$(V show trace)
stats=$(V show affinity stats)
fail=0
# `show errors`: Count, Node, Reason, Severity.
line=$(awk '$2 == "affinity" && $3 == "drop-forward-address-zero"' <<<"$errors")
if [ "$(awk '{print $1}' <<<"$line")" = 2 ] && grep -q error <<<"$line"; then
    echo "PASS vpp-errors: show errors files the 2 dropped packets under their reason: $(tr -s ' ' <<<"$line" | sed 's/^ //')"
else
    echo "FAIL vpp-errors: no 'affinity drop-forward-address-zero' line with count 2 in show errors"; fail=1
fi
# The same list and count in the core's own statistics.
if grep -Eq "^ *2 +drop-forward-address-zero$" <<<"$stats"; then
    echo "PASS vpp-errors-stats: show affinity stats counts the same reason (2)"
else
    echo "FAIL vpp-errors-stats: show affinity stats does not count drop-forward-address-zero 2"; fail=1
fi
drop=$(grep -cE "affinity: fixed slot [0-9]+ action-set [0-9]+ -> drop \(drop-forward-address-zero\), next error-drop" <<<"$trace")
nat=$(grep -A2 -E "affinity: fixed slot [0-9]+ action-set [0-9]+ nat -> pass, next" <<<"$trace")
if [ "$drop" = 2 ] && grep -q "before TCP 198.18.0.40:1024 -> 203.0.113.10:80" <<<"$nat" \
    && grep -q "after  TCP 198.18.0.40:1024 -> 198.51.100.2:8080" <<<"$nat"; then
    echo "PASS vpp-trace: show trace names the fixed affinity, action set and action of each packet, with the tuple before and after NAT"
    grep -E "affinity: |before|after " <<<"$trace" | sort | uniq -c | sed 's/^/  /'
else
    echo "FAIL vpp-trace: drop traces=$drop, nat trace: ${nat:-none}"; fail=1
fi
# The timer process sleeps until the core's next deadline (here the fixed
# affinities' expiry, a day away) instead of waking every 0.1 s.
# Columns: name, state ("any wait": two words), calls, vectors, suspends.
suspends() { V show runtime | awk '$1 == "affinity-process" {print $6}'; }
s1=$(suspends); sleep 2; s2=$(suspends)
wakes=$(( ${s2:-1000} - ${s1:-0} ))
if [ -n "$s1" ] && [ "$wakes" -le 2 ]; then
    echo "PASS vpp-timer-sleep: affinity-process woke $wakes times in 2 s with nothing due (a fixed 0.1 s tick: 20)"
else
    echo "FAIL vpp-timer-sleep: affinity-process suspends ${s1:-?} -> ${s2:-?} in 2 s"; fail=1
fi
if [ "$fail" != 0 ]; then
    echo "$errors"; echo "$trace" | head -80; echo "$stats"
    exit 1
fi
