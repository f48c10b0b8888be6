//! Packet path, step 2: which affinity a packet belongs to — its fixed
//! affinity (looked up ahead by the batch loop, or here), else the first
//! live wildcard in search order; later fragments use the flow their first
//! fragment had, or wait for it (the per-worker cache in
//! [`super::fragments`]); an ICMP error that matches nothing by its own
//! key is tried as part of the flow it quotes ([`super::icmp_error`]).

use super::act::Hit;
use super::fragments::{Decision, Later};
use super::{BatchCtx, Disposition, Matched, PacketBuf, Worker};
use crate::counters::Counter;
use crate::fixed_affinity::{FixedValue, Mark};
use crate::wildcard_affinity::WildcardEntry;
use crate::wire::{self, Fragment, PacketInfo};
use affinity_api::{interest, AffinityKey};

/// How a packet entered the data path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    Wire,
    /// Returned by a manager: wildcards of rank ≤ the limit are skipped;
    /// `None` = no wildcard at all (IP-packet-only without our data).
    Returned(Option<(bool, u16)>),
}

/// A fixed-table lookup done ahead, or left for when the packet is acted on.
#[derive(Debug, Clone, Copy)]
pub(super) enum Lookup {
    Done(Option<(FixedValue, usize)>),
    Later,
}

impl Worker {
    /// Service chaining (seed FIG 10B): a returned packet that an affinity
    /// of the punting service (or above it) has just passed, possibly
    /// rewritten, goes on to the wildcards ranked below the one that
    /// punted it, matched on its rewritten headers; with none, it is
    /// routed (counted as not re-punted). Anything else keeps `d`.
    #[cold]
    fn chain(
        &mut self,
        ctx: &BatchCtx<'_>,
        p: &mut PacketBuf<'_>,
        d: Disposition,
        origin: Origin,
    ) -> Disposition {
        let Origin::Returned(Some(limit)) = origin else {
            return d;
        };
        if d != Disposition::Pass {
            return d;
        }
        let Ok(info) = wire::parse_ipv4(p.packet()) else {
            return d;
        };
        let ports_known = info.fragment != Fragment::Later;
        let found = ctx
            .wild
            .lookup(&info.key, ports_known, ctx.now, |w| w.rank() > limit);
        let Some(w) = found else {
            self.counters.inc(Counter::ReturnedNotRepunted);
            return d;
        };
        self.counters.inc(Counter::WildcardHit);
        self.cur.matched = Matched::Wildcard { id: w.entry.id };
        self.cur.action = w.action;
        let mut bits = wire::interest_bits(&info) | interest::ALL;
        if bits & interest::DATA != 0 || info.key.protocol == wire::UDP {
            bits |= interest::FIRST_DATA;
        }
        let actions = ctx.agent.actions.view(w.action);
        let hit = Hit {
            info: &info,
            actions: &actions,
            bits,
            wildcard: Some(&w.entry),
            origin,
            no_interest: false,
        };
        self.act(ctx, p, &hit)
    }

    /// [`Worker::process_one`] for the rare callers (a packet a manager
    /// returned, a SYN-proxied connection's released early data): out of
    /// line, so that the batch loop stays the only place the whole packet
    /// path is inlined into.
    #[inline(never)]
    pub(super) fn process_one_cold(
        &mut self,
        ctx: &BatchCtx<'_>,
        p: &mut PacketBuf<'_>,
        info: &Result<PacketInfo, wire::PacketError>,
        pre: Lookup,
        origin: Origin,
    ) -> Disposition {
        self.process_one(ctx, p, info, pre, origin)
    }

    /// One packet, from its parse result to its disposition. Always
    /// inlined into the batch loop (its one caller; the rare ones go
    /// through [`Worker::process_one_cold`]): the loop is in another file,
    /// and left to the compiler, a third caller made it an out-of-line call
    /// costing about 18 instructions a packet (cachegrind).
    #[inline(always)]
    pub(super) fn process_one(
        &mut self,
        ctx: &BatchCtx<'_>,
        p: &mut PacketBuf<'_>,
        info: &Result<PacketInfo, wire::PacketError>,
        pre: Lookup,
        origin: Origin,
    ) -> Disposition {
        self.counters.inc(Counter::Packets);
        self.process_counted(ctx, p, info, pre, origin)
    }

    /// [`Worker::process_one`] after the packet was counted (released
    /// fragments come back through here). Always inlined: the batch loop's
    /// path must stay one function, as it was before released fragments
    /// gave this a second (cold) caller.
    #[inline(always)]
    pub(super) fn process_counted(
        &mut self,
        ctx: &BatchCtx<'_>,
        p: &mut PacketBuf<'_>,
        info: &Result<PacketInfo, wire::PacketError>,
        pre: Lookup,
        origin: Origin,
    ) -> Disposition {
        // By reference: the packet info (some 80 bytes) is not copied per
        // packet on its way to acting.
        let info: &PacketInfo = match info {
            Ok(i) => i,
            // IPv6 is not malformed, only not supported yet: passed and
            // counted apart (never dropped as malformed).
            Err(wire::PacketError::NotIpv4) if p.packet().first().is_some_and(|v| v >> 4 == 6) => {
                self.counters.inc(Counter::Ipv6Passed);
                return Disposition::Pass;
            }
            Err(_) => return self.malformed(ctx),
        };
        let agent = ctx.agent;
        // 1. Fixed affinity (later fragments: the first fragment's flow).
        let fixed_key = match info.fragment {
            Fragment::Later => match self.later_fragment(ctx, p, info) {
                Ok(k) => k,
                Err(d) => return d,
            },
            _ => Some(info.key),
        };
        if let Some(k) = fixed_key {
            let hit = match pre {
                Lookup::Done(hit) => hit,
                Lookup::Later => agent.fixed.lookup(&k),
            };
            match hit {
                Some((v, slot)) if v.expires_ds > ctx.now => {
                    self.counters.inc(Counter::FixedHit);
                    self.cur.matched = Matched::Fixed { slot };
                    self.cur.action = v.action;
                    if agent.config.per_flow_counters {
                        // The handshake mark rides in the count's store
                        // (activity reports carry it: a manager promotes a
                        // half-open flow only on both directions' marks).
                        let mark = Mark::of(info.key.protocol, info.tcp_flags);
                        if agent.fixed.count_marked(slot, info.total_len as u64, mark) {
                            // First handshake-complete segment: reported
                            // at once, not at the next interval.
                            self.counters.inc(Counter::HandshakeMarked);
                            self.marked.push(slot as u32);
                        }
                    }
                    let actions = agent.actions.view(v.action);
                    // The packet's interest bits matter only to an
                    // affinity with interest criteria (most fixed
                    // affinities have none: not worked out per packet).
                    let bits = match actions.interest() {
                        None => 0,
                        Some(c) => {
                            let mut bits = wire::interest_bits(info) | interest::ALL;
                            // First data (PROTOCOL.md, interest bit 7):
                            // looked up only for affinities that ask for
                            // it, since the mark costs a shared write per
                            // data packet.
                            if c.mask & interest::FIRST_DATA != 0
                                && (bits & interest::DATA != 0 || info.key.protocol == wire::UDP)
                                && agent.fixed.first_data(slot)
                            {
                                bits |= interest::FIRST_DATA;
                            }
                            bits
                        }
                    };
                    // SYN proxy: a client reusing a spliced flow's
                    // 5-tuple (`Worker::syn_proxy_reuse`).
                    if info.key.protocol == wire::TCP && origin == Origin::Wire {
                        if let Some(d) = self.syn_proxy_reuse(ctx, p, info, &actions) {
                            return d;
                        }
                    }
                    let hit = Hit {
                        info,
                        actions: &actions,
                        bits,
                        wildcard: None,
                        origin,
                        no_interest: false,
                    };
                    let d = self.act(ctx, p, &hit);
                    if info.fragment == Fragment::First {
                        self.first_fragment(ctx, info, Decision::Fixed(info.key), d);
                    }
                    return self.chain(ctx, p, d, origin);
                }
                Some(_) => self.counters.inc(Counter::FixedExpired),
                None => {}
            }
        }
        // An ICMP error about a tracked flow goes with that flow.
        if info.key.protocol == wire::ICMP {
            if let Some(d) = self.icmp_error(ctx, p, info) {
                return d;
            }
        }
        // 2. Wildcards. A returned packet may meet the wildcard that
        // punted it (or one ranked above): that one's rewrite applies but
        // it is not punted again, and the search goes on below its rank
        // (`chain`). Without our interest data (limit `None`) no wildcard
        // applies at all.
        let ports_known = info.fragment != Fragment::Later;
        let wild = ctx.wild;
        let found = match origin {
            Origin::Returned(None) => None,
            _ => wild.lookup(&info.key, ports_known, ctx.now, |_| true),
        };
        let above_limit = |w: &WildcardEntry| match origin {
            Origin::Returned(Some(limit)) => w.rank() <= limit,
            _ => false,
        };
        if let Some(w) = found.filter(|w| above_limit(&w.entry)) {
            self.counters.inc(Counter::WildcardHit);
            self.cur.matched = Matched::Wildcard { id: w.entry.id };
            self.cur.action = w.action;
            let actions = agent.actions.view(w.action);
            let hit = Hit {
                info,
                actions: &actions,
                bits: wire::interest_bits(info) | interest::ALL,
                wildcard: Some(&w.entry),
                origin,
                no_interest: true,
            };
            let d = self.act(ctx, p, &hit);
            return self.chain(ctx, p, d, origin);
        }
        if let Some(w) = found {
            self.counters.inc(Counter::WildcardHit);
            self.cur.matched = Matched::Wildcard { id: w.entry.id };
            self.cur.action = w.action;
            let mut bits = wire::interest_bits(info) | interest::ALL;
            // No flow state yet: this is the flow's first data (UDP: first packet).
            if bits & interest::DATA != 0 || info.key.protocol == wire::UDP {
                bits |= interest::FIRST_DATA;
            }
            // SYN proxy: only a proved cookie ACK goes on, as a new flow.
            if origin == Origin::Wire && super::synproxy::applies(&w.entry, info) {
                match self.syn_proxy(ctx, p, info) {
                    Ok(state) => {
                        bits |= interest::SYN;
                        self.proxied = Some(state);
                    }
                    Err(d) => return d,
                }
            }
            let actions = agent.actions.view(w.action);
            let hit = Hit {
                info,
                actions: &actions,
                bits,
                wildcard: Some(&w.entry),
                origin,
                no_interest: false,
            };
            let d = self.act(ctx, p, &hit);
            if self.proxied.take().is_some() {
                self.proof_sent(ctx, info, d);
            }
            if info.fragment == Fragment::First {
                self.first_fragment(ctx, info, Decision::Actions(actions), d);
            }
            return d;
        }
        let advertised = wild.is_advertised(info.key.dst_addr);
        if let Origin::Returned(_) = origin {
            self.counters.inc(Counter::ReturnedNotRepunted);
            // A manager handed it back: it is routed even to an advertised
            // address (EXCHANGES.md, "Returned packets").
            if advertised {
                self.counters.inc(Counter::ReturnedAdvertisedRouted);
            }
            self.counters.inc(Counter::MissPassed);
            return Disposition::Pass;
        }
        let (d, decision) = if advertised {
            self.counters.inc(Counter::DropAdvertised);
            let c = Counter::DropAdvertised;
            (Disposition::Drop(c), Decision::Drop(c))
        } else if info.key.protocol == wire::TCP
            && info.tcp_flags & (wire::build::TCP_SYN | wire::build::TCP_ACK)
                != wire::build::TCP_SYN
            && agent.warming(ctx.now_ns)
            && !agent.warm_exempt(info.key.src_addr, info.key.dst_addr)
        {
            // Warm-up after a start: maybe a backend's reply the wildcards
            // (not yet here) would translate; routed bare it would draw a
            // RST from the client. Dropped, it is retransmitted.
            self.counters.inc(Counter::DropWarmUp);
            let c = Counter::DropWarmUp;
            (Disposition::Drop(c), Decision::Drop(c))
        } else {
            self.counters.inc(Counter::MissPassed);
            (Disposition::Pass, Decision::Pass)
        };
        if info.fragment == Fragment::First {
            self.first_fragment(ctx, info, decision, d);
        }
        d
    }

    /// A later fragment: `Ok` with the fixed key to look up (its first
    /// fragment's), or `Ok(None)` to go on to the wildcards with unknown
    /// ports (no decision and no room to wait); `Err` with the disposition
    /// when its first fragment's decision settles it or it is held. Out of
    /// line: ordinary packets never come here.
    #[inline(never)]
    fn later_fragment(
        &mut self,
        ctx: &BatchCtx<'_>,
        p: &mut PacketBuf<'_>,
        info: &PacketInfo,
    ) -> Result<Option<AffinityKey>, Disposition> {
        let pkt = p.packet();
        let pkt = pkt.get(..info.total_len).unwrap_or(pkt);
        let d = match self.frag.later(info, pkt, ctx.now_ns, &mut self.counters) {
            Later::Decided(d) => d,
            Later::Held => {
                self.counters.inc(Counter::FragmentNoState);
                self.counters.inc(Counter::FragmentHeld);
                return Err(Disposition::Consumed(Counter::FragmentHeld));
            }
            Later::Overflow => {
                self.counters.inc(Counter::FragmentNoState);
                self.counters.inc(Counter::FragmentOverflow);
                return Ok(None);
            }
        };
        self.counters.inc(Counter::FragmentCacheHit);
        match d {
            Decision::Fixed(k) => Ok(Some(k)),
            Decision::Actions(actions) => {
                // The first fragment's match; its interest is not repeated
                // (no bits: a later fragment has no flags or ports).
                let hit = Hit {
                    info,
                    actions: &actions,
                    bits: 0,
                    wildcard: None,
                    origin: Origin::Wire,
                    no_interest: false,
                };
                Err(self.act(ctx, p, &hit))
            }
            Decision::Pass => Err(Disposition::Pass),
            Decision::Drop(c) => {
                self.counters.inc(c);
                Err(Disposition::Drop(c))
            }
        }
    }
}
