//! The checked parse of an IPv4 packet into the key and lengths the data
//! path works from, and the interest bits a packet carries by itself.

use super::{get_u16, icmp, ipv4, tcp, udp, IpProtocol};
use affinity_api::{interest, AffinityKey};
use std::net::Ipv4Addr;

/// Fragment position of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fragment {
    /// Not a fragment.
    None,
    /// Offset 0 with More Fragments: carries the transport header.
    First,
    /// Non-zero offset: no transport header, no ports.
    Later,
}

/// Result of a checked parse of an IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketInfo {
    /// Ports are 0 when not present (later fragments, ICMP other than echo,
    /// other protocols); an ICMP echo request or reply carries its
    /// identifier as both ports (RFC 5508 REQ-1/2).
    pub key: AffinityKey,
    pub header_len: usize,
    /// IPv4 total length; bytes past it (link padding) are ignored.
    pub total_len: usize,
    pub l4_offset: usize,
    pub fragment: Fragment,
    /// IP identification (keys the fragment cache).
    pub ip_id: u16,
    pub tcp_flags: u8,
    pub payload_len: usize,
    pub icmp_echo_id: Option<u16>,
}

/// Why a packet could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketError {
    TooShort,
    NotIpv4,
    BadHeaderLen,
    BadTotalLen,
    /// TCP data offset or UDP length inconsistent with the packet.
    BadL4Header,
    /// The transport header is cut short.
    TruncatedL4,
}

impl PacketError {
    /// Short stable counter name.
    pub fn reason(&self) -> &'static str {
        match self {
            PacketError::TooShort => "ip-too-short",
            PacketError::NotIpv4 => "not-ipv4",
            PacketError::BadHeaderLen => "bad-ip-header-length",
            PacketError::BadTotalLen => "bad-ip-total-length",
            PacketError::BadL4Header => "bad-l4-header",
            PacketError::TruncatedL4 => "truncated-l4-header",
        }
    }
}

fn addr(p: &[u8], f: super::Field) -> Ipv4Addr {
    let mut a = [0u8; 4];
    a.copy_from_slice(&p[f]);
    Ipv4Addr::from(a)
}

/// Parses an IPv4 packet starting at its IP header.
#[inline]
pub fn parse_ipv4(pkt: &[u8]) -> Result<PacketInfo, PacketError> {
    if pkt.len() < ipv4::HEADER_LEN {
        return Err(PacketError::TooShort);
    }
    let ver_ihl = pkt[ipv4::field::VER_IHL];
    if ipv4::version(ver_ihl) != ipv4::VERSION {
        return Err(PacketError::NotIpv4);
    }
    let header_len = ipv4::header_len(ver_ihl);
    if header_len < ipv4::HEADER_LEN || header_len > pkt.len() {
        return Err(PacketError::BadHeaderLen);
    }
    let total_len = get_u16(pkt, ipv4::field::LENGTH) as usize;
    if total_len < header_len || total_len > pkt.len() {
        return Err(PacketError::BadTotalLen);
    }
    let frag = get_u16(pkt, ipv4::field::FLG_OFF);
    let fragment = match (
        frag & ipv4::flags::FRAG_OFFSET_MASK != 0,
        frag & ipv4::flags::MF != 0,
    ) {
        (true, _) => Fragment::Later,
        (false, true) => Fragment::First,
        (false, false) => Fragment::None,
    };
    let mut info = PacketInfo {
        key: AffinityKey {
            protocol: pkt[ipv4::field::PROTOCOL],
            src_addr: addr(pkt, ipv4::field::SRC_ADDR),
            dst_addr: addr(pkt, ipv4::field::DST_ADDR),
            src_port: 0,
            dst_port: 0,
        },
        header_len,
        total_len,
        l4_offset: header_len,
        fragment,
        ip_id: get_u16(pkt, ipv4::field::IDENT),
        tcp_flags: 0,
        payload_len: 0,
        icmp_echo_id: None,
    };
    if fragment == Fragment::Later {
        info.payload_len = total_len - header_len;
        return Ok(info);
    }
    let l4 = &pkt[header_len..total_len];
    match IpProtocol::from(info.key.protocol) {
        IpProtocol::Tcp => {
            if l4.len() < tcp::HEADER_LEN {
                return Err(PacketError::TruncatedL4);
            }
            let doff = tcp::header_len(l4[tcp::field::DATA_OFF]);
            if doff < tcp::HEADER_LEN || doff > l4.len() {
                return Err(PacketError::BadL4Header);
            }
            info.key.src_port = get_u16(l4, tcp::field::SRC_PORT);
            info.key.dst_port = get_u16(l4, tcp::field::DST_PORT);
            info.tcp_flags = l4[tcp::field::FLAGS] & tcp::flags::ALL;
            info.payload_len = l4.len() - doff;
        }
        IpProtocol::Udp => {
            if l4.len() < udp::HEADER_LEN {
                return Err(PacketError::TruncatedL4);
            }
            let ulen = get_u16(l4, udp::field::LENGTH) as usize;
            // A first fragment's UDP length covers the whole datagram.
            if ulen < udp::HEADER_LEN || (fragment == Fragment::None && ulen > l4.len()) {
                return Err(PacketError::BadL4Header);
            }
            info.key.src_port = get_u16(l4, udp::field::SRC_PORT);
            info.key.dst_port = get_u16(l4, udp::field::DST_PORT);
            info.payload_len = if fragment == Fragment::None {
                ulen - udp::HEADER_LEN
            } else {
                l4.len() - udp::HEADER_LEN
            };
        }
        IpProtocol::Icmp => {
            if l4.len() < icmp::HEADER_LEN {
                return Err(PacketError::TruncatedL4);
            }
            if icmp::is_echo(l4[icmp::field::TYPE]) {
                // RFC 5508 REQ-1/2: the identifier is the query's port,
                // on both sides of the key (as VPP's nat44-ed keys it), so
                // a request's key reversed is its reply's.
                let id = get_u16(l4, icmp::field::ECHO_IDENT);
                info.icmp_echo_id = Some(id);
                info.key.src_port = id;
                info.key.dst_port = id;
            }
            info.payload_len = l4.len() - icmp::HEADER_LEN;
        }
        IpProtocol::Unknown(_) => info.payload_len = l4.len(),
    }
    Ok(info)
}

/// An unfragmented IPv4 TCP or UDP packet without IP options whose
/// transport header is whole and consistent: the data path's common case,
/// read in one pass ([`parse_plain`]) with its key already packed as the
/// fixed table packs it. The IPv4 header is 20 bytes, so the transport
/// header starts at byte 20.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plain {
    /// Source address << 32 | destination address (the header's bytes
    /// 12..20 read big-endian).
    pub addrs: u64,
    /// Source port << 16 | destination port (bytes 20..24, big-endian).
    pub ports: u32,
    /// [`super::TCP`] or [`super::UDP`].
    pub protocol: u8,
    /// The TCP control bits ([`tcp::flags::ALL`]); 0 for UDP.
    pub tcp_flags: u8,
    /// IPv4 total length, bytes (≤ the packet's length; bytes past it are
    /// link padding).
    pub total_len: u16,
}

impl Plain {
    /// The packet's 5-tuple.
    pub fn key(&self) -> AffinityKey {
        AffinityKey {
            protocol: self.protocol,
            src_addr: Ipv4Addr::from((self.addrs >> 32) as u32),
            dst_addr: Ipv4Addr::from(self.addrs as u32),
            src_port: (self.ports >> 16) as u16,
            dst_port: self.ports as u16,
        }
    }
}

/// The checks and fields of [`parse_ipv4`] for a [`Plain`] packet only:
/// `None` for anything else (IPv4 options, a fragment, another protocol,
/// any error), which the caller then parses with [`parse_ipv4`]. For a
/// packet this returns `Some` for, [`parse_ipv4`] returns `Ok` with
/// [`Fragment::None`], `header_len` and `l4_offset` 20, and the same key,
/// total length and TCP flags (tested over random packets,
/// `tests/fast_path.rs`).
#[inline]
pub fn parse_plain(pkt: &[u8]) -> Option<Plain> {
    // 28 bytes: the IPv4 header and a UDP header; a TCP header's 20 are
    // checked below against the total length, itself ≤ the packet's.
    let h = pkt.first_chunk::<28>()?;
    if h[ipv4::field::VER_IHL] != (ipv4::VERSION << 4 | 5) {
        return None;
    }
    let total_len = u16::from_be_bytes([h[2], h[3]]);
    if usize::from(total_len) > pkt.len() {
        return None;
    }
    let frag = u16::from_be_bytes([h[6], h[7]]);
    if frag & (ipv4::flags::MF | ipv4::flags::FRAG_OFFSET_MASK) != 0 {
        return None;
    }
    let l4_len = total_len.checked_sub(ipv4::HEADER_LEN as u16)?;
    let protocol = h[ipv4::field::PROTOCOL];
    let tcp_flags = match IpProtocol::from(protocol) {
        IpProtocol::Tcp => {
            let l4 = pkt.get(ipv4::HEADER_LEN..ipv4::HEADER_LEN + tcp::HEADER_LEN)?;
            let doff = tcp::header_len(l4[tcp::field::DATA_OFF]);
            if usize::from(l4_len) < tcp::HEADER_LEN
                || doff < tcp::HEADER_LEN
                || doff > usize::from(l4_len)
            {
                return None;
            }
            l4[tcp::field::FLAGS] & tcp::flags::ALL
        }
        IpProtocol::Udp => {
            let ulen = u16::from_be_bytes([h[24], h[25]]);
            if usize::from(l4_len) < udp::HEADER_LEN
                || usize::from(ulen) < udp::HEADER_LEN
                || ulen > l4_len
            {
                return None;
            }
            0
        }
        _ => return None,
    };
    let mut a = [0u8; 8];
    a.copy_from_slice(&h[ipv4::field::SRC_ADDR.start..ipv4::field::DST_ADDR.end]);
    let mut ports = [0u8; 4];
    ports.copy_from_slice(&h[ipv4::HEADER_LEN..ipv4::HEADER_LEN + 4]);
    Some(Plain {
        addrs: u64::from_be_bytes(a),
        ports: u32::from_be_bytes(ports),
        protocol,
        tcp_flags,
        total_len,
    })
}

/// The interest-mask bits the packet itself carries (TCP flags, data,
/// fragment); FIRST_DATA and ALL depend on flow state and policy.
#[inline]
pub fn interest_bits(info: &PacketInfo) -> u16 {
    let mut bits = 0;
    let protocol = IpProtocol::from(info.key.protocol);
    if protocol == IpProtocol::Tcp {
        // TCP flag bits FIN..URG map 1:1 onto interest bits 0x01..0x20.
        bits |= (info.tcp_flags & tcp::flags::ALL) as u16;
    }
    if info.payload_len > 0 && matches!(protocol, IpProtocol::Tcp | IpProtocol::Udp) {
        bits |= interest::DATA;
    }
    if info.fragment != Fragment::None {
        bits |= interest::FRAGMENT;
    }
    bits
}

#[cfg(test)]
mod tests {
    use super::super::tcp;
    use affinity_api::interest;

    #[test]
    fn tcp_flags_are_the_interest_bits() {
        // interest_bits relies on this identity.
        for (f, i) in [
            (tcp::flags::FIN, interest::FIN),
            (tcp::flags::SYN, interest::SYN),
            (tcp::flags::RST, interest::RST),
            (tcp::flags::PSH, interest::PSH),
            (tcp::flags::ACK, interest::ACK),
            (tcp::flags::URG, interest::URG),
        ] {
            assert_eq!(f as u16, i);
        }
    }
}
