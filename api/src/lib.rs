//! The service message protocol spoken between forwarding agents and service
//! managers. The byte-level specification is `api/PROTOCOL.md`; this crate is
//! its reference implementation.
//!
//! Parsing follows smoltcp's `wire` style: [`ServiceMessage::parse`] checks
//! the whole datagram once (every claimed length, every segment) and returns a
//! view that borrows the datagram; iterating its segments afterwards cannot
//! fail and never allocates. Emitting goes through [`MessageBuilder`] (owned
//! `Vec`) or [`emit_prefix`] (in place, in front of a packet that is already in
//! a buffer, for punting from the data path).

mod error;
mod header;
mod message;
mod security;
mod segment;

pub use error::{EmitError, ParseError, SegmentErrorKind};
pub use header::{Header, MessageType, AF_INET, HEADER_LEN, VERSION};
pub use message::{
    datagram_messages, emit_prefix, prefix_len, AffinityEntry, AffinityGroups, AffinityRef,
    DatagramMessages, MessageBuilder, Segments, ServiceMessage,
};
pub use security::{
    AuthAlgorithm, AuthError, AuthPolicy, Key, KeyRing, ReplayWindow, SequenceSource,
};
pub use segment::*;

/// UDP port forwarding agents listen on (the port Cisco's CASA used).
pub const AGENT_PORT: u16 = 1637;
/// UDP port service managers listen on.
pub const MANAGER_PORT: u16 = 1638;
/// Default multicast group for wildcard affinity updates (administratively
/// scoped, RFC 2365).
pub const DEFAULT_MULTICAST_GROUP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(239, 255, 16, 37);
