//! The flow table: every flow the manager placed, found by either
//! direction's key, with its connection-tracking state (the states and
//! timeouts of nat44-ed / RFC 7857), the close (sticky) timers, and the
//! flows that ended but that an agent may still hold.
//!
//! The table is also the index of every affinity key this manager has
//! installed and that may still be live on an agent (forward and reverse
//! keys of open, closed and ended flows): a new flow whose keys are in it
//! is not installed (see `ManagerCore::on_interest`).

use super::services::Placement;
use crate::config::HalfOpenPolicy;
use affinity_api::{interest, AffinityKey, SeqAdjustAction, TsAdjustAction};
use affinity_forwarding_agent::wire;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddrV4;
use std::sync::Arc;

// foldhash: keys come from the network (client addresses and ports), so
// the hasher is seeded per process; SipHash cost a fifth of a flow setup.
type FlowMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

const SEC: u64 = 1_000_000_000;

/// Where a flow is in its life (RFC 7857 section 2 / nat44-ed's session
/// states). Which idle timeout applies follows from it: see
/// [`Timeouts::idle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowState {
    /// TCP: SYN seen, the handshake not yet seen complete both ways
    /// (transitory timeout; see `Flow::note_activity`).
    SynSeen,
    /// TCP: the handshake seen complete both ways, or adopted
    /// mid-connection (established timeout).
    Established,
    /// TCP: a FIN seen in one direction (transitory timeout).
    Closing,
    /// TCP: FINs both ways or an RST; deleted after the service's sticky
    /// time unless a new SYN reopens it.
    Closed,
    /// UDP or ICMP query: active until idle for its timeout.
    Active,
    /// Ended (idle, lifetime, backend gone, or deleted after close): TTL 0
    /// was sent, but an agent that missed it may hold the affinities until
    /// the last TTL given runs out, so the keys and the SNAT port stay
    /// reserved until then.
    Ended,
}

impl FlowState {
    /// Lower-case name for status output.
    pub fn name(self) -> &'static str {
        match self {
            FlowState::SynSeen => "syn-seen",
            FlowState::Established => "established",
            FlowState::Closing => "closing",
            FlowState::Closed => "closed",
            FlowState::Active => "active",
            FlowState::Ended => "ended",
        }
    }
}

/// Idle timeouts per state (s), from the `[manager]` section.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP SYN seen or one FIN seen (RFC 5382: ≥ 240 s).
    pub tcp_transitory: u32,
    /// TCP established (RFC 5382: ≥ 7440 s).
    pub tcp_established: u32,
    /// UDP (RFC 4787: ≥ 120 s, 300 s recommended).
    pub udp: u32,
    /// ICMP query (RFC 5508: 60 s).
    pub icmp: u32,
}

impl Timeouts {
    /// The idle timeout (ns) of a flow of `protocol` in `state`; `None`
    /// for states with their own timer (closed: sticky; ended: the TTL).
    pub fn idle(&self, protocol: u8, state: FlowState) -> Option<u64> {
        let s = match (protocol, state) {
            (_, FlowState::Closed | FlowState::Ended) => return None,
            (wire::TCP, FlowState::Established) => self.tcp_established,
            (wire::TCP, _) => self.tcp_transitory,
            (wire::UDP, _) => self.udp,
            _ => self.icmp,
        };
        Some(s as u64 * SEC)
    }
}

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
    /// Connection-tracking state.
    pub state: FlowState,
    fin_fwd: bool,
    fin_rev: bool,
    /// When both FINs or an RST were seen (ns, the core's clock).
    pub closed_at: Option<u64>,
    /// When a closed flow is due for deletion (ns).
    delete_at: Option<u64>,
    /// When the flow was placed or reopened (ns).
    pub created: u64,
    /// When the flow last carried packets as far as the manager knows
    /// (placement, a punt, a tracked copy, an activity report) (ns).
    pub last_active: u64,
    /// Until when an agent may hold its affinities (ns): the latest
    /// install or renewal plus the TTL it gave.
    pub held_until: u64,
    /// Packets the agents reported on the forward key (client → virtual
    /// address) since the flow was placed or reopened.
    pub packets_fwd: u64,
    /// Packets the agents reported on the reverse key (backend → client).
    pub packets_rev: u64,
    /// Bytes (IP length) reported on the forward key, like `packets_fwd`.
    pub bytes_fwd: u64,
    /// Bytes (IP length) reported on the reverse key.
    pub bytes_rev: u64,
    /// The handshake evidence per direction since the flow was placed or
    /// reopened, what [`Flow::note_activity`] promotes a flow in SYN seen by.
    handshake: HandshakeSeen,
    /// The adjusts a SYN-proxying agent installed on the forward affinity
    /// (client → virtual address) at its splice, from its splice report
    /// (api/PROTOCOL.md, "Splice reports"); `None` for a flow not proxied
    /// or not spliced yet. Every later install of the flow carries them.
    pub splice_fwd: Option<SpliceAdjust>,
    /// The same for the reverse affinity (backend → client).
    pub splice_rev: Option<SpliceAdjust>,
    /// The agent whose SYN-proxy proof (the client's cookie ACK) placed
    /// the connection, or last proved it again; `None` for a connection no
    /// proof placed. Only that agent answered the SYN, so only it splices,
    /// and only its splice reports are taken: a report for any other flow
    /// would put sequence adjusts on a connection that has none and break
    /// it (a forged report in open mode, `syn-proxy-splice-report-ignored`).
    pub proved_by: Option<SocketAddrV4>,
}

/// The adjusts the SYN proxy's splice installed on one fixed affinity: the
/// sequence adjust (segment 12: backend ISN vs cookie ISN) and, when both
/// ends use TCP timestamps, the timestamp adjust (segment 21).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpliceAdjust {
    /// Sequence and acknowledgment deltas and where they start.
    pub seq: SeqAdjustAction,
    /// The TSval (or, with ECHO, TSecr) offset, if any.
    pub ts: Option<TsAdjustAction>,
}

/// What activity reports said of a TCP flow's handshake, per direction:
/// marks from agents that track handshake-complete segments
/// (`affinity_api::activity::TRACKED` in the pair, or
/// `affinity_api::capability::HANDSHAKE_MARKS` in the agent's hello), and
/// packets from agents that do not (older agents: the count rule).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct HandshakeSeen {
    /// A tracking agent marked the forward affinity handshake-complete.
    fwd: bool,
    /// A tracking agent marked the reverse affinity handshake-complete.
    rev: bool,
    /// Forward packets reported by agents that do not track the mark.
    untracked_fwd: u64,
    /// Reverse packets reported by agents that do not track the mark.
    untracked_rev: u64,
    /// An activity report came for the flow and left it half-open (with
    /// the client's side of the handshake unseen, it is what a flood's flow
    /// looks like: the backend's SYN-ACKs, no handshake), which makes it
    /// evictable before [`HALF_OPEN_UNREPORTED_AGE_NS`] (see
    /// [`Flow::evictable`]).
    reported_half_open: bool,
}

impl HandshakeSeen {
    /// Whether both directions showed a completed handshake: each by a
    /// tracking agent's mark, or (untracked agents only) by the count rule
    /// (≥ 2 forward packets, the SYN and one more; ≥ 1 reverse).
    fn complete(&self) -> bool {
        self.client_done() && (self.rev || self.untracked_rev >= 1)
    }

    /// Whether the client's side of the handshake showed: its ACK marked
    /// the forward affinity (or, untracked, a second forward packet).
    fn client_done(&self) -> bool {
        self.fwd || self.untracked_fwd >= 2
    }
}

/// What one activity report pair says of the handshake of the affinity it
/// names (the `affinity_api::activity` flags, read with what the agent's
/// hello advertised).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// The agent does not mark handshakes (an agent that predates the
    /// marks, or one without per-flow counters): its packets count.
    Untracked,
    /// The agent marks handshakes; whether a handshake-complete segment
    /// (TCP ACK without SYN or RST) hit the affinity.
    Tracked(bool),
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
            state: if key.protocol == wire::TCP {
                FlowState::SynSeen
            } else {
                FlowState::Active
            },
            fin_fwd: false,
            fin_rev: false,
            closed_at: None,
            delete_at: None,
            created: now,
            last_active: now,
            held_until: now,
            packets_fwd: 0,
            packets_rev: 0,
            bytes_fwd: 0,
            bytes_rev: 0,
            handshake: HandshakeSeen::default(),
            splice_fwd: None,
            splice_rev: None,
            proved_by: None,
        }
    }

    /// Whether the manager knows the splice adjusts of both directions
    /// (a splice report came since the flow was placed or reopened).
    pub fn splice_known(&self) -> bool {
        self.splice_fwd.is_some() && self.splice_rev.is_some()
    }

    /// When the flow ends unless more packets come (ns): a closed flow's
    /// deletion after its sticky time, an ended flow's last TTL given
    /// (agents may hold it until then), else its last activity plus its
    /// state's idle timeout in `t`.
    pub fn expires_at(&self, t: &Timeouts) -> u64 {
        match self.state {
            FlowState::Closed => self.delete_at.unwrap_or(self.held_until),
            FlowState::Ended => self.held_until,
            s => t
                .idle(self.fwd.protocol, s)
                .map_or(self.held_until, |i| self.last_active.saturating_add(i)),
        }
    }

    /// Whether the flow is TCP (agents report its FIN/RST).
    pub fn is_tcp(&self) -> bool {
        self.fwd.protocol == wire::TCP
    }

    /// Whether it still carries traffic (not closed, not ended): what
    /// renewals keep installed.
    pub fn is_open(&self) -> bool {
        !matches!(self.state, FlowState::Closed | FlowState::Ended)
    }

    /// Starts the flow over at `now` on the same placement (a SYN on a
    /// closed 5-tuple, or a packet of an ended flow): `state` is the state
    /// to restart in, `from` the agent that saw it.
    pub(super) fn reopen(&mut self, now: u64, state: FlowState, from: SocketAddrV4) {
        self.state = state;
        self.fin_fwd = false;
        self.fin_rev = false;
        self.closed_at = None;
        self.delete_at = None;
        self.created = now;
        self.last_active = now;
        self.packets_fwd = 0;
        self.packets_rev = 0;
        self.bytes_fwd = 0;
        self.bytes_rev = 0;
        self.handshake = HandshakeSeen::default();
        // A new connection on the 5-tuple: a SYN-proxying agent splices it
        // anew and reports the new adjusts.
        self.splice_fwd = None;
        self.splice_rev = None;
        self.proved_by = None;
        if !self.agents.contains(&from) {
            self.agents.push(from);
        }
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
            if self.is_open() {
                self.state = FlowState::Closing;
            }
        }
        self.last_active = self.last_active.max(now);
        let closed = reason & interest::RST != 0 || (self.fin_fwd && self.fin_rev);
        if closed && self.closed_at.is_none() && self.state != FlowState::Ended {
            self.closed_at = Some(now);
            self.state = FlowState::Closed;
            return true;
        }
        false
    }

    /// Whether `evict-oldest` may end this half-open flow at `now` (ns):
    /// it is at least `min_age` old (a handshake may be under way before;
    /// [`crate::config::HALF_OPEN_MIN_AGE_NS`]), and either an activity
    /// report since it was placed left it half-open with no sign of the
    /// client's side of the handshake, or it is
    /// [`HALF_OPEN_UNREPORTED_AGE_NS`] old. Why not by age alone: a real
    /// connection is seen established only once its agents report its
    /// handshake marks (promptly, within about 200 ms, from agents of this
    /// release; at the next interval, 10 s by default, from older ones, or
    /// when a prompt report is lost), and a flood faster than
    /// `max_half_open_flows` per that delay would otherwise evict real
    /// connections, established but not yet reported, and break them. A
    /// client that completed its handshake to a backend that has sent
    /// nothing since its SYN-ACK (a server that waits for the client, an
    /// idle connection) is never evicted: it has left the half-open count
    /// (`half_open_entry`); a blind attacker's ACK that fakes that side
    /// draws the backend's RST, which ends the flow.
    pub(super) fn evictable(&self, now: u64, min_age: u64) -> bool {
        let age = now.saturating_sub(self.created);
        self.state == FlowState::SynSeen
            && age >= min_age
            && !self.handshake.client_done()
            && (self.handshake.reported_half_open || age >= HALF_OPEN_UNREPORTED_AGE_NS)
    }

    /// Notes an agent's activity report for one of the flow's keys:
    /// `packets` (and `bytes`, IP length) since its last report, and what
    /// the pair said of the handshake (`handshake`).
    ///
    /// A TCP flow in SYN seen is established once both directions showed
    /// a completed handshake: from agents that mark handshakes, a
    /// handshake-complete segment (ACK without SYN or RST, conntrack's
    /// notion) on the forward affinity (the client's ACK) and on the
    /// reverse one (the backend's ACK or data after its SYN-ACK); from
    /// agents that do not, packets both ways (≥ 2 forward, ≥ 1 reverse),
    /// each direction judged by the kind of agent that reported it. Counts
    /// alone are what a spoofed SYN sent twice plus the backend's SYN-ACK
    /// also give, and an established flow is neither bounded by
    /// `max_half_open_flows` nor ends before the established timeout; a
    /// blind attacker's ACK draws an RST from the backend, no mark. A
    /// connection whose server never sends a segment other than SYN-ACK or
    /// RST stays half-open until the transitory timeout (manager README).
    /// A flow in SYN seen stays idle for reverse packets alone: a backend
    /// retransmitting its SYN-ACK to a spoofed client keeps no half-open
    /// flow alive.
    pub(super) fn note_activity(
        &mut self,
        now: u64,
        is_fwd: bool,
        packets: u64,
        bytes: u64,
        handshake: Handshake,
    ) {
        if packets == 0 {
            return;
        }
        let h = &mut self.handshake;
        if is_fwd {
            self.packets_fwd = self.packets_fwd.saturating_add(packets);
            self.bytes_fwd = self.bytes_fwd.saturating_add(bytes);
            match handshake {
                Handshake::Untracked => h.untracked_fwd = h.untracked_fwd.saturating_add(packets),
                Handshake::Tracked(seen) => h.fwd |= seen,
            }
        } else {
            self.packets_rev = self.packets_rev.saturating_add(packets);
            self.bytes_rev = self.bytes_rev.saturating_add(bytes);
            match handshake {
                Handshake::Untracked => h.untracked_rev = h.untracked_rev.saturating_add(packets),
                Handshake::Tracked(seen) => h.rev |= seen,
            }
        }
        if self.state == FlowState::SynSeen && h.complete() {
            self.state = FlowState::Established;
        }
        h.reported_half_open |= self.state == FlowState::SynSeen;
        if is_fwd || self.state != FlowState::SynSeen {
            self.last_active = self.last_active.max(now);
        }
    }
}

/// The flows, by forward key, with the reverse-key index and the closed
/// flows waiting out their sticky time.
#[derive(Debug, Default)]
pub struct FlowTable {
    flows: FlowMap<AffinityKey, Flow>,
    rev: FlowMap<AffinityKey, AffinityKey>,
    /// (deletion time in ns, forward key), in the order flows closed; an
    /// entry whose flow reopened (or closed again later) is skipped.
    closing: VecDeque<(u64, AffinityKey)>,
    /// Flows in state [`FlowState::Ended`] (kept until `held_until`).
    ended: usize,
    /// Keys other managers installed, from the agents' activity reports,
    /// with when the agent that reported them stops holding them (ns).
    foreign: FlowMap<AffinityKey, u64>,
    /// Half-open flows by service name, for `max_half_open_flows` and
    /// `half_open_policy`.
    half_open: FlowMap<Arc<str>, HalfOpen>,
}

/// Shortest time (ns) between two prunings of one service's half-open
/// queue under `half_open_policy = "refuse"`: at the limit, a flood's SYNs
/// are refused at the cost of a length check, and the queue (up to the
/// limit, e.g. 100 000 keys) is walked at most ten times a second.
pub const HALF_OPEN_PRUNE_INTERVAL: u64 = SEC / 10;

/// Under `evict-oldest`, a SYN at the limit compacts the queue (drops the
/// entries of flows that moved on) only once this fraction of its length
/// (1/4) of such SYNs came since the last compaction: each compaction walks
/// the queue once, so its cost is at most 4 look-ups per SYN, amortised.
const HALF_OPEN_COMPACT_DIVISOR: usize = 4;

/// One service's flows placed on a SYN, in placement order (oldest first):
/// (`Flow::created` in ns, forward key). An entry stands for a half-open
/// flow while that flow is still in SYN seen with that creation time; one
/// whose flow moved on (established, closing, closed, ended, removed,
/// reopened) is dropped lazily: when it reaches the front, or when the
/// queue is compacted. So the queue's length over-counts the half-open
/// flows between compactions, never under-counts (the `closing` queue's
/// scheme: O(1) amortised per flow, no scan per SYN).
#[derive(Debug, Default)]
struct HalfOpen {
    order: VecDeque<(u64, AffinityKey)>,
    /// When the queue was last pruned under `refuse` (ns; 0 = never).
    pruned_at: u64,
    /// SYNs at the limit since the last compaction under `evict-oldest`.
    since_compaction: usize,
    /// SYNs refused at the limit (`half-open-limit-refused`, this service's
    /// share).
    refused: u64,
    /// Half-open flows evicted for a new one (`half-open-evicted`, this
    /// service's share).
    evicted: u64,
}

impl HalfOpen {
    /// Drops the entries of flows no longer half-open from the queue.
    fn compact(&mut self, flows: &FlowMap<AffinityKey, Flow>) {
        self.order.retain(|(c, k)| half_open_entry(flows, *c, k));
        self.since_compaction = 0;
    }
}

/// Whether queue entry (`created` ns, `fwd`) still stands for a half-open
/// flow: the flow is there, in SYN seen, was not placed anew since, and
/// no report showed the client's side of its handshake (a client whose
/// ACK marked the forward affinity has done its part, as conntrack's
/// ESTABLISHED on the third packet: it leaves the count and is never
/// evicted, and a blind attacker's forged ACK draws the backend's RST,
/// which ends the flow).
fn half_open_entry(flows: &FlowMap<AffinityKey, Flow>, created: u64, fwd: &AffinityKey) -> bool {
    flows.get(fwd).is_some_and(|f| {
        f.state == FlowState::SynSeen && f.created == created && !f.handshake.client_done()
    })
}

/// Age (ns) from which `evict-oldest` may end a half-open flow no
/// activity report has covered yet ([`Flow::evictable`]): 30 s, three of
/// the agents' default report intervals (10 s; `--activity-report-
/// interval-ms`, VPP `activity-report-interval-ms`): a flow that carried
/// any packet through an agent has been in a report by then, so one that
/// has not is a SYN nobody answered. Agents reporting less often than a
/// third of this make their real connections evictable before they are
/// seen established (manager README).
pub const HALF_OPEN_UNREPORTED_AGE_NS: u64 = 30 * SEC;

/// What a new half-open flow of a service may do (see
/// [`FlowTable::half_open_admit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HalfOpenAdmit {
    /// Below the limit (or no limit): place it.
    Room,
    /// At the limit: end this flow (the service's oldest half-open one,
    /// already out of the queue), then place the new one.
    Evict(AffinityKey),
    /// At the limit and nothing may be evicted: refuse the SYN.
    Refuse,
}

/// One service's half-open flows for `status` and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HalfOpenStats {
    /// Half-open flows now (flows placed on a SYN still in SYN seen).
    pub flows: usize,
    /// SYNs refused at the limit since start.
    pub refused: u64,
    /// Half-open flows evicted for a new one since start.
    pub evicted: u64,
}

impl FlowTable {
    /// Flows placed and not ended (open, or closed within their sticky
    /// time).
    pub fn len(&self) -> usize {
        self.flows.len() - self.ended
    }

    /// Ended flows whose keys stay reserved until no agent may hold them.
    pub fn ended_len(&self) -> usize {
        self.ended
    }

    /// No flows.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// A flow by its forward key (ended ones too).
    pub fn get(&self, fwd: &AffinityKey) -> Option<&Flow> {
        self.flows.get(fwd)
    }

    pub(super) fn get_mut(&mut self, fwd: &AffinityKey) -> Option<&mut Flow> {
        self.flows.get_mut(fwd)
    }

    /// The flows, in no order.
    pub fn iter(&self) -> impl Iterator<Item = &Flow> {
        self.flows.values()
    }

    /// The forward key of the flow `key` belongs to, in either direction.
    pub(super) fn lookup(&self, key: &AffinityKey) -> Option<AffinityKey> {
        if self.flows.contains_key(key) {
            Some(*key)
        } else {
            self.rev.get(key).copied()
        }
    }

    /// Whether `key` is a key of a flow this manager installed and an
    /// agent may still hold (either direction, ended flows included).
    /// Whether `key` is a key of one of this manager's flows (either
    /// direction, ended flows included).
    pub(super) fn own_key(&self, key: &AffinityKey) -> bool {
        self.flows.contains_key(key) || self.rev.contains_key(key)
    }

    /// Whether an agent reported `key` as another manager's live affinity.
    pub(super) fn is_foreign(&self, key: &AffinityKey) -> bool {
        self.foreign.contains_key(key)
    }

    /// Notes a key an agent reported that is not one of this manager's
    /// flows: in use until `until` (ns).
    pub(super) fn note_foreign(&mut self, key: AffinityKey, until: u64) {
        let e = self.foreign.entry(key).or_insert(until);
        *e = (*e).max(until);
    }

    /// Forgets foreign keys no agent holds any more at `now`.
    pub(super) fn expire_foreign(&mut self, now: u64) {
        self.foreign.retain(|_, until| *until > now);
    }

    /// Foreign keys toward `vip` (forward keys of another manager's flows
    /// of that virtual address and port) live at `now` (ns): another
    /// manager serves it.
    pub fn foreign_toward(&self, vip: SocketAddrV4, now: u64) -> usize {
        self.foreign
            .iter()
            .filter(|(k, until)| {
                **until > now && k.dst_addr == *vip.ip() && k.dst_port == vip.port()
            })
            .count()
    }

    /// Foreign keys known (other managers' live affinities).
    pub fn foreign_len(&self) -> usize {
        self.foreign.len()
    }

    pub(super) fn insert(&mut self, flow: Flow) {
        self.rev.insert(flow.rev, flow.fwd);
        if let Some(old) = self.flows.insert(flow.fwd, flow) {
            if old.state == FlowState::Ended {
                self.ended -= 1;
            }
        }
    }

    /// Removes a flow and its reverse index entry.
    pub(super) fn remove(&mut self, fwd: &AffinityKey) -> Option<Flow> {
        let f = self.flows.remove(fwd)?;
        if self.rev.get(&f.rev) == Some(fwd) {
            self.rev.remove(&f.rev);
        }
        if f.state == FlowState::Ended {
            self.ended -= 1;
        }
        Some(f)
    }

    /// Marks flow `fwd` ended at `now` (its TTL 0 is being sent); it stays
    /// in the table, keys reserved, until `held_until`. The flow as it
    /// was, when it was not ended already.
    pub(super) fn end(&mut self, fwd: &AffinityKey) -> Option<Flow> {
        let f = self.flows.get_mut(fwd)?;
        if f.state == FlowState::Ended {
            return None;
        }
        let was = f.clone();
        f.state = FlowState::Ended;
        f.delete_at = None;
        self.ended += 1;
        Some(was)
    }

    /// Brings an ended flow back (a packet for it arrived while its keys
    /// were still reserved): same backend, same SNAT port.
    pub(super) fn revive(
        &mut self,
        fwd: &AffinityKey,
        now: u64,
        state: FlowState,
        from: SocketAddrV4,
    ) {
        if let Some(f) = self.flows.get_mut(fwd) {
            if f.state == FlowState::Ended {
                self.ended -= 1;
            }
            f.reopen(now, state, from);
        }
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
        let at = now + sticky_ms * 1_000_000;
        f.delete_at = Some(at);
        self.closing.push_back((at, fwd));
        true
    }

    /// When the oldest closed flow is due for deletion (ns). The queue is in
    /// closing order, so with different sticky times per service a later
    /// deadline can stand before an earlier one; deletion waits for the
    /// front, and so does this.
    pub(super) fn next_deletion(&self) -> Option<u64> {
        self.closing.front().map(|(t, _)| *t)
    }

    /// The closed flows due at `now`, in closing order, each marked ended
    /// (as it was before). Entries of flows that reopened are dropped.
    pub(super) fn take_due(&mut self, now: u64) -> Vec<Flow> {
        let mut due = Vec::new();
        while self.closing.front().is_some_and(|(t, _)| *t <= now) {
            let Some((t, k)) = self.closing.pop_front() else {
                break;
            };
            if self.flows.get(&k).is_some_and(|f| f.delete_at == Some(t)) {
                due.extend(self.end(&k));
            }
        }
        due
    }

    /// The open flows idle past their state's timeout at `now`, or older
    /// than `lifetime` ns (0 = no limit): what is to end. Idleness counts
    /// only for flows whose agents all send activity reports (`reported`):
    /// without them the manager cannot tell an idle flow from a busy one.
    pub(super) fn idle(
        &self,
        now: u64,
        t: &Timeouts,
        lifetime: u64,
        reported: impl Fn(&Flow) -> bool,
    ) -> Vec<AffinityKey> {
        self.flows
            .iter()
            .filter(|(_, f)| {
                let idle = t
                    .idle(f.fwd.protocol, f.state)
                    .is_some_and(|to| now.saturating_sub(f.last_active) >= to)
                    && reported(f);
                let old = lifetime > 0 && f.is_open() && now.saturating_sub(f.created) > lifetime;
                idle || old
            })
            .map(|(k, _)| *k)
            .collect()
    }

    /// Removes the ended flows no agent may hold any more (`held_until`
    /// passed): their keys and SNAT ports are free again.
    pub(super) fn take_released(&mut self, now: u64) -> Vec<Flow> {
        let gone: Vec<AffinityKey> = self
            .flows
            .iter()
            .filter(|(_, f)| f.state == FlowState::Ended && f.held_until <= now)
            .map(|(k, _)| *k)
            .collect();
        gone.iter().filter_map(|k| self.remove(k)).collect()
    }

    /// The open flows placed before `now`, by agent holding them: what a
    /// renewal refreshes. Each is noted as held until `now + ttl` ns.
    pub(super) fn renew_by_agent(
        &mut self,
        now: u64,
        ttl: u64,
    ) -> HashMap<SocketAddrV4, Vec<AffinityKey>> {
        let mut per_agent: HashMap<SocketAddrV4, Vec<AffinityKey>> = HashMap::new();
        for (k, f) in &mut self.flows {
            if f.is_open() && now > f.created {
                f.held_until = f.held_until.max(now + ttl);
                for a in &f.agents {
                    per_agent.entry(*a).or_default().push(*k);
                }
            }
        }
        per_agent
    }

    /// Whether `service` may place one more half-open flow at `now` (ns)
    /// with at most `limit` of them (0 = no limit), and at what cost, by
    /// `policy`:
    /// - `refuse`: below the limit, yes; at it, the queue is pruned of
    ///   flows no longer in SYN seen (at most once per
    ///   [`HALF_OPEN_PRUNE_INTERVAL`]) and looked at again; still at it,
    ///   refused.
    /// - `evict-oldest`: entries of flows that moved on are dropped from
    ///   the front; below the limit, yes; at it, the queue is compacted when
    ///   enough SYNs came since the last time (see
    ///   [`HALF_OPEN_COMPACT_DIVISOR`]); still at it, the oldest half-open
    ///   flow is taken out of the queue for the caller to end
    ///   ([`HalfOpenAdmit::Evict`]), unless it may not be evicted yet
    ///   ([`Flow::evictable`] with `min_age` ns): refused.
    ///
    /// Refusals and evictions are counted in the service's
    /// [`HalfOpenStats`].
    pub(super) fn half_open_admit(
        &mut self,
        service: &str,
        now: u64,
        limit: usize,
        policy: HalfOpenPolicy,
        min_age: u64,
    ) -> HalfOpenAdmit {
        if limit == 0 {
            return HalfOpenAdmit::Room;
        }
        let Some(h) = self.half_open.get_mut(service) else {
            return HalfOpenAdmit::Room;
        };
        let flows = &self.flows;
        if policy == HalfOpenPolicy::Refuse {
            if h.order.len() < limit {
                return HalfOpenAdmit::Room;
            }
            if h.pruned_at == 0 || now.saturating_sub(h.pruned_at) >= HALF_OPEN_PRUNE_INTERVAL {
                h.pruned_at = now.max(1);
                h.compact(flows);
                if h.order.len() < limit {
                    return HalfOpenAdmit::Room;
                }
            }
            h.refused += 1;
            return HalfOpenAdmit::Refuse;
        }
        while let Some((c, k)) = h.order.front() {
            if half_open_entry(flows, *c, k) {
                break;
            }
            h.order.pop_front();
        }
        if h.order.len() < limit {
            return HalfOpenAdmit::Room;
        }
        h.since_compaction += 1;
        if h.since_compaction > h.order.len() / HALF_OPEN_COMPACT_DIVISOR {
            h.compact(flows);
            if h.order.len() < limit {
                return HalfOpenAdmit::Room;
            }
        }
        // The front is a live half-open flow (dropped otherwise above, and
        // compaction keeps only those).
        match h.order.front() {
            Some(&(_, fwd)) if flows.get(&fwd).is_some_and(|f| f.evictable(now, min_age)) => {
                h.order.pop_front();
                h.evicted += 1;
                HalfOpenAdmit::Evict(fwd)
            }
            _ => {
                h.refused += 1;
                HalfOpenAdmit::Refuse
            }
        }
    }

    /// Notes flow `fwd` of `service`, just placed in SYN seen at `created`
    /// (ns, its `Flow::created`), as half-open: the newest of its queue.
    pub(super) fn note_half_open(&mut self, service: &Arc<str>, fwd: AffinityKey, created: u64) {
        self.half_open
            .entry(service.clone())
            .or_default()
            .order
            .push_back((created, fwd));
    }

    /// After a reload: forgets the half-open queues of services `keep`
    /// says are gone, and takes out of `service`'s queue (compacted first)
    /// its oldest half-open flows past `limit` when it is lower than
    /// before, counted as evicted: the flows for the caller to end. One
    /// walk of each queue, once per reload.
    pub(super) fn half_open_reconfigure(
        &mut self,
        keep: impl Fn(&str) -> bool,
        trim: impl Fn(&str) -> Option<usize>,
    ) -> Vec<AffinityKey> {
        self.half_open.retain(|name, _| keep(name));
        let mut out = Vec::new();
        for (name, h) in &mut self.half_open {
            let Some(limit) = trim(name) else {
                continue;
            };
            if limit == 0 || h.order.len() <= limit {
                continue;
            }
            h.compact(&self.flows);
            while h.order.len() > limit {
                let Some((_, k)) = h.order.pop_front() else {
                    break;
                };
                h.evicted += 1;
                out.push(k);
            }
        }
        out
    }

    /// `service`'s half-open flows now (counted exactly: one walk of its
    /// queue, for `status` and metrics), refusals and evictions.
    pub fn half_open_stats(&self, service: &str) -> HalfOpenStats {
        self.half_open
            .get(service)
            .map_or_else(HalfOpenStats::default, |h| HalfOpenStats {
                flows: h
                    .order
                    .iter()
                    .filter(|(c, k)| half_open_entry(&self.flows, *c, k))
                    .count(),
                refused: h.refused,
                evicted: h.evicted,
            })
    }

    /// Flows per state name, for `status`.
    pub fn by_state(&self) -> Vec<(&'static str, usize)> {
        let states = [
            FlowState::SynSeen,
            FlowState::Established,
            FlowState::Closing,
            FlowState::Closed,
            FlowState::Active,
            FlowState::Ended,
        ];
        states
            .iter()
            .map(|s| {
                (
                    s.name(),
                    self.flows.values().filter(|f| f.state == *s).count(),
                )
            })
            .collect()
    }
}
