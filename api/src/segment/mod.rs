//! Segments: each segment type's body layout, declared once with its parse,
//! emit and length side by side ([`SegmentBody`]), and the [`Segment`] enum
//! that dispatches to them.
//!
//! Every segment starts with a 4-byte segment header: type (bit 15 =
//! Required) and total length (PROTOCOL.md, "Segment header"). The bodies
//! live in one file per family:
//! - `affinity.rs`: the affinity key, wildcard and fixed affinities and the
//!   per-affinity identifier and precedences (types 1–5);
//! - `action.rs`: the action segments (types 10–14, 20, 21);
//! - `envelope.rs`: what frames or rides along with a message — security,
//!   identity, interest data, the IP packet (types 6–9, 15);
//! - `report.rs`: what an agent reports — deny reason, capabilities,
//!   statistics, receiver (types 16–19).
//!
//! `layout.rs` holds what they share: the [`SegmentBody`] trait each body
//! implements and `fixed_layout!`, which derives parse, emit and length
//! from one list of fields; a body that is not a fixed list implements the
//! trait by hand, in its family's file.

mod action;
mod affinity;
mod envelope;
mod layout;
mod report;

pub use action::{
    encode_action_list, ActionList, AdmissionAction, AdvertiseAction, InterestCriteria, NatAction,
    SeqAdjustAction, TsAdjustAction,
};
pub use affinity::{
    AffinityIdentifier, AffinityKey, BackupPrecedence, FixedAffinity, ServicePrecedence,
    WildcardAffinity,
};
pub use envelope::{IdentityInfo, Security};
pub use report::{Capabilities, DenyReason, Receiver, Statistics};

use crate::codec::{Reader, Writer};
use crate::error::SegmentErrorKind;
use crate::numbers::{REQUIRED_FLAG, SEGMENT_HEADER_LEN};
use envelope::{FaInterestDataBody, IpPacketBody, SmInterestDataBody};
use layout::SegmentBody;

/// Declares [`Segment`] from one list of `Variant(carried value) = body
/// type`, and derives from it the type number, length, parse and emit
/// dispatch.
macro_rules! segments {
    ($($(#[$doc:meta])* $variant:ident($value:ty) = $body:ty,)+) => {
        /// One parsed segment. Variable-length payloads borrow the datagram.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Segment<'a> {
            $($(#[$doc])* $variant($value),)+
            /// An optional segment of a type this implementation does not know.
            Unknown {
                /// The segment type number, Required flag cleared.
                seg_type: u16,
                /// The body as received.
                body: &'a [u8],
            },
        }

        impl<'a> Segment<'a> {
            /// The segment type number (without the Required flag).
            pub fn seg_type(&self) -> u16 {
                match self {
                    $(Segment::$variant(_) => <$body as SegmentBody<'a>>::TYPE,)+
                    Segment::Unknown { seg_type, .. } => *seg_type & !REQUIRED_FLAG,
                }
            }

            /// Length of the body when emitted, bytes.
            pub fn body_len(&self) -> usize {
                match self {
                    $(Segment::$variant(v) => <$body as SegmentBody<'a>>::len(v),)+
                    Segment::Unknown { body, .. } => body.len(),
                }
            }

            /// Body length bounds (minimum, maximum) of a known segment
            /// type, `None` for a type this implementation does not know.
            pub(crate) fn body_bounds(seg_type: u16) -> Option<(usize, usize)> {
                $(if seg_type == <$body as SegmentBody<'a>>::TYPE {
                    return Some((
                        <$body as SegmentBody<'a>>::MIN_LEN,
                        <$body as SegmentBody<'a>>::MAX_LEN,
                    ));
                })+
                None
            }

            /// Parses a body of type `seg_type` (Required flag cleared); an
            /// unknown type becomes [`Segment::Unknown`]. The caller has
            /// checked [`Segment::body_bounds`].
            pub(crate) fn parse_body(
                seg_type: u16,
                body: &'a [u8],
            ) -> Result<Segment<'a>, SegmentErrorKind> {
                $(if seg_type == <$body as SegmentBody<'a>>::TYPE {
                    return <$body as SegmentBody<'a>>::parse(body).map(Segment::$variant);
                })+
                Ok(Segment::Unknown { seg_type, body })
            }

            fn emit_body(&self, w: &mut Writer<'_>) {
                match self {
                    $(Segment::$variant(v) => <$body as SegmentBody<'a>>::emit(v, w),)+
                    Segment::Unknown { body, .. } => w.bytes(body),
                }
            }
        }
    };
}

segments! {
    /// Type 1: attracts new flows.
    WildcardAffinity(WildcardAffinity) = WildcardAffinity,
    /// Type 2: one direction of one flow.
    FixedAffinity(FixedAffinity) = FixedAffinity,
    /// Type 3: the manager's name for an affinity.
    AffinityIdentifier(AffinityIdentifier) = AffinityIdentifier,
    /// Type 4: wildcard search order.
    ServicePrecedence(ServicePrecedence) = ServicePrecedence,
    /// Type 5: primary/backup order among equal service precedence.
    BackupPrecedence(BackupPrecedence) = BackupPrecedence,
    /// Type 6: algorithm, key id and digest; the first segment.
    Security(Security<'a>) = Security<'a>,
    /// Type 7: manager interest data, 0–1024 bytes opaque to the agent.
    SmInterestData(&'a [u8]) = SmInterestDataBody,
    /// Type 8: agent interest data, 0–1024 bytes opaque to the manager.
    FaInterestData(&'a [u8]) = FaInterestDataBody,
    /// Type 9: the sender's address and host name.
    IdentityInfo(IdentityInfo<'a>) = IdentityInfo<'a>,
    /// Type 10: address and port rewrite.
    NatAction(NatAction) = NatAction,
    /// Type 11: an address the agent attracts traffic for.
    AdvertiseAction(AdvertiseAction) = AdvertiseAction,
    /// Type 12: TCP sequence and acknowledgment deltas.
    SeqAdjustAction(SeqAdjustAction) = SeqAdjustAction,
    /// Type 13: which packets interest the manager, and where matches go.
    InterestCriteria(InterestCriteria) = InterestCriteria,
    /// Type 14: the action types the sender needs.
    ActionList(ActionList<'a>) = ActionList<'a>,
    /// Type 15: a complete IPv4 packet (at least 20 bytes); the last segment.
    IpPacket(&'a [u8]) = IpPacketBody,
    /// Type 16: what an agent refused and why.
    DenyReason(DenyReason) = DenyReason,
    /// Type 17: supported actions and table capacities.
    Capabilities(Capabilities) = Capabilities,
    /// Type 18: packet and byte counters of one forward address.
    Statistics(Statistics) = Statistics,
    /// Type 19: the address the message is meant for (extension).
    Receiver(Receiver) = Receiver,
    /// Type 20: punt budgets and the SYN proxy of a wildcard (extension).
    AdmissionAction(AdmissionAction) = AdmissionAction,
    /// Type 21: a TCP timestamp (TSval or TSecr) offset (extension).
    TsAdjustAction(TsAdjustAction) = TsAdjustAction,
}

impl Segment<'_> {
    /// Total emitted length including the segment header, bytes.
    pub fn wire_len(&self) -> usize {
        SEGMENT_HEADER_LEN + self.body_len()
    }

    /// Writes header and body into `out[..self.wire_len()]`. The caller has
    /// checked the buffer size.
    pub(crate) fn emit(&self, required: bool, out: &mut [u8]) {
        let len = self.wire_len();
        let mut w = Writer::new(&mut out[..len]);
        emit_header(&mut w, self.seg_type(), required, len);
        self.emit_body(&mut w);
    }
}

/// Writes a segment header: the type field (`seg_type`, with the Required
/// flag when `required`) and the total length `len` in bytes, header
/// included (at most 65535; the callers check).
pub(crate) fn emit_header(w: &mut Writer<'_>, seg_type: u16, required: bool, len: usize) {
    w.u16(seg_type | if required { REQUIRED_FLAG } else { 0 });
    w.u16(len as u16);
}

/// One segment's framing at the front of a message's remaining bytes.
pub(crate) struct Framed<'a> {
    /// The type field, Required flag included.
    pub(crate) raw_type: u16,
    /// The body, after the 4-byte header.
    pub(crate) body: &'a [u8],
    /// Header plus body, bytes: where the next segment starts.
    pub(crate) len: usize,
}

/// The type field of the segment at the front of `rest` (0 when fewer than
/// two bytes remain), for naming a segment in an error.
pub(crate) fn peek_type(rest: &[u8]) -> u16 {
    // A reader yields 0 for a field past the end.
    Reader::new(rest).u16()
}

/// Splits off the segment at the front of `rest`, checking its length field
/// (at least a header, not past the end).
pub(crate) fn frame(rest: &[u8]) -> Result<Framed<'_>, SegmentErrorKind> {
    let mut r = Reader::new(rest);
    let raw_type = r.u16();
    let len = r.u16() as usize;
    let claimed = if r.is_short() { 0 } else { len };
    if r.is_short() || len < SEGMENT_HEADER_LEN || len > rest.len() {
        return Err(SegmentErrorKind::BadLength {
            claimed,
            remaining: rest.len(),
        });
    }
    Ok(Framed {
        raw_type,
        body: &rest[SEGMENT_HEADER_LEN..len],
        len,
    })
}

/// Iterator over a validated message's segments, with their Required flag.
#[derive(Debug, Clone)]
pub struct Segments<'a> {
    rest: &'a [u8],
}

impl<'a> Segments<'a> {
    /// The segments in `bytes` (a message without its header).
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Segments { rest: bytes }
    }
}

impl<'a> Iterator for Segments<'a> {
    type Item = (Segment<'a>, bool);
    fn next(&mut self) -> Option<Self::Item> {
        // The message was validated by `ServiceMessage::parse`; these checks
        // only keep the iterator total (it stops instead of panicking).
        let Ok(f) = frame(self.rest) else {
            self.rest = &[];
            return None;
        };
        self.rest = &self.rest[f.len..];
        let seg = Segment::parse_body(f.raw_type & !REQUIRED_FLAG, f.body).ok()?;
        Some((seg, f.raw_type & REQUIRED_FLAG != 0))
    }
}
