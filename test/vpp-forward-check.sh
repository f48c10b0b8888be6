#!/usr/bin/env bash
# Dispatch to a forward address inside VPP, checked on the wire: packet
# generator traffic hits fixed affinities with the forward flag; captured
# on the egress interface, every packet must leave untranslated (still for
# the virtual address) towards the forward address's MAC. A forward
# address whose neighbour is unknown is ARPed for and its packets counted.
# Needs VPP (VPP_PREFIX, default /opt/vpp) and the plugin in
# target/vpp-plugins. Prints PASS/FAIL lines like run-e2e.sh; exit 1 on FAIL.
set -u
cd "$(dirname "$0")/.."
source test/vpp-pg.sh
pg_vpp_start vppfwd 256M 8192 16M "" "agent-address 192.0.2.1 fixed-table-size 4096" "poll-sleep-usec 100"
{ pg_lab_interfaces; cat <<CLI; } | pg_vpp_cli >/dev/null
test affinity fill 198.18.0.10 4 ports 1024 1 dst 203.0.113.10 80 forward 198.51.100.2
test affinity fill 198.18.0.20 1 ports 1024 1 dst 203.0.113.10 80 forward 198.51.100.3
packet-generator new { name known limit 8 size 64-64 interface pg0 node ip4-input data { TCP: 198.18.0.10 - 198.18.0.13 -> 203.0.113.10 TCP: 1024 -> 80 ACK incrementing 24 } }
packet-generator new { name unknown limit 3 size 64-64 interface pg0 node ip4-input data { TCP: 198.18.0.20 -> 203.0.113.10 TCP: 1024 -> 80 ACK incrementing 24 } }
CLI
V packet-generator capture pg1 pcap "$PG_DIR/pg1.pcap" count 9 >/dev/null
V packet-generator enable-stream known >/dev/null
sleep 0.5
V packet-generator enable-stream unknown >/dev/null
sleep 0.5
V packet-generator capture pg1 disable >/dev/null
errors=$(V show errors)
fwd=$(awk '/dispatched-to-forward-address/ {print $1; exit}' <<<"$errors")
unres=$(awk '/drop-forward-address-unresolved/ {print $1; exit}' <<<"$errors")
# Ethernet frames on pg1: IPv4 ones must be for 203.0.113.10 to 02:00:00:00:00:02;
# an ARP request must ask for 198.51.100.3.
summary=$(/usr/bin/python3 - "$PG_DIR/pg1.pcap" <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()
off, ok, bad, arp = 24, 0, 0, 0
while off + 16 <= len(data):
    incl = struct.unpack_from("<I", data, off + 8)[0]
    f = data[off + 16: off + 16 + incl]
    off += 16 + incl
    etype = struct.unpack_from("!H", f, 12)[0]
    if etype == 0x0800:
        dst_mac, dst_ip = f[0:6].hex(), ".".join(map(str, f[30:34]))
        ok += dst_mac == "020000000002" and dst_ip == "203.0.113.10"
        bad += not (dst_mac == "020000000002" and dst_ip == "203.0.113.10")
    elif etype == 0x0806 and ".".join(map(str, f[38:42])) == "198.51.100.3":
        arp += 1
print(ok, bad, arp)
PY
)
read -r ok bad arp <<<"${summary:-0 0 0}"
blackholed=$(awk '/blackholed packets/ {print $1; exit}' <<<"$errors")
if [ "${fwd:-0}" = 8 ] && [ "$ok" = 8 ] && [ "$bad" = 0 ] && [ "${unres:-0}" = 3 ] && [ "${arp:-0}" -ge 1 ] && [ -z "$blackholed" ]; then
    echo "PASS vpp-forward: 8/8 packets dispatched untranslated to 198.51.100.2's MAC via ip4-load-balance; unresolved forward address: 3 packets counted, ARP sent for it"
else
    echo "FAIL vpp-forward: dispatched=${fwd:-0} on-wire-ok=$ok wrong=$bad unresolved=${unres:-0} arp=$arp blackholed=${blackholed:-0}"
    echo "$errors"
    exit 1
fi
