//! The action segments, which say what an agent does to an affinity's
//! packets: NAT (type 10), advertise (11), sequence-number adjust (12),
//! interest criteria (13), the action list (14), the admission action
//! (20, an extension) and the timestamp adjust (21, an extension). Layouts: PROTOCOL.md, "Segments".

use super::layout::{bad, fixed_layout, one_flag, only_defined, read_whole, SegmentBody};
use crate::codec::{Reader, Writer};
use crate::error::SegmentErrorKind;
use crate::numbers::{interest, seg, REQUIRED_FLAG};
use std::net::Ipv4Addr;

const ANY: Ipv4Addr = Ipv4Addr::UNSPECIFIED;

/// NAT action segment (type 10, 16 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatAction {
    /// Which fields apply: [`NatAction::SRC_ADDR`] etc.
    pub flags: u8,
    /// Replacement source address (with [`NatAction::SRC_ADDR`]).
    pub src_addr: Ipv4Addr,
    /// Replacement destination address (with [`NatAction::DST_ADDR`]).
    pub dst_addr: Ipv4Addr,
    /// Replacement source port (with [`NatAction::SRC_PORT`]).
    pub src_port: u16,
    /// Replacement destination port (with [`NatAction::DST_PORT`]).
    pub dst_port: u16,
}

impl NatAction {
    /// Flag bit 0: replace the source address.
    pub const SRC_ADDR: u8 = 1 << 0;
    /// Flag bit 1: replace the destination address.
    pub const DST_ADDR: u8 = 1 << 1;
    /// Flag bit 2: replace the source port.
    pub const SRC_PORT: u8 = 1 << 2;
    /// Flag bit 3: replace the destination port.
    pub const DST_PORT: u8 = 1 << 3;
    /// All flag bits defined in version 1; others make the segment malformed.
    pub const DEFINED: u8 = Self::SRC_ADDR | Self::DST_ADDR | Self::SRC_PORT | Self::DST_PORT;

    fn check_defined(&self) -> Result<(), SegmentErrorKind> {
        only_defined(self.flags, Self::DEFINED, "NAT flags")
    }
}

impl Default for NatAction {
    fn default() -> Self {
        NatAction {
            flags: 0,
            src_addr: ANY,
            dst_addr: ANY,
            src_port: 0,
            dst_port: 0,
        }
    }
}

fixed_layout! {
    NatAction = seg::NAT_ACTION, check NatAction::check_defined;
    u8(flags),
    zero(3),
    addr(src_addr),
    addr(dst_addr),
    u16(src_port),
    u16(dst_port),
}

/// Advertise action segment (type 11, 12 bytes): the agent routes/answers
/// for the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdvertiseAction {
    /// Address the agent attracts traffic for.
    pub address: Ipv4Addr,
    /// `None` means a host route (/32).
    pub mask: Option<Ipv4Addr>,
}

impl Default for AdvertiseAction {
    fn default() -> Self {
        AdvertiseAction {
            address: ANY,
            mask: None,
        }
    }
}

/// Flags byte of the advertise action: bit 0 says the mask field applies
/// (otherwise a host route); the other bits are undefined.
const HAS_MASK: u8 = 0x01;

impl<'a> SegmentBody<'a> for AdvertiseAction {
    type Value = Self;
    const TYPE: u16 = seg::ADVERTISE_ACTION;
    const MIN_LEN: usize = 12;
    const MAX_LEN: usize = 12;

    fn parse(body: &'a [u8]) -> Result<Self, SegmentErrorKind> {
        let mut r = Reader::new(body);
        let flags = r.u8();
        r.zero(3);
        let address = r.addr();
        let mask = r.addr();
        read_whole::<Self>(&r, body)?;
        Ok(AdvertiseAction {
            address,
            mask: one_flag(flags, HAS_MASK, "advertise flags")?.then_some(mask),
        })
    }

    fn emit(v: &Self, w: &mut Writer<'_>) {
        w.u8(if v.mask.is_some() { HAS_MASK } else { 0 });
        w.zero(3);
        w.addr(v.address);
        w.addr(v.mask.unwrap_or(ANY));
    }
}

/// Sequence-number adjust action segment (type 12, 16 bytes), applied to TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SeqAdjustAction {
    /// Added (mod 2^32) to sequence numbers at or after `initial_seq`.
    pub seq_delta: u32,
    /// First sequence number `seq_delta` applies to (RFC 1982 order).
    pub initial_seq: u32,
    /// Added (mod 2^32) to acknowledgment numbers at or after `initial_ack`.
    pub ack_delta: u32,
    /// First acknowledgment number `ack_delta` applies to (RFC 1982 order).
    pub initial_ack: u32,
}

fixed_layout! {
    SeqAdjustAction = seg::SEQ_ADJUST_ACTION;
    u32(seq_delta),
    u32(initial_seq),
    u32(ack_delta),
    u32(initial_ack),
}

/// Timestamp adjust action segment (type 21, 8 bytes, extension), applied
/// to TCP: `delta` is added (mod 2^32) to the TSval of the RFC 7323
/// timestamp option (kind 8), or to its TSecr with [`TsAdjustAction::ECHO`],
/// of every packet of the affinity that carries one (the checksum updated
/// incrementally, RFC 1624). The SYN proxy's splice (PROTOCOL.md, segment
/// 20) installs one per direction, as Linux's SYNPROXY
/// (`synproxy_tstamp_adjust`): the backend's TSval moved onto the agent's
/// clock on the backend → client flow, the client's TSecr moved back on the
/// client → backend flow. Any delta is valid (arithmetic mod 2^32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TsAdjustAction {
    /// Added (mod 2^32) to the TSval, or to the TSecr with [`Self::ECHO`].
    pub delta: u32,
    /// [`TsAdjustAction::ECHO`]; other bits undefined (malformed).
    pub flags: u8,
}

impl TsAdjustAction {
    /// Flag bit 0: the delta applies to the TSecr (echo reply) field, not
    /// the TSval (the client → backend direction of a splice).
    pub const ECHO: u8 = 1 << 0;
    /// All flag bits defined; others make the segment malformed.
    pub const DEFINED: u8 = Self::ECHO;

    fn check_defined(&self) -> Result<(), SegmentErrorKind> {
        only_defined(self.flags, Self::DEFINED, "timestamp adjust flags")
    }
}

fixed_layout! {
    TsAdjustAction = seg::TS_ADJUST_ACTION, check TsAdjustAction::check_defined;
    u32(delta),
    u8(flags),
    zero(3),
}

/// Interest criteria action segment (type 13, 12 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterestCriteria {
    /// Where interest matches go.
    pub address: Ipv4Addr,
    /// UDP port interest matches go to; 0 = 1638 ([`crate::MANAGER_PORT`]).
    pub port: u16,
    /// [`interest`] bits that trigger a match.
    pub mask: u16,
    /// [`InterestCriteria::DATA`], [`InterestCriteria::COPY`], [`InterestCriteria::HOLD`].
    pub flags: u8,
}

impl InterestCriteria {
    /// Include the packet in the interest match.
    pub const DATA: u8 = 1 << 0;
    /// Forward the packet as well as sending the match (otherwise the manager
    /// owns it and returns it).
    pub const COPY: u8 = 1 << 1;
    /// Keep the packet in a bounded queue until the fixed affinity arrives.
    pub const HOLD: u8 = 1 << 2;
    /// All flag bits defined in version 1; others make the segment malformed.
    pub const DEFINED: u8 = Self::DATA | Self::COPY | Self::HOLD;

    fn check_defined(&self) -> Result<(), SegmentErrorKind> {
        only_defined(self.flags, Self::DEFINED, "interest flags")?;
        only_defined(self.mask, interest::DEFINED, "interest mask")
    }
}

impl Default for InterestCriteria {
    fn default() -> Self {
        InterestCriteria {
            address: ANY,
            port: 0,
            mask: 0,
            flags: 0,
        }
    }
}

fixed_layout! {
    InterestCriteria = seg::INTEREST_CRITERIA_ACTION, check InterestCriteria::check_defined;
    addr(address),
    u16(port),
    u16(mask),
    u8(flags),
    zero(3),
}

/// Action list segment (type 14, 0–64 bytes): action segment types the
/// sender needs, each a u16 (network order) whose bit 15 says the action is
/// required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionList<'a> {
    raw: &'a [u8],
}

impl<'a> ActionList<'a> {
    /// Entries as (segment type, required).
    pub fn entries(&self) -> impl Iterator<Item = (u16, bool)> + 'a {
        self.raw
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .map(|v| (v & !REQUIRED_FLAG, v & REQUIRED_FLAG != 0))
    }
    /// Number of entries (2 bytes each).
    pub fn len(&self) -> usize {
        self.raw.len() / 2
    }
    /// Whether the list has no entries.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }
    /// Whether segment type `t` (Required flag cleared) is an action type
    /// an action list may name: NAT, advertise, sequence adjust or
    /// interest criteria (10–13).
    pub fn is_action(t: u16) -> bool {
        (seg::NAT_ACTION..=seg::INTEREST_CRITERIA_ACTION).contains(&t)
    }
    /// Wraps already-encoded entries (big-endian u16 each).
    pub fn from_raw(raw: &'a [u8]) -> Option<Self> {
        raw.len().is_multiple_of(2).then_some(ActionList { raw })
    }
    /// The encoded entries, big-endian u16 each.
    pub fn as_raw(&self) -> &'a [u8] {
        self.raw
    }
}

impl<'a> SegmentBody<'a> for ActionList<'a> {
    type Value = Self;
    const TYPE: u16 = seg::ACTION_LIST;
    const MIN_LEN: usize = 0;
    const MAX_LEN: usize = 64;

    fn parse(body: &'a [u8]) -> Result<Self, SegmentErrorKind> {
        let list =
            ActionList::from_raw(body).ok_or(bad("action list length", body.len() as u32))?;
        // Each entry names an action segment type (10–13), PROTOCOL.md
        // "14 — action list"; anything else is malformed.
        match list.entries().find(|&(t, _)| !ActionList::is_action(t)) {
            Some((t, _)) => Err(bad("action list entry", t.into())),
            None => Ok(list),
        }
    }

    fn emit(v: &Self, w: &mut Writer<'_>) {
        w.bytes(v.raw);
    }

    fn len(v: &Self) -> usize {
        v.raw.len()
    }
}

/// Encodes action list entries into `out`, returning the raw bytes for [`ActionList::from_raw`].
pub fn encode_action_list(entries: &[(u16, bool)]) -> Vec<u8> {
    entries
        .iter()
        .flat_map(|&(t, req)| {
            ((t & !REQUIRED_FLAG) | if req { REQUIRED_FLAG } else { 0 }).to_be_bytes()
        })
        .collect()
}

/// Admission action segment (type 20, 20 bytes, an extension of this
/// implementation; PROTOCOL.md "20 — admission action"): on a wildcard, how
/// many interest matches per second each agent worker may send its manager
/// (token buckets), and whether the agent answers SYNs itself with SYN
/// cookies (RFC 4987 section 3.6). A rate or burst of 0 means the agent's
/// default ([`AdmissionAction::DEFAULT_NEW_RATE`] etc.).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AdmissionAction {
    /// [`AdmissionAction::SYN_PROXY`].
    pub flags: u8,
    /// Interest matches of new flows (SYN, or a proved cookie ACK) per
    /// second per worker; 0 = [`AdmissionAction::DEFAULT_NEW_RATE`].
    pub new_rate: u32,
    /// Bucket depth for new flows, matches; 0 = [`AdmissionAction::DEFAULT_NEW_BURST`].
    pub new_burst: u32,
    /// Interest matches of packets of flows the manager already knows
    /// (non-SYN re-punts) per second per worker; 0 =
    /// [`AdmissionAction::DEFAULT_KNOWN_RATE`].
    pub known_rate: u32,
    /// Bucket depth for known flows, matches; 0 = [`AdmissionAction::DEFAULT_KNOWN_BURST`].
    pub known_burst: u32,
}

impl AdmissionAction {
    /// Flag bit 0: answer SYNs with SYN cookies; only a valid cookie ACK
    /// becomes an interest match.
    pub const SYN_PROXY: u8 = 1 << 0;
    /// All flag bits defined; others make the segment malformed.
    pub const DEFINED: u8 = Self::SYN_PROXY;
    /// New-flow matches per second per worker when the manager gives 0 or
    /// no admission action (a manager answers a few thousand flows a
    /// second; a worker seeing more new flows than that is under a flood).
    pub const DEFAULT_NEW_RATE: u32 = 10_000;
    /// New-flow bucket depth when the manager gives 0 or none.
    pub const DEFAULT_NEW_BURST: u32 = 20_000;
    /// Known-flow matches per second per worker when the manager gives 0 or none.
    pub const DEFAULT_KNOWN_RATE: u32 = 20_000;
    /// Known-flow bucket depth when the manager gives 0 or none.
    pub const DEFAULT_KNOWN_BURST: u32 = 40_000;

    fn check_defined(&self) -> Result<(), SegmentErrorKind> {
        only_defined(self.flags, Self::DEFINED, "admission flags")
    }

    /// (rate per second, burst) of the new-flow bucket, defaults applied.
    pub fn new_budget(&self) -> (u32, u32) {
        (
            or_default(self.new_rate, Self::DEFAULT_NEW_RATE),
            or_default(self.new_burst, Self::DEFAULT_NEW_BURST),
        )
    }

    /// (rate per second, burst) of the known-flow bucket, defaults applied.
    pub fn known_budget(&self) -> (u32, u32) {
        (
            or_default(self.known_rate, Self::DEFAULT_KNOWN_RATE),
            or_default(self.known_burst, Self::DEFAULT_KNOWN_BURST),
        )
    }
}

fn or_default(v: u32, d: u32) -> u32 {
    if v == 0 {
        d
    } else {
        v
    }
}

fixed_layout! {
    AdmissionAction = seg::ADMISSION_ACTION, check AdmissionAction::check_defined;
    u8(flags),
    zero(3),
    u32(new_rate),
    u32(new_burst),
    u32(known_rate),
    u32(known_burst),
}
