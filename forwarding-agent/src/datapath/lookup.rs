//! Packet path, step 2: which affinity a packet belongs to — its fixed
//! affinity (looked up ahead by the batch loop, or here), else the first
//! live wildcard in search order; later fragments use the flow their first
//! fragment had (the per-worker [`FragmentCache`]).

use super::act::Hit;
use super::{matched, BatchCtx, Disposition, PacketBuf, Worker};
use crate::counters::Counter;
use crate::fixed_affinity::FixedValue;
use crate::wildcard_affinity::WildcardEntry;
use crate::wire::{self, Fragment, PacketInfo};
use affinity_api::{interest, AffinityKey};
use std::collections::{HashMap, VecDeque};

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

/// (source, destination, protocol, IP id): the fragments of one datagram.
type FragKey = (u32, u32, u8, u16);

/// A worker's first-fragment decisions, kept for the later fragments of the
/// same datagram (oldest forgotten first, at most `cap`).
pub(super) struct FragmentCache {
    map: HashMap<FragKey, AffinityKey>,
    order: VecDeque<FragKey>,
    cap: usize,
}

impl FragmentCache {
    pub fn new(cap: usize) -> Self {
        FragmentCache {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    #[inline]
    fn get(&self, info: &PacketInfo) -> Option<AffinityKey> {
        self.map.get(&frag_key(info)).copied()
    }

    fn remember(&mut self, info: &PacketInfo) {
        if self.cap == 0 {
            return;
        }
        let k = frag_key(info);
        if self.map.insert(k, info.key).is_none() {
            self.order.push_back(k);
            while self.order.len() > self.cap {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }
}

fn frag_key(info: &PacketInfo) -> FragKey {
    (
        u32::from(info.key.src_addr),
        u32::from(info.key.dst_addr),
        info.key.protocol,
        info.ip_id,
    )
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
        self.cur |= matched::WILDCARD;
        let mut bits = wire::interest_bits(&info) | interest::ALL;
        if bits & interest::DATA != 0 || info.key.protocol == wire::UDP {
            bits |= interest::FIRST_DATA;
        }
        let actions = ctx.agent.actions.get(w.action);
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

    /// One packet, from its parse result to its disposition. `#[inline]`:
    /// the batch loop is in another file, and without the hint the call
    /// may cross codegen units, where it is never inlined.
    #[inline]
    pub(super) fn process_one(
        &mut self,
        ctx: &BatchCtx<'_>,
        p: &mut PacketBuf<'_>,
        info: Result<PacketInfo, wire::PacketError>,
        pre: Lookup,
        origin: Origin,
    ) -> Disposition {
        self.counters.inc(Counter::Packets);
        let info = match info {
            Ok(i) => i,
            Err(_) => return self.malformed(ctx),
        };
        let agent = ctx.agent;
        // 1. Fixed affinity (later fragments: the first fragment's flow).
        let fixed_key = match info.fragment {
            Fragment::Later => {
                let k = self.frag.get(&info);
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
                Some((v, slot)) if v.expires_ds > ctx.now => {
                    self.counters.inc(Counter::FixedHit);
                    self.cur |= matched::FIXED;
                    if info.fragment == Fragment::First {
                        self.frag.remember(&info);
                    }
                    if agent.config.per_flow_counters {
                        agent.fixed.count(slot, info.total_len as u64);
                    }
                    let actions = agent.actions.get(v.action);
                    let mut bits = wire::interest_bits(&info) | interest::ALL;
                    // First data (PROTOCOL.md, interest bit 7): looked up
                    // only for affinities that ask for it, since the mark
                    // costs a shared write per data packet.
                    if actions
                        .interest
                        .is_some_and(|c| c.mask & interest::FIRST_DATA != 0)
                        && (bits & interest::DATA != 0 || info.key.protocol == wire::UDP)
                        && agent.fixed.first_data(slot)
                    {
                        bits |= interest::FIRST_DATA;
                    }
                    let hit = Hit {
                        info: &info,
                        actions: &actions,
                        bits,
                        wildcard: None,
                        origin,
                        no_interest: false,
                    };
                    let d = self.act(ctx, p, &hit);
                    return self.chain(ctx, p, d, origin);
                }
                Some(_) => self.counters.inc(Counter::FixedExpired),
                None => {}
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
            self.cur |= matched::WILDCARD;
            let actions = agent.actions.get(w.action);
            let hit = Hit {
                info: &info,
                actions: &actions,
                bits: wire::interest_bits(&info) | interest::ALL,
                wildcard: Some(&w.entry),
                origin,
                no_interest: true,
            };
            let d = self.act(ctx, p, &hit);
            return self.chain(ctx, p, d, origin);
        }
        if let Some(w) = found {
            self.counters.inc(Counter::WildcardHit);
            self.cur |= matched::WILDCARD;
            let mut bits = wire::interest_bits(&info) | interest::ALL;
            // No flow state yet: this is the flow's first data (UDP: first packet).
            if bits & interest::DATA != 0 || info.key.protocol == wire::UDP {
                bits |= interest::FIRST_DATA;
            }
            let actions = agent.actions.get(w.action);
            let hit = Hit {
                info: &info,
                actions: &actions,
                bits,
                wildcard: Some(&w.entry),
                origin,
                no_interest: false,
            };
            return self.act(ctx, p, &hit);
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
        if advertised {
            self.counters.inc(Counter::DropAdvertised);
            return Disposition::Drop(Counter::DropAdvertised);
        }
        self.counters.inc(Counter::MissPassed);
        Disposition::Pass
    }
}
