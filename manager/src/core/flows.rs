//! The flow table: every flow the manager placed, found by either
//! direction's key, with the close (sticky) timers and the lifetime limit.

use super::services::Placement;
use affinity_api::{interest, AffinityKey};
use affinity_forwarding_agent::wire;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddrV4;
use std::sync::Arc;

// foldhash: keys come from the network (client addresses and ports), so
// the hasher is seeded per process; SipHash cost a fifth of a flow setup.
type FlowMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A flow the manager placed.
#[derive(Debug, Clone)]
pub struct Flow {
    /// The service's name.
    pub service: Arc<str>,
    /// Client → virtual address, as the client sent it.
    pub fwd: AffinityKey,
    /// Backend → client (or → the SNAT address), as the backend answers.
    pub rev: AffinityKey,
    pub vip: SocketAddrV4,
    pub backend: SocketAddrV4,
    pub snat: Option<SocketAddrV4>,
    /// Agents that hold this flow's fixed affinities.
    pub agents: Vec<SocketAddrV4>,
    fin_fwd: bool,
    fin_rev: bool,
    /// When both FINs or an RST were seen (ns, the core's clock).
    pub closed_at: Option<u64>,
    /// When the flow was placed (ns).
    pub created: u64,
}

impl Flow {
    /// A new flow `key` (forward) placed at `now` by agent `from`; the
    /// reverse key answers to the client, or to the SNAT address.
    pub(super) fn new(
        service: Arc<str>,
        vip: SocketAddrV4,
        key: AffinityKey,
        to: Placement,
        from: SocketAddrV4,
        now: u64,
    ) -> Flow {
        let backend = to.backend;
        let (rdst, rport) = to
            .snat
            .map_or((key.src_addr, key.src_port), |a| (*a.ip(), a.port()));
        Flow {
            service,
            fwd: key,
            rev: AffinityKey {
                protocol: key.protocol,
                src_addr: *backend.ip(),
                dst_addr: rdst,
                src_port: backend.port(),
                dst_port: rport,
            },
            vip,
            backend,
            snat: to.snat,
            agents: vec![from],
            fin_fwd: false,
            fin_rev: false,
            closed_at: None,
            created: now,
        }
    }

    /// Whether the flow is TCP (agents report its FIN/RST).
    pub fn is_tcp(&self) -> bool {
        self.fwd.protocol == wire::TCP
    }

    /// Notes a tracked FIN/RST (interest `reason` bits) seen in one
    /// direction; true when this closes the flow (both FINs, or an RST).
    fn note_close(&mut self, now: u64, is_fwd: bool, reason: u16) -> bool {
        if reason & interest::FIN != 0 {
            if is_fwd {
                self.fin_fwd = true;
            } else {
                self.fin_rev = true;
            }
        }
        let closed = reason & interest::RST != 0 || (self.fin_fwd && self.fin_rev);
        if closed && self.closed_at.is_none() {
            self.closed_at = Some(now);
            return true;
        }
        false
    }
}

/// The flows, by forward key, with the reverse-key index and the closed
/// flows waiting out their sticky time.
#[derive(Debug, Default)]
pub struct FlowTable {
    flows: FlowMap<AffinityKey, Flow>,
    rev: FlowMap<AffinityKey, AffinityKey>,
    /// (deletion time in ns, forward key), in the order flows closed.
    closing: VecDeque<(u64, AffinityKey)>,
}

impl FlowTable {
    /// Flows placed and not yet deleted (open, or closed within their
    /// sticky time).
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// No flows.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// A flow by its forward key.
    pub fn get(&self, fwd: &AffinityKey) -> Option<&Flow> {
        self.flows.get(fwd)
    }

    pub(super) fn get_mut(&mut self, fwd: &AffinityKey) -> Option<&mut Flow> {
        self.flows.get_mut(fwd)
    }

    /// The forward key of the flow `key` belongs to, in either direction.
    pub(super) fn lookup(&self, key: &AffinityKey) -> Option<AffinityKey> {
        if self.flows.contains_key(key) {
            Some(*key)
        } else {
            self.rev.get(key).copied()
        }
    }

    pub(super) fn insert(&mut self, flow: Flow) {
        self.rev.insert(flow.rev, flow.fwd);
        self.flows.insert(flow.fwd, flow);
    }

    /// Removes a flow and its reverse index entry.
    fn remove(&mut self, fwd: &AffinityKey) -> Option<Flow> {
        let f = self.flows.remove(fwd)?;
        self.rev.remove(&f.rev);
        Some(f)
    }

    /// Notes a tracked FIN/RST on flow `fwd`; when that closes it, its
    /// deletion is due `sticky_ms` after `now`. True when it closed.
    pub(super) fn note_close(
        &mut self,
        now: u64,
        fwd: AffinityKey,
        is_fwd: bool,
        reason: u16,
        sticky_ms: u64,
    ) -> bool {
        let Some(f) = self.flows.get_mut(&fwd) else {
            return false;
        };
        if !f.note_close(now, is_fwd, reason) {
            return false;
        }
        self.closing.push_back((now + sticky_ms * 1_000_000, fwd));
        true
    }

    /// When the oldest closed flow is due for deletion (ns). The queue is in
    /// closing order, so with different sticky times per service a later
    /// deadline can stand before an earlier one; deletion waits for the
    /// front, and so does this.
    pub(super) fn next_deletion(&self) -> Option<u64> {
        self.closing.front().map(|(t, _)| *t)
    }

    /// Removes the closed flows due at `now`, in closing order.
    pub(super) fn take_due(&mut self, now: u64) -> Vec<Flow> {
        let mut due = Vec::new();
        while self.closing.front().is_some_and(|(t, _)| *t <= now) {
            let Some((_, k)) = self.closing.pop_front() else {
                break;
            };
            due.extend(self.remove(&k));
        }
        due
    }

    /// Removes the open flows placed more than `lifetime` ns before `now`.
    pub(super) fn take_expired(&mut self, now: u64, lifetime: u64) -> Vec<Flow> {
        let expired: Vec<AffinityKey> = self
            .flows
            .iter()
            .filter(|(_, f)| f.closed_at.is_none() && now.saturating_sub(f.created) > lifetime)
            .map(|(k, _)| *k)
            .collect();
        expired.iter().filter_map(|k| self.remove(k)).collect()
    }

    /// The open flows placed before `now`, by agent holding them: what a
    /// renewal refreshes.
    pub(super) fn open_by_agent(&self, now: u64) -> HashMap<SocketAddrV4, Vec<AffinityKey>> {
        let mut per_agent: HashMap<SocketAddrV4, Vec<AffinityKey>> = HashMap::new();
        for (k, f) in &self.flows {
            if f.closed_at.is_none() && now > f.created {
                for a in &f.agents {
                    per_agent.entry(*a).or_default().push(*k);
                }
            }
        }
        per_agent
    }
}
