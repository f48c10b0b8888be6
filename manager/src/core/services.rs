//! The service registry: each configured service with its backends'
//! run-time state (weights, health, active flows), its selector and its
//! source-NAT port pool. It places new flows on backends and takes them
//! back when they end; it sends nothing itself.

use super::flows::Flow;
use crate::algorithm::{Candidate, Selector};
use crate::config::{parse_port_range, ServiceConfig};
use crate::snat::PortPool;
use affinity_api::AffinityKey;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

/// Sticky time (ms) of a flow whose service is gone: the configuration
/// default `sticky_timeout_ms`.
const DEFAULT_STICKY_MS: u64 = 5000;

/// Run-time state of one backend.
#[derive(Debug, Clone)]
pub struct Backend {
    pub addr: SocketAddrV4,
    /// Weight from the configuration or `set-weight` (0 = drained).
    pub weight: u32,
    /// Feedback algorithm: weight derived from the last load report.
    pub feedback_weight: Option<u32>,
    pub healthy: bool,
    ok_streak: u32,
    fail_streak: u32,
    /// Flows placed on this backend and not yet released.
    pub active: u64,
    /// Flows ever placed on this backend.
    pub total: u64,
}

impl Backend {
    /// The weight the selector sees: 0 when unhealthy, else the feedback
    /// weight (capped at 100 × the configured weight) or the configured one.
    pub fn effective_weight(&self) -> u32 {
        if !self.healthy {
            0
        } else {
            self.feedback_weight
                .unwrap_or(self.weight)
                .min(self.weight.saturating_mul(100))
        }
    }

    /// Feedback: a load report (percent, 0-100) scales the configured
    /// weight by the spare capacity, rounded up and at least 1; a drained
    /// backend (weight 0) stays at 0.
    pub fn report_load(&mut self, load: u32) {
        let load = load.min(100) as u64;
        let w = (self.weight as u64 * (100 - load)).div_ceil(100).max(1) as u32;
        self.feedback_weight = Some(if self.weight == 0 { 0 } else { w });
    }

    /// One health-check result: `rise` successes in a row make an unhealthy
    /// backend healthy, `fall` failures in a row the reverse. The new state
    /// when it changed.
    fn record_health(&mut self, ok: bool, rise: u32, fall: u32) -> Option<bool> {
        if ok {
            self.ok_streak += 1;
            self.fail_streak = 0;
            if !self.healthy && self.ok_streak >= rise {
                self.healthy = true;
                return Some(true);
            }
        } else {
            self.fail_streak += 1;
            self.ok_streak = 0;
            if self.healthy && self.fail_streak >= fall {
                self.healthy = false;
                return Some(false);
            }
        }
        None
    }
}

/// Run-time state of one service.
#[derive(Debug)]
pub struct Service {
    pub cfg: ServiceConfig,
    /// `cfg.name`, shared with this service's flows (no copy per flow).
    pub(super) name: Arc<str>,
    /// Scratch for the selector's candidates (no allocation per flow).
    cands: Vec<Candidate>,
    /// `cfg.domain()`, parsed once (address, mask).
    pub(super) domain: (Ipv4Addr, Ipv4Addr),
    /// Affinity identifiers: base + 0 forward, base + 1 + i reverse of backend i.
    pub id_base: u32,
    pub backends: Vec<Backend>,
    /// Backend addresses as text: the selector's stable names (Maglev).
    names: Vec<Vec<u8>>,
    selector: Selector,
    pub(super) snat: Option<PortPool>,
    /// Cleared when an agent denied the advertise action and it is optional.
    pub advertise: bool,
}

/// Where a new flow goes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Placement {
    pub backend: SocketAddrV4,
    /// The source address and port toward the backend, with source NAT.
    pub snat: Option<SocketAddrV4>,
}

/// Why a new flow was not placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// No healthy backend with weight > 0.
    NoBackend,
    /// The source-NAT port pool is empty.
    SnatExhausted,
}

impl Service {
    /// The service at configuration index `index`, keeping what `prev` (the
    /// same-named service before a reload) knew: backends' health, feedback
    /// and flow counts, the SNAT pool when its range is unchanged, and a
    /// denied optional advertise action.
    fn new(index: usize, cfg: &ServiceConfig, prev: Option<&Service>) -> Service {
        let backends = cfg
            .backends
            .iter()
            .map(|b| {
                let kept = prev.and_then(|p| p.backends.iter().find(|o| o.addr == b.address));
                Backend {
                    addr: b.address,
                    weight: b.weight,
                    feedback_weight: kept.and_then(|k| k.feedback_weight),
                    healthy: kept.is_none_or(|k| k.healthy),
                    ok_streak: 0,
                    fail_streak: 0,
                    active: kept.map_or(0, |k| k.active),
                    total: kept.map_or(0, |k| k.total),
                }
            })
            .collect();
        let snat = cfg
            .snat
            .as_ref()
            .and_then(|n| parse_port_range(&n.ports).map(|(lo, hi)| PortPool::new(lo, hi)));
        let snat = match (prev.and_then(|p| p.snat.clone()), snat) {
            (Some(p), Some(n)) if p.range() == n.range() => Some(p),
            (_, n) => n,
        };
        Service {
            name: Arc::from(cfg.name.as_str()),
            cands: Vec::new(),
            domain: cfg.domain(),
            id_base: (index as u32 + 1) << 16,
            names: cfg
                .backends
                .iter()
                .map(|b| b.address.to_string().into_bytes())
                .collect(),
            selector: Selector::new(cfg.algorithm),
            advertise: cfg.advertise && prev.is_none_or(|p| p.advertise || !p.cfg.advertise),
            backends,
            snat,
            cfg: cfg.clone(),
        }
    }

    /// Whether `k` (a forward key) is this service's: protocol, virtual
    /// address and port, and a client in the service's client domain.
    fn serves(&self, k: &AffinityKey) -> bool {
        let (net, mask) = self.domain;
        self.cfg.protocol_number() == k.protocol
            && *self.cfg.virtual_addr.ip() == k.dst_addr
            && self.cfg.virtual_addr.port() == k.dst_port
            && u32::from(k.src_addr) & u32::from(mask) == u32::from(net)
    }

    /// Whether the selector maps a flow to the same backend wherever and
    /// whenever it is asked (so a manager can adopt established flows).
    pub(super) fn is_consistent(&self) -> bool {
        self.selector.is_consistent()
    }

    /// Chooses a backend (and a source-NAT port) for the new flow `key` and
    /// counts it there. Nothing changes when it is refused.
    pub(super) fn place(&mut self, key: &AffinityKey) -> Result<Placement, Refusal> {
        self.cands.clear();
        self.cands.extend(self.backends.iter().map(|b| Candidate {
            weight: b.effective_weight(),
            active: b.active,
        }));
        let bi = self
            .selector
            .pick(&self.cands, &self.names, flow_hash(key))
            .ok_or(Refusal::NoBackend)?;
        let snat = match (&self.cfg.snat, &mut self.snat) {
            (Some(n), Some(pool)) => match pool.allocate() {
                Some(p) => Some(SocketAddrV4::new(n.address, p)),
                None => return Err(Refusal::SnatExhausted),
            },
            _ => None,
        };
        let b = &mut self.backends[bi];
        b.active += 1;
        b.total += 1;
        Ok(Placement {
            backend: b.addr,
            snat,
        })
    }
}

/// The selector's hash of a flow: FNV-1a over the client address, client
/// port and protocol (network order), folded. The same on every manager,
/// so consistent selectors agree.
fn flow_hash(k: &AffinityKey) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in u32::from(k.src_addr)
        .to_be_bytes()
        .into_iter()
        .chain(k.src_port.to_be_bytes())
        .chain([k.protocol])
    {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^ (h >> 31)
}

/// The configured services in configuration order (the order gives each
/// its affinity-identifier base).
#[derive(Debug, Default)]
pub struct ServiceRegistry {
    list: Vec<Service>,
}

impl ServiceRegistry {
    /// The services of `cfgs`, fresh.
    pub fn new(cfgs: &[ServiceConfig]) -> Self {
        let mut r = ServiceRegistry::default();
        r.rebuild(cfgs);
        r
    }

    /// Rebuilds from `cfgs` (a reload), keeping each same-named service's
    /// run-time state (see [`Service::new`]).
    pub fn rebuild(&mut self, cfgs: &[ServiceConfig]) {
        let mut old: HashMap<String, Service> = self
            .list
            .drain(..)
            .map(|s| (s.cfg.name.clone(), s))
            .collect();
        for (i, cfg) in cfgs.iter().enumerate() {
            let prev = old.remove(&cfg.name);
            self.list.push(Service::new(i, cfg, prev.as_ref()));
        }
    }

    /// Takes out the services `cfgs` no longer names (their wildcards are
    /// to be deleted), in their order.
    pub(super) fn take_removed(&mut self, cfgs: &[ServiceConfig]) -> Vec<Service> {
        let (gone, stay): (Vec<Service>, Vec<Service>) = std::mem::take(&mut self.list)
            .into_iter()
            .partition(|s| !cfgs.iter().any(|c| c.name == s.cfg.name));
        self.list = stay;
        gone
    }

    /// The services, in configuration order.
    pub fn as_slice(&self) -> &[Service] {
        &self.list
    }

    pub(super) fn iter_mut(&mut self) -> std::slice::IterMut<'_, Service> {
        self.list.iter_mut()
    }

    /// The service whose flows `k` (a forward key) belongs to.
    pub(super) fn serving(&mut self, k: &AffinityKey) -> Option<&mut Service> {
        self.list.iter_mut().find(|s| s.serves(k))
    }

    /// Sticky timeout (ms) of the named service; 5000 when it is gone.
    pub(super) fn sticky_ms(&self, service: &str) -> u64 {
        self.list
            .iter()
            .find(|s| *s.name == *service)
            .map_or(DEFAULT_STICKY_MS, |s| s.cfg.sticky_timeout_ms)
    }

    /// A backend by service name and address; the error names what is missing.
    pub(super) fn backend_mut(
        &mut self,
        service: &str,
        backend: SocketAddrV4,
    ) -> Result<&mut Backend, String> {
        let s = self
            .list
            .iter_mut()
            .find(|s| s.cfg.name == service)
            .ok_or_else(|| format!("no service {service:?}"))?;
        s.backends
            .iter_mut()
            .find(|b| b.addr == backend)
            .ok_or_else(|| format!("service {service:?} has no backend {backend}"))
    }

    /// Gives back what a flow held: its backend's active count and its
    /// source-NAT port.
    pub(super) fn release(&mut self, f: &Flow) {
        if let Some(s) = self.list.iter_mut().find(|s| *s.name == *f.service) {
            if let Some(b) = s.backends.iter_mut().find(|b| b.addr == f.backend) {
                b.active = b.active.saturating_sub(1);
            }
            if let (Some(a), Some(pool)) = (f.snat, &mut s.snat) {
                pool.release(a.port());
            }
        }
    }

    /// A health-check result; the backend's new state when it changed
    /// (rise/fall from the service's `health`, 1/1 without).
    pub(super) fn health(
        &mut self,
        service: &str,
        backend: SocketAddrV4,
        ok: bool,
    ) -> Option<bool> {
        let s = self.list.iter_mut().find(|s| s.cfg.name == service)?;
        let (rise, fall) = s.cfg.health.as_ref().map_or((1, 1), |h| (h.rise, h.fall));
        let b = s.backends.iter_mut().find(|b| b.addr == backend)?;
        b.record_health(ok, rise, fall)
    }
}

#[cfg(test)]
mod tests {
    use super::Backend;
    use std::net::SocketAddrV4;

    fn backend(weight: u32) -> Backend {
        Backend {
            addr: SocketAddrV4::new([198, 51, 100, 1].into(), 80),
            weight,
            feedback_weight: None,
            healthy: true,
            ok_streak: 0,
            fail_streak: 0,
            active: 0,
            total: 0,
        }
    }

    #[test]
    fn load_reports_scale_the_weight_and_health_follows_rise_and_fall() {
        let mut b = backend(4);
        b.report_load(75);
        assert_eq!(b.effective_weight(), 1);
        b.report_load(100);
        assert_eq!(b.effective_weight(), 1, "at least 1 while not drained");
        assert_eq!(b.record_health(false, 2, 2), None);
        assert_eq!(b.record_health(false, 2, 2), Some(false));
        assert_eq!(b.effective_weight(), 0);
        assert_eq!(b.record_health(true, 2, 2), None);
        assert_eq!(b.record_health(true, 2, 2), Some(true));
        let mut drained = backend(0);
        drained.report_load(0);
        assert_eq!(drained.effective_weight(), 0);
    }
}
