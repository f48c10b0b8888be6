//! Checked views over IPv4/TCP/UDP/ICMP packets and the in-place rewrites
//! the data path applies. Every offset is checked against both the buffer
//! and the lengths the packet claims; nothing here panics on any input.
//!
//! Each header's layout is named once, smoltcp-style (`smoltcp::wire`): a
//! `field` module of byte ranges and a `flags`/constants block per protocol
//! ([`ipv4`], [`tcp`], [`udp`], [`icmp`]); the parser ([`parse`]), the
//! rewrites ([`rewrite`]), the builders ([`build`]) and the checksums
//! ([`checksum`]) index packets only through those names.

pub mod build;
pub mod checksum;
pub mod icmp;
pub mod icmp_error;
pub mod interest_data;
pub mod ipv4;
pub mod parse;
pub mod rewrite;
pub mod tcp;
pub mod udp;

pub use icmp_error::{quoted_packet, translate_icmp_error, QuotedPacket};
pub use parse::{interest_bits, parse_ipv4, parse_plain, Fragment, PacketError, PacketInfo, Plain};
pub use rewrite::{
    apply_nat, apply_nat_in_place, apply_nat_offload, apply_nat_plain, apply_seq_adjust,
    apply_seq_adjust_offload, decrement_ttl, write_ipv4_udp_header, PlainNat, IPV4_UDP_HEADER_LEN,
};
pub use tcp::SeqNumber;

/// A header field: its byte range from the start of its header.
pub type Field = core::ops::Range<usize>;

/// The `protocol` octet of an IPv4 header (IANA "Assigned Internet Protocol
/// Numbers"; RFC 790). The wire and [`affinity_api::AffinityKey::protocol`]
/// carry it as a `u8`; convert with `From` both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpProtocol {
    /// 1 (RFC 792).
    Icmp,
    /// 6 (RFC 793).
    Tcp,
    /// 17 (RFC 768).
    Udp,
    /// Any other protocol number (0 in a key means "any protocol").
    Unknown(u8),
}

impl IpProtocol {
    /// The protocol number as carried in the IPv4 header.
    #[inline]
    pub const fn number(self) -> u8 {
        match self {
            IpProtocol::Icmp => 1,
            IpProtocol::Tcp => 6,
            IpProtocol::Udp => 17,
            IpProtocol::Unknown(n) => n,
        }
    }

    /// The protocol of a number (the inverse of [`IpProtocol::number`]).
    #[inline]
    pub const fn from_number(n: u8) -> Self {
        match n {
            1 => IpProtocol::Icmp,
            6 => IpProtocol::Tcp,
            17 => IpProtocol::Udp,
            n => IpProtocol::Unknown(n),
        }
    }

    /// Lower-case name (`icmp`, `tcp`, `udp`) as `show affinity` prints and
    /// parses it; `None` for the others.
    pub const fn name(self) -> Option<&'static str> {
        match self {
            IpProtocol::Icmp => Some("icmp"),
            IpProtocol::Tcp => Some("tcp"),
            IpProtocol::Udp => Some("udp"),
            IpProtocol::Unknown(_) => None,
        }
    }

    /// The protocol of a name from [`IpProtocol::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        [IpProtocol::Icmp, IpProtocol::Tcp, IpProtocol::Udp]
            .into_iter()
            .find(|p| p.name() == Some(name))
    }
}

impl From<u8> for IpProtocol {
    #[inline]
    fn from(n: u8) -> Self {
        IpProtocol::from_number(n)
    }
}

impl From<IpProtocol> for u8 {
    #[inline]
    fn from(p: IpProtocol) -> u8 {
        p.number()
    }
}

/// `IpProtocol::Icmp` as the `u8` an [`affinity_api::AffinityKey`] carries.
pub const ICMP: u8 = IpProtocol::Icmp.number();
/// `IpProtocol::Tcp` as the `u8` an [`affinity_api::AffinityKey`] carries.
pub const TCP: u8 = IpProtocol::Tcp.number();
/// `IpProtocol::Udp` as the `u8` an [`affinity_api::AffinityKey`] carries.
pub const UDP: u8 = IpProtocol::Udp.number();

/// Reads a 16-bit network-order field. The caller has checked the length;
/// with constant fields the index check folds away.
#[inline(always)]
pub(crate) fn get_u16(b: &[u8], f: Field) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[f]);
    u16::from_be_bytes(a)
}

/// Reads a 32-bit network-order field (see [`get_u16`]).
#[inline(always)]
pub(crate) fn get_u32(b: &[u8], f: Field) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[f]);
    u32::from_be_bytes(a)
}

/// Writes a 16-bit field in network order (see [`get_u16`]).
#[inline(always)]
pub(crate) fn set_u16(b: &mut [u8], f: Field, v: u16) {
    b[f].copy_from_slice(&v.to_be_bytes());
}

/// Writes a 32-bit field in network order (see [`get_u16`]).
#[inline(always)]
pub(crate) fn set_u32(b: &mut [u8], f: Field, v: u32) {
    b[f].copy_from_slice(&v.to_be_bytes());
}

/// `f` moved `by` bytes on: a field of a header that starts at `by`.
#[inline(always)]
pub(crate) const fn shifted(f: Field, by: usize) -> Field {
    f.start + by..f.end + by
}

#[cfg(test)]
mod tests {
    use super::IpProtocol;

    #[test]
    fn ip_protocol_numbers_names_round_trip() {
        for (p, n, name) in [
            (IpProtocol::Icmp, 1u8, Some("icmp")),
            (IpProtocol::Tcp, 6, Some("tcp")),
            (IpProtocol::Udp, 17, Some("udp")),
            (IpProtocol::Unknown(47), 47, None),
            (IpProtocol::Unknown(0), 0, None),
        ] {
            assert_eq!(u8::from(p), n);
            assert_eq!(IpProtocol::from(n), p);
            assert_eq!(p.name(), name);
            if let Some(name) = name {
                assert_eq!(IpProtocol::from_name(name), Some(p));
            }
        }
        for n in 0..=255u8 {
            assert_eq!(IpProtocol::from(n).number(), n);
        }
        assert_eq!(IpProtocol::from_name("gre"), None);
    }
}
