//! Builders of correct packets (valid lengths and checksums) for tests,
//! benchmarks and fuzzing.

use super::checksum;
use super::{parse_ipv4, ICMP, TCP, UDP};
use std::net::Ipv4Addr;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_URG: u8 = 0x20;

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, l4: &[u8]) -> Vec<u8> {
    let total = 20 + l4.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    p[8] = 64;
    p[9] = protocol;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let c = checksum::ipv4_header_checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..].copy_from_slice(l4);
    p
}

fn fill_l4_checksum(mut p: Vec<u8>) -> Vec<u8> {
    if let Ok(info) = parse_ipv4(&p) {
        if let Some(c) = checksum::l4_checksum(&p, &info) {
            let at = 20 + if info.key.protocol == TCP { 16 } else { 6 };
            p[at..at + 2].copy_from_slice(&c.to_be_bytes());
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
    let mut l4 = vec![0u8; 20 + payload.len()];
    l4[0..2].copy_from_slice(&sport.to_be_bytes());
    l4[2..4].copy_from_slice(&dport.to_be_bytes());
    l4[4..8].copy_from_slice(&seq.to_be_bytes());
    l4[8..12].copy_from_slice(&ack.to_be_bytes());
    l4[12] = 5 << 4;
    l4[13] = flags;
    l4[14..16].copy_from_slice(&0xffffu16.to_be_bytes());
    l4[20..].copy_from_slice(payload);
    fill_l4_checksum(ipv4(src, dst, TCP, &l4))
}

fn udp_raw(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut l4 = vec![0u8; 8 + payload.len()];
    l4[0..2].copy_from_slice(&sport.to_be_bytes());
    l4[2..4].copy_from_slice(&dport.to_be_bytes());
    l4[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    l4[8..].copy_from_slice(payload);
    ipv4(src, dst, UDP, &l4)
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
    let mut l4 = vec![0u8; 8 + payload.len()];
    l4[0] = if request { 8 } else { 0 };
    l4[4..6].copy_from_slice(&id.to_be_bytes());
    l4[6..8].copy_from_slice(&seq.to_be_bytes());
    l4[8..].copy_from_slice(payload);
    let c = !checksum::fold(checksum::sum16(&l4));
    l4[2..4].copy_from_slice(&c.to_be_bytes());
    ipv4(src, dst, ICMP, &l4)
}

/// One IP fragment of a built (unfragmented, 20-byte header) packet:
/// `len` bytes of its IP payload from `offset_bytes` (a multiple of 8).
pub fn fragment(pkt: &[u8], offset_bytes: usize, len: usize, more: bool) -> Vec<u8> {
    let payload = pkt.get(20..).unwrap_or(&[]);
    let end = (offset_bytes + len).min(payload.len());
    let start = offset_bytes.min(end);
    let mut p = pkt
        .get(..20)
        .map(|h| h.to_vec())
        .unwrap_or_else(|| vec![0x45; 20]);
    p.extend_from_slice(&payload[start..end]);
    let total = p.len() as u16;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    let frag = ((offset_bytes / 8) as u16 & 0x1fff) | if more { 0x2000 } else { 0 };
    p[6..8].copy_from_slice(&frag.to_be_bytes());
    let c = checksum::ipv4_header_checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p
}
