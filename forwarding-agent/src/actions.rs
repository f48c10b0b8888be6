//! What an affinity does to a packet, stored once and shared by index.
//!
//! Many flows share an action set (every client→backend flow of a service
//! NATs to the same backend), so fixed entries hold a 32-bit index into this
//! table instead of the actions themselves, keeping entries at 24 bytes.
//! Slots are eight atomic words: workers read them without locks; the
//! control thread writes a slot only while no entry refers to it, and a freed
//! slot is reused only after a quarantine, so a worker that read an index
//! just before its entry was deleted still reads the old, intact actions.

use crate::wire::PlainNat;
use affinity_api::{InterestCriteria, NatAction, SeqAdjustAction, TsAdjustAction};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Everything an affinity applies to a matching packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ActionSet {
    pub nat: Option<NatActionKey>,
    pub seq_adjust: Option<SeqAdjustKey>,
    pub interest: Option<InterestKey>,
    /// TCP timestamp offset of a SYN-proxied flow: installed by the agent
    /// itself at the splice (`crate::synproxy`), or from a manager's
    /// timestamp adjust segment (type 21, PROTOCOL.md) on a fixed affinity.
    pub ts_adjust: Option<TsAdjustKey>,
    pub dispatch_flags: u8,
    pub info_flags: u8,
    pub forward_addr: u32,
    /// Manager-chosen affinity identifier (echoed in interest matches).
    pub affinity_id: u32,
    /// Index of the owning manager in the agent's manager list.
    pub owner: u16,
    /// The affinity's place in precedence order (`WildcardEntry::order`'s
    /// first three fields): search-first flag, service precedence (higher
    /// wins), backup precedence (lower wins). For a fixed affinity, those
    /// of its update or else of its owner's supporting wildcard; another
    /// manager may replace or delete it only by outranking them (seed FIG
    /// 9B).
    pub search_first: bool,
    pub service_precedence: u16,
    pub backup_precedence: u16,
    /// Manager interest data echoed in this affinity's interest matches:
    /// an id in `crate::interest_data::ManagerDataTable`, 0 = none
    /// (below 2^24).
    pub manager_data: u32,
}

impl ActionSet {
    /// Precedence rank, smaller = stronger: (search-first clear, inverted
    /// service precedence, backup precedence), the order wildcards are
    /// searched in.
    pub fn rank(&self) -> (bool, u16, u16) {
        (
            !self.search_first,
            u16::MAX - self.service_precedence,
            self.backup_precedence,
        )
    }
}

/// `NatAction` in a hashable form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NatActionKey {
    pub flags: u8,
    pub src_addr: u32,
    pub dst_addr: u32,
    pub src_port: u16,
    pub dst_port: u16,
}

/// Actions an operator can turn off by name (`--disable-action`, the
/// `affinity { disable-action ... }` startup section), as segment types; an
/// affinity that requires one is then denied as unsupported.
pub const DISABLEABLE_ACTIONS: [(&str, u16); 4] = [
    ("nat", affinity_api::seg::NAT_ACTION),
    ("advertise", affinity_api::seg::ADVERTISE_ACTION),
    ("seq-adjust", affinity_api::seg::SEQ_ADJUST_ACTION),
    ("interest", affinity_api::seg::INTEREST_CRITERIA_ACTION),
];

/// The segment type of a disableable action's name.
pub fn action_segment_by_name(name: &str) -> Option<u16> {
    DISABLEABLE_ACTIONS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, t)| t)
}

impl From<NatAction> for NatActionKey {
    fn from(n: NatAction) -> Self {
        NatActionKey {
            flags: n.flags,
            src_addr: n.src_addr.into(),
            dst_addr: n.dst_addr.into(),
            src_port: n.src_port,
            dst_port: n.dst_port,
        }
    }
}

impl From<NatActionKey> for NatAction {
    fn from(n: NatActionKey) -> Self {
        NatAction {
            flags: n.flags,
            src_addr: n.src_addr.into(),
            dst_addr: n.dst_addr.into(),
            src_port: n.src_port,
            dst_port: n.dst_port,
        }
    }
}

/// `SeqAdjustAction` in a hashable form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SeqAdjustKey(pub u32, pub u32, pub u32, pub u32);

impl From<SeqAdjustAction> for SeqAdjustKey {
    fn from(s: SeqAdjustAction) -> Self {
        SeqAdjustKey(s.seq_delta, s.initial_seq, s.ack_delta, s.initial_ack)
    }
}

impl From<SeqAdjustKey> for SeqAdjustAction {
    fn from(s: SeqAdjustKey) -> Self {
        SeqAdjustAction {
            seq_delta: s.0,
            initial_seq: s.1,
            ack_delta: s.2,
            initial_ack: s.3,
        }
    }
}

/// A TCP timestamp offset (RFC 7323 option kind 8): `delta` is added,
/// modulo 2^32, to the TSval (`echo` false: the backend → client flow) or to
/// the TSecr (`echo` true: the client → backend flow), as Linux SYNPROXY's
/// `synproxy_tstamp_adjust` does after a splice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TsAdjustKey {
    pub delta: u32,
    pub echo: bool,
}

impl From<TsAdjustAction> for TsAdjustKey {
    fn from(t: TsAdjustAction) -> Self {
        TsAdjustKey {
            delta: t.delta,
            echo: t.flags & TsAdjustAction::ECHO != 0,
        }
    }
}

impl From<TsAdjustKey> for TsAdjustAction {
    fn from(t: TsAdjustKey) -> Self {
        TsAdjustAction {
            delta: t.delta,
            flags: if t.echo { TsAdjustAction::ECHO } else { 0 },
        }
    }
}

/// `InterestCriteria` in a hashable form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct InterestKey {
    pub address: u32,
    pub port: u16,
    pub mask: u16,
    pub flags: u8,
}

impl From<InterestCriteria> for InterestKey {
    fn from(c: InterestCriteria) -> Self {
        InterestKey {
            address: c.address.into(),
            port: c.port,
            mask: c.mask,
            flags: c.flags,
        }
    }
}

impl InterestKey {
    pub fn address(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.address)
    }
}

const PRESENT_NAT: u8 = 1;
const PRESENT_SEQ: u8 = 2;
const PRESENT_INTEREST: u8 = 4;
const PRESENT_TS: u8 = 8;

/// Where each field of an [`ActionSet`] sits in a slot's eight words:
/// (word index, bit shift of the field's lowest bit). Encode and decode
/// both read this one table; a field's width is its Rust type's.
mod slot {
    pub type At = (usize, u32);
    /// Which optional parts are present (`PRESENT_*` bits), 8 bits.
    pub const PRESENT: At = (0, 0);
    pub const DISPATCH_FLAGS: At = (0, 8);
    pub const INFO_FLAGS: At = (0, 16);
    pub const OWNER: At = (0, 24);
    /// 24 bits: the top of word 0.
    pub const MANAGER_DATA: At = (0, 40);
    pub const NAT_SRC_ADDR: At = (1, 32);
    pub const NAT_DST_ADDR: At = (1, 0);
    pub const NAT_SRC_PORT: At = (2, 48);
    pub const NAT_DST_PORT: At = (2, 32);
    pub const NAT_FLAGS: At = (2, 24);
    pub const SEQ_DELTA: At = (3, 32);
    pub const INITIAL_SEQ: At = (3, 0);
    pub const ACK_DELTA: At = (4, 32);
    pub const INITIAL_ACK: At = (4, 0);
    pub const INTEREST_ADDRESS: At = (5, 32);
    pub const INTEREST_PORT: At = (5, 16);
    pub const INTEREST_MASK: At = (5, 0);
    pub const INTEREST_FLAGS: At = (6, 0);
    pub const SERVICE_PRECEDENCE: At = (6, 8);
    pub const BACKUP_PRECEDENCE: At = (6, 24);
    pub const SEARCH_FIRST: At = (6, 40);
    /// The timestamp offset: its 32 bits in two halves (no word has 32
    /// free bits), and the echo flag. Below bit 24 of word 2 and above bit
    /// 47 of word 6 no other field's `get` reads.
    pub const TS_DELTA_HI: At = (6, 48);
    pub const TS_DELTA_LO: At = (2, 0);
    pub const TS_ECHO: At = (2, 16);
    pub const FORWARD_ADDR: At = (7, 32);
    pub const AFFINITY_ID: At = (7, 0);

    /// ORs `v` into the field (the words start zeroed).
    #[inline(always)]
    pub fn put(w: &mut [u64; 8], at: At, v: impl Into<u64>) {
        w[at.0] |= v.into() << at.1;
    }

    /// The field's bits and everything above them; the caller truncates
    /// to the field's type with `as`.
    #[inline(always)]
    pub fn get(w: &[u64; 8], at: At) -> u64 {
        w[at.0] >> at.1
    }

    /// [`get`] from the one word `at` lies in, already loaded.
    #[inline(always)]
    pub fn get_word(word: u64, at: At) -> u64 {
        word >> at.1
    }
}

impl ActionSet {
    fn encode(&self) -> [u64; 8] {
        use slot::put;
        let mut w = [0u64; 8];
        let mut present = 0;
        if let Some(n) = self.nat {
            present |= PRESENT_NAT;
            put(&mut w, slot::NAT_SRC_ADDR, n.src_addr);
            put(&mut w, slot::NAT_DST_ADDR, n.dst_addr);
            put(&mut w, slot::NAT_SRC_PORT, n.src_port);
            put(&mut w, slot::NAT_DST_PORT, n.dst_port);
            put(&mut w, slot::NAT_FLAGS, n.flags);
        }
        if let Some(s) = self.seq_adjust {
            present |= PRESENT_SEQ;
            put(&mut w, slot::SEQ_DELTA, s.0);
            put(&mut w, slot::INITIAL_SEQ, s.1);
            put(&mut w, slot::ACK_DELTA, s.2);
            put(&mut w, slot::INITIAL_ACK, s.3);
        }
        if let Some(i) = self.interest {
            present |= PRESENT_INTEREST;
            put(&mut w, slot::INTEREST_ADDRESS, i.address);
            put(&mut w, slot::INTEREST_PORT, i.port);
            put(&mut w, slot::INTEREST_MASK, i.mask);
            put(&mut w, slot::INTEREST_FLAGS, i.flags);
        }
        if let Some(t) = self.ts_adjust {
            present |= PRESENT_TS;
            put(&mut w, slot::TS_DELTA_HI, (t.delta >> 16) as u16);
            put(&mut w, slot::TS_DELTA_LO, t.delta as u16);
            put(&mut w, slot::TS_ECHO, t.echo as u8);
        }
        put(&mut w, slot::PRESENT, present);
        put(&mut w, slot::DISPATCH_FLAGS, self.dispatch_flags);
        put(&mut w, slot::INFO_FLAGS, self.info_flags);
        put(&mut w, slot::OWNER, self.owner);
        put(&mut w, slot::MANAGER_DATA, self.manager_data & 0x00ff_ffff);
        put(&mut w, slot::SERVICE_PRECEDENCE, self.service_precedence);
        put(&mut w, slot::BACKUP_PRECEDENCE, self.backup_precedence);
        put(&mut w, slot::SEARCH_FIRST, self.search_first as u8);
        put(&mut w, slot::FORWARD_ADDR, self.forward_addr);
        put(&mut w, slot::AFFINITY_ID, self.affinity_id);
        w
    }
}

/// An action set as its slot stores it (eight words, the layout in
/// `slot`), read field by field where used: the packet path reads only
/// the fields it acts on (a fixed hit with NAT: the present bits, the NAT
/// fields, the flags) instead of decoding the whole set — measured 68
/// instructions per packet for the full decode. [`ActionView::decode`]
/// gives the whole [`ActionSet`] (punts, control).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ActionView([u64; 8]);

impl From<&ActionSet> for ActionView {
    fn from(a: &ActionSet) -> Self {
        ActionView(a.encode())
    }
}

impl ActionView {
    #[inline(always)]
    fn get(&self, at: slot::At) -> u64 {
        slot::get(&self.0, at)
    }

    #[inline(always)]
    fn present(&self, bit: u8) -> bool {
        self.get(slot::PRESENT) as u8 & bit != 0
    }

    /// [`ActionSet::nat`].
    #[inline]
    pub fn nat(&self) -> Option<NatActionKey> {
        self.present(PRESENT_NAT).then(|| NatActionKey {
            src_addr: self.get(slot::NAT_SRC_ADDR) as u32,
            dst_addr: self.get(slot::NAT_DST_ADDR) as u32,
            src_port: self.get(slot::NAT_SRC_PORT) as u16,
            dst_port: self.get(slot::NAT_DST_PORT) as u16,
            flags: self.get(slot::NAT_FLAGS) as u8,
        })
    }

    /// [`ActionSet::seq_adjust`].
    #[inline]
    pub fn seq_adjust(&self) -> Option<SeqAdjustKey> {
        self.present(PRESENT_SEQ).then(|| {
            SeqAdjustKey(
                self.get(slot::SEQ_DELTA) as u32,
                self.get(slot::INITIAL_SEQ) as u32,
                self.get(slot::ACK_DELTA) as u32,
                self.get(slot::INITIAL_ACK) as u32,
            )
        })
    }

    /// [`ActionSet::interest`].
    #[inline]
    pub fn interest(&self) -> Option<InterestKey> {
        self.present(PRESENT_INTEREST).then(|| InterestKey {
            address: self.get(slot::INTEREST_ADDRESS) as u32,
            port: self.get(slot::INTEREST_PORT) as u16,
            mask: self.get(slot::INTEREST_MASK) as u16,
            flags: self.get(slot::INTEREST_FLAGS) as u8,
        })
    }

    /// [`ActionSet::ts_adjust`].
    #[inline]
    pub fn ts_adjust(&self) -> Option<TsAdjustKey> {
        self.present(PRESENT_TS).then(|| TsAdjustKey {
            delta: (self.get(slot::TS_DELTA_HI) as u16 as u32) << 16
                | self.get(slot::TS_DELTA_LO) as u16 as u32,
            echo: self.get(slot::TS_ECHO) as u8 & 1 != 0,
        })
    }

    /// [`ActionSet::dispatch_flags`].
    #[inline]
    pub fn dispatch_flags(&self) -> u8 {
        self.get(slot::DISPATCH_FLAGS) as u8
    }

    /// [`ActionSet::info_flags`].
    #[inline]
    pub fn info_flags(&self) -> u8 {
        self.get(slot::INFO_FLAGS) as u8
    }

    /// [`ActionSet::forward_addr`] (host order).
    #[inline]
    pub fn forward_addr(&self) -> u32 {
        self.get(slot::FORWARD_ADDR) as u32
    }

    /// [`ActionSet::affinity_id`].
    #[inline]
    pub fn affinity_id(&self) -> u32 {
        self.get(slot::AFFINITY_ID) as u32
    }

    /// [`ActionSet::owner`].
    #[inline]
    pub fn owner(&self) -> u16 {
        self.get(slot::OWNER) as u16
    }

    /// [`ActionSet::manager_data`].
    #[inline]
    pub fn manager_data(&self) -> u32 {
        self.get(slot::MANAGER_DATA) as u32
    }

    /// The whole action set.
    pub fn decode(&self) -> ActionSet {
        ActionSet {
            nat: self.nat(),
            seq_adjust: self.seq_adjust(),
            interest: self.interest(),
            ts_adjust: self.ts_adjust(),
            dispatch_flags: self.dispatch_flags(),
            info_flags: self.info_flags(),
            owner: self.owner(),
            manager_data: self.manager_data(),
            service_precedence: self.get(slot::SERVICE_PRECEDENCE) as u16,
            backup_precedence: self.get(slot::BACKUP_PRECEDENCE) as u16,
            search_first: self.get(slot::SEARCH_FIRST) as u8 != 0,
            forward_addr: self.forward_addr(),
            affinity_id: self.affinity_id(),
        }
    }
}

#[repr(align(64))]
#[derive(Default)]
struct Slot([AtomicU64; 8]);

/// A slot's NAT action as [`PlainNat`], stored beside it when the set is
/// (`ActionTable::acquire`): keep and set masks of the addresses, ports'
/// keep | set << 32, and the set bytes' word sums, address | port << 32.
/// Apart from the slot because its eight words are all in use; the common
/// case reads these four and so skips the masks' and sums' making per
/// packet (VPP at 1.18 M flows, stop 24: see `datapath::fast`).
#[derive(Default)]
struct PlainNatSlot([AtomicU64; 4]);

impl PlainNatSlot {
    fn store(&self, n: &PlainNat) {
        let w = [
            n.addr_keep,
            n.addr_set,
            u64::from(n.port_keep) | u64::from(n.port_set) << 32,
            u64::from(n.addr_sum) | u64::from(n.port_sum) << 32,
        ];
        for (a, v) in self.0.iter().zip(w) {
            a.store(v, Relaxed);
        }
    }
}

/// What the data path's common case needs of an action set whose only
/// parts are NAT and a forward address ([`ActionTable::plain`]): no
/// interest criteria, sequence or timestamp adjust, or statistics. A view
/// of the slot's words, each read when asked for (the common case reads
/// them where it uses them, not into a copy first).
#[derive(Clone, Copy)]
pub struct PlainAction<'a> {
    words: &'a [AtomicU64; 8],
    /// The slot's NAT action as [`PlainNat`] (`ActionTable::plain_nat`).
    nat: &'a PlainNatSlot,
    /// The slot's first word, as [`ActionTable::plain`] read it.
    w0: u64,
}

impl PlainAction<'_> {
    /// The NAT action, if any, in the form the common case applies:
    /// read as stored with the set, nothing worked out per packet.
    #[inline(always)]
    pub fn nat(&self) -> Option<PlainNat> {
        let present = slot::get_word(self.w0, slot::PRESENT) as u8;
        if present & PRESENT_NAT == 0 {
            return None;
        }
        let w = &self.nat.0;
        let (ports, sums) = (w[2].load(Relaxed), w[3].load(Relaxed));
        Some(PlainNat {
            addr_keep: w[0].load(Relaxed),
            addr_set: w[1].load(Relaxed),
            port_keep: ports as u32,
            port_set: (ports >> 32) as u32,
            addr_sum: sums as u32,
            port_sum: (sums >> 32) as u32,
        })
    }

    /// The forward address (host order) when the dispatch flags ask for
    /// forwarding (`affinity_api::dispatch::FORWARD`; 0 is dropped as the
    /// general path drops it).
    #[inline(always)]
    pub fn forward(&self) -> Option<u32> {
        let dispatch = slot::get_word(self.w0, slot::DISPATCH_FLAGS) as u8;
        (dispatch & affinity_api::dispatch::FORWARD != 0)
            .then(|| slot::get_word(self.words[7].load(Relaxed), slot::FORWARD_ADDR) as u32)
    }
}

/// Control-thread bookkeeping of the action table.
struct Book {
    index: HashMap<ActionSet, u32>,
    refs: Vec<u32>,
    /// Freed slots and the time (ns) after which they may be reused.
    quarantine: std::collections::VecDeque<(u32, u64)>,
    free: Vec<u32>,
    next_unused: u32,
}

/// Deduplicated, refcounted action sets.
pub struct ActionTable {
    slots: Box<[Slot]>,
    /// Per slot, its NAT action in the common case's form.
    plain_nat: Box<[PlainNatSlot]>,
    book: parking_lot::Mutex<Book>,
}

/// How long a freed slot waits before reuse: far longer than any batch.
const QUARANTINE_NS: u64 = 1_000_000_000;

impl ActionTable {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, u32::MAX as usize);
        ActionTable {
            slots: (0..capacity).map(|_| Slot::default()).collect(),
            plain_nat: (0..capacity).map(|_| PlainNatSlot::default()).collect(),
            book: parking_lot::Mutex::new(Book {
                index: HashMap::new(),
                refs: vec![0; capacity],
                quarantine: Default::default(),
                free: Vec::new(),
                next_unused: 0,
            }),
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Reads a slot (workers; lock-free).
    #[inline]
    pub fn get(&self, idx: u32) -> ActionSet {
        self.view(idx).decode()
    }

    /// Reads a slot's words, to be decoded field by field (the packet
    /// path; lock-free). An index past the table reads as the empty set.
    #[inline]
    pub fn view(&self, idx: u32) -> ActionView {
        match self.slots.get(idx as usize) {
            Some(s) => ActionView(std::array::from_fn(|i| s.0[i].load(Relaxed))),
            None => ActionView::default(),
        }
    }

    /// The slot's set as a [`PlainAction`] when it is one (the packet
    /// path's common case; lock-free): reads the slot's first word, and its
    /// NAT and forward words only when present. `None` for any other set
    /// and for an index past the table (the general path decides those).
    #[inline]
    pub fn plain(&self, idx: u32) -> Option<PlainAction<'_>> {
        let s = self.slots.get(idx as usize)?;
        let nat = self.plain_nat.get(idx as usize)?;
        let w0 = s.0[0].load(Relaxed);
        let present = slot::get_word(w0, slot::PRESENT) as u8;
        let info_flags = slot::get_word(w0, slot::INFO_FLAGS) as u8;
        if present & !PRESENT_NAT != 0 || info_flags & affinity_api::info::STATISTICS != 0 {
            return None;
        }
        Some(PlainAction {
            words: &s.0,
            nat,
            w0,
        })
    }

    /// Takes a reference on `set`, storing it if new. `None` when full.
    pub fn acquire(&self, set: &ActionSet, now_ns: u64) -> Option<u32> {
        let mut b = self.book.lock();
        if let Some(&idx) = b.index.get(set) {
            b.refs[idx as usize] += 1;
            return Some(idx);
        }
        while let Some(&(idx, after)) = b.quarantine.front() {
            if after > now_ns {
                break;
            }
            b.quarantine.pop_front();
            b.free.push(idx);
        }
        let idx = match b.free.pop() {
            Some(i) => i,
            None if (b.next_unused as usize) < self.slots.len() => {
                b.next_unused += 1;
                b.next_unused - 1
            }
            None => return None,
        };
        for (a, v) in self.slots[idx as usize].0.iter().zip(set.encode()) {
            a.store(v, Relaxed);
        }
        if let (Some(n), Some(p)) = (&set.nat, self.plain_nat.get(idx as usize)) {
            p.store(&PlainNat::from(n));
        }
        // Publish the words before any entry can carry the index.
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        b.refs[idx as usize] = 1;
        b.index.insert(*set, idx);
        Some(idx)
    }

    /// Drops a reference; the slot is quarantined when unused.
    pub fn release(&self, idx: u32, now_ns: u64) {
        let mut b = self.book.lock();
        let Some(r) = b.refs.get_mut(idx as usize) else {
            return;
        };
        if *r == 0 {
            return;
        }
        *r -= 1;
        if *r == 0 {
            let set = self.get(idx);
            b.index.remove(&set);
            b.quarantine.push_back((idx, now_ns + QUARANTINE_NS));
        }
    }

    /// Number of distinct action sets in use.
    pub fn in_use(&self) -> usize {
        self.book.lock().index.len()
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod name_tests {
    #[test]
    fn action_names_map_to_their_segments() {
        use affinity_api::seg;
        assert_eq!(super::action_segment_by_name("nat"), Some(seg::NAT_ACTION));
        assert_eq!(
            super::action_segment_by_name("advertise"),
            Some(seg::ADVERTISE_ACTION)
        );
        assert_eq!(super::action_segment_by_name("dispatch"), None);
    }
}
