#!/usr/bin/env bash
# Clocks per packet of the affinity node next to nat44-ed-in2out, in the
# same VPP, both fed by the packet generator with 64-byte TCP packets of
# 1,179,648 flows (131072 sources x 9 ports). Needs VPP (VPP_PREFIX,
# default /opt/vpp) and `make plugin`. Prints `name value unit` lines.
set -u
cd "$(dirname "$0")/.."
P=${VPP_PREFIX:-/opt/vpp}
[ -x "$P/bin/vpp" ] && [ -f target/vpp-plugins/affinity_plugin.so ] || { echo "vpp-runtime-bench: skipped, needs $P/bin/vpp and make plugin"; exit 0; }
source test/vpp-pg.sh
pg_vpp_start vppbench 2G 32768 64M "nat_plugin.so" "agent-address 192.0.2.1 fixed-table-size 2400000"
pg_vpp_cli <<'CLI' | grep -v "^$" | sed "s/^/  vpp: /" >&2
create packet-generator interface pg0
create packet-generator interface pg1
create packet-generator interface pg2
create packet-generator interface pg3
set interface ip address pg0 198.18.0.1/15
set interface ip address pg1 198.51.100.1/24
set interface ip address pg2 192.0.2.1/24
set interface ip address pg3 203.0.113.1/24
set interface state pg0 up
set interface state pg1 up
set interface state pg2 up
set interface state pg3 up
set ip neighbor pg1 198.51.100.2 02:00:00:00:00:02
set ip neighbor pg3 203.0.113.99 02:00:00:00:00:03
set interface affinity pg0
test affinity fill 198.18.0.0 131072 ports 1024 9 dst 203.0.113.10 80 nat 198.51.100.2 8080
nat44 plugin enable sessions 3000000
nat44 add address 203.0.113.20 - 203.0.113.60
set interface nat44 in pg2 out pg3
packet-generator new { name aff limit 4718592 size 64-64 interface pg0 node ip4-input data { TCP: 198.18.0.0 - 198.19.255.255 -> 203.0.113.10 TCP: 1024 - 1032 -> 80 ACK incrementing 24 } }
packet-generator new { name nat limit 1179648 size 64-64 interface pg2 node ip4-input data { TCP: 198.18.0.0 - 198.19.255.255 -> 203.0.113.99 TCP: 1024 - 1032 -> 80 SYN incrementing 24 } }
CLI
done_stream() { V show packet-generator | awk -v s="$1" '$1 == s {print $2}' | grep -q No; }
run() { V packet-generator enable-stream "$1"; for _ in $(seq 120); do sleep 0.25; done_stream "$1" && return; done; }
# Warm-up: nat44-ed creates its 1.18 M sessions (slow path), both tables warm.
run nat; run nat; run aff
V clear runtime
run nat; run aff
rt=$(V show runtime)
aff=$(awk '$1 == "affinity" {print $6}' <<<"$rt")
nat=$(awk '$1 == "nat44-ed-in2out" {print $6}' <<<"$rt")
sessions=$(V show nat44 summary | awk '/total sessions/ {print $3}')
echo "vpp_affinity_clocks_per_pkt $aff clocks"
echo "vpp_nat44_ed_in2out_clocks_per_pkt $nat clocks"
echo "vpp_nat44_ed_sessions $sessions sessions"
awk -v a="$aff" -v n="$nat" 'BEGIN { if (n > 0) printf "ratio_affinity_vs_nat44_ed %.2f x\n", a / n }'
