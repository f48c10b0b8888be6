//! The packet path, a batch at a time (as VPP hands a node a frame), one
//! file per step:
//!
//! 1. parse and batch (this file): [`Worker::process_batch`] parses every
//!    packet (`crate::wire`; a plain one, unfragmented TCP or UDP without
//!    IP options, only as far as the common case needs:
//!    `wire::parse_plain`) and hashes its key to a fixed-table line;
//! 2. `lookup`: fixed affinity (later fragments: their first fragment's
//!    flow, or held until it is known: `fragments`), an ICMP error's
//!    quoted flow (`icmp_error`), then wildcards in search order;
//! 3. `act`: the matched action set — statistics, interest, then the
//!    rewrite (NAT, sequence adjust) and the next hop (forward or pass);
//! 4. `punt`: interest matches — copies, punts in place or out of line,
//!    and holds (the queue itself is [`crate::hold`]);
//! 5. next: the [`Disposition`] written per packet for the caller.
//!
//! The common case — a plain packet on a live fixed affinity whose action
//! set only translates and routes — goes from step 1 to 5 in one step
//! (`fast`); whatever it declines takes the steps above.
//!
//! Why a batch and groups: the batch goes through in groups of
//! `GROUP` packets, as a two-stage pipeline over a ring of two groups'
//! per-packet state (`Worker::stage`): while group g is looked up and
//! acted on, group g + 1 has been read — parsed, its keys hashed, its
//! fixed-table lines prefetched — and the packets of group g + 2 are on
//! their way. At millions of flows each look-up is a cache miss *and* a TLB
//! miss, and a prefetch that misses the TLB holds back the instructions
//! after it until its page walk is done; issued a group ahead, a group's
//! walks overlap each other and the acting on the group before. Measured
//! at 16 M flows (home line only): prefetching the whole batch first 123 ns
//! per packet; one packet ahead, far worse; groups of 16, one group ahead,
//! 93–98 ns; groups of 8 since, with both lines prefetched while over a
//! quarter of the table is in use (`GROUP`,
//! `FixedTable::prefetch_next_line`). The ring (stop 21) replaced a first
//! pass over the whole batch, which put 256 parse results and probes and
//! every packet through L1 before the first was acted on; reading two
//! groups ahead instead of one (`AHEAD`) was slower. Packets are rewritten
//! in place; punts are written into the packet's own headroom.
//!
//! What a worker reads from the control side: the wildcard set and
//! `crate::agent::Published` (manager addresses, signing key), each an
//! arc-swap snapshot loaded once per batch (per packet, the wildcard load
//! cost the 10 k-wildcard case about 10 ns). It writes only its own
//! counters and forward statistics (`forward_stats`). The locks a
//! packet can take: the hold queue's, only when it is held; the SYN
//! proxy's splice table, only for a client packet with a valid cookie (its
//! proof, or early data of a connection proved already: checked and noted
//! under one lock, so a connection is proved once), for a client packet of
//! a proved flow not yet spliced (held as early data) and for a SYN-ACK
//! while connections are pending — a packet of any other flow is turned
//! away lock-free by the table's counted filter
//! ([`crate::synproxy::SpliceTable`]).

mod act;
mod admission;
mod fast;
pub(crate) mod forward_stats;
mod fragments;
mod icmp_error;
mod lookup;
mod punt;
mod synproxy;

use crate::agent::{ds, Agent, Published};
use crate::counters::{Counter, LocalCounters, SharedCounters};
use crate::wildcard_affinity::WildcardSet;
use crate::wire::{self, Fragment, PacketInfo};
use forward_stats::ForwardTally;
use fragments::FragmentCache;
use lookup::{Lookup, Origin};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

/// Largest batch handled in one pass (a VPP frame holds 256 buffers).
pub const BATCH: usize = 256;

/// Packets whose fixed-table lines are prefetched together, one group
/// ahead of the group being processed (see the module comment). 8, not
/// 16: a group's 2 x 16 prefetches at once outnumber the core's L1 miss
/// buffers and stall it (perf: the samples sit on the prefetch and on the
/// key load). Measured alternately, same sitting: the datapath bench 1 M
/// flows 113-115 -> 92-95 ns/packet, 16 M 116-119 -> 111-115 (4: 90-92 at
/// 1 M but 123 at 16 M); the VPP node at 1.18 M flows 299-320 -> 248-285
/// clocks/packet (test/vpp-runtime-bench.sh).
const GROUP: usize = 8;

/// Slots of the per-packet state ring: the group being acted on and the
/// group being read (`Worker::stage`).
const RING: usize = (AHEAD + 1) * GROUP;

/// How many groups ahead of the one acted on are read and have their lines
/// prefetched. 1: at 2, VPP at 1.18 M flows cost 136–169 clocks/packet
/// against 123–145 at 1, alternated in one sitting. What is left at scale
/// is address translation more than memory: on this lab's VM (nested
/// paging, 4 KiB host pages) 147 k flows, whose lines fit in L3, cost as
/// much as 1.18 M (89–93 clocks against 93–97), and a pass that hashed and
/// prefetched the whole frame's lines before any other work, so that all
/// their page walks overlapped, was slower (best rounds 108–126 against
/// 87–105; stop 25), so the walks do not run many at once.
const AHEAD: usize = 1;

/// A packet in a buffer: the IPv4 packet is `buf[start..start + len]`;
/// `buf[..start]` is headroom the agent may write a punt header into.
pub struct PacketBuf<'a> {
    pub buf: &'a mut [u8],
    pub start: usize,
    pub len: usize,
    /// The TCP/UDP checksum field holds only the pseudo-header sum, for the
    /// NIC to complete (VPP: `VNET_BUFFER_F_OFFLOAD` with
    /// `VNET_BUFFER_OFFLOAD_F_TCP_CKSUM`/`UDP_CKSUM`; Linux:
    /// `CHECKSUM_PARTIAL`). NAT then updates it as a pseudo-header sum
    /// (addresses only) and sequence adjust leaves it
    /// ([`crate::wire::apply_nat_offload`]). False from [`PacketBuf::new`].
    pub l4_partial: bool,
}

impl<'a> PacketBuf<'a> {
    /// A packet at `buf[start..start + len]` (bytes) with a complete
    /// checksum.
    pub fn new(buf: &'a mut [u8], start: usize, len: usize) -> Self {
        PacketBuf {
            buf,
            start,
            len,
            l4_partial: false,
        }
    }

    /// The same, marked as carrying a partial L4 checksum (see
    /// [`PacketBuf::l4_partial`]).
    pub fn with_partial_l4_checksum(mut self) -> Self {
        self.l4_partial = true;
        self
    }
    /// Hints the CPU to load the packet's first line (its IPv4 header).
    #[inline]
    fn prefetch(&self) {
        if let Some(b) = self.buf.get(self.start) {
            crate::fixed_affinity::prefetch_line((b as *const u8).cast());
        }
    }

    fn packet(&mut self) -> &mut [u8] {
        let end = (self.start + self.len).min(self.buf.len());
        let start = self.start.min(end);
        &mut self.buf[start..end]
    }
}

/// What to do with a packet after processing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Continue to normal routing (possibly rewritten).
    Pass,
    /// Send to this next hop without further translation.
    Forward(Ipv4Addr),
    /// Drop; the counter says why.
    Drop(Counter),
    /// The buffer now holds a service message at `buf[start..]` (up to the
    /// packet's end) for `to`; the caller adds IPv4/UDP headers and sends it.
    Punt { to: SocketAddrV4, start: usize },
    /// The agent kept or copied the packet (hold queue, or a punt written
    /// out of line for lack of headroom); the buffer can be freed. The
    /// counter says which (VPP files the freed buffer under it).
    Consumed(Counter),
}

/// Which affinity a packet matched ([`Decision::matched`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Matched {
    /// No affinity: passed, dropped as advertised, or malformed.
    #[default]
    None,
    /// A fixed affinity, at this slot of the fixed table.
    Fixed { slot: usize },
    /// A wildcard affinity, by the id its manager gave it.
    Wildcard { id: u32 },
}

/// What the packet path decided for one packet besides its
/// [`Disposition`]: kept per packet of a batch only while
/// [`Worker::set_tracing`] is on, for VPP's packet trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Decision {
    pub matched: Matched,
    /// The matched affinity's action set: its index in the action table
    /// (0 when nothing matched).
    pub action: u32,
    /// The packet was translated (NAT applied).
    pub nat: bool,
}

/// What a batch reads from the control side, loaded once per batch, and
/// the batch's time.
struct BatchCtx<'b> {
    agent: &'b Agent,
    wild: &'b WildcardSet,
    published: &'b Published,
    /// The caller's monotonic nanoseconds, and the same in table time
    /// (deciseconds).
    now_ns: u64,
    now: u32,
    /// No SYN-proxy connection was in progress when the batch began
    /// (`SpliceTable::idle`): the common case's path skips its per-flow
    /// checks.
    splice_idle: bool,
}

impl<'b> BatchCtx<'b> {
    /// The context of work at `now_ns` (the caller's monotonic clock,
    /// nanoseconds) over loaded snapshots.
    fn new(agent: &'b Agent, wild: &'b WildcardSet, published: &'b Published, now_ns: u64) -> Self {
        BatchCtx {
            agent,
            wild,
            published,
            now_ns,
            now: ds(now_ns),
            splice_idle: agent.splice.idle(),
        }
    }
}

/// A worker thread's handle on the agent.
pub struct Worker {
    agent: Arc<Agent>,
    counters: LocalCounters,
    shared: Arc<SharedCounters>,
    frag: FragmentCache,
    /// Punt budgets per wildcard ([`admission`]).
    admission: admission::Admission,
    /// SYN-proxy cookies ([`crate::synproxy`]), and the state of the proved
    /// cookie ACK being punted (appended to its interest data).
    cookies: crate::synproxy::SynCookies,
    proxied: Option<crate::synproxy::SynProxyState>,
    forward: Arc<ForwardTally>,
    /// Fixed slots this batch marked handshake-complete for the first
    /// time, and where they go at the batch's end (the worker's own queue,
    /// which the control thread takes for prompt activity reports).
    marked: Vec<u32>,
    marks_out: Arc<parking_lot::Mutex<Vec<u32>>>,
    messages: Vec<(SocketAddrV4, Vec<u8>)>,
    /// Held fragments and SYN-proxy early data released since the last
    /// `take_released`.
    released: Vec<(Vec<u8>, Disposition)>,
    /// Per packet of the two groups in flight (ring slot = index in the
    /// chunk modulo [`RING`]): what the first stage read of it. Arrays, not
    /// vectors: indexed modulo their length they need no bounds checks
    /// (stop 23: 395 → 372 instructions a packet with `probes`, and the
    /// VPP node 99–107 → 95–99 clocks at 1.18 M flows, alternated).
    parsed: [Parsed; RING],
    /// The same packets' fixed-table look-ups, prepared (key packed and
    /// hashed to its home line; none for packets looked up later).
    probes: [Option<crate::fixed_affinity::Probe>; RING],
    /// Per packet of the last batch, while tracing ([`Worker::decisions`]).
    decisions: Vec<Decision>,
    /// The decision for the packet being processed.
    cur: Decision,
    tracing: bool,
    /// [`Worker::set_fast_path`].
    fast_path: bool,
    /// The chunk's look-ups prefetch the line after the home line too
    /// ([`crate::fixed_affinity::FixedTable::prefetch_next_line`]).
    next_line: bool,
    /// Packets of the last batch the common case's path passed
    /// ([`Worker::plain_passes`]).
    plain_passes: usize,
}

/// A packet as the batch's first pass read it: plain (the common case's
/// path may take it, [`fast`]) or parsed in full.
#[derive(Clone, Copy)]
enum Parsed {
    Plain(wire::Plain),
    Full(Result<PacketInfo, wire::PacketError>),
}

impl Agent {
    /// Counters kept outside the core (the VPP shim counts the packets it
    /// drops itself, e.g. for an unresolved forward address), summed with
    /// the workers' by [`Agent::counter`] and `show affinity stats`.
    pub fn external_counters(&self) -> Arc<SharedCounters> {
        let shared = Arc::new(SharedCounters::default());
        self.worker_counters.lock().push(shared.clone());
        shared
    }

    /// A data-path handle for one thread.
    pub fn worker(self: &Arc<Self>) -> Worker {
        let shared = Arc::new(SharedCounters::default());
        self.worker_counters.lock().push(shared.clone());
        let forward = Arc::new(ForwardTally::new());
        self.worker_forward.lock().push(forward.clone());
        let marks_out = Arc::new(parking_lot::Mutex::new(Vec::new()));
        self.worker_marks.lock().push(marks_out.clone());
        Worker {
            agent: self.clone(),
            counters: LocalCounters::default(),
            shared,
            frag: FragmentCache::new(self.config.fragment_cache),
            admission: admission::Admission::new(self.config.wildcard_capacity),
            cookies: crate::synproxy::SynCookies::new(self.syn_secret),
            proxied: None,
            forward,
            marked: Vec::new(),
            marks_out,
            messages: Vec::new(),
            released: Vec::new(),
            parsed: [Parsed::Full(Err(wire::PacketError::TooShort)); RING],
            probes: [None; RING],
            decisions: Vec::with_capacity(BATCH),
            cur: Decision::default(),
            tracing: false,
            fast_path: true,
            next_line: true,
            plain_passes: 0,
        }
    }
}

impl Worker {
    /// Processes packets, writing one disposition per packet into `out`
    /// (which must be at least as long as `pkts`; extra packets are passed).
    pub fn process_batch(
        &mut self,
        now_ns: u64,
        pkts: &mut [PacketBuf<'_>],
        out: &mut [Disposition],
    ) {
        let n = pkts.len().min(out.len());
        let agent = self.agent.clone();
        self.decisions.clear();
        let mut passes = 0;
        for (chunk, outs) in pkts[..n].chunks_mut(BATCH).zip(out[..n].chunks_mut(BATCH)) {
            // The common case's path (`fast`) for the chunk: not while a
            // packet is traced (it records no decision).
            let fast = self.fast_path && !self.tracing;
            self.next_line = agent.fixed.prefetch_next_line();
            // One snapshot of each for the chunk: a wildcard, manager or
            // key change shows from the next batch on.
            let wild = agent.wildcards.snapshot();
            let published = agent.published.load();
            let ctx = BatchCtx::new(&agent, &wild, &published, now_ns);
            if !self.frag.is_empty() {
                self.fragment_upkeep(&ctx);
            }
            let m = chunk.len();
            let (mut hits, mut nat_applied) = (0u64, 0u64);
            // The first group read, its lines on their way, the second
            // group's packets on theirs.
            for q in chunk.iter().take(2 * GROUP).skip(GROUP) {
                q.prefetch();
            }
            for g in 0..AHEAD {
                if g * GROUP < m {
                    self.stage(&agent, chunk, g * GROUP, fast);
                }
            }
            for start in (0..m).step_by(GROUP) {
                let end = (start + GROUP).min(m);
                // A group further on read while this one's lines come in.
                let ahead = start + AHEAD * GROUP;
                if ahead < m {
                    self.stage(&agent, chunk, ahead, fast);
                }
                for i in start..end {
                    // The look-up, its line prefetched a group ago. The
                    // ring's arrays are of length RING, so `i % RING`
                    // needs no bounds check.
                    let r = i % RING;
                    // Copied out of the ring (borrowed in place it cost 3
                    // more instructions a packet: cachegrind).
                    let probe = self.probes[r];
                    let probe = probe.as_ref();
                    match &self.parsed[r] {
                        Parsed::Plain(pl) => {
                            match probe.and_then(|b| agent.fixed.lookup_hit(b)) {
                                Some(hit) => {
                                    // Declined (an expired entry, an action
                                    // set that is not plain, a SYN-proxy
                                    // concern): the general path, which
                                    // looks up again — keeping the result
                                    // live across the common case cost it
                                    // stack traffic (cachegrind).
                                    let mut fast = fast::FastState {
                                        counters: &mut self.counters,
                                        marked: &mut self.marked,
                                        hits: &mut hits,
                                        nat_applied: &mut nat_applied,
                                        passes: &mut passes,
                                    };
                                    if !fast.fast_fixed(&ctx, &mut chunk[i], pl, hit, &mut outs[i])
                                    {
                                        outs[i] = self.declined(&ctx, &mut chunk[i], Lookup::Later);
                                    }
                                }
                                // No fixed affinity: the general path, with
                                // the look-up done (wildcards).
                                None => {
                                    outs[i] =
                                        self.declined(&ctx, &mut chunk[i], Lookup::Done(None));
                                }
                            }
                        }
                        Parsed::Full(info) => {
                            // Copied out: the general path borrows the
                            // whole worker.
                            let info = *info;
                            let pre = match probe {
                                Some(b) => Lookup::Done(agent.fixed.lookup_probe(b)),
                                None => Lookup::Later,
                            };
                            self.cur = Decision::default();
                            outs[i] =
                                self.process_one(&ctx, &mut chunk[i], &info, pre, Origin::Wire);
                            if self.tracing {
                                self.decisions.push(self.cur);
                            }
                        }
                    }
                }
            }
            self.counters.add(Counter::Packets, hits);
            self.counters.add(Counter::FixedHit, hits);
            self.counters.add(Counter::NatApplied, nat_applied);
        }
        self.plain_passes = passes;
        self.flush();
    }

    /// The first stage for the group of `chunk` starting at `start`: each
    /// packet read (plain when `fast` allows and it is, in full otherwise)
    /// into its ring slot, its key hashed to its fixed-table line and the
    /// line prefetched as soon as known (spread over the group rather than
    /// eight at once), and the packets two groups further on prefetched. A
    /// group of the ring ([`RING`]) is read while the one before it is
    /// acted on, so the per-packet state stays in L1.
    #[inline(always)]
    fn stage(&mut self, agent: &Agent, chunk: &mut [PacketBuf<'_>], start: usize, fast: bool) {
        let end = (start + GROUP).min(chunk.len());
        for j in start..end {
            if let Some(q) = chunk.get(j + 2 * GROUP) {
                q.prefetch();
            }
            let p = &mut chunk[j];
            let plain = if fast && !p.l4_partial {
                wire::parse_plain(p.packet())
            } else {
                None
            };
            // Each branch writes its own: built in place, not moved
            // through a temporary (cachegrind: the moves cost more than
            // the plain packet's whole parse).
            let r = j % RING;
            match plain {
                Some(pl) => {
                    self.probes[r] = Some(agent.fixed.probe_plain(&pl));
                    self.parsed[r] = Parsed::Plain(pl);
                }
                None => {
                    let info = wire::parse_ipv4(p.packet());
                    // A later fragment's flow is known only once the
                    // first fragment (maybe in this batch) has been
                    // processed.
                    self.probes[r] = match &info {
                        Ok(i) if i.fragment != Fragment::Later => Some(agent.fixed.probe(&i.key)),
                        _ => None,
                    };
                    self.parsed[r] = Parsed::Full(info);
                }
            }
            if let Some(b) = &self.probes[r] {
                agent.fixed.prefetch(b.start(), self.next_line);
            }
        }
    }

    /// A plain packet `FastState::fast_fixed` declined, or whose key no
    /// fixed affinity holds, through the general path (parsed in full
    /// now; `pre` is its look-up when already done, `Lookup::Later` to look
    /// up again). Out
    /// of line: the batch loop inlines the general path once, for the
    /// packets that were never plain.
    #[inline(never)]
    fn declined(&mut self, ctx: &BatchCtx<'_>, p: &mut PacketBuf<'_>, pre: Lookup) -> Disposition {
        let info = wire::parse_ipv4(p.packet());
        self.cur = Decision::default();
        let d = self.process_one_cold(ctx, p, &info, pre, Origin::Wire);
        if self.tracing {
            self.decisions.push(self.cur);
        }
        d
    }

    /// Whether [`Worker::process_batch`] takes the common case's own path
    /// (`fast`; on by default). Off, every packet goes through the general
    /// path: the same dispositions, bytes and counters, more slowly — for
    /// the differential tests (`tests/fast_path.rs`) and A/B benches.
    pub fn set_fast_path(&mut self, on: bool) {
        self.fast_path = on;
    }

    /// Processes a packet a manager returned (never punted to the same or a
    /// higher precedence again).
    pub fn process_returned(
        &mut self,
        now_ns: u64,
        pkt: &mut PacketBuf<'_>,
        rank_limit: Option<(bool, u16)>,
    ) -> Disposition {
        self.counters.inc(Counter::Returned);
        let info = wire::parse_ipv4(pkt.packet());
        let origin = Origin::Returned(rank_limit);
        let d = self.with_snapshots(now_ns, |w, ctx| {
            w.process_one_cold(ctx, pkt, &info, Lookup::Later, origin)
        });
        self.flush();
        d
    }

    /// Fragment upkeep without packets: forgets datagrams whose time is up
    /// and releases held fragments whose first fragment's flow has been
    /// installed since (see `fragments`). A batch does the same; call
    /// this when no batch came for a while (the host agent: after each
    /// idle wait). Released fragments are in [`Worker::take_released`].
    pub fn poll_fragments(&mut self, now_ns: u64) {
        if self.frag.is_empty() {
            return;
        }
        self.with_snapshots(now_ns, |w, ctx| w.fragment_upkeep(ctx));
        self.flush();
    }

    /// Runs `f` with a context of freshly loaded snapshots at `now_ns`,
    /// for the work done outside a batch (returned packets, fragment
    /// upkeep); the batch loop loads its own once per chunk.
    fn with_snapshots<R>(
        &mut self,
        now_ns: u64,
        f: impl FnOnce(&mut Worker, &BatchCtx<'_>) -> R,
    ) -> R {
        let agent = self.agent.clone();
        let wild = agent.wildcards.snapshot();
        let published = agent.published.load();
        let ctx = BatchCtx::new(&agent, &wild, &published, now_ns);
        f(self, &ctx)
    }

    /// Whether fragments are held or datagrams remembered (bytes or state
    /// [`Worker::poll_fragments`] has to release or expire within
    /// `fragments::TIMEOUT_NS`): a caller that polls only on demand
    /// polls again soon while this is true.
    pub fn holds_fragments(&self) -> bool {
        !self.frag.is_empty()
    }

    /// Held packets released since the last call: fragments whose first
    /// fragment's decision came, and the early data of a SYN-proxied
    /// connection spliced in the last batch or returned packet (in the
    /// order the client sent it, after the client's kept ACK). Each IPv4
    /// packet, rewritten, with its disposition (a `Punt`'s `start` indexes
    /// that packet's own bytes). The caller sends them as it sends a
    /// batch's packets, after them.
    pub fn take_released(&mut self) -> Vec<(Vec<u8>, Disposition)> {
        std::mem::take(&mut self.released)
    }

    /// A packet the worker kept (an IPv4 packet, already counted) sent on
    /// through the packet path now — a held fragment once its first
    /// fragment's decision came, a SYN-proxied connection's kept ACK and
    /// early data once spliced — rewritten, with its disposition, for
    /// [`Worker::take_released`]. The decision of the packet in progress
    /// (`cur`, for the trace) is left as it was.
    #[cold]
    #[inline(never)]
    fn release(&mut self, ctx: &BatchCtx<'_>, mut pkt: Vec<u8>) {
        let len = pkt.len();
        let info = wire::parse_ipv4(&pkt);
        let cur = self.cur;
        let mut p = PacketBuf::new(&mut pkt, 0, len);
        let d = self.process_counted(ctx, &mut p, &info, Lookup::Later, Origin::Wire);
        let len = p.len;
        self.cur = cur;
        pkt.truncate(len);
        self.released.push((pkt, d));
    }

    /// Whether [`Worker::process_batch`] keeps a [`Decision`] per packet
    /// (off by default: VPP turns it on for frames that carry traced
    /// packets).
    pub fn set_tracing(&mut self, on: bool) {
        self.tracing = on;
    }

    /// How many packets of the last [`Worker::process_batch`] the common
    /// case's path passed ([`Disposition::Pass`], the packet rewritten in
    /// place at its own length). When that is the whole batch, a caller has
    /// no disposition to look at (the VPP node then skips its per-packet
    /// result loop).
    pub fn plain_passes(&self) -> usize {
        self.plain_passes
    }

    /// Per packet of the last batch, in order: the [`Decision`] made, while
    /// tracing is on (empty otherwise).
    pub fn decisions(&self) -> &[Decision] {
        &self.decisions
    }

    /// The worker's own counters as of its last batch (indexed by
    /// [`Counter`]): the VPP node reports their growth per frame as its
    /// error counters.
    pub fn counters(&self) -> &LocalCounters {
        &self.counters
    }

    /// Service messages produced out of line (interest copies, holds,
    /// punts without headroom) since the last call.
    pub fn take_messages(&mut self) -> Vec<(SocketAddrV4, Vec<u8>)> {
        std::mem::take(&mut self.messages)
    }

    /// Publishes the batch's counters (no lock: the worker's own slots).
    fn flush(&mut self) {
        self.shared.publish(&self.counters);
        if !self.marked.is_empty() {
            self.hand_over_marks();
        }
    }

    /// The batch's newly marked slots to the worker's queue (its own lock,
    /// which only the control thread also takes, to empty it; once per
    /// batch that marked any, so at most once per new connection's batch).
    /// Past [`crate::activity::MARKS_QUEUED`] they are dropped, counted:
    /// the periodic report still carries their marks.
    #[cold]
    fn hand_over_marks(&mut self) {
        let mut q = self.marks_out.lock();
        let room = crate::activity::MARKS_QUEUED.saturating_sub(q.len());
        let n = self.marked.len();
        q.extend(self.marked.drain(..).take(room));
        drop(q);
        if n > room {
            self.counters
                .add(Counter::HandshakeMarksDropped, (n - room) as u64);
            self.shared.publish(&self.counters);
        }
        self.agent
            .marks_pending
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
