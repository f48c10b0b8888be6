#!/usr/bin/env bash
# Frames that mix the common case's plain passes with what the VPP node
# must act on, checked on the wire: the node skips its per-packet result
# loop when the core says the whole frame was plain passes
# (Worker::plain_passes), so a frame with one forward or drop among plain
# passes must still have it forwarded or dropped. Packet-generator
# streams cycle their source address over flows, packet by packet (frames
# of up to 256 and one cut short): a NAT-only fixed affinity (a plain
# pass, translated), one forwarded to 198.51.100.2 (left untranslated) and
# one forwarded to 0.0.0.0 (dropped), all three the common case's; then
# the same with a flow of no affinity among them (the general path's,
# passed untouched, routed out pg3); then NAT-only packets alone (frames
# the node skips whole). Every packet must leave where its flow says,
# checksums valid, `show errors` must count the forwards and drops, and
# `show affinity stats` the packets, fixed hits and NATs (the common
# case tallies those per chunk) as sent. Needs VPP (VPP_PREFIX, default /opt/vpp) and
# the plugin in target/vpp-plugins. Prints PASS/FAIL lines like
# run-e2e.sh; exit 1 on FAIL.
set -u
cd "$(dirname "$0")/.."
source test/vpp-pg.sh
# Packets per flow in each mixed stream, and NAT-only packets after them.
PER=150
PLAIN=600
pg_vpp_start vppmix 256M 16384 16M "" "agent-address 192.0.2.1 fixed-table-size 4096" "poll-sleep-usec 100"
{ pg_lab_interfaces; cat <<CLI; } | pg_vpp_cli >/dev/null
set ip neighbor pg3 203.0.113.10 02:00:00:00:00:03
test affinity fill 198.18.0.10 1 ports 1024 1 dst 203.0.113.10 80 nat 198.51.100.2 8080
test affinity fill 198.18.0.11 1 ports 1024 1 dst 203.0.113.10 80 forward 198.51.100.2
test affinity fill 198.18.0.12 1 ports 1024 1 dst 203.0.113.10 80 forward 0.0.0.0
packet-generator new { name fast limit $((3 * PER)) size 64-64 interface pg0 node ip4-input data { TCP: 198.18.0.10 - 198.18.0.12 -> 203.0.113.10 TCP: 1024 -> 80 ACK incrementing 24 } }
packet-generator new { name mixed limit $((4 * PER)) size 64-64 interface pg0 node ip4-input data { TCP: 198.18.0.10 - 198.18.0.13 -> 203.0.113.10 TCP: 1024 -> 80 ACK incrementing 24 } }
packet-generator new { name plain limit $PLAIN size 64-64 interface pg0 node ip4-input data { TCP: 198.18.0.10 -> 203.0.113.10 TCP: 1024 -> 80 ACK incrementing 24 } }
CLI
V packet-generator capture pg1 pcap "$PG_DIR/pg1.pcap" count $((4 * PER + PLAIN)) >/dev/null
V packet-generator capture pg3 pcap "$PG_DIR/pg3.pcap" count "$PER" >/dev/null
V packet-generator enable-stream fast >/dev/null
sleep 1
V packet-generator enable-stream mixed >/dev/null
sleep 1
V packet-generator enable-stream plain >/dev/null
sleep 1
V packet-generator capture pg1 disable >/dev/null
V packet-generator capture pg3 disable >/dev/null
errors=$(V show errors)
stats=$(V show affinity stats)
stat() { awk -v n="$1" '$2 == n {print $1; exit}' <<<"$stats"; }
# Sent: 3 flows x PER, 4 flows x PER (one without affinity), PLAIN NATs.
want_stats="packets=$((7 * PER + PLAIN)) fixed-hit=$((6 * PER + PLAIN)) nat-applied=$((2 * PER + PLAIN))"
got_stats="packets=$(stat packets) fixed-hit=$(stat fixed-hit) nat-applied=$(stat nat-applied)"
summary=$(/usr/bin/python3 - "$PG_DIR/pg1.pcap" "$PG_DIR/pg3.pcap" <<'PY'
import struct, sys
sys.path.insert(0, "test")
from pcap_ipv4 import tcp_packets
# Per kind: (source, destination, destination port, MAC) it must leave with.
want = {
    "nat": (bytes([198, 18, 0, 10]), bytes([198, 51, 100, 2]), 8080, "020000000002"),
    "fwd": (bytes([198, 18, 0, 11]), bytes([203, 0, 113, 10]), 80, "020000000002"),
    "none": (bytes([198, 18, 0, 13]), bytes([203, 0, 113, 10]), 80, "020000000003"),
}
got = {k: 0 for k in want}
bad = 0
for path in sys.argv[1:]:
    for f, ip, l4, valid in tcp_packets(path):
        kind = [k for k, (s, d, p, m) in want.items()
                if valid and ip[12:16] == s and ip[16:20] == d
                and struct.unpack_from("!H", l4, 2)[0] == p and f[0:6].hex() == m]
        if kind:
            got[kind[0]] += 1
        else:
            bad += 1
print(got["nat"], got["fwd"], got["none"], bad)
PY
)
read -r nat fwd none bad <<<"${summary:-0 0 0 0}"
dispatched=$(awk '$2 == "affinity" && $3 == "dispatched-to-forward-address" {print $1; exit}' <<<"$errors")
zero=$(awk '$2 == "affinity" && $3 == "drop-forward-address-zero" {print $1; exit}' <<<"$errors")
if [ "$nat" = $((2 * PER + PLAIN)) ] && [ "$fwd" = $((2 * PER)) ] && [ "$none" = "$PER" ] && [ "$bad" = 0 ] \
    && [ "${dispatched:-0}" = $((2 * PER)) ] && [ "${zero:-0}" = $((2 * PER)) ] \
    && [ "$got_stats" = "$want_stats" ]; then
    echo "PASS vpp-mixed-frame: $nat NATed, $fwd forwarded untranslated, $none passed untouched, $zero dropped (forward 0.0.0.0), from frames mixing them and frames of plain passes alone; $got_stats"
else
    echo "FAIL vpp-mixed-frame: nat=$nat/$((2 * PER + PLAIN)) forwarded=$fwd/$((2 * PER)) untouched=$none/$PER wrong=$bad dispatched=${dispatched:-0}/$((2 * PER)) dropped-zero=${zero:-0}/$((2 * PER)) $got_stats (want $want_stats)"
    echo "$errors"
    exit 1
fi
