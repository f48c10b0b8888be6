//! The IPv4 header layout (RFC 791 section 3.1), named once.

/// Byte ranges (or single byte offsets) of the IPv4 header, from its first
/// byte; multi-byte fields are in network byte order.
pub mod field {
    use crate::wire::Field;

    /// Version (high nibble) and header length in 32-bit words (low nibble).
    pub const VER_IHL: usize = 0;
    /// DSCP and ECN (the former type of service).
    pub const DSCP_ECN: usize = 1;
    /// Total length in bytes, header included.
    pub const LENGTH: Field = 2..4;
    /// Identification (keys fragment reassembly).
    pub const IDENT: Field = 4..6;
    /// Flags (top 3 bits) and fragment offset in 8-byte units (low 13).
    pub const FLG_OFF: Field = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    /// TTL and protocol: the 16-bit word the header checksum sums the TTL in.
    pub const TTL_PROTOCOL: Field = TTL..PROTOCOL + 1;
    pub const CHECKSUM: Field = 10..12;
    pub const SRC_ADDR: Field = 12..16;
    pub const DST_ADDR: Field = 16..20;
    /// Source and destination together: the part of the header (and of the
    /// TCP/UDP pseudo-header) that NAT changes, so one checksum delta.
    pub const ADDRS: Field = SRC_ADDR.start..DST_ADDR.end;
}

/// Bits of the 16-bit [`field::FLG_OFF`] word.
pub mod flags {
    /// Don't Fragment.
    pub const DF: u16 = 0x4000;
    /// More Fragments.
    pub const MF: u16 = 0x2000;
    /// The fragment offset, in 8-byte units.
    pub const FRAG_OFFSET_MASK: u16 = 0x1fff;
}

/// The version nibble of IPv4.
pub const VERSION: u8 = 4;
/// Header length without options, bytes (IHL 5).
pub const HEADER_LEN: usize = 20;
/// Fragment offsets count in units of this many bytes.
pub const FRAG_OFFSET_UNIT: usize = 8;
/// TTL of the packets this crate emits (Linux's default `ip_default_ttl`).
pub const DEFAULT_TTL: u8 = 64;

/// The first byte of a header of `header_len` bytes (a multiple of 4, at
/// most 60): version 4 and the IHL nibble.
#[inline]
pub const fn ver_ihl(header_len: usize) -> u8 {
    (VERSION << 4) | ((header_len / 4) as u8 & 0x0f)
}

/// The version nibble of a header's first byte.
#[inline]
pub const fn version(ver_ihl: u8) -> u8 {
    ver_ihl >> 4
}

/// The header length in bytes that a header's first byte claims (IHL × 4).
#[inline]
pub const fn header_len(ver_ihl: u8) -> usize {
    (ver_ihl & 0x0f) as usize * 4
}

#[cfg(test)]
mod tests {
    use super::{field, header_len, ver_ihl, version};

    #[test]
    fn first_byte_round_trips() {
        assert_eq!(ver_ihl(20), 0x45);
        assert_eq!(ver_ihl(60), 0x4f);
        assert_eq!((version(0x46), header_len(0x46)), (4, 24));
        assert_eq!(field::ADDRS, 12..20);
    }
}
