//! The UDP header layout (RFC 768), named once.

/// Byte ranges (or single byte offsets) of the UDP header, from its first
/// byte; multi-byte fields are in network byte order.
pub mod field {
    use crate::wire::Field;

    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    /// Length in bytes of header and data.
    pub const LENGTH: Field = 4..6;
    /// 0 = no checksum (allowed over IPv4); a computed 0 is sent as 0xffff.
    pub const CHECKSUM: Field = 6..8;
}

/// Header length, bytes.
pub const HEADER_LEN: usize = 8;

/// The checksum field's value meaning "not computed" (RFC 768).
pub const NO_CHECKSUM: u16 = 0;
