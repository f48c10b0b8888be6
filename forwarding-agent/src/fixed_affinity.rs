//! The fixed affinity table: exact match on the 5-tuple.
//!
//! Length: over 600 lines because about 240 of them are its unit tests,
//! which check the private line layout and probe bounds and so stay here.
//!
//! Design: open addressing with linear probing over 32-byte entries, two to
//! a 64-byte cache line; a key's home is the first entry of a line, and the
//! batch loop prefetches that line and the next: at 49.6 % load (the most
//! kept here) 88 % of keys are in their home line and 96.6 % in the two.
//! An entry holds the
//! key, the value, the state bits and a version (a seqlock) in one word with
//! the ports, and the low 32 bits of its packet and byte counters. Why: with
//! millions of flows every line is a cache *and* a TLB miss, so what costs is
//! lines and pages per packet; the line is prefetchable from the hash alone,
//! which is how the batch loop hides the latency, and halving the entry
//! halves the pages the table spans (2 GiB instead of 4 at 16 M flows, each
//! flow with an entry per direction; with 64-byte entries the 16 M-flow
//! bench case was 108 ns per packet, with these 93–98). Prefetching the
//! next line too, measured A/B in one sitting (40 rounds, 3 runs each):
//! 16 M flows 108–109 ns instead of 116–118, 1 M flows 103–104 instead of
//! 100–101; the few keys further away cost a miss the loop cannot hide.
//! A counter's high bits move to a side table the rare time its low 32 bits
//! wrap (once per 4 Gi packets or 4 GiB of one entry).
//! Workers never take a lock; the only shared writes are the counters'
//! atomic adds, outside the version check, so they scale with VPP's worker
//! threads. The single control thread that writes bumps an entry's version
//! around each change, so a reader that raced with it retries instead of
//! seeing a torn entry. All words are atomics, so this is safe Rust.
//! Deletion leaves a tombstone that inserts reuse; a probe sequence is
//! bounded, so a full neighbourhood means the entry is refused (and
//! counted), never unbounded work.

use affinity_api::AffinityKey;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64};

/// Entries probed before an insert is refused / a lookup gives up. Linear
/// probing at ≤ 50 % load keeps clusters short, but over millions of keys
/// the longest runs reach dozens of entries.
const MAX_PROBE: usize = 256;
/// State bits, the low two of key word 1.
const VALID: u64 = 1;
const TOMB: u64 = 2;
/// The version: bits 2..24 of key word 1, odd while a write is under way.
const VERSION_ONE: u64 = 1 << 2;
const VERSION_MASK: u64 = 0x00ff_fffc;
/// The key's bits in key word 1: ports and protocol.
const KEY1_MASK: u64 = !0x00ff_ffff;

/// One entry; its index in the table is the entry's slot.
#[repr(align(32))]
#[derive(Default)]
struct Entry {
    /// src << 32 | dst.
    key0: AtomicU64,
    /// Ports and protocol (KEY1_MASK), version, state bits.
    key1: AtomicU64,
    value: AtomicU64,
    /// Low 32 bits of the counts; added to by workers, outside the seqlock.
    packets: AtomicU32,
    bytes: AtomicU32,
}

/// Two entries in one cache line.
#[repr(align(64))]
#[derive(Default)]
struct Line([Entry; 2]);

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

/// Encodes a key into two words; word 1's low 24 bits are left for the
/// version and state bits.
#[inline]
fn key_words(k: &AffinityKey) -> (u64, u64) {
    let w0 = (u32::from(k.src_addr) as u64) << 32 | u32::from(k.dst_addr) as u64;
    let w1 = (k.src_port as u64) << 48 | (k.dst_port as u64) << 32 | (k.protocol as u64) << 24;
    (w0, w1)
}

fn key_from_words(w0: u64, w1: u64) -> AffinityKey {
    AffinityKey {
        protocol: (w1 >> 24) as u8,
        src_addr: ((w0 >> 32) as u32).into(),
        dst_addr: (w0 as u32).into(),
        src_port: (w1 >> 48) as u16,
        dst_port: (w1 >> 32) as u16,
    }
}

/// Whether stored key words `k0`, `k1` are a live entry for key `w0`, `w1`.
#[inline]
fn holds(k0: u64, k1: u64, w0: u64, w1: u64) -> bool {
    k1 & VALID != 0 && k0 == w0 && k1 & KEY1_MASK == w1
}

#[inline]
fn hash(w0: u64, w1: u64) -> u64 {
    // murmur3's fmix64 over both words: every key bit reaches the low bits
    // used as the line index.
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
    lines: Box<[Line]>,
    /// Entries - 1 (a power of two minus one).
    mask: usize,
    capacity: usize,
    len: AtomicU64,
    /// Counts above the entries' low 32 bits: slot → (packets, bytes).
    wide: Mutex<HashMap<usize, (u64, u64)>>,
    /// Whether `wide` may hold anything (saves inserts the lock).
    any_wide: AtomicBool,
    /// One bit per slot: a payload-carrying packet has hit the entry (the
    /// interest bit FIRST_DATA, PROTOCOL.md "13 — interest criteria").
    /// Apart from the entries so that only affinities whose interest mask
    /// asks for first data touch it (one bit per slot: 1/256 of the table).
    data_seen: Box<[AtomicU64]>,
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
    /// A table for `capacity` entries (sized for ≤ 50 % load).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let n = capacity
            .saturating_mul(2)
            .next_power_of_two()
            .max(MAX_PROBE);
        let lines = crate::huge_pages::huge_slice(n / 2, Line::default);
        FixedTable {
            lines,
            mask: n - 1,
            capacity,
            len: AtomicU64::new(0),
            wide: Mutex::new(HashMap::new()),
            any_wide: AtomicBool::new(false),
            data_seen: (0..n.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Marks that a payload-carrying packet hit the entry at `slot`;
    /// whether it is the first since the entry was added (any worker; one
    /// atomic OR). Refreshes and replacements keep the mark.
    pub fn first_data(&self, slot: usize) -> bool {
        let bit = 1u64 << (slot % 64);
        self.data_seen
            .get(slot / 64)
            .is_some_and(|w| w.fetch_or(bit, Relaxed) & bit == 0)
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
        std::mem::size_of::<Entry>()
    }

    #[inline]
    fn entry(&self, slot: usize) -> Option<&Entry> {
        self.lines.get(slot / 2).map(|l| &l.0[slot % 2])
    }

    /// The slot a key's probe starts at (for prefetching): the first entry
    /// of a line.
    #[inline]
    pub fn bucket_of(&self, key: &AffinityKey) -> usize {
        let (w0, w1) = key_words(key);
        hash(w0, w1) as usize & self.mask & !1
    }

    /// Hints the CPU to load the line holding `slot` and the next one,
    /// where most keys displaced from their home line are.
    #[inline]
    pub fn prefetch(&self, slot: usize) {
        if let Some(l) = self.lines.get(slot / 2) {
            prefetch_line(l as *const Line as *const i8);
        }
        if let Some(l) = self.lines.get(slot / 2 + 1) {
            prefetch_line(l as *const Line as *const i8);
        }
    }

    /// Counts a packet of `bytes` for the entry at `slot` (workers).
    ///
    /// A plain load and store, not an atomic add: a locked add fences the
    /// worker's loads and stores on every packet (measured in VPP, 1.18 M
    /// flows: see test/vpp-runtime-bench.sh), and a flow's packets come to
    /// one worker (RSS), so two workers rarely count one entry at once;
    /// when they do, one of the two counts is lost. The counts feed
    /// activity reports (a flow counted at all is active) and dumps.
    #[inline]
    pub fn count(&self, slot: usize, bytes: u64) {
        if let Some(e) = self.entry(slot) {
            // A packet is < 64 KiB; the clamp only keeps the carry exact.
            let b = bytes.min(u32::MAX as u64) as u32;
            let (p, by) = (e.packets.load(Relaxed), e.bytes.load(Relaxed));
            e.packets.store(p.wrapping_add(1), Relaxed);
            e.bytes.store(by.wrapping_add(b), Relaxed);
            let p_wrapped = p == u32::MAX;
            let b_wrapped = by.checked_add(b).is_none();
            if p_wrapped || b_wrapped {
                self.carry(slot, p_wrapped, b_wrapped);
            }
        }
    }

    #[cold]
    fn carry(&self, slot: usize, packets: bool, bytes: bool) {
        let mut w = self.wide.lock();
        let e = w.entry(slot).or_default();
        e.0 += (packets as u64) << 32;
        e.1 += (bytes as u64) << 32;
        self.any_wide.store(true, Relaxed);
    }

    /// Packets and bytes counted for the entry at `slot`. (Between a low
    /// word's wrap and its carry, a read may come out 2^32 short.)
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
            hp + e.packets.load(Relaxed) as u64,
            hb + e.bytes.load(Relaxed) as u64,
        )
    }

    /// Lock-free lookup: the value and slot of the entry, if present.
    #[inline]
    pub fn lookup(&self, key: &AffinityKey) -> Option<(FixedValue, usize)> {
        self.lookup_from(key, self.bucket_of(key))
    }

    /// [`lookup`](Self::lookup) given the key's [`bucket_of`](Self::bucket_of).
    #[inline]
    pub fn lookup_from(&self, key: &AffinityKey, start: usize) -> Option<(FixedValue, usize)> {
        let (w0, w1) = key_words(key);
        for p in 0..MAX_PROBE {
            let slot = (start + p) & self.mask;
            let e = self.entry(slot)?;
            // Bounded retries: a writer holds an entry for nanoseconds.
            let mut read = None;
            for _ in 0..64 {
                let k1 = e.key1.load(Acquire);
                if k1 & VERSION_ONE != 0 {
                    std::hint::spin_loop();
                    continue;
                }
                let k0 = e.key0.load(Relaxed);
                let val = e.value.load(Relaxed);
                fence(Acquire);
                if e.key1.load(Relaxed) == k1 {
                    read = Some((k0, k1, val));
                    break;
                }
            }
            let (k0, k1, val) = read?;
            if holds(k0, k1, w0, w1) {
                return Some((FixedValue::decode(val), slot));
            }
            if k1 & (VALID | TOMB) == 0 {
                return None;
            }
        }
        None
    }

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
        let (w0, w1) = key_words(key);
        let start = self.bucket_of(key);
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
        let (w0, w1) = key_words(key);
        let start = self.bucket_of(key);
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
    use super::{AffinityKey, FixedTable, FixedValue, InsertError, Inserted, Line, Relaxed};
    use crate::wire::TCP;
    use std::net::Ipv4Addr;

    fn key(i: u32) -> AffinityKey {
        AffinityKey {
            protocol: TCP,
            src_addr: Ipv4Addr::from(0xc612_0000 + i),
            dst_addr: Ipv4Addr::new(203, 0, 113, 10),
            src_port: (i % 60000) as u16 + 1,
            dst_port: 80,
        }
    }

    #[test]
    fn two_entries_share_a_cache_line() {
        assert_eq!(FixedTable::bytes_per_slot(), 32);
        assert_eq!(std::mem::size_of::<Line>(), 64);
        assert_eq!(std::mem::align_of::<Line>(), 64);
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

    /// A 16-slot table holding `key(1)` (action 1, expiry 1 ds): the
    /// table, the value and the entry's slot.
    fn one_entry() -> (FixedTable, FixedValue, usize) {
        let t = FixedTable::new(16);
        let v = FixedValue {
            action: 1,
            expires_ds: 1,
        };
        let Ok(Inserted::New(slot)) = t.insert(&key(1), v) else {
            panic!("not inserted")
        };
        (t, v, slot)
    }

    #[test]
    fn counters_accumulate_and_restart_with_a_new_entry() {
        let (t, v, slot) = one_entry();
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
    fn counters_carry_past_32_bits() {
        let (t, v, slot) = one_entry();
        let e = t.entry(slot).unwrap();
        e.packets.store(u32::MAX, Relaxed);
        e.bytes.store(u32::MAX - 10, Relaxed);
        t.count(slot, 100);
        assert_eq!(t.counters(slot), (1 << 32, (1 << 32) + 89));
        t.count(slot, 11);
        assert_eq!(t.counters(slot), ((1 << 32) + 1, (1 << 32) + 100));
        // The entry's next tenant starts from zero, high words included.
        t.remove(&key(1));
        let Ok(Inserted::New(again)) = t.insert(&key(1), v) else {
            panic!("not inserted")
        };
        assert_eq!(again, slot);
        assert_eq!(t.counters(slot), (0, 0));
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
    use super::{AffinityKey, FixedTable, FixedValue};
    use crate::wire::TCP;
    use std::net::Ipv4Addr;

    /// At capacity (≤ 50 % load) most keys are in their home line and
    /// nearly all in it or the next: the two lines the batch loop prefetches.
    #[test]
    fn nearly_all_keys_sit_in_the_two_prefetched_lines() {
        // 49.6 % of the 2^19 entries.
        let n = 260_000u32;
        let t = FixedTable::new(n as usize);
        let key = |i: u32| AffinityKey {
            protocol: TCP,
            src_addr: Ipv4Addr::from(0xc612_0000u32 + (i >> 8)),
            dst_addr: Ipv4Addr::new(203, 0, 113, 10),
            src_port: 1024 + (i & 0xff) as u16,
            dst_port: 80,
        };
        let v = FixedValue {
            action: 0,
            expires_ds: 1,
        };
        for i in 0..n {
            t.insert(&key(i), v).unwrap();
        }
        // Lines past the home line (the table is far from wrapping here).
        let beyond =
            |i: u32| (t.lookup(&key(i)).unwrap().1 / 2).wrapping_sub(t.bucket_of(&key(i)) / 2);
        let share = |lines: usize| (0..n).filter(|&i| beyond(i) >= lines).count() as f64 / n as f64;
        let (home, two) = (share(1), share(2));
        eprintln!(
            "{:.1} % of keys outside their home line, {:.2} % outside it and the next",
            home * 100.0,
            two * 100.0
        );
        assert!(home < 0.15, "{home}");
        assert!(two < 0.05, "{two}");
    }

    /// A table takes its full capacity of sequential-looking keys.
    #[test]
    fn fills_to_capacity_with_clustered_keys() {
        let n = 300_000u32;
        let t = FixedTable::new(n as usize);
        for i in 0..n {
            let k = AffinityKey {
                protocol: TCP,
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
