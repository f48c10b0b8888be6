//! Wildcard affinities: masked matches that attract new flows.
//!
//! Tuple-space search: wildcards are grouped by their mask pattern (source
//! mask, destination mask, and which of protocol/ports are "any"); each group
//! is a hash map from the masked key to the wildcards with that key, already
//! sorted in search order. A lookup costs one hash probe per group, however
//! many wildcards there are, and stops at the first group that cannot beat
//! the best match found. The control thread rebuilds an immutable snapshot
//! when the set changes and publishes it with an atomic pointer swap;
//! refreshes only move an atomic expiry, so periodic refreshes from
//! managers never rebuild anything.
//! What a hit needs (expiry, place in search order, action index) sits in
//! the group's map next to the key, so a look-up reads no entry: with 10 k
//! wildcards the entries are not in cache, and reading one cost about 50 ns
//! per packet (measured with a variant that skipped it).

use crate::actions::ActionSet;
use affinity_api::{AdmissionAction, AffinityKey};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;

/// One installed wildcard.
#[derive(Debug)]
pub struct WildcardEntry {
    pub owner: u16,
    /// The affinity identifier; 0 when the update carried none.
    pub id: u32,
    /// The update carried no affinity identifier (PROTOCOL.md: it is
    /// optional): the entry is then named by its key and masks instead.
    pub anonymous: bool,
    pub key: AffinityKey,
    pub src_mask: Ipv4Addr,
    pub dst_mask: Ipv4Addr,
    pub search_first: bool,
    pub service_precedence: u16,
    pub backup_precedence: u16,
    /// Index into the action table.
    pub action: u32,
    pub actions: ActionSet,
    /// Advertised prefix, if the wildcard carries an advertise action.
    pub advertise: Option<(Ipv4Addr, Ipv4Addr)>,
    /// Deciseconds since the agent epoch; refreshed in place.
    pub expires_ds: AtomicU32,
    pub ttl: u32,
    /// Punt budgets and SYN proxy (admission action, type 20); `None`:
    /// the documented default budgets, no SYN proxy.
    pub admission: Option<AdmissionAction>,
}

/// What names a wildcard in the table: its owner and affinity identifier,
/// or, without an identifier, its owner, key and masks (so wildcards
/// without identifiers do not replace each other).
pub type WildcardName = (u16, u32, Option<(AffinityKey, Ipv4Addr, Ipv4Addr)>);

impl WildcardEntry {
    /// The entry's name in the table ([`WildcardName`]).
    pub fn name(&self) -> WildcardName {
        let anon = self
            .anonymous
            .then_some((self.key, self.src_mask, self.dst_mask));
        (self.owner, self.id, anon)
    }

    /// Sort key: smaller is searched first.
    pub fn order(&self) -> (bool, u16, u16, u32, u16, u32) {
        let mask_len =
            u32::from(self.src_mask).count_ones() + u32::from(self.dst_mask).count_ones();
        (
            !self.search_first,
            u16::MAX - self.service_precedence,
            self.backup_precedence,
            64 - mask_len,
            self.owner,
            self.id,
        )
    }

    /// Whether a packet key matches (ports unknown: only port-any wildcards).
    pub fn matches(&self, k: &AffinityKey, ports_known: bool) -> bool {
        let m = |a: Ipv4Addr, b: Ipv4Addr, mask: Ipv4Addr| {
            u32::from(a) & u32::from(mask) == u32::from(b) & u32::from(mask)
        };
        (self.key.protocol == 0 || self.key.protocol == k.protocol)
            && m(k.src_addr, self.key.src_addr, self.src_mask)
            && m(k.dst_addr, self.key.dst_addr, self.dst_mask)
            && (self.key.src_port == 0 || (ports_known && self.key.src_port == k.src_port))
            && (self.key.dst_port == 0 || (ports_known && self.key.dst_port == k.dst_port))
    }

    pub fn is_live(&self, now_ds: u32) -> bool {
        self.expires_ds.load(Relaxed) > now_ds
    }

    /// Precedence rank for service chaining (smaller = searched earlier).
    pub fn rank(&self) -> (bool, u16) {
        (!self.search_first, u16::MAX - self.service_precedence)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Pattern {
    src_mask: u32,
    dst_mask: u32,
    proto: bool,
    sport: bool,
    dport: bool,
}

impl Pattern {
    fn of(e: &WildcardEntry) -> Self {
        Pattern {
            src_mask: e.src_mask.into(),
            dst_mask: e.dst_mask.into(),
            proto: e.key.protocol != 0,
            sport: e.key.src_port != 0,
            dport: e.key.dst_port != 0,
        }
    }
    fn apply(&self, k: &AffinityKey) -> MaskedKey {
        (
            u32::from(k.src_addr) & self.src_mask,
            u32::from(k.dst_addr) & self.dst_mask,
            if self.proto { k.protocol } else { 0 },
            if self.sport { k.src_port } else { 0 },
            if self.dport { k.dst_port } else { 0 },
        )
    }
}

/// A key with a group's masks applied.
type MaskedKey = (u32, u32, u8, u16, u16);

/// The bit of a group's [`Group::filter`] that masked key `k` sets: six
/// bits of a multiplicative hash. A look-up tests it before hashing and
/// probing the group's map, so a group the packet cannot match costs a
/// multiply and a load from the group itself (kept in one vector), not a
/// map probe in memory of its own (issue 16, item 4).
#[inline]
fn filter_bit(k: &MaskedKey) -> u64 {
    let addrs = (u64::from(k.0) << 32) | u64::from(k.1);
    let rest = (u64::from(k.2) << 32) | (u64::from(k.3) << 16) | u64::from(k.4);
    let h = (addrs ^ rest.rotate_left(23)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    1 << (h >> 58)
}

/// A wildcard as a look-up sees it.
#[derive(Debug)]
pub struct Member {
    /// The entry's expiry, moved with it on refresh.
    expires_ds: AtomicU32,
    /// Place in the snapshot's search order (smaller is searched first).
    order: u32,
    /// Index into the action table.
    pub action: u32,
    pub entry: Arc<WildcardEntry>,
}

impl Member {
    #[inline]
    fn is_live(&self, now_ds: u32) -> bool {
        self.expires_ds.load(Relaxed) > now_ds
    }
}

/// The wildcards of one masked key, in search order. Almost always one:
/// kept inline in the map.
enum Matches {
    One(Member),
    Many(Box<[Member]>),
}

impl Matches {
    fn as_slice(&self) -> &[Member] {
        match self {
            Matches::One(e) => std::slice::from_ref(e),
            Matches::Many(v) => v,
        }
    }
}

struct Group {
    pattern: Pattern,
    /// Best (smallest) order of any member: groups are searched in this order.
    best: u32,
    /// [`filter_bit`] of every key in `map`: a clear bit means no key of
    /// the group can match. All ones (not tested) past 16 keys, where it
    /// would be mostly ones anyway: such a group is probed, as before.
    filter: u64,
    // foldhash, seeded per process: a packet may probe every group, and
    // SipHash over the 5-tuple was most of a wildcard look-up's cost.
    map: HashMap<MaskedKey, Matches, foldhash::fast::RandomState>,
}

/// An immutable snapshot of all wildcards.
#[derive(Default)]
pub struct WildcardSet {
    groups: Vec<Group>,
    /// Group of each pattern, to find a member on refresh.
    index: HashMap<Pattern, usize>,
    all: Vec<Arc<WildcardEntry>>,
    advertised: Vec<(u32, u32)>,
}

impl WildcardSet {
    fn build(mut all: Vec<Arc<WildcardEntry>>) -> Self {
        all.sort_by_key(|e| e.order());
        let mut groups: Vec<Group> = Vec::new();
        let mut lists: Vec<HashMap<MaskedKey, Vec<Member>>> = Vec::new();
        let mut index: HashMap<Pattern, usize> = HashMap::new();
        for (order, e) in all.iter().enumerate() {
            // `all` is sorted: the position is the search order, and each
            // group's best member is its first.
            let order = order as u32;
            let p = Pattern::of(e);
            let gi = *index.entry(p).or_insert_with(|| {
                groups.push(Group {
                    pattern: p,
                    best: order,
                    filter: 0,
                    map: HashMap::default(),
                });
                lists.push(HashMap::new());
                groups.len() - 1
            });
            lists[gi].entry(p.apply(&e.key)).or_default().push(Member {
                expires_ds: AtomicU32::new(e.expires_ds.load(Relaxed)),
                order,
                action: e.action,
                entry: e.clone(),
            });
        }
        for (g, list) in groups.iter_mut().zip(lists) {
            // Past 16 keys the filter would be mostly ones: not kept.
            g.filter = if list.len() > 16 {
                u64::MAX
            } else {
                list.keys().fold(0, |f, k| f | filter_bit(k))
            };
            g.map.extend(list.into_iter().map(|(k, mut v)| {
                let m = if v.len() == 1 {
                    Matches::One(v.remove(0))
                } else {
                    Matches::Many(v.into_boxed_slice())
                };
                (k, m)
            }));
        }
        groups.sort_by_key(|g| g.best);
        let index = groups
            .iter()
            .enumerate()
            .map(|(i, g)| (g.pattern, i))
            .collect();
        let advertised = all
            .iter()
            .filter_map(|e| e.advertise)
            .map(|(a, m)| (u32::from(a) & u32::from(m), u32::from(m)))
            .collect();
        WildcardSet {
            groups,
            index,
            all,
            advertised,
        }
    }

    /// Moves the expiry of `e`'s member (control thread, on refresh).
    fn set_expiry(&self, e: &Arc<WildcardEntry>, expires_ds: u32) {
        let p = Pattern::of(e);
        let Some(g) = self.index.get(&p).map(|&i| &self.groups[i]) else {
            return;
        };
        if let Some(list) = g.map.get(&p.apply(&e.key)) {
            for m in list.as_slice().iter().filter(|m| Arc::ptr_eq(&m.entry, e)) {
                m.expires_ds.store(expires_ds, Relaxed);
            }
        }
    }

    /// The first live wildcard in search order that matches `k` and that
    /// `allow` accepts (used for service chaining of returned packets).
    #[inline]
    pub fn lookup(
        &self,
        k: &AffinityKey,
        ports_known: bool,
        now_ds: u32,
        allow: impl Fn(&WildcardEntry) -> bool,
    ) -> Option<&Member> {
        let mut best: Option<&Member> = None;
        for g in &self.groups {
            if best.is_some_and(|b| b.order <= g.best) {
                break;
            }
            if !ports_known && (g.pattern.sport || g.pattern.dport) {
                continue;
            }
            let masked = g.pattern.apply(k);
            if g.filter != u64::MAX && g.filter & filter_bit(&masked) == 0 {
                continue;
            }
            let Some(list) = g.map.get(&masked) else {
                continue;
            };
            if let Some(m) = list
                .as_slice()
                .iter()
                .find(|m| m.is_live(now_ds) && allow(&m.entry))
            {
                if best.is_none_or(|b| m.order < b.order) {
                    best = Some(m);
                }
            }
        }
        best
    }

    /// Whether `addr` is inside an advertised prefix.
    pub fn is_advertised(&self, addr: Ipv4Addr) -> bool {
        let a = u32::from(addr);
        self.advertised.iter().any(|&(net, mask)| a & mask == net)
    }

    pub fn entries(&self) -> &[Arc<WildcardEntry>] {
        &self.all
    }

    pub fn group_count(&self) -> usize {
        self.groups.len()
    }
}

/// The published wildcard set plus the control thread's master copy.
pub struct WildcardTable {
    current: ArcSwap<WildcardSet>,
    master: parking_lot::Mutex<Master>,
    capacity: usize,
}

/// The control thread's copy; `dirty` until the next [`WildcardTable::commit`].
#[derive(Default)]
struct Master {
    map: HashMap<WildcardName, Arc<WildcardEntry>>,
    dirty: bool,
    /// Entries per owner (per-owner quota).
    per_owner: HashMap<u16, usize>,
    /// Entries per (owner, mask pattern): the keys are the owner's distinct
    /// patterns, each one more group a look-up may probe.
    per_pattern: HashMap<(u16, Pattern), usize>,
    /// Entries per mask pattern, all owners together: the keys are the
    /// groups of the next snapshot (the agent-wide pattern cap).
    patterns: HashMap<Pattern, usize>,
}

impl Master {
    fn added(&mut self, e: &WildcardEntry) {
        *self.per_owner.entry(e.owner).or_default() += 1;
        *self
            .per_pattern
            .entry((e.owner, Pattern::of(e)))
            .or_default() += 1;
        *self.patterns.entry(Pattern::of(e)).or_default() += 1;
    }

    fn removed(&mut self, e: &WildcardEntry) {
        if let Some(n) = self.per_owner.get_mut(&e.owner) {
            *n -= 1;
            if *n == 0 {
                self.per_owner.remove(&e.owner);
            }
        }
        let k = (e.owner, Pattern::of(e));
        if let Some(n) = self.per_pattern.get_mut(&k) {
            *n -= 1;
            if *n == 0 {
                self.per_pattern.remove(&k);
            }
        }
        if let Some(n) = self.patterns.get_mut(&k.1) {
            *n -= 1;
            if *n == 0 {
                self.patterns.remove(&k.1);
            }
        }
    }

    fn patterns_of(&self, owner: u16) -> usize {
        self.per_pattern.keys().filter(|(o, _)| *o == owner).count()
    }
}

/// Per-owner and agent-wide limits checked by
/// [`WildcardTable::upsert_limited`].
#[derive(Debug, Clone, Copy)]
pub struct WildcardLimits {
    /// Entries one owner may hold.
    pub per_owner: usize,
    /// Distinct mask patterns one owner's entries may use.
    pub patterns_per_owner: usize,
    /// Distinct mask patterns among all owners' entries: the groups a
    /// look-up may probe, so the bound on per-packet work however many
    /// managers there are (issue 16, item 4).
    pub patterns_total: usize,
}

impl WildcardLimits {
    /// No limit beyond the table's capacity.
    pub const NONE: WildcardLimits = WildcardLimits {
        per_owner: usize::MAX,
        patterns_per_owner: usize::MAX,
        patterns_total: usize::MAX,
    };
}

/// Outcome of an upsert.
#[derive(Debug)]
pub enum Upsert {
    /// Only the expiry moved.
    Refreshed,
    /// New or changed; the replaced entry (its action reference must be released).
    Changed(Option<Arc<WildcardEntry>>),
    Full,
    /// The owner already holds its quota of entries.
    OwnerQuota,
    /// The entry would give its owner one mask pattern more than allowed.
    PatternQuota,
    /// The entry would give the agent one mask pattern more than allowed
    /// ([`WildcardLimits::patterns_total`]), whoever holds the others.
    PatternsFull,
}

impl WildcardTable {
    pub fn new(capacity: usize) -> Self {
        WildcardTable {
            current: ArcSwap::from_pointee(WildcardSet::default()),
            master: Default::default(),
            capacity,
        }
    }

    /// The current snapshot (workers; lock-free).
    #[inline]
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<WildcardSet>> {
        self.current.load()
    }

    pub fn len(&self) -> usize {
        self.master.lock().map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Inserts, replaces or refreshes the wildcard (owner, id). Changes are
    /// published by [`WildcardTable::commit`], once per control message.
    pub fn upsert(&self, e: WildcardEntry) -> Upsert {
        self.upsert_limited(e, WildcardLimits::NONE)
    }

    /// [`WildcardTable::upsert`] within per-owner `limits`: a new entry
    /// past the owner's entry quota, or one adding a mask pattern past the
    /// owner's pattern quota, is refused ([`Upsert::OwnerQuota`],
    /// [`Upsert::PatternQuota`]); one adding a pattern no entry of any
    /// owner uses, past the agent-wide pattern cap, too
    /// ([`Upsert::PatternsFull`]). A replacement counts as the old entry
    /// removed first. A refusal changes nothing: installed entries stay.
    pub fn upsert_limited(&self, e: WildcardEntry, limits: WildcardLimits) -> Upsert {
        let mut m = self.master.lock();
        let old_pattern = m.map.get(&e.name()).map(|o| Pattern::of(o));
        let p = Pattern::of(&e);
        if old_pattern.is_none()
            && m.per_owner.get(&e.owner).copied().unwrap_or(0) >= limits.per_owner
        {
            return Upsert::OwnerQuota;
        }
        // A new pattern for the owner (not counting a replaced entry that
        // had it), unless the replaced entry was its old pattern's last.
        let new_pattern = old_pattern != Some(p) && !m.per_pattern.contains_key(&(e.owner, p));
        let frees_one =
            old_pattern.is_some_and(|op| op != p && m.per_pattern.get(&(e.owner, op)) == Some(&1));
        if new_pattern && !frees_one && m.patterns_of(e.owner) >= limits.patterns_per_owner {
            return Upsert::PatternQuota;
        }
        // The same for the agent: a pattern no entry uses yet, unless the
        // replaced entry was the last of its own.
        let new_group = old_pattern != Some(p) && !m.patterns.contains_key(&p);
        let frees_group = old_pattern.is_some_and(|op| op != p && m.patterns.get(&op) == Some(&1));
        if new_group && !frees_group && m.patterns.len() >= limits.patterns_total {
            return Upsert::PatternsFull;
        }
        if let Some(old) = m.map.get(&e.name()) {
            let same = old.key == e.key
                && old.src_mask == e.src_mask
                && old.dst_mask == e.dst_mask
                && old.actions == e.actions
                && old.search_first == e.search_first
                && old.service_precedence == e.service_precedence
                && old.backup_precedence == e.backup_precedence
                && old.advertise == e.advertise
                && old.admission == e.admission;
            if same {
                let expires = e.expires_ds.load(Relaxed);
                old.expires_ds.store(expires, Relaxed);
                // Workers read the published copy; a pending rebuild
                // copies the entry's.
                self.current.load().set_expiry(old, expires);
                return Upsert::Refreshed;
            }
        } else if m.map.len() >= self.capacity {
            return Upsert::Full;
        }
        m.added(&e);
        let old = m.map.insert(e.name(), Arc::new(e));
        if let Some(o) = &old {
            m.removed(o);
        }
        m.dirty = true;
        Upsert::Changed(old)
    }

    /// Entries held by `owner`.
    pub fn owner_len(&self, owner: u16) -> usize {
        self.master
            .lock()
            .per_owner
            .get(&owner)
            .copied()
            .unwrap_or(0)
    }

    /// Distinct mask patterns among all entries (groups a look-up may probe).
    pub fn pattern_count(&self) -> usize {
        self.current.load().group_count()
    }

    /// Deletes the wildcard named `name`; the removed entry.
    pub fn remove(&self, name: &WildcardName) -> Option<Arc<WildcardEntry>> {
        let mut m = self.master.lock();
        let old = m.map.remove(name);
        if let Some(o) = &old {
            m.removed(o);
        }
        m.dirty |= old.is_some();
        old
    }

    /// Drops entries expired for more than a second; the removed entries.
    pub fn reclaim(&self, now_ds: u32) -> Vec<Arc<WildcardEntry>> {
        let mut m = self.master.lock();
        let dead: Vec<_> = m
            .map
            .iter()
            .filter(|(_, e)| e.expires_ds.load(Relaxed).saturating_add(10) <= now_ds)
            .map(|(k, _)| *k)
            .collect();
        let removed: Vec<_> = dead.iter().filter_map(|k| m.map.remove(k)).collect();
        for e in &removed {
            m.removed(e);
        }
        m.dirty |= !removed.is_empty();
        drop(m);
        self.commit();
        removed
    }

    /// Publishes a new snapshot if anything changed since the last one.
    pub fn commit(&self) {
        let mut m = self.master.lock();
        if m.dirty {
            m.dirty = false;
            self.current.store(Arc::new(WildcardSet::build(
                m.map.values().cloned().collect(),
            )));
        }
    }
}
