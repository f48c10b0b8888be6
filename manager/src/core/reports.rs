//! Reports: the human-readable status (`affinity-manager status`) and the
//! same as data ([`StatusReport`]: `status --json`, and what
//! [`crate::metrics`] encodes for Prometheus), read from the core's parts.

use super::flows::{FlowTable, Timeouts};
use super::services::{backend_state, Backend, Service};
use super::stats::{Rates, Traffic};
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
    /// The flow table (connections, active counts, foreign keys).
    pub flow_table: &'a FlowTable,
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

/// `affinity-manager stats --json`.
#[derive(Debug, Clone, Serialize)]
pub struct StatsReport {
    /// The rates' moving window (s).
    pub window_s: f64,
    /// Agents that have sent activity reports (traffic is counted from
    /// those only).
    pub agents_reporting: usize,
    /// Services in configuration order.
    pub services: Vec<ServiceStats>,
}

/// One service's traffic: the sum of its backends'.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceStats {
    pub name: String,
    /// `tcp` or `udp`.
    pub protocol: String,
    pub virtual_address: SocketAddrV4,
    /// See [`SERVICE_ROLES`].
    pub role: &'static str,
    pub traffic: TrafficReport,
    /// Backends in configuration order.
    pub backends: Vec<BackendStats>,
}

/// One backend's traffic.
#[derive(Debug, Clone, Serialize)]
pub struct BackendStats {
    pub address: SocketAddrV4,
    /// `up`, `draining` or `down`.
    pub state: &'static str,
    pub traffic: TrafficReport,
}

/// Traffic totals since the manager started (or the backend was
/// configured), summed over all agents, and rates.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TrafficReport {
    /// Flows ever placed (connections).
    pub connections: u64,
    /// Flows open now (not closed, not ended).
    pub active_connections: u64,
    /// Flows closed (within their sticky time) or ended whose keys are
    /// still held.
    pub inactive_connections: u64,
    /// Packets client → virtual address.
    pub packets_in: u64,
    /// Packets backend → client.
    pub packets_out: u64,
    /// Bytes (IP length) client → virtual address.
    pub bytes_in: u64,
    /// Bytes (IP length) backend → client.
    pub bytes_out: u64,
    /// Per second over the window.
    pub rates: Rates,
}

impl TrafficReport {
    fn new(t: &Traffic, active: u64, inactive: u64, rates: Rates) -> TrafficReport {
        TrafficReport {
            connections: t.connections,
            active_connections: active,
            inactive_connections: inactive,
            packets_in: t.packets_in,
            packets_out: t.packets_out,
            bytes_in: t.bytes_in,
            bytes_out: t.bytes_out,
            rates,
        }
    }
}

/// `affinity-manager connections --json`.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionsReport {
    /// Flows that matched the filter.
    pub matched: usize,
    /// At most this many are listed.
    pub limit: usize,
    /// Oldest first.
    pub connections: Vec<ConnectionReport>,
}

/// One flow, both sides.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionReport {
    pub service: String,
    /// `tcp`, `udp`, `icmp`.
    pub protocol: &'static str,
    /// Client address and port (client side: client → virtual).
    pub client: SocketAddrV4,
    /// The virtual address and port the client sent to.
    pub virtual_address: SocketAddrV4,
    /// The source the backend sees (the client's, or the SNAT address and
    /// port); backend side: this → backend.
    pub source_to_backend: SocketAddrV4,
    pub backend: SocketAddrV4,
    /// Source NAT toward the backend.
    pub snat: bool,
    /// Connection-tracking state (`syn-seen`, `established`, ...).
    pub state: &'static str,
    /// Seconds since placed (or reopened).
    pub age_s: f64,
    /// Seconds until it ends without more packets (idle timeout, sticky
    /// deletion, or the last TTL an agent was given).
    pub expires_in_s: f64,
    /// Agents holding its affinities (`name(address)`).
    pub agents: Vec<String>,
    /// Packets client → virtual address the agents reported.
    pub packets_in: u64,
    /// Packets backend → client.
    pub packets_out: u64,
    /// Bytes client → virtual address.
    pub bytes_in: u64,
    /// Bytes backend → client.
    pub bytes_out: u64,
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
    /// `serving`, `standing-by` or `idle`: see [`SERVICE_ROLES`].
    pub role: &'static str,
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
    /// `up`, `draining` (weight 0: no new flows, existing ones stay) or
    /// `down` (failing its health check).
    pub state: &'static str,
    /// Health checks run on it (0 without a health check).
    pub checks: u64,
    /// Failed checks in a row (0 after a success).
    pub consecutive_failures: u32,
    /// Why the last failed check failed (`refused`, `timeout`, `http
    /// status 503`, ...), `null` if none failed.
    pub last_failure: Option<String>,
    /// Latency of the last check (ms: connect, plus the HTTP answer).
    pub check_latency_ms: Option<f64>,
    /// Seconds since its health state last changed (`null`: never).
    pub since_change_s: Option<f64>,
    /// Packets client → virtual address the agents reported for its flows.
    pub packets_in: u64,
    /// Packets backend → client the agents reported for its flows.
    pub packets_out: u64,
    /// Bytes (IP length) client → virtual address.
    pub bytes_in: u64,
    /// Bytes (IP length) backend → client.
    pub bytes_out: u64,
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
            include_str!("receive.rs"),
            include_str!("agents.rs"),
            include_str!("placement.rs"),
            include_str!("timers.rs"),
            include_str!("operator.rs"),
            include_str!("flows.rs"),
            include_str!("services.rs"),
            include_str!("messages.rs"),
            include_str!("stats.rs"),
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
