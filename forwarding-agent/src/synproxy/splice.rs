//! The splice of a proxied connection: the client's ACK kept while the
//! agent opens the backend connection ([`Pending`]), the sequence and
//! timestamp adjusts installed when the backend's SYN-ACK arrives
//! ([`SpliceTable`], [`splice_adjusts`]), and the timestamp rewrite that
//! follows (RFC 7323 TSval/TSecr shifted by the offset, as SYNPROXY does).

use super::{opt, SynProxyState};
use crate::actions::{SeqAdjustKey, TsAdjustKey};
use crate::wire::{self, checksum, get_u16, get_u32, set_u16, set_u32, tcp};

/// What the agent installed on a spliced flow's fixed affinity.
pub type Installed = (SeqAdjustKey, Option<TsAdjustKey>);

/// A proxied connection waiting for the backend's SYN-ACK: the state the
/// manager echoed and the client's ACK (or first data), released once the
/// backend has answered.
#[derive(Debug, Clone)]
pub struct Pending {
    /// What the manager echoed.
    pub state: SynProxyState,
    /// The client's packet as punted (client → VIP, before NAT).
    pub packet: Vec<u8>,
    /// The caller's monotonic nanoseconds after which it is forgotten.
    pub deadline_ns: u64,
}

/// How long a proxied connection waits for the backend's SYN-ACK (10 s,
/// about a SYN's first three retransmissions).
pub const PENDING_NS: u64 = 10_000_000_000;

/// The agent's proxied connections between the manager's answer and the
/// backend's SYN-ACK (`pending`, keyed by the client flow: client → VIP),
/// and the sequence adjusts the agent installed for them (`spliced`, kept
/// across the manager's refreshes, which do not carry them). Locked by the
/// control thread and, for a backend SYN-ACK while something is pending,
/// by a worker: once per proxied connection, never per data packet.
#[derive(Debug, Default)]
pub struct SpliceTable {
    pending: parking_lot::Mutex<std::collections::HashMap<affinity_api::AffinityKey, Pending>>,
    /// Entries of `pending`: a worker checks this before taking the lock.
    pending_n: std::sync::atomic::AtomicUsize,
    spliced: parking_lot::Mutex<std::collections::HashMap<affinity_api::AffinityKey, Installed>>,
    /// Client flows whose cookie ACK proved, not yet spliced, with when
    /// they are forgotten (ns): from the proof on, the flow's fixed
    /// affinity can appear (the manager's answer) before the control path
    /// has made it pending, and the client's request must not slip through
    /// it to the backend in that gap.
    proved: parking_lot::Mutex<std::collections::HashMap<affinity_api::AffinityKey, u64>>,
    /// Entries of `proved`: checked before taking the lock.
    proved_n: std::sync::atomic::AtomicUsize,
}

impl SpliceTable {
    /// Notes client flow `key` as proved until `deadline_ns` (at most `cap`
    /// flows; expired ones are pruned first; past that it is not noted).
    pub fn note_proved(
        &self,
        key: affinity_api::AffinityKey,
        deadline_ns: u64,
        now_ns: u64,
        cap: usize,
    ) {
        let mut m = self.proved.lock();
        if m.len() >= cap {
            m.retain(|_, d| *d > now_ns);
        }
        if m.len() < cap || m.contains_key(&key) {
            m.insert(key, deadline_ns);
        }
        self.proved_n
            .store(m.len(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Forgets the proved and pending flows past their deadline at
    /// `now_ns` (a manager that never answered, a backend that never did),
    /// so workers stop taking the lock for them (`Agent::tick`).
    pub fn expire(&self, now_ns: u64) {
        let mut m = self.pending.lock();
        m.retain(|_, v| v.deadline_ns > now_ns);
        self.pending_n
            .store(m.len(), std::sync::atomic::Ordering::Relaxed);
        drop(m);
        let mut m = self.proved.lock();
        m.retain(|_, d| *d > now_ns);
        self.proved_n
            .store(m.len(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether client flow `key` proved and is not spliced yet at `now_ns`:
    /// its packets are held back from the backend. No lock while nothing
    /// is noted.
    #[inline]
    pub fn holds_back(&self, key: &affinity_api::AffinityKey, now_ns: u64) -> bool {
        self.proved_n.load(std::sync::atomic::Ordering::Relaxed) != 0
            && self.proved.lock().get(key).is_some_and(|d| *d > now_ns)
    }

    /// Adds a pending connection (at most `cap`; expired ones are pruned
    /// first); false when full.
    pub fn add_pending(
        &self,
        key: affinity_api::AffinityKey,
        p: Pending,
        now_ns: u64,
        cap: usize,
    ) -> bool {
        let mut m = self.pending.lock();
        m.retain(|_, v| v.deadline_ns > now_ns);
        let ok = m.len() < cap || m.contains_key(&key);
        if ok {
            m.insert(key, p);
        }
        self.pending_n
            .store(m.len(), std::sync::atomic::Ordering::Relaxed);
        ok
    }

    /// Whether any connection is pending (no lock).
    #[inline]
    pub fn any_pending(&self) -> bool {
        self.pending_n.load(std::sync::atomic::Ordering::Relaxed) != 0
    }

    /// Whether client flow `key` (client → VIP) waits for its backend's
    /// SYN-ACK (takes the lock: callers check [`Self::any_pending`] first).
    pub fn is_pending(&self, key: &affinity_api::AffinityKey) -> bool {
        self.pending.lock().contains_key(key)
    }

    /// Takes the pending connection of client flow `key`, if live.
    pub fn take_pending(&self, key: &affinity_api::AffinityKey, now_ns: u64) -> Option<Pending> {
        let mut m = self.pending.lock();
        let p = m.remove(key);
        self.pending_n
            .store(m.len(), std::sync::atomic::Ordering::Relaxed);
        if p.is_some() {
            let mut proved = self.proved.lock();
            proved.remove(key);
            self.proved_n
                .store(proved.len(), std::sync::atomic::Ordering::Relaxed);
        }
        p.filter(|p| p.deadline_ns > now_ns)
    }

    /// Remembers the adjusts installed on fixed affinity `key` (at most
    /// `cap` flows remembered; past that new ones are not tracked).
    pub fn remember(&self, key: affinity_api::AffinityKey, s: Installed, cap: usize) {
        let mut m = self.spliced.lock();
        if m.len() < cap || m.contains_key(&key) {
            m.insert(key, s);
        }
    }

    /// The adjusts the agent installed on `key`, if any.
    pub fn installed(&self, key: &affinity_api::AffinityKey) -> Option<Installed> {
        self.spliced.lock().get(key).copied()
    }

    /// Forgets `key` (its fixed affinity was deleted).
    pub fn forget(&self, key: &affinity_api::AffinityKey) {
        self.spliced.lock().remove(key);
    }
}

/// The two sequence adjusts that join a proxied connection's halves
/// (backend ISN vs cookie ISN): on the client flow (client → VIP) the
/// acknowledgment numbers from the cookie ISN + 1 on are moved to the
/// backend's; on the backend flow (backend → client) the sequence numbers
/// from the backend ISN + 1 on are moved to the cookie's. (forward, reverse).
pub fn splice_adjusts(
    cookie_isn: u32,
    backend_isn: u32,
) -> (affinity_api::SeqAdjustAction, affinity_api::SeqAdjustAction) {
    let fwd = affinity_api::SeqAdjustAction {
        seq_delta: 0,
        initial_seq: 0,
        ack_delta: backend_isn.wrapping_sub(cookie_isn),
        initial_ack: cookie_isn.wrapping_add(1),
    };
    let rev = affinity_api::SeqAdjustAction {
        seq_delta: cookie_isn.wrapping_sub(backend_isn),
        initial_seq: backend_isn.wrapping_add(1),
        ack_delta: 0,
        initial_ack: 0,
    };
    (fwd, rev)
}

/// Offset (from the TCP header) of the timestamp option's TSval in the TCP
/// header `l4`, if it has one.
fn timestamp_at(l4: &[u8]) -> Option<usize> {
    let doff = tcp::header_len(*l4.get(tcp::field::DATA_OFF)?);
    let opts = l4.get(tcp::HEADER_LEN..doff)?;
    let mut i = 0;
    while let Some(&kind) = opts.get(i) {
        match kind {
            opt::END => return None,
            opt::NOP => i += 1,
            _ => {
                let len = *opts.get(i + 1)? as usize;
                if len < 2 || i + len > opts.len() {
                    return None;
                }
                if kind == opt::TIMESTAMP && len == 10 {
                    return Some(tcp::HEADER_LEN + i + 2);
                }
                i += len;
            }
        }
    }
    None
}

/// The TSval of the TCP packet `pkt` (`info`), if it carries timestamps.
pub fn tsval(pkt: &[u8], info: &wire::PacketInfo) -> Option<u32> {
    let l4 = pkt.get(info.l4_offset..info.total_len)?;
    let at = timestamp_at(l4)?;
    Some(get_u32(l4, at..at + 4))
}

/// Applies a timestamp offset (`crate::actions::TsAdjustKey`) to the TCP
/// packet `pkt` in place, with an incremental checksum update (RFC 1624);
/// packets without timestamps are left alone.
pub fn apply_ts_adjust(pkt: &mut [u8], info: &wire::PacketInfo, t: TsAdjustKey) {
    if info.key.protocol != wire::TCP || info.fragment == wire::Fragment::Later {
        return;
    }
    let Some(l4) = pkt.get_mut(info.l4_offset..info.total_len) else {
        return;
    };
    let Some(at) = timestamp_at(l4) else {
        return;
    };
    let field = if t.echo { at + 4..at + 8 } else { at..at + 4 };
    // The checksum update works on whole 16-bit words of the segment.
    let words = (field.start & !1)..((field.end + 1) & !1).min(l4.len());
    if words.end < field.end {
        return;
    }
    let mut old = [0u8; 6];
    let n = words.len();
    old[..n].copy_from_slice(&l4[words.clone()]);
    let v = get_u32(l4, field.clone()).wrapping_add(t.delta);
    set_u32(l4, field, v);
    let c = get_u16(l4, tcp::field::CHECKSUM);
    let c = checksum::update(c, &old[..n], &l4[words]);
    set_u16(l4, tcp::field::CHECKSUM, c);
}
