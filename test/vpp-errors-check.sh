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
#  - the timer process must sleep while nothing is due;
#  - checksum offload (issue 12 item 4): a packet arriving with a partial
#    TCP checksum (pg2 csum-offload-enabled: VNET_BUFFER_F_OFFLOAD with
#    offload-tcp-cksum, as af_packet and virtio deliver a local sender's
#    packets) is NATed with its checksum updated as a pseudo-header sum
#    (addresses only, not ports), and left for pg1's offload to complete;
#  - an ICMP fragmentation-needed about a NATed flow (issue 12 item 1's
#    bytes) reaches the backend translated, byte for byte;
#  - the SYN proxy (a wildcard with the admission action, sent as a
#    manager would): the SYN-ACK answered in place leaves with the core's
#    length, not the SYN's;
#  - a later fragment held with no first fragment, on an idle thread, is
#    expired by the timer process (Worker::poll_fragments);
#  - `allowed-manager`: a service message from another source is refused
#    (control-sender-not-allowed), one from the allowed manager is not;
#  - `warm-up-ms`: a second VPP waiting for its manager shows the window
#    and drops a TCP ACK matching no affinity, not a bare SYN.
# Needs VPP (VPP_PREFIX, default /opt/vpp) and the plugin in
# target/vpp-plugins. Prints PASS/FAIL lines like run-e2e.sh; exit 1 on FAIL.
set -u
cd "$(dirname "$0")/.."
source test/vpp-pg.sh
pg_vpp_start vpperr 256M 8192 16M "" "agent-address 192.0.2.1 fixed-table-size 4096 allowed-manager 192.0.2.10 activity-report-interval-ms 2500" "poll-sleep-usec 100"
pg_vpp_cli >/dev/null <<CLI
create packet-generator interface pg0
create packet-generator interface pg1 csum-offload-enabled
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

# Raw IPv4 packets for the packet generator (pcap, link type raw): the
# issue's ICMP frag-needed, and a keepalive (api/tests/golden.rs) from a
# stranger and from the allowed manager.
/usr/bin/python3 - "$PG_DIR" <<'PY'
import struct, sys
d = sys.argv[1]
def ip_cksum(h):
    s = sum(struct.unpack("!%dH" % (len(h) // 2), h))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
def udp(src, dst, sport, dport, payload):
    ln = 28 + len(payload)
    h = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, ln, 1, 0, 64, 17, 0,
                              bytes(map(int, src.split("."))), bytes(map(int, dst.split(".")))))
    struct.pack_into("!H", h, 10, ip_cksum(bytes(h)))
    return bytes(h) + struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
def pcap(name, pkts):
    with open(f"{d}/{name}", "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xa1b2c3d4, 2, 4, 0, 0, 65535, 101))
        for p in pkts:
            f.write(struct.pack("<IIII", 0, 0, len(p), len(p)) + p)
# A NATed flow's ACK as a local sender hands it to its NIC: the TCP
# checksum field holds the pseudo-header sum only (folded, not inverted:
# VPP's ip4_pseudo_header_cksum, Linux CHECKSUM_PARTIAL).
src, dst = bytes([198, 18, 0, 50]), bytes([203, 0, 113, 10])
seg = bytearray(struct.pack("!HHIIBBHHH", 1024, 80, 0, 0, 0x50, 0x10, 4096, 0, 0) + bytes(range(24)))
psum = sum(struct.unpack("!HHHH", src + dst)) + 6 + len(seg)
while psum >> 16: psum = (psum & 0xffff) + (psum >> 16)
struct.pack_into("!H", seg, 16, psum)
h = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(seg), 2, 0, 64, 6, 0, src, dst))
struct.pack_into("!H", h, 10, ip_cksum(bytes(h)))
pcap("offload.pcap", [bytes(h) + bytes(seg)])
pcap("icmp.pcap", [bytes.fromhex("45000038424200004001397ac00002fecb00710a03042c1300000578450005a042420000400630f4cb00710ac61200050050a7f800002328")])
ka = bytes.fromhex("01110010010000000000000000000009")
# api/tests/golden.rs: wildcard tcp any -> 203.0.113.10:80, SYN proxy.
wc = bytes.fromhex("0101005c010000000000000000000004800100240600000000000000000000"
                   "00cb00710affffffff00000050000000000000001e00140018010000000000"
                   "03e8000007d00000000000000000000d0010000000000000000201000000")
pcap("synproxy-wc.pcap", [udp("192.0.2.10", "192.0.2.1", 40000, 1637, wc)])
# A SYN with MSS, SACK-permitted, timestamps, window scale and an
# experimental option (RFC 6994, kind 254) the SYN-ACK does not carry:
# 68 bytes, the answer shorter.
opts = bytes.fromhex("020405b40402080a0000000100000000") + bytes.fromhex("01030307") + bytes.fromhex("fe08000000000000")
tcp = bytearray(struct.pack("!HHIIBBHHH", 2000, 80, 1000, 0, (5 + len(opts) // 4) << 4, 0x02, 65535, 0, 0) + opts)
src, dst = bytes([198, 18, 0, 60]), bytes([203, 0, 113, 10])
s = sum(struct.unpack("!HHHH", src + dst)) + 6 + len(tcp) + sum(struct.unpack("!%dH" % (len(tcp) // 2), tcp))
while s >> 16: s = (s & 0xffff) + (s >> 16)
struct.pack_into("!H", tcp, 16, ~s & 0xffff)
h = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 3, 0, 64, 6, 0, src, dst))
struct.pack_into("!H", h, 10, ip_cksum(bytes(h)))
pcap("syn.pcap", [bytes(h) + bytes(tcp)])
# The second (last) fragment of a UDP datagram whose first never comes.
frag = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 528, 0x1002, 1480 // 8, 64, 17, 0,
                             bytes([198, 18, 0, 7]), bytes([203, 0, 113, 10]))) + bytes(528)
struct.pack_into("!H", frag, 10, ip_cksum(bytes(frag[:20])))
pcap("frag.pcap", [bytes(frag)])
pcap("stranger.pcap", [udp("198.18.0.99", "192.0.2.1", 40000, 1637, ka)])
pcap("manager.pcap", [udp("192.0.2.10", "192.0.2.1", 40000, 1637, ka)])
PY
pg_vpp_cli >/dev/null <<CLI
create packet-generator interface pg2 csum-offload-enabled
set interface ip address pg2 192.0.2.1/24
set interface state pg2 up
set interface affinity pg2
set ip neighbor pg1 198.51.100.3 02:00:00:00:00:03
test affinity fill 198.18.0.50 1 ports 1024 1 dst 203.0.113.10 80 nat 198.51.100.2 8080
test affinity fill 198.18.0.5 1 ports 43000 1 dst 203.0.113.10 80 nat 198.51.100.3 8080
packet-generator new { name offload limit 1 interface pg2 node ip4-input pcap $PG_DIR/offload.pcap }
packet-generator new { name fragneeded limit 1 interface pg0 node ip4-input pcap $PG_DIR/icmp.pcap }
packet-generator new { name synproxy-wc limit 1 interface pg2 node ip4-input pcap $PG_DIR/synproxy-wc.pcap }
packet-generator new { name syn limit 1 interface pg0 node ip4-input pcap $PG_DIR/syn.pcap }
packet-generator new { name frag limit 1 interface pg0 node ip4-input pcap $PG_DIR/frag.pcap }
set ip neighbor pg0 198.18.0.60 02:00:00:00:00:60
packet-generator new { name stranger limit 1 interface pg0 node ip4-input pcap $PG_DIR/stranger.pcap }
packet-generator new { name manager limit 1 interface pg2 node ip4-input pcap $PG_DIR/manager.pcap }
CLI
V packet-generator capture pg1 pcap "$PG_DIR/pg1.pcap" count 2 >/dev/null
V packet-generator enable-stream offload >/dev/null
V packet-generator enable-stream fragneeded >/dev/null
sleep 0.5
V packet-generator capture pg1 disable >/dev/null
checks=$(/usr/bin/python3 - "$PG_DIR/pg1.pcap" <<'PY'
import struct, sys
def fold(s):
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return s
def pseudo(src, dst, n, ports=0):
    return fold(sum(struct.unpack("!HHHH", src + dst)) + 6 + n + ports)
data = open(sys.argv[1], "rb").read()
off, out = 24, []
while off + 16 <= len(data):
    incl = struct.unpack_from("<I", data, off + 8)[0]
    f = data[off + 16: off + 16 + incl]
    off += 16 + incl
    ip = f[14:]
    if len(ip) < 20 or ip[0] != 0x45: continue
    if ip[9] == 6 and ip[12:16] == bytes([198, 18, 0, 50]):
        src, dst, seg = ip[12:16], ip[16:20], ip[20:]
        got = struct.unpack_from("!H", seg, 16)[0]
        # Still the pseudo-header sum, now of the translated addresses: the
        # NIC completes it right. Updated as a full checksum, the port
        # change (80 -> 8080) would be folded in too.
        want = pseudo(src, dst, len(seg))
        ports = pseudo(src, dst, len(seg), (0xffff - 80) + 8080)
        ok = got == want and struct.unpack_from("!H", seg, 2)[0] == 8080
        print("offload %s field 0x%04x = pseudo-header sum of %s 0x%04x (port change folded in: 0x%04x)"
              % ("ok" if ok else "bad", got, ".".join(map(str, dst)), want, ports))
    elif ip[9] == 1:
        want = bytearray.fromhex("450000384242000040014b4ec00002fec633640303040cd300000578450005a042420000400642c8c6336403c61200051f90a7f800002328")
        want[8] = 0x3f                       # ip4-rewrite's hop
        struct.pack_into("!H", want, 10, 0x4c4e)
        print("icmp %s %s" % ("ok" if ip[:len(want)] == bytes(want) else "bad", ip.hex()))
PY
)
if grep -q "^offload ok" <<<"$checks"; then
    echo "PASS vpp-csum-offload: partial TCP checksum (offload flags on) NATed as a pseudo-header sum, addresses only: $(grep ^offload <<<"$checks")"
else
    echo "FAIL vpp-csum-offload: ${checks:-no packet captured on pg1}"; fail=1
fi
if grep -q "^icmp ok" <<<"$checks"; then
    echo "PASS vpp-icmp-frag-needed: ICMP frag-needed about 203.0.113.10:80 -> 198.18.0.5:43000 left for the backend translated (outer dst 198.51.100.3, quoted src 198.51.100.3:8080, checksums): $(grep ^icmp <<<"$checks" | cut -d' ' -f3)"
else
    echo "FAIL vpp-icmp-frag-needed: ${checks:-no packet captured on pg1}"; fail=1
fi

# The SYN proxy answers in place; the SYN-ACK goes back out of pg0.
V packet-generator capture pg0 pcap "$PG_DIR/pg0.pcap" count 1 >/dev/null
V packet-generator enable-stream synproxy-wc >/dev/null
sleep 0.3
V packet-generator enable-stream syn >/dev/null
sleep 0.5
V packet-generator capture pg0 disable >/dev/null
synack=$(/usr/bin/python3 - "$PG_DIR/pg0.pcap" <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()
off = 24
while off + 16 <= len(data):
    incl = struct.unpack_from("<I", data, off + 8)[0]
    f = data[off + 16: off + 16 + incl]
    off += 16 + incl
    ip = f[14:]
    if len(ip) >= 40 and ip[9] == 6 and ip[33] & 0x12 == 0x12:
        total = struct.unpack_from("!H", ip, 2)[0]
        print("%s ip-total-length %d frame-ip-bytes %d (the SYN: 68)" % ("ok" if total == len(ip) and total < 68 else "bad", total, len(ip)))
PY
)
answered=$(V show affinity stats | awk '$2 == "syn-proxy-syn-answered" {print $1}')
if grep -q "^ok" <<<"$synack" && [ "${answered:-0}" = 1 ]; then
    echo "PASS vpp-syn-proxy-length: SYN-ACK answered in place left with the core's length: ${synack#ok }"
else
    echo "FAIL vpp-syn-proxy-length: syn-proxy-syn-answered=${answered:-0} SYN-ACK: ${synack:-none captured}"; fail=1
fi

# A held fragment on a thread that sees no more packets: the timer
# process expires it (2 s) without a frame to do it.
stat() { V show affinity stats | awk -v n="$1" '$2 == n {print $1}'; }
V packet-generator enable-stream frag >/dev/null
sleep 0.3
fh=$(stat fragment-held)
sleep 3
fe=$(stat fragment-expired)
if [ "${fh:-0}" = 1 ] && [ "${fe:-0}" = 1 ]; then
    echo "PASS vpp-fragment-expiry: a later fragment without its first held (fragment-held 1), expired by the timer process on an idle thread (fragment-expired 1)"
else
    echo "FAIL vpp-fragment-expiry: fragment-held=${fh:-0} fragment-expired=${fe:-0}"; fail=1
fi

notallowed() { V show affinity stats | awk '$2 == "control-sender-not-allowed" {print $1}'; }
V packet-generator enable-stream stranger >/dev/null
sleep 0.3
n1=$(notallowed)
V packet-generator enable-stream manager >/dev/null
sleep 0.3
n2=$(notallowed)
if [ "${n1:-0}" = 1 ] && [ "${n2:-0}" = 1 ]; then
    echo "PASS vpp-allowed-manager: allowed-manager 192.0.2.10: a keepalive from 198.18.0.99 refused (control-sender-not-allowed 1), the manager's accepted"
else
    echo "FAIL vpp-allowed-manager: control-sender-not-allowed after the stranger: ${n1:-0}, after the manager: ${n2:-0}"; fail=1
fi

# auth-key-file: an empty key or a file past 4096 bytes stops VPP at start
# (as the host agent's --key-file), naming the file.
: >"$PG_DIR/empty.key"
head -c 5000 /dev/zero | tr '\0' k >"$PG_DIR/long.key"
for k in empty long; do
    sed -e "s#cli-listen [^ ]*#cli-listen $PG_DIR/cli-$k.sock#" \
        -e "s#prefix $PG_NS#prefix $PG_NS-$k#" -e "s#socket-name $PG_DIR/api.sock#socket-name $PG_DIR/api-$k.sock#" \
        -e "s#socket-name $PG_DIR/stats.sock#socket-name $PG_DIR/stats-$k.sock#" -e "s#log $PG_DIR/vpp.log#log $PG_DIR/vpp-$k.log#" \
        -e "s#^affinity {#affinity { auth-key-file $PG_DIR/$k.key#" "$PG_DIR/startup.conf" >"$PG_DIR/startup-$k.conf"
    timeout 20 ip netns exec "$PG_NS" "$P/bin/vpp" -c "$PG_DIR/startup-$k.conf" >"$PG_DIR/out-$k.log" 2>&1
    rc=$?
    msg=$(grep -aho "auth-key-file [^ ]* is empty or longer than 4096 bytes" "$PG_DIR/out-$k.log" "$PG_DIR/vpp-$k.log" 2>/dev/null | head -n 1)
    if [ "$rc" != 124 ] && [ -n "$msg" ]; then
        echo "PASS vpp-key-file-$k: VPP refused to start (exit $rc): $msg"
    else
        echo "FAIL vpp-key-file-$k: exit $rc, log: $(tail -n 3 "$PG_DIR/out-$k.log" | tr '\n' ' ')"; fail=1
    fi
done

# warm-up-ms (issue 16, item 5, as the host agent's --warm-up-ms): this
# VPP names no manager, so it has nothing to wait for; a second one with
# `manager 192.0.2.10 warm-up-ms 30000` shows the window in `show affinity
# managers` and drops a TCP ACK that matches no affinity
# (drop-warm-up-no-affinity, in `show errors` too) while a bare SYN passes.
cold=$(V show affinity managers)
sed -e "s#cli-listen [^ ]*#cli-listen $PG_DIR/cli-warm.sock#" \
    -e "s#prefix $PG_NS#prefix $PG_NS-warm#" -e "s#socket-name $PG_DIR/api.sock#socket-name $PG_DIR/api-warm.sock#" \
    -e "s#socket-name $PG_DIR/stats.sock#socket-name $PG_DIR/stats-warm.sock#" -e "s#log $PG_DIR/vpp.log#log $PG_DIR/vpp-warm.log#" \
    -e "s#^affinity {#affinity { manager 192.0.2.10 warm-up-ms 30000#" "$PG_DIR/startup.conf" >"$PG_DIR/startup-warm.conf"
ip netns exec "$PG_NS" "$P/bin/vpp" -c "$PG_DIR/startup-warm.conf" >"$PG_DIR/out-warm.log" 2>&1 &
warm_pid=$!
W() { "$P/bin/vppctl" -s "$PG_DIR/cli-warm.sock" "$@" | tr -d '\r'; }
for _ in $(seq 100); do "$P/bin/vppctl" -s "$PG_DIR/cli-warm.sock" show version >/dev/null 2>&1 && break; sleep 0.2; done
while read -r line; do [ -n "$line" ] && W $line >/dev/null; done <<CLI
create packet-generator interface pg0
set interface ip address pg0 198.18.0.1/15
set interface state pg0 up
set interface affinity pg0
packet-generator new { name ack limit 3 size 64-64 interface pg0 node ip4-input data { TCP: 198.18.0.70 -> 203.0.113.10 TCP: 1024 -> 80 ACK incrementing 24 } }
packet-generator new { name syn limit 1 size 64-64 interface pg0 node ip4-input data { TCP: 198.18.0.71 -> 203.0.113.10 TCP: 1024 -> 80 SYN incrementing 24 } }
CLI
W packet-generator enable-stream ack >/dev/null
W packet-generator enable-stream syn >/dev/null
sleep 0.5
warming=$(W show affinity managers | grep "warm-up:")
wdrops=$(W show affinity stats | awk '$2 == "drop-warm-up-no-affinity" {print $1}')
werr=$(W show errors | awk '$2 == "affinity" && $3 == "drop-warm-up-no-affinity" {print $1}')
wpass=$(W show affinity stats | awk '$2 == "miss-passed" {print $1}')
kill -9 "$warm_pid" 2>/dev/null
if grep -q "warm-up: done" <<<"$cold" && grep -Eq "warm-up: [0-9.]+s left, waiting for 192.0.2.10" <<<"$warming" \
    && [ "${wdrops:-0}" = 3 ] && [ "${werr:-0}" = 3 ] && [ "${wpass:-0}" = 1 ]; then
    echo "PASS vpp-warm-up: warm-up-ms accepted; show affinity managers: '$(sed 's/^ *//' <<<"$warming")' (without a manager: 'warm-up: done'); 3 ACKs matching nothing dropped (drop-warm-up-no-affinity 3, show errors 3), the bare SYN passed"
else
    echo "FAIL vpp-warm-up: without manager '${cold//$'\n'/ }', with: '${warming:-no warm-up line}', drops ${wdrops:-0}, show errors ${werr:-0}, passed ${wpass:-0}; $(tail -n 3 "$PG_DIR/out-warm.log" | tr '\n' ' ')"; fail=1
fi

if [ "$fail" != 0 ]; then
    echo "$errors"; echo "$trace" | head -80; echo "$stats"
    exit 1
fi
