//! The simulated-agents harness the manager's tests share: the manager core
//! against forwarding agents that run the real agent core
//! (`affinity-forwarding-agent`), packets in, affinities and rewrites out.
// Each test crate uses part of this module.
#![allow(dead_code)]

use affinity_api::{AffinityKey, AGENT_PORT};
use affinity_forwarding_agent::wire;
use affinity_forwarding_agent::{Agent, AgentConfig, Disposition, PacketBuf, Worker};
use affinity_manager::{Config, ManagerCore, Outgoing};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

/// One second in the clock's nanoseconds.
pub const SEC: u64 = 1_000_000_000;
/// The virtual address of the tests' services.
pub const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// The tests' backends.
pub const B: [Ipv4Addr; 3] = [
    Ipv4Addr::new(198, 51, 100, 1),
    Ipv4Addr::new(198, 51, 100, 2),
    Ipv4Addr::new(198, 51, 100, 3),
];

/// Client `n`: 198.18.0.n.
pub fn client(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, n)
}

/// The `[manager]` section every test starts from (mgr1 on 192.0.2.10:1638,
/// wildcard TTL 3 s, fixed TTL 30 s), `manager_extra` lines appended.
pub fn manager_section(manager_extra: &str) -> String {
    format!(
        r#"
[manager]
listen = "192.0.2.10:1638"
name = "mgr1"
wildcard_ttl = 3
fixed_ttl = 30
{manager_extra}"#
    )
}

/// A `[[service]]` table of the configuration's TOML: `name`, `virtual`
/// (`vip`, "address:port"), each of `options` on a line of its own (keys
/// such as `algorithm = "maglev"`, then any sub-table such as
/// `[service.health]`), then a `[[service.backend]]` table per entry of
/// `backends`: its "address:port", optionally followed by a space and
/// more of the table's keys (`"198.51.100.1:8080 weight = 10"`). Written
/// once so that the tests' services differ only where they mean to.
pub fn service<S: AsRef<str>>(name: &str, vip: &str, options: &[&str], backends: &[S]) -> String {
    let mut t = format!("\n[[service]]\nname = \"{name}\"\nvirtual = \"{vip}\"\n");
    for o in options {
        t.push_str(o);
        t.push('\n');
    }
    for b in backends {
        let (addr, keys) = b.as_ref().split_once(' ').unwrap_or((b.as_ref(), ""));
        t.push_str(&format!("[[service.backend]]\naddress = \"{addr}\"\n"));
        if !keys.is_empty() {
            t.push_str(keys);
            t.push('\n');
        }
    }
    t
}

/// The first `n` of the backends [`B`] on `port`, as [`service`] takes them.
pub fn backends(n: usize, port: u16) -> Vec<String> {
    B.iter().take(n).map(|b| format!("{b}:{port}")).collect()
}

/// TCP `web` 203.0.113.10:80 from clients in 198.18.0.0/15 with
/// `algorithm`, sticky 2 s, then `extra` keys, to the three backends
/// 198.51.100.1–3:8080.
pub fn web(algorithm: &str, extra: &[&str]) -> String {
    let algorithm = format!("algorithm = \"{algorithm}\"");
    let mut options = vec![
        r#"protocol = "tcp""#,
        r#"client_domain = "198.18.0.0/15""#,
        &algorithm,
        "sticky_timeout_ms = 2000",
    ];
    options.extend_from_slice(extra);
    service("web", "203.0.113.10:80", &options, &backends(3, 8080))
}

/// UDP `dns` 203.0.113.10:53 → 198.51.100.1–2:53, round robin.
pub fn dns() -> String {
    let options = [r#"protocol = "udp""#, r#"algorithm = "round-robin""#];
    service("dns", "203.0.113.10:53", &options, &backends(2, 53))
}

/// `[manager]` (with `manager_extra`) and two agents, then `services`.
pub fn config(manager_extra: &str, services: &str) -> Config {
    let text = format!(
        r#"{}
[agents]
unicast = ["192.0.2.1:1637", "192.0.2.2:1637"]
{services}
"#,
        manager_section(manager_extra)
    );
    Config::parse(&text).unwrap_or_else(|e| panic!("{e:?}"))
}

/// The manager core and two simulated agents (192.0.2.1 and 192.0.2.2,
/// port `AGENT_PORT`), on one clock in nanoseconds.
pub struct Sim {
    pub mgr: ManagerCore,
    pub mgr_addr: SocketAddrV4,
    pub agents: Vec<(SocketAddrV4, Arc<Agent>, Worker)>,
    pub now: u64,
    /// Packets the agents let through (after rewrite), per agent.
    pub delivered: Vec<Vec<Vec<u8>>>,
    /// Whether what the agents send on their own timers (activity reports)
    /// goes to the manager.
    relay_agent_timers: bool,
    /// Each agent's configuration (a restart builds it anew from it).
    configs: Vec<AgentConfig>,
}

impl Sim {
    /// Agents with 4096 fixed entries and no activity reports; what the
    /// agents send on their own timers is dropped.
    pub fn new(cfg: Config) -> Sim {
        Sim::build(cfg, 4096, 0, false)
    }

    /// Agents with `fixed_capacity` entries that report activity every 10 s;
    /// what they send on their own timers reaches the manager.
    pub fn reporting(cfg: Config, fixed_capacity: usize) -> Sim {
        Sim::build(cfg, fixed_capacity, 10_000, true)
    }

    /// [`Sim::reporting`] with reports every `interval_ms` ms.
    pub fn reporting_every(cfg: Config, fixed_capacity: usize, interval_ms: u64) -> Sim {
        Sim::build(cfg, fixed_capacity, interval_ms, true)
    }

    fn build(
        cfg: Config,
        fixed_capacity: usize,
        activity_report_interval_ms: u64,
        relay_agent_timers: bool,
    ) -> Sim {
        let mgr_addr = cfg.manager.listen;
        let mut agents = Vec::new();
        let mut configs = Vec::new();
        for i in 1..=2u8 {
            let addr = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, i), AGENT_PORT);
            let c = AgentConfig {
                fixed_capacity,
                agent_addr: *addr.ip(),
                agent_name: format!("fa{i}"),
                instance_id: i as u32,
                activity_report_interval_ms,
                ..Default::default()
            };
            let a = Agent::new(c.clone());
            let w = a.worker();
            agents.push((addr, a, w));
            configs.push(c);
        }
        let mut s = Sim {
            mgr: ManagerCore::new(cfg, 0),
            mgr_addr,
            agents,
            now: 0,
            delivered: vec![vec![], vec![]],
            relay_agent_timers,
            configs,
        };
        s.tick(0);
        s
    }

    /// Agent `i` restarts: a new core instance with empty tables (same
    /// address and configuration), whose hello reaches the manager (and
    /// what the manager answers, the agent).
    pub fn restart_agent(&mut self, i: usize) {
        let a = Agent::new(self.configs[i].clone());
        let w = a.worker();
        let addr = self.agents[i].0;
        self.agents[i] = (addr, a, w);
        let hello = self.agents[i].1.build_hello();
        let out = self.mgr.handle_datagram(self.now, addr, &hello);
        self.deliver(out);
    }

    /// Delivers manager output to agents (and agent replies back).
    pub fn deliver(&mut self, out: Vec<Outgoing>) {
        let mut queue = out;
        while let Some((to, bytes)) = queue.pop() {
            if to == self.mgr_addr {
                continue;
            }
            let Some(i) = self.agents.iter().position(|(a, _, _)| *a == to) else {
                continue;
            };
            let co = self.agents[i]
                .1
                .handle_control(self.now, self.mgr_addr, &bytes);
            for (dst, reply) in co.replies {
                let from = self.agents[i].0;
                if dst == self.mgr_addr {
                    queue.extend(self.mgr.handle_datagram(self.now, from, &reply));
                }
            }
            for r in co.returned {
                let mut buf = vec![0u8; 512 + r.packet.len()];
                buf[512..].copy_from_slice(&r.packet);
                let len = r.packet.len();
                let now = self.now;
                let d = self.agents[i].2.process_returned(
                    now,
                    &mut PacketBuf::new(&mut buf, 512, len),
                    r.rank_limit,
                );
                if d == Disposition::Pass {
                    self.delivered[i].push(buf[512..512 + len].to_vec());
                }
            }
        }
    }

    /// Time passes to `now`: the manager's timers, then the agents' (their
    /// messages, activity reports included, go to the manager when relayed).
    pub fn tick(&mut self, now: u64) {
        self.now = now;
        let out = self.mgr.tick(now);
        self.deliver(out);
        for i in 0..self.agents.len() {
            let from = self.agents[i].0;
            let sends = self.agents[i].1.tick(now);
            if !self.relay_agent_timers {
                continue;
            }
            for (to, m) in sends {
                if to == self.mgr_addr {
                    let replies = self.mgr.handle_datagram(now, from, &m);
                    self.deliver(replies);
                }
            }
        }
    }

    /// Ticks every second from the current time up to `until`.
    pub fn run_until(&mut self, until: u64) {
        let mut t = self.now - self.now % SEC + SEC;
        while t <= until {
            self.tick(t);
            t += SEC;
        }
    }

    /// `pkt` through agent `i`'s worker alone, after 512 bytes of headroom;
    /// nothing it sends is relayed. Its disposition and the whole buffer.
    pub fn process(&mut self, i: usize, pkt: &[u8]) -> (Disposition, Vec<u8>) {
        let mut buf = vec![0u8; 512 + pkt.len()];
        buf[512..].copy_from_slice(pkt);
        let mut out = [Disposition::Pass];
        self.agents[i].2.process_batch(
            self.now,
            &mut [PacketBuf::new(&mut buf, 512, pkt.len())],
            &mut out,
        );
        (out[0], buf)
    }

    /// Sends a packet through agent `i`; punts go to the manager and back.
    pub fn send(&mut self, i: usize, pkt: &[u8]) -> Disposition {
        let (d, buf) = self.process(i, pkt);
        let now = self.now;
        let from = self.agents[i].0;
        let mut to_mgr: Vec<Vec<u8>> = self.agents[i]
            .2
            .take_messages()
            .into_iter()
            .map(|(_, m)| m)
            .collect();
        match d {
            Disposition::Punt { start, .. } => to_mgr.push(buf[start..].to_vec()),
            Disposition::Pass => self.delivered[i].push(buf[512..].to_vec()),
            _ => {}
        }
        for m in to_mgr {
            let replies = self.mgr.handle_datagram(now, from, &m);
            self.deliver(replies);
        }
        d
    }

    /// Sends `pkt` through agent `i` and returns the key of what came out
    /// (checksums verified), or `None` when nothing was delivered.
    pub fn through(&mut self, i: usize, pkt: &[u8]) -> Option<AffinityKey> {
        let before = self.delivered[i].len();
        self.send(i, pkt);
        if self.delivered[i].len() == before {
            return None;
        }
        let p = self.delivered[i].last().expect("delivered").clone();
        assert!(wire::checksum::verify_ipv4(&p));
        let info = wire::parse_ipv4(&p).expect("IPv4");
        assert!(wire::checksum::verify_l4(&p, &info));
        Some(info.key)
    }

    /// The manager counter `name` (0 when it was never counted).
    pub fn counter(&self, name: &str) -> u64 {
        self.mgr.counters.get(name).copied().unwrap_or(0)
    }

    /// The last packet agent `i` delivered and its key, checksums verified.
    pub fn last(&self, i: usize) -> (AffinityKey, Vec<u8>) {
        let p = self.delivered[i]
            .last()
            .expect("a packet was delivered")
            .clone();
        assert!(wire::checksum::verify_ipv4(&p));
        let info = wire::parse_ipv4(&p).unwrap();
        assert!(wire::checksum::verify_l4(&p, &info));
        (info.key, p)
    }
}
