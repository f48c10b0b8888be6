//! The TCP header layout (RFC 793 section 3.1, RFC 9293 section 3.1) and
//! sequence-number arithmetic, named once.

use core::cmp::Ordering;
use core::ops::{Add, Sub};

/// Byte ranges (or single byte offsets) of the TCP header, from its first
/// byte; multi-byte fields are in network byte order.
pub mod field {
    use crate::wire::Field;

    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const SEQ_NUM: Field = 4..8;
    pub const ACK_NUM: Field = 8..12;
    /// Sequence and acknowledgment numbers together: the words the
    /// sequence adjust changes, so one checksum update.
    pub const SEQ_ACK: Field = SEQ_NUM.start..ACK_NUM.end;
    /// Data offset in 32-bit words (high nibble).
    pub const DATA_OFF: usize = 12;
    /// The control bits ([`super::flags`]).
    pub const FLAGS: usize = 13;
    pub const WIN_SIZE: Field = 14..16;
    pub const CHECKSUM: Field = 16..18;
    pub const URGENT: Field = 18..20;
}

/// Control bits of the [`field::FLAGS`] byte. Their values equal the
/// interest-mask bits `affinity_api::interest::FIN..URG` (the seed's
/// interest mask took them 1:1).
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    /// The six RFC 793 control bits (ECE/CWR of RFC 3168 excluded).
    pub const ALL: u8 = FIN | SYN | RST | PSH | ACK | URG;
}

/// Header length without options, bytes (data offset 5).
pub const HEADER_LEN: usize = 20;

/// Most option bytes a header can carry (data offset 15: 60 − 20).
pub const MAX_OPTIONS_LEN: usize = 40;

/// Option kinds (IANA "TCP Option Kind Numbers") this crate reads.
pub mod option {
    /// End of option list (RFC 793).
    pub const END: u8 = 0;
    /// No-operation, one byte (RFC 793).
    pub const NOP: u8 = 1;
    /// SACK: kind, length 2 + 8n, then n blocks of two 32-bit edges, left
    /// and right, in network order (RFC 2018 section 3).
    pub const SACK: u8 = 5;
}

/// The [`field::DATA_OFF`] byte for a header of `header_len` bytes.
#[inline]
pub const fn data_off(header_len: usize) -> u8 {
    ((header_len / 4) as u8) << 4
}

/// The header length in bytes that a [`field::DATA_OFF`] byte claims.
#[inline]
pub const fn header_len(data_off: u8) -> usize {
    (data_off >> 4) as usize * 4
}

/// A TCP sequence (or acknowledgment) number: arithmetic wraps modulo 2^32
/// and order is serial-number order (RFC 793 section 3.3, RFC 1982): `a` is
/// after `b` when `a - b`, taken as a signed 32-bit number, is positive.
/// That order is not transitive over the whole space, so this type has no
/// `PartialOrd`; use [`SeqNumber::cmp_serial`] and its shorthands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SeqNumber(pub u32);

impl SeqNumber {
    /// Serial order: `None` when the two are exactly 2^31 apart, the one
    /// distance RFC 1982 section 3.2 leaves undefined.
    #[inline]
    pub fn cmp_serial(self, other: SeqNumber) -> Option<Ordering> {
        match self - other {
            0 => Some(Ordering::Equal),
            i32::MIN => None,
            d if d > 0 => Some(Ordering::Greater),
            _ => Some(Ordering::Less),
        }
    }

    /// `self` is at or after `other` in serial order (false when undefined).
    #[inline]
    pub fn is_at_or_after(self, other: SeqNumber) -> bool {
        matches!(
            self.cmp_serial(other),
            Some(Ordering::Equal | Ordering::Greater)
        )
    }

    /// `self` is strictly before `other` in serial order (false when undefined).
    #[inline]
    pub fn is_before(self, other: SeqNumber) -> bool {
        self.cmp_serial(other) == Some(Ordering::Less)
    }
}

/// Advances by `n` bytes of sequence space, modulo 2^32.
impl Add<u32> for SeqNumber {
    type Output = SeqNumber;
    #[inline]
    fn add(self, n: u32) -> SeqNumber {
        SeqNumber(self.0.wrapping_add(n))
    }
}

/// Moves back by `n` bytes of sequence space, modulo 2^32.
impl Sub<u32> for SeqNumber {
    type Output = SeqNumber;
    #[inline]
    fn sub(self, n: u32) -> SeqNumber {
        SeqNumber(self.0.wrapping_sub(n))
    }
}

/// The signed distance from `other` to `self`, modulo 2^32.
impl Sub for SeqNumber {
    type Output = i32;
    #[inline]
    fn sub(self, other: SeqNumber) -> i32 {
        self.0.wrapping_sub(other.0) as i32
    }
}

#[cfg(test)]
mod tests {
    use super::{data_off, header_len, SeqNumber};
    use core::cmp::Ordering;

    #[test]
    fn seq_arithmetic_wraps() {
        assert_eq!(SeqNumber(u32::MAX) + 1, SeqNumber(0));
        assert_eq!(SeqNumber(5) + 0xffff_fffe, SeqNumber(3));
        assert_eq!(SeqNumber(0) - 1u32, SeqNumber(u32::MAX));
        assert_eq!(SeqNumber(2) - SeqNumber(u32::MAX), 3);
        assert_eq!(SeqNumber(u32::MAX) - SeqNumber(2), -3);
    }

    #[test]
    fn seq_order_across_the_wrap() {
        let top = SeqNumber(0xffff_fff0);
        let wrapped = top + 0x20; // 0x10
        assert_eq!(wrapped, SeqNumber(0x10));
        assert!(wrapped.is_at_or_after(top), "0x10 is after 0xfffffff0");
        assert!(top.is_before(wrapped));
        assert!(!top.is_at_or_after(wrapped));
        assert!(top.is_at_or_after(top));
        assert!(!top.is_before(top));
        assert_eq!(top.cmp_serial(top), Some(Ordering::Equal));
        // Just under half the space ahead is after; just over is before.
        let b = SeqNumber(1000);
        assert_eq!((b + 0x7fff_ffff).cmp_serial(b), Some(Ordering::Greater));
        assert_eq!((b + 0x8000_0001).cmp_serial(b), Some(Ordering::Less));
        // Exactly half is undefined (RFC 1982 3.2): neither at/after nor before.
        let half = b + 0x8000_0000;
        assert_eq!(half.cmp_serial(b), None);
        assert_eq!(b.cmp_serial(half), None);
        assert!(!half.is_at_or_after(b) && !b.is_at_or_after(half));
        assert!(!half.is_before(b) && !b.is_before(half));
    }

    #[test]
    fn seq_order_is_antisymmetric_where_defined() {
        let mut x = 0x9e37_79b9u32;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let (a, b) = (SeqNumber(x), SeqNumber(x.rotate_left(11)));
            let ab = a.cmp_serial(b);
            assert_eq!(ab.map(Ordering::reverse), b.cmp_serial(a));
            // The order the sequence adjust used before this type.
            assert_eq!(a.is_at_or_after(b), (a.0.wrapping_sub(b.0) as i32) >= 0);
        }
    }

    #[test]
    fn data_offset_round_trips() {
        assert_eq!(data_off(20), 0x50);
        assert_eq!(header_len(0x50), 20);
        assert_eq!(header_len(0xf0), 60);
    }
}
