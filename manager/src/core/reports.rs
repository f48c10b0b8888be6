//! Reports: the human-readable status (`affinity-manager status`) and the
//! Prometheus text exposition (`metrics`), read from the core's parts.

use super::services::Service;
use super::AgentSeen;
use crate::config::Config;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddrV4;

/// What the reports read: a borrowed view of the core.
pub(super) struct Report<'a> {
    pub cfg: &'a Config,
    pub services: &'a [Service],
    pub flows: usize,
    pub agents: &'a BTreeMap<SocketAddrV4, AgentSeen>,
    pub counters: &'a BTreeMap<&'static str, u64>,
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
        for svc in self.services {
            let c = &svc.cfg;
            let _ = writeln!(
                s,
                "service {} {} {}/{} clients {} algorithm {:?} precedence {}/{}{}{}",
                c.name,
                c.protocol,
                c.virtual_addr.ip(),
                c.virtual_addr.port(),
                c.client_domain,
                c.algorithm,
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
        for (k, v) in self.counters {
            let _ = writeln!(s, "counter {k} {v}");
        }
        s
    }

    /// Prometheus text format 0.0.4: flows, per-backend active flows and
    /// health, and every event counter.
    pub fn metrics(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# TYPE affinity_manager_flows gauge\naffinity_manager_flows {}",
            self.flows
        );
        let _ = writeln!(s, "# TYPE affinity_manager_backend_active_flows gauge");
        for svc in self.services {
            for b in &svc.backends {
                let _ = writeln!(
                    s,
                    "affinity_manager_backend_active_flows{{service=\"{}\",backend=\"{}\"}} {}",
                    svc.cfg.name, b.addr, b.active
                );
            }
        }
        let _ = writeln!(s, "# TYPE affinity_manager_backend_healthy gauge");
        for svc in self.services {
            for b in &svc.backends {
                let _ = writeln!(
                    s,
                    "affinity_manager_backend_healthy{{service=\"{}\",backend=\"{}\"}} {}",
                    svc.cfg.name, b.addr, b.healthy as u8
                );
            }
        }
        let _ = writeln!(s, "# TYPE affinity_manager_events_total counter");
        for (k, v) in self.counters {
            let _ = writeln!(s, "affinity_manager_events_total{{event=\"{k}\"}} {v}");
        }
        s
    }
}
