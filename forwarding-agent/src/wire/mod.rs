//! Checked views over IPv4/TCP/UDP/ICMP packets and the in-place rewrites
//! the data path applies. Every offset is checked against both the buffer
//! and the lengths the packet claims; nothing here panics on any input.

pub mod build;
pub mod checksum;

use affinity_api::{interest, AffinityKey, NatAction, SeqAdjustAction};
use std::net::Ipv4Addr;

pub const ICMP: u8 = 1;
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;

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
    /// Ports are 0 when not present (later fragments, ICMP, other protocols).
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

fn be16(p: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([p[at], p[at + 1]])
}

fn be32(p: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]])
}

fn addr(p: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(p[at], p[at + 1], p[at + 2], p[at + 3])
}

/// Parses an IPv4 packet starting at its IP header.
#[inline]
pub fn parse_ipv4(pkt: &[u8]) -> Result<PacketInfo, PacketError> {
    if pkt.len() < 20 {
        return Err(PacketError::TooShort);
    }
    if pkt[0] >> 4 != 4 {
        return Err(PacketError::NotIpv4);
    }
    let header_len = (pkt[0] & 0x0f) as usize * 4;
    if header_len < 20 || header_len > pkt.len() {
        return Err(PacketError::BadHeaderLen);
    }
    let total_len = be16(pkt, 2) as usize;
    if total_len < header_len || total_len > pkt.len() {
        return Err(PacketError::BadTotalLen);
    }
    let frag = be16(pkt, 6);
    let fragment = match (frag & 0x1fff != 0, frag & 0x2000 != 0) {
        (true, _) => Fragment::Later,
        (false, true) => Fragment::First,
        (false, false) => Fragment::None,
    };
    let mut info = PacketInfo {
        key: AffinityKey {
            protocol: pkt[9],
            src_addr: addr(pkt, 12),
            dst_addr: addr(pkt, 16),
            src_port: 0,
            dst_port: 0,
        },
        header_len,
        total_len,
        l4_offset: header_len,
        fragment,
        ip_id: be16(pkt, 4),
        tcp_flags: 0,
        payload_len: 0,
        icmp_echo_id: None,
    };
    if fragment == Fragment::Later {
        info.payload_len = total_len - header_len;
        return Ok(info);
    }
    let l4 = &pkt[header_len..total_len];
    match info.key.protocol {
        TCP => {
            if l4.len() < 20 {
                return Err(PacketError::TruncatedL4);
            }
            let doff = (l4[12] >> 4) as usize * 4;
            if doff < 20 || doff > l4.len() {
                return Err(PacketError::BadL4Header);
            }
            info.key.src_port = be16(l4, 0);
            info.key.dst_port = be16(l4, 2);
            info.tcp_flags = l4[13] & 0x3f;
            info.payload_len = l4.len() - doff;
        }
        UDP => {
            if l4.len() < 8 {
                return Err(PacketError::TruncatedL4);
            }
            let ulen = be16(l4, 4) as usize;
            // A first fragment's UDP length covers the whole datagram.
            if ulen < 8 || (fragment == Fragment::None && ulen > l4.len()) {
                return Err(PacketError::BadL4Header);
            }
            info.key.src_port = be16(l4, 0);
            info.key.dst_port = be16(l4, 2);
            info.payload_len = if fragment == Fragment::None {
                ulen - 8
            } else {
                l4.len() - 8
            };
        }
        ICMP => {
            if l4.len() < 8 {
                return Err(PacketError::TruncatedL4);
            }
            if l4[0] == 8 || l4[0] == 0 {
                info.icmp_echo_id = Some(be16(l4, 4));
            }
            info.payload_len = l4.len() - 8;
        }
        _ => info.payload_len = l4.len(),
    }
    Ok(info)
}

/// The interest-mask bits the packet itself carries (TCP flags, data,
/// fragment); FIRST_DATA and ALL depend on flow state and policy.
#[inline]
pub fn interest_bits(info: &PacketInfo) -> u16 {
    let mut bits = 0;
    if info.key.protocol == TCP {
        // TCP flag bits FIN..URG map 1:1 onto interest bits 0x01..0x20.
        bits |= (info.tcp_flags & 0x3f) as u16;
    }
    if info.payload_len > 0 && matches!(info.key.protocol, TCP | UDP) {
        bits |= interest::DATA;
    }
    if info.fragment != Fragment::None {
        bits |= interest::FRAGMENT;
    }
    bits
}

/// Offset of the transport checksum inside the packet, when the packet has
/// a transport header that carries one.
fn l4_csum_at(info: &PacketInfo) -> Option<usize> {
    if info.fragment == Fragment::Later {
        return None;
    }
    match info.key.protocol {
        TCP => Some(info.l4_offset + 16),
        UDP => Some(info.l4_offset + 6),
        _ => None,
    }
}

/// Applies a NAT action in place. One delta for the address change goes to
/// both the IP header checksum and the TCP/UDP checksum (pseudo-header); the
/// port change goes to the transport checksum only. A UDP checksum of 0
/// stays 0. ICMP and later fragments get address rewrites only. Returns the
/// packet's new info.
#[inline]
pub fn apply_nat(
    pkt: &mut [u8],
    info: &PacketInfo,
    nat: &NatAction,
) -> Result<PacketInfo, PacketError> {
    if pkt.len() < info.total_len || info.total_len < info.header_len || info.header_len < 20 {
        return Err(PacketError::TooShort);
    }
    let mut out = *info;
    let old_addrs: [u8; 8] = pkt[12..20].try_into().map_err(|_| PacketError::TooShort)?;
    if nat.flags & NatAction::SRC_ADDR != 0 {
        pkt[12..16].copy_from_slice(&nat.src_addr.octets());
        out.key.src_addr = nat.src_addr;
    }
    if nat.flags & NatAction::DST_ADDR != 0 {
        pkt[16..20].copy_from_slice(&nat.dst_addr.octets());
        out.key.dst_addr = nat.dst_addr;
    }
    let addr_delta = checksum::delta(&old_addrs, &pkt[12..20]);
    let ip_csum = be16(pkt, 10);
    pkt[10..12].copy_from_slice(&checksum::apply(ip_csum, addr_delta).to_be_bytes());

    let Some(at) = l4_csum_at(info) else {
        return Ok(out);
    };
    let l4 = info.l4_offset;
    if at + 2 > info.total_len {
        return Err(PacketError::TruncatedL4);
    }
    let old_ports: [u8; 4] = pkt[l4..l4 + 4]
        .try_into()
        .map_err(|_| PacketError::TruncatedL4)?;
    if nat.flags & NatAction::SRC_PORT != 0 {
        pkt[l4..l4 + 2].copy_from_slice(&nat.src_port.to_be_bytes());
        out.key.src_port = nat.src_port;
    }
    if nat.flags & NatAction::DST_PORT != 0 {
        pkt[l4 + 2..l4 + 4].copy_from_slice(&nat.dst_port.to_be_bytes());
        out.key.dst_port = nat.dst_port;
    }
    let old = be16(pkt, at);
    if info.key.protocol == UDP && old == 0 {
        return Ok(out);
    }
    let delta = addr_delta + checksum::delta(&old_ports, &pkt[l4..l4 + 4]);
    let mut new = checksum::apply(old, delta);
    if info.key.protocol == UDP && new == 0 {
        new = 0xffff;
    }
    pkt[at..at + 2].copy_from_slice(&new.to_be_bytes());
    Ok(out)
}

/// RFC 1982 serial comparison: `a` is at or after `b`.
fn seq_at_or_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) >= 0
}

/// TCP sequence/ack adjust: seq += seq_delta when at or after initial_seq,
/// ack += ack_delta when at or after initial_ack; checksum updated
/// incrementally. No-op for non-TCP packets and later fragments.
#[inline]
pub fn apply_seq_adjust(
    pkt: &mut [u8],
    info: &PacketInfo,
    adj: &SeqAdjustAction,
) -> Result<(), PacketError> {
    if info.key.protocol != TCP || info.fragment == Fragment::Later {
        return Ok(());
    }
    let l4 = info.l4_offset;
    if l4 + 20 > info.total_len || info.total_len > pkt.len() {
        return Err(PacketError::TruncatedL4);
    }
    let old: [u8; 8] = pkt[l4 + 4..l4 + 12]
        .try_into()
        .map_err(|_| PacketError::TruncatedL4)?;
    let seq = be32(pkt, l4 + 4);
    let ack = be32(pkt, l4 + 8);
    if adj.seq_delta != 0 && seq_at_or_after(seq, adj.initial_seq) {
        pkt[l4 + 4..l4 + 8].copy_from_slice(&seq.wrapping_add(adj.seq_delta).to_be_bytes());
    }
    // Only packets carrying ACK have a meaningful acknowledgment number.
    if adj.ack_delta != 0 && info.tcp_flags & 0x10 != 0 && seq_at_or_after(ack, adj.initial_ack) {
        pkt[l4 + 8..l4 + 12].copy_from_slice(&ack.wrapping_add(adj.ack_delta).to_be_bytes());
    }
    let csum = be16(pkt, l4 + 16);
    let new = checksum::update(csum, &old, &pkt[l4 + 4..l4 + 12]);
    pkt[l4 + 16..l4 + 18].copy_from_slice(&new.to_be_bytes());
    Ok(())
}

/// Decrements the TTL with an incremental checksum update; false (packet
/// untouched) when the TTL would reach 0.
pub fn decrement_ttl(pkt: &mut [u8]) -> bool {
    if pkt.len() < 20 || pkt[8] <= 1 {
        return false;
    }
    let old = [pkt[8], pkt[9]];
    pkt[8] -= 1;
    let csum = checksum::update(be16(pkt, 10), &old, &[pkt[8], pkt[9]]);
    pkt[10..12].copy_from_slice(&csum.to_be_bytes());
    true
}

/// Writes IPv4 and UDP headers (28 bytes) into `out` for a UDP datagram of
/// `payload_len` bytes, as used to send a punt from a packet's headroom.
/// The UDP checksum is left 0 (optional in IPv4); the IP checksum is set.
/// Returns false when `out` is shorter than 28 bytes or the length overflows.
pub fn write_ipv4_udp_header(
    out: &mut [u8],
    src: std::net::SocketAddrV4,
    dst: std::net::SocketAddrV4,
    payload_len: usize,
    ip_id: u16,
) -> bool {
    let total = 28 + payload_len;
    if out.len() < 28 || total > u16::MAX as usize {
        return false;
    }
    let h = &mut out[..28];
    h[0] = 0x45;
    h[1] = 0;
    h[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    h[4..6].copy_from_slice(&ip_id.to_be_bytes());
    h[6..8].copy_from_slice(&[0x40, 0]); // DF
    h[8] = 64;
    h[9] = UDP;
    h[10..12].copy_from_slice(&[0, 0]);
    h[12..16].copy_from_slice(&src.ip().octets());
    h[16..20].copy_from_slice(&dst.ip().octets());
    let c = checksum::ipv4_header_checksum(&h[..20]);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h[20..22].copy_from_slice(&src.port().to_be_bytes());
    h[22..24].copy_from_slice(&dst.port().to_be_bytes());
    h[24..26].copy_from_slice(&((8 + payload_len) as u16).to_be_bytes());
    h[26..28].copy_from_slice(&[0, 0]);
    true
}
