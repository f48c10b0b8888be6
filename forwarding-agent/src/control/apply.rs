//! Control path, step 3: install, refresh or delete the affinities a
//! verified message carries (seed rules: a fixed affinity needs a live
//! wildcard of its owner; a TTL of 0 deletes), denying what cannot be
//! applied.

use super::{ControlOutput, Incoming};
use crate::actions::ActionSet;
use crate::agent::{ds, Agent, ControlState};
use crate::config::SUPPORTED_ACTIONS;
use crate::counters::Counter;
use crate::fixed_affinity::{FixedValue, Inserted};
use crate::wildcard_affinity::{Upsert, WildcardEntry};
use affinity_api::{seg, AffinityEntry, AffinityKey, DenyReason, FixedAffinity, WildcardAffinity};
use std::net::Ipv4Addr;
use std::sync::atomic::AtomicU32;

impl Agent {
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
            ts_adjust: None,
            dispatch_flags,
            info_flags,
            forward_addr: forward.into(),
            affinity_id: e.identifier.map_or(0, |i| i.id),
            owner,
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
            return self.deny(st, out, inc, t, DenyReason::UNSUPPORTED_REQUIRED_ACTION, e);
        }
        let actions = self.action_set(e, owner, w.dispatch_flags, w.info_flags, w.forward_addr);
        let Some(action) = self.actions.acquire(&actions, now_ns) else {
            st.counters.inc(Counter::ActionFull);
            let t = seg::WILDCARD_AFFINITY;
            return self.deny(st, out, inc, t, DenyReason::TABLE_FULL, e);
        };
        let sp = e.service_precedence.unwrap_or_default();
        let expires = inc.now.saturating_add(w.ttl.saturating_mul(10));
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
            expires_ds: AtomicU32::new(expires),
            ttl: w.ttl,
            admission: e.admission,
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
                let t = seg::WILDCARD_AFFINITY;
                return self.deny(st, out, inc, t, DenyReason::TABLE_FULL, e);
            }
        }
        // Reclaimed a second after expiry (`WildcardTable::reclaim`).
        st.next_wildcard_reclaim_ds = st.next_wildcard_reclaim_ds.min(expires.saturating_add(10));
    }

    pub(super) fn apply_fixed(
        &self,
        st: &mut ControlState,
        out: &mut ControlOutput,
        inc: &Incoming<'_, '_>,
        e: &AffinityEntry<'_>,
        f: FixedAffinity,
    ) {
        let (owner, now, now_ns) = (inc.owner, inc.now, inc.now_ns);
        if f.ttl == 0 {
            self.splice.forget(&f.key);
            if let Some(old) = self.fixed.remove(&f.key) {
                self.actions.release(old.action, now_ns);
                st.counters.inc(Counter::FixedDelete);
            }
            return;
        }
        if let Some(t) = self.unsupported_action(e) {
            st.counters.inc(Counter::UnsupportedAction);
            return self.deny(st, out, inc, t, DenyReason::UNSUPPORTED_REQUIRED_ACTION, e);
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
            let t = seg::FIXED_AFFINITY;
            return self.deny(st, out, inc, t, DenyReason::NO_SUPPORTING_WILDCARD, e);
        }
        let actions = self.action_set(e, owner, f.dispatch_flags, f.info_flags, f.forward_addr);
        let actions = self.keep_splice(&f.key, actions);
        let Some(action) = self.actions.acquire(&actions, now_ns) else {
            st.counters.inc(Counter::ActionFull);
            let t = seg::FIXED_AFFINITY;
            return self.deny(st, out, inc, t, DenyReason::TABLE_FULL, e);
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
                let t = seg::FIXED_AFFINITY;
                self.deny(st, out, inc, t, DenyReason::TABLE_FULL, e);
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
}
