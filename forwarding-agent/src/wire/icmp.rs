//! The ICMP header layout (RFC 792), named once: the fixed 8 bytes, the
//! echo request/reply body and the error messages that quote a packet.

/// Byte ranges (or single byte offsets) of the ICMP header, from its first
/// byte; multi-byte fields are in network byte order.
pub mod field {
    use crate::wire::Field;

    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    /// Echo request/reply identifier (the "port" of an ICMP echo flow).
    pub const ECHO_IDENT: Field = 4..6;
    pub const ECHO_SEQNO: Field = 6..8;
}

/// Message types (the [`field::TYPE`] byte) this crate reads or writes.
pub mod msg_type {
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable (RFC 792; code 4 = fragmentation needed,
    /// the path-MTU message of RFC 1191).
    pub const DEST_UNREACHABLE: u8 = 3;
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded (RFC 792).
    pub const TIME_EXCEEDED: u8 = 11;
    /// Parameter problem (RFC 792).
    pub const PARAMETER_PROBLEM: u8 = 12;
}

/// Whether a message type is an error that quotes the offending packet's IP
/// header and at least its first 8 bytes after it (RFC 792), and that a NAT
/// translates (RFC 5508 section 4, REQ-4): destination unreachable, time
/// exceeded, parameter problem.
#[inline]
pub const fn is_error(msg_type: u8) -> bool {
    matches!(
        msg_type,
        msg_type::DEST_UNREACHABLE | msg_type::TIME_EXCEEDED | msg_type::PARAMETER_PROBLEM
    )
}

/// Whether a message type is an echo request or reply: a query whose
/// identifier ([`field::ECHO_IDENT`]) plays the port's role (RFC 5508
/// section 3.1, REQ-1/REQ-2).
#[inline]
pub const fn is_echo(msg_type: u8) -> bool {
    matches!(msg_type, msg_type::ECHO_REQUEST | msg_type::ECHO_REPLY)
}

/// Where an error message's quoted packet starts, from the ICMP header.
pub const QUOTED_OFFSET: usize = HEADER_LEN;

/// Bytes of the quoted packet after its IP header that RFC 792 guarantees
/// (enough for the ports of TCP and UDP and the whole UDP header).
pub const QUOTED_L4_MIN: usize = 8;

/// Header length, bytes (type, code, checksum and the 4-byte rest).
pub const HEADER_LEN: usize = 8;
