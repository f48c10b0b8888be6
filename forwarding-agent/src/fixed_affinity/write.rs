//! The fixed table's single writer (the control thread): the seqlock write
//! of one entry, insert and remove. Readers never wait for it; they retry
//! the rare read that raced with [`FixedTable::write`].

use super::{holds, FixedTable, FixedValue, InsertError, Inserted, Probe};
use super::{MAX_PROBE, TOMB, VALID, VERSION_MASK, VERSION_ONE};
use affinity_api::AffinityKey;
use std::sync::atomic::fence;
use std::sync::atomic::Ordering::{Relaxed, Release};

impl FixedTable {
    /// Rewrites the entry at `slot` (single writer): key word 1 goes odd,
    /// the other words change, then it takes the new key, state and the
    /// next even version.
    fn write(&self, slot: usize, k0: u64, k1: u64, val: u64) {
        let Some(e) = self.entry(slot) else {
            return;
        };
        let old = e.key1.load(Relaxed);
        let odd = ((old & VERSION_MASK) + VERSION_ONE) & VERSION_MASK;
        e.key1.store(old & !VERSION_MASK | odd, Relaxed);
        fence(Release);
        e.key0.store(k0, Relaxed);
        e.value.store(val, Relaxed);
        let even = (odd + VERSION_ONE) & VERSION_MASK;
        e.key1.store(k1 & !VERSION_MASK | even, Release);
    }

    /// Inserts or updates (single writer).
    pub fn insert(&self, key: &AffinityKey, value: FixedValue) -> Result<Inserted, InsertError> {
        let Probe { w0, w1, start } = self.probe(key);
        let mut free: Option<usize> = None;
        for p in 0..MAX_PROBE {
            let slot = (start + p) & self.mask;
            let Some(e) = self.entry(slot) else { break };
            let k0 = e.key0.load(Relaxed);
            let k1 = e.key1.load(Relaxed);
            if holds(k0, k1, w0, w1) {
                let old = FixedValue::decode(e.value.load(Relaxed));
                self.write(slot, w0, w1 | VALID, value.encode());
                return Ok(Inserted::Replaced(slot, old));
            }
            if k1 & VALID == 0 {
                free.get_or_insert(slot);
                if k1 & TOMB == 0 {
                    break;
                }
            }
        }
        if self.len() >= self.capacity {
            return Err(InsertError::Full);
        }
        let slot = free.ok_or(InsertError::Full)?;
        if let Some(e) = self.entry(slot) {
            e.packets.store(0, Relaxed);
            e.bytes.store(0, Relaxed);
        }
        if let Some(w) = self.data_seen.get(slot / 64) {
            w.fetch_and(!(1u64 << (slot % 64)), Relaxed);
        }
        if self.any_wide.load(Relaxed) {
            self.wide.lock().remove(&slot);
        }
        self.write(slot, w0, w1 | VALID, value.encode());
        self.len.fetch_add(1, Relaxed);
        Ok(Inserted::New(slot))
    }

    /// Removes an entry (single writer); its value if it was present.
    pub fn remove(&self, key: &AffinityKey) -> Option<FixedValue> {
        let Probe { w0, w1, start } = self.probe(key);
        for p in 0..MAX_PROBE {
            let slot = (start + p) & self.mask;
            let e = self.entry(slot)?;
            let k0 = e.key0.load(Relaxed);
            let k1 = e.key1.load(Relaxed);
            if holds(k0, k1, w0, w1) {
                let old = FixedValue::decode(e.value.load(Relaxed));
                self.write(slot, 0, TOMB, 0);
                self.len.fetch_sub(1, Relaxed);
                return Some(old);
            }
            if k1 & (VALID | TOMB) == 0 {
                return None;
            }
        }
        None
    }
}
