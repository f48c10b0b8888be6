#![no_main]
//! Datagrams from "agents" through the manager core, as the daemon hands
//! them over: the first 6 bytes choose the source address and port, the
//! rest is the datagram. The core runs open (no keys: everything reaches
//! dispatch) with a service whose client domain covers everything, and
//! its timers run after each datagram. Nothing may panic; the core's
//! state stays bounded (agents table). Seeds: fuzz/seeds/manager_datagram.
use affinity_manager::{Config, ManagerCore};
use libfuzzer_sys::fuzz_target;
use std::net::{Ipv4Addr, SocketAddrV4};

const CONFIG: &str = r#"
[manager]
listen = "192.0.2.10:1638"
wildcard_ttl = 3
fixed_ttl = 30
[agents]
unicast = ["192.0.2.1:1637"]
[[service]]
name = "web"
virtual = "203.0.113.10:80"
protocol = "tcp"
client_domain = "0.0.0.0/0"
sticky_timeout_ms = 100
snat = { address = "198.51.100.250", ports = "40000-40003" }
[[service.backend]]
address = "198.51.100.1:8080"
[[service]]
name = "dns"
virtual = "203.0.113.10:53"
protocol = "udp"
[[service.backend]]
address = "198.51.100.1:53"
"#;

fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let Ok(mut cfg) = Config::parse(CONFIG) else {
        return;
    };
    cfg.agents.multicast_group = None;
    let mut core = ManagerCore::new(cfg, 0);
    let (head, body) = data.split_at(6);
    let from = SocketAddrV4::new(
        Ipv4Addr::new(head[0], head[1], head[2], head[3]),
        u16::from_be_bytes([head[4], head[5]]),
    );
    // The datagram twice (duplicates, known flows), timers in between.
    let _ = core.handle_datagram(1, from, body);
    let _ = core.tick(2_000_000_000);
    let _ = core.handle_datagram(3_000_000_000, from, body);
    let _ = core.tick(60_000_000_000);
    assert!(core.agents.len() <= 1);
    let _ = core.status(60_000_000_000);
    let _ = core.metrics(60_000_000_000);
});
