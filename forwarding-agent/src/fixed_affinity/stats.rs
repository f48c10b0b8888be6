//! The fixed table's per-flow statistics: packet and byte counts above
//! the entries' low bits (31 for packets, whose word's bit 31 is the
//! handshake mark; 32 for bytes). Workers add to the low words in
//! [`FixedTable::count_marked`]; the rare time one wraps (once per 2 Gi
//! packets or 4 GiB of one entry) the carry lands in a side table behind a
//! lock, and [`FixedTable::counters`] adds the two back together.

use super::{FixedTable, PACKETS_MASK};
use std::sync::atomic::Ordering::Relaxed;

impl FixedTable {
    #[cold]
    pub(super) fn carry(&self, slot: usize, packets: bool, bytes: bool) {
        let mut w = self.wide.lock();
        let e = w.entry(slot).or_default();
        e.0 += (packets as u64) << PACKETS_MASK.count_ones();
        e.1 += (bytes as u64) << 32;
        self.any_wide.store(true, Relaxed);
    }

    /// Packets and bytes counted for the entry at `slot`. (Between a low
    /// word's wrap and its carry, a read may come out 2^31 packets or 2^32
    /// bytes short.)
    pub fn counters(&self, slot: usize) -> (u64, u64) {
        let Some(e) = self.entry(slot) else {
            return (0, 0);
        };
        let (hp, hb) = if self.any_wide.load(Relaxed) {
            self.wide.lock().get(&slot).copied().unwrap_or_default()
        } else {
            (0, 0)
        };
        (
            hp + (e.packets.load(Relaxed) & PACKETS_MASK) as u64,
            hb + e.bytes.load(Relaxed) as u64,
        )
    }
}
