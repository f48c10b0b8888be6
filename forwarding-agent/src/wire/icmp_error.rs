//! ICMP error messages about a translated flow (RFC 5508 section 4,
//! REQ-4; RFC 792 for the layout): find the quoted packet, and translate
//! the error as the flow's NAT would translate a packet going the opposite
//! way to the quoted one.
//!
//! An error quotes the IP header and at least the first 8 bytes after it of
//! the packet that could not be delivered. That packet was sent *by* the
//! error's destination, so the error belongs to the flow of the quoted
//! packet reversed: its key is the quoted key with source and destination
//! (addresses and ports) swapped, and that flow's NAT applies to the error
//! with the roles exchanged inside the quote:
//!
//! | NAT flag of the reversed flow | quoted packet | outer header |
//! |---|---|---|
//! | `DST_ADDR` | source address | destination, when it is the quoted source |
//! | `DST_PORT` | source port (echo request: identifier) | – |
//! | `SRC_ADDR` | destination address | source, when it is the quoted destination |
//! | `SRC_PORT` | destination port (echo reply: identifier) | – |
//!
//! The outer source is rewritten only when the error comes from the quoted
//! packet's destination itself (e.g. a port unreachable from a backend
//! whose address source NAT hides); a router's own address is left as it
//! is (Linux conntrack instead replaces it with the NAT's address).
//! Checksums: the outer IP header and the quoted IP header incrementally
//! (RFC 1624); the quoted TCP/UDP checksum incrementally when it is within
//! the quote (UDP always is; TCP only when 18 or more bytes are quoted —
//! from 8 bytes it cannot be, and is left, as the quote is evidence only);
//! the quoted echo's ICMP checksum; and the ICMP checksum over all changed
//! quoted bytes in one delta.

use super::parse::{Fragment, PacketError, PacketInfo};
use super::{checksum, get_u16, icmp, ipv4, set_u16, shifted, tcp, udp, IpProtocol};
use affinity_api::{AffinityKey, NatAction};
use std::net::Ipv4Addr;

/// The packet an ICMP error quotes, located in the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotedPacket {
    /// Offset of the quoted IP header from the start of the error's outer
    /// IP header, bytes.
    pub offset: usize,
    /// The quoted IP header's length, bytes (its IHL × 4).
    pub header_len: usize,
    /// Bytes of the quote after its IP header (at least 8).
    pub l4_len: usize,
    /// The quoted packet's key as [`super::parse_ipv4`] would give it
    /// (ports; an echo's identifier as both ports).
    pub key: AffinityKey,
}

impl QuotedPacket {
    /// The key of the flow the error belongs to: the quoted key reversed.
    pub fn reversed_key(&self) -> AffinityKey {
        AffinityKey {
            protocol: self.key.protocol,
            src_addr: self.key.dst_addr,
            dst_addr: self.key.src_addr,
            src_port: self.key.dst_port,
            dst_port: self.key.src_port,
        }
    }
}

/// The quoted packet of an ICMP error (destination unreachable, time
/// exceeded, parameter problem: [`icmp::is_error`]); `None` for any other
/// packet, for a later fragment of an error, and for a quote that is cut
/// short, is not IPv4, is itself a later fragment (no ports), or is an ICMP
/// message other than an echo (no errors about errors, RFC 1122 3.2.2).
pub fn quoted_packet(pkt: &[u8], info: &PacketInfo) -> Option<QuotedPacket> {
    if info.key.protocol != IpProtocol::Icmp.number() || info.fragment == Fragment::Later {
        return None;
    }
    let l4 = pkt.get(info.l4_offset..info.total_len)?;
    if l4.len() < icmp::HEADER_LEN || !icmp::is_error(l4[icmp::field::TYPE]) {
        return None;
    }
    let q = &l4[icmp::QUOTED_OFFSET..];
    if q.len() < ipv4::HEADER_LEN || ipv4::version(q[ipv4::field::VER_IHL]) != ipv4::VERSION {
        return None;
    }
    let header_len = ipv4::header_len(q[ipv4::field::VER_IHL]);
    if header_len < ipv4::HEADER_LEN || header_len + icmp::QUOTED_L4_MIN > q.len() {
        return None;
    }
    if get_u16(q, ipv4::field::FLG_OFF) & ipv4::flags::FRAG_OFFSET_MASK != 0 {
        return None;
    }
    let ql4 = &q[header_len..];
    let protocol = q[ipv4::field::PROTOCOL];
    let (src_port, dst_port) = match IpProtocol::from(protocol) {
        IpProtocol::Tcp | IpProtocol::Udp => (
            get_u16(ql4, tcp::field::SRC_PORT),
            get_u16(ql4, tcp::field::DST_PORT),
        ),
        IpProtocol::Icmp if icmp::is_echo(ql4[icmp::field::TYPE]) => {
            let id = get_u16(ql4, icmp::field::ECHO_IDENT);
            (id, id)
        }
        IpProtocol::Icmp => return None,
        IpProtocol::Unknown(_) => (0, 0),
    };
    let a = |f: super::Field| {
        let mut o = [0u8; 4];
        o.copy_from_slice(&q[f]);
        Ipv4Addr::from(o)
    };
    Some(QuotedPacket {
        offset: info.l4_offset + icmp::QUOTED_OFFSET,
        header_len,
        l4_len: ql4.len(),
        key: AffinityKey {
            protocol,
            src_addr: a(ipv4::field::SRC_ADDR),
            dst_addr: a(ipv4::field::DST_ADDR),
            src_port,
            dst_port,
        },
    })
}

/// Quoted transport bytes whose changes the ICMP checksum delta covers:
/// through the TCP checksum (the furthest field rewritten).
const QUOTED_L4_REWRITTEN: usize = tcp::field::CHECKSUM.end;

/// Translates ICMP error `pkt` (parsed as `info`, quoting `q` from
/// [`quoted_packet`]) in place with `nat`, the NAT action of the flow
/// [`QuotedPacket::reversed_key`] (see the module table). Errors: the
/// packet is shorter than `info`/`q` say.
pub fn translate_icmp_error(
    pkt: &mut [u8],
    info: &PacketInfo,
    q: &QuotedPacket,
    nat: &NatAction,
) -> Result<(), PacketError> {
    let q_l4 = q.offset + q.header_len;
    let rewritten = (q.header_len + q.l4_len.min(QUOTED_L4_REWRITTEN)) & !1;
    if pkt.len() < info.total_len
        || info.header_len < ipv4::HEADER_LEN
        || q.offset != info.l4_offset + icmp::QUOTED_OFFSET
        || q_l4 + q.l4_len > info.total_len
        || q.l4_len < icmp::QUOTED_L4_MIN
    {
        return Err(PacketError::TruncatedL4);
    }
    let mut before = [0u8; 60 + QUOTED_L4_REWRITTEN];
    before[..rewritten].copy_from_slice(&pkt[q.offset..q.offset + rewritten]);
    let mut outer_old = [0u8; 8];
    outer_old.copy_from_slice(&pkt[ipv4::field::ADDRS]);

    // Addresses: the quote's, then the outer header's where they were the same.
    let q_src = shifted(ipv4::field::SRC_ADDR, q.offset);
    let q_dst = shifted(ipv4::field::DST_ADDR, q.offset);
    if nat.flags & NatAction::DST_ADDR != 0 {
        if pkt[ipv4::field::DST_ADDR] == pkt[q_src.clone()] {
            pkt[ipv4::field::DST_ADDR].copy_from_slice(&nat.dst_addr.octets());
        }
        pkt[q_src].copy_from_slice(&nat.dst_addr.octets());
    }
    if nat.flags & NatAction::SRC_ADDR != 0 {
        if pkt[ipv4::field::SRC_ADDR] == pkt[q_dst.clone()] {
            pkt[ipv4::field::SRC_ADDR].copy_from_slice(&nat.src_addr.octets());
        }
        pkt[q_dst].copy_from_slice(&nat.src_addr.octets());
    }
    let q_addrs = shifted(ipv4::field::ADDRS, q.offset);
    let q_addr_delta = checksum::delta(&before[ipv4::field::ADDRS], &pkt[q_addrs]);
    let q_csum = shifted(ipv4::field::CHECKSUM, q.offset);
    let c = checksum::apply(get_u16(pkt, q_csum.clone()), q_addr_delta);
    set_u16(pkt, q_csum, c);
    let outer_delta = checksum::delta(&outer_old, &pkt[ipv4::field::ADDRS]);
    let c = checksum::apply(get_u16(pkt, ipv4::field::CHECKSUM), outer_delta);
    set_u16(pkt, ipv4::field::CHECKSUM, c);

    // The quoted transport header.
    let ql4 = &mut pkt[q_l4..q_l4 + q.l4_len];
    let protocol = IpProtocol::from(q.key.protocol);
    match protocol {
        IpProtocol::Tcp | IpProtocol::Udp => {
            let ports = tcp::field::SRC_PORT.start..tcp::field::DST_PORT.end;
            let mut old_ports = [0u8; 4];
            old_ports.copy_from_slice(&ql4[ports.clone()]);
            if nat.flags & NatAction::DST_PORT != 0 {
                set_u16(ql4, tcp::field::SRC_PORT, nat.dst_port);
            }
            if nat.flags & NatAction::SRC_PORT != 0 {
                set_u16(ql4, tcp::field::DST_PORT, nat.src_port);
            }
            let field = checksum::l4_checksum_field(protocol).unwrap_or(udp::field::CHECKSUM);
            if ql4.len() >= field.end {
                let old = get_u16(ql4, field.clone());
                let is_udp = protocol == IpProtocol::Udp;
                if !(is_udp && old == udp::NO_CHECKSUM) {
                    let d = q_addr_delta + checksum::delta(&old_ports, &ql4[ports]);
                    let mut new = checksum::apply(old, d);
                    if is_udp && new == udp::NO_CHECKSUM {
                        new = 0xffff;
                    }
                    set_u16(ql4, field, new);
                }
            }
        }
        IpProtocol::Icmp => {
            let id = match ql4[icmp::field::TYPE] {
                icmp::msg_type::ECHO_REQUEST if nat.flags & NatAction::DST_PORT != 0 => {
                    Some(nat.dst_port)
                }
                icmp::msg_type::ECHO_REPLY if nat.flags & NatAction::SRC_PORT != 0 => {
                    Some(nat.src_port)
                }
                _ => None,
            };
            if let Some(id) = id {
                let mut old = [0u8; 2];
                old.copy_from_slice(&ql4[icmp::field::ECHO_IDENT]);
                set_u16(ql4, icmp::field::ECHO_IDENT, id);
                let c = checksum::update(
                    get_u16(ql4, icmp::field::CHECKSUM),
                    &old,
                    &ql4[icmp::field::ECHO_IDENT],
                );
                set_u16(ql4, icmp::field::CHECKSUM, c);
            }
        }
        IpProtocol::Unknown(_) => {}
    }

    // The ICMP checksum covers the quote: one delta over what changed
    // (the quote starts 8 bytes into the message, an even offset).
    let d = checksum::delta(&before[..rewritten], &pkt[q.offset..q.offset + rewritten]);
    let icmp_csum = shifted(icmp::field::CHECKSUM, info.l4_offset);
    let c = checksum::apply(get_u16(pkt, icmp_csum.clone()), d);
    set_u16(pkt, icmp_csum, c);
    Ok(())
}
