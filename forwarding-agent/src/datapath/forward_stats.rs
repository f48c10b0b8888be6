//! Per-worker forward statistics (the information flag's statistics per
//! forward address), kept where the worker can count without a lock or an
//! allocation: a fixed open-addressed table of atomic slots that only its
//! worker writes and that introspection sums over workers.
//!
//! Capacity: [`SLOTS`] distinct forward addresses per worker. Forward
//! addresses are a manager's next hops (a handful per service); past the
//! capacity a further address is not counted (its packets are still
//! forwarded). A worker's own writes need no read-modify-write: it is the
//! only writer, so plain loads and stores of its counters suffice.

use crate::introspection::ForwardStats;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};

/// Distinct forward addresses one worker counts (a power of two).
pub const SLOTS: usize = 4096;

#[derive(Default)]
struct Slot {
    /// 0 = empty; otherwise `1 << 32 | address` (so 0.0.0.0 is a key too).
    key: AtomicU64,
    packets: AtomicU64,
    bytes: AtomicU64,
}

/// One worker's forward statistics (written by that worker only).
pub(crate) struct ForwardTally {
    slots: Box<[Slot]>,
}

impl ForwardTally {
    pub fn new() -> Self {
        ForwardTally {
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
        }
    }

    /// Counts one packet of `bytes` (IPv4 total length) to `addr`. Called
    /// only by the owning worker.
    #[inline]
    pub fn add(&self, addr: Ipv4Addr, bytes: u64) {
        let a = u32::from(addr);
        let key = 1 << 32 | u64::from(a);
        // Fibonacci hashing: addresses of one subnet spread over the table.
        let mut i = (a.wrapping_mul(0x9E37_79B9) >> 20) as usize & (SLOTS - 1);
        for _ in 0..SLOTS {
            let Some(s) = self.slots.get(i) else { return };
            match s.key.load(Ordering::Relaxed) {
                k if k == key => {
                    let p = s.packets.load(Ordering::Relaxed);
                    s.packets.store(p + 1, Ordering::Relaxed);
                    let b = s.bytes.load(Ordering::Relaxed);
                    s.bytes.store(b + bytes, Ordering::Relaxed);
                    return;
                }
                0 => {
                    s.packets.store(1, Ordering::Relaxed);
                    s.bytes.store(bytes, Ordering::Relaxed);
                    // Readers see the counts no older than the key.
                    s.key.store(key, Ordering::Release);
                    return;
                }
                _ => i = (i + 1) & (SLOTS - 1),
            }
        }
    }

    /// Calls `f` for every address counted so far (any thread).
    pub fn for_each(&self, mut f: impl FnMut(Ipv4Addr, ForwardStats)) {
        for s in self.slots.iter() {
            let k = s.key.load(Ordering::Acquire);
            if k != 0 {
                f(
                    Ipv4Addr::from(k as u32),
                    ForwardStats {
                        packets: s.packets.load(Ordering::Relaxed),
                        bytes: s.bytes.load(Ordering::Relaxed),
                    },
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ForwardTally;
    use std::net::Ipv4Addr;

    #[test]
    fn counts_per_address_including_zero() {
        let t = ForwardTally::new();
        let a = Ipv4Addr::new(198, 51, 100, 1);
        t.add(a, 60);
        t.add(a, 40);
        t.add(Ipv4Addr::UNSPECIFIED, 10);
        let mut rows = Vec::new();
        t.for_each(|addr, s| rows.push((addr, s.packets, s.bytes)));
        rows.sort();
        assert_eq!(rows, vec![(Ipv4Addr::UNSPECIFIED, 1, 10), (a, 2, 100)]);
    }
}
