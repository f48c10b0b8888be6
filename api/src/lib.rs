#![warn(missing_docs)]
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
//!
//! # Rooms
//! Listed so that a module uses only modules above it (no import circles):
//! - `numbers.rs`: the assigned numbers — version, lengths, message types,
//!   segment types, flag bits.
//! - `codec.rs`: the big-endian reader and writer every layout is read
//!   and written with.
//! - `error.rs`: [`ParseError`], [`SegmentErrorKind`], [`EmitError`].
//! - `header.rs`: the 16-byte message [`Header`].
//! - `segment/`: each segment type's body layout, declared once with parse,
//!   emit and length side by side — `layout.rs` (the trait every body
//!   implements and the `fixed_layout!` macro), then one file per family:
//!   `affinity.rs`, `action.rs`, `envelope.rs`, `report.rs` — and in
//!   `mod.rs` the [`Segment`] enum, generated from one list of segment
//!   types, and the [`Segments`] iterator.
//! - `rules.rs`: the one table of which segment types each message type
//!   may, must or must not carry, which appear at most once, and which are
//!   marked Required when emitted.
//! - `security.rs`: keys, digests, signing in place, replay window,
//!   sequence numbers.
//! - `affinities.rs`: a message's segments grouped by the affinity they
//!   apply to ([`AffinityEntry`]).
//! - `datagram.rs`: a datagram split into the messages it carries.
//! - `message.rs`: [`ServiceMessage::parse`], the one validation pass.
//! - `auth.rs`: [`AuthPolicy::verify`], a parsed message against the keys.
//! - `emit.rs`: [`MessageBuilder`] and [`emit_prefix`].
//!
//! A received datagram goes `datagram.rs` → `message.rs` → `auth.rs` →
//! `affinities.rs`; a sent message goes through `emit.rs`.
//!
//! Every public name is re-exported here, at the crate root.

mod affinities;
mod auth;
mod codec;
mod datagram;
mod emit;
mod error;
mod header;
mod message;
mod numbers;
mod rules;
mod security;
mod segment;

pub use affinities::{AffinityEntry, AffinityGroups, AffinityRef};
pub use auth::{AuthError, AuthPolicy};
pub use datagram::{datagram_messages, DatagramMessages};
pub use emit::{emit_prefix, prefix_len, MessageBuilder};
pub use error::{EmitError, ParseError, SegmentErrorKind};
pub use header::Header;
pub use message::ServiceMessage;
pub use numbers::{
    activity, capability, dispatch, info, interest, seg, MessageType, AF_INET, HEADER_LEN,
    REQUIRED_FLAG, SEGMENT_HEADER_LEN, VERSION,
};
pub use security::{unix_now, AuthAlgorithm, Key, KeyRing, ReplayWindow, SequenceSource};
pub use segment::{
    encode_action_list, ActionList, AdmissionAction, AdvertiseAction, AffinityIdentifier,
    AffinityKey, BackupPrecedence, Capabilities, DenyReason, FixedAffinity, IdentityInfo,
    InterestCriteria, NatAction, Receiver, Security, Segment, Segments, SeqAdjustAction,
    ServicePrecedence, Statistics, TsAdjustAction, WildcardAffinity,
};

/// UDP port forwarding agents listen on (the port Cisco's CASA used).
pub const AGENT_PORT: u16 = 1637;
/// UDP port service managers listen on.
pub const MANAGER_PORT: u16 = 1638;
/// Default multicast group for wildcard affinity updates (administratively
/// scoped, RFC 2365).
pub const DEFAULT_MULTICAST_GROUP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(239, 255, 16, 37);
