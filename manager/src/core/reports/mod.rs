//! Reports: the human-readable status (`affinity-manager status`) and the
//! same as data ([`StatusReport`]: `status --json`, and what
//! [`crate::metrics`] encodes for Prometheus), read from the core's parts.

use super::flows::{FlowTable, Timeouts};
use super::services::{backend_state, Backend, Service};
use super::stats::{Rates, Traffic};
use super::AgentSeen;
use crate::config::Config;
mod shapes;

pub use shapes::{
    AdmissionReport, AgentReport, BackendReport, BackendStats, ConnectionReport, ConnectionsReport,
    ManagerReport, ReceiveQueueReport, ServiceReport, ServiceStats, SnatReport, StatsReport,
    StatusReport, TableReport, TrafficReport, EVENTS,
};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddrV4;

/// What the reports read: a borrowed view of the core.
pub(super) struct Report<'a> {
    pub cfg: &'a Config,
    pub services: &'a [Service],
    pub flows: usize,
    /// The flow table (connections, active counts, foreign keys).
    pub flow_table: &'a FlowTable,
    /// Flows per connection-tracking state (name, count).
    pub by_state: Vec<(&'static str, usize)>,
    pub agents: &'a BTreeMap<SocketAddrV4, AgentSeen>,
    pub counters: &'a BTreeMap<&'static str, u64>,
    /// Bounded tables: (name, entries, capacity) — agents heard from,
    /// replay windows (peers) and addresses validated by a returned cookie
    /// (open mode), each at most `MAX_PEERS`.
    pub tables: [(&'static str, usize, usize); 3],
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
        let _ = writeln!(
            s,
            "receive-queue limit {} datagrams {} bytes dropped {} kernel-buffer {} bytes kernel-dropped {}",
            m.receive_queue,
            crate::config::RECEIVE_QUEUE_BYTES,
            self.counters.get("rx-queue-dropped").copied().unwrap_or(0),
            m.receive_buffer,
            self.counters.get("rx-kernel-dropped").copied().unwrap_or(0)
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
                "service {} {} {}/{} clients {} algorithm {} precedence {}/{}{}{} role {}",
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
                if svc.advertise { " advertise" } else { "" },
                self.role(svc, now)
            );
            if let Some(p) = &svc.snat {
                let _ = writeln!(s, "  snat ports in use {} of {}", p.in_use(), p.size());
            }
            if c.protocol_number() == affinity_forwarding_agent::wire::TCP {
                let a = self.admission(svc);
                let _ = writeln!(
                    s,
                    "  admission syn-proxy {} half-open {} of {} policy {} refused {} evicted {}",
                    if a.syn_proxy { "on" } else { "off" },
                    a.half_open_flows,
                    if a.max_half_open_flows == 0 {
                        "unlimited".to_string()
                    } else {
                        a.max_half_open_flows.to_string()
                    },
                    a.half_open_policy,
                    a.half_open_refused,
                    a.half_open_evicted
                );
            }
            for b in &svc.backends {
                let _ = writeln!(
                    s,
                    "  backend {:<22} {:<9} weight {:>3} effective {:>3} active {:>6} total {:>8} state {}{}",
                    b.addr,
                    if b.healthy { "healthy" } else { "UNHEALTHY" },
                    b.weight,
                    b.effective_weight(),
                    b.active,
                    b.total,
                    backend_state(b),
                    health_text(b, now)
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
                        role: self.role(svc, now),
                        admission: (c.protocol_number() == affinity_forwarding_agent::wire::TCP)
                            .then(|| self.admission(svc)),
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
                                state: backend_state(b),
                                checks: b.check.checks,
                                consecutive_failures: b.consecutive_failures(),
                                last_failure: b.check.last_failure.clone(),
                                check_latency_ms: b.check.latency_us.map(|u| u as f64 / 1e3),
                                since_change_s: b
                                    .check
                                    .changed_at
                                    .map(|t| now.saturating_sub(t) as f64 / 1e9),
                                packets_in: b.traffic.packets_in,
                                packets_out: b.traffic.packets_out,
                                bytes_in: b.traffic.bytes_in,
                                bytes_out: b.traffic.bytes_out,
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
            receive_queue: ReceiveQueueReport {
                limit_datagrams: self.cfg.manager.receive_queue,
                limit_bytes: crate::config::RECEIVE_QUEUE_BYTES,
                dropped: self.counters.get("rx-queue-dropped").copied().unwrap_or(0),
                kernel_buffer_bytes: self.cfg.manager.receive_buffer,
                kernel_dropped: self.counters.get("rx-kernel-dropped").copied().unwrap_or(0),
            },
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

/// How long (ns) after this manager last placed a flow of a service, or
/// had packets of one reported, it is still shown as serving it.
const SERVING_WINDOW: u64 = 60_000_000_000;

/// The roles `status` shows per service, derived from traffic (the manager
/// does not hear other managers directly): `serving` — this manager placed
/// a flow of the service or had packets of one reported within the last
/// 60 s, or holds open flows of it; `standing-by` — not serving, and
/// agents report another manager's affinities toward the virtual address
/// (a primary with better precedence serves it: this one is the backup);
/// `idle` — neither (no traffic).
pub const SERVICE_ROLES: [&str; 3] = ["serving", "standing-by", "idle"];

/// The health part of a backend's `status` line: checks, consecutive
/// failures, last failure, latency and time since the last change.
fn health_text(b: &Backend, now: u64) -> String {
    let c = &b.check;
    if c.checks == 0 {
        return String::new();
    }
    let mut s = format!(
        " checks {} failing-in-a-row {}",
        c.checks,
        b.consecutive_failures()
    );
    if let Some(f) = &c.last_failure {
        let _ = write!(s, " last-failure {f:?}");
    }
    if let Some(us) = c.latency_us {
        let _ = write!(s, " latency {:.1}ms", us as f64 / 1e3);
    }
    if let Some(t) = c.changed_at {
        let _ = write!(s, " changed {:.0}s ago", now.saturating_sub(t) as f64 / 1e9);
    }
    s
}

impl Report<'_> {
    /// `svc`'s admission control: SYN proxy, half-open flows against
    /// `max_half_open_flows`, the policy past it and what it did.
    fn admission(&self, svc: &Service) -> AdmissionReport {
        let h = self.flow_table.half_open_stats(&svc.cfg.name);
        AdmissionReport {
            syn_proxy: svc.cfg.syn_proxy,
            half_open_flows: h.flows,
            max_half_open_flows: self.cfg.manager.max_half_open_flows,
            half_open_policy: svc.cfg.half_open_policy().name(),
            half_open_refused: h.refused,
            half_open_evicted: h.evicted,
        }
    }

    /// The manager's role for `svc` at `now` (ns): one of [`SERVICE_ROLES`].
    fn role(&self, svc: &Service, now: u64) -> &'static str {
        let recent = svc.last_served > 0 && now.saturating_sub(svc.last_served) < SERVING_WINDOW;
        let open = || {
            self.flow_table
                .iter()
                .any(|f| *f.service == *svc.cfg.name && f.is_open())
        };
        if recent || open() {
            "serving"
        } else if self.flow_table.foreign_toward(svc.cfg.virtual_addr, now) > 0 {
            "standing-by"
        } else {
            "idle"
        }
    }

    /// Per-service and per-backend traffic (`stats --json`): totals over
    /// the agents' activity reports, active/inactive flows from the flow
    /// table, rates over [`super::RATE_WINDOW`] at `now` (ns).
    pub fn stats(&self, now: u64) -> StatsReport {
        // (service, backend) -> (open flows, closed or ended flows)
        let mut conns: BTreeMap<(&str, SocketAddrV4), (u64, u64)> = BTreeMap::new();
        for f in self.flow_table.iter() {
            let e = conns.entry((&f.service, f.backend)).or_default();
            if f.is_open() {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
        }
        let services = self
            .services
            .iter()
            .map(|svc| {
                let mut total = TrafficReport::default();
                let mut sum = Traffic::default();
                let mut rates = Rates::default();
                let backends: Vec<BackendStats> = svc
                    .backends
                    .iter()
                    .map(|b| {
                        let (active, inactive) = conns
                            .get(&(svc.cfg.name.as_str(), b.addr))
                            .copied()
                            .unwrap_or_default();
                        let r = b.rates.rates(now, &b.traffic);
                        sum.add(&b.traffic);
                        rates.connections_per_s += r.connections_per_s;
                        rates.packets_in_per_s += r.packets_in_per_s;
                        rates.packets_out_per_s += r.packets_out_per_s;
                        rates.bytes_in_per_s += r.bytes_in_per_s;
                        rates.bytes_out_per_s += r.bytes_out_per_s;
                        total.active_connections += active;
                        total.inactive_connections += inactive;
                        BackendStats {
                            address: b.addr,
                            state: backend_state(b),
                            traffic: TrafficReport::new(&b.traffic, active, inactive, r),
                        }
                    })
                    .collect();
                let traffic = TrafficReport::new(
                    &sum,
                    total.active_connections,
                    total.inactive_connections,
                    rates,
                );
                ServiceStats {
                    name: svc.cfg.name.clone(),
                    protocol: svc.cfg.protocol.clone(),
                    virtual_address: svc.cfg.virtual_addr,
                    role: self.role(svc, now),
                    traffic,
                    backends,
                }
            })
            .collect();
        StatsReport {
            window_s: super::stats::RATE_WINDOW as f64 / 1e9,
            agents_reporting: self
                .agents
                .values()
                .filter(|a| a.activity_reports > 0)
                .count(),
            services,
        }
    }

    /// `affinity-manager stats`: the [`Self::stats`] table, one line per
    /// service then one per backend (`ipvsadm -Ln --stats --rate`).
    pub fn stats_text(&self, now: u64) -> String {
        let r = self.stats(now);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "traffic from {} reporting agent(s); rates over the last {:.0}s",
            r.agents_reporting, r.window_s
        );
        let _ = writeln!(
            s,
            "{:<32} {:>7} {:>6} {:>8} {:>10} {:>10} {:>12} {:>12} {:>7} {:>9} {:>9} {:>11} {:>11}",
            "Prot VirtualAddress:Port / -> Backend",
            "ActConn",
            "InActC",
            "Conns",
            "InPkts",
            "OutPkts",
            "InBytes",
            "OutBytes",
            "CPS",
            "InPPS",
            "OutPPS",
            "InBPS",
            "OutBPS"
        );
        let row = |s: &mut String, label: String, t: &TrafficReport| {
            let _ = writeln!(
                s,
                "{:<32} {:>7} {:>6} {:>8} {:>10} {:>10} {:>12} {:>12} {:>7.1} {:>9.1} {:>9.1} {:>11.0} {:>11.0}",
                label,
                t.active_connections,
                t.inactive_connections,
                t.connections,
                t.packets_in,
                t.packets_out,
                t.bytes_in,
                t.bytes_out,
                t.rates.connections_per_s,
                t.rates.packets_in_per_s,
                t.rates.packets_out_per_s,
                t.rates.bytes_in_per_s,
                t.rates.bytes_out_per_s
            );
        };
        for svc in &r.services {
            row(
                &mut s,
                format!(
                    "{} {} ({})",
                    svc.protocol.to_uppercase(),
                    svc.virtual_address,
                    svc.name
                ),
                &svc.traffic,
            );
            for b in &svc.backends {
                let state = if b.state == "up" {
                    String::new()
                } else {
                    format!(" {}", b.state)
                };
                row(&mut s, format!("  -> {}{state}", b.address), &b.traffic);
            }
        }
        s
    }

    /// The flows (`connections`), oldest first, of `service` (and
    /// `backend`) when given, at most `limit`; ages and expiries from
    /// `now` (ns) and the idle timeouts `t`.
    pub fn connections(
        &self,
        now: u64,
        service: Option<&str>,
        backend: Option<SocketAddrV4>,
        limit: usize,
        t: &Timeouts,
    ) -> ConnectionsReport {
        let mut flows: Vec<_> = self
            .flow_table
            .iter()
            .filter(|f| service.is_none_or(|s| *f.service == *s))
            .filter(|f| backend.is_none_or(|b| f.backend == b))
            .collect();
        let matched = flows.len();
        flows.sort_by_key(|f| (f.created, f.fwd.src_addr, f.fwd.src_port));
        let name = |a: &SocketAddrV4| {
            self.agents
                .get(a)
                .filter(|s| !s.name.is_empty())
                .map_or_else(|| a.to_string(), |s| format!("{}({a})", s.name))
        };
        let connections = flows
            .into_iter()
            .take(limit)
            .map(|f| {
                let proto = match f.fwd.protocol {
                    6 => "tcp",
                    17 => "udp",
                    1 => "icmp",
                    _ => "other",
                };
                ConnectionReport {
                    service: f.service.to_string(),
                    protocol: proto,
                    client: SocketAddrV4::new(f.fwd.src_addr, f.fwd.src_port),
                    virtual_address: SocketAddrV4::new(f.fwd.dst_addr, f.fwd.dst_port),
                    source_to_backend: SocketAddrV4::new(f.rev.dst_addr, f.rev.dst_port),
                    backend: f.backend,
                    snat: f.snat.is_some(),
                    state: f.state.name(),
                    age_s: now.saturating_sub(f.created) as f64 / 1e9,
                    expires_in_s: f.expires_at(t).saturating_sub(now) as f64 / 1e9,
                    agents: f.agents.iter().map(name).collect(),
                    packets_in: f.packets_fwd,
                    packets_out: f.packets_rev,
                    bytes_in: f.bytes_fwd,
                    bytes_out: f.bytes_rev,
                }
            })
            .collect();
        ConnectionsReport {
            matched,
            limit,
            connections,
        }
    }
}

/// `affinity-manager connections`: one flow a line (`ipvsadm -Lnc`), then
/// how many were left out by the limit.
pub fn connections_text(r: &ConnectionsReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<5} {:<22} {:<22} {:<22} {:<22} {:<12} {:>8} {:>8} {:>7} {:>7}  agents",
        "pro",
        "client",
        "virtual",
        "source->backend",
        "backend",
        "state",
        "age",
        "expires",
        "pkts-in",
        "pkts-out"
    );
    for c in &r.connections {
        let _ = writeln!(
            s,
            "{:<5} {:<22} {:<22} {:<22} {:<22} {:<12} {:>7.1}s {:>7.1}s {:>7} {:>7}  {}",
            c.protocol,
            c.client.to_string(),
            c.virtual_address.to_string(),
            c.source_to_backend.to_string(),
            c.backend.to_string(),
            c.state,
            c.age_s,
            c.expires_in_s,
            c.packets_in,
            c.packets_out,
            c.agents.join(",")
        );
    }
    if r.matched > r.connections.len() {
        let _ = writeln!(
            s,
            "... {} more not shown (--limit {})",
            r.matched - r.connections.len(),
            r.limit
        );
    }
    s
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
            include_str!("../mod.rs"),
            include_str!("../receive.rs"),
            include_str!("../agents.rs"),
            include_str!("../placement.rs"),
            include_str!("../timers.rs"),
            include_str!("../operator.rs"),
            include_str!("../flows.rs"),
            include_str!("../services.rs"),
            include_str!("../messages.rs"),
            include_str!("../stats.rs"),
            include_str!("../routability.rs"),
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
