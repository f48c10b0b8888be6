#!/usr/bin/env bash
# The network-namespace lab (seed FIGURES 4 and 5), sourced by run-e2e.sh
# and demo.sh. Every run gets its own prefix LAB=aff<5 hex digits> for its
# namespaces ($LAB-c1 ...), its own LAB_DIR for sockets, logs, configs and
# the record of what it created ($LAB_DIR/netns, $LAB_DIR/pids); lab_down
# removes exactly that, so labs on one host cannot hurt each other. Veths,
# bridges and TUNs are created inside the run's own namespaces, so their
# names need no prefix. Below, "aff-x" stands for "$LAB-x".
#
#   clients aff-c1 198.18.0.11, aff-c2 198.18.0.12  (gateway: agent 1)
#        |  client LAN 198.18.0.0/24
#   agents aff-a1 (.1 on every LAN), aff-a2 (.2)    -- host agents on TUN
#        |  server LAN 198.51.100.0/24
#   backends aff-b1 .11 (gateway agent 1), aff-b2 .12, aff-b3 .13 (gateway
#   agent 2: their replies cross the other agent, FIGURE 5)
#   control LAN 192.0.2.0/24: agents .1 .2, managers aff-m1 .10 (primary),
#   aff-m2 .11 (backup); wildcards by multicast 239.255.16.37.
# Virtual address 203.0.113.10: web :80 -> :8080, echo :9000, udp :53 -> :5353.

# 5 hex digits: "aff" + 5 + "-sw" stays short; never "aff-" (older lab
# scripts delete every namespace named aff-*).
LAB_ID=${LAB_ID:-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n' | cut -c1-5)}
LAB=aff$LAB_ID
LAB_DIR=${LAB_DIR:-$(mktemp -d "/tmp/affinity-lab-$LAB_ID.XXXXXX")}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release}
AGENT_BIN=${AGENT_BIN:-$BIN/affinity-agent}
VIP=203.0.113.10
NS_NAMES="sw c1 c2 a1 a2 m1 m2 b1 b2 b3"

nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# The run's record: namespaces it created, PIDs it started.
lab_ns_add() { ip netns add "$1" && echo "$1" >>"$LAB_DIR/netns"; }
# lab_spawn NS LOG COMMAND... : run COMMAND in namespace NS in the
# background (ip netns exec execs it, so $! is its PID) and record the PID.
lab_spawn() {
    local ns=$1 log=$2; shift 2
    ip netns exec "$ns" "$@" >"$log" 2>&1 &
    LAST_PID=$!
    echo "$LAST_PID" >>"$LAB_DIR/pids"
    # Not a job of this shell: no "Killed" notice when lab_down ends it.
    disown "$LAST_PID" 2>/dev/null
}
# Is this PID in one of this run's namespaces? (guards against PID reuse)
lab_owns_pid() {
    local ns
    ns=$(ip netns identify "$1" 2>/dev/null) || return 1
    [ -n "$ns" ] && grep -qx -- "$ns" "$LAB_DIR/netns" 2>/dev/null
}
# lab_kill_ns NS [SIGNAL]: the processes inside one of this run's namespaces.
lab_kill_ns() { ip netns pids "$1" 2>/dev/null | xargs -r kill "-${2:-9}" 2>/dev/null; }

# Remove what this run created and nothing else: its recorded PIDs, then
# whatever still runs in its own namespaces, then those namespaces.
lab_down() {
    local pid ns
    if [ -f "$LAB_DIR/pids" ]; then
        while read -r pid; do lab_owns_pid "$pid" && kill -9 "$pid" 2>/dev/null; done <"$LAB_DIR/pids"
        rm -f "$LAB_DIR/pids"
    fi
    if [ -f "$LAB_DIR/netns" ]; then
        while read -r ns; do
            lab_kill_ns "$ns" 9
            ip netns del "$ns" 2>/dev/null
        done <"$LAB_DIR/netns"
        rm -f "$LAB_DIR/netns"
    fi
    rm -f "$LAB_DIR"/*.sock
}

# link HOST BRIDGE IFNAME ADDR/LEN
link() {
    local host=$1 br=$2 ifname=$3 addr=$4 peer="p-${1#"$LAB"-}-$2"
    ip -n $LAB-sw link add "$peer" type veth peer name "$ifname" netns "$host"
    ip -n $LAB-sw link set "$peer" master "$br" up
    ip -n "$host" addr add "$addr" dev "$ifname"
    ip -n "$host" link set "$ifname" up
}

lab_up() {
    mkdir -p "$LAB_DIR"
    echo $$ >"$LAB_DIR/owner"
    local n
    for n in $NS_NAMES; do lab_ns_add "$LAB-$n" || return 1; ip -n "$LAB-$n" link set lo up; done
    for br in brc brs brm; do
        ip -n $LAB-sw link add "$br" type bridge
        ip -n $LAB-sw link set "$br" up
    done
    link $LAB-c1 brc eth0 198.18.0.11/24
    link $LAB-c2 brc eth0 198.18.0.12/24
    for i in 1 2; do
        link $LAB-a$i brc ethc 198.18.0.$i/24
        link $LAB-a$i brs eths 198.51.100.$i/24
        link $LAB-a$i brm ethm 192.0.2.$i/24
    done
    link $LAB-b1 brs eth0 198.51.100.11/24
    link $LAB-b2 brs eth0 198.51.100.12/24
    link $LAB-b3 brs eth0 198.51.100.13/24
    link $LAB-m1 brm eth0 192.0.2.10/24
    link $LAB-m2 brm eth0 192.0.2.11/24
    for c in c1 c2; do ip -n $LAB-$c route add default via 198.18.0.1; done
    ip -n $LAB-b1 route add default via 198.51.100.1
    # The source-NAT address lives behind the agents, like the clients.
    ip -n $LAB-b1 route add 198.51.100.250/32 via 198.51.100.1
    ip -n $LAB-b2 route add 198.51.100.250/32 via 198.51.100.2
    ip -n $LAB-b3 route add 198.51.100.250/32 via 198.51.100.2
    ip -n $LAB-b2 route add default via 198.51.100.2
    ip -n $LAB-b3 route add default via 198.51.100.2
    for m in m1 m2; do
        ip -n $LAB-$m route add 224.0.0.0/4 dev eth0
        # Health checks reach the backends through agent 1 (not via its TUN).
        ip -n $LAB-$m route add 198.51.100.0/24 via 192.0.2.1
    done
    for i in 1 2; do
        local a=$LAB-a$i
        nsx $a sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
            net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.default.send_redirects=0
        ip -n $a route add 224.0.0.0/4 dev ethm
        ip -n $a tuntap add dev afftun0 mode tun
        nsx $a sysctl -qw net.ipv4.conf.afftun0.rp_filter=0 net.ipv6.conf.afftun0.disable_ipv6=1
        ip -n $a link set afftun0 up
        # Forwarded traffic from the client and server LANs goes through the agent.
        ip -n $a route add default dev afftun0 table 100
        ip -n $a rule add iif ethc lookup 100 pref 100
        ip -n $a rule add iif eths lookup 100 pref 101
    done
    for b in 1 2 3; do
        start_backend $b
    done
}

# start_backend N: backend-N's HTTP, TCP echo and UDP echo in aff-bN.
start_backend() {
    lab_spawn "$LAB-b$1" "$LAB_DIR/b$1.log" python3 "$ROOT/test/backend.py" "backend-$1" "198.51.100.1$1"
}

AGENT_KIND=${AGENT_KIND:-host}
VPP_BIN=${VPP_PREFIX:-/opt/vpp}/bin
VPP_PLUGIN_DIR=${CARGO_TARGET_DIR:-$ROOT/target}/vpp-plugins

# A VPP forwarding agent in aff-aN: af_packet host interfaces on the
# namespace's veths (VPP owns their addresses), the affinity feature on the
# client and server LANs, control on 192.0.2.N:1637. 4k pages, no hugepages.
start_vpp_agent() {
    local i=$1 a=$LAB-a$1 d="$LAB_DIR/vpp-a$1"
    mkdir -p "$d"
    for ifc in ethc eths ethm; do ip -n $a addr flush dev $ifc; done
    ip -n $a rule del iif ethc lookup 100 pref 100 2>/dev/null
    ip -n $a rule del iif eths lookup 100 pref 101 2>/dev/null
    ip -n $a link del afftun0 2>/dev/null
    # The veths' own MACs: a restarted VPP keeps its neighbours' ARP entries valid.
    local mc ms mm
    mc=$(ip -n $a -br link show ethc | awk '{print $3}')
    ms=$(ip -n $a -br link show eths | awk '{print $3}')
    mm=$(ip -n $a -br link show ethm | awk '{print $3}')
    cat >"$d/setup.vpp" <<VPP
create host-interface name ethc hw-addr $mc
create host-interface name eths hw-addr $ms
create host-interface name ethm hw-addr $mm
set interface state host-ethc up
set interface state host-eths up
set interface state host-ethm up
set interface ip address host-ethc 198.18.0.$i/24
set interface ip address host-eths 198.51.100.$i/24
set interface ip address host-ethm 192.0.2.$i/24
set interface affinity host-ethc
set interface affinity host-eths
VPP
    cat >"$d/startup.conf" <<CONF
unix { cli-listen $d/cli.sock log $d/vpp.log exec $d/setup.vpp poll-sleep-usec 100 }
api-segment { prefix $LAB-a$i }
socksvr { socket-name $d/api.sock }
memory { main-heap-size 512M main-heap-page-size 4k }
buffers { buffers-per-numa 16384 page-size 4k }
statseg { size 32M page-size 4k socket-name $d/stats.sock }
${VPP_CPU:-}
plugins { path ${VPP_PREFIX:-/opt/vpp}/lib/x86_64-linux-gnu/vpp_plugins:$VPP_PLUGIN_DIR
  plugin default { disable } plugin af_packet_plugin.so { enable } plugin ping_plugin.so { enable }
  plugin nat_plugin.so { enable } plugin affinity_plugin.so { enable } }
affinity { agent-address 192.0.2.$i listen-port 1637 multicast-group 239.255.16.37 manager 192.0.2.10 fixed-table-size 65536 ${VPP_AFFINITY_EXTRA:-} }
CONF
    lab_spawn $a "$d/out.log" "$VPP_BIN/vpp" -c "$d/startup.conf"
}

vppctl_a() { local i=$1; shift; "$VPP_BIN/vppctl" -s "$LAB_DIR/vpp-a$i/cli.sock" "$@"; }

# start_agent N [extra args...]
start_agent() {
    if [ "$AGENT_KIND" = vpp ]; then start_vpp_agent "$1"; return; fi
    local i=$1; shift
    # A SIGKILLed agent leaves its status socket behind: removed here, so
    # `wait_for ... test -S` waits for this agent's own socket. (CI once saw
    # the stale one: the wait returned before the new agent had entered its
    # namespace, the next kill missed it, and two agent 2s raced.)
    rm -f "$LAB_DIR/a$i.sock"
    lab_spawn $LAB-a$i "$LAB_DIR/a$i.log" "$AGENT_BIN" --tun afftun0 --address 192.0.2.$i --name agent-$i \
        --multicast-group 239.255.16.37 --manager 192.0.2.10 --manager 192.0.2.11 --socket "$LAB_DIR/a$i.sock" "$@"
}

agent_cmd() {
    local i=$1; shift
    if [ "$AGENT_KIND" = vpp ]; then vppctl_a "$i" show affinity "$@" | tr -d '\r'; return; fi
    "$AGENT_BIN" --socket "$LAB_DIR/a$i.sock" "$@"
}

# service_head NAME PORT PROTOCOL ALGORITHM -> the start of a [[service]]
# table at $VIP:PORT with the caller's $backup precedence.
service_head() {
    printf '[[service]]\nname = "%s"\nvirtual = "%s:%s"\nprotocol = "%s"\nalgorithm = "%s"\nbackup_precedence = %s\n' \
        "$1" "$VIP" "$2" "$3" "$4" "$backup"
}

# backend_tables PORT HOST... -> a [[service.backend]] table for each
# 198.51.100.HOST:PORT (the lab's backends), for a service in a config.
backend_tables() {
    local port=$1 h; shift
    for h in "$@"; do printf '[[service.backend]]\naddress = "198.51.100.%s:%s"\n' "$h" "$port"; done
}

# manager_config N BACKUP_PRECEDENCE [extra [manager] lines] -> path
manager_config() {
    local i=$1 backup=$2 extra=${3:-} addr=192.0.2.1$(( $1 - 1 )) f="$LAB_DIR/m$1.toml"
    cat >"$f" <<TOML
[manager]
listen = "$addr:1638"
name = "manager-$i"
control_socket = "$LAB_DIR/m$i.sock"
metrics = "$addr:9638"
wildcard_ttl = 1
fixed_ttl = ${FIXED_TTL:-12}
$extra

${AUTH_SECTION:-}
[agents]
multicast_group = "239.255.16.37"
multicast_interface = "$addr"
${AGENTS_UNICAST:-}

$(service_head web 80 tcp maglev)
client_domain = "198.18.0.0/15"
sticky_timeout_ms = 2000
${WEB_EXTRA:-}
health = { kind = "http", interval_ms = 300, timeout_ms = 200, rise = 2, fall = 2 }
$(backend_tables 8080 11 12 13)

$(service_head echo 9000 tcp maglev)
$(backend_tables 9000 11 12 13)

$(service_head web-snat 8080 tcp weighted-round-robin)
snat = { address = "198.51.100.250", ports = "40000-40099" }
$(backend_tables 8080 11 12)
weight = 2

$(service_head dns 53 udp round-robin)
$(backend_tables 5353 11 12 13)
TOML
    echo "$f"
}

start_manager() {
    local i=$1 cfg=$2
    rm -f "$LAB_DIR/m$i.sock"  # a SIGKILLed manager's; see start_agent
    lab_spawn $LAB-m$i "$LAB_DIR/m$i.log" env RUST_LOG="${RUST_LOG:-info}" "$BIN/affinity-manager" --config "$cfg"
}

manager_cmd() { local i=$1; shift; "$BIN/affinity-manager" --socket "$LAB_DIR/m$i.sock" "$@"; }

# wait_for SECONDS COMMAND... : poll until the command succeeds.
wait_for() {
    local t=$1; shift
    local end=$(( $(date +%s%N) + t * 1000000000 ))
    while [ "$(date +%s%N)" -lt "$end" ]; do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

client() { local c=$1; shift; nsx $LAB-$c python3 "$ROOT/test/client.py" "$@"; }
