//! The fixed affinity table: exact match on the 5-tuple.
//!
//! Design: open addressing with linear probing, one 64-byte cache line per
//! bucket holding a version word (a seqlock), one entry and that entry's
//! packet and byte counters. Why: a packet touches exactly one cache line
//! of the table in the common case — lookup and per-flow counting alike —
//! and that line is prefetchable from the hash alone, which is how the batch
//! loop hides memory latency at 16 M flows (with millions of flows every
//! line is a cache *and* TLB miss, so lines per packet is what costs).
//! Workers never take a lock; the only shared writes are the counters'
//! atomic adds, outside the version check, so they scale with VPP's worker
//! threads. The single control thread that writes bumps a bucket's version
//! around each change, so a reader that raced with it retries instead of
//! seeing a torn entry. All
//! words are atomics, so this is safe Rust. Deletion leaves a tombstone that
//! inserts reuse; a probe sequence is bounded, so a full neighbourhood means
//! the entry is refused (and counted), never unbounded work.

use affinity_api::AffinityKey;
use std::sync::atomic::{fence, AtomicU64, Ordering::*};

/// Buckets probed before an insert is refused / a lookup gives up. Linear
/// probing at ≤ 50 % load keeps clusters short, but over millions of keys
/// the longest runs reach dozens of buckets.
const MAX_PROBE: usize = 256;
const VALID: u64 = 1;
const TOMB: u64 = 2;

/// One entry; its index in the table is the entry's slot.
#[repr(align(64))]
#[derive(Default)]
struct Bucket {
    version: AtomicU64,
    /// src << 32 | dst.
    key0: AtomicU64,
    /// Ports, protocol, and the state bits (VALID, TOMB) in the low byte.
    key1: AtomicU64,
    value: AtomicU64,
    /// Added to by workers, outside the seqlock.
    packets: AtomicU64,
    bytes: AtomicU64,
}

/// What a fixed entry maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedValue {
    /// Index into the action table.
    pub action: u32,
    /// Expiry in deciseconds since the agent's epoch.
    pub expires_ds: u32,
}

impl FixedValue {
    fn encode(&self) -> u64 {
        (self.action as u64) << 32 | self.expires_ds as u64
    }
    fn decode(v: u64) -> Self {
        FixedValue {
            action: (v >> 32) as u32,
            expires_ds: v as u32,
        }
    }
}

/// Encodes a key into two words; word 1's low byte is left for state bits.
#[inline]
pub fn key_words(k: &AffinityKey) -> (u64, u64) {
    let w0 = (u32::from(k.src_addr) as u64) << 32 | u32::from(k.dst_addr) as u64;
    let w1 = (k.src_port as u64) << 48 | (k.dst_port as u64) << 32 | (k.protocol as u64) << 16;
    (w0, w1)
}

fn key_from_words(w0: u64, w1: u64) -> AffinityKey {
    AffinityKey {
        protocol: (w1 >> 16) as u8,
        src_addr: ((w0 >> 32) as u32).into(),
        dst_addr: (w0 as u32).into(),
        src_port: (w1 >> 48) as u16,
        dst_port: (w1 >> 32) as u16,
    }
}

/// Whether stored key words `k0`, `k1` are a live entry for key `w0`, `w1`.
#[inline]
fn holds(k0: u64, k1: u64, w0: u64, w1: u64) -> bool {
    k1 & VALID != 0 && k0 == w0 && k1 & !0xff == w1
}

#[inline]
fn hash(w0: u64, w1: u64) -> u64 {
    // murmur3's fmix64 over both words: every key bit reaches the low bits
    // used as the bucket index.
    let mut h = w0 ^ w1.rotate_left(29).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Why an insert failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertError {
    /// Capacity reached, or no free slot within the probe window.
    Full,
}

/// The fixed affinity table. `lookup` may run on any number of threads
/// concurrently with one writer calling `insert`/`remove`.
pub struct FixedTable {
    buckets: Box<[Bucket]>,
    mask: usize,
    capacity: usize,
    len: AtomicU64,
}

/// Result of an insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// A new entry, at this slot.
    New(usize),
    /// An existing entry was updated; its previous value.
    Replaced(usize, FixedValue),
}

impl FixedTable {
    /// A table for `capacity` entries (buckets sized for ≤ 50 % load).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let n = capacity
            .saturating_mul(2)
            .next_power_of_two()
            .max(MAX_PROBE);
        let buckets = crate::huge_pages::huge_slice(n, Bucket::default);
        FixedTable {
            buckets,
            mask: n - 1,
            capacity,
            len: AtomicU64::new(0),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
    pub fn len(&self) -> usize {
        self.len.load(Relaxed) as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Bytes of memory per entry slot, counters included.
    pub const fn bytes_per_slot() -> usize {
        std::mem::size_of::<Bucket>()
    }

    /// Bucket index a key hashes to (for prefetching).
    #[inline]
    pub fn bucket_of(&self, key: &AffinityKey) -> usize {
        let (w0, w1) = key_words(key);
        hash(w0, w1) as usize & self.mask
    }

    /// Hints the CPU to load the bucket a key hashes to, and the next one,
    /// where a linear probe continues (same page: no second TLB walk).
    #[inline]
    pub fn prefetch(&self, bucket: usize) {
        for i in [bucket, (bucket + 1) & self.mask] {
            if let Some(b) = self.buckets.get(i) {
                prefetch_line(b as *const Bucket as *const i8);
            }
        }
    }

    /// Counts a packet of `bytes` for the entry at `slot` (workers).
    #[inline]
    pub fn count(&self, slot: usize, bytes: u64) {
        if let Some(b) = self.buckets.get(slot) {
            b.packets.fetch_add(1, Relaxed);
            b.bytes.fetch_add(bytes, Relaxed);
        }
    }

    /// Packets and bytes counted for the entry at `slot`.
    pub fn counters(&self, slot: usize) -> (u64, u64) {
        self.buckets
            .get(slot)
            .map_or((0, 0), |b| (b.packets.load(Relaxed), b.bytes.load(Relaxed)))
    }

    /// Lock-free lookup: the value and slot of the entry, if present.
    #[inline]
    pub fn lookup(&self, key: &AffinityKey) -> Option<(FixedValue, usize)> {
        let (w0, w1) = key_words(key);
        let start = hash(w0, w1) as usize;
        for p in 0..MAX_PROBE {
            let bi = (start + p) & self.mask;
            let b = &self.buckets[bi];
            // Bounded retries: a writer holds a bucket for nanoseconds.
            let mut read = None;
            for _ in 0..64 {
                let v1 = b.version.load(Acquire);
                if v1 & 1 == 1 {
                    std::hint::spin_loop();
                    continue;
                }
                let k0 = b.key0.load(Relaxed);
                let k1 = b.key1.load(Relaxed);
                let val = b.value.load(Relaxed);
                fence(Acquire);
                if b.version.load(Relaxed) == v1 {
                    read = Some((k0, k1, val));
                    break;
                }
            }
            let (k0, k1, val) = read?;
            if holds(k0, k1, w0, w1) {
                return Some((FixedValue::decode(val), bi));
            }
            if k1 & (VALID | TOMB) == 0 {
                return None;
            }
        }
        None
    }

    fn write(&self, bi: usize, k0: u64, k1: u64, val: u64) {
        let b = &self.buckets[bi];
        let v = b.version.load(Relaxed);
        b.version.store(v + 1, Relaxed);
        fence(Release);
        b.key0.store(k0, Relaxed);
        b.key1.store(k1, Relaxed);
        b.value.store(val, Relaxed);
        b.version.store(v + 2, Release);
    }

    /// Inserts or updates (single writer).
    pub fn insert(&self, key: &AffinityKey, value: FixedValue) -> Result<Inserted, InsertError> {
        let (w0, w1) = key_words(key);
        let start = hash(w0, w1) as usize;
        let mut free: Option<usize> = None;
        for p in 0..MAX_PROBE {
            let bi = (start + p) & self.mask;
            let b = &self.buckets[bi];
            let k0 = b.key0.load(Relaxed);
            let k1 = b.key1.load(Relaxed);
            if holds(k0, k1, w0, w1) {
                let old = FixedValue::decode(b.value.load(Relaxed));
                self.write(bi, w0, w1 | VALID, value.encode());
                return Ok(Inserted::Replaced(bi, old));
            }
            if k1 & VALID == 0 {
                free.get_or_insert(bi);
                if k1 & TOMB == 0 {
                    break;
                }
            }
        }
        if self.len() >= self.capacity {
            return Err(InsertError::Full);
        }
        let bi = free.ok_or(InsertError::Full)?;
        let b = &self.buckets[bi];
        b.packets.store(0, Relaxed);
        b.bytes.store(0, Relaxed);
        self.write(bi, w0, w1 | VALID, value.encode());
        self.len.fetch_add(1, Relaxed);
        Ok(Inserted::New(bi))
    }

    /// Removes an entry (single writer); its value if it was present.
    pub fn remove(&self, key: &AffinityKey) -> Option<FixedValue> {
        let (w0, w1) = key_words(key);
        let start = hash(w0, w1) as usize;
        for p in 0..MAX_PROBE {
            let bi = (start + p) & self.mask;
            let b = &self.buckets[bi];
            let k0 = b.key0.load(Relaxed);
            let k1 = b.key1.load(Relaxed);
            if holds(k0, k1, w0, w1) {
                let old = FixedValue::decode(b.value.load(Relaxed));
                self.write(bi, 0, TOMB, 0);
                self.len.fetch_sub(1, Relaxed);
                return Some(old);
            }
            if k1 & (VALID | TOMB) == 0 {
                return None;
            }
        }
        None
    }

    /// Visits live entries (control thread; for show commands and dumps).
    pub fn for_each(&self, mut f: impl FnMut(usize, AffinityKey, FixedValue) -> bool) {
        for (bi, b) in self.buckets.iter().enumerate() {
            let k1 = b.key1.load(Relaxed);
            if k1 & VALID != 0 {
                let k0 = b.key0.load(Relaxed);
                let v = FixedValue::decode(b.value.load(Relaxed));
                if !f(bi, key_from_words(k0, k1), v) {
                    return;
                }
            }
        }
    }
}

/// Hints the CPU to load the cache line at `p` (no effect on correctness).
#[inline]
pub(crate) fn prefetch_line(p: *const i8) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: prefetch is a hint; it never faults, even on invalid
        // addresses, and `p` points into a live allocation anyway.
        unsafe { std::arch::x86_64::_mm_prefetch(p, std::arch::x86_64::_MM_HINT_T0) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn key(i: u32) -> AffinityKey {
        AffinityKey {
            protocol: 6,
            src_addr: Ipv4Addr::from(0xc612_0000 + i),
            dst_addr: Ipv4Addr::new(203, 0, 113, 10),
            src_port: (i % 60000) as u16 + 1,
            dst_port: 80,
        }
    }

    #[test]
    fn entry_fits_in_64_bytes() {
        assert!(FixedTable::bytes_per_slot() <= 64);
        assert_eq!(std::mem::size_of::<Bucket>(), 64);
    }

    #[test]
    fn insert_lookup_remove_and_capacity() {
        let t = FixedTable::new(1000);
        for i in 0..1000 {
            assert!(matches!(
                t.insert(
                    &key(i),
                    FixedValue {
                        action: i,
                        expires_ds: 7
                    }
                ),
                Ok(Inserted::New(_))
            ));
        }
        assert_eq!(
            t.insert(
                &key(5000),
                FixedValue {
                    action: 1,
                    expires_ds: 1
                }
            ),
            Err(InsertError::Full)
        );
        for i in 0..1000 {
            assert_eq!(t.lookup(&key(i)).unwrap().0.action, i);
        }
        assert!(t.lookup(&key(5000)).is_none());
        assert!(matches!(
            t.insert(
                &key(3),
                FixedValue {
                    action: 9,
                    expires_ds: 8
                }
            ),
            Ok(Inserted::Replaced(_, FixedValue { action: 3, .. }))
        ));
        assert_eq!(t.remove(&key(3)).unwrap().action, 9);
        assert!(t.lookup(&key(3)).is_none());
        assert!(t
            .insert(
                &key(5000),
                FixedValue {
                    action: 1,
                    expires_ds: 1
                }
            )
            .is_ok());
        let mut n = 0;
        t.for_each(|_, _, _| {
            n += 1;
            true
        });
        assert_eq!(n, 1000);
    }

    #[test]
    fn counters_accumulate_and_restart_with_a_new_entry() {
        let t = FixedTable::new(16);
        let v = FixedValue {
            action: 1,
            expires_ds: 1,
        };
        let Ok(Inserted::New(slot)) = t.insert(&key(1), v) else {
            panic!("not inserted")
        };
        t.count(slot, 60);
        t.count(slot, 40);
        assert_eq!(t.counters(slot), (2, 100));
        // A refresh keeps them; a new entry in the same slot starts at zero.
        assert!(matches!(t.insert(&key(1), v), Ok(Inserted::Replaced(s, _)) if s == slot));
        assert_eq!(t.counters(slot), (2, 100));
        t.remove(&key(1));
        let Ok(Inserted::New(again)) = t.insert(&key(1), v) else {
            panic!("not inserted")
        };
        assert_eq!(again, slot, "the tombstone is reused");
        assert_eq!(t.counters(slot), (0, 0));
        assert_eq!(t.counters(usize::MAX), (0, 0));
    }

    #[test]
    fn readers_never_see_torn_entries() {
        use std::sync::Arc;
        let t = Arc::new(FixedTable::new(64));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (t, stop) = (t.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut seen = 0u64;
                    while !stop.load(Relaxed) {
                        for i in 0..32 {
                            if let Some((v, _)) = t.lookup(&key(i)) {
                                // Writer always stores action == expires_ds.
                                assert_eq!(v.action, v.expires_ds, "torn read");
                                seen += 1;
                            }
                        }
                    }
                    seen
                })
            })
            .collect();
        for round in 0..20_000u32 {
            let i = round % 32;
            if round % 3 == 0 {
                t.remove(&key(i));
            } else {
                t.insert(
                    &key(i),
                    FixedValue {
                        action: round,
                        expires_ds: round,
                    },
                )
                .unwrap();
            }
        }
        stop.store(true, Relaxed);
        for r in readers {
            r.join().unwrap();
        }
    }
}

#[cfg(test)]
mod fill_tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// A table takes its full capacity of sequential-looking keys.
    #[test]
    fn fills_to_capacity_with_clustered_keys() {
        let n = 300_000u32;
        let t = FixedTable::new(n as usize);
        for i in 0..n {
            let k = AffinityKey {
                protocol: 6,
                src_addr: Ipv4Addr::from(0xc612_0000u32 + (i >> 8)),
                dst_addr: Ipv4Addr::new(203, 0, 113, 10),
                src_port: 1024 + (i & 0xff) as u16,
                dst_port: 80,
            };
            assert!(
                t.insert(
                    &k,
                    FixedValue {
                        action: 0,
                        expires_ds: 1
                    }
                )
                .is_ok(),
                "refused at {i}"
            );
        }
        assert_eq!(t.len(), n as usize);
    }
}
