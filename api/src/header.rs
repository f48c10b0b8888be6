use crate::error::ParseError;
use nom::number::complete::{be_u16, be_u64, be_u8};

/// Protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// Length of the fixed message header.
pub const HEADER_LEN: usize = 16;
/// Address family value for IPv4 (the only one defined in version 1).
pub const AF_INET: u8 = 1;

/// Service message types (header byte 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    AffinityUpdateWildcard = 1,
    AffinityUpdateFixed = 2,
    AffinityUpdateDeny = 3,
    InterestMatchWildcard = 4,
    InterestMatchFixed = 5,
    IpPacketOnly = 6,
    /// Extension: agent announces itself and its capabilities.
    AgentHello = 16,
    /// Extension: liveness, no segments required.
    Keepalive = 17,
    /// Extension: a manager asks an agent to resend what it holds.
    AffinityDumpRequest = 18,
    /// Extension: an agent reports counters.
    StatisticsReport = 19,
}

impl MessageType {
    pub fn from_u8(v: u8) -> Option<Self> {
        use MessageType::*;
        Some(match v {
            1 => AffinityUpdateWildcard,
            2 => AffinityUpdateFixed,
            3 => AffinityUpdateDeny,
            4 => InterestMatchWildcard,
            5 => InterestMatchFixed,
            6 => IpPacketOnly,
            16 => AgentHello,
            17 => Keepalive,
            18 => AffinityDumpRequest,
            19 => StatisticsReport,
            _ => return None,
        })
    }
}

/// The fixed 16-byte header of every service message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub msg_type: MessageType,
    /// Total message length including this header.
    pub length: u16,
    /// Sender's sequence number, strictly increasing per sender (replay window).
    pub sequence: u64,
}

impl Header {
    /// Parses and checks the header against the datagram length.
    pub fn parse(datagram: &[u8]) -> Result<Header, ParseError> {
        if datagram.len() < HEADER_LEN {
            return Err(ParseError::TooShort {
                have: datagram.len(),
            });
        }
        type Fields = (u8, u8, u16, u8, u8, u16, u64);
        let fields = |i| -> nom::IResult<&[u8], Fields> {
            let (i, version) = be_u8(i)?;
            let (i, msg_type) = be_u8(i)?;
            let (i, length) = be_u16(i)?;
            let (i, family) = be_u8(i)?;
            let (i, flags) = be_u8(i)?;
            let (i, reserved) = be_u16(i)?;
            let (i, sequence) = be_u64(i)?;
            Ok((
                i,
                (version, msg_type, length, family, flags, reserved, sequence),
            ))
        };
        // Length was checked above, so the complete parsers cannot fail.
        let (_, (version, msg_type, length, family, _flags, _reserved, sequence)) =
            fields(datagram).map_err(|_| ParseError::TooShort {
                have: datagram.len(),
            })?;
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

    /// Writes the header into `out[..16]` (flags and reserved are zero).
    pub fn emit(&self, out: &mut [u8]) {
        out[0] = VERSION;
        out[1] = self.msg_type as u8;
        out[2..4].copy_from_slice(&self.length.to_be_bytes());
        out[4] = AF_INET;
        out[5] = 0;
        out[6..8].copy_from_slice(&[0, 0]);
        out[8..16].copy_from_slice(&self.sequence.to_be_bytes());
    }
}
