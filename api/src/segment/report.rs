//! Segments an agent reports with: deny reason (type 16), capabilities (17)
//! and statistics (18). Layouts: PROTOCOL.md, "Segments".

use super::layout::{bad, fixed_layout};
use crate::error::SegmentErrorKind;
use crate::numbers::seg;
use std::net::Ipv4Addr;

/// Deny reason segment (type 16, 12 bytes), carried by affinity update-deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DenyReason {
    /// The segment or action type refused (low 15 bits).
    pub denied_type: u16,
    /// Why: one of the `DenyReason` constants below.
    pub code: u16,
    /// Sequence number of the refused message.
    pub denied_sequence: u64,
}

impl DenyReason {
    /// Code 1: a segment of unknown type was marked Required.
    pub const UNKNOWN_REQUIRED_SEGMENT: u16 = 1;
    /// Code 2: an action named as required in an action list is not supported.
    pub const UNSUPPORTED_REQUIRED_ACTION: u16 = 2;
    /// Code 3: a fixed affinity without a supporting wildcard of the same manager.
    pub const NO_SUPPORTING_WILDCARD: u16 = 3;
    /// Code 4: the affinity table is full.
    pub const TABLE_FULL: u16 = 4;
    /// Code 5: the message was malformed.
    pub const MALFORMED: u16 = 5;

    /// Rejects a code outside 1–5 (PROTOCOL.md, "16 — deny reason").
    fn check_defined(&self) -> Result<(), SegmentErrorKind> {
        if (Self::UNKNOWN_REQUIRED_SEGMENT..=Self::MALFORMED).contains(&self.code) {
            Ok(())
        } else {
            Err(bad("deny code", self.code.into()))
        }
    }
}

fixed_layout! {
    DenyReason = seg::DENY_REASON, check DenyReason::check_defined;
    u16(denied_type),
    u16(code),
    u64(denied_sequence),
}

/// Capabilities segment (type 17, 12 bytes), carried by agent hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// Bit n set: action segment type n is supported.
    pub actions: u32,
    /// How many fixed affinities the agent can hold.
    pub fixed_capacity: u32,
    /// How many wildcard affinities the agent can hold.
    pub wildcard_capacity: u32,
}

fixed_layout! {
    Capabilities = seg::CAPABILITIES;
    u32(actions),
    u32(fixed_capacity),
    u32(wildcard_capacity),
}

/// Statistics segment (type 18, 20 bytes): one counter pair for a forward
/// address (or for the agent as a whole when the address is 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statistics {
    /// The forward address counted; 0 = the agent as a whole.
    pub forward_addr: Ipv4Addr,
    /// Packets counted.
    pub packets: u64,
    /// Bytes counted.
    pub bytes: u64,
}

impl Default for Statistics {
    fn default() -> Self {
        Statistics {
            forward_addr: Ipv4Addr::UNSPECIFIED,
            packets: 0,
            bytes: 0,
        }
    }
}

fixed_layout! {
    Statistics = seg::STATISTICS;
    addr(forward_addr),
    u64(packets),
    u64(bytes),
}
