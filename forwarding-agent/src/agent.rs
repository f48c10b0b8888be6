//! The agent's shared state, [`Agent`]: the tables both sides use, the
//! control thread's private state, and what the control side publishes for
//! the workers.
//!
//! Who touches what: workers read the fixed and action tables (lock-free),
//! the wildcard set and `Published` (arc-swap snapshots loaded once per
//! batch), and write only their own counters and forward-statistics slots.
//! The control thread owns `ControlState` behind a mutex that no worker
//! takes. The one shared structure a worker may lock is the hold queue
//! ([`crate::hold`]), and only when it holds a packet.
//!
//! Where each part of the agent's work lives: control messages in
//! [`crate::control`], timers in [`crate::timers`], packets in
//! [`crate::datapath`], rows for `show` in [`crate::introspection`].

use crate::actions::ActionTable;
use crate::counters::{LocalCounters, SharedCounters, N_COUNTERS};
use crate::datapath::forward_stats::ForwardTally;
use crate::fixed_affinity::FixedTable;
use crate::hold::HoldQueue;
use crate::introspection::{ForwardStats, ManagerInfo};
use crate::wildcard_affinity::WildcardTable;
use affinity_api::{
    AffinityKey, AuthPolicy, IdentityInfo, Key, MessageBuilder, MessageType, Segment,
    SequenceSource,
};
use arc_swap::ArcSwap;
use parking_lot::{Mutex, RwLock, RwLockReadGuard};
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

pub use crate::config::AgentConfig;

/// Converts the caller's monotonic nanoseconds to table time (deciseconds).
#[inline]
pub fn ds(now_ns: u64) -> u32 {
    (now_ns / 100_000_000).min(u32::MAX as u64) as u32
}

/// What the control side publishes for the workers, replaced whole when it
/// changes (a manager first heard from, a new key): a worker loads it once
/// per batch and takes no lock for it.
#[derive(Debug, Default)]
pub(crate) struct Published {
    /// Manager address by owner index (punt destinations).
    pub managers: Vec<Ipv4Addr>,
    /// The key this agent signs with (in-place punts, out-of-line messages).
    pub signing_key: Option<Key>,
}

/// The control thread's own state (never locked by a worker).
pub(crate) struct ControlState {
    pub managers: Vec<ManagerInfo>,
    /// Activity reports: schedule, last totals, managers' ports.
    pub activity: crate::activity::ActivityState,
    /// Fixed expiries: second → keys to check then.
    pub wheel: BTreeMap<u32, Vec<AffinityKey>>,
    /// Earliest table time (deciseconds) a wildcard may become reclaimable
    /// (its expiry plus a second); `u32::MAX` = none installed. May be early
    /// (a refresh moved the expiry later), never late.
    pub next_wildcard_reclaim_ds: u32,
    pub counters: LocalCounters,
    /// When a refused control message was last logged (monotonic ns).
    pub last_auth_log_ns: Option<u64>,
    /// Inside [`Agent::handle_control_batch`]: the wildcard snapshot is
    /// published once at the end, not per message.
    pub batching: bool,
    /// Fixed affinities held per owner (manager index), for the per-owner
    /// quota ([`crate::OwnerQuota::fixed`]) and `show`.
    pub fixed_by_owner: HashMap<u16, usize>,
    /// Managers whose first wildcard update the warm-up still waits for
    /// ([`Agent::start_warm_up`]); empty once warm.
    pub warm_waiting: Vec<Ipv4Addr>,
}

/// The warm-up window's length by default (ms): the host agent's
/// `--warm-up-ms` and the VPP plugin's `warm-up-ms` ([`Agent::start_warm_up`]).
/// Five seconds: a manager's resynchronisation after the agent's hello
/// takes one round trip, the wildcard refresh it falls back to at most a
/// third of the wildcard TTL (3 s by default), with room for a lost one.
pub const DEFAULT_WARM_UP_MS: u64 = 5_000;

/// The agent's shared state. `Send + Sync`: share it in an `Arc` between the
/// control thread and the workers.
pub struct Agent {
    pub config: AgentConfig,
    pub(crate) fixed: FixedTable,
    pub(crate) actions: ActionTable,
    pub(crate) wildcards: WildcardTable,
    pub(crate) control: Mutex<ControlState>,
    pub(crate) control_counters: SharedCounters,
    /// Each worker's counters and forward-statistics slots (registered
    /// when the worker is made; read by introspection).
    pub(crate) worker_counters: Mutex<Vec<Arc<SharedCounters>>>,
    pub(crate) worker_forward: Mutex<Vec<Arc<ForwardTally>>>,
    /// Each worker's fixed slots newly marked handshake-complete, for the
    /// prompt activity reports (`Agent::prompt_reports`): a worker appends
    /// once per batch that marked any, the control thread takes them.
    pub(crate) worker_marks: Mutex<Vec<Arc<Mutex<Vec<u32>>>>>,
    /// Some worker queued newly marked slots since the control thread last
    /// took them (checked by `poll_timeout` without taking any lock).
    pub(crate) marks_pending: std::sync::atomic::AtomicBool,
    /// Sums at the last `clear stats`, subtracted when shown (the threads'
    /// own counters only ever grow: no reset races a worker's publish).
    pub(crate) cleared: Mutex<[u64; N_COUNTERS]>,
    pub(crate) forward_cleared: Mutex<HashMap<Ipv4Addr, ForwardStats>>,
    pub(crate) hold: HoldQueue,
    /// Manager interest data echoed in interest matches.
    pub(crate) manager_data: crate::interest_data::ManagerDataTable,
    pub(crate) sequence: AtomicU64,
    pub(crate) published: ArcSwap<Published>,
    /// Replaceable at run time (binary API, CLI); starts as `config.auth`.
    auth: RwLock<AuthPolicy>,
    /// Master secret of the SYN-proxy cookies (random per agent; each
    /// worker derives the rotating generation keys from it).
    pub(crate) syn_secret: [u8; 32],
    /// SYN-proxied connections between the manager's answer and the
    /// backend's SYN-ACK, and the sequence adjusts installed for them.
    pub(crate) splice: crate::synproxy::SpliceTable,
    /// End of the warm-up window (caller's monotonic ns); 0 = warm (the
    /// default: no warm-up). See [`Agent::start_warm_up`].
    pub(crate) warm_until_ns: AtomicU64,
    /// The managers named to [`Agent::start_warm_up`]: their own TCP
    /// connections (health checks) are not dropped by the warm-up. Read by
    /// a worker only inside the window.
    pub(crate) warm_exempt: ArcSwap<Vec<Ipv4Addr>>,
}

impl Agent {
    /// An agent with empty tables sized by `config` (the fixed table is
    /// allocated up front, sized for at most 50 % load: about
    /// `fixed_capacity` × 64 bytes, rounded up to a power of two).
    pub fn new(config: AgentConfig) -> Arc<Agent> {
        let fixed = FixedTable::new(config.fixed_capacity);
        let published = Published {
            managers: Vec::new(),
            signing_key: config.auth.keys.signing_key().cloned(),
        };
        Arc::new(Agent {
            actions: ActionTable::new(config.action_capacity + config.wildcard_capacity),
            wildcards: WildcardTable::new(config.wildcard_capacity),
            fixed,
            control: Mutex::new(ControlState {
                managers: Vec::new(),
                activity: Default::default(),
                wheel: BTreeMap::new(),
                next_wildcard_reclaim_ds: u32::MAX,
                counters: LocalCounters::default(),
                last_auth_log_ns: None,
                batching: false,
                fixed_by_owner: HashMap::new(),
                warm_waiting: Vec::new(),
            }),
            control_counters: SharedCounters::default(),
            worker_counters: Mutex::new(Vec::new()),
            worker_forward: Mutex::new(Vec::new()),
            worker_marks: Mutex::new(Vec::new()),
            marks_pending: std::sync::atomic::AtomicBool::new(false),
            cleared: Mutex::new([0; N_COUNTERS]),
            forward_cleared: Mutex::new(HashMap::new()),
            hold: HoldQueue::new(config.hold_limit),
            manager_data: Default::default(),
            sequence: AtomicU64::new(SequenceSource::from_system_clock().next()),
            published: ArcSwap::from_pointee(published),
            auth: RwLock::new(config.auth.clone()),
            syn_secret: crate::synproxy::random_secret(),
            splice: crate::synproxy::SpliceTable::default(),
            warm_until_ns: AtomicU64::new(0),
            warm_exempt: ArcSwap::from_pointee(Vec::new()),
            config,
        })
    }

    /// Where the warm-up stands at `now_ns`: `None` when warm (no window,
    /// or it ended), else the managers whose first wildcard update it
    /// still waits for and the nanoseconds left (see
    /// [`Agent::start_warm_up`]). For `show`.
    pub fn warm_up_state(&self, now_ns: u64) -> Option<(Vec<Ipv4Addr>, u64)> {
        let until = self.warm_until_ns.load(Relaxed);
        if now_ns >= until {
            return None;
        }
        let waiting = self.control.lock().warm_waiting.clone();
        Some((waiting, until - now_ns))
    }

    /// Starts the warm-up window of a freshly (re)started agent (issue 16,
    /// item 5): until each of `managers` has sent its first wildcard update
    /// (its resynchronisation after our hello: wildcards, then the fixed
    /// affinities of our live flows, in one burst) or `hold_ms`
    /// milliseconds after `now_ns` (the caller's monotonic nanoseconds),
    /// whichever comes first, a TCP segment other than a bare SYN that
    /// matches no fixed affinity and no wildcard is dropped
    /// (`drop-warm-up-no-affinity`) instead of routed.
    ///
    /// Why drop: before the wildcards arrive, a backend's reply of an
    /// established connection cannot be translated; routed as it is, it
    /// reaches the client from the backend's address and the client
    /// answers with a RST, ending the connection. Dropped, it is
    /// retransmitted by the backend and translated once the wildcards are
    /// in. Bare SYNs (new connections) and other protocols still pass: a
    /// new connection is not harmed by the window, and UDP or ICMP draw no
    /// reset. Segments from or to one of `managers` pass too: they are a
    /// manager's own connections (its health checks of the backends, which
    /// cross the agent on their way), never a client's, and a backup
    /// manager that is down would otherwise hold them up for the whole
    /// window. With `managers` empty or `hold_ms` 0 the agent is warm at once.
    pub fn start_warm_up(&self, now_ns: u64, hold_ms: u64, managers: &[Ipv4Addr]) {
        self.warm_exempt
            .store(std::sync::Arc::new(managers.to_vec()));
        let mut st = self.control.lock();
        if managers.is_empty() || hold_ms == 0 {
            st.warm_waiting.clear();
            self.warm_until_ns.store(0, Relaxed);
            return;
        }
        st.warm_waiting = managers.to_vec();
        let until = now_ns.saturating_add(hold_ms.saturating_mul(1_000_000));
        self.warm_until_ns.store(until.max(1), Relaxed);
    }

    /// Whether the agent is still in its warm-up window at `now_ns` (see
    /// [`Agent::start_warm_up`]).
    #[inline]
    pub fn warming(&self, now_ns: u64) -> bool {
        now_ns < self.warm_until_ns.load(Relaxed)
    }

    /// Whether a segment between `src` and `dst` is a manager's own
    /// connection, which the warm-up lets through ([`Agent::start_warm_up`]).
    #[inline(never)]
    pub(crate) fn warm_exempt(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        self.warm_exempt
            .load()
            .iter()
            .any(|m| *m == src || *m == dst)
    }

    /// A manager at `from` had a wildcard update accepted: it no longer
    /// holds up the warm-up; the last one ends it.
    pub(crate) fn warm_heard(&self, st: &mut ControlState, from: Ipv4Addr) {
        if st.warm_waiting.is_empty() {
            return;
        }
        st.warm_waiting.retain(|m| *m != from);
        if st.warm_waiting.is_empty() {
            self.warm_until_ns.store(0, Relaxed);
        }
    }

    pub(crate) fn next_sequence(&self) -> u64 {
        self.sequence.fetch_add(1, Relaxed)
    }

    /// Republishes the workers' view after the manager list or the key
    /// changed (control thread; rare).
    pub(crate) fn republish(&self, st: &ControlState) {
        self.published.store(Arc::new(Published {
            managers: st.managers.iter().map(|m| m.address).collect(),
            signing_key: self.auth.read().keys.signing_key().cloned(),
        }));
    }

    /// A message builder with this agent's sequence, signing key and
    /// identity info, for either side (the key comes from the snapshot
    /// `published`, so a worker takes no lock).
    pub(crate) fn builder_with(&self, t: MessageType, published: &Published) -> MessageBuilder {
        let seq = self.next_sequence();
        let mut b = match &published.signing_key {
            Some(k) => MessageBuilder::signed(t, seq, k),
            None => MessageBuilder::new(t, seq),
        };
        b.push(Segment::IdentityInfo(IdentityInfo {
            address: self.config.agent_addr,
            host_name: &self.config.agent_name,
        }));
        b
    }

    /// [`Agent::builder_with`] on the current snapshot (control side).
    pub(crate) fn builder(&self, t: MessageType) -> MessageBuilder {
        self.builder_with(t, &self.published.load())
    }

    /// The authentication policy in force.
    pub fn auth(&self) -> RwLockReadGuard<'_, AuthPolicy> {
        self.auth.read()
    }

    /// Replaces the authentication policy (e.g. a new key from the API);
    /// the workers sign with the new key from their next batch on.
    pub fn set_auth(&self, policy: AuthPolicy) {
        *self.auth.write() = policy;
        let st = self.control.lock();
        self.republish(&st);
    }

    /// Counts a fixed affinity gone whose action is `action` (call before
    /// releasing the action: its owner is read from it).
    pub(crate) fn fixed_owner_dec(&self, st: &mut ControlState, action: u32) {
        let owner = self.actions.get(action).owner;
        if let Some(n) = st.fixed_by_owner.get_mut(&owner) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                st.fixed_by_owner.remove(&owner);
            }
        }
    }

    /// Counts a fixed affinity added for `owner`.
    pub(crate) fn fixed_owner_inc(st: &mut ControlState, owner: u16) {
        *st.fixed_by_owner.entry(owner).or_default() += 1;
    }

    pub(crate) fn publish_control(&self, st: &ControlState) {
        self.control_counters.publish(&st.counters);
    }
}
