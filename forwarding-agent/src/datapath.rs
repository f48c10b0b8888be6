//! The per-packet work, a batch at a time (as VPP hands a node a frame).
//!
//! The first pass parses every packet and hashes its key to a fixed-table
//! line. The second goes through the batch in groups: it prefetches the
//! next group's lines (each key's home line and the next), looks up the
//! current group's keys, then acts on its packets. Why groups: at millions
//! of flows each look-up is a cache miss *and* a TLB miss, and a prefetch
//! that misses the TLB holds back the instructions after it until its page
//! walk is done; issued together, a group's walks overlap each other, and a
//! group's acting hides its successor's cache misses. Measured at 16 M
//! flows (home line only): prefetching the whole batch first 123 ns per
//! packet; one packet ahead, far worse; groups of 16, one group ahead,
//! 93–98 ns (the first group's prefetch goes out during parsing). Packets
//! are rewritten in place; punts are written into the packet's own
//! headroom. The wildcard snapshot is loaded once per batch (per packet it
//! cost the 10 k-wildcard case about 10 ns).

use crate::actions::ActionSet;
use crate::agent::{ds, Agent, AgentInterestData, ForwardStats, HeldPacket};
use crate::counters::{Counter, LocalCounters, SharedCounters};
use crate::wildcard_affinity::{WildcardEntry, WildcardSet};
use crate::wire::{self, Fragment, PacketInfo};
use affinity_api::*;
use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Largest batch handled in one pass (a VPP frame holds 256 buffers).
pub const BATCH: usize = 256;

/// Packets whose fixed-table lines are prefetched together, one group
/// ahead of the group being processed (8: 8 % slower at 16 M flows, 32:
/// 3 %; see the module comment).
const GROUP: usize = 16;

/// A packet in a buffer: the IPv4 packet is `buf[start..start + len]`;
/// `buf[..start]` is headroom the agent may write a punt header into.
pub struct PacketBuf<'a> {
    pub buf: &'a mut [u8],
    pub start: usize,
    pub len: usize,
}

impl<'a> PacketBuf<'a> {
    pub fn new(buf: &'a mut [u8], start: usize, len: usize) -> Self {
        PacketBuf { buf, start, len }
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
    /// out of line for lack of headroom); the buffer can be freed.
    Consumed,
}

/// How a packet entered the data path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Wire,
    /// Returned by a manager: wildcards of rank ≤ the limit are skipped;
    /// `None` = no wildcard at all (IP-packet-only without our data).
    Returned(Option<(bool, u16)>),
}

type FragKey = (u32, u32, u8, u16);

/// A worker thread's handle on the agent.
pub struct Worker {
    agent: Arc<Agent>,
    counters: LocalCounters,
    shared: Arc<SharedCounters>,
    frag: HashMap<FragKey, AffinityKey>,
    frag_order: VecDeque<FragKey>,
    forward: HashMap<Ipv4Addr, ForwardStats>,
    messages: Vec<(SocketAddrV4, Vec<u8>)>,
    infos: Vec<Result<PacketInfo, wire::PacketError>>,
    /// Per packet of the chunk: the fixed-table bucket its key hashes to
    /// (none for packets looked up later).
    buckets: Vec<Option<usize>>,
    /// What matched each packet of the last batch ([`Worker::matched`]).
    matched: Vec<u8>,
    cur: u8,
}

/// Bits of [`Worker::matched`].
pub mod matched {
    pub const FIXED: u8 = 1;
    pub const WILDCARD: u8 = 2;
    pub const NAT: u8 = 4;
}

impl Agent {
    /// A data-path handle for one thread.
    pub fn worker(self: &Arc<Self>) -> Worker {
        let shared = Arc::new(SharedCounters::default());
        self.worker_counters.lock().push(shared.clone());
        Worker {
            agent: self.clone(),
            counters: LocalCounters::default(),
            shared,
            frag: HashMap::new(),
            frag_order: VecDeque::new(),
            forward: HashMap::new(),
            messages: Vec::new(),
            infos: Vec::with_capacity(BATCH),
            buckets: Vec::with_capacity(BATCH),
            matched: Vec::with_capacity(BATCH),
            cur: 0,
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
        self.matched.clear();
        for (chunk, outs) in pkts[..n].chunks_mut(BATCH).zip(out[..n].chunks_mut(BATCH)) {
            self.infos.clear();
            self.buckets.clear();
            for p in chunk.iter_mut() {
                let info = wire::parse_ipv4(p.packet());
                // A later fragment's flow is known only once the first
                // fragment (maybe in this batch) has been processed.
                let bucket = match &info {
                    Ok(i) if i.fragment != Fragment::Later => Some(agent.fixed.bucket_of(&i.key)),
                    _ => None,
                };
                self.infos.push(info);
                self.buckets.push(bucket);
                // The first group's lines come in while the rest is parsed.
                if self.buckets.len() == GROUP {
                    self.prefetch(&agent, 0..GROUP);
                }
            }
            let m = chunk.len();
            // One snapshot for the chunk: a wildcard change shows from the
            // next batch on.
            let wild = agent.wildcards.snapshot();
            if m < GROUP {
                self.prefetch(&agent, 0..m);
            }
            for start in (0..m).step_by(GROUP) {
                let end = (start + GROUP).min(m);
                self.prefetch(&agent, end..(end + GROUP).min(m));
                // The group's look-ups first: independent loads overlap
                // whatever is still on its way.
                let mut pre = [Lookup::Later; GROUP];
                for (i, l) in (start..end).zip(pre.iter_mut()) {
                    if let (Ok(pi), Some(b)) = (&self.infos[i], self.buckets[i]) {
                        *l = Lookup::Done(agent.fixed.lookup_from(&pi.key, b));
                    }
                }
                for i in start..end {
                    let info = self.infos[i];
                    let pre = pre[i - start];
                    self.cur = 0;
                    outs[i] = self.process_one(
                        &agent,
                        now_ns,
                        &mut chunk[i],
                        info,
                        &wild,
                        pre,
                        Origin::Wire,
                    );
                    self.matched.push(self.cur);
                }
            }
        }
        self.flush();
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
        let agent = self.agent.clone();
        let wild = agent.wildcards.snapshot();
        let d = self.process_one(
            &agent,
            now_ns,
            pkt,
            info,
            &wild,
            Lookup::Later,
            Origin::Returned(rank_limit),
        );
        self.flush();
        d
    }

    /// Per packet of the last batch: which table matched and whether it
    /// was translated ([`matched`] bits), for traces.
    pub fn matched(&self) -> &[u8] {
        &self.matched
    }

    /// Service messages produced out of line (interest copies, holds,
    /// punts without headroom) since the last call.
    pub fn take_messages(&mut self) -> Vec<(SocketAddrV4, Vec<u8>)> {
        std::mem::take(&mut self.messages)
    }

    /// Prefetches the fixed-table buckets of packets `range` of the chunk.
    #[inline]
    fn prefetch(&self, agent: &Agent, range: std::ops::Range<usize>) {
        for b in self.buckets[range].iter().flatten() {
            agent.fixed.prefetch(*b);
        }
    }

    fn flush(&mut self) {
        self.shared.publish(&self.counters);
        if !self.forward.is_empty() {
            let mut g = self.agent.forward_stats.lock();
            for (a, s) in self.forward.drain() {
                let e = g.entry(a).or_default();
                e.packets += s.packets;
                e.bytes += s.bytes;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn process_one(
        &mut self,
        agent: &Agent,
        now_ns: u64,
        p: &mut PacketBuf<'_>,
        info: Result<PacketInfo, wire::PacketError>,
        wild: &WildcardSet,
        pre: Lookup,
        origin: Origin,
    ) -> Disposition {
        self.counters.inc(Counter::Packets);
        let info = match info {
            Ok(i) => i,
            Err(_) if self.agent.config.drop_malformed => {
                self.counters.inc(Counter::DropMalformed);
                return Disposition::Drop(Counter::DropMalformed);
            }
            Err(_) => {
                self.counters.inc(Counter::MalformedPassed);
                return Disposition::Pass;
            }
        };
        let now = ds(now_ns);
        // 1. Fixed affinity (later fragments: the first fragment's flow).
        let fixed_key = match info.fragment {
            Fragment::Later => {
                let k = self.frag.get(&frag_key(&info)).copied();
                match k {
                    Some(_) => self.counters.inc(Counter::FragmentCacheHit),
                    None => self.counters.inc(Counter::FragmentNoState),
                }
                k
            }
            _ => Some(info.key),
        };
        if let Some(k) = fixed_key {
            let hit = match pre {
                Lookup::Done(hit) => hit,
                Lookup::Later => agent.fixed.lookup(&k),
            };
            match hit {
                Some((v, slot)) if v.expires_ds > now => {
                    self.counters.inc(Counter::FixedHit);
                    self.cur |= matched::FIXED;
                    if info.fragment == Fragment::First {
                        self.remember_fragment(&info);
                    }
                    let actions = agent.actions.get(v.action);
                    if agent.config.per_flow_counters {
                        agent.fixed.count(slot, info.total_len as u64);
                    }
                    let bits = wire::interest_bits(&info) | interest::ALL;
                    return self.act(now_ns, p, &info, &actions, bits, None, origin);
                }
                Some(_) => self.counters.inc(Counter::FixedExpired),
                None => {}
            }
        }
        // 2. Wildcards.
        let rank_ok = |limit: Option<(bool, u16)>, r: (bool, u16)| limit.is_some_and(|l| r > l);
        let ports_known = info.fragment != Fragment::Later;
        let found = match origin {
            Origin::Wire => wild.lookup(&info.key, ports_known, now, |_| true),
            Origin::Returned(limit) => {
                wild.lookup(&info.key, ports_known, now, |w| rank_ok(limit, w.rank()))
            }
        };
        if let Some(w) = found {
            self.counters.inc(Counter::WildcardHit);
            self.cur |= matched::WILDCARD;
            let mut bits = wire::interest_bits(&info) | interest::ALL;
            // No flow state yet: this is the flow's first data (UDP: first packet).
            if bits & interest::DATA != 0 || info.key.protocol == wire::UDP {
                bits |= interest::FIRST_DATA;
            }
            let actions = agent.actions.get(w.action);
            return self.act(now_ns, p, &info, &actions, bits, Some(&w.entry), origin);
        }
        let advertised = wild.is_advertised(info.key.dst_addr);
        if let Origin::Returned(_) = origin {
            self.counters.inc(Counter::ReturnedNotRepunted);
        }
        if advertised {
            self.counters.inc(Counter::DropAdvertised);
            return Disposition::Drop(Counter::DropAdvertised);
        }
        self.counters.inc(Counter::MissPassed);
        Disposition::Pass
    }

    fn remember_fragment(&mut self, info: &PacketInfo) {
        let cap = self.agent.config.fragment_cache;
        if cap == 0 {
            return;
        }
        let k = frag_key(info);
        if self.frag.insert(k, info.key).is_none() {
            self.frag_order.push_back(k);
            while self.frag_order.len() > cap {
                if let Some(old) = self.frag_order.pop_front() {
                    self.frag.remove(&old);
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn act(
        &mut self,
        now_ns: u64,
        p: &mut PacketBuf<'_>,
        info: &PacketInfo,
        a: &ActionSet,
        bits: u16,
        wc: Option<&WildcardEntry>,
        origin: Origin,
    ) -> Disposition {
        if a.info_flags & info::STATISTICS != 0 {
            let s = self
                .forward
                .entry(Ipv4Addr::from(a.forward_addr))
                .or_default();
            s.packets += 1;
            s.bytes += info.total_len as u64;
        }
        if let Some(c) = a.interest {
            // A returned packet is never punted again by the affinity that
            // punted it; on a fixed affinity only copies are sent for it.
            let repunt_ok =
                wc.is_some() || origin == Origin::Wire || c.flags & InterestCriteria::COPY != 0;
            if c.mask & bits != 0 && repunt_ok {
                // The packet's own bits: a superset of those that hit, so a
                // manager sees e.g. SYN even when it asked for ALL.
                let reason = bits;
                if c.flags & InterestCriteria::COPY != 0 {
                    self.send_copy(p, info, a, reason, wc);
                } else {
                    return self.punt(now_ns, p, info, a, reason, wc);
                }
            }
        }
        let mut info = *info;
        if let Some(n) = a.nat {
            match wire::apply_nat(p.packet(), &info, &n.into()) {
                Ok(i) => {
                    info = i;
                    self.cur |= matched::NAT;
                    self.counters.inc(Counter::NatApplied);
                }
                Err(_) => return self.malformed(),
            }
        }
        if let Some(s) = a.seq_adjust {
            if wire::apply_seq_adjust(p.packet(), &info, &s.into()).is_ok()
                && info.key.protocol == wire::TCP
            {
                self.counters.inc(Counter::SeqAdjusted);
            }
        }
        if a.dispatch_flags & dispatch::FORWARD != 0 {
            if a.forward_addr == 0 {
                self.counters.inc(Counter::DropForwardZero);
                return Disposition::Drop(Counter::DropForwardZero);
            }
            self.counters.inc(Counter::Forwarded);
            return Disposition::Forward(Ipv4Addr::from(a.forward_addr));
        }
        Disposition::Pass
    }

    fn malformed(&mut self) -> Disposition {
        if self.agent.config.drop_malformed {
            self.counters.inc(Counter::DropMalformed);
            Disposition::Drop(Counter::DropMalformed)
        } else {
            self.counters.inc(Counter::MalformedPassed);
            Disposition::Pass
        }
    }

    fn destination(&self, a: &ActionSet) -> SocketAddrV4 {
        let c = a.interest.unwrap_or_default();
        let addr = if c.address == 0 {
            self.agent.manager_addr(a.owner)
        } else {
            c.address()
        };
        SocketAddrV4::new(addr, if c.port == 0 { MANAGER_PORT } else { c.port })
    }

    fn interest_data(
        &self,
        wc: Option<&WildcardEntry>,
        token: u32,
    ) -> [u8; AgentInterestData::LEN] {
        let (rank, id) = wc.map_or(((true, u16::MAX), 0), |w| (w.rank(), w.id));
        AgentInterestData {
            instance_id: self.agent.config.instance_id,
            hold_token: token,
            search_first: !rank.0,
            service_precedence: u16::MAX - rank.1,
            wildcard_id: id,
        }
        .encode()
    }

    fn match_segments<'s>(
        &self,
        info: &PacketInfo,
        a: &ActionSet,
        reason: u16,
        data: &'s [u8],
    ) -> [Segment<'s>; 3] {
        [
            Segment::AffinityIdentifier(AffinityIdentifier {
                id: a.affinity_id,
                reason,
            }),
            Segment::FixedAffinity(FixedAffinity {
                key: info.key,
                ..Default::default()
            }),
            Segment::FaInterestData(data),
        ]
    }

    fn build_match(
        &self,
        t: MessageType,
        info: &PacketInfo,
        a: &ActionSet,
        reason: u16,
        data: &[u8],
        packet: Option<&[u8]>,
    ) -> Option<Vec<u8>> {
        let mut b = self.agent.builder(t);
        for s in self.match_segments(info, a, reason, data) {
            b.push(s);
        }
        if let Some(pkt) = packet {
            b.push(Segment::IpPacket(pkt));
        }
        b.finish().ok()
    }

    fn send_copy(
        &mut self,
        p: &mut PacketBuf<'_>,
        info: &PacketInfo,
        a: &ActionSet,
        reason: u16,
        wc: Option<&WildcardEntry>,
    ) {
        let t = if wc.is_some() {
            MessageType::InterestMatchWildcard
        } else {
            MessageType::InterestMatchFixed
        };
        let data = self.interest_data(wc, 0);
        let with_packet = a
            .interest
            .is_some_and(|c| c.flags & InterestCriteria::DATA != 0);
        let pkt = with_packet.then(|| {
            p.packet()
                .get(..info.total_len)
                .unwrap_or_default()
                .to_vec()
        });
        if let Some(m) = self.build_match(t, info, a, reason, &data, pkt.as_deref()) {
            self.messages.push((self.destination(a), m));
            self.counters.inc(Counter::InterestCopy);
        }
    }

    fn punt(
        &mut self,
        now_ns: u64,
        p: &mut PacketBuf<'_>,
        info: &PacketInfo,
        a: &ActionSet,
        reason: u16,
        wc: Option<&WildcardEntry>,
    ) -> Disposition {
        let to = self.destination(a);
        let c = a.interest.unwrap_or_default();
        let t = if wc.is_some() {
            MessageType::InterestMatchWildcard
        } else {
            MessageType::InterestMatchFixed
        };
        let with_packet = c.flags & InterestCriteria::DATA != 0;
        if c.flags & InterestCriteria::HOLD != 0 {
            let mut hold = self.agent.hold.lock();
            if hold.len() < self.agent.config.hold_limit {
                let token = self.agent.next_token.fetch_add(1, Relaxed).max(1);
                let packet = p
                    .packet()
                    .get(..info.total_len)
                    .unwrap_or_default()
                    .to_vec();
                hold.push_back(HeldPacket {
                    token,
                    deadline_ns: now_ns + self.agent.config.hold_timeout_ms * 1_000_000,
                    manager: to,
                    rank: wc.map_or((true, u16::MAX), |w| w.rank()),
                    packet,
                });
                drop(hold);
                let data = self.interest_data(wc, token);
                let pkt = with_packet.then(|| {
                    p.packet()
                        .get(..info.total_len)
                        .unwrap_or_default()
                        .to_vec()
                });
                if let Some(m) = self.build_match(t, info, a, reason, &data, pkt.as_deref()) {
                    self.messages.push((to, m));
                }
                self.counters.inc(Counter::Held);
                return Disposition::Consumed;
            }
            self.counters.inc(Counter::HoldOverflow);
        }
        let data = self.interest_data(wc, 0);
        if !with_packet && c.flags & InterestCriteria::HOLD == 0 {
            if let Some(m) = self.build_match(t, info, a, reason, &data, None) {
                self.messages.push((to, m));
            }
            self.counters.inc(Counter::InterestNoData);
            return Disposition::Consumed;
        }
        // In place: the service message goes into the headroom in front of
        // the packet, which becomes its last segment.
        let key = self.agent.auth().keys.signing_key().cloned();
        let segs = self.match_segments(info, a, reason, &data);
        let identity = Segment::IdentityInfo(IdentityInfo {
            address: self.agent.config.agent_addr,
            host_name: &self.agent.config.agent_name,
        });
        let all = [segs[0], segs[1], segs[2], identity];
        let need = prefix_len(key.as_ref(), &all);
        // Link padding past the IP total length is not part of the punt.
        p.len = p.len.min(info.total_len);
        if need <= p.start {
            let new_start = p.start - need;
            let seq = self.agent.next_sequence();
            if emit_prefix(
                &mut p.buf[new_start..p.start],
                t,
                seq,
                key.as_ref(),
                &all,
                p.len,
            )
            .is_ok()
            {
                if let Some(k) = &key {
                    let end = p.start + p.len;
                    k.sign_in_place(&mut p.buf[new_start..end]);
                }
                self.counters.inc(Counter::Punted);
                return Disposition::Punt {
                    to,
                    start: new_start,
                };
            }
        }
        let pkt = p.packet().to_vec();
        match self.build_match(t, info, a, reason, &data, Some(&pkt)) {
            Some(m) => {
                self.messages.push((to, m));
                self.counters.inc(Counter::Punted);
                self.counters.inc(Counter::PuntCopiedOut);
                Disposition::Consumed
            }
            None => {
                self.counters.inc(Counter::PuntFailed);
                Disposition::Drop(Counter::PuntFailed)
            }
        }
    }
}

/// A fixed-table lookup done ahead, or left for when the packet is acted on.
#[derive(Debug, Clone, Copy)]
enum Lookup {
    Done(Option<(crate::fixed_affinity::FixedValue, usize)>),
    Later,
}

fn frag_key(info: &PacketInfo) -> FragKey {
    (
        u32::from(info.key.src_addr),
        u32::from(info.key.dst_addr),
        info.key.protocol,
        info.ip_id,
    )
}
