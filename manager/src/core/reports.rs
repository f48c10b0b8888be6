//! Reports: the human-readable status (`affinity-manager status`) and the
//! same as data ([`StatusReport`]: `status --json`, and what
//! [`crate::metrics`] encodes for Prometheus), read from the core's parts.

use super::services::Service;
use super::AgentSeen;
use crate::config::Config;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};

/// What the reports read: a borrowed view of the core.
pub(super) struct Report<'a> {
    pub cfg: &'a Config,
    pub services: &'a [Service],
    pub flows: usize,
    /// Flows per connection-tracking state (name, count).
    pub by_state: Vec<(&'static str, usize)>,
    pub agents: &'a BTreeMap<SocketAddrV4, AgentSeen>,
    pub counters: &'a BTreeMap<&'static str, u64>,
    /// Bounded tables: (name, entries, capacity) — agents heard from and
    /// replay windows (peers), each at most `MAX_PEERS`.
    pub tables: [(&'static str, usize, usize); 2],
}

impl Report<'_> {
    /// Services, backends, agents (seconds since last heard, from `now` in
    /// ns) and counters, one per line.
    pub fn status(&self, now: u64) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "manager {} on {} ({} flows)",
            self.cfg.manager.name, self.cfg.manager.listen, self.flows
        );
        let m = &self.cfg.manager;
        let _ = writeln!(
            s,
            "timeouts tcp-transitory {}s tcp-established {}s udp {}s icmp {}s fixed-ttl {}s max-lifetime {}",
            m.tcp_transitory_timeout,
            m.tcp_established_timeout,
            m.udp_timeout,
            m.icmp_timeout,
            m.fixed_ttl,
            if m.flow_max_lifetime == 0 {
                "none".to_string()
            } else {
                format!("{}s", m.flow_max_lifetime)
            }
        );
        let states: Vec<String> = self
            .by_state
            .iter()
            .map(|(n, c)| format!("{n} {c}"))
            .collect();
        let _ = writeln!(s, "flows by state: {}", states.join(", "));
        for svc in self.services {
            let c = &svc.cfg;
            let _ = writeln!(
                s,
                "service {} {} {}/{} clients {} algorithm {} precedence {}/{}{}{}",
                c.name,
                c.protocol,
                c.virtual_addr.ip(),
                c.virtual_addr.port(),
                c.client_domain,
                c.algorithm.name(),
                c.service_precedence,
                c.backup_precedence,
                c.snat.as_ref().map_or(String::new(), |n| format!(
                    " snat {} {}",
                    n.address, n.ports
                )),
                if svc.advertise { " advertise" } else { "" }
            );
            if let Some(p) = &svc.snat {
                let _ = writeln!(s, "  snat ports in use {} of {}", p.in_use(), p.size());
            }
            for b in &svc.backends {
                let _ = writeln!(
                    s,
                    "  backend {:<22} {:<9} weight {:>3} effective {:>3} active {:>6} total {:>8}",
                    b.addr,
                    if b.healthy { "healthy" } else { "UNHEALTHY" },
                    b.weight,
                    b.effective_weight(),
                    b.active,
                    b.total
                );
            }
        }
        for (a, info) in self.agents {
            let _ = writeln!(
                s,
                "agent {:<22} {:<16} last heard {:.1}s ago, interest matches {}, denies {}",
                a,
                info.name,
                now.saturating_sub(info.last_heard) as f64 / 1e9,
                info.interest_matches,
                info.denies
            );
            for (service, why) in &info.refused {
                let _ = writeln!(s, "agent {a} not used for service {service}: {why}");
            }
        }
        for (name, n, cap) in self.tables {
            let _ = writeln!(s, "table {name} {n} of {cap}");
        }
        for (k, v) in EVENTS
            .iter()
            .map(|e| (*e, 0))
            .chain(self.counters.iter().map(|(k, v)| (*k, *v)))
            .collect::<BTreeMap<&str, u64>>()
        {
            let _ = writeln!(s, "counter {k} {v}");
        }
        s
    }

    /// Everything `status` shows, as data: `status --json` serialises it
    /// and the metrics endpoint ([`crate::metrics`]) encodes it. Agents'
    /// `last_heard_s` is seconds before `now` (ns, the core's clock).
    pub fn snapshot(&self, now: u64) -> StatusReport {
        let mut counters: BTreeMap<String, u64> =
            EVENTS.iter().map(|e| ((*e).to_string(), 0)).collect();
        for (k, v) in self.counters {
            counters.insert((*k).to_string(), *v);
        }
        StatusReport {
            manager: ManagerReport {
                name: self.cfg.manager.name.clone(),
                listen: self.cfg.manager.listen,
            },
            flows: self.flows,
            flows_by_state: self
                .by_state
                .iter()
                .map(|&(n, c)| (n.to_string(), c))
                .collect(),
            services: self
                .services
                .iter()
                .map(|svc| {
                    let c = &svc.cfg;
                    ServiceReport {
                        name: c.name.clone(),
                        protocol: c.protocol.clone(),
                        virtual_address: c.virtual_addr,
                        client_domain: c.client_domain.clone(),
                        algorithm: c.algorithm.name(),
                        service_precedence: c.service_precedence,
                        backup_precedence: c.backup_precedence,
                        advertise: svc.advertise,
                        snat: c.snat.as_ref().map(|n| SnatReport {
                            address: n.address,
                            ports: n.ports.clone(),
                            in_use: svc.snat.as_ref().map_or(0, |p| p.in_use()),
                            size: svc.snat.as_ref().map_or(0, |p| p.size()),
                        }),
                        backends: svc
                            .backends
                            .iter()
                            .map(|b| BackendReport {
                                address: b.addr,
                                healthy: b.healthy,
                                weight: b.weight,
                                effective_weight: b.effective_weight(),
                                active_flows: b.active,
                                total_flows: b.total,
                            })
                            .collect(),
                    }
                })
                .collect(),
            agents: self
                .agents
                .iter()
                .map(|(a, info)| AgentReport {
                    address: *a,
                    name: info.name.clone(),
                    last_heard_s: now.saturating_sub(info.last_heard) as f64 / 1e9,
                    interest_matches: info.interest_matches,
                    denies: info.denies,
                })
                .collect(),
            tables: self
                .tables
                .iter()
                .map(|&(name, entries, capacity)| TableReport {
                    name,
                    entries,
                    capacity,
                })
                .collect(),
            counters,
        }
    }
}

/// Every event counter the core keeps (`counter NAME N` in `status`,
/// `affinity_manager_events_total{event="NAME"}` in metrics): listed so
/// that each is shown from start at 0, not only once it first happened.
/// A test checks this list against the names the core counts.
pub const EVENTS: &[&str] = &[
    "activity-foreign-keys",
    "agent-hello-resync",
    "agent-table-full",
    "backend-went-unhealthy",
    "config-reloads",
    "deletions-resent",
    "deny-no-supporting-wildcard",
    "deny-other",
    "deny-stale-sequence",
    "deny-table-full",
    "deny-unsupported-action",
    "ended-flow-reverse-dropped",
    "flow-adopted",
    "flows-closed",
    "flows-created",
    "flows-deleted-after-sticky",
    "flows-ended-backend-gone",
    "flows-expired-idle",
    "flows-expired-lifetime",
    "flows-reopened",
    "flows-revived",
    "hairpin-flows",
    "install-collision-refused",
    "install-collision-remapped",
    "interest-from-agent-not-used",
    "interest-no-service",
    "known-flow-installed",
    "no-backend-available",
    "reload-listen-metrics-refused",
    "renewal-messages-sent",
    "retry-without-optional-action",
    "rx-activity-report",
    "rx-auth-bad-digest",
    "rx-auth-failed",
    "rx-auth-far-future",
    "rx-auth-unknown-key",
    "rx-auth-unsigned",
    "rx-auth-wrong-identity",
    "rx-auth-wrong-receiver",
    "rx-deny",
    "rx-hello",
    "rx-interest-match",
    "rx-ip-packet-only",
    "rx-parse-error",
    "rx-peer-table-full",
    "rx-replay",
    "rx-unexpected-type",
    "snat-ports-exhausted",
    "tracking-unknown-flow",
    "unknown-flow-dropped",
    "wildcard-updates-sent",
    "wildcards-withheld",
];

/// `affinity-manager status --json`: the manager, its services with their
/// backends, the agents heard from, and every event counter. Addresses are
/// strings `A.B.C.D` or `A.B.C.D:PORT`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// This manager.
    pub manager: ManagerReport,
    /// Flows placed and not yet deleted.
    pub flows: usize,
    /// Flows per connection-tracking state (`syn-seen`, `established`, ...).
    pub flows_by_state: BTreeMap<String, usize>,
    /// Services in configuration order.
    pub services: Vec<ServiceReport>,
    /// Agents heard from, by address.
    pub agents: Vec<AgentReport>,
    /// The manager's bounded tables and how full they are.
    pub tables: Vec<TableReport>,
    /// Event counters by name (every name in [`EVENTS`], 0 if none yet).
    pub counters: BTreeMap<String, u64>,
}

/// One bounded table of the manager (state kept per sender is capped, so
/// unverified senders cannot grow it without bound).
#[derive(Debug, Clone, Serialize)]
pub struct TableReport {
    /// `agents` or `replay-windows`.
    pub name: &'static str,
    /// Entries now.
    pub entries: usize,
    /// The cap.
    pub capacity: usize,
}

/// This manager: its name and the address service messages arrive on.
#[derive(Debug, Clone, Serialize)]
pub struct ManagerReport {
    /// `[manager] name`, sent to agents in identity info.
    pub name: String,
    /// Where service messages arrive (the bound port if 0 was configured).
    pub listen: SocketAddrV4,
}

/// One service as configured, with its live state.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceReport {
    /// `[[service]] name`.
    pub name: String,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// The address and port clients connect to.
    pub virtual_address: SocketAddrV4,
    /// Clients this manager serves, `ADDR/LEN`.
    pub client_domain: String,
    /// Configuration name (`maglev`, `round-robin`, ...).
    pub algorithm: &'static str,
    /// Higher is searched first by agents.
    pub service_precedence: u16,
    /// Lower wins among equal service precedence (primary < backup).
    pub backup_precedence: u16,
    /// Agents are asked to advertise the virtual address.
    pub advertise: bool,
    /// Source NAT toward the backends, if configured.
    pub snat: Option<SnatReport>,
    /// Backends in configuration order.
    pub backends: Vec<BackendReport>,
}

/// A service's source-NAT pool.
#[derive(Debug, Clone, Serialize)]
pub struct SnatReport {
    /// The source address backends see.
    pub address: Ipv4Addr,
    /// `LOW-HIGH` as configured.
    pub ports: String,
    /// Ports held by flows now.
    pub in_use: usize,
    /// Ports in the pool.
    pub size: usize,
}

/// One backend of a service.
#[derive(Debug, Clone, Serialize)]
pub struct BackendReport {
    /// Backend address and port.
    pub address: SocketAddrV4,
    /// Passing its health check (true without one).
    pub healthy: bool,
    /// Configured or `set-weight` weight (0 = drained).
    pub weight: u32,
    /// The weight the selector sees (0 when unhealthy; feedback-derived).
    pub effective_weight: u32,
    /// Flows placed on it and not yet released.
    pub active_flows: u64,
    /// Flows ever placed on it.
    pub total_flows: u64,
}

/// An agent this manager has heard from.
#[derive(Debug, Clone, Serialize)]
pub struct AgentReport {
    /// Source address and port of its messages.
    pub address: SocketAddrV4,
    /// Host name from its identity info ("" if it sent none).
    pub name: String,
    /// Seconds since it was last heard.
    pub last_heard_s: f64,
    /// Interest matches (punts) received from it.
    pub interest_matches: u64,
    /// Affinity update-denies received from it.
    pub denies: u64,
}

#[cfg(test)]
mod tests {
    use super::EVENTS;

    /// Every `count("NAME")` (and `counters.entry("NAME")`) in the core's
    /// sources is in [`EVENTS`] (so it
    /// is shown at 0 from start), and the list is sorted without repeats.
    #[test]
    fn every_counted_event_is_listed() {
        let sources = [
            include_str!("mod.rs"),
            include_str!("flows.rs"),
            include_str!("services.rs"),
            include_str!("messages.rs"),
        ];
        for src in sources {
            for pattern in ["count(\"", "counters.entry(\""] {
                for part in src.split(pattern).skip(1) {
                    let name = &part[..part.find('"').unwrap_or(0)];
                    assert!(EVENTS.contains(&name), "event {name:?} missing from EVENTS");
                }
            }
        }
        assert!(
            EVENTS.windows(2).all(|w| w[0] < w[1]),
            "EVENTS sorted, no repeats"
        );
    }
}
