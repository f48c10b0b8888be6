//! Builders of correct packets (valid lengths and checksums) for tests,
//! benchmarks and fuzzing.

use super::{checksum, icmp, ipv4, parse_ipv4, set_u16, set_u32, shifted, tcp, udp, IpProtocol};
use std::net::Ipv4Addr;

/// TCP control bits by their builder names ([`tcp::flags`]).
pub const TCP_FIN: u8 = tcp::flags::FIN;
pub const TCP_SYN: u8 = tcp::flags::SYN;
pub const TCP_RST: u8 = tcp::flags::RST;
pub const TCP_PSH: u8 = tcp::flags::PSH;
pub const TCP_ACK: u8 = tcp::flags::ACK;
pub const TCP_URG: u8 = tcp::flags::URG;

/// The IP identification every built packet carries.
const BUILT_IP_ID: u16 = 0x1234;

const IP: usize = ipv4::HEADER_LEN;

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, protocol: IpProtocol, l4: &[u8]) -> Vec<u8> {
    let total = IP + l4.len();
    let mut p = vec![0u8; total];
    p[ipv4::field::VER_IHL] = ipv4::ver_ihl(IP);
    set_u16(&mut p, ipv4::field::LENGTH, total as u16);
    set_u16(&mut p, ipv4::field::IDENT, BUILT_IP_ID);
    p[ipv4::field::TTL] = ipv4::DEFAULT_TTL;
    p[ipv4::field::PROTOCOL] = protocol.number();
    p[ipv4::field::SRC_ADDR].copy_from_slice(&src.octets());
    p[ipv4::field::DST_ADDR].copy_from_slice(&dst.octets());
    let c = checksum::ipv4_header_checksum(&p[..IP]);
    set_u16(&mut p, ipv4::field::CHECKSUM, c);
    p[IP..].copy_from_slice(l4);
    p
}

fn fill_l4_checksum(mut p: Vec<u8>) -> Vec<u8> {
    if let Ok(info) = parse_ipv4(&p) {
        let field = checksum::l4_checksum_field(IpProtocol::from(info.key.protocol));
        if let (Some(c), Some(f)) = (checksum::l4_checksum(&p, &info), field) {
            set_u16(&mut p, shifted(f, info.l4_offset), c);
        }
    }
    p
}

/// An IPv4+TCP packet (20-byte TCP header, window 65535) with valid checksums.
#[allow(clippy::too_many_arguments)]
pub fn tcp(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    payload: &[u8],
) -> Vec<u8> {
    let mut l4 = vec![0u8; tcp::HEADER_LEN + payload.len()];
    set_u16(&mut l4, tcp::field::SRC_PORT, sport);
    set_u16(&mut l4, tcp::field::DST_PORT, dport);
    set_u32(&mut l4, tcp::field::SEQ_NUM, seq);
    set_u32(&mut l4, tcp::field::ACK_NUM, ack);
    l4[tcp::field::DATA_OFF] = tcp::data_off(tcp::HEADER_LEN);
    l4[tcp::field::FLAGS] = flags;
    set_u16(&mut l4, tcp::field::WIN_SIZE, u16::MAX);
    l4[tcp::HEADER_LEN..].copy_from_slice(payload);
    fill_l4_checksum(ipv4(src, dst, IpProtocol::Tcp, &l4))
}

fn udp_raw(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = udp::HEADER_LEN + payload.len();
    let mut l4 = vec![0u8; len];
    set_u16(&mut l4, udp::field::SRC_PORT, sport);
    set_u16(&mut l4, udp::field::DST_PORT, dport);
    set_u16(&mut l4, udp::field::LENGTH, len as u16);
    l4[udp::HEADER_LEN..].copy_from_slice(payload);
    ipv4(src, dst, IpProtocol::Udp, &l4)
}

/// An IPv4+UDP packet with a valid UDP checksum.
pub fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    fill_l4_checksum(udp_raw(src, sport, dst, dport, payload))
}

/// An IPv4+UDP packet whose UDP checksum is 0 (not used).
pub fn udp_no_checksum(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    udp_raw(src, sport, dst, dport, payload)
}

/// An ICMP echo request (or reply) with a valid ICMP checksum.
pub fn icmp_echo(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    id: u16,
    seq: u16,
    request: bool,
    payload: &[u8],
) -> Vec<u8> {
    let mut l4 = vec![0u8; icmp::HEADER_LEN + payload.len()];
    l4[icmp::field::TYPE] = if request {
        icmp::msg_type::ECHO_REQUEST
    } else {
        icmp::msg_type::ECHO_REPLY
    };
    set_u16(&mut l4, icmp::field::ECHO_IDENT, id);
    set_u16(&mut l4, icmp::field::ECHO_SEQNO, seq);
    l4[icmp::HEADER_LEN..].copy_from_slice(payload);
    // RFC 792: the checksum covers the whole ICMP message.
    let c = !checksum::fold(checksum::sum16(&l4));
    set_u16(&mut l4, icmp::field::CHECKSUM, c);
    ipv4(src, dst, IpProtocol::Icmp, &l4)
}

/// One IP fragment of a built (unfragmented, 20-byte header) packet:
/// `len` bytes of its IP payload from `offset_bytes` (a multiple of 8).
pub fn fragment(pkt: &[u8], offset_bytes: usize, len: usize, more: bool) -> Vec<u8> {
    let payload = pkt.get(IP..).unwrap_or(&[]);
    let end = (offset_bytes + len).min(payload.len());
    let start = offset_bytes.min(end);
    let mut p = pkt
        .get(..IP)
        .map(|h| h.to_vec())
        .unwrap_or_else(|| vec![ipv4::ver_ihl(IP); IP]);
    p.extend_from_slice(&payload[start..end]);
    let total = p.len() as u16;
    set_u16(&mut p, ipv4::field::LENGTH, total);
    let frag = ((offset_bytes / ipv4::FRAG_OFFSET_UNIT) as u16 & ipv4::flags::FRAG_OFFSET_MASK)
        | if more { ipv4::flags::MF } else { 0 };
    set_u16(&mut p, ipv4::field::FLG_OFF, frag);
    let c = checksum::ipv4_header_checksum(&p[..IP]);
    set_u16(&mut p, ipv4::field::CHECKSUM, c);
    p
}
