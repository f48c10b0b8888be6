//! What can be wrong with a received datagram ([`ParseError`]) and why a
//! message could not be written ([`EmitError`]). Uses only the assigned
//! numbers, so every other module may use it.

use crate::numbers::{MessageType, REQUIRED_FLAG};
use std::fmt;

/// What was wrong with one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentErrorKind {
    /// The segment header claims fewer than 4 bytes or more than remain.
    BadLength {
        /// The segment's length field, bytes (0 when not even a header remains).
        claimed: usize,
        /// Bytes left in the message from the segment's start.
        remaining: usize,
    },
    /// The body is shorter than the segment type's fixed part.
    BodyTooShort {
        /// The type's minimum body length, bytes.
        need: usize,
        /// The body's length, bytes.
        have: usize,
    },
    /// The body is longer than the segment type allows.
    BodyTooLong {
        /// The type's maximum body length, bytes.
        max: usize,
        /// The body's length, bytes.
        have: usize,
    },
    /// A field holds a value the protocol does not define.
    BadValue {
        /// Which field, as a counter-friendly phrase.
        field: &'static str,
        /// The value found.
        value: u32,
    },
    /// A required segment of a type this receiver does not know.
    UnknownRequired,
    /// The segment type is not allowed in this message type.
    NotAllowed,
    /// A segment that may appear once appeared again.
    Duplicate,
    /// The security segment is not the first segment.
    SecurityNotFirst,
    /// The IP packet segment is not the last segment.
    PacketNotLast,
}

/// Why a datagram is not a valid service message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Fewer bytes than a message header.
    TooShort {
        /// The datagram's length, bytes.
        have: usize,
    },
    /// The header's version is not [`crate::VERSION`].
    BadVersion(u8),
    /// The header's message type is unknown.
    UnknownMessageType(u8),
    /// The address family is not supported (only IPv4 today).
    UnsupportedFamily(u8),
    /// The header's length field disagrees with the datagram.
    BadLength {
        /// The header's length field, bytes.
        claimed: usize,
        /// The datagram's length, bytes.
        actual: usize,
    },
    /// Segment number `index` (0-based) of type `seg_type` is malformed.
    Segment {
        /// Position of the segment in the message, 0-based.
        index: usize,
        /// The segment's type field as received, Required flag included.
        seg_type: u16,
        /// What is wrong with it.
        kind: SegmentErrorKind,
    },
    /// A segment the message type requires is missing.
    MissingSegment {
        /// The message's type.
        msg_type: MessageType,
        /// The missing segment type.
        seg_type: u16,
    },
}

impl ParseError {
    /// The segment type a deny should name, when the error is about one.
    pub fn segment_type(&self) -> Option<u16> {
        match *self {
            ParseError::Segment { seg_type, .. } | ParseError::MissingSegment { seg_type, .. } => {
                Some(seg_type)
            }
            _ => None,
        }
    }

    /// A short stable name, used as a counter label.
    pub fn reason(&self) -> &'static str {
        match self {
            ParseError::TooShort { .. } => "too-short",
            ParseError::BadVersion(_) => "bad-version",
            ParseError::UnknownMessageType(_) => "unknown-message-type",
            ParseError::UnsupportedFamily(_) => "unsupported-family",
            ParseError::BadLength { .. } => "bad-length",
            ParseError::Segment { kind, .. } => match kind {
                SegmentErrorKind::UnknownRequired => "unknown-required-segment",
                SegmentErrorKind::NotAllowed => "segment-not-allowed",
                _ => "bad-segment",
            },
            ParseError::MissingSegment { .. } => "missing-segment",
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::TooShort { have } => write!(
                f,
                "datagram of {have} bytes is shorter than the 16-byte header"
            ),
            ParseError::BadVersion(v) => write!(f, "unsupported protocol version {v}"),
            ParseError::UnknownMessageType(t) => write!(f, "unknown message type {t}"),
            ParseError::UnsupportedFamily(a) => write!(f, "unsupported address family {a}"),
            ParseError::BadLength { claimed, actual } => {
                write!(
                    f,
                    "header claims {claimed} bytes but the datagram has {actual}"
                )
            }
            ParseError::Segment {
                index,
                seg_type,
                kind,
            } => {
                write!(f, "segment #{index} (type {}): ", seg_type & !REQUIRED_FLAG)?;
                match kind {
                    SegmentErrorKind::BadLength { claimed, remaining } => {
                        write!(f, "claims {claimed} bytes, {remaining} remain (minimum 4)")
                    }
                    SegmentErrorKind::BodyTooShort { need, have } => {
                        write!(f, "body has {have} bytes, needs {need}")
                    }
                    SegmentErrorKind::BodyTooLong { max, have } => {
                        write!(f, "body has {have} bytes, at most {max} allowed")
                    }
                    SegmentErrorKind::BadValue { field, value } => {
                        write!(f, "field {field} has undefined value {value}")
                    }
                    SegmentErrorKind::UnknownRequired => {
                        write!(f, "unknown segment marked required")
                    }
                    SegmentErrorKind::NotAllowed => write!(f, "not allowed in this message type"),
                    SegmentErrorKind::Duplicate => write!(f, "may appear only once"),
                    SegmentErrorKind::SecurityNotFirst => {
                        write!(f, "security segment must be the first segment")
                    }
                    SegmentErrorKind::PacketNotLast => {
                        write!(f, "IP packet segment must be the last segment")
                    }
                }
            }
            ParseError::MissingSegment { msg_type, seg_type } => {
                write!(f, "{msg_type:?} requires a segment of type {seg_type}")
            }
        }
    }
}

impl std::error::Error for ParseError {}

/// Why a message could not be emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmitError {
    /// The output buffer is too small.
    BufferTooSmall {
        /// Bytes the prefix needs.
        need: usize,
        /// Bytes the buffer has.
        have: usize,
    },
    /// A segment or the message would exceed the 16-bit length fields.
    TooLong {
        /// The length that does not fit, bytes.
        len: usize,
    },
}

impl fmt::Display for EmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EmitError::BufferTooSmall { need, have } => {
                write!(f, "need {need} bytes of buffer, have {have}")
            }
            EmitError::TooLong { len } => write!(f, "{len} bytes exceed a 16-bit length field"),
        }
    }
}

impl std::error::Error for EmitError {}
