//! The ICMP header layout (RFC 792), named once: the fixed 8 bytes and the
//! echo request/reply body.

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
    pub const ECHO_REQUEST: u8 = 8;
}

/// Header length, bytes (type, code, checksum and the 4-byte rest).
pub const HEADER_LEN: usize = 8;
