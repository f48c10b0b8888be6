//! Punt admission control: per worker and per wildcard, two token buckets
//! bound the interest matches sent toward the wildcard's manager — one for
//! new flows (a SYN, or a proved SYN-proxy cookie ACK), one for packets of
//! flows the manager already knows (non-SYN re-punts), so a flood of new
//! flows cannot starve those. Rates and depths come from the wildcard's
//! admission action (PROTOCOL.md, "20 — admission action"), defaults
//! `AdmissionAction::DEFAULT_*` when absent or 0.
//!
//! Per worker: no locks and no shared lines. The buckets sit in an
//! open-addressed table owned by the worker, allocated once (at the first
//! punt) and never grown, so a packet allocates nothing. A slot is keyed by
//! (owner, wildcard id) and the entry's address: a replaced wildcard (new
//! budgets) starts with full buckets.

use crate::counters::Counter;
use crate::wildcard_affinity::WildcardEntry;
use affinity_api::{interest, AdmissionAction};

/// Nanotokens per token: a bucket counts in 10⁻⁹ matches so that refilling
/// `elapsed_ns × rate` needs no division.
const SCALE: u64 = 1_000_000_000;

/// Slots probed from a key's home slot before the home slot is reused.
const PROBES: usize = 8;

/// One token bucket (RFC 2697-style single rate, depth `burst`).
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Nanotokens available.
    tokens: u64,
    /// The caller's monotonic nanoseconds at the last refill.
    last_ns: u64,
}

impl Bucket {
    fn full(burst: u32, now_ns: u64) -> Self {
        Bucket {
            tokens: burst as u64 * SCALE,
            last_ns: now_ns,
        }
    }

    /// Refills for the time since the last call (`rate` per second, at most
    /// `burst`), then takes one token if there is one.
    #[inline]
    fn take(&mut self, (rate, burst): (u32, u32), now_ns: u64) -> bool {
        let elapsed = now_ns.saturating_sub(self.last_ns);
        self.last_ns = self.last_ns.max(now_ns);
        let cap = burst as u64 * SCALE;
        self.tokens = self
            .tokens
            .saturating_add(elapsed.saturating_mul(rate as u64))
            .min(cap);
        if self.tokens >= SCALE {
            self.tokens -= SCALE;
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    used: bool,
    owner: u16,
    id: u32,
    /// Address of the `WildcardEntry` the buckets were filled for.
    entry: usize,
    new: Bucket,
    known: Bucket,
}

/// A worker's buckets, one pair per wildcard it has punted for.
pub(super) struct Admission {
    slots: Vec<Slot>,
    /// Slot count (a power of two) once allocated.
    size: usize,
}

impl Admission {
    /// Buckets for up to about `wildcards` wildcards (twice as many slots,
    /// at least 64), allocated at the first punt.
    pub fn new(wildcards: usize) -> Self {
        Admission {
            slots: Vec::new(),
            size: (wildcards.saturating_mul(2))
                .clamp(64, 1 << 20)
                .next_power_of_two(),
        }
    }

    /// Whether a match with interest bits `bits` (`affinity_api::interest`)
    /// on wildcard `w` may be sent at `now_ns`; `Err` names the budget it
    /// exceeded ([`Counter::PuntAdmitDropNew`] for SYN-bearing matches,
    /// [`Counter::PuntAdmitDropKnown`] for the others).
    #[inline]
    pub fn admit(&mut self, w: &WildcardEntry, bits: u16, now_ns: u64) -> Result<(), Counter> {
        let adm = w.admission.unwrap_or_default();
        let slot = self.slot(w, &adm, now_ns);
        if bits & interest::SYN != 0 {
            if slot.new.take(adm.new_budget(), now_ns) {
                return Ok(());
            }
            Err(Counter::PuntAdmitDropNew)
        } else {
            if slot.known.take(adm.known_budget(), now_ns) {
                return Ok(());
            }
            Err(Counter::PuntAdmitDropKnown)
        }
    }

    fn slot(&mut self, w: &WildcardEntry, adm: &AdmissionAction, now_ns: u64) -> &mut Slot {
        if self.slots.is_empty() {
            // Once per worker: the table never grows afterwards.
            self.slots = vec![Slot::default(); self.size];
        }
        let entry = w as *const WildcardEntry as usize;
        let mask = self.size - 1;
        let h = ((w.owner as u64) << 32 | w.id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let home = (h >> 32) as usize & mask;
        let mut pick = home;
        for i in 0..PROBES {
            let j = (home + i) & mask;
            let s = &self.slots[j];
            if !s.used || (s.owner == w.owner && s.id == w.id) {
                pick = j;
                break;
            }
        }
        let s = &mut self.slots[pick];
        if !s.used || s.owner != w.owner || s.id != w.id || s.entry != entry {
            *s = Slot {
                used: true,
                owner: w.owner,
                id: w.id,
                entry,
                new: Bucket::full(adm.new_budget().1, now_ns),
                known: Bucket::full(adm.known_budget().1, now_ns),
            };
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::Bucket;

    #[test]
    fn bucket_allows_burst_then_rate() {
        let mut b = Bucket::full(3, 0);
        let budget = (10, 3); // 10 per second, depth 3
        assert!((0..3).all(|_| b.take(budget, 0)));
        assert!(!b.take(budget, 0));
        // 100 ms later: one token.
        assert!(b.take(budget, 100_000_000));
        assert!(!b.take(budget, 100_000_000));
        // Long idle: capped at the depth.
        let t = 3_600_000_000_000;
        assert_eq!((0..10).filter(|_| b.take(budget, t)).count(), 3);
        // Time going backwards refills nothing.
        assert!(!b.take(budget, 0));
    }
}
