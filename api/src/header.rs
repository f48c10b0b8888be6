//! The fixed 16-byte message header (PROTOCOL.md, "Message header"): parsed
//! first on receipt, written last on emission (its length field needs the
//! whole message).

use crate::codec::{Reader, Writer};
use crate::error::ParseError;
use crate::numbers::{MessageType, AF_INET, HEADER_LEN, VERSION};

/// The fixed 16-byte header of every service message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Header byte 1.
    pub msg_type: MessageType,
    /// Total message length including this header.
    pub length: u16,
    /// Sender's sequence number, strictly increasing per sender (replay window).
    pub sequence: u64,
}

impl Header {
    /// Parses and checks the header against the datagram length.
    pub fn parse(datagram: &[u8]) -> Result<Header, ParseError> {
        let mut r = Reader::new(datagram);
        let version = r.u8();
        let msg_type = r.u8();
        let length = r.u16();
        let family = r.u8();
        r.zero(3); // flags, reserved
        let sequence = r.u64();
        if r.is_short() {
            return Err(ParseError::TooShort {
                have: datagram.len(),
            });
        }
        if version != VERSION {
            return Err(ParseError::BadVersion(version));
        }
        let msg_type =
            MessageType::from_u8(msg_type).ok_or(ParseError::UnknownMessageType(msg_type))?;
        if family != AF_INET {
            return Err(ParseError::UnsupportedFamily(family));
        }
        if length as usize != datagram.len() || (length as usize) < HEADER_LEN {
            return Err(ParseError::BadLength {
                claimed: length as usize,
                actual: datagram.len(),
            });
        }
        Ok(Header {
            msg_type,
            length,
            sequence,
        })
    }

    /// The length field (bytes 2–3, network order) of the header at the
    /// front of `bytes`, checking nothing else; `None` when fewer than
    /// [`HEADER_LEN`] bytes remain. For splitting a datagram into messages.
    pub(crate) fn claimed_length(bytes: &[u8]) -> Option<usize> {
        if bytes.len() < HEADER_LEN {
            return None;
        }
        let mut r = Reader::new(bytes);
        r.zero(2); // version, message type
        Some(r.u16() as usize)
    }

    /// Writes the header into `out[..16]` (flags and reserved are zero).
    pub fn emit(&self, out: &mut [u8]) {
        let mut w = Writer::new(&mut out[..HEADER_LEN]);
        w.u8(VERSION);
        w.u8(self.msg_type as u8);
        w.u16(self.length);
        w.u8(AF_INET);
        w.zero(3); // flags, reserved
        w.u64(self.sequence);
    }
}
