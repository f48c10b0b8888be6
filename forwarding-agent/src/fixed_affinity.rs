//! The fixed affinity table: exact match on the 5-tuple.
//!
//! This file holds the entry layout and the workers' side (bucket,
//! prefetch, lookup, count, first-data mark); the table's other parts live
//! in sibling files:
//! - `fixed_affinity/write.rs` — the single writer: seqlock write, insert,
//!   remove;
//! - `fixed_affinity/stats.rs` — per-flow statistics: the counters' carry
//!   past 32 bits and their read;
//! - `fixed_affinity/visit.rs` — visiting live entries (show, dumps);
//! - `fixed_affinity/tests.rs`, `fixed_affinity/fill_tests.rs` — unit
//!   tests (line layout, torn reads, carry; probe lengths at full load).
//!
//! Design: open addressing with linear probing over 32-byte entries, two to
//! a 64-byte cache line; a key's home is the first entry of a line, and the
//! batch loop prefetches that line and the next: at 49.6 % load (the most
//! kept here) 88 % of keys are in their home line and 96.6 % in the two.
//! An entry holds the
//! key, the value, the state bits and a version (a seqlock) in one word with
//! the ports, the low 31 bits of its packet counter with the handshake mark
//! (bit 31, [`Mark`]) and the low 32 bits of its byte counter. Why: with
//! millions of flows every line is a cache *and* a TLB miss, so what costs is
//! lines and pages per packet; the line is prefetchable from the hash alone,
//! which is how the batch loop hides the latency, and halving the entry
//! halves the pages the table spans (2 GiB instead of 4 at 16 M flows, each
//! flow with an entry per direction; with 64-byte entries the 16 M-flow
//! bench case was 108 ns per packet, with these 93–98). Prefetching the
//! next line too, measured A/B in one sitting (40 rounds, 3 runs each):
//! 16 M flows 108–109 ns instead of 116–118, 1 M flows 103–104 instead of
//! 100–101; the few keys further away cost a miss the loop cannot hide.
//! A counter's high bits move to a side table the rare time its low bits
//! wrap (once per 2 Gi packets or 4 GiB of one entry).
//! Workers never take a lock; the only shared writes are the counters,
//! outside the version check, as a relaxed load and store each, not an
//! atomic add: a locked read-modify-write is a full barrier that stalls
//! the batch loop's overlapped look-ups behind it, on every packet. A flow
//! direction's entry is hit by one worker (VPP's RSS hashes it to one
//! queue; the host agent has one), so nothing is lost; two workers hitting
//! one entry in the same nanoseconds may lose one of the increments, as
//! statistics may (the flow's activity is still seen). The single control thread that writes bumps an entry's version
//! around each change, so a reader that raced with it retries instead of
//! seeing a torn entry. All words are atomics, so this is safe Rust.
//! Deletion leaves a tombstone that inserts reuse; a probe sequence is
//! bounded, so a full neighbourhood means the entry is refused (and
//! counted), never unbounded work.

use affinity_api::AffinityKey;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64};

#[cfg(test)]
mod fill_tests;
mod stats;
#[cfg(test)]
mod tests;
mod visit;
mod write;

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
/// The entry's packets word: bit 31 is the handshake mark (see
/// [`Mark`]), bits 0–30 the low bits of the packet count. The mark lives
/// in the word each hit already loads and stores (the entry has no spare
/// bit elsewhere: key words, value and counters fill its 32 bytes), so it
/// costs no extra cache line and no extra write; the count carries into the
/// side table past 2^31 packets instead of 2^32.
const HANDSHAKE: u32 = 1 << 31;
/// The packet count's bits in the packets word.
const PACKETS_MASK: u32 = !HANDSHAKE;

/// What a hit does to its entry's handshake mark: whether a TCP segment
/// that completes a handshake (ACK set, neither SYN nor RST: Linux
/// conntrack's ESTABLISHED notion) has hit the entry since it was added or
/// since the last SYN that hit it. Reported in activity reports
/// (`affinity_api::activity::HANDSHAKE_COMPLETE`), where a manager needs it
/// from both directions before it takes a flow as established (a spoofed
/// SYN sent twice plus the backend's SYN-ACK counts as packets both ways,
/// never as a mark on both).
///
/// Held as the two masks the count's store applies (`(old & keep) | set`),
/// so that neither working it out nor applying it branches: it is on every
/// counted fixed hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    keep: u32,
    set: u32,
}

impl Mark {
    /// Not TCP, or a TCP segment that neither completes nor restarts a
    /// handshake (a later fragment, an RST, a segment without ACK): the
    /// mark stays as it is.
    pub const KEEP: Mark = Mark {
        keep: HANDSHAKE,
        set: 0,
    };
    /// TCP with ACK and without SYN and RST: the mark is set.
    pub const SET: Mark = Mark {
        keep: HANDSHAKE,
        set: HANDSHAKE,
    };
    /// TCP with SYN (with or without ACK): a connection (re)starting on
    /// the 5-tuple (RFC 9293 section 3.10.7.4: a SYN on a closed
    /// connection's tuple opens a new one), so the mark is cleared.
    pub const CLEAR: Mark = Mark { keep: 0, set: 0 };

    /// The mark a packet of IP `protocol` with TCP `flags` (the header's
    /// flags byte; 0 when there is no TCP header, as in a later fragment)
    /// leaves on its fixed entry.
    #[inline]
    pub const fn of(protocol: u8, flags: u8) -> Mark {
        use crate::wire::tcp::flags::{ACK, RST, SYN};
        let tcp = (protocol == crate::wire::TCP) as u32;
        let syn = (flags & SYN != 0) as u32;
        let ack_only = (flags & (ACK | RST | SYN) == ACK) as u32;
        Mark {
            keep: HANDSHAKE & !((tcp & syn) * HANDSHAKE),
            set: (tcp & ack_only) * HANDSHAKE,
        }
    }

    /// [`Mark::of`] a TCP segment with control bits `flags`, or of a UDP
    /// datagram when `flags` is 0 (TCP without flags keeps the mark as UDP
    /// does): one load from a table made by `of` itself, for the common
    /// case's path (cachegrind: a dozen instructions fewer a packet).
    #[inline]
    pub fn of_flags(flags: u8) -> Mark {
        MARKS[usize::from(flags)]
    }
}

/// [`Mark::of`] for TCP, by control-bits byte ([`Mark::of_flags`]).
static MARKS: [Mark; 256] = {
    let mut t = [Mark::KEEP; 256];
    let mut f = 0;
    while f < 256 {
        t[f] = Mark::of(crate::wire::TCP, f as u8);
        f += 1;
    }
    t
};

/// One entry; its index in the table is the entry's slot.
#[repr(align(32))]
#[derive(Default)]
struct Entry {
    /// src << 32 | dst.
    key0: AtomicU64,
    /// Ports and protocol (KEY1_MASK), version, state bits.
    key1: AtomicU64,
    value: AtomicU64,
    /// Low 31 bits of the packet count and the handshake mark (bit 31,
    /// [`HANDSHAKE`]); written by workers, outside the seqlock.
    packets: AtomicU32,
    /// Low 32 bits of the byte count; added to by workers, outside the
    /// seqlock.
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

/// Whether stored key words `k0`, `k1` are a live entry for key `w0`, `w1`.
#[inline]
fn holds(k0: u64, k1: u64, w0: u64, w1: u64) -> bool {
    k1 & VALID != 0 && k0 == w0 && k1 & KEY1_MASK == w1
}

#[inline]
fn hash(w0: u64, w1: u64) -> u64 {
    // murmur3's fmix64 over both words: every key bit reaches the low bits
    // used as the line index. A folded multiply (one multiply instead of
    // three, as foldhash does) was tried at stop 21 and dropped: the low
    // half of `(w0 ^ K0) * (w1 ^ K1)` saw the ports only through its high
    // half, so one client's consecutive source ports went to an arithmetic
    // progression of lines and some port pairs sent every source to one
    // line; inserts were refused at half load
    // (`structured_keys_fit_at_half_load`). Stop 24 simulated the table
    // with its folded form `hi ^ lo` (one multiply; 11,208 of 16,384
    // "sources and ports together" keys outside their home line against
    // 1,879 here) and with one more xor-shift (one client's source ports
    // probed up to 119 entries); neither is kept.
    // CRC32C over both words (SSE4.2, VPP's own flow hash) was measured
    // in VPP at stop 24: in cache (1152 flows) 64-65 clocks a packet
    // against 68-76, at 1.18 M flows 78-82 against 89-98. Not taken: its
    // intrinsic needs `unsafe` outside the FFI boundary, and most of the
    // gain at scale is the benchmark's keys, not the hash's own cost. CRC
    // is linear, so the benchmark's lattice of sequential addresses x 9
    // ports lands every key in its home line (none displaced, against
    // 13,685 of 1.18 M here), as it does the structured patterns above;
    // random keys it spreads as this does (1,915 and 1,912 of 16,384
    // displaced).
    let mut h = w0 ^ w1.rotate_left(29).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// A key prepared for lookup by [`FixedTable::probe`]: its two packed
/// words and its home slot in that table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    w0: u64,
    w1: u64,
    start: usize,
}

impl Probe {
    /// The slot the probe starts at: the first entry of the key's home
    /// line (what [`FixedTable::prefetch`] takes).
    #[inline]
    pub fn start(&self) -> usize {
        self.start
    }
}

/// A live look-up's result ([`FixedTable::lookup_hit`]): the entry's
/// value and slot, and the entry itself, so the packet that hit it is
/// counted ([`FixedTable::count_hit`]) without finding the entry again.
#[derive(Clone, Copy)]
pub struct FixedHit<'a> {
    /// The entry's value as read under its seqlock.
    pub value: FixedValue,
    /// The entry's slot (index into the table; what trace records and the
    /// handshake-mark queue carry).
    pub slot: usize,
    /// The entry at `slot`.
    entry: &'a Entry,
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
        self.probe(key).start
    }

    /// A key's lookup, prepared: its packed words and the slot its probe
    /// starts at ([`Probe::start`], for [`FixedTable::prefetch`]), so the
    /// batch loop packs and hashes each key once ([`FixedTable::lookup_probe`]).
    #[inline]
    pub fn probe(&self, key: &AffinityKey) -> Probe {
        let (w0, w1) = key_words(key);
        Probe {
            w0,
            w1,
            start: hash(w0, w1) as usize & self.mask & !1,
        }
    }

    /// [`FixedTable::probe`] of a [`crate::wire::Plain`] packet's key, from
    /// the words it was read as (the same probe as its key's).
    #[inline]
    pub fn probe_plain(&self, p: &crate::wire::Plain) -> Probe {
        let (w0, w1) = (p.addrs, (p.ports as u64) << 32 | (p.protocol as u64) << 24);
        Probe {
            w0,
            w1,
            start: hash(w0, w1) as usize & self.mask & !1,
        }
    }

    /// Hints the CPU to load the line holding `slot` and, with `next`, the
    /// next one, where most keys displaced from their home line are.
    #[inline]
    pub fn prefetch(&self, slot: usize, next: bool) {
        if let Some(l) = self.lines.get(slot / 2) {
            prefetch_line(l as *const Line as *const i8);
        }
        if next {
            if let Some(l) = self.lines.get(slot / 2 + 1) {
                prefetch_line(l as *const Line as *const i8);
            }
        }
    }

    /// Whether a look-up should prefetch the line after its key's home
    /// line too: only above a quarter of the table's entries in use. Below
    /// that nearly every key is in its home line (linear probing, two
    /// entries a line) and the second line is a memory access for nothing:
    /// measured in VPP at 1.18 M flows in 8 M entries (14 %), one line
    /// instead of two, same sitting: see test/vpp-runtime-bench.sh's
    /// figures in the stop-20 note. A displacement hint (a bit per eight
    /// lines, set while a key homed there sits further on; the next line
    /// prefetched only then) was measured at stop 25 and not kept: no gain
    /// at 1.18 M flows in 8 M entries (1.2 % of keys displaced there), and
    /// with the table halved (29 % load, the threshold raised) no better
    /// than two lines for every key.
    #[inline]
    pub fn prefetch_next_line(&self) -> bool {
        self.len() * 4 > self.mask + 1
    }

    /// Counts a packet of `bytes` for the entry at `slot` (workers),
    /// leaving the handshake mark as it is ([`FixedTable::count_marked`]
    /// with [`Mark::KEEP`]).
    #[inline]
    pub fn count(&self, slot: usize, bytes: u64) {
        let _ = self.count_marked(slot, bytes, Mark::KEEP);
    }

    /// Counts a packet of `bytes` for the entry at `slot` and applies its
    /// handshake `mark` (workers).
    ///
    /// A plain load and store, not an atomic add: a locked add fences the
    /// worker's loads and stores on every packet (measured in VPP, 1.18 M
    /// flows: see test/vpp-runtime-bench.sh), and a flow's packets come to
    /// one worker (RSS), so two workers rarely count one entry at once;
    /// when they do, one of the two counts is lost (and a mark written in
    /// the same nanoseconds may be too: the next handshake-complete
    /// segment sets it again). The mark rides in the packets word's store
    /// the count makes anyway: no extra write, and none at all beyond the
    /// count's when the mark is unchanged. The counts feed activity reports
    /// (a flow counted at all is active) and dumps. Returns whether this
    /// packet set the mark (it was clear): the agent reports such an
    /// affinity at once (`Agent::prompt_reports`).
    #[inline]
    pub fn count_marked(&self, slot: usize, bytes: u64, mark: Mark) -> bool {
        match self.entry(slot) {
            Some(e) => self.count_entry(e, slot, bytes, mark),
            None => false,
        }
    }

    /// [`FixedTable::count_marked`] for the entry a look-up just found.
    #[inline]
    pub fn count_hit(&self, hit: &FixedHit<'_>, bytes: u64, mark: Mark) -> bool {
        self.count_entry(hit.entry, hit.slot, bytes, mark)
    }

    #[inline(always)]
    fn count_entry(&self, e: &Entry, slot: usize, bytes: u64, mark: Mark) -> bool {
        // A packet is < 64 KiB; the clamp only keeps the carry exact.
        let b = bytes.min(u32::MAX as u64) as u32;
        let (p, by) = (e.packets.load(Relaxed), e.bytes.load(Relaxed));
        let flag = (p & mark.keep) | mark.set;
        let low = p & PACKETS_MASK;
        e.packets
            .store(low.wrapping_add(1) & PACKETS_MASK | flag, Relaxed);
        e.bytes.store(by.wrapping_add(b), Relaxed);
        let p_wrapped = low == PACKETS_MASK;
        let b_wrapped = by.checked_add(b).is_none();
        if p_wrapped || b_wrapped {
            self.carry(slot, p_wrapped, b_wrapped);
        }
        flag & !p != 0
    }

    /// Whether a handshake-complete TCP segment hit the entry at `slot`
    /// since it was added or since the last SYN that hit it (see
    /// [`Mark`]); false for a slot out of range. Only packets counted
    /// (`per_flow_counters`) mark it.
    pub fn handshake_complete(&self, slot: usize) -> bool {
        self.entry(slot)
            .is_some_and(|e| e.packets.load(Relaxed) & HANDSHAKE != 0)
    }

    /// Lock-free lookup: the value and slot of the entry, if present.
    #[inline]
    pub fn lookup(&self, key: &AffinityKey) -> Option<(FixedValue, usize)> {
        self.lookup_probe(&self.probe(key))
    }

    /// [`lookup`](Self::lookup) of a key prepared with [`FixedTable::probe`].
    #[inline]
    pub fn lookup_probe(&self, probe: &Probe) -> Option<(FixedValue, usize)> {
        self.lookup_hit(probe).map(|h| (h.value, h.slot))
    }

    /// [`FixedTable::lookup_probe`], with the entry found (the data path's
    /// common case counts the packet on it: [`FixedTable::count_hit`]).
    #[inline]
    pub fn lookup_hit(&self, probe: &Probe) -> Option<FixedHit<'_>> {
        let Probe { w0, w1, start } = *probe;
        // The common case first, without the probe loop and its retry
        // bookkeeping: the key in either entry of its home line (at the
        // load the table is sized for, 0.99 of keys in the benchmark's
        // 1.18 M flows; 0.87 in the first entry), no write under way. A
        // key is held once, so finding it in the line's second entry is
        // the probe loop's answer too. Anything else, including a write
        // caught midway, takes the loop.
        let line = &self.lines.get(start / 2)?.0;
        for (i, e) in line.iter().enumerate() {
            let k1 = e.key1.load(Acquire);
            if k1 & (VERSION_ONE | VALID | KEY1_MASK) == w1 | VALID {
                let k0 = e.key0.load(Relaxed);
                let val = e.value.load(Relaxed);
                fence(Acquire);
                if k0 == w0 && e.key1.load(Relaxed) == k1 {
                    return Some(FixedHit {
                        value: FixedValue::decode(val),
                        slot: start + i,
                        entry: e,
                    });
                }
            }
        }
        self.lookup_from(w0, w1, start)
    }

    /// [`FixedTable::lookup_probe`]'s probe loop, from `start`.
    fn lookup_from(&self, w0: u64, w1: u64, start: usize) -> Option<FixedHit<'_>> {
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
                return Some(FixedHit {
                    value: FixedValue::decode(val),
                    slot,
                    entry: e,
                });
            }
            if k1 & (VALID | TOMB) == 0 {
                return None;
            }
        }
        None
    }
}

/// Hints the CPU to load the 64-byte cache line holding `p` into L1 (no
/// effect on what the program computes; any address, since a prefetch
/// never faults). Used by the core's tables and packets and by the VPP
/// node for buffer headers.
#[inline]
// A prefetch takes the address only: nothing is dereferenced, so the
// function is safe to call with any pointer (clippy cannot tell).
#[allow(clippy::not_unsafe_ptr_arg_deref)]
pub fn prefetch_line(p: *const i8) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: prefetch is a hint; it never faults, even on invalid
        // addresses, and reads or writes nothing the program sees.
        unsafe { std::arch::x86_64::_mm_prefetch(p, std::arch::x86_64::_MM_HINT_T0) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
