#!/usr/bin/env bash
# NATed packets leave VPP with correct checksums (the fast path's
# keep/set masks, PlainNat). Packet-generator TCP traffic from 64 source
# ports x 4 addresses, sizes 60-1400 bytes, hits fixed affinities with
# destination NAT (`test affinity fill ... nat`); captured on the egress
# interface, every IPv4 packet must be for 198.51.100.2:8080 with a valid
# IPv4 header checksum and TCP checksum. Needs VPP (VPP_PREFIX) and the
# plugin in PG_PLUGIN_DIR or target/vpp-plugins. PASS/FAIL, exit 1 on FAIL.
set -u
cd "$(dirname "$0")/.."
source test/vpp-pg.sh
N=${N:-512}
pg_vpp_start vppnatck 256M 16384 16M "" "agent-address 192.0.2.1 fixed-table-size 4096" "poll-sleep-usec 100"
# Raw IPv4 TCP packets (pcap, link type raw): random payloads 0-1360
# bytes, 4 source addresses x 64 source ports; every 8th packet's last two
# payload bytes chosen so that its TCP checksum is 0x0000 or 0xffff, or so
# that the NATed checksum computes to 0 (one's-complement corners).
/usr/bin/python3 - "$PG_DIR/in.pcap" "$N" <<'PY'
import random, struct, sys
random.seed(22)
def fold(s):
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return s
def csum(b):
    if len(b) % 2:
        b += b"\0"
    return fold(sum(struct.unpack("!%dH" % (len(b) // 2), b)))
def tcp(src, dst, sport, dport, payload):
    h = struct.pack("!HHIIBBHHH", sport, dport, random.getrandbits(32), random.getrandbits(32), 0x50, 0x10, 65535, 0, 0)
    seg = h + payload
    ps = bytes(src) + bytes(dst) + struct.pack("!BBH", 0, 6, len(seg))
    c = (~csum(ps + seg)) & 0xffff
    seg = seg[:16] + struct.pack("!H", c) + seg[18:]
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(seg), random.getrandbits(16), 0, 64, 6, 0, bytes(src), bytes(dst)))
    ip[10:12] = struct.pack("!H", (~csum(bytes(ip))) & 0xffff)
    return bytes(ip) + seg
N = int(sys.argv[2])
dst = bytes([203, 0, 113, 10])
out = []
for i in range(N):
    src = bytes([198, 18, 0, 10 + i % 4])
    sport = 1024 + (i // 4) % 64
    n = random.choice([0, 1, 2, 3, 6, random.randrange(0, 1361)])
    payload = bytes(random.getrandbits(8) for _ in range(n))
    if i % 8 == 7 and n >= 2:
        # Search the last two bytes for the checksum corner wanted.
        want = i // 8 % 3
        for t in range(65536):
            pl = payload[:-2] + struct.pack("!H", t)
            pkt = tcp(src, dst, sport, 80, pl)
            c = struct.unpack_from("!H", pkt, 36)[0]
            if want == 0 and c == 0x0000:
                break
            if want == 1 and c == 0xffff:
                break
            if want == 2:
                nat = pkt[:16] + bytes([198, 51, 100, 2]) + pkt[20:22] + struct.pack("!H", 8080) + pkt[24:]
                seg = nat[20:]
                ps = nat[12:20] + struct.pack("!BBH", 0, 6, len(seg))
                z = seg[:16] + b"\0\0" + seg[18:]
                if (~csum(ps + z)) & 0xffff == 0:
                    break
        out.append(pkt)
    else:
        out.append(tcp(src, dst, sport, 80, payload))
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<IHHiIII", 0xa1b2c3d4, 2, 4, 0, 0, 65535, 101))
    for p in out:
        f.write(struct.pack("<IIII", 0, 0, len(p), len(p)) + p)
PY
pg_vpp_cli >/dev/null <<CLI
create packet-generator interface pg0
create packet-generator interface pg1
set interface ip address pg0 198.18.0.1/15
set interface ip address pg1 198.51.100.1/24
set interface mtu 9000 pg1
set interface state pg0 up
set interface state pg1 up
set ip neighbor pg1 198.51.100.2 02:00:00:00:00:02
set interface affinity pg0
test affinity fill 198.18.0.10 4 ports 1024 64 dst 203.0.113.10 80 nat 198.51.100.2 8080
packet-generator new { name nat limit $N interface pg0 node ip4-input pcap $PG_DIR/in.pcap }
CLI
V packet-generator capture pg1 pcap "$PG_DIR/pg1.pcap" count "$N" >/dev/null
V packet-generator enable-stream nat >/dev/null
sleep 2
V packet-generator capture pg1 disable >/dev/null
errors=$(V show errors)
summary=$(/usr/bin/python3 - "$PG_DIR/pg1.pcap" <<'PY'
import struct, sys
sys.path.insert(0, "test")
from pcap_ipv4 import tcp_packets
ok, bad, sports, srcs = 0, 0, set(), set()
for f, ip, l4, valid in tcp_packets(sys.argv[1]):
    good = (valid and ip[16:20] == bytes([198, 51, 100, 2])
            and struct.unpack_from("!H", l4, 2)[0] == 8080)
    ok += good
    bad += not good
    sports.add(struct.unpack_from("!H", l4, 0)[0])
    srcs.add(bytes(ip[12:16]))
print(ok, bad, len(sports), len(srcs))
PY
)
read -r ok bad nports naddrs <<<"${summary:-0 0 0 0}"
if [ "$ok" = "$N" ] && [ "$bad" = 0 ]; then
    echo "PASS vpp-nat-checksum: $ok/$N NATed packets to 198.51.100.2:8080 with valid IPv4 and TCP checksums ($nports source ports, $naddrs source addresses)"
    grep -iE "affinity|nat|fixed" <<<"$errors" | head -8
else
    echo "FAIL vpp-nat-checksum: ok=$ok bad=$bad of $N"
    echo "$errors"
    exit 1
fi
