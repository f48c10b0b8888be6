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

/// Early data held per proxied connection, packets: a request right behind
/// the handshake is one or two segments; four leave room for a pure ACK
/// and a retransmission (Linux clients send up to 10 segments, RFC 6928,
/// into the cookie SYN-ACK's 65535-byte window; past the bounds the rest is
/// dropped and retransmitted, as before early data was held).
pub const EARLY_DATA_PACKETS: usize = 4;

/// Early data held per proxied connection, bytes of IPv4 packets (8 KiB:
/// an HTTP request with its headers and cookies).
pub const EARLY_DATA_BYTES: usize = 8 << 10;

/// Early data held agent-wide, bytes of IPv4 packets (4 MiB: 512
/// connections at their per-connection bound, some 2800 at one full-size
/// segment each; the connections themselves are bounded by
/// `AgentConfig::hold_limit`).
pub const EARLY_DATA_TOTAL_BYTES: usize = 4 << 20;

/// Slots of the counted filter over the proved flows' keys (a power of
/// two; 4096 × 4 bytes): with the default 1024 proved flows at most, a
/// packet of an unrelated flow finds its slot taken (and takes the lock)
/// at most about a quarter of the time, and nearly never at ordinary
/// connection rates.
const FILTER_SLOTS: usize = 1 << 12;

/// What [`SpliceTable::hold_early`] did with a client packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Early {
    /// The flow is not held back (not proved, or spliced, or expired): the
    /// packet goes on.
    Pass,
    /// A copy is held, released after the splice.
    Held,
    /// Held back but past the bounds (per connection or agent-wide): the
    /// packet is dropped (the client retransmits).
    Full,
}

/// How long a proved flow's later packets are held rather than proving it
/// again (1 s, RFC 6298's initial retransmission timeout): a manager
/// answers a proof within milliseconds, so a proof unanswered for this
/// long is taken as lost (the punt or the answer), and the client's next
/// packet with the cookie (its retransmitted request, on Linux at about
/// 200 ms, 600 ms and 1.4 s) is punted as the proof again. Before it, a
/// second punt would only make the manager place the connection twice.
pub const REPROVE_NS: u64 = 1_000_000_000;

/// How long a connection the backend refused is remembered (10 s, as
/// [`PENDING_NS`]): a manager's late answer to a repeated proof of it
/// then starts no second backend SYN.
pub const REFUSED_NS: u64 = PENDING_NS;

/// A proved flow: until when it is held back (ns), when it was last punted
/// as a proof (ns; `None`: its proof did not leave, so the next packet
/// proves it), whether the manager answered it (then it is never proved
/// again: the connection waits for its backend), and the client packets
/// held for it meanwhile (IPv4 packets, in arrival order; their bytes).
#[derive(Debug)]
struct Proof {
    deadline_ns: u64,
    punted_ns: Option<u64>,
    answered: bool,
    held: Vec<Vec<u8>>,
    bytes: usize,
}

/// What [`SpliceTable::prove`] made of a valid cookie packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proving {
    /// The connection's first proof (or the first since it was forgotten,
    /// or not noted for lack of room): punted as the interest match.
    First,
    /// Proved before, but not punted within [`REPROVE_NS`] (or its punt
    /// did not leave): punted as the proof again; what is held stays.
    Again,
    /// Proved and punted within [`REPROVE_NS`]: the packet is early data
    /// (held, or dropped past the bounds), not a second proof.
    Early(Early),
}

/// The proved flows and the bytes of early data they hold (all of them).
#[derive(Debug, Default)]
struct Proved {
    flows: std::collections::HashMap<affinity_api::AffinityKey, Proof>,
    held_bytes: usize,
}

/// The filter slot of a flow key (a multiplicative hash of its fields).
#[inline]
fn filter_slot(key: &affinity_api::AffinityKey) -> usize {
    let addrs = (u64::from(u32::from(key.src_addr)) << 32) | u64::from(u32::from(key.dst_addr));
    let rest =
        (u64::from(key.protocol) << 32) | (u64::from(key.src_port) << 16) | u64::from(key.dst_port);
    let h = addrs.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ rest.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    (h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - FILTER_SLOTS.trailing_zeros())) as usize
}

/// The agent's proxied connections between the manager's answer and the
/// backend's SYN-ACK (`pending`, keyed by the client flow: client → VIP),
/// the flows proved and not yet spliced with the early data held for them
/// (`proved`), and the sequence adjusts the agent installed (`spliced`,
/// kept across the manager's refreshes, which do not carry them). Locked by
/// the control thread and by a worker: for a backend SYN-ACK while
/// something is pending, and for a client packet of a proved flow (once
/// per early packet). A packet of any other flow takes no lock: the
/// counted filter over the proved keys (`filter`) answers first.
pub struct SpliceTable {
    pending: parking_lot::Mutex<std::collections::HashMap<affinity_api::AffinityKey, Pending>>,
    /// Entries of `pending`: a worker checks this before taking the lock.
    pending_n: std::sync::atomic::AtomicUsize,
    spliced: parking_lot::Mutex<std::collections::HashMap<affinity_api::AffinityKey, Installed>>,
    /// Client flows whose cookie ACK proved, not yet spliced, with when
    /// they are forgotten (ns) and their held early data: from the proof
    /// on, the flow's fixed affinity can appear (the manager's answer)
    /// before the control path has made it pending, and the client's
    /// request must not slip through it to the backend in that gap.
    proved: parking_lot::Mutex<Proved>,
    /// Entries of `proved`: checked before taking the lock.
    proved_n: std::sync::atomic::AtomicUsize,
    /// Per [`filter_slot`], how many keys of `proved` fall there (changed
    /// under the `proved` lock, read without it): a zero slot means the
    /// flow is not proved.
    filter: Box<[std::sync::atomic::AtomicU32]>,
    /// Held packets dropped by a splice that came too late, for the next
    /// [`SpliceTable::expire`] to report.
    late_dropped: std::sync::atomic::AtomicU64,
    /// Spliced flows whose client sent a bare SYN again (the 5-tuple
    /// reused while the old connection's fixed affinities are installed),
    /// answered with a new cookie, with when they are forgotten (ns):
    /// only their ACKs are checked for a cookie.
    reopening: parking_lot::Mutex<std::collections::HashMap<affinity_api::AffinityKey, u64>>,
    /// Entries of `reopening`, and its counted filter (as `filter`).
    reopening_n: std::sync::atomic::AtomicUsize,
    reopening_filter: Box<[std::sync::atomic::AtomicU32]>,
    /// Connections given up after the backend refused them (client flow →
    /// the cookie ISN and when it is forgotten, ns): a late answer to a
    /// repeated proof of the same connection starts nothing. Taken only by
    /// the control thread and on a refusal.
    refused: parking_lot::Mutex<std::collections::HashMap<affinity_api::AffinityKey, (u32, u64)>>,
    /// Fixed affinities a splice reported since the last periodic activity
    /// round, whose splice report that round sends once more (a lost
    /// datagram must not lose the adjusts for good; `Agent::activity_reports`).
    recent: parking_lot::Mutex<Vec<affinity_api::AffinityKey>>,
}

fn new_filter() -> Box<[std::sync::atomic::AtomicU32]> {
    (0..FILTER_SLOTS)
        .map(|_| std::sync::atomic::AtomicU32::new(0))
        .collect()
}

/// Counts `key` in or out of `filter` (a counted filter of [`FILTER_SLOTS`]).
fn filter_count(
    filter: &[std::sync::atomic::AtomicU32],
    key: &affinity_api::AffinityKey,
    up: bool,
) {
    let slot = &filter[filter_slot(key)];
    if up {
        slot.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    } else {
        slot.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Default for SpliceTable {
    fn default() -> Self {
        SpliceTable {
            pending: Default::default(),
            pending_n: Default::default(),
            spliced: Default::default(),
            proved: Default::default(),
            proved_n: Default::default(),
            filter: new_filter(),
            late_dropped: Default::default(),
            reopening: Default::default(),
            reopening_n: Default::default(),
            reopening_filter: new_filter(),
            refused: Default::default(),
            recent: Default::default(),
        }
    }
}

impl std::fmt::Debug for SpliceTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpliceTable")
            .field("pending", &self.pending_n)
            .field("proved", &self.proved_n)
            .finish_non_exhaustive()
    }
}

impl SpliceTable {
    fn filter_add(&self, key: &affinity_api::AffinityKey, n: i32) {
        filter_count(&self.filter, key, n > 0);
    }

    /// Notes spliced flow `key` as reopening (its client sent a bare SYN
    /// again and was answered with a cookie) until `deadline_ns` (at most
    /// `cap` flows; expired ones are pruned first; past that it is not
    /// noted, and the flow's cookie ACK goes on as before).
    pub fn note_reopening(
        &self,
        key: affinity_api::AffinityKey,
        deadline_ns: u64,
        now_ns: u64,
        cap: usize,
    ) {
        let mut m = self.reopening.lock();
        if m.len() >= cap {
            m.retain(|k, d| {
                let live = *d > now_ns;
                if !live {
                    filter_count(&self.reopening_filter, k, false);
                }
                live
            });
        }
        if (m.len() < cap || m.contains_key(&key)) && m.insert(key, deadline_ns).is_none() {
            filter_count(&self.reopening_filter, &key, true);
        }
        self.reopening_n
            .store(m.len(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether spliced flow `key` may be reopening: no lock, a few loads
    /// (false for nearly every packet of an established flow).
    #[inline]
    pub fn may_reopen(&self, key: &affinity_api::AffinityKey) -> bool {
        self.reopening_n.load(std::sync::atomic::Ordering::Relaxed) != 0
            && self.reopening_filter[filter_slot(key)].load(std::sync::atomic::Ordering::Relaxed)
                != 0
    }

    /// Whether spliced flow `key` is reopening at `now_ns` (takes the lock:
    /// callers check [`Self::may_reopen`] first).
    pub fn is_reopening(&self, key: &affinity_api::AffinityKey, now_ns: u64) -> bool {
        self.reopening.lock().get(key).is_some_and(|d| *d > now_ns)
    }

    /// Forgets reopening flow `key` (its cookie ACK proved).
    pub fn end_reopening(&self, key: &affinity_api::AffinityKey) {
        let mut m = self.reopening.lock();
        if m.remove(key).is_some() {
            filter_count(&self.reopening_filter, key, false);
        }
        self.reopening_n
            .store(m.len(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Removes the proved flows `drop` selects from `m` (filter kept in
    /// step); the held packets they had.
    fn prune(
        &self,
        m: &mut Proved,
        mut drop: impl FnMut(&affinity_api::AffinityKey, &Proof) -> bool,
    ) -> u64 {
        let mut dropped = 0u64;
        let mut bytes = 0usize;
        m.flows.retain(|k, p| {
            if drop(k, p) {
                dropped += p.held.len() as u64;
                bytes += p.bytes;
                self.filter_add(k, -1);
                false
            } else {
                true
            }
        });
        m.held_bytes -= bytes;
        self.proved_n
            .store(m.flows.len(), std::sync::atomic::Ordering::Relaxed);
        dropped
    }

    /// Notes client flow `key` as proved, and punted as such at `now_ns`,
    /// until `deadline_ns` (at most `cap` flows; expired ones are pruned
    /// first; past that it is not noted). A flow noted again keeps what it
    /// holds.
    pub fn note_proved(
        &self,
        key: affinity_api::AffinityKey,
        deadline_ns: u64,
        now_ns: u64,
        cap: usize,
    ) {
        let mut m = self.proved.lock();
        self.note_locked(&mut m, key, deadline_ns, now_ns, cap);
    }

    /// [`Self::note_proved`] under the lock.
    fn note_locked(
        &self,
        m: &mut Proved,
        key: affinity_api::AffinityKey,
        deadline_ns: u64,
        now_ns: u64,
        cap: usize,
    ) {
        if m.flows.len() >= cap {
            let dropped = self.prune(m, |_, p| p.deadline_ns <= now_ns);
            self.late_dropped
                .fetch_add(dropped, std::sync::atomic::Ordering::Relaxed);
        }
        if let Some(p) = m.flows.get_mut(&key) {
            p.deadline_ns = deadline_ns;
            p.punted_ns = Some(now_ns);
        } else if m.flows.len() < cap {
            m.flows.insert(
                key,
                Proof {
                    deadline_ns,
                    punted_ns: Some(now_ns),
                    answered: false,
                    held: Vec::new(),
                    bytes: 0,
                },
            );
            self.filter_add(&key, 1);
        }
        self.proved_n
            .store(m.flows.len(), std::sync::atomic::Ordering::Relaxed);
    }

    /// A packet of client flow `key` whose cookie is valid, at `now_ns`
    /// (`pkt`: the IPv4 packet, client → VIP; `l4_partial` as for
    /// [`Self::hold_early`]): decides, under one lock, whether it proves
    /// the connection (noted as proved until `deadline_ns`, at most `cap`
    /// flows, as [`Self::note_proved`]) or is early data of a connection
    /// proved already. So a connection is punted as a proof once, however
    /// its ACK and request come (one batch, two batches, two workers), and
    /// again only after [`REPROVE_NS`] without the manager's answer (a lost
    /// punt or answer: the client's retransmission must still get through;
    /// see [`Proving`]).
    pub fn prove(
        &self,
        key: affinity_api::AffinityKey,
        pkt: &[u8],
        l4_partial: bool,
        (now_ns, deadline_ns, cap): (u64, u64, usize),
    ) -> Proving {
        let mut m = self.proved.lock();
        // None: not proved (or expired); Some(recent): proved, and punted
        // as such within the reproof time.
        let recent = m
            .flows
            .get(&key)
            .filter(|p| p.deadline_ns > now_ns)
            .map(|p| !Self::due(p, now_ns));
        match recent {
            Some(true) => Proving::Early(Self::hold_locked(&mut m, &key, pkt, l4_partial, now_ns)),
            Some(false) => {
                self.note_locked(&mut m, key, deadline_ns, now_ns, cap);
                Proving::Again
            }
            None => {
                // An expired entry goes with its held packets.
                if let Some(old) = m.flows.remove(&key) {
                    self.filter_add(&key, -1);
                    m.held_bytes -= old.bytes;
                    self.late_dropped
                        .fetch_add(old.held.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
                self.note_locked(&mut m, key, deadline_ns, now_ns, cap);
                Proving::First
            }
        }
    }

    /// Whether proof `p` is due to be punted again at `now_ns`: not
    /// answered, and not punted within [`REPROVE_NS`].
    fn due(p: &Proof, now_ns: u64) -> bool {
        !p.answered
            && p.punted_ns
                .is_none_or(|t| now_ns.saturating_sub(t) >= REPROVE_NS)
    }

    /// Whether client flow `key` is proved, live and due to be proved
    /// again at `now_ns` (see [`Self::prove`]). No lock while its filter
    /// slot is empty.
    #[inline]
    pub fn reprove_due(&self, key: &affinity_api::AffinityKey, now_ns: u64) -> bool {
        self.maybe_proved(key)
            && self
                .proved
                .lock()
                .flows
                .get(key)
                .is_some_and(|p| p.deadline_ns > now_ns && Self::due(p, now_ns))
    }

    /// Whether client flow `key` may be proved: no lock, a few loads (false
    /// for nearly every packet of any other flow).
    #[inline]
    pub fn may_be_proved(&self, key: &affinity_api::AffinityKey) -> bool {
        self.maybe_proved(key)
    }

    /// The manager answered client flow `key`'s proof: it is not proved
    /// again (its packets are early data until the splice, however long
    /// the backend takes).
    pub fn proof_answered(&self, key: &affinity_api::AffinityKey) {
        if !self.maybe_proved(key) {
            return;
        }
        if let Some(p) = self.proved.lock().flows.get_mut(key) {
            p.answered = true;
        }
    }

    /// Proof of client flow `key` did not leave the agent (its punt was
    /// dropped: admission, no room): the flow's next packet with the cookie
    /// proves it again at once instead of being held behind a proof the
    /// manager never gets.
    pub fn proof_not_sent(&self, key: &affinity_api::AffinityKey) {
        if !self.maybe_proved(key) {
            return;
        }
        if let Some(p) = self.proved.lock().flows.get_mut(key) {
            p.punted_ns = None;
        }
    }

    /// Remembers that the backend refused client flow `key`'s connection
    /// (cookie ISN `cookie_isn`) at `now_ns`, for [`REFUSED_NS`] (at most
    /// `cap` connections; expired ones pruned first; past that not
    /// remembered).
    pub fn note_refused(
        &self,
        key: affinity_api::AffinityKey,
        cookie_isn: u32,
        now_ns: u64,
        cap: usize,
    ) {
        let mut m = self.refused.lock();
        if m.len() >= cap {
            m.retain(|_, (_, d)| *d > now_ns);
        }
        if m.len() < cap || m.contains_key(&key) {
            m.insert(key, (cookie_isn, now_ns.saturating_add(REFUSED_NS)));
        }
    }

    /// Whether the connection of client flow `key` with cookie ISN
    /// `cookie_isn` was refused by its backend and given up (within
    /// [`REFUSED_NS`] of `now_ns`). A new connection on the 4-tuple has
    /// another cookie.
    pub fn was_refused(
        &self,
        key: &affinity_api::AffinityKey,
        cookie_isn: u32,
        now_ns: u64,
    ) -> bool {
        self.refused
            .lock()
            .get(key)
            .is_some_and(|(c, d)| *c == cookie_isn && *d > now_ns)
    }

    /// Forgets the proved, pending and reopening flows past their deadline
    /// at `now_ns` (a manager that never answered, a backend that never
    /// did, a client that never proved its new SYN),
    /// so workers stop taking the lock for them (`Agent::tick`). Returns
    /// the held early-data packets dropped with them (and with splices that
    /// came too late since the last call), for `syn-proxy-early-data-expired`.
    pub fn expire(&self, now_ns: u64) -> u64 {
        let mut m = self.pending.lock();
        m.retain(|_, v| v.deadline_ns > now_ns);
        self.pending_n
            .store(m.len(), std::sync::atomic::Ordering::Relaxed);
        drop(m);
        let mut m = self.proved.lock();
        let dropped = self.prune(&mut m, |_, p| p.deadline_ns <= now_ns);
        drop(m);
        let mut m = self.reopening.lock();
        m.retain(|k, d| {
            let live = *d > now_ns;
            if !live {
                filter_count(&self.reopening_filter, k, false);
            }
            live
        });
        self.reopening_n
            .store(m.len(), std::sync::atomic::Ordering::Relaxed);
        drop(m);
        self.refused.lock().retain(|_, (_, d)| *d > now_ns);
        dropped
            + self
                .late_dropped
                .swap(0, std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether client flow `key` proved and is not spliced yet at `now_ns`:
    /// its packets are held back from the backend. No lock while the flow's
    /// filter slot is empty (nearly always, for any other flow).
    #[inline]
    pub fn holds_back(&self, key: &affinity_api::AffinityKey, now_ns: u64) -> bool {
        self.maybe_proved(key)
            && self
                .proved
                .lock()
                .flows
                .get(key)
                .is_some_and(|p| p.deadline_ns > now_ns)
    }

    /// Whether `key` may be proved: no lock, a few loads.
    #[inline]
    fn maybe_proved(&self, key: &affinity_api::AffinityKey) -> bool {
        self.proved_n.load(std::sync::atomic::Ordering::Relaxed) != 0
            && self.filter[filter_slot(key)].load(std::sync::atomic::Ordering::Relaxed) != 0
    }

    /// A client packet `pkt` (IPv4, client → VIP, before any rewrite) of
    /// flow `key` at `now_ns`: when the flow is held back
    /// ([`Self::holds_back`]), a copy is kept for the splice within
    /// [`EARLY_DATA_PACKETS`] and [`EARLY_DATA_BYTES`] per connection and
    /// [`EARLY_DATA_TOTAL_BYTES`] agent-wide. `l4_partial`: its TCP
    /// checksum holds only the pseudo-header sum (offload); the copy's is
    /// computed in full, since it leaves later as an ordinary packet. No
    /// lock while the flow's filter slot is empty.
    #[inline]
    pub fn hold_early(
        &self,
        key: &affinity_api::AffinityKey,
        pkt: &[u8],
        l4_partial: bool,
        now_ns: u64,
    ) -> Early {
        if !self.maybe_proved(key) {
            return Early::Pass;
        }
        self.hold_early_locked(key, pkt, l4_partial, now_ns)
    }

    #[cold]
    #[inline(never)]
    fn hold_early_locked(
        &self,
        key: &affinity_api::AffinityKey,
        pkt: &[u8],
        l4_partial: bool,
        now_ns: u64,
    ) -> Early {
        Self::hold_locked(&mut self.proved.lock(), key, pkt, l4_partial, now_ns)
    }

    /// [`Self::hold_early`] under the lock.
    fn hold_locked(
        m: &mut Proved,
        key: &affinity_api::AffinityKey,
        pkt: &[u8],
        l4_partial: bool,
        now_ns: u64,
    ) -> Early {
        let total = m.held_bytes;
        let Some(p) = m.flows.get_mut(key).filter(|p| p.deadline_ns > now_ns) else {
            return Early::Pass;
        };
        let n = pkt.len();
        if p.held.len() >= EARLY_DATA_PACKETS
            || p.bytes + n > EARLY_DATA_BYTES
            || total + n > EARLY_DATA_TOTAL_BYTES
        {
            return Early::Full;
        }
        let mut copy = pkt.to_vec();
        if l4_partial {
            checksum::complete_l4(&mut copy);
        }
        p.held.push(copy);
        p.bytes += n;
        m.held_bytes += n;
        Early::Held
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

    /// Whether nothing is pending, proved or reopening (no lock): then no
    /// packet needs the per-flow SYN-proxy checks (`hold_early`,
    /// `may_reopen`, a backend's SYN-ACK or RST). Loaded once per batch
    /// by the data path's common case.
    #[inline]
    pub fn idle(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.pending_n.load(Relaxed) == 0
            && self.proved_n.load(Relaxed) == 0
            && self.reopening_n.load(Relaxed) == 0
    }

    /// Whether a TCP segment of flow `key` with control bits `flags` on a
    /// fixed affinity may need a SYN-proxy check (no lock; false for
    /// nearly every packet while a few connections are in progress): a
    /// SYN-ACK or an RST while connections are pending (the splice, the
    /// refusal relay), or a flow whose filter slot says it may be proved
    /// or reopening (early data, a reused tuple's cookie ACK).
    #[inline]
    pub fn may_concern(&self, key: &affinity_api::AffinityKey, flags: u8) -> bool {
        use crate::wire::tcp::flags::{ACK, RST, SYN};
        (self.any_pending() && (flags & RST != 0 || flags & (SYN | ACK) == SYN | ACK))
            || self.maybe_proved(key)
            || self.may_reopen(key)
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

    /// The proxied state of client flow `key`'s pending connection, if
    /// live at `now_ns`, leaving it pending (the splice installs the
    /// adjusts before it takes the connection).
    pub fn pending_state(
        &self,
        key: &affinity_api::AffinityKey,
        now_ns: u64,
    ) -> Option<SynProxyState> {
        self.pending
            .lock()
            .get(key)
            .filter(|p| p.deadline_ns > now_ns)
            .map(|p| p.state)
    }

    /// Takes the pending connection of client flow `key`, if live, with the
    /// early data held for it (IPv4 packets as they came, in order); the
    /// flow is no longer held back. A pending connection past its time is
    /// dropped with its held packets (reported by the next
    /// [`Self::expire`]).
    pub fn take_pending(
        &self,
        key: &affinity_api::AffinityKey,
        now_ns: u64,
    ) -> Option<(Pending, Vec<Vec<u8>>)> {
        let mut m = self.pending.lock();
        let p = m.remove(key);
        self.pending_n
            .store(m.len(), std::sync::atomic::Ordering::Relaxed);
        let p = p?;
        let mut proved = self.proved.lock();
        let held = match proved.flows.remove(key) {
            Some(proof) => {
                self.filter_add(key, -1);
                proved.held_bytes -= proof.bytes;
                proof.held
            }
            None => Vec::new(),
        };
        self.proved_n
            .store(proved.flows.len(), std::sync::atomic::Ordering::Relaxed);
        drop(proved);
        drop(m);
        if p.deadline_ns <= now_ns {
            self.late_dropped
                .fetch_add(held.len() as u64, std::sync::atomic::Ordering::Relaxed);
            return None;
        }
        Some((p, held))
    }

    /// Early data held agent-wide: (packets, bytes).
    pub fn held(&self) -> (usize, usize) {
        let m = self.proved.lock();
        let n = m.flows.values().map(|p| p.held.len()).sum();
        (n, m.held_bytes)
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

    /// Notes fixed affinities `keys` as just reported by a splice (at most
    /// `cap` noted until the next [`Self::take_recent`]; past that they are
    /// reported once only).
    pub fn note_reported(&self, keys: &[affinity_api::AffinityKey], cap: usize) {
        let mut v = self.recent.lock();
        for k in keys {
            if v.len() < cap {
                v.push(*k);
            }
        }
    }

    /// The fixed affinities noted by [`Self::note_reported`] since the last
    /// call, in splice order.
    pub fn take_recent(&self) -> Vec<affinity_api::AffinityKey> {
        std::mem::take(&mut *self.recent.lock())
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
/// packets without timestamps are left alone. With `l4_partial` the
/// checksum field holds only the pseudo-header sum the NIC completes over
/// the whole segment (`crate::PacketBuf::l4_partial`): the options are not
/// in that sum, so the field is left as it is (as the sequence adjust
/// leaves it); updated, the NIC's checksum came out wrong.
pub fn apply_ts_adjust(pkt: &mut [u8], info: &wire::PacketInfo, t: TsAdjustKey, l4_partial: bool) {
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
    if l4_partial {
        return;
    }
    let c = get_u16(l4, tcp::field::CHECKSUM);
    let c = checksum::update(c, &old[..n], &l4[words]);
    set_u16(l4, tcp::field::CHECKSUM, c);
}

#[cfg(test)]
mod tests {
    use super::{filter_slot, SpliceTable, PENDING_NS};
    use std::net::Ipv4Addr;

    fn key(port: u16) -> affinity_api::AffinityKey {
        affinity_api::AffinityKey {
            protocol: crate::wire::TCP,
            src_addr: Ipv4Addr::new(198, 18, 0, 5),
            dst_addr: Ipv4Addr::new(203, 0, 113, 10),
            src_port: port,
            dst_port: 80,
        }
    }

    #[test]
    fn other_flows_take_no_lock_while_a_proof_is_pending() {
        let t = std::sync::Arc::new(SpliceTable::default());
        t.note_proved(key(1), PENDING_NS, 0, 8);
        let other = (2..100)
            .map(key)
            .find(|k| filter_slot(k) != filter_slot(&key(1)))
            .unwrap();
        // Hold the lock, as a control thread or another worker would: a
        // packet of another flow must not wait for it.
        let guard = t.proved.lock();
        let (tx, rx) = std::sync::mpsc::channel();
        let t2 = t.clone();
        std::thread::spawn(move || {
            let r = (
                t2.holds_back(&other, 1),
                t2.hold_early(&other, &[0; 40], false, 1),
            );
            let _ = tx.send(r);
        });
        let got = rx.recv_timeout(std::time::Duration::from_secs(5));
        drop(guard);
        assert_eq!(
            got,
            Ok((false, super::Early::Pass)),
            "answered without the lock"
        );
        assert!(t.holds_back(&key(1), 1));
    }
}
