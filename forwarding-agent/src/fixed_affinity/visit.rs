//! Visiting the fixed table's live entries (control thread; for show
//! commands and dumps): the stored key words decoded back into keys.

use super::{FixedTable, FixedValue, VALID};
use affinity_api::AffinityKey;
use std::sync::atomic::Ordering::Relaxed;

fn key_from_words(w0: u64, w1: u64) -> AffinityKey {
    AffinityKey {
        protocol: (w1 >> 24) as u8,
        src_addr: ((w0 >> 32) as u32).into(),
        dst_addr: (w0 as u32).into(),
        src_port: (w1 >> 48) as u16,
        dst_port: (w1 >> 32) as u16,
    }
}

impl FixedTable {
    /// The live entry at `slot`, if any (control thread; for the prompt
    /// activity reports of entries a worker saw newly marked). May be a
    /// different key than when the slot was noted: the caller checks.
    pub fn entry_at(&self, slot: usize) -> Option<(AffinityKey, FixedValue)> {
        let e = self.lines.get(slot / 2).map(|l| &l.0[slot % 2])?;
        let k1 = e.key1.load(Relaxed);
        if k1 & VALID == 0 {
            return None;
        }
        let k0 = e.key0.load(Relaxed);
        let v = FixedValue::decode(e.value.load(Relaxed));
        Some((key_from_words(k0, k1), v))
    }

    /// Visits live entries (control thread; for show commands and dumps).
    pub fn for_each(&self, mut f: impl FnMut(usize, AffinityKey, FixedValue) -> bool) {
        for (i, line) in self.lines.iter().enumerate() {
            for (j, e) in line.0.iter().enumerate() {
                let k1 = e.key1.load(Relaxed);
                if k1 & VALID != 0 {
                    let k0 = e.key0.load(Relaxed);
                    let v = FixedValue::decode(e.value.load(Relaxed));
                    if !f(2 * i + j, key_from_words(k0, k1), v) {
                        return;
                    }
                }
            }
        }
    }
}
