//! Internet checksum (RFC 1071) and incremental update (RFC 1624).

use super::parse::{Fragment, PacketInfo};
use super::{get_u16, ipv4, tcp, udp, Field, IpProtocol};

/// One's complement partial sum of `data` (odd trailing byte padded with 0).
pub fn sum16(data: &[u8]) -> u32 {
    let mut sum = 0u32;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum = sum.wrapping_add(u16::from_be_bytes([c[0], c[1]]) as u32);
    }
    if let [b] = chunks.remainder() {
        sum = sum.wrapping_add((*b as u32) << 8);
    }
    sum
}

/// Folds a partial sum to 16 bits (not complemented). Two end-around
/// carries suffice for any `u32`: the first leaves at most 0x1_fffe, the
/// second at most 0xffff (no loop on the per-packet path).
#[inline]
pub fn fold(sum: u32) -> u16 {
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// [`fold`] for a sum kept in 64 bits: any integer sum of 16-bit words (or
/// of 32-bit halves, 2^16 = 1 mod 0xffff), folded to 16 bits with
/// end-around carries, 0 only when the sum is. The common case's NAT adds
/// its address and port words this way without first narrowing them
/// (`rewrite::apply_nat_plain`).
///
/// Each step adds the value to itself rotated by half its width: the upper
/// half of that is the two halves' one's-complement sum, carry included
/// (Linux's `csum_fold` does the same at 32 bits). First 64 to 32 bits,
/// then 32 to 16; 2^32 = 1 modulo 0xffff too, so the result is the fold of
/// the whole sum. Exact for every `u64`; the three masked end-around
/// carries it replaces (stop 24) first went wrong at 0x1_0000_0000_ffff,
/// far above the largest sum `apply_nat_plain` can form with any
/// `PlainNat` (0x4_0002_fff9), so this fixes nothing reachable: it drops a
/// bound a caller had to keep in mind. Eight instructions a fold against
/// nine; the common case's count stayed within one (cachegrind 361 →
/// 362).
#[inline(always)]
pub fn fold_wide(sum: u64) -> u16 {
    let s = (sum.wrapping_add(sum.rotate_left(32)) >> 32) as u32;
    (s.wrapping_add(s.rotate_left(16)) >> 16) as u16
}

/// Full checksum of an IPv4 header (the checksum field is treated as zero).
pub fn ipv4_header_checksum(hdr: &[u8]) -> u16 {
    let c = ipv4::field::CHECKSUM;
    let sum = sum16(hdr.get(..c.start).unwrap_or(hdr)) + sum16(hdr.get(c.end..).unwrap_or(&[]));
    !fold(sum)
}

/// Where a transport protocol keeps its checksum, relative to the start of
/// its header: TCP and UDP; `None` for protocols this crate does not
/// checksum with a pseudo-header.
#[inline]
pub fn l4_checksum_field(protocol: IpProtocol) -> Option<Field> {
    match protocol {
        IpProtocol::Tcp => Some(tcp::field::CHECKSUM),
        IpProtocol::Udp => Some(udp::field::CHECKSUM),
        IpProtocol::Icmp | IpProtocol::Unknown(_) => None,
    }
}

/// Writes the full TCP or UDP checksum of IPv4 packet `pkt` into its
/// field ([`l4_checksum`]): for a packet whose checksum was left partial
/// for the NIC (its field holds only the pseudo-header sum), before it
/// leaves in a form that no longer carries the offload request — a punt
/// or a copy in a service message, a held packet sent later as a new
/// buffer. Returns whether it was written (false: not TCP or UDP, a
/// fragment, or not a parsable packet).
pub fn complete_l4(pkt: &mut [u8]) -> bool {
    let Ok(info) = super::parse_ipv4(pkt) else {
        return false;
    };
    let (Some(c), Some(f)) = (
        l4_checksum(pkt, &info),
        l4_checksum_field(IpProtocol::from(info.key.protocol)),
    ) else {
        return false;
    };
    let at = info.l4_offset + f.start;
    match pkt.get_mut(at..at + 2) {
        Some(field) => {
            field.copy_from_slice(&c.to_be_bytes());
            true
        }
        None => false,
    }
}

/// Full recompute of the TCP or UDP checksum including the pseudo-header
/// (the checksum field is treated as zero). `None` for other protocols,
/// fragments and truncated transport headers.
pub fn l4_checksum(pkt: &[u8], info: &PacketInfo) -> Option<u16> {
    let seg = pkt.get(info.l4_offset..info.total_len)?;
    let protocol = IpProtocol::from(info.key.protocol);
    let csum = l4_checksum_field(protocol)?;
    if info.fragment != Fragment::None || seg.len() < csum.end {
        return None;
    }
    // Pseudo-header (RFC 793 section 3.1, RFC 768): addresses, zero,
    // protocol, transport length.
    let mut sum = sum16(pkt.get(ipv4::field::ADDRS)?);
    sum += info.key.protocol as u32 + seg.len() as u32;
    sum += sum16(&seg[..csum.start]) + sum16(&seg[csum.end..]);
    let c = !fold(sum);
    // UDP transmits a computed 0 as 0xffff (0 means "no checksum").
    Some(if protocol == IpProtocol::Udp && c == udp::NO_CHECKSUM {
        0xffff
    } else {
        c
    })
}

/// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m') for a field changing from `old` to `new`.
pub fn update(old_csum: u16, old: &[u8], new: &[u8]) -> u16 {
    let delta = delta(old, new);
    apply(old_csum, delta)
}

/// The one's complement delta (~m + m') of a field change, to be applied to
/// several checksums: `old` and `new` are the field's bytes before and
/// after (network order), compared as 16-bit words over the shorter of the
/// two (an odd last byte is ignored). Fold the result with [`fold`] (or
/// [`apply`]).
pub fn delta(old: &[u8], new: &[u8]) -> u32 {
    let mut d = 0u32;
    let mut i = 0;
    while i + 1 < old.len().min(new.len()) {
        d += !u16::from_be_bytes([old[i], old[i + 1]]) as u32;
        d += u16::from_be_bytes([new[i], new[i + 1]]) as u32;
        i += 2;
    }
    d
}

/// [`delta`] of a 32-bit field (an IPv4 address) from `old` to `new`,
/// both as host-order values of the network-order bytes: the two 16-bit
/// halves of each, without going through bytes (the per-packet NAT path).
#[inline(always)]
pub fn delta32(old: u32, new: u32) -> u32 {
    (!old >> 16) + (!old & 0xffff) + (new >> 16) + (new & 0xffff)
}

/// [`delta`] of a 16-bit field (a port) from `old` to `new` (host-order
/// values of the network-order bytes).
#[inline(always)]
pub fn delta16(old: u16, new: u16) -> u32 {
    (!old) as u32 + new as u32
}

/// Applies a delta from [`delta`] to a checksum.
#[inline]
pub fn apply(csum: u16, delta: u32) -> u16 {
    !fold((!csum as u32) + delta)
}

/// Whether the IPv4 header checksum verifies.
pub fn verify_ipv4(pkt: &[u8]) -> bool {
    let ihl = pkt
        .get(ipv4::field::VER_IHL)
        .map_or(0, |&b| ipv4::header_len(b));
    pkt.get(..ihl)
        .is_some_and(|h| ihl >= ipv4::HEADER_LEN && fold(sum16(h)) == 0xffff)
}

/// Whether the TCP/UDP checksum verifies (a UDP checksum of 0 = not used).
/// True for packets that carry no checksummed transport header.
pub fn verify_l4(pkt: &[u8], info: &PacketInfo) -> bool {
    let Some(expect) = l4_checksum(pkt, info) else {
        return true;
    };
    let protocol = IpProtocol::from(info.key.protocol);
    // l4_checksum checked that the field is inside the packet.
    let Some(csum) = l4_checksum_field(protocol) else {
        return true;
    };
    let got = get_u16(&pkt[info.l4_offset..], csum);
    if protocol == IpProtocol::Udp && got == udp::NO_CHECKSUM {
        return true;
    }
    got == expect || (got == 0xffff && expect == 0) || (got == 0 && expect == 0xffff)
}

#[cfg(test)]
mod tests {
    use super::{delta, delta16, delta32, fold, fold_wide};
    use proptest::prelude::{any, proptest};

    /// The folding loop [`fold`] replaced: end-around carries until none.
    fn fold_loop(mut sum: u32) -> u16 {
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    #[test]
    fn fold_at_the_edges() {
        for s in [
            0,
            0xffff,
            0x1_0000,
            0x1_fffe,
            0x1_ffff,
            0xffff_0000,
            u32::MAX,
        ] {
            assert_eq!(fold(s), fold_loop(s), "{s:#x}");
        }
        assert_eq!(fold(u32::MAX), 0xffff);
        assert_eq!(fold(0x1_fffe), 0xffff);
    }

    /// The folding loop over a 64-bit sum.
    fn fold_loop64(mut sum: u64) -> u16 {
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    #[test]
    fn fold_wide_at_the_edges() {
        for s in [
            0,
            0xffff,
            0x1_0000,
            0x1_ffff,
            0xffff_ffff,
            0x1_0000_0003,
            0x2_ffff_fffc,
            (1 << 34) - 1,
            0xffff_ffff_0000_0000,
            0xffff_fffe_0000_0001,
            0x0000_ffff_ffff_0000,
            u64::MAX - 1,
            u64::MAX,
        ] {
            assert_eq!(fold_wide(s), fold_loop64(s), "{s:#x}");
        }
        // 2^34 - 1 = 4 - 1 mod 0xffff (2^16 = 1), and 0xffff stays 0xffff.
        assert_eq!(fold_wide((1 << 34) - 1), 3);
        assert_eq!(fold_wide(0xffff), 0xffff);
    }

    proptest! {
        #[test]
        fn fold_matches_the_loop(s in any::<u32>()) {
            assert_eq!(fold(s), fold_loop(s));
        }

        #[test]
        fn fold_wide_matches_the_loop(s in 0u64..1 << 34) {
            assert_eq!(fold_wide(s), fold_loop64(s));
        }

        #[test]
        fn fold_wide_matches_the_loop_for_any_u64(s in any::<u64>()) {
            assert_eq!(fold_wide(s), fold_loop64(s));
        }

        /// The word-valued deltas the NAT path takes are the byte-wise
        /// delta over the same field, sum for sum (so checksums agree bit
        /// for bit, 0x0000 vs 0xffff included).
        #[test]
        fn word_deltas_are_the_byte_delta(a in any::<u32>(), b in any::<u32>(), p in any::<u16>(), q in any::<u16>()) {
            assert_eq!(delta32(a, b), delta(&a.to_be_bytes(), &b.to_be_bytes()));
            assert_eq!(delta16(p, q), delta(&p.to_be_bytes(), &q.to_be_bytes()));
        }
    }
}
