//! What `show` and the APIs read: the rows of `show affinity fixed`,
//! `wildcard` and `managers`, counters summed over threads, and forward
//! statistics. Read-only over the agent's state (except `clear`), apart
//! from the control path.

use crate::actions::ActionSet;
use crate::agent::{ds, Agent};
use crate::counters::{Counter, SharedCounters};
use affinity_api::{AffinityKey, ReplayWindow};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// A manager the agent has heard from (one row of `show affinity managers`).
#[derive(Debug, Clone)]
pub struct ManagerInfo {
    pub address: Ipv4Addr,
    pub name: String,
    /// The caller's monotonic nanoseconds.
    pub last_heard_ns: u64,
    pub messages: u64,
    pub replay: ReplayWindow,
    /// When a stale-sequence deny was last sent to it (monotonic ns), so
    /// replayed old messages draw at most one deny a second.
    pub last_stale_deny_ns: Option<u64>,
}

/// Per forward address statistics (information flag).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwardStats {
    pub packets: u64,
    /// IPv4 total lengths, summed.
    pub bytes: u64,
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
    /// Whether a handshake-complete TCP segment (ACK without SYN or RST)
    /// hit it since it was added or since the last SYN on it: the mark the
    /// activity reports carry (`affinity_api::activity`); always false for
    /// UDP and ICMP, and without `per_flow_counters`.
    pub handshake_complete: bool,
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
        *self.forward_cleared.lock() = self.forward_totals();
    }

    /// Manager addresses by owner index.
    fn manager_addrs(&self) -> Vec<Ipv4Addr> {
        self.published.load().managers.clone()
    }

    /// Fixed affinities matching `filter`, at most `limit`.
    pub fn fixed_entries(
        &self,
        now_ns: u64,
        limit: usize,
        filter: impl Fn(&AffinityKey) -> bool,
    ) -> Vec<FixedRow> {
        let now = ds(now_ns) as i64;
        let managers = self.manager_addrs();
        let mut rows = Vec::new();
        if limit == 0 {
            return rows;
        }
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
                    handshake_complete: self.fixed.handshake_complete(slot),
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
        let managers = self.manager_addrs();
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

    /// The prefixes live wildcards advertise (advertise action), as
    /// (address, mask), address not yet masked, one per wildcard: what a
    /// host should route toward the agent (seed FIG 10H).
    pub fn advertised_prefixes(&self, now_ns: u64) -> Vec<(Ipv4Addr, Ipv4Addr)> {
        let now = ds(now_ns);
        self.wildcards
            .snapshot()
            .entries()
            .iter()
            .filter(|w| w.expires_ds.load(Relaxed) > now)
            .filter_map(|w| w.advertise)
            .collect()
    }

    /// Managers heard from.
    pub fn managers(&self) -> Vec<ManagerInfo> {
        self.control.lock().managers.clone()
    }

    /// Every worker's forward statistics, summed per address, since start.
    fn forward_totals(&self) -> HashMap<Ipv4Addr, ForwardStats> {
        let mut sum: HashMap<Ipv4Addr, ForwardStats> = HashMap::new();
        for w in self.worker_forward.lock().iter() {
            w.for_each(|addr, s| {
                let e = sum.entry(addr).or_default();
                e.packets += s.packets;
                e.bytes += s.bytes;
            });
        }
        sum
    }

    /// Statistics per forward address (information flag), since the last
    /// [`Agent::clear_counters`], in address order; addresses with no
    /// packet since then are left out.
    pub fn forward_stats(&self) -> Vec<(Ipv4Addr, ForwardStats)> {
        let cleared = self.forward_cleared.lock();
        let mut v: Vec<_> = self
            .forward_totals()
            .into_iter()
            .filter_map(|(a, s)| {
                let base = cleared.get(&a).copied().unwrap_or_default();
                let s = ForwardStats {
                    packets: s.packets.saturating_sub(base.packets),
                    bytes: s.bytes.saturating_sub(base.bytes),
                };
                (s.packets != 0).then_some((a, s))
            })
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
        self.hold.len()
    }

    /// Early data the SYN proxy holds for connections not yet spliced, all
    /// of them: (packets, bytes of IPv4 packets); bounded by
    /// `synproxy::EARLY_DATA_TOTAL_BYTES`.
    pub fn syn_proxy_held(&self) -> (usize, usize) {
        self.splice.held()
    }

    /// How full every table is (entries used, capacity), and each
    /// manager's share: for `show`/`status` and export.
    pub fn occupancy(&self) -> Occupancy {
        let st = self.control.lock();
        let per_owner = st
            .managers
            .iter()
            .enumerate()
            .map(|(i, m)| OwnerOccupancy {
                manager: m.address,
                fixed: st.fixed_by_owner.get(&(i as u16)).copied().unwrap_or(0),
                wildcards: self.wildcards.owner_len(i as u16),
            })
            .collect();
        Occupancy {
            fixed: (self.fixed.len(), self.fixed.capacity()),
            actions: (self.actions.in_use(), self.actions.capacity()),
            wildcards: (self.wildcards.len(), self.config.wildcard_capacity),
            wildcard_patterns: self.wildcards.pattern_count(),
            wildcard_patterns_cap: self.config.max_wildcard_patterns,
            managers: (st.managers.len(), self.config.max_managers),
            held: (self.hold.len(), self.config.hold_limit),
            per_owner,
        }
    }
}

/// Table occupancy, each as (entries used, capacity); see
/// [`Agent::occupancy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occupancy {
    /// Fixed affinities (entries, expired but not yet reclaimed included).
    pub fixed: (usize, usize),
    /// Distinct action sets (entries; capacity includes the wildcards' share).
    pub actions: (usize, usize),
    /// Installed wildcards (entries).
    pub wildcards: (usize, usize),
    /// Distinct wildcard mask patterns (groups a look-up may probe).
    pub wildcard_patterns: usize,
    /// The agent-wide cap on them ([`crate::AgentConfig::max_wildcard_patterns`],
    /// the host agent's `--max-wildcard-patterns`, default 12): a wildcard
    /// that would add one more is denied (`wildcard-patterns-full`).
    pub wildcard_patterns_cap: usize,
    /// Managers remembered (entries, against `max_managers`).
    pub managers: (usize, usize),
    /// Held packets (all workers, against `hold_limit`).
    pub held: (usize, usize),
    /// Each manager's share, in owner-index order.
    pub per_owner: Vec<OwnerOccupancy>,
}

/// One manager's entries (against [`crate::OwnerQuota`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerOccupancy {
    /// The manager's identity address.
    pub manager: Ipv4Addr,
    /// Its fixed affinities (entries).
    pub fixed: usize,
    /// Its wildcards (entries).
    pub wildcards: usize,
}
