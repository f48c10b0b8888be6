//! Packet path, step 2: which affinity a packet belongs to — its fixed
//! affinity (looked up ahead by the batch loop, or here), else the first
//! live wildcard in search order; later fragments use the flow their first
//! fragment had (the per-worker [`FragmentCache`]).

use super::act::Hit;
use super::{matched, BatchCtx, Disposition, PacketBuf, Worker};
use crate::counters::Counter;
use crate::fixed_affinity::FixedValue;
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
                    let hit = Hit {
                        info: &info,
                        actions: &actions,
                        bits: wire::interest_bits(&info) | interest::ALL,
                        wildcard: None,
                        origin,
                    };
                    return self.act(ctx, p, &hit);
                }
                Some(_) => self.counters.inc(Counter::FixedExpired),
                None => {}
            }
        }
        // 2. Wildcards.
        let rank_ok = |limit: Option<(bool, u16)>, r: (bool, u16)| limit.is_some_and(|l| r > l);
        let ports_known = info.fragment != Fragment::Later;
        let wild = ctx.wild;
        let found = match origin {
            Origin::Wire => wild.lookup(&info.key, ports_known, ctx.now, |_| true),
            Origin::Returned(limit) => wild.lookup(&info.key, ports_known, ctx.now, |w| {
                rank_ok(limit, w.rank())
            }),
        };
        if let Some(w) = found {
            self.counters.inc(Counter::WildcardHit);
            self.cur |= matched::WILDCARD;
            let mut bits = wire::interest_bits(&info) | interest::ALL;
            // No flow state yet: this is the flow's first data (UDP: first packet).
            if bits & interest::DATA != 0 || info.key.protocol == wire::UDP {
                bits |= interest::FIRST_DATA;
            }
            // SYN proxy: only a proved cookie ACK goes on, as a new flow.
            if origin == Origin::Wire && super::synproxy::applies(&w.entry, &info) {
                match self.syn_proxy(ctx, p, &info) {
                    Ok(state) => {
                        bits |= interest::SYN;
                        self.proxied = Some(state);
                    }
                    Err(d) => return d,
                }
            }
            let actions = agent.actions.get(w.action);
            let hit = Hit {
                info: &info,
                actions: &actions,
                bits,
                wildcard: Some(&w.entry),
                origin,
            };
            let d = self.act(ctx, p, &hit);
            self.proxied = None;
            return d;
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
}
