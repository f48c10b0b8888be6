//! Segment types and their `Repr` structs. Every segment starts with a 4-byte
//! segment header: type (bit 15 = Required) and total length.

use crate::error::SegmentErrorKind;
use nom::bytes::complete::take;
use nom::number::complete::{be_u16, be_u32, be_u64, be_u8};
use nom::IResult;
use std::net::Ipv4Addr;

/// Bit 15 of the segment type: the receiver must understand this segment.
pub const REQUIRED_FLAG: u16 = 0x8000;
/// Length of a segment header.
pub const SEGMENT_HEADER_LEN: usize = 4;

/// Segment type numbers (low 15 bits of the segment type field).
pub mod seg {
    pub const WILDCARD_AFFINITY: u16 = 1;
    pub const FIXED_AFFINITY: u16 = 2;
    pub const AFFINITY_IDENTIFIER: u16 = 3;
    pub const SERVICE_PRECEDENCE: u16 = 4;
    pub const BACKUP_PRECEDENCE: u16 = 5;
    pub const SECURITY: u16 = 6;
    pub const SM_INTEREST_DATA: u16 = 7;
    pub const FA_INTEREST_DATA: u16 = 8;
    pub const IDENTITY_INFO: u16 = 9;
    pub const NAT_ACTION: u16 = 10;
    pub const ADVERTISE_ACTION: u16 = 11;
    pub const SEQ_ADJUST_ACTION: u16 = 12;
    pub const INTEREST_CRITERIA_ACTION: u16 = 13;
    pub const ACTION_LIST: u16 = 14;
    pub const IP_PACKET: u16 = 15;
    pub const DENY_REASON: u16 = 16;
    pub const CAPABILITIES: u16 = 17;
    pub const STATISTICS: u16 = 18;
}

/// Dispatch flags of an affinity.
pub mod dispatch {
    /// Send the packet to the forward address as next hop, untranslated.
    pub const FORWARD: u8 = 0x01;
}

/// Information flags of an affinity.
pub mod info {
    /// Count packets and bytes per forward address.
    pub const STATISTICS: u8 = 0x01;
}

/// Interest mask bits: why a packet interests a manager.
pub mod interest {
    pub const FIN: u16 = 0x0001;
    pub const SYN: u16 = 0x0002;
    pub const RST: u16 = 0x0004;
    pub const PSH: u16 = 0x0008;
    pub const ACK: u16 = 0x0010;
    pub const URG: u16 = 0x0020;
    /// The packet carries transport payload (TCP or UDP).
    pub const DATA: u16 = 0x0040;
    /// First payload-carrying packet of the flow seen by this affinity
    /// (for UDP: the first packet).
    pub const FIRST_DATA: u16 = 0x0080;
    /// The packet is an IP fragment.
    pub const FRAGMENT: u16 = 0x0100;
    /// Every packet.
    pub const ALL: u16 = 0x8000;
    /// All bits defined in version 1.
    pub const DEFINED: u16 = 0x81ff;
}

/// Affinity key: protocol and both endpoints. In a wildcard, 0 means "any"
/// for protocol and ports; addresses are masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AffinityKey {
    pub protocol: u8,
    pub src_addr: Ipv4Addr,
    pub dst_addr: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
}

const ANY: Ipv4Addr = Ipv4Addr::UNSPECIFIED;

impl Default for AffinityKey {
    fn default() -> Self {
        AffinityKey {
            protocol: 0,
            src_addr: ANY,
            dst_addr: ANY,
            src_port: 0,
            dst_port: 0,
        }
    }
}

impl Default for FixedAffinity {
    fn default() -> Self {
        FixedAffinity {
            key: AffinityKey::default(),
            dispatch_flags: 0,
            info_flags: 0,
            forward_addr: ANY,
            ttl: 0,
        }
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

impl Default for AdvertiseAction {
    fn default() -> Self {
        AdvertiseAction {
            address: ANY,
            mask: None,
        }
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

impl Default for Statistics {
    fn default() -> Self {
        Statistics {
            forward_addr: ANY,
            packets: 0,
            bytes: 0,
        }
    }
}

impl Default for WildcardAffinity {
    fn default() -> Self {
        WildcardAffinity {
            key: AffinityKey::default(),
            src_mask: Ipv4Addr::UNSPECIFIED,
            dst_mask: Ipv4Addr::UNSPECIFIED,
            dispatch_flags: 0,
            info_flags: 0,
            forward_addr: Ipv4Addr::UNSPECIFIED,
            ttl: 0,
        }
    }
}

impl AffinityKey {
    /// The key of the reverse direction.
    pub fn reversed(&self) -> AffinityKey {
        AffinityKey {
            protocol: self.protocol,
            src_addr: self.dst_addr,
            dst_addr: self.src_addr,
            src_port: self.dst_port,
            dst_port: self.src_port,
        }
    }
}

/// Wildcard affinity segment (type 1): attracts new flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WildcardAffinity {
    pub key: AffinityKey,
    pub src_mask: Ipv4Addr,
    pub dst_mask: Ipv4Addr,
    pub dispatch_flags: u8,
    pub info_flags: u8,
    pub forward_addr: Ipv4Addr,
    /// Seconds; 0 deletes.
    pub ttl: u32,
}

/// Fixed affinity segment (type 2): one direction of one flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedAffinity {
    pub key: AffinityKey,
    pub dispatch_flags: u8,
    pub info_flags: u8,
    pub forward_addr: Ipv4Addr,
    /// Seconds; 0 deletes.
    pub ttl: u32,
}

/// Affinity identifier segment (type 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AffinityIdentifier {
    /// Chosen by the manager; echoed in interest matches.
    pub id: u32,
    /// In interest matches: the interest bits that hit.
    pub reason: u16,
}

/// Service precedence segment (type 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServicePrecedence {
    /// Search-order flag: wildcards with it set are searched before all
    /// wildcards without it.
    pub search_first: bool,
    /// Higher values are searched first within a search-order class.
    pub value: u16,
}

/// Backup precedence segment (type 5): lower wins among equal service precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BackupPrecedence {
    pub value: u16,
}

/// Security segment (type 6). The digest covers the whole message with the
/// digest bytes set to zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Security<'a> {
    pub algorithm: u8,
    pub key_id: u16,
    pub digest: &'a [u8],
}

/// Identity info segment (type 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentityInfo<'a> {
    pub address: Ipv4Addr,
    /// UTF-8 host name, at most 255 bytes.
    pub host_name: &'a str,
}

/// NAT action segment (type 10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatAction {
    /// Which fields apply: [`NatAction::SRC_ADDR`] etc.
    pub flags: u8,
    pub src_addr: Ipv4Addr,
    pub dst_addr: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
}

impl NatAction {
    pub const SRC_ADDR: u8 = 0x01;
    pub const DST_ADDR: u8 = 0x02;
    pub const SRC_PORT: u8 = 0x04;
    pub const DST_PORT: u8 = 0x08;
    pub const DEFINED: u8 = 0x0f;
}

/// Advertise action segment (type 11): the agent routes/answers for the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdvertiseAction {
    pub address: Ipv4Addr,
    /// `None` means a host route (/32).
    pub mask: Option<Ipv4Addr>,
}

/// Sequence-number adjust action segment (type 12), applied to TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SeqAdjustAction {
    /// Added (mod 2^32) to sequence numbers at or after `initial_seq`.
    pub seq_delta: u32,
    pub initial_seq: u32,
    /// Added (mod 2^32) to acknowledgment numbers at or after `initial_ack`.
    pub ack_delta: u32,
    pub initial_ack: u32,
}

/// Interest criteria action segment (type 13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterestCriteria {
    /// Where interest matches go.
    pub address: Ipv4Addr,
    pub port: u16,
    /// [`interest`] bits that trigger a match.
    pub mask: u16,
    /// [`InterestCriteria::DATA`], [`InterestCriteria::COPY`], [`InterestCriteria::HOLD`].
    pub flags: u8,
}

impl InterestCriteria {
    /// Include the packet in the interest match.
    pub const DATA: u8 = 0x01;
    /// Forward the packet as well as sending the match (otherwise the manager
    /// owns it and returns it).
    pub const COPY: u8 = 0x02;
    /// Keep the packet in a bounded queue until the fixed affinity arrives.
    pub const HOLD: u8 = 0x04;
    pub const DEFINED: u8 = 0x07;
}

/// Action list segment (type 14): action segment types the sender needs,
/// each a u16 whose bit 15 says the action is required.
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
    pub fn len(&self) -> usize {
        self.raw.len() / 2
    }
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }
    /// Wraps already-encoded entries (big-endian u16 each).
    pub fn from_raw(raw: &'a [u8]) -> Option<Self> {
        raw.len().is_multiple_of(2).then_some(ActionList { raw })
    }
    pub fn as_raw(&self) -> &'a [u8] {
        self.raw
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

/// Deny reason segment (type 16), carried by affinity update-deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DenyReason {
    /// The segment or action type refused (low 15 bits).
    pub denied_type: u16,
    pub code: u16,
    /// Sequence number of the refused message.
    pub denied_sequence: u64,
}

impl DenyReason {
    pub const UNKNOWN_REQUIRED_SEGMENT: u16 = 1;
    pub const UNSUPPORTED_REQUIRED_ACTION: u16 = 2;
    pub const NO_SUPPORTING_WILDCARD: u16 = 3;
    pub const TABLE_FULL: u16 = 4;
    pub const MALFORMED: u16 = 5;
}

/// Capabilities segment (type 17), carried by agent hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// Bit n set: action segment type n is supported.
    pub actions: u32,
    pub fixed_capacity: u32,
    pub wildcard_capacity: u32,
}

/// Statistics segment (type 18): one counter pair for a forward address
/// (or for the agent as a whole when the address is 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statistics {
    pub forward_addr: Ipv4Addr,
    pub packets: u64,
    pub bytes: u64,
}

/// One parsed segment. Variable-length payloads borrow the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment<'a> {
    WildcardAffinity(WildcardAffinity),
    FixedAffinity(FixedAffinity),
    AffinityIdentifier(AffinityIdentifier),
    ServicePrecedence(ServicePrecedence),
    BackupPrecedence(BackupPrecedence),
    Security(Security<'a>),
    SmInterestData(&'a [u8]),
    FaInterestData(&'a [u8]),
    IdentityInfo(IdentityInfo<'a>),
    NatAction(NatAction),
    AdvertiseAction(AdvertiseAction),
    SeqAdjustAction(SeqAdjustAction),
    InterestCriteria(InterestCriteria),
    ActionList(ActionList<'a>),
    IpPacket(&'a [u8]),
    DenyReason(DenyReason),
    Capabilities(Capabilities),
    Statistics(Statistics),
    /// An optional segment of a type this implementation does not know.
    Unknown {
        seg_type: u16,
        body: &'a [u8],
    },
}

type Res<'a, T> = IResult<&'a [u8], T>;

fn addr(i: &[u8]) -> Res<'_, Ipv4Addr> {
    let (i, v) = be_u32(i)?;
    Ok((i, Ipv4Addr::from(v)))
}

fn parse_wildcard(i: &[u8]) -> Res<'_, WildcardAffinity> {
    let (i, protocol) = be_u8(i)?;
    let (i, dispatch_flags) = be_u8(i)?;
    let (i, info_flags) = be_u8(i)?;
    let (i, _) = be_u8(i)?;
    let (i, src_addr) = addr(i)?;
    let (i, src_mask) = addr(i)?;
    let (i, dst_addr) = addr(i)?;
    let (i, dst_mask) = addr(i)?;
    let (i, src_port) = be_u16(i)?;
    let (i, dst_port) = be_u16(i)?;
    let (i, forward_addr) = addr(i)?;
    let (i, ttl) = be_u32(i)?;
    Ok((
        i,
        WildcardAffinity {
            key: AffinityKey {
                protocol,
                src_addr,
                dst_addr,
                src_port,
                dst_port,
            },
            src_mask,
            dst_mask,
            dispatch_flags,
            info_flags,
            forward_addr,
            ttl,
        },
    ))
}

fn parse_fixed(i: &[u8]) -> Res<'_, FixedAffinity> {
    let (i, protocol) = be_u8(i)?;
    let (i, dispatch_flags) = be_u8(i)?;
    let (i, info_flags) = be_u8(i)?;
    let (i, _) = be_u8(i)?;
    let (i, src_addr) = addr(i)?;
    let (i, dst_addr) = addr(i)?;
    let (i, src_port) = be_u16(i)?;
    let (i, dst_port) = be_u16(i)?;
    let (i, forward_addr) = addr(i)?;
    let (i, ttl) = be_u32(i)?;
    Ok((
        i,
        FixedAffinity {
            key: AffinityKey {
                protocol,
                src_addr,
                dst_addr,
                src_port,
                dst_port,
            },
            dispatch_flags,
            info_flags,
            forward_addr,
            ttl,
        },
    ))
}

/// Fixed body length of each known segment type (minimum for variable ones)
/// and the maximum body length.
pub(crate) fn body_bounds(seg_type: u16) -> Option<(usize, usize)> {
    use seg::*;
    const ANY: usize = u16::MAX as usize - SEGMENT_HEADER_LEN;
    Some(match seg_type {
        WILDCARD_AFFINITY => (32, 32),
        FIXED_AFFINITY => (24, 24),
        AFFINITY_IDENTIFIER => (8, 8),
        SERVICE_PRECEDENCE => (4, 4),
        BACKUP_PRECEDENCE => (4, 4),
        SECURITY => (4, 4 + 64),
        SM_INTEREST_DATA | FA_INTEREST_DATA => (0, 1024),
        IDENTITY_INFO => (4, 4 + 255),
        NAT_ACTION => (16, 16),
        ADVERTISE_ACTION => (12, 12),
        SEQ_ADJUST_ACTION => (16, 16),
        INTEREST_CRITERIA_ACTION => (12, 12),
        ACTION_LIST => (0, 64),
        IP_PACKET => (20, ANY),
        DENY_REASON => (12, 12),
        CAPABILITIES => (12, 12),
        STATISTICS => (20, 20),
        _ => return None,
    })
}

fn bad(field: &'static str, value: u32) -> SegmentErrorKind {
    SegmentErrorKind::BadValue { field, value }
}

/// Parses a known segment's body. The caller has checked `body_bounds`, so
/// the complete parsers below cannot run out of input; a failure is still
/// reported as an error rather than trusted away.
pub(crate) fn parse_body(seg_type: u16, body: &[u8]) -> Result<Segment<'_>, SegmentErrorKind> {
    use seg::*;
    let short = |_| SegmentErrorKind::BodyTooShort {
        need: body_bounds(seg_type).map_or(0, |b| b.0),
        have: body.len(),
    };
    Ok(match seg_type {
        WILDCARD_AFFINITY => {
            let (_, w) = parse_wildcard(body).map_err(short)?;
            Segment::WildcardAffinity(w)
        }
        FIXED_AFFINITY => {
            let (_, f) = parse_fixed(body).map_err(short)?;
            Segment::FixedAffinity(f)
        }
        AFFINITY_IDENTIFIER => {
            let (_, (id, reason)) = (|i| -> Res<'_, (u32, u16)> {
                let (i, id) = be_u32(i)?;
                let (i, reason) = be_u16(i)?;
                Ok((i, (id, reason)))
            })(body)
            .map_err(short)?;
            Segment::AffinityIdentifier(AffinityIdentifier { id, reason })
        }
        SERVICE_PRECEDENCE => {
            let (_, (flags, value)) = (|i| -> Res<'_, (u8, u16)> {
                let (i, flags) = be_u8(i)?;
                let (i, _) = be_u8(i)?;
                let (i, value) = be_u16(i)?;
                Ok((i, (flags, value)))
            })(body)
            .map_err(short)?;
            if flags & !1 != 0 {
                return Err(bad("service-precedence flags", flags as u32));
            }
            Segment::ServicePrecedence(ServicePrecedence {
                search_first: flags & 1 != 0,
                value,
            })
        }
        BACKUP_PRECEDENCE => {
            let (_, value) = be_u16(body).map_err(short)?;
            Segment::BackupPrecedence(BackupPrecedence { value })
        }
        SECURITY => {
            let (_, (algorithm, key_id, digest)) = (|i| -> Res<'_, (u8, u16, &[u8])> {
                let (i, algorithm) = be_u8(i)?;
                let (i, _) = be_u8(i)?;
                let (i, key_id) = be_u16(i)?;
                Ok((&[][..], (algorithm, key_id, i)))
            })(body)
            .map_err(short)?;
            Segment::Security(Security {
                algorithm,
                key_id,
                digest,
            })
        }
        SM_INTEREST_DATA => Segment::SmInterestData(body),
        FA_INTEREST_DATA => Segment::FaInterestData(body),
        IDENTITY_INFO => {
            let (name, address) = addr(body).map_err(short)?;
            let host_name = std::str::from_utf8(name)
                .map_err(|e| bad("host name (UTF-8 at byte)", e.valid_up_to() as u32))?;
            Segment::IdentityInfo(IdentityInfo { address, host_name })
        }
        NAT_ACTION => {
            let (_, n) = (|i| -> Res<'_, NatAction> {
                let (i, flags) = be_u8(i)?;
                let (i, _) = take(3usize)(i)?;
                let (i, src_addr) = addr(i)?;
                let (i, dst_addr) = addr(i)?;
                let (i, src_port) = be_u16(i)?;
                let (i, dst_port) = be_u16(i)?;
                Ok((
                    i,
                    NatAction {
                        flags,
                        src_addr,
                        dst_addr,
                        src_port,
                        dst_port,
                    },
                ))
            })(body)
            .map_err(short)?;
            if n.flags & !NatAction::DEFINED != 0 {
                return Err(bad("NAT flags", n.flags as u32));
            }
            Segment::NatAction(n)
        }
        ADVERTISE_ACTION => {
            let (_, (flags, address, mask)) = (|i| -> Res<'_, (u8, Ipv4Addr, Ipv4Addr)> {
                let (i, flags) = be_u8(i)?;
                let (i, _) = take(3usize)(i)?;
                let (i, a) = addr(i)?;
                let (i, m) = addr(i)?;
                Ok((i, (flags, a, m)))
            })(body)
            .map_err(short)?;
            if flags & !1 != 0 {
                return Err(bad("advertise flags", flags as u32));
            }
            Segment::AdvertiseAction(AdvertiseAction {
                address,
                mask: (flags & 1 != 0).then_some(mask),
            })
        }
        SEQ_ADJUST_ACTION => {
            let (_, s) = (|i| -> Res<'_, SeqAdjustAction> {
                let (i, seq_delta) = be_u32(i)?;
                let (i, initial_seq) = be_u32(i)?;
                let (i, ack_delta) = be_u32(i)?;
                let (i, initial_ack) = be_u32(i)?;
                Ok((
                    i,
                    SeqAdjustAction {
                        seq_delta,
                        initial_seq,
                        ack_delta,
                        initial_ack,
                    },
                ))
            })(body)
            .map_err(short)?;
            Segment::SeqAdjustAction(s)
        }
        INTEREST_CRITERIA_ACTION => {
            let (_, c) = (|i| -> Res<'_, InterestCriteria> {
                let (i, address) = addr(i)?;
                let (i, port) = be_u16(i)?;
                let (i, mask) = be_u16(i)?;
                let (i, flags) = be_u8(i)?;
                let (i, _) = take(3usize)(i)?;
                Ok((
                    i,
                    InterestCriteria {
                        address,
                        port,
                        mask,
                        flags,
                    },
                ))
            })(body)
            .map_err(short)?;
            if c.flags & !InterestCriteria::DEFINED != 0 {
                return Err(bad("interest flags", c.flags as u32));
            }
            if c.mask & !interest::DEFINED != 0 {
                return Err(bad("interest mask", c.mask as u32));
            }
            Segment::InterestCriteria(c)
        }
        ACTION_LIST => {
            if !body.len().is_multiple_of(2) {
                return Err(bad("action list length", body.len() as u32));
            }
            Segment::ActionList(ActionList { raw: body })
        }
        IP_PACKET => Segment::IpPacket(body),
        DENY_REASON => {
            let (_, d) = (|i| -> Res<'_, DenyReason> {
                let (i, denied_type) = be_u16(i)?;
                let (i, code) = be_u16(i)?;
                let (i, denied_sequence) = be_u64(i)?;
                Ok((
                    i,
                    DenyReason {
                        denied_type,
                        code,
                        denied_sequence,
                    },
                ))
            })(body)
            .map_err(short)?;
            Segment::DenyReason(d)
        }
        CAPABILITIES => {
            let (_, c) = (|i| -> Res<'_, Capabilities> {
                let (i, actions) = be_u32(i)?;
                let (i, fixed_capacity) = be_u32(i)?;
                let (i, wildcard_capacity) = be_u32(i)?;
                Ok((
                    i,
                    Capabilities {
                        actions,
                        fixed_capacity,
                        wildcard_capacity,
                    },
                ))
            })(body)
            .map_err(short)?;
            Segment::Capabilities(c)
        }
        STATISTICS => {
            let (_, s) = (|i| -> Res<'_, Statistics> {
                let (i, forward_addr) = addr(i)?;
                let (i, packets) = be_u64(i)?;
                let (i, bytes) = be_u64(i)?;
                Ok((
                    i,
                    Statistics {
                        forward_addr,
                        packets,
                        bytes,
                    },
                ))
            })(body)
            .map_err(short)?;
            Segment::Statistics(s)
        }
        other => Segment::Unknown {
            seg_type: other,
            body,
        },
    })
}

impl<'a> Segment<'a> {
    /// The segment type number (without the Required flag).
    pub fn seg_type(&self) -> u16 {
        use seg::*;
        match self {
            Segment::WildcardAffinity(_) => WILDCARD_AFFINITY,
            Segment::FixedAffinity(_) => FIXED_AFFINITY,
            Segment::AffinityIdentifier(_) => AFFINITY_IDENTIFIER,
            Segment::ServicePrecedence(_) => SERVICE_PRECEDENCE,
            Segment::BackupPrecedence(_) => BACKUP_PRECEDENCE,
            Segment::Security(_) => SECURITY,
            Segment::SmInterestData(_) => SM_INTEREST_DATA,
            Segment::FaInterestData(_) => FA_INTEREST_DATA,
            Segment::IdentityInfo(_) => IDENTITY_INFO,
            Segment::NatAction(_) => NAT_ACTION,
            Segment::AdvertiseAction(_) => ADVERTISE_ACTION,
            Segment::SeqAdjustAction(_) => SEQ_ADJUST_ACTION,
            Segment::InterestCriteria(_) => INTEREST_CRITERIA_ACTION,
            Segment::ActionList(_) => ACTION_LIST,
            Segment::IpPacket(_) => IP_PACKET,
            Segment::DenyReason(_) => DENY_REASON,
            Segment::Capabilities(_) => CAPABILITIES,
            Segment::Statistics(_) => STATISTICS,
            Segment::Unknown { seg_type, .. } => *seg_type & !REQUIRED_FLAG,
        }
    }

    /// Length of the body when emitted.
    pub fn body_len(&self) -> usize {
        match self {
            Segment::Security(s) => 4 + s.digest.len(),
            Segment::SmInterestData(d) | Segment::FaInterestData(d) | Segment::IpPacket(d) => {
                d.len()
            }
            Segment::IdentityInfo(i) => 4 + i.host_name.len(),
            Segment::ActionList(l) => l.raw.len(),
            Segment::Unknown { body, .. } => body.len(),
            other => body_bounds(other.seg_type()).map_or(0, |b| b.0),
        }
    }

    /// Total emitted length including the segment header.
    pub fn wire_len(&self) -> usize {
        SEGMENT_HEADER_LEN + self.body_len()
    }

    /// Writes header and body into `out[..self.wire_len()]`. The caller has
    /// checked the buffer size.
    pub(crate) fn emit(&self, required: bool, out: &mut [u8]) {
        let t = self.seg_type() | if required { REQUIRED_FLAG } else { 0 };
        let len = self.wire_len();
        out[0..2].copy_from_slice(&t.to_be_bytes());
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        let mut w = Writer {
            out: &mut out[4..len],
            pos: 0,
        };
        match *self {
            Segment::WildcardAffinity(a) => {
                w.u8(a.key.protocol);
                w.u8(a.dispatch_flags);
                w.u8(a.info_flags);
                w.u8(0);
                w.addr(a.key.src_addr);
                w.addr(a.src_mask);
                w.addr(a.key.dst_addr);
                w.addr(a.dst_mask);
                w.u16(a.key.src_port);
                w.u16(a.key.dst_port);
                w.addr(a.forward_addr);
                w.u32(a.ttl);
            }
            Segment::FixedAffinity(a) => {
                w.u8(a.key.protocol);
                w.u8(a.dispatch_flags);
                w.u8(a.info_flags);
                w.u8(0);
                w.addr(a.key.src_addr);
                w.addr(a.key.dst_addr);
                w.u16(a.key.src_port);
                w.u16(a.key.dst_port);
                w.addr(a.forward_addr);
                w.u32(a.ttl);
            }
            Segment::AffinityIdentifier(a) => {
                w.u32(a.id);
                w.u16(a.reason);
                w.u16(0);
            }
            Segment::ServicePrecedence(p) => {
                w.u8(p.search_first as u8);
                w.u8(0);
                w.u16(p.value);
            }
            Segment::BackupPrecedence(p) => {
                w.u16(p.value);
                w.u16(0);
            }
            Segment::Security(s) => {
                w.u8(s.algorithm);
                w.u8(0);
                w.u16(s.key_id);
                w.bytes(s.digest);
            }
            Segment::SmInterestData(d) | Segment::FaInterestData(d) | Segment::IpPacket(d) => {
                w.bytes(d)
            }
            Segment::IdentityInfo(i) => {
                w.addr(i.address);
                w.bytes(i.host_name.as_bytes());
            }
            Segment::NatAction(n) => {
                w.u8(n.flags);
                w.bytes(&[0, 0, 0]);
                w.addr(n.src_addr);
                w.addr(n.dst_addr);
                w.u16(n.src_port);
                w.u16(n.dst_port);
            }
            Segment::AdvertiseAction(a) => {
                w.u8(a.mask.is_some() as u8);
                w.bytes(&[0, 0, 0]);
                w.addr(a.address);
                w.addr(a.mask.unwrap_or(Ipv4Addr::UNSPECIFIED));
            }
            Segment::SeqAdjustAction(s) => {
                w.u32(s.seq_delta);
                w.u32(s.initial_seq);
                w.u32(s.ack_delta);
                w.u32(s.initial_ack);
            }
            Segment::InterestCriteria(c) => {
                w.addr(c.address);
                w.u16(c.port);
                w.u16(c.mask);
                w.u8(c.flags);
                w.bytes(&[0, 0, 0]);
            }
            Segment::ActionList(l) => w.bytes(l.raw),
            Segment::DenyReason(d) => {
                w.u16(d.denied_type);
                w.u16(d.code);
                w.u64(d.denied_sequence);
            }
            Segment::Capabilities(c) => {
                w.u32(c.actions);
                w.u32(c.fixed_capacity);
                w.u32(c.wildcard_capacity);
            }
            Segment::Statistics(s) => {
                w.addr(s.forward_addr);
                w.u64(s.packets);
                w.u64(s.bytes);
            }
            Segment::Unknown { body, .. } => w.bytes(body),
        }
    }
}

struct Writer<'b> {
    out: &'b mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn bytes(&mut self, b: &[u8]) {
        self.out[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
    }
    fn u8(&mut self, v: u8) {
        self.bytes(&[v]);
    }
    fn u16(&mut self, v: u16) {
        self.bytes(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_be_bytes());
    }
    fn addr(&mut self, a: Ipv4Addr) {
        self.bytes(&a.octets());
    }
}
