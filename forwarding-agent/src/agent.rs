//! The forwarding agent: configuration, shared state, control messages and
//! introspection. Packet work is in [`crate::datapath`].

use crate::actions::{ActionSet, ActionTable};
use crate::counters::{Counter, LocalCounters, SharedCounters};
use crate::fixed_affinity::{FixedTable, FixedValue, Inserted};
use crate::wildcard_affinity::{Upsert, WildcardEntry, WildcardTable};
use affinity_api::*;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Agent settings (from `startup.conf`, the host agent's flags, or tests).
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub fixed_capacity: usize,
    pub action_capacity: usize,
    pub wildcard_capacity: usize,
    /// Held packets, all workers together.
    pub hold_limit: usize,
    pub hold_timeout_ms: u64,
    /// Per worker: first-fragment decisions kept for later fragments.
    pub fragment_cache: usize,
    /// Address and name this agent puts in identity info.
    pub agent_addr: Ipv4Addr,
    pub agent_name: String,
    /// Distinguishes this agent's interest data from others'.
    pub instance_id: u32,
    pub auth: AuthPolicy,
    /// Action segment types treated as unsupported (tests, capability limits).
    pub disabled_actions: Vec<u16>,
    /// Drop (instead of pass) packets whose headers are malformed.
    pub drop_malformed: bool,
    /// Keep per-flow packet/byte counters.
    pub per_flow_counters: bool,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            fixed_capacity: 1 << 20,
            action_capacity: 1 << 18,
            wildcard_capacity: 16384,
            hold_limit: 1024,
            hold_timeout_ms: 1000,
            fragment_cache: 4096,
            agent_addr: Ipv4Addr::UNSPECIFIED,
            agent_name: String::from("affinity-agent"),
            instance_id: 1,
            auth: AuthPolicy::open(),
            disabled_actions: Vec::new(),
            drop_malformed: false,
            per_flow_counters: true,
        }
    }
}

/// Actions this agent implements.
pub const SUPPORTED_ACTIONS: [u16; 5] = [
    seg::NAT_ACTION,
    seg::ADVERTISE_ACTION,
    seg::SEQ_ADJUST_ACTION,
    seg::INTEREST_CRITERIA_ACTION,
    seg::ACTION_LIST,
];

/// Converts the caller's monotonic nanoseconds to table time (deciseconds).
#[inline]
pub fn ds(now_ns: u64) -> u32 {
    (now_ns / 100_000_000).min(u32::MAX as u64) as u32
}

/// A manager the agent has heard from.
#[derive(Debug, Clone)]
pub struct ManagerInfo {
    pub address: Ipv4Addr,
    pub name: String,
    pub last_heard_ns: u64,
    pub messages: u64,
    pub replay: ReplayWindow,
}

/// The agent's interest data (opaque to managers, echoed back): who punted,
/// the hold token, and the rank of the punting wildcard for chaining.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AgentInterestData {
    pub instance_id: u32,
    pub hold_token: u32,
    pub search_first: bool,
    pub service_precedence: u16,
    pub wildcard_id: u32,
}

impl AgentInterestData {
    pub const LEN: usize = crate::wire::interest_data::LEN;
    pub fn encode(&self) -> [u8; Self::LEN] {
        use crate::wire::interest_data::field::{
            HOLD_TOKEN, INSTANCE_ID, SEARCH_FIRST, SERVICE_PRECEDENCE, WILDCARD_ID,
        };
        use crate::wire::{set_u16, set_u32};
        let mut b = [0u8; Self::LEN];
        set_u32(&mut b, INSTANCE_ID, self.instance_id);
        set_u32(&mut b, HOLD_TOKEN, self.hold_token);
        b[SEARCH_FIRST] = self.search_first as u8;
        set_u16(&mut b, SERVICE_PRECEDENCE, self.service_precedence);
        set_u32(&mut b, WILDCARD_ID, self.wildcard_id);
        b
    }
    pub fn decode(b: &[u8]) -> Option<Self> {
        use crate::wire::interest_data::field::{
            HOLD_TOKEN, INSTANCE_ID, SEARCH_FIRST, SERVICE_PRECEDENCE, WILDCARD_ID,
        };
        use crate::wire::{get_u16, get_u32};
        let b: &[u8; Self::LEN] = b.try_into().ok()?;
        Some(AgentInterestData {
            instance_id: get_u32(b, INSTANCE_ID),
            hold_token: get_u32(b, HOLD_TOKEN),
            search_first: b[SEARCH_FIRST] != 0,
            service_precedence: get_u16(b, SERVICE_PRECEDENCE),
            wildcard_id: get_u32(b, WILDCARD_ID),
        })
    }
    /// Chaining rank of the punting wildcard (see `WildcardEntry::rank`).
    pub fn rank(&self) -> (bool, u16) {
        (!self.search_first, u16::MAX - self.service_precedence)
    }
}

/// A packet the control plane hands back to the data path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnedPacket {
    pub packet: Vec<u8>,
    /// Wildcards at or above this rank must not match it (service chaining).
    pub rank_limit: Option<(bool, u16)>,
}

/// What handling one control message produced.
#[derive(Debug, Default)]
pub struct ControlOutput {
    /// Datagrams to send (denies), with their destination.
    pub replies: Vec<(SocketAddrV4, Vec<u8>)>,
    /// Packets to run through [`crate::Worker::process_returned`].
    pub returned: Vec<ReturnedPacket>,
}

pub(crate) struct HeldPacket {
    pub token: u32,
    pub packet: Vec<u8>,
    pub deadline_ns: u64,
    pub manager: SocketAddrV4,
    pub rank: (bool, u16),
}

pub(crate) struct ControlState {
    pub managers: Vec<ManagerInfo>,
    /// Fixed expiries: second → keys to check then.
    pub wheel: BTreeMap<u32, Vec<AffinityKey>>,
    pub counters: LocalCounters,
}

/// Per forward address statistics (information flag).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwardStats {
    pub packets: u64,
    pub bytes: u64,
}

/// The agent's shared state. `Send + Sync`: share it in an `Arc` between the
/// control thread and the workers.
pub struct Agent {
    pub config: AgentConfig,
    pub(crate) fixed: FixedTable,
    pub(crate) actions: ActionTable,
    pub(crate) wildcards: WildcardTable,
    pub(crate) control: Mutex<ControlState>,
    pub(crate) control_counters: SharedCounters,
    pub(crate) worker_counters: Mutex<Vec<Arc<SharedCounters>>>,
    /// Sums at the last `clear stats`, subtracted when shown (the threads'
    /// own counters only ever grow: no reset races a worker's publish).
    cleared: Mutex<[u64; crate::counters::N_COUNTERS]>,
    pub(crate) hold: Mutex<VecDeque<HeldPacket>>,
    pub(crate) next_token: AtomicU32,
    pub(crate) sequence: AtomicU64,
    pub(crate) forward_stats: Mutex<HashMap<Ipv4Addr, ForwardStats>>,
    /// Replaceable at run time (binary API, CLI); starts as `config.auth`.
    auth: parking_lot::RwLock<AuthPolicy>,
}

/// One row of `show affinity fixed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedRow {
    pub key: AffinityKey,
    pub actions: ActionSet,
    pub owner: Ipv4Addr,
    pub expires_in_ds: i64,
    pub packets: u64,
    pub bytes: u64,
}

/// One row of `show affinity wildcard`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WildcardRow {
    pub owner: Ipv4Addr,
    pub id: u32,
    pub key: AffinityKey,
    pub src_mask: Ipv4Addr,
    pub dst_mask: Ipv4Addr,
    pub search_first: bool,
    pub service_precedence: u16,
    pub backup_precedence: u16,
    pub actions: ActionSet,
    pub expires_in_ds: i64,
}

impl Agent {
    pub fn new(config: AgentConfig) -> Arc<Agent> {
        let fixed = FixedTable::new(config.fixed_capacity);
        Arc::new(Agent {
            actions: ActionTable::new(config.action_capacity + config.wildcard_capacity),
            wildcards: WildcardTable::new(config.wildcard_capacity),
            fixed,
            control: Mutex::new(ControlState {
                managers: Vec::new(),
                wheel: BTreeMap::new(),
                counters: LocalCounters::default(),
            }),
            control_counters: SharedCounters::default(),
            worker_counters: Mutex::new(Vec::new()),
            cleared: Mutex::new([0; crate::counters::N_COUNTERS]),
            hold: Mutex::new(VecDeque::new()),
            next_token: AtomicU32::new(1),
            sequence: AtomicU64::new(SequenceSource::from_system_clock().next()),
            forward_stats: Mutex::new(HashMap::new()),
            auth: parking_lot::RwLock::new(config.auth.clone()),
            config,
        })
    }

    pub(crate) fn next_sequence(&self) -> u64 {
        self.sequence.fetch_add(1, Relaxed)
    }

    pub(crate) fn manager_addr(&self, owner: u16) -> Ipv4Addr {
        self.control
            .lock()
            .managers
            .get(owner as usize)
            .map_or(Ipv4Addr::UNSPECIFIED, |m| m.address)
    }

    fn owner_index(st: &mut ControlState, addr: Ipv4Addr, name: &str, now_ns: u64) -> u16 {
        let i = match st.managers.iter().position(|m| m.address == addr) {
            Some(i) => i,
            None => {
                st.managers.push(ManagerInfo {
                    address: addr,
                    name: String::new(),
                    last_heard_ns: now_ns,
                    messages: 0,
                    replay: ReplayWindow::default(),
                });
                st.managers.len() - 1
            }
        };
        let m = &mut st.managers[i];
        if !name.is_empty() && m.name != name {
            m.name = name.to_string();
        }
        i.min(u16::MAX as usize) as u16
    }

    /// Handles the service messages of one datagram from `from` (one
    /// control thread at a time).
    pub fn handle_control(&self, now_ns: u64, from: SocketAddrV4, bytes: &[u8]) -> ControlOutput {
        let mut out = ControlOutput::default();
        // Usually one message; several back to back (a coalesced or
        // GSO-sent burst) are handled in order. Broken framing is handled
        // as an unparsable message: counted, never answered.
        for m in datagram_messages(bytes) {
            let one = self.handle_message(now_ns, from, m.unwrap_or_default());
            out.replies.extend(one.replies);
            out.returned.extend(one.returned);
        }
        out
    }

    fn handle_message(&self, now_ns: u64, from: SocketAddrV4, bytes: &[u8]) -> ControlOutput {
        let mut out = ControlOutput::default();
        let mut st = self.control.lock();
        st.counters.inc(Counter::CtlMessages);
        let msg = match ServiceMessage::parse(bytes) {
            Ok(m) => m,
            Err(e) => {
                st.counters.inc(Counter::CtlParseError);
                // Only an unknown required segment in an otherwise readable
                // message is worth a deny; garbage is just counted.
                if let (
                    ParseError::Segment {
                        seg_type,
                        kind: SegmentErrorKind::UnknownRequired,
                        ..
                    },
                    Ok(h),
                ) = (e, Header::parse(bytes))
                {
                    if self.auth.read().verify_unparsed_ok() {
                        let deny = DenyReason {
                            denied_type: seg_type & !REQUIRED_FLAG,
                            code: DenyReason::UNKNOWN_REQUIRED_SEGMENT,
                            denied_sequence: h.sequence,
                        };
                        out.replies.push((from, self.build_deny(deny, None, None)));
                        st.counters.inc(Counter::DenySent);
                    }
                }
                self.publish_control(&st);
                return out;
            }
        };
        let verified = self.auth.read().verify(&msg, now_ns / 1_000_000_000);
        if let Err(e) = verified {
            st.counters.inc(Counter::CtlAuthFail);
            let _ = e;
            self.publish_control(&st);
            return out;
        }
        let (owner_addr, name) = match msg.identity() {
            Some(i) if !i.address.is_unspecified() => (i.address, i.host_name),
            _ => (*from.ip(), ""),
        };
        let owner = Self::owner_index(&mut st, owner_addr, name, now_ns);
        let signed = msg.security().is_some();
        {
            let m = &mut st.managers[owner as usize];
            if signed && !m.replay.accept(msg.sequence()) {
                st.counters.inc(Counter::CtlReplay);
                self.publish_control(&st);
                return out;
            }
            let m = &mut st.managers[owner as usize];
            m.last_heard_ns = now_ns;
            m.messages += 1;
        }
        let now = ds(now_ns);
        match msg.msg_type() {
            MessageType::AffinityUpdateWildcard => {
                for e in msg.affinities() {
                    if let AffinityRef::Wildcard(w) = e.affinity {
                        self.apply_wildcard(
                            &mut st, &mut out, from, &msg, owner, &e, w, now, now_ns,
                        );
                    }
                }
            }
            MessageType::AffinityUpdateFixed => {
                for e in msg.affinities() {
                    if let AffinityRef::Fixed(f) = e.affinity {
                        self.apply_fixed(&mut st, &mut out, from, &msg, owner, &e, f, now, now_ns);
                    }
                }
                let data = msg
                    .fa_interest_data()
                    .and_then(AgentInterestData::decode)
                    .filter(|d| d.instance_id == self.config.instance_id);
                if let Some(d) = data {
                    if d.hold_token != 0 {
                        let mut hold = self.hold.lock();
                        while let Some(pos) = hold.iter().position(|h| h.token == d.hold_token) {
                            if let Some(h) = hold.remove(pos) {
                                st.counters.inc(Counter::HoldReleased);
                                out.returned.push(ReturnedPacket {
                                    packet: h.packet,
                                    rank_limit: Some(h.rank),
                                });
                            }
                        }
                    }
                }
                if let Some(p) = msg.ip_packet() {
                    out.returned.push(ReturnedPacket {
                        packet: p.to_vec(),
                        rank_limit: data.map(|d| d.rank()),
                    });
                }
            }
            MessageType::IpPacketOnly => {
                if let Some(p) = msg.ip_packet() {
                    let data = msg
                        .fa_interest_data()
                        .and_then(AgentInterestData::decode)
                        .filter(|d| d.instance_id == self.config.instance_id);
                    out.returned.push(ReturnedPacket {
                        packet: p.to_vec(),
                        rank_limit: data.map(|d| d.rank()),
                    });
                }
            }
            MessageType::Keepalive => {}
            _ => st.counters.inc(Counter::CtlUnexpected),
        }
        self.wildcards.commit();
        self.publish_control(&st);
        out
    }

    /// Checks the affinity's action list; the first unsupported required action.
    fn unsupported_action(&self, e: &AffinityEntry<'_>) -> Option<u16> {
        let list = e.action_list?;
        list.entries()
            .find(|&(t, required)| {
                required
                    && (!SUPPORTED_ACTIONS.contains(&t)
                        || self.config.disabled_actions.contains(&t))
            })
            .map(|(t, _)| t)
    }

    fn action_set(
        &self,
        e: &AffinityEntry<'_>,
        owner: u16,
        dispatch_flags: u8,
        info_flags: u8,
        forward: Ipv4Addr,
    ) -> ActionSet {
        let enabled = |t: u16| !self.config.disabled_actions.contains(&t);
        ActionSet {
            nat: e.nat.filter(|_| enabled(seg::NAT_ACTION)).map(Into::into),
            seq_adjust: e
                .seq_adjust
                .filter(|_| enabled(seg::SEQ_ADJUST_ACTION))
                .map(Into::into),
            interest: e
                .interest
                .filter(|_| enabled(seg::INTEREST_CRITERIA_ACTION))
                .map(Into::into),
            dispatch_flags,
            info_flags,
            forward_addr: forward.into(),
            affinity_id: e.identifier.map_or(0, |i| i.id),
            owner,
        }
    }

    /// Counts and queues an affinity update-deny naming `denied_type`.
    #[allow(clippy::too_many_arguments)]
    fn deny(
        &self,
        st: &mut ControlState,
        out: &mut ControlOutput,
        to: SocketAddrV4,
        msg: &ServiceMessage<'_>,
        denied_type: u16,
        code: u16,
        e: &AffinityEntry<'_>,
    ) {
        st.counters.inc(Counter::DenySent);
        let reason = DenyReason {
            denied_type,
            code,
            denied_sequence: msg.sequence(),
        };
        out.replies
            .push((to, self.build_deny(reason, e.identifier, Some(e.affinity))));
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_wildcard(
        &self,
        st: &mut ControlState,
        out: &mut ControlOutput,
        from: SocketAddrV4,
        msg: &ServiceMessage<'_>,
        owner: u16,
        e: &AffinityEntry<'_>,
        w: WildcardAffinity,
        now: u32,
        now_ns: u64,
    ) {
        let id = e.identifier.map_or(0, |i| i.id);
        if w.ttl == 0 {
            if let Some(old) = self.wildcards.remove(owner, id) {
                self.actions.release(old.action, now_ns);
                st.counters.inc(Counter::WildcardDelete);
            }
            return;
        }
        if let Some(t) = self.unsupported_action(e) {
            st.counters.inc(Counter::UnsupportedAction);
            if let Some(old) = self.wildcards.remove(owner, id) {
                self.actions.release(old.action, now_ns);
            }
            return self.deny(
                st,
                out,
                from,
                msg,
                t,
                DenyReason::UNSUPPORTED_REQUIRED_ACTION,
                e,
            );
        }
        let actions = self.action_set(e, owner, w.dispatch_flags, w.info_flags, w.forward_addr);
        let Some(action) = self.actions.acquire(&actions, now_ns) else {
            st.counters.inc(Counter::ActionFull);
            return self.deny(
                st,
                out,
                from,
                msg,
                seg::WILDCARD_AFFINITY,
                DenyReason::TABLE_FULL,
                e,
            );
        };
        let sp = e.service_precedence.unwrap_or_default();
        let entry = WildcardEntry {
            owner,
            id,
            key: w.key,
            src_mask: w.src_mask,
            dst_mask: w.dst_mask,
            search_first: sp.search_first,
            service_precedence: sp.value,
            backup_precedence: e.backup_precedence.map_or(0, |b| b.value),
            action,
            actions,
            advertise: e
                .advertise
                .filter(|_| {
                    !self
                        .config
                        .disabled_actions
                        .contains(&seg::ADVERTISE_ACTION)
                })
                .map(|a| (a.address, a.mask.unwrap_or(Ipv4Addr::BROADCAST))),
            expires_ds: AtomicU32::new(now.saturating_add(w.ttl.saturating_mul(10))),
            ttl: w.ttl,
        };
        match self.wildcards.upsert(entry) {
            Upsert::Refreshed => {
                self.actions.release(action, now_ns);
                st.counters.inc(Counter::WildcardRefresh);
            }
            Upsert::Changed(old) => {
                if let Some(old) = old {
                    self.actions.release(old.action, now_ns);
                }
                st.counters.inc(Counter::WildcardAdd);
            }
            Upsert::Full => {
                self.actions.release(action, now_ns);
                st.counters.inc(Counter::WildcardFull);
                self.deny(
                    st,
                    out,
                    from,
                    msg,
                    seg::WILDCARD_AFFINITY,
                    DenyReason::TABLE_FULL,
                    e,
                );
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_fixed(
        &self,
        st: &mut ControlState,
        out: &mut ControlOutput,
        from: SocketAddrV4,
        msg: &ServiceMessage<'_>,
        owner: u16,
        e: &AffinityEntry<'_>,
        f: FixedAffinity,
        now: u32,
        now_ns: u64,
    ) {
        if f.ttl == 0 {
            if let Some(old) = self.fixed.remove(&f.key) {
                self.actions.release(old.action, now_ns);
                st.counters.inc(Counter::FixedDelete);
            }
            return;
        }
        if let Some(t) = self.unsupported_action(e) {
            st.counters.inc(Counter::UnsupportedAction);
            return self.deny(
                st,
                out,
                from,
                msg,
                t,
                DenyReason::UNSUPPORTED_REQUIRED_ACTION,
                e,
            );
        }
        // Seed rule: a fixed affinity needs a live wildcard of its owner.
        self.wildcards.commit();
        let supported = self
            .wildcards
            .snapshot()
            .entries()
            .iter()
            .any(|w| w.owner == owner && w.is_live(now) && w.matches(&f.key, true));
        if !supported {
            st.counters.inc(Counter::FixedNoWildcard);
            return self.deny(
                st,
                out,
                from,
                msg,
                seg::FIXED_AFFINITY,
                DenyReason::NO_SUPPORTING_WILDCARD,
                e,
            );
        }
        let actions = self.action_set(e, owner, f.dispatch_flags, f.info_flags, f.forward_addr);
        let Some(action) = self.actions.acquire(&actions, now_ns) else {
            st.counters.inc(Counter::ActionFull);
            return self.deny(
                st,
                out,
                from,
                msg,
                seg::FIXED_AFFINITY,
                DenyReason::TABLE_FULL,
                e,
            );
        };
        let expires = now.saturating_add(f.ttl.saturating_mul(10));
        match self.fixed.insert(
            &f.key,
            FixedValue {
                action,
                expires_ds: expires,
            },
        ) {
            Ok(Inserted::New(_)) => {
                st.wheel.entry(expires / 10 + 1).or_default().push(f.key);
                st.counters.inc(Counter::FixedAdd);
            }
            Ok(Inserted::Replaced(_, old)) => {
                self.actions.release(old.action, now_ns);
                st.counters.inc(Counter::FixedRefresh);
            }
            Err(_) => {
                self.actions.release(action, now_ns);
                st.counters.inc(Counter::FixedFull);
                self.deny(
                    st,
                    out,
                    from,
                    msg,
                    seg::FIXED_AFFINITY,
                    DenyReason::TABLE_FULL,
                    e,
                );
            }
        }
    }

    /// Housekeeping (control thread, about every 100 ms): reclaims expired
    /// entries via the expiry wheel (never a full scan), and sends packets
    /// whose hold timed out to their manager. Returns datagrams to send.
    pub fn tick(&self, now_ns: u64) -> Vec<(SocketAddrV4, Vec<u8>)> {
        let now = ds(now_ns);
        let mut st = self.control.lock();
        let due: Vec<u32> = st.wheel.range(..=now / 10).map(|(k, _)| *k).collect();
        for sec in due {
            for key in st.wheel.remove(&sec).unwrap_or_default() {
                match self.fixed.lookup(&key) {
                    Some((v, _)) if v.expires_ds <= now => {
                        if let Some(old) = self.fixed.remove(&key) {
                            self.actions.release(old.action, now_ns);
                            st.counters.inc(Counter::FixedReclaimed);
                        }
                    }
                    Some((v, _)) => st.wheel.entry(v.expires_ds / 10 + 1).or_default().push(key),
                    None => {}
                }
            }
        }
        for old in self.wildcards.reclaim(now) {
            self.actions.release(old.action, now_ns);
            st.counters.inc(Counter::WildcardReclaimed);
        }
        let mut sends = Vec::new();
        let mut hold = self.hold.lock();
        while hold.front().is_some_and(|h| h.deadline_ns <= now_ns) {
            let Some(h) = hold.pop_front() else { break };
            st.counters.inc(Counter::HoldTimeout);
            let data = AgentInterestData {
                instance_id: self.config.instance_id,
                hold_token: 0,
                search_first: !h.rank.0,
                service_precedence: u16::MAX - h.rank.1,
                wildcard_id: 0,
            }
            .encode();
            let mut b = self.builder(MessageType::IpPacketOnly);
            b.push(Segment::FaInterestData(&data));
            b.push(Segment::IpPacket(&h.packet));
            if let Ok(bytes) = b.finish() {
                sends.push((h.manager, bytes));
            }
        }
        drop(hold);
        self.publish_control(&st);
        sends
    }

    pub(crate) fn builder(&self, t: MessageType) -> MessageBuilder {
        let seq = self.next_sequence();
        let auth = self.auth.read();
        let mut b = match auth.keys.signing_key() {
            Some(k) => MessageBuilder::signed(t, seq, k),
            None => MessageBuilder::new(t, seq),
        };
        b.push(Segment::IdentityInfo(IdentityInfo {
            address: self.config.agent_addr,
            host_name: &self.config.agent_name,
        }));
        b
    }

    /// An affinity update-deny.
    pub fn build_deny(
        &self,
        reason: DenyReason,
        id: Option<AffinityIdentifier>,
        affinity: Option<AffinityRef>,
    ) -> Vec<u8> {
        let mut b = self.builder(MessageType::AffinityUpdateDeny);
        b.push(Segment::DenyReason(reason));
        if let Some(id) = id {
            b.push(Segment::AffinityIdentifier(id));
        }
        match affinity {
            Some(AffinityRef::Wildcard(w)) => b.push(Segment::WildcardAffinity(w)),
            Some(AffinityRef::Fixed(f)) => b.push(Segment::FixedAffinity(f)),
            None => &mut b,
        };
        b.finish().unwrap_or_default()
    }

    /// An agent hello announcing capabilities.
    pub fn build_hello(&self) -> Vec<u8> {
        let actions = SUPPORTED_ACTIONS
            .iter()
            .filter(|t| !self.config.disabled_actions.contains(t))
            .fold(0u32, |m, &t| m | 1 << t);
        let mut b = self.builder(MessageType::AgentHello);
        b.push(Segment::Capabilities(Capabilities {
            actions,
            fixed_capacity: self.fixed.capacity() as u32,
            wildcard_capacity: self.config.wildcard_capacity as u32,
        }));
        b.finish().unwrap_or_default()
    }

    /// The authentication policy in force.
    pub fn auth(&self) -> parking_lot::RwLockReadGuard<'_, AuthPolicy> {
        self.auth.read()
    }

    /// Replaces the authentication policy (e.g. a new key from the API).
    pub fn set_auth(&self, policy: AuthPolicy) {
        *self.auth.write() = policy;
    }

    fn publish_control(&self, st: &ControlState) {
        self.control_counters.publish(&st.counters);
    }

    /// Installs a fixed affinity directly (the operator's local path: the
    /// binary API, static configuration, benchmarks), bypassing the
    /// manager-ownership rule. `actions.owner` should name a manager index
    /// or be 0.
    pub fn install_fixed_local(
        &self,
        now_ns: u64,
        key: AffinityKey,
        actions: &ActionSet,
        ttl_secs: u32,
    ) -> Result<(), Counter> {
        let mut st = self.control.lock();
        let action = self
            .actions
            .acquire(actions, now_ns)
            .ok_or(Counter::ActionFull)?;
        let expires = ds(now_ns).saturating_add(ttl_secs.saturating_mul(10));
        match self.fixed.insert(
            &key,
            FixedValue {
                action,
                expires_ds: expires,
            },
        ) {
            Ok(Inserted::New(_)) => {
                st.wheel.entry(expires / 10 + 1).or_default().push(key);
                st.counters.inc(Counter::FixedAdd);
                Ok(())
            }
            Ok(Inserted::Replaced(_, old)) => {
                self.actions.release(old.action, now_ns);
                Ok(())
            }
            Err(_) => {
                self.actions.release(action, now_ns);
                st.counters.inc(Counter::FixedFull);
                Err(Counter::FixedFull)
            }
        }
    }

    // ---- introspection -------------------------------------------------

    /// A counter summed over the control thread and all workers, since start.
    fn raw_counter(&self, workers: &[Arc<SharedCounters>], c: Counter) -> u64 {
        self.control_counters.get(c) + workers.iter().map(|w| w.get(c)).sum::<u64>()
    }

    /// Summed counters of the control thread and all workers, since the
    /// last [`Agent::clear_counters`].
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        let workers = self.worker_counters.lock();
        let cleared = self.cleared.lock();
        Counter::ALL
            .iter()
            .map(|&c| {
                let base = cleared.get(c as usize).copied().unwrap_or(0);
                (c.name(), self.raw_counter(&workers, c).saturating_sub(base))
            })
            .collect()
    }

    /// One counter, summed, since the last [`Agent::clear_counters`].
    pub fn counter(&self, c: Counter) -> u64 {
        let workers = self.worker_counters.lock();
        let base = self.cleared.lock().get(c as usize).copied().unwrap_or(0);
        self.raw_counter(&workers, c).saturating_sub(base)
    }

    /// `clear affinity stats`: counters and per forward address statistics
    /// start again from zero (per-flow counters stay with their flows).
    pub fn clear_counters(&self) {
        let workers = self.worker_counters.lock();
        let mut cleared = self.cleared.lock();
        for &c in Counter::ALL {
            if let Some(b) = cleared.get_mut(c as usize) {
                *b = self.raw_counter(&workers, c);
            }
        }
        self.forward_stats.lock().clear();
    }

    /// Fixed affinities matching `filter`, at most `limit`.
    pub fn fixed_entries(
        &self,
        now_ns: u64,
        limit: usize,
        filter: impl Fn(&AffinityKey) -> bool,
    ) -> Vec<FixedRow> {
        let now = ds(now_ns) as i64;
        let managers: Vec<Ipv4Addr> = self
            .control
            .lock()
            .managers
            .iter()
            .map(|m| m.address)
            .collect();
        let mut rows = Vec::new();
        self.fixed.for_each(|slot, key, v| {
            if filter(&key) && (v.expires_ds as i64) > now {
                let actions = self.actions.get(v.action);
                rows.push(FixedRow {
                    key,
                    owner: managers
                        .get(actions.owner as usize)
                        .copied()
                        .unwrap_or(Ipv4Addr::UNSPECIFIED),
                    actions,
                    expires_in_ds: v.expires_ds as i64 - now,
                    packets: self.fixed.counters(slot).0,
                    bytes: self.fixed.counters(slot).1,
                });
            }
            rows.len() < limit
        });
        rows
    }

    /// Live fixed affinities (entries past their TTL are not counted).
    pub fn fixed_count(&self, now_ns: u64) -> usize {
        let now = ds(now_ns);
        let mut n = 0;
        self.fixed.for_each(|_, _, v| {
            n += (v.expires_ds > now) as usize;
            true
        });
        n
    }

    pub fn fixed_capacity(&self) -> usize {
        self.fixed.capacity()
    }

    /// Installed wildcards in search order.
    pub fn wildcard_entries(&self, now_ns: u64) -> Vec<WildcardRow> {
        let now = ds(now_ns) as i64;
        let managers: Vec<Ipv4Addr> = self
            .control
            .lock()
            .managers
            .iter()
            .map(|m| m.address)
            .collect();
        self.wildcards
            .snapshot()
            .entries()
            .iter()
            .filter(|w| w.expires_ds.load(Relaxed) as i64 > now)
            .map(|w| WildcardRow {
                owner: managers
                    .get(w.owner as usize)
                    .copied()
                    .unwrap_or(Ipv4Addr::UNSPECIFIED),
                id: w.id,
                key: w.key,
                src_mask: w.src_mask,
                dst_mask: w.dst_mask,
                search_first: w.search_first,
                service_precedence: w.service_precedence,
                backup_precedence: w.backup_precedence,
                actions: w.actions,
                expires_in_ds: w.expires_ds.load(Relaxed) as i64 - now,
            })
            .collect()
    }

    /// Managers heard from.
    pub fn managers(&self) -> Vec<ManagerInfo> {
        self.control.lock().managers.clone()
    }

    /// Statistics per forward address (information flag).
    pub fn forward_stats(&self) -> Vec<(Ipv4Addr, ForwardStats)> {
        let mut v: Vec<_> = self
            .forward_stats
            .lock()
            .iter()
            .map(|(a, s)| (*a, *s))
            .collect();
        v.sort_by_key(|(a, _)| *a);
        v
    }

    /// Distinct action sets in use.
    pub fn action_sets_in_use(&self) -> usize {
        self.actions.in_use()
    }

    /// Packets waiting for their fixed affinity.
    pub fn held_packets(&self) -> usize {
        self.hold.lock().len()
    }
}

trait VerifyUnparsed {
    fn verify_unparsed_ok(&self) -> bool;
}

impl VerifyUnparsed for AuthPolicy {
    /// A message that did not parse cannot be authenticated; answer it only
    /// when authentication is off, so a forged packet cannot make us send.
    fn verify_unparsed_ok(&self) -> bool {
        !self.require
    }
}
