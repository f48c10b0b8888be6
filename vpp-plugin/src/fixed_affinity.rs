//! The fixed affinity table: exact match on the 5-tuple.
//!
//! Design: bucketised open addressing, one 64-byte cache line per bucket
//! holding a version word and two 24-byte entries, with per-bucket versions
//! (a seqlock). Why: a lookup touches one cache line in the common case
//! (prefetchable from the hash alone, which is how the batch loop hides
//! memory latency at 16 M flows); workers never take a lock or write shared
//! memory, so they scale with VPP's worker threads; and the single control
//! thread that writes bumps a bucket's version around each change, so a
//! reader that raced with it retries instead of seeing a torn entry. All
//! words are atomics, so this is safe Rust. Deletion leaves a tombstone that
//! inserts reuse; a probe sequence is bounded, so a full neighbourhood means
//! the entry is refused (and counted), never unbounded work.

use affinity_api::AffinityKey;
use std::sync::atomic::{fence, AtomicU64, Ordering::*};

/// Buckets probed before an insert is refused / a lookup gives up. Linear
/// probing at ≤ 50 % load keeps clusters short, but over millions of keys
/// the longest runs reach dozens of buckets.
const MAX_PROBE: usize = 128;
pub(crate) const WAYS: usize = 2;
const VALID: u64 = 1;
const TOMB: u64 = 2;

#[repr(align(64))]
#[derive(Default)]
struct Bucket {
    version: AtomicU64,
    /// Per way: key word 0 (src<<32|dst), key word 1 (ports, proto, state), value.
    words: [AtomicU64; 3 * WAYS],
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
            .div_ceil(WAYS)
            .saturating_mul(2)
            .next_power_of_two()
            .max(MAX_PROBE);
        let buckets: Box<[Bucket]> = (0..n).map(|_| Bucket::default()).collect();
        advise_huge_pages(&buckets);
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
    /// Number of slots (for per-slot counters).
    pub fn slots(&self) -> usize {
        self.buckets.len() * WAYS
    }
    /// Bytes of memory per entry slot.
    pub const fn bytes_per_slot() -> usize {
        std::mem::size_of::<Bucket>() / WAYS
    }

    /// Bucket index a key hashes to (for prefetching).
    #[inline]
    pub fn bucket_of(&self, key: &AffinityKey) -> usize {
        let (w0, w1) = key_words(key);
        hash(w0, w1) as usize & self.mask
    }

    /// Hints the CPU to load the bucket a key hashes to.
    #[inline]
    pub fn prefetch(&self, bucket: usize) {
        if let Some(b) = self.buckets.get(bucket) {
            prefetch_line(b as *const Bucket as *const i8);
        }
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
            let mut found = None;
            let mut saw_empty = false;
            let mut consistent = false;
            for _ in 0..64 {
                let v1 = b.version.load(Acquire);
                if v1 & 1 == 1 {
                    std::hint::spin_loop();
                    continue;
                }
                found = None;
                saw_empty = false;
                for way in 0..WAYS {
                    let k0 = b.words[3 * way].load(Relaxed);
                    let k1 = b.words[3 * way + 1].load(Relaxed);
                    let val = b.words[3 * way + 2].load(Relaxed);
                    if k1 & VALID != 0 && k0 == w0 && k1 & !0xff == w1 {
                        found = Some((FixedValue::decode(val), bi * WAYS + way));
                    } else if k1 & (VALID | TOMB) == 0 {
                        saw_empty = true;
                    }
                }
                fence(Acquire);
                if b.version.load(Relaxed) == v1 {
                    consistent = true;
                    break;
                }
            }
            if !consistent {
                return None;
            }
            if found.is_some() {
                return found;
            }
            if saw_empty {
                return None;
            }
        }
        None
    }

    fn write_way(&self, bi: usize, way: usize, k0: u64, k1: u64, val: u64) {
        let b = &self.buckets[bi];
        let v = b.version.load(Relaxed);
        b.version.store(v + 1, Relaxed);
        fence(Release);
        b.words[3 * way].store(k0, Relaxed);
        b.words[3 * way + 1].store(k1, Relaxed);
        b.words[3 * way + 2].store(val, Relaxed);
        b.version.store(v + 2, Release);
    }

    /// Inserts or updates (single writer).
    pub fn insert(&self, key: &AffinityKey, value: FixedValue) -> Result<Inserted, InsertError> {
        let (w0, w1) = key_words(key);
        let start = hash(w0, w1) as usize;
        let mut free: Option<(usize, usize)> = None;
        for p in 0..MAX_PROBE {
            let bi = (start + p) & self.mask;
            let b = &self.buckets[bi];
            let mut empty = false;
            for way in 0..WAYS {
                let k0 = b.words[3 * way].load(Relaxed);
                let k1 = b.words[3 * way + 1].load(Relaxed);
                if k1 & VALID != 0 && k0 == w0 && k1 & !0xff == w1 {
                    let old = FixedValue::decode(b.words[3 * way + 2].load(Relaxed));
                    self.write_way(bi, way, w0, w1 | VALID, value.encode());
                    return Ok(Inserted::Replaced(bi * WAYS + way, old));
                }
                if k1 & VALID == 0 {
                    free.get_or_insert((bi, way));
                    empty |= k1 & TOMB == 0;
                }
            }
            if empty {
                break;
            }
        }
        if self.len() >= self.capacity {
            return Err(InsertError::Full);
        }
        let (bi, way) = free.ok_or(InsertError::Full)?;
        self.write_way(bi, way, w0, w1 | VALID, value.encode());
        self.len.fetch_add(1, Relaxed);
        Ok(Inserted::New(bi * WAYS + way))
    }

    /// Removes an entry (single writer); its value if it was present.
    pub fn remove(&self, key: &AffinityKey) -> Option<FixedValue> {
        let (w0, w1) = key_words(key);
        let start = hash(w0, w1) as usize;
        for p in 0..MAX_PROBE {
            let bi = (start + p) & self.mask;
            let b = &self.buckets[bi];
            let mut empty = false;
            for way in 0..WAYS {
                let k0 = b.words[3 * way].load(Relaxed);
                let k1 = b.words[3 * way + 1].load(Relaxed);
                if k1 & VALID != 0 && k0 == w0 && k1 & !0xff == w1 {
                    let old = FixedValue::decode(b.words[3 * way + 2].load(Relaxed));
                    self.write_way(bi, way, 0, TOMB, 0);
                    self.len.fetch_sub(1, Relaxed);
                    return Some(old);
                }
                empty |= k1 & (VALID | TOMB) == 0;
            }
            if empty {
                return None;
            }
        }
        None
    }

    /// Visits live entries (control thread; for show commands and dumps).
    pub fn for_each(&self, mut f: impl FnMut(usize, AffinityKey, FixedValue) -> bool) {
        for (bi, b) in self.buckets.iter().enumerate() {
            for way in 0..WAYS {
                let k1 = b.words[3 * way + 1].load(Relaxed);
                if k1 & VALID != 0 {
                    let k0 = b.words[3 * way].load(Relaxed);
                    let v = FixedValue::decode(b.words[3 * way + 2].load(Relaxed));
                    if !f(bi * WAYS + way, key_from_words(k0, k1), v) {
                        return;
                    }
                }
            }
        }
    }
}

/// Asks the kernel to back a large table with transparent huge pages: at
/// millions of entries every random lookup would otherwise also miss the
/// TLB. A hint only; without THP nothing changes.
pub(crate) fn advise_huge_pages<T>(table: &[T]) {
    let len = std::mem::size_of_val(table);
    const HUGE: usize = 2 << 20;
    let start = table.as_ptr() as usize;
    let aligned = start.next_multiple_of(HUGE);
    if len < 2 * HUGE || aligned >= start + len {
        return;
    }
    let n = (start + len - aligned) / HUGE * HUGE;
    #[cfg(target_os = "linux")]
    // SAFETY: FFI madvise(2) over a range inside a live allocation we own;
    // MADV_HUGEPAGE only changes how the kernel backs the pages.
    unsafe {
        libc::madvise(aligned as *mut libc::c_void, n, libc::MADV_HUGEPAGE);
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
