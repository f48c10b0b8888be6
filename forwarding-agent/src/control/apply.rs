//! Control path, step 3: install, refresh or delete the affinities a
//! verified message carries (seed rules: a fixed affinity needs a live
//! wildcard of its owner; a TTL of 0 deletes), denying what cannot be
//! applied.

use super::{ControlOutput, Incoming};
use crate::actions::ActionSet;
use crate::agent::{ds, Agent, ControlState};
use crate::counters::Counter;
use crate::fixed_affinity::{FixedValue, Inserted};
use crate::wildcard_affinity::{Upsert, WildcardEntry, WildcardLimits};
use affinity_api::{
    seg, ActionList, AffinityEntry, AffinityKey, DenyReason, FixedAffinity, ServiceMessage,
    WildcardAffinity,
};
use std::net::Ipv4Addr;
use std::sync::atomic::AtomicU32;

/// What an affinity segment says about dispatch (PROTOCOL.md, segments 1
/// and 2): its dispatch and information flags and its forward address.
#[derive(Debug, Clone, Copy)]
struct Dispatch {
    dispatch_flags: u8,
    info_flags: u8,
    forward: Ipv4Addr,
}

impl Agent {
    /// The required actions of the affinity's action list this agent does
    /// not perform, in list order (empty: none).
    fn unsupported_actions(&self, e: &AffinityEntry<'_>) -> Vec<u16> {
        let mut v = Vec::new();
        for (t, required) in e.action_list.iter().flat_map(|l| l.entries()) {
            if required && !self.config.supports_action(t) && !v.contains(&t) {
                v.push(t);
            }
        }
        v
    }

    /// The action segments of `msg` marked Required (bit 15 of their type)
    /// that this agent does not perform, each type once, in message order.
    /// Seed FIG 8B: a Required segment that cannot be processed drops the
    /// whole message.
    pub(super) fn unprocessable_required(&self, msg: &ServiceMessage<'_>) -> Vec<u16> {
        let mut v = Vec::new();
        for (s, required) in msg.segments() {
            let t = s.seg_type();
            if required
                && ActionList::is_action(t)
                && !self.config.supports_action(t)
                && !v.contains(&t)
            {
                v.push(t);
            }
        }
        v
    }

    /// The action set of affinity `e`: its enabled actions, flags, owner,
    /// precedence `rank` (search-first, service, backup precedence) and the
    /// message's manager interest data, if any (interned; counted when the
    /// table is full and then not echoed).
    fn action_set(
        &self,
        st: &mut ControlState,
        inc: &Incoming<'_, '_>,
        e: &AffinityEntry<'_>,
        dispatch: Dispatch,
        rank: (bool, u16, u16),
    ) -> ActionSet {
        let Dispatch {
            dispatch_flags,
            info_flags,
            forward,
        } = dispatch;
        let enabled = |t: u16| !self.config.disabled_actions.contains(&t);
        let manager_data = match inc.msg.sm_interest_data() {
            Some(d) => self.manager_data.intern(d).unwrap_or_else(|| {
                st.counters.inc(Counter::ManagerDataFull);
                0
            }),
            None => 0,
        };
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
            // Only fixed affinities carry one (segment 21 is not allowed in
            // a wildcard update); `apply_fixed` refuses it off TCP.
            ts_adjust: e.ts_adjust.map(Into::into),
            dispatch_flags,
            info_flags,
            forward_addr: forward.into(),
            affinity_id: e.identifier.map_or(0, |i| i.id),
            owner: inc.owner,
            search_first: rank.0,
            service_precedence: rank.1,
            backup_precedence: rank.2,
            manager_data,
        }
    }

    pub(super) fn apply_wildcard(
        &self,
        st: &mut ControlState,
        out: &mut ControlOutput,
        inc: &Incoming<'_, '_>,
        e: &AffinityEntry<'_>,
        w: WildcardAffinity,
    ) {
        let (owner, now_ns) = (inc.owner, inc.now_ns);
        let id = e.identifier.map_or(0, |i| i.id);
        let anonymous = e.identifier.is_none();
        let name = (
            owner,
            id,
            anonymous.then_some((w.key, w.src_mask, w.dst_mask)),
        );
        if w.ttl == 0 {
            if let Some(old) = self.wildcards.remove(&name) {
                self.actions.release(old.action, now_ns);
                st.counters.inc(Counter::WildcardDelete);
            }
            return;
        }
        let refused = self.unsupported_actions(e);
        if !refused.is_empty() {
            st.counters.inc(Counter::UnsupportedAction);
            if let Some(old) = self.wildcards.remove(&name) {
                self.actions.release(old.action, now_ns);
            }
            let code = DenyReason::UNSUPPORTED_REQUIRED_ACTION;
            return self.deny(st, out, inc, &refused, code, Some(e));
        }
        let sp = e.service_precedence.unwrap_or_default();
        let bp = e.backup_precedence.map_or(0, |b| b.value);
        let rank = (sp.search_first, sp.value, bp);
        let dispatch = Dispatch {
            dispatch_flags: w.dispatch_flags,
            info_flags: w.info_flags,
            forward: w.forward_addr,
        };
        let actions = self.action_set(st, inc, e, dispatch, rank);
        let Some(action) = self.actions.acquire(&actions, now_ns) else {
            st.counters.inc(Counter::ActionFull);
            let t = seg::WILDCARD_AFFINITY;
            return self.deny(st, out, inc, &[t], DenyReason::TABLE_FULL, Some(e));
        };
        let expires = inc.now.saturating_add(w.ttl.saturating_mul(10));
        let entry = WildcardEntry {
            owner,
            id,
            anonymous,
            key: w.key,
            src_mask: w.src_mask,
            dst_mask: w.dst_mask,
            search_first: sp.search_first,
            service_precedence: sp.value,
            backup_precedence: bp,
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
            expires_ds: AtomicU32::new(expires),
            ttl: w.ttl,
            admission: e.admission,
        };
        let q = self.config.owner_quota;
        let limits = WildcardLimits {
            per_owner: q.wildcards,
            patterns_per_owner: q.wildcard_patterns,
            patterns_total: self.config.max_wildcard_patterns,
        };
        match self.wildcards.upsert_limited(entry, limits) {
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
                let t = seg::WILDCARD_AFFINITY;
                return self.deny(st, out, inc, &[t], DenyReason::TABLE_FULL, Some(e));
            }
            q @ (Upsert::OwnerQuota | Upsert::PatternQuota | Upsert::PatternsFull) => {
                self.actions.release(action, now_ns);
                st.counters.inc(if matches!(q, Upsert::PatternsFull) {
                    Counter::WildcardPatternsFull
                } else {
                    Counter::WildcardQuota
                });
                let t = seg::WILDCARD_AFFINITY;
                return self.deny(st, out, inc, &[t], DenyReason::QUOTA_EXCEEDED, Some(e));
            }
        }
        // Reclaimed a second after expiry (`WildcardTable::reclaim`).
        st.next_wildcard_reclaim_ds = st.next_wildcard_reclaim_ds.min(expires.saturating_add(10));
    }

    /// The precedence rank a fixed affinity of `owner` for `key` takes:
    /// the service/backup precedence segments that apply to it, else those
    /// of the owner's strongest live wildcard matching the key; `None`
    /// without such a wildcard (the seed's supporting wildcard).
    fn fixed_rank(
        &self,
        owner: u16,
        now: u32,
        e: &AffinityEntry<'_>,
        key: &AffinityKey,
    ) -> Option<(bool, u16, u16)> {
        self.wildcards.commit();
        let snap = self.wildcards.snapshot();
        let best = snap
            .entries()
            .iter()
            .filter(|w| w.owner == owner && w.is_live(now) && w.matches(key, true))
            .min_by_key(|w| w.order())?;
        let sp = e
            .service_precedence
            .map_or((best.search_first, best.service_precedence), |s| {
                (s.search_first, s.value)
            });
        let bp = e
            .backup_precedence
            .map_or(best.backup_precedence, |b| b.value);
        Some((sp.0, sp.1, bp))
    }

    /// Whether `owner`, with precedence `rank`, may replace or delete the
    /// fixed affinity for `key`: always when there is none (or it has
    /// expired) or it is its own; otherwise only by outranking it (seed
    /// FIG 9B: a backup's affinity is ignored while the primary's exists).
    fn may_change_fixed(
        &self,
        owner: u16,
        now: u32,
        key: &AffinityKey,
        rank: Option<(bool, u16, u16)>,
    ) -> bool {
        let Some((old, _)) = self.fixed.lookup(key) else {
            return true;
        };
        if old.expires_ds <= now {
            return true;
        }
        let held = self.actions.get(old.action);
        let order = |r: (bool, u16, u16)| (!r.0, u16::MAX - r.1, r.2);
        held.owner == owner || rank.is_some_and(|r| order(r) < held.rank())
    }

    /// Applies one fixed affinity of an update; false when it was refused
    /// (a deny is queued, or another manager holds the key), so the packet
    /// the update returns is dropped.
    pub(super) fn apply_fixed(
        &self,
        st: &mut ControlState,
        out: &mut ControlOutput,
        inc: &Incoming<'_, '_>,
        e: &AffinityEntry<'_>,
        f: FixedAffinity,
    ) -> bool {
        let (owner, now, now_ns) = (inc.owner, inc.now, inc.now_ns);
        let rank = self.fixed_rank(owner, now, e, &f.key);
        if !self.may_change_fixed(owner, now, &f.key, rank) {
            // Another manager's, and not outranked: ignored (counted).
            st.counters.inc(Counter::FixedNotOwner);
            // Not installed: a packet returned with it would follow the
            // other manager's flow, so it is dropped too (f.ttl > 0).
            return f.ttl == 0;
        }
        if f.ttl == 0 {
            self.splice.forget(&f.key);
            if let Some(old) = self.fixed.remove(&f.key) {
                self.fixed_owner_dec(st, old.action);
                self.actions.release(old.action, now_ns);
                st.counters.inc(Counter::FixedDelete);
            }
            return true;
        }
        let refused = self.unsupported_actions(e);
        if !refused.is_empty() {
            st.counters.inc(Counter::UnsupportedAction);
            let code = DenyReason::UNSUPPORTED_REQUIRED_ACTION;
            self.deny(st, out, inc, &refused, code, Some(e));
            return false;
        }
        // A timestamp offset means nothing off TCP: a manager that sends
        // one there is confused (or hostile); the affinity is refused
        // rather than installed half-understood (PROTOCOL.md, segment 21).
        if e.ts_adjust.is_some() && f.key.protocol != crate::wire::TCP {
            st.counters.inc(Counter::TsAdjustNotTcp);
            let t = seg::TS_ADJUST_ACTION;
            self.deny(st, out, inc, &[t], DenyReason::MALFORMED, Some(e));
            return false;
        }
        // Seed rule: a fixed affinity needs a live wildcard of its owner.
        let Some(rank) = rank else {
            st.counters.inc(Counter::FixedNoWildcard);
            let t = seg::FIXED_AFFINITY;
            let code = DenyReason::NO_SUPPORTING_WILDCARD;
            self.deny(st, out, inc, &[t], code, Some(e));
            return false;
        };
        // Per-owner quota: a new key past it is denied (a refresh of a
        // key already held is not). Each fixed affinity holds one action
        // reference and action sets carry their owner, so this also bounds
        // the owner's share of the action table (with its wildcards).
        let held = st.fixed_by_owner.get(&owner).copied().unwrap_or(0);
        if held >= self.config.owner_quota.fixed && self.fixed.lookup(&f.key).is_none() {
            st.counters.inc(Counter::FixedQuota);
            let t = seg::FIXED_AFFINITY;
            self.deny(st, out, inc, &[t], DenyReason::QUOTA_EXCEEDED, Some(e));
            return false;
        }
        let dispatch = Dispatch {
            dispatch_flags: f.dispatch_flags,
            info_flags: f.info_flags,
            forward: f.forward_addr,
        };
        let actions = self.action_set(st, inc, e, dispatch, rank);
        let actions = self.keep_splice(&f.key, actions);
        let Some(action) = self.actions.acquire(&actions, now_ns) else {
            st.counters.inc(Counter::ActionFull);
            let t = seg::FIXED_AFFINITY;
            self.deny(st, out, inc, &[t], DenyReason::TABLE_FULL, Some(e));
            return false;
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
                Self::fixed_owner_inc(st, owner);
                st.wheel.entry(expires / 10 + 1).or_default().push(f.key);
                st.counters.inc(Counter::FixedAdd);
                true
            }
            Ok(Inserted::Replaced(_, old)) => {
                self.fixed_owner_dec(st, old.action);
                Self::fixed_owner_inc(st, owner);
                self.actions.release(old.action, now_ns);
                st.counters.inc(Counter::FixedRefresh);
                true
            }
            Err(_) => {
                self.actions.release(action, now_ns);
                st.counters.inc(Counter::FixedFull);
                let t = seg::FIXED_AFFINITY;
                self.deny(st, out, inc, &[t], DenyReason::TABLE_FULL, Some(e));
                false
            }
        }
    }

    /// Installs a fixed affinity directly (the operator's local path: the
    /// binary API, static configuration, benchmarks), bypassing the
    /// manager-ownership rule. `actions.owner` should name a manager index
    /// or be 0.
    ///
    /// Errors: [`Counter::ActionFull`] or [`Counter::FixedFull`] when the
    /// action or fixed table has no room.
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
                Self::fixed_owner_inc(&mut st, actions.owner);
                st.wheel.entry(expires / 10 + 1).or_default().push(key);
                st.counters.inc(Counter::FixedAdd);
                Ok(())
            }
            Ok(Inserted::Replaced(_, old)) => {
                self.fixed_owner_dec(&mut st, old.action);
                Self::fixed_owner_inc(&mut st, actions.owner);
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
}
