//! The service registry: each configured service with its backends'
//! run-time state (weights, health, active flows), its selector and its
//! source-NAT port pool. It places new flows on backends and takes them
//! back when they end; it sends nothing itself. One backend's state
//! (weights, health streaks, traffic) lives in `services/backend.rs`.

mod backend;

pub(in crate::core) use backend::HealthResult;
pub use backend::{backend_state, Backend, HealthDetail};

use super::flows::Flow;
use crate::algorithm::{Candidate, Selector};
use crate::config::{parse_port_range, ServiceConfig, SnatConfig};
use crate::snat::PortPool;
use affinity_api::AffinityKey;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

/// Sticky time (ms) of a flow whose service is gone: the configuration
/// default `sticky_timeout_ms`.
const DEFAULT_STICKY_MS: u64 = 5000;

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
    /// Ports of `cfg.hairpin_snat`.
    pub(super) hairpin_pool: Option<PortPool>,
    /// Cleared when an agent denied the advertise action and it is optional.
    pub advertise: bool,
    /// When this manager last placed a flow of the service or had packets
    /// of one reported (ns; 0 never): its role (`serving`) in `status`.
    pub last_served: u64,
}

/// Where a new flow goes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Placement {
    pub backend: SocketAddrV4,
    /// The source address and port toward the backend, with source NAT.
    pub snat: Option<SocketAddrV4>,
}

/// A placement and how it was reached.
#[derive(Debug, Clone, Copy)]
pub(super) struct Placed {
    pub placement: Placement,
    /// A source-NAT port was skipped because its reverse key was live.
    pub remapped: bool,
    /// The client is one of the service's backends.
    pub hairpin: bool,
}

/// Why a new flow was not placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// No healthy backend with weight > 0.
    NoBackend,
    /// The source-NAT port pool is empty (or every free port's reverse
    /// key is live).
    SnatExhausted,
    /// Without source NAT, the flow's reverse key is another live flow's
    /// (the same client address and port to the same backend).
    Collision,
}

impl Service {
    /// The service at configuration index `index`, keeping what `prev` (the
    /// same-named service before a reload) knew: backends' health, feedback
    /// and flow counts, the SNAT pool when its range is unchanged, and a
    /// denied optional advertise action.
    fn new(index: usize, cfg: &ServiceConfig, prev: Option<&Service>) -> Service {
        // Unchecked backends are healthy only without health checks or
        // with `start_healthy`.
        let start_healthy = cfg.health.as_ref().is_none_or(|h| h.start_healthy);
        let backends = cfg
            .backends
            .iter()
            .map(|b| {
                let kept = prev.and_then(|p| p.backends.iter().find(|o| o.addr == b.address));
                Backend::configured(&cfg.name, b, kept, start_healthy)
            })
            .collect();
        let snat = port_pool(cfg.snat.as_ref(), prev.and_then(|p| p.snat.clone()));
        let hairpin_pool = port_pool(
            cfg.hairpin_snat.as_ref(),
            prev.and_then(|p| p.hairpin_pool.clone()),
        );
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
            hairpin_pool,
            last_served: prev.map_or(0, |p| p.last_served),
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
    ///
    /// `in_use` says whether an affinity key is live (the manager's index
    /// of installed keys): a reverse key that is taken is never handed out
    /// again — with source NAT another port is tried (counted as
    /// remapped), without it the flow is refused ([`Refusal::Collision`]).
    /// Hairpin: a client that is one of the service's backends is never
    /// placed on itself, and is source-NATed when `hairpin_snat` is set.
    pub(super) fn place(
        &mut self,
        key: &AffinityKey,
        in_use: impl Fn(&AffinityKey) -> bool,
    ) -> Result<Placed, Refusal> {
        let hairpin = self.backends.iter().any(|b| *b.addr.ip() == key.src_addr);
        self.cands.clear();
        self.cands.extend(self.backends.iter().map(|b| Candidate {
            weight: if *b.addr.ip() == key.src_addr {
                0
            } else {
                b.effective_weight()
            },
            active: b.active,
        }));
        let bi = self
            .selector
            .pick(&self.cands, &self.names, flow_hash(key))
            .ok_or(Refusal::NoBackend)?;
        let backend = self.backends[bi].addr;
        let rev = |dst: SocketAddrV4| AffinityKey {
            protocol: key.protocol,
            src_addr: *backend.ip(),
            dst_addr: *dst.ip(),
            src_port: backend.port(),
            dst_port: dst.port(),
        };
        let (nat, pool) = match (hairpin, &self.cfg.hairpin_snat, &mut self.hairpin_pool) {
            (true, Some(n), Some(p)) => (Some(n.address), Some(p)),
            _ => match (&self.cfg.snat, &mut self.snat) {
                (Some(n), Some(p)) => (Some(n.address), Some(p)),
                _ => (None, None),
            },
        };
        let mut remapped = false;
        let snat = match (nat, pool) {
            (Some(addr), Some(pool)) => {
                // Ports whose reverse key is live elsewhere are skipped
                // (held until the search ends so allocate() moves on).
                let mut skipped = Vec::new();
                let mut found = None;
                for _ in 0..pool.size() {
                    let Some(p) = pool.allocate() else { break };
                    let a = SocketAddrV4::new(addr, p);
                    if in_use(&rev(a)) {
                        skipped.push(p);
                        remapped = true;
                        continue;
                    }
                    found = Some(a);
                    break;
                }
                for p in skipped {
                    pool.release(p);
                }
                Some(found.ok_or(Refusal::SnatExhausted)?)
            }
            _ => {
                if in_use(&rev(SocketAddrV4::new(key.src_addr, key.src_port))) {
                    return Err(Refusal::Collision);
                }
                None
            }
        };
        let b = &mut self.backends[bi];
        b.active += 1;
        b.total += 1;
        b.traffic.connections = b.total;
        Ok(Placed {
            placement: Placement { backend, snat },
            remapped,
            hairpin,
        })
    }

    /// Whether backend `addr` is still configured and healthy, so flows on
    /// it may go on (a drained one, weight 0, still may).
    fn can_take(&self, addr: SocketAddrV4) -> bool {
        self.backends.iter().any(|b| b.addr == addr && b.healthy)
    }
}

/// The port pool of source-NAT section `nat` (none without one, or when its
/// range does not parse): `kept`, the pool before a reload, when its range
/// is unchanged (its ports in use stay taken), else a fresh one.
fn port_pool(nat: Option<&SnatConfig>, kept: Option<PortPool>) -> Option<PortPool> {
    let fresh = nat.and_then(|n| parse_port_range(&n.ports).map(|(lo, hi)| PortPool::new(lo, hi)));
    match (kept, fresh) {
        (Some(p), Some(n)) if p.range() == n.range() => Some(p),
        (_, n) => n,
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
    /// run-time state (see `Service::new`).
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

    /// Whether `service` has its agents answer SYNs with cookies
    /// (`syn_proxy`); false for a service no longer configured.
    pub(super) fn syn_proxy(&self, service: &str) -> bool {
        self.list
            .iter()
            .find(|s| *s.name == *service)
            .is_some_and(|s| s.cfg.syn_proxy)
    }

    /// Whether flows of `service` on `backend` may go on: the service and
    /// the backend are still configured and the backend is healthy.
    pub(super) fn can_take(&self, service: &str, backend: SocketAddrV4) -> bool {
        self.list
            .iter()
            .find(|s| *s.name == *service)
            .is_some_and(|s| s.can_take(backend))
    }

    /// The named service's `expire_nodest_conn` (false when it is gone).
    pub(super) fn expire_nodest_conn(&self, service: &str) -> bool {
        self.list
            .iter()
            .find(|s| *s.name == *service)
            .is_some_and(|s| s.cfg.expire_nodest_conn)
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
            let hairpin = s.cfg.hairpin_snat.as_ref().map(|n| n.address);
            let pool = if f.snat.map(|a| *a.ip()) == hairpin {
                &mut s.hairpin_pool
            } else {
                &mut s.snat
            };
            if let (Some(a), Some(pool)) = (f.snat, pool) {
                pool.release(a.port());
            }
        }
    }

    /// A health-check result, received at `now` (ns); the backend's new
    /// state when it changed (rise/fall from the service's `health`, 1/1
    /// without).
    pub(super) fn health(
        &mut self,
        now: u64,
        service: &str,
        backend: SocketAddrV4,
        result: HealthResult<'_>,
    ) -> Option<bool> {
        let HealthResult {
            ok,
            failure,
            latency_us,
        } = result;
        let s = self.list.iter_mut().find(|s| s.cfg.name == service)?;
        let (rise, fall) = s.cfg.health.as_ref().map_or((1, 1), |h| (h.rise, h.fall));
        let b = s.backends.iter_mut().find(|b| b.addr == backend)?;
        b.check.checks += 1;
        b.check.latency_us = latency_us;
        if !ok {
            b.check.last_failure = Some(failure.unwrap_or("failed").to_string());
        }
        let changed = b.record_health(ok, rise, fall);
        if changed.is_some() {
            b.check.changed_at = Some(now);
        }
        changed
    }

    /// Adds reported traffic of a flow of `service` on `backend` (see
    /// [`Backend::note_traffic`]) and marks the service served at `now`.
    pub(super) fn note_traffic(
        &mut self,
        now: u64,
        service: &str,
        backend: SocketAddrV4,
        inbound: bool,
        packets: u64,
        bytes: u64,
    ) {
        let Some(s) = self.list.iter_mut().find(|s| *s.name == *service) else {
            return;
        };
        s.last_served = now.max(1);
        if let Some(b) = s.backends.iter_mut().find(|b| b.addr == backend) {
            b.note_traffic(now, inbound, packets, bytes);
        }
    }
}
