//! The affinity segments and what applies to one affinity: the key,
//! wildcard (type 1) and fixed (type 2) affinities, the affinity identifier
//! (3), service precedence (4) and backup precedence (5). Layouts:
//! PROTOCOL.md, "Segments".

use super::layout::only_defined;
use super::layout::{fixed_layout, one_flag, read_whole, SegmentBody};
use crate::codec::{Reader, Writer};
use crate::error::SegmentErrorKind;
use crate::numbers::{dispatch, info, seg};
use std::net::Ipv4Addr;

const ANY: Ipv4Addr = Ipv4Addr::UNSPECIFIED;

/// Affinity key: protocol and both endpoints. In a wildcard, 0 means "any"
/// for protocol and ports; addresses are masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AffinityKey {
    /// IP protocol number (6 TCP, 17 UDP); in a wildcard 0 = any.
    pub protocol: u8,
    /// Source address (a wildcard masks it with its `src_mask`).
    pub src_addr: Ipv4Addr,
    /// Destination address (a wildcard masks it with its `dst_mask`).
    pub dst_addr: Ipv4Addr,
    /// Source port; 0 = any in a wildcard, 0 for protocols without ports.
    pub src_port: u16,
    /// Destination port; 0 = any in a wildcard, 0 for protocols without ports.
    pub dst_port: u16,
}

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

/// Wildcard affinity segment (type 1, 32 bytes): attracts new flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WildcardAffinity {
    /// Protocol, addresses and ports to match (0 = any for protocol and ports).
    pub key: AffinityKey,
    /// Netmask applied to the packet's and the affinity's source address.
    pub src_mask: Ipv4Addr,
    /// Netmask applied to the packet's and the affinity's destination address.
    pub dst_mask: Ipv4Addr,
    /// [`crate::dispatch`] bits: FORWARD sends matching packets to `forward_addr`
    /// as next hop, untranslated (with `forward_addr` 0 they are dropped).
    pub dispatch_flags: u8,
    /// [`crate::info`] bits: STATISTICS counts packets and bytes per forward address.
    pub info_flags: u8,
    /// Next hop for FORWARD; 0 = none.
    pub forward_addr: Ipv4Addr,
    /// Seconds; 0 deletes.
    pub ttl: u32,
}

impl Default for WildcardAffinity {
    fn default() -> Self {
        WildcardAffinity {
            key: AffinityKey::default(),
            src_mask: ANY,
            dst_mask: ANY,
            dispatch_flags: 0,
            info_flags: 0,
            forward_addr: ANY,
            ttl: 0,
        }
    }
}

/// Rejects dispatch or information flag bits version 1 does not define
/// (PROTOCOL.md, "Segment header": undefined flag bits make a segment
/// malformed).
fn check_flags(dispatch_flags: u8, info_flags: u8) -> Result<(), SegmentErrorKind> {
    only_defined(dispatch_flags, dispatch::DEFINED, "dispatch flags")?;
    only_defined(info_flags, info::DEFINED, "information flags")
}

impl WildcardAffinity {
    fn check_defined(&self) -> Result<(), SegmentErrorKind> {
        check_flags(self.dispatch_flags, self.info_flags)
    }
}

fixed_layout! {
    WildcardAffinity = seg::WILDCARD_AFFINITY, check WildcardAffinity::check_defined;
    u8(key.protocol),
    u8(dispatch_flags),
    u8(info_flags),
    zero(1),
    addr(key.src_addr),
    addr(src_mask),
    addr(key.dst_addr),
    addr(dst_mask),
    u16(key.src_port),
    u16(key.dst_port),
    addr(forward_addr),
    u32(ttl),
}

/// Fixed affinity segment (type 2, 24 bytes): one direction of one flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedAffinity {
    /// The flow, one direction; in an interest match the packet's own 5-tuple
    /// as received (with TTL 0).
    pub key: AffinityKey,
    /// [`crate::dispatch`] bits, as for wildcards.
    pub dispatch_flags: u8,
    /// [`crate::info`] bits, as for wildcards.
    pub info_flags: u8,
    /// [`crate::activity`] bits (byte 3, reserved before the extension):
    /// in an activity report (type 19), what the agent saw of the flow's
    /// TCP handshake; 0 in every other message. Bits outside
    /// [`crate::activity::DEFINED`] are kept as read (not malformed: the
    /// byte was reserved, ignored on receipt), and senders write them 0.
    pub activity_flags: u8,
    /// Next hop for FORWARD; 0 = none.
    pub forward_addr: Ipv4Addr,
    /// Seconds; 0 deletes.
    pub ttl: u32,
}

impl Default for FixedAffinity {
    fn default() -> Self {
        FixedAffinity {
            key: AffinityKey::default(),
            dispatch_flags: 0,
            info_flags: 0,
            activity_flags: 0,
            forward_addr: ANY,
            ttl: 0,
        }
    }
}

impl FixedAffinity {
    fn check_defined(&self) -> Result<(), SegmentErrorKind> {
        check_flags(self.dispatch_flags, self.info_flags)
    }
}

fixed_layout! {
    FixedAffinity = seg::FIXED_AFFINITY, check FixedAffinity::check_defined;
    u8(key.protocol),
    u8(dispatch_flags),
    u8(info_flags),
    u8(activity_flags),
    addr(key.src_addr),
    addr(key.dst_addr),
    u16(key.src_port),
    u16(key.dst_port),
    addr(forward_addr),
    u32(ttl),
}

/// Affinity identifier segment (type 3, 8 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AffinityIdentifier {
    /// Chosen by the manager; echoed in interest matches.
    pub id: u32,
    /// In interest matches: the interest bits that hit.
    pub reason: u16,
}

fixed_layout! {
    AffinityIdentifier = seg::AFFINITY_IDENTIFIER;
    u32(id),
    u16(reason),
    zero(2),
}

/// Service precedence segment (type 4, 4 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServicePrecedence {
    /// Search-order flag: wildcards with it set are searched before all
    /// wildcards without it.
    pub search_first: bool,
    /// Higher values are searched first within a search-order class.
    pub value: u16,
}

/// Flags byte of the service precedence segment: bit 0 is the search-order
/// flag, the other bits are undefined.
const SEARCH_FIRST: u8 = 0x01;

impl<'a> SegmentBody<'a> for ServicePrecedence {
    type Value = Self;
    const TYPE: u16 = seg::SERVICE_PRECEDENCE;
    const MIN_LEN: usize = 4;
    const MAX_LEN: usize = 4;

    fn parse(body: &'a [u8]) -> Result<Self, SegmentErrorKind> {
        let mut r = Reader::new(body);
        let flags = r.u8();
        r.zero(1);
        let value = r.u16();
        read_whole::<Self>(&r, body)?;
        Ok(ServicePrecedence {
            search_first: one_flag(flags, SEARCH_FIRST, "service-precedence flags")?,
            value,
        })
    }

    fn emit(v: &Self, w: &mut Writer<'_>) {
        w.u8(if v.search_first { SEARCH_FIRST } else { 0 });
        w.zero(1);
        w.u16(v.value);
    }
}

/// Backup precedence segment (type 5, 4 bytes): lower wins among equal
/// service precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BackupPrecedence {
    /// Among equal service precedence, lower wins (primary < backup).
    pub value: u16,
}

fixed_layout! {
    BackupPrecedence = seg::BACKUP_PRECEDENCE;
    u16(value),
    zero(2),
}
