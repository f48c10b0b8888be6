//! The per-worker fragment cache: virtual reassembly without reassembling
//! (RFC 4787 REQ-14: a NAT must handle fragments in and out of order;
//! VPP nat44-ed does the same with its shallow virtual reassembly).
//!
//! Only a datagram's first fragment carries the ports, so only it can be
//! looked up; every fragment of the datagram must go the way it went. The
//! cache is keyed by (source, destination, protocol, IP identification) as
//! received — the fields RFC 791 section 3.2 reassembles by — and holds,
//! per datagram, either
//!
//! - the first fragment's **decision** ([`Decision`]): later fragments
//!   follow it as they come; or
//! - the later fragments that came **before** their first (reordered, or
//!   the first is still with the manager): copies are held until the first
//!   fragment's decision is made on this worker (then released at once,
//!   through [`super::Worker::take_released`]), or until the flow the first
//!   fragment was punted for appears in the fixed table (checked once per
//!   batch and by [`super::Worker::poll_fragments`]; this is how a new
//!   flow's fragments follow its first fragment back from the manager even
//!   when another worker processes the returned packet).
//!
//! Bounds (per worker; no lock is taken): `AgentConfig::fragment_cache`
//! datagrams, [`MAX_HELD_BYTES`] of held copies, [`MAX_HELD_PER_DATAGRAM`]
//! fragments per datagram, and [`TIMEOUT_NS`] per datagram, after which
//! its held fragments are dropped (counted `fragment-expired`): the
//! destination could not reassemble them without the first anyway. A
//! fragment that finds the cache full is counted `fragment-overflow` and
//! handled as before the cache held anything (wildcards with unknown ports,
//! else passed). A new decision that finds the cache full evicts the oldest
//! datagram. Duplicates and overlaps are not examined: every copy is held
//! and released as it came, and the destination's reassembly resolves them
//! (RFC 791 section 3.2).

use crate::actions::ActionView;
use crate::counters::{Counter, LocalCounters};
use crate::wire::PacketInfo;
use affinity_api::AffinityKey;
use std::collections::{HashMap, VecDeque};

/// How long a datagram's entry lives (decision or held fragments): 2 s, the
/// default timeout of VPP's NAT virtual reassembly (`nat44 virtual-
/// reassembly ... timeout 2`); far above a datagram's spread on a path.
pub const TIMEOUT_NS: u64 = 2_000_000_000;

/// Held fragment copies, bytes per worker (1 MiB: some 700 full-size
/// fragments).
pub const MAX_HELD_BYTES: usize = 1 << 20;

/// Held fragments per datagram (a 65,535-byte datagram in 1,480-byte
/// fragments has 45).
pub const MAX_HELD_PER_DATAGRAM: usize = 64;

/// (source, destination, protocol, IP id): the fragments of one datagram.
type FragKey = (u32, u32, u8, u16);

/// What a datagram's first fragment got, for its later fragments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decision {
    /// It matched this fixed affinity: later fragments look it up (its
    /// per-flow counters and expiry apply to them too).
    Fixed(AffinityKey),
    /// It matched a wildcard that did not punt it: these actions.
    Actions(ActionView),
    /// Nothing matched: passed.
    Pass,
    /// Dropped, for this reason.
    Drop(Counter),
}

/// What the cache says about a later fragment.
pub(super) enum Later {
    /// Its first fragment's decision.
    Decided(Decision),
    /// Held: the fragment is consumed for now.
    Held,
    /// No decision and no room to hold it.
    Overflow,
}

struct Entry {
    decision: Option<Decision>,
    /// The key the first fragment was punted with (no decision yet).
    awaiting: Option<AffinityKey>,
    held: Vec<Vec<u8>>,
    /// When the entry was made (ns).
    born: u64,
}

/// A worker's fragment cache (see the module doc).
pub(super) struct FragmentCache {
    map: HashMap<FragKey, Entry>,
    /// Entries in the order they were made, with their `born`.
    order: VecDeque<(FragKey, u64)>,
    /// Entries with held fragments whose first fragment was punted.
    awaiting: Vec<FragKey>,
    cap: usize,
    held_bytes: usize,
}

fn frag_key(info: &PacketInfo) -> FragKey {
    (
        u32::from(info.key.src_addr),
        u32::from(info.key.dst_addr),
        info.key.protocol,
        info.ip_id,
    )
}

impl FragmentCache {
    /// A cache of at most `cap` datagrams (0: no cache; later fragments are
    /// handled as having no first).
    pub fn new(cap: usize) -> Self {
        FragmentCache {
            map: HashMap::new(),
            order: VecDeque::new(),
            awaiting: Vec::new(),
            cap,
            held_bytes: 0,
        }
    }

    /// Whether anything is kept (so a batch can skip [`Self::expire`]).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Whether held fragments wait for a punted first fragment's flow.
    #[inline]
    pub fn has_awaiting(&self) -> bool {
        !self.awaiting.is_empty()
    }

    fn remove(&mut self, k: &FragKey, c: &mut LocalCounters, why: Counter) {
        if let Some(e) = self.map.remove(k) {
            let n = e.held.len();
            self.held_bytes -= e.held.iter().map(Vec::len).sum::<usize>();
            c.add(why, n as u64);
            if e.awaiting.is_some() {
                self.awaiting.retain(|a| a != k);
            }
        }
    }

    /// Forgets datagrams older than [`TIMEOUT_NS`], dropping their held
    /// fragments (counted `fragment-expired`).
    pub fn expire(&mut self, now_ns: u64, c: &mut LocalCounters) {
        while let Some(&(k, born)) = self.order.front() {
            if born.saturating_add(TIMEOUT_NS) > now_ns {
                break;
            }
            self.order.pop_front();
            if self.map.get(&k).is_some_and(|e| e.born == born) {
                self.remove(&k, c, Counter::FragmentExpired);
            }
        }
    }

    /// A new entry, evicting the oldest when full (`evict`) or refusing.
    fn make(&mut self, k: FragKey, now_ns: u64, evict: bool, c: &mut LocalCounters) -> bool {
        if self.cap == 0 {
            return false;
        }
        while self.map.len() >= self.cap {
            if !evict {
                return false;
            }
            let Some((old, born)) = self.order.pop_front() else {
                return false;
            };
            if self.map.get(&old).is_some_and(|e| e.born == born) {
                self.remove(&old, c, Counter::FragmentOverflow);
            }
        }
        self.map.insert(
            k,
            Entry {
                decision: None,
                awaiting: None,
                held: Vec::new(),
                born: now_ns,
            },
        );
        self.order.push_back((k, now_ns));
        true
    }

    /// A later fragment (`pkt`, up to its IP total length): its first
    /// fragment's decision, or held, or no room.
    pub fn later(
        &mut self,
        info: &PacketInfo,
        pkt: &[u8],
        now_ns: u64,
        c: &mut LocalCounters,
    ) -> Later {
        let k = frag_key(info);
        if let Some(d) = self.map.get(&k).and_then(|e| e.decision) {
            return Later::Decided(d);
        }
        if self.held_bytes + pkt.len() > MAX_HELD_BYTES
            || (!self.map.contains_key(&k) && !self.make(k, now_ns, false, c))
        {
            return Later::Overflow;
        }
        let Some(e) = self.map.get_mut(&k) else {
            return Later::Overflow;
        };
        if e.held.len() >= MAX_HELD_PER_DATAGRAM {
            return Later::Overflow;
        }
        e.held.push(pkt.to_vec());
        self.held_bytes += pkt.len();
        Later::Held
    }

    /// Records a first fragment's decision; returns the held fragments to
    /// release (in arrival order).
    pub fn decide(
        &mut self,
        info: &PacketInfo,
        d: Decision,
        now_ns: u64,
        c: &mut LocalCounters,
    ) -> Vec<Vec<u8>> {
        let k = frag_key(info);
        if !self.map.contains_key(&k) && !self.make(k, now_ns, true, c) {
            return Vec::new();
        }
        let Some(e) = self.map.get_mut(&k) else {
            return Vec::new();
        };
        e.decision = Some(d);
        let held = std::mem::take(&mut e.held);
        if e.awaiting.take().is_some() {
            self.awaiting.retain(|a| *a != k);
        }
        self.held_bytes -= held.iter().map(Vec::len).sum::<usize>();
        held
    }

    /// Notes that a first fragment was punted with `key` (no decision on
    /// this worker yet): its held fragments wait for that flow.
    pub fn punted(&mut self, info: &PacketInfo, now_ns: u64, c: &mut LocalCounters) {
        let k = frag_key(info);
        if !self.map.contains_key(&k) && !self.make(k, now_ns, false, c) {
            return;
        }
        if let Some(e) = self.map.get_mut(&k) {
            if e.decision.is_none() && e.awaiting.replace(info.key).is_none() {
                self.awaiting.push(k);
            }
        }
    }

    /// The awaiting datagrams: (cache key, the first fragment's flow key).
    pub fn awaiting(&self) -> Vec<(FragKey, AffinityKey)> {
        self.awaiting
            .iter()
            .filter_map(|k| Some((*k, self.map.get(k)?.awaiting?)))
            .collect()
    }

    /// Records the decision for an awaiting datagram by its cache key;
    /// returns its held fragments.
    pub fn decide_awaiting(&mut self, k: FragKey, d: Decision) -> Vec<Vec<u8>> {
        let Some(e) = self.map.get_mut(&k) else {
            return Vec::new();
        };
        e.decision = Some(d);
        e.awaiting = None;
        let held = std::mem::take(&mut e.held);
        self.awaiting.retain(|a| *a != k);
        self.held_bytes -= held.iter().map(Vec::len).sum::<usize>();
        held
    }
}

impl super::Worker {
    /// A first fragment was acted on with disposition `d`: records `decision`
    /// for its later fragments (unless it was punted or held: then they wait
    /// for its flow) and releases those held. Out of line: only fragments
    /// come here.
    #[cold]
    #[inline(never)]
    pub(super) fn first_fragment(
        &mut self,
        ctx: &super::BatchCtx<'_>,
        info: &PacketInfo,
        decision: Decision,
        d: super::Disposition,
    ) {
        use super::Disposition;
        match d {
            Disposition::Punt { .. } | Disposition::Consumed(_) => {
                self.frag.punted(info, ctx.now_ns, &mut self.counters);
            }
            Disposition::Pass | Disposition::Forward(_) | Disposition::Drop(_) => {
                let held = self
                    .frag
                    .decide(info, decision, ctx.now_ns, &mut self.counters);
                self.release_fragments(ctx, held);
            }
        }
    }

    /// Sends held fragments the way their first fragment's decision says
    /// ([`super::Worker::release`]).
    fn release_fragments(&mut self, ctx: &super::BatchCtx<'_>, held: Vec<Vec<u8>>) {
        for pkt in held {
            self.release(ctx, pkt);
            self.counters.inc(Counter::FragmentReleased);
        }
    }

    /// Per batch, when fragments are kept: forgets expired datagrams and
    /// releases the held fragments of punted first fragments whose flow is
    /// now in the fixed table (the manager installed it; the returned first
    /// fragment may have gone through another worker).
    #[cold]
    #[inline(never)]
    pub(super) fn fragment_upkeep(&mut self, ctx: &super::BatchCtx<'_>) {
        self.frag.expire(ctx.now_ns, &mut self.counters);
        if !self.frag.has_awaiting() {
            return;
        }
        for (k, key) in self.frag.awaiting() {
            let live = ctx
                .agent
                .fixed
                .lookup(&key)
                .is_some_and(|(v, _)| v.expires_ds > ctx.now);
            if live {
                let held = self.frag.decide_awaiting(k, Decision::Fixed(key));
                self.release_fragments(ctx, held);
            }
        }
    }
}
