//! The in-place rewrites the data path applies to a parsed packet (NAT,
//! TCP sequence adjust, TTL) with incremental checksum updates (RFC 1624),
//! and the IPv4+UDP header written in front of a punt.

use super::checksum;
use super::parse::{Fragment, PacketError, PacketInfo, Plain};
use super::{get_u16, get_u32, icmp, ipv4, set_u16, set_u32, tcp, udp, IpProtocol, SeqNumber};
use crate::actions::NatActionKey;
use affinity_api::{NatAction, SeqAdjustAction};
use std::net::SocketAddrV4;

// Source and destination ports are the same bytes in TCP and UDP, so NAT
// reads and rewrites both protocols' ports through `tcp::field`.
const _: () = assert!(
    udp::field::SRC_PORT.start == tcp::field::SRC_PORT.start
        && udp::field::SRC_PORT.end == tcp::field::SRC_PORT.end
        && udp::field::DST_PORT.start == tcp::field::DST_PORT.start
        && udp::field::DST_PORT.end == tcp::field::DST_PORT.end
);

/// Length of the IPv4 + UDP headers [`write_ipv4_udp_header`] writes, bytes.
pub const IPV4_UDP_HEADER_LEN: usize = ipv4::HEADER_LEN + udp::HEADER_LEN;

/// Applies a NAT action in place. One delta for the address change goes to
/// both the IP header checksum and the TCP/UDP checksum (pseudo-header); the
/// port change goes to the transport checksum only. A UDP checksum of 0
/// stays 0. Later fragments get address rewrites only. An ICMP echo request
/// gets its identifier from the source port, an echo reply from the
/// destination port (the identifier is the query's port, RFC 5508 REQ-1/2),
/// with the ICMP checksum updated; other ICMP get address rewrites only.
/// Returns the packet's new info.
#[inline]
pub fn apply_nat(
    pkt: &mut [u8],
    info: &PacketInfo,
    nat: &NatAction,
) -> Result<PacketInfo, PacketError> {
    apply_nat_offload(pkt, info, nat, false)
}

/// [`apply_nat`] for a packet whose TCP/UDP checksum may be partial:
/// with `l4_partial` the checksum field holds the folded pseudo-header sum
/// (not complemented) that the NIC completes over the segment (VPP's
/// `VNET_BUFFER_F_OFFLOAD` with the TCP/UDP checksum offload flags; Linux
/// `CHECKSUM_PARTIAL`), so the address delta is added to it as a plain sum
/// and the ports (summed by the NIC) leave it alone, as Linux's
/// `inet_proto_csum_replace4(.., pseudohdr = true)` does. The IP header
/// checksum is always updated.
#[inline]
pub fn apply_nat_offload(
    pkt: &mut [u8],
    info: &PacketInfo,
    nat: &NatAction,
    l4_partial: bool,
) -> Result<PacketInfo, PacketError> {
    let mut out = *info;
    apply_nat_in_place(pkt, &mut out, nat, l4_partial)?;
    Ok(out)
}

/// [`apply_nat_offload`] updating `info` in place to the rewritten
/// packet's (the data path's form: the packet info is not copied in and
/// out). On `Err` the packet may be partly rewritten (a transport header
/// cut short after the IPv4 header was translated) and `info` is
/// unspecified; the caller treats the packet as malformed.
///
/// The checksum deltas are taken over both addresses and both ports
/// whether or not each changed (RFC 1624 eqn. 3 per 16-bit word), as a
/// byte-wise delta over the two fields would: the same sums, so the same
/// checksums bit for bit, without going through byte slices.
#[inline]
pub fn apply_nat_in_place(
    pkt: &mut [u8],
    info: &mut PacketInfo,
    nat: &NatAction,
    l4_partial: bool,
) -> Result<(), PacketError> {
    if pkt.len() < info.total_len
        || info.total_len < info.header_len
        || info.header_len < ipv4::HEADER_LEN
    {
        return Err(PacketError::TooShort);
    }
    let ip = pkt
        .first_chunk_mut::<{ ipv4::HEADER_LEN }>()
        .ok_or(PacketError::TooShort)?;
    let old_src = get_u32(ip, ipv4::field::SRC_ADDR);
    let old_dst = get_u32(ip, ipv4::field::DST_ADDR);
    let (mut src, mut dst) = (old_src, old_dst);
    if nat.flags & NatAction::SRC_ADDR != 0 {
        src = u32::from(nat.src_addr);
        set_u32(ip, ipv4::field::SRC_ADDR, src);
        info.key.src_addr = nat.src_addr;
    }
    if nat.flags & NatAction::DST_ADDR != 0 {
        dst = u32::from(nat.dst_addr);
        set_u32(ip, ipv4::field::DST_ADDR, dst);
        info.key.dst_addr = nat.dst_addr;
    }
    let addr_delta = checksum::delta32(old_src, src) + checksum::delta32(old_dst, dst);
    let ip_csum = get_u16(ip, ipv4::field::CHECKSUM);
    set_u16(
        ip,
        ipv4::field::CHECKSUM,
        checksum::apply(ip_csum, addr_delta),
    );

    if info.fragment == Fragment::Later {
        return Ok(());
    }
    let protocol = IpProtocol::from(info.key.protocol);
    let Some(csum_field) = checksum::l4_checksum_field(protocol) else {
        if protocol == IpProtocol::Icmp && info.icmp_echo_id.is_some() {
            let before = *info;
            nat_echo_ident(pkt, &before, nat, info)?;
        }
        return Ok(());
    };
    let seg = pkt
        .get_mut(info.l4_offset..info.total_len)
        .filter(|s| s.len() >= csum_field.end)
        .ok_or(PacketError::TruncatedL4)?;
    let old_sport = get_u16(seg, tcp::field::SRC_PORT);
    let old_dport = get_u16(seg, tcp::field::DST_PORT);
    let (mut sport, mut dport) = (old_sport, old_dport);
    if nat.flags & NatAction::SRC_PORT != 0 {
        sport = nat.src_port;
        set_u16(seg, tcp::field::SRC_PORT, sport);
        info.key.src_port = sport;
    }
    if nat.flags & NatAction::DST_PORT != 0 {
        dport = nat.dst_port;
        set_u16(seg, tcp::field::DST_PORT, dport);
        info.key.dst_port = dport;
    }
    let old = get_u16(seg, csum_field.clone());
    if l4_partial {
        // A pseudo-header sum: addresses only, added (not complemented).
        set_u16(seg, csum_field, checksum::fold(old as u32 + addr_delta));
        return Ok(());
    }
    let is_udp = protocol == IpProtocol::Udp;
    if is_udp && old == udp::NO_CHECKSUM {
        return Ok(());
    }
    let delta =
        addr_delta + checksum::delta16(old_sport, sport) + checksum::delta16(old_dport, dport);
    let mut new = checksum::apply(old, delta);
    if is_udp && new == udp::NO_CHECKSUM {
        // RFC 768: a computed 0 is sent as all ones.
        new = 0xffff;
    }
    set_u16(seg, csum_field, new);
    Ok(())
}

/// A NAT action in the form [`apply_nat_plain`] applies it: for the
/// IPv4 header's address bytes (12..20, source then destination) and the
/// transport header's port bytes (0..4, source then destination), which
/// bytes keep the packet's own (`*_keep`, all ones there) and the new bytes
/// elsewhere (`*_set`, zero where kept). Each value is the wire's bytes read
/// with `from_ne_bytes`, so a rewrite is `old & keep | set` with nothing
/// swapped per packet. With them, the sums of the new bytes' 16-bit words
/// that the checksum updates add (RFC 1624 eqn. 3's m'), worked out once
/// per action set rather than per packet. Built by [`PlainNat::new`] from
/// an action set's fields when the set is stored
/// ([`crate::actions::ActionTable::acquire`]), and read back whole by the
/// common case ([`crate::actions::ActionTable::plain`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlainNat {
    /// IPv4 header bytes 12..20 (both addresses) kept from the packet: all
    /// ones over an address the action leaves, zero over one it writes.
    pub addr_keep: u64,
    /// The new address bytes where `addr_keep` is zero (zero elsewhere).
    pub addr_set: u64,
    /// Transport header bytes 0..4 (both ports) kept from the packet, as
    /// `addr_keep`.
    pub port_keep: u32,
    /// The new port bytes where `port_keep` is zero (zero elsewhere).
    pub port_set: u32,
    /// The sum of `addr_set`'s four 16-bit words (an integer, not folded:
    /// at most 4 x 0xffff).
    pub addr_sum: u32,
    /// The sum of `port_set`'s two 16-bit words.
    pub port_sum: u32,
}

/// [`PlainNat`]'s keep masks per `NatAction` flag combination (bits 0..4:
/// source address, destination address, source port, destination port).
const PLAIN_NAT_KEEP: [(u64, u32); 16] = {
    const fn keep(on: bool) -> u8 {
        if on {
            0
        } else {
            0xff
        }
    }
    let mut t = [(0u64, 0u32); 16];
    let mut f = 0;
    while f < 16 {
        let fl = f as u8;
        let (s, d) = (
            keep(fl & NatAction::SRC_ADDR != 0),
            keep(fl & NatAction::DST_ADDR != 0),
        );
        let (sp, dp) = (
            keep(fl & NatAction::SRC_PORT != 0),
            keep(fl & NatAction::DST_PORT != 0),
        );
        t[f] = (
            u64::from_ne_bytes([s, s, s, s, d, d, d, d]),
            u32::from_ne_bytes([sp, sp, dp, dp]),
        );
        f += 1;
    }
    t
};

impl PlainNat {
    /// The action that writes, where `flags` (`NatAction` bits) ask,
    /// `addrs` (source << 32 | destination, host order) and `ports`
    /// (source << 16 | destination, host order).
    pub fn new(addrs: u64, ports: u32, flags: u8) -> Self {
        let (addr_keep, port_keep) = PLAIN_NAT_KEEP[usize::from(flags & 0xf)];
        let addr_set = u64::from_ne_bytes(addrs.to_be_bytes()) & !addr_keep;
        let port_set = u32::from_ne_bytes(ports.to_be_bytes()) & !port_keep;
        let words = |x: u64| (0..4).map(|i| (x >> (16 * i)) as u16 as u32).sum::<u32>();
        PlainNat {
            addr_keep,
            addr_set,
            port_keep,
            port_set,
            addr_sum: words(addr_set),
            port_sum: words(u64::from(port_set)),
        }
    }
}

impl From<&NatActionKey> for PlainNat {
    fn from(n: &NatActionKey) -> Self {
        PlainNat::new(
            u64::from(n.src_addr) << 32 | u64::from(n.dst_addr),
            u32::from(n.src_port) << 16 | u32::from(n.dst_port),
            n.flags,
        )
    }
}

/// [`apply_nat_in_place`] for a [`Plain`] packet (as [`parse_plain`]
/// read it, unchanged since) with a complete checksum: the same bytes, bit
/// for bit (the same RFC 1624 sums over both addresses and both ports; a
/// UDP checksum of 0 stays 0, a computed 0 goes out as all ones), from the
/// packet's first 28 (UDP) or 40 (TCP) bytes as fixed-size arrays and in
/// the wire's byte order — a one's-complement sum is the same in either
/// byte order, swapped (RFC 1071 section 2.B), so nothing is swapped and no
/// index is checked per field. The data path's common case
/// (`datapath::fast`); compared with [`apply_nat_in_place`] over random
/// packets in `tests/fast_path.rs`. A packet shorter than its headers is
/// left as it is (it cannot be one `parse_plain` accepted).
///
/// [`parse_plain`]: super::parse::parse_plain
#[inline]
pub fn apply_nat_plain(pkt: &mut [u8], plain: &Plain, nat: &PlainNat) {
    const UDP_CSUM: usize = ipv4::HEADER_LEN + udp::field::CHECKSUM.start;
    const TCP_CSUM: usize = ipv4::HEADER_LEN + tcp::field::CHECKSUM.start;
    if plain.protocol == IpProtocol::Udp.number() {
        if let Some(h) = pkt.first_chunk_mut::<{ UDP_CSUM + 2 }>() {
            nat_headers::<{ UDP_CSUM + 2 }, UDP_CSUM>(h, true, nat);
        }
    } else if let Some(h) = pkt.first_chunk_mut::<{ TCP_CSUM + 2 }>() {
        nat_headers::<{ TCP_CSUM + 2 }, TCP_CSUM>(h, false, nat);
    }
}

/// [`apply_nat_plain`] over the headers `h` (an IPv4 header without
/// options and the transport header's first `N - 20` bytes, the last two
/// of them its checksum at `CSUM`).
#[inline(always)]
fn nat_headers<const N: usize, const CSUM: usize>(h: &mut [u8; N], is_udp: bool, nat: &PlainNat) {
    const ADDRS: usize = ipv4::field::SRC_ADDR.start;
    const IP_CSUM: usize = ipv4::field::CHECKSUM.start;
    const PORTS: usize = ipv4::HEADER_LEN + tcp::field::SRC_PORT.start;
    const _: () = assert!(ipv4::field::DST_ADDR.start == ADDRS + 4);
    const _: () = assert!(tcp::field::DST_PORT.start == tcp::field::SRC_PORT.start + 2);
    let rd16 = |h: &[u8; N], at: usize| u16::from_ne_bytes([h[at], h[at + 1]]);
    let mut a = [0u8; 8];
    a.copy_from_slice(&h[ADDRS..ADDRS + 8]);
    let old_addrs = u64::from_ne_bytes(a);
    let mut p = [0u8; 4];
    p.copy_from_slice(&h[PORTS..PORTS + 4]);
    let old_ports = u32::from_ne_bytes(p);
    let addrs = old_addrs & nat.addr_keep | nat.addr_set;
    let ports = old_ports & nat.port_keep | nat.port_set;
    h[ADDRS..ADDRS + 8].copy_from_slice(&addrs.to_ne_bytes());
    h[PORTS..PORTS + 4].copy_from_slice(&ports.to_ne_bytes());
    // RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'), over every 16-bit word of
    // the addresses (and for the transport checksum the ports too). A
    // written word's m' is a word of the set bytes, summed once per action
    // (`addr_sum`, `port_sum`); `!old | keep` is its ~m there, and all
    // ones over a kept word, which is what ~m + m' of a kept word comes to
    // (one's-complement -0). So the sum equals, modulo 0xffff, the one
    // `checksum::delta32` takes word by word, and is 0 only when that one
    // is: taken here a 32-bit half at a time (2^16 = 1 mod 0xffff), it
    // folds to the same checksum.
    let x = !old_addrs | nat.addr_keep;
    let addr = u64::from(nat.addr_sum) + (x & 0xffff_ffff) + (x >> 32);
    let ip_csum = !checksum::fold_wide(addr + u64::from(!rd16(h, IP_CSUM)));
    h[IP_CSUM..IP_CSUM + 2].copy_from_slice(&ip_csum.to_ne_bytes());
    let old = rd16(h, CSUM);
    if is_udp && old == udp::NO_CHECKSUM {
        return;
    }
    let y = !old_ports | nat.port_keep;
    // In u64: `PlainNat`'s fields are public, and no value a caller puts
    // in `port_sum` may overflow here.
    let sum = addr
        + u64::from(nat.port_sum)
        + u64::from(y & 0xffff)
        + u64::from(y >> 16)
        + u64::from(!old);
    let mut new = !checksum::fold_wide(sum);
    if is_udp && new == udp::NO_CHECKSUM {
        // RFC 768: a computed 0 is sent as all ones (the same in either
        // byte order).
        new = 0xffff;
    }
    h[CSUM..CSUM + 2].copy_from_slice(&new.to_ne_bytes());
}

/// The identifier of an ICMP echo (NAT'ed like a port: a request's from
/// the source port, a reply's from the destination port), ICMP checksum
/// updated (RFC 1624; ICMP has no pseudo-header).
fn nat_echo_ident(
    pkt: &mut [u8],
    info: &PacketInfo,
    nat: &NatAction,
    out: &mut PacketInfo,
) -> Result<(), PacketError> {
    let seg = pkt
        .get_mut(info.l4_offset..info.total_len)
        .and_then(|s| s.first_chunk_mut::<{ icmp::HEADER_LEN }>())
        .ok_or(PacketError::TruncatedL4)?;
    let id = match seg[icmp::field::TYPE] {
        icmp::msg_type::ECHO_REQUEST if nat.flags & NatAction::SRC_PORT != 0 => nat.src_port,
        icmp::msg_type::ECHO_REPLY if nat.flags & NatAction::DST_PORT != 0 => nat.dst_port,
        _ => return Ok(()),
    };
    let mut old = [0u8; 2];
    old.copy_from_slice(&seg[icmp::field::ECHO_IDENT]);
    set_u16(seg, icmp::field::ECHO_IDENT, id);
    let c = checksum::update(
        get_u16(seg, icmp::field::CHECKSUM),
        &old,
        &seg[icmp::field::ECHO_IDENT],
    );
    set_u16(seg, icmp::field::CHECKSUM, c);
    out.key.src_port = id;
    out.key.dst_port = id;
    out.icmp_echo_id = Some(id);
    Ok(())
}

/// TCP sequence/ack adjust: seq += seq_delta when at or after initial_seq,
/// ack += ack_delta when at or after initial_ack (serial order, see
/// [`SeqNumber`]); every SACK block edge (RFC 2018 section 3) moves as an
/// ack would, since it acknowledges the same sequence space; checksum
/// updated incrementally. No-op for non-TCP packets and later fragments.
#[inline]
pub fn apply_seq_adjust(
    pkt: &mut [u8],
    info: &PacketInfo,
    adj: &SeqAdjustAction,
) -> Result<(), PacketError> {
    apply_seq_adjust_offload(pkt, info, adj, false)
}

/// [`apply_seq_adjust`] for a packet whose TCP checksum may be partial
/// (see [`apply_nat_offload`]): with `l4_partial` the numbers change but
/// the checksum field (a pseudo-header sum the NIC completes over them)
/// does not.
#[inline]
pub fn apply_seq_adjust_offload(
    pkt: &mut [u8],
    info: &PacketInfo,
    adj: &SeqAdjustAction,
    l4_partial: bool,
) -> Result<(), PacketError> {
    if IpProtocol::from(info.key.protocol) != IpProtocol::Tcp || info.fragment == Fragment::Later {
        return Ok(());
    }
    let seg = pkt
        .get_mut(info.l4_offset..info.total_len)
        .ok_or(PacketError::TruncatedL4)?;
    // The parse checked the data offset against the segment; checked again
    // here since the info may come from elsewhere.
    let hdr_len = seg
        .get(tcp::field::DATA_OFF)
        .map_or(0, |&b| tcp::header_len(b))
        .clamp(tcp::HEADER_LEN, seg.len().max(tcp::HEADER_LEN));
    let acked = adj.ack_delta != 0 && info.tcp_flags & tcp::flags::ACK != 0;
    if acked && hdr_len > tcp::HEADER_LEN {
        if let Some(hdr) = seg.get_mut(..hdr_len) {
            adjust_sack(hdr, adj, l4_partial);
        }
    }
    let hdr = seg
        .first_chunk_mut::<{ tcp::HEADER_LEN }>()
        .ok_or(PacketError::TruncatedL4)?;
    let mut old = [0u8; 8];
    old.copy_from_slice(&hdr[tcp::field::SEQ_ACK]);
    let seq = SeqNumber(get_u32(hdr, tcp::field::SEQ_NUM));
    let ack = SeqNumber(get_u32(hdr, tcp::field::ACK_NUM));
    if adj.seq_delta != 0 && seq.is_at_or_after(SeqNumber(adj.initial_seq)) {
        set_u32(hdr, tcp::field::SEQ_NUM, (seq + adj.seq_delta).0);
    }
    // Only packets carrying ACK have a meaningful acknowledgment number.
    if adj.ack_delta != 0
        && info.tcp_flags & tcp::flags::ACK != 0
        && ack.is_at_or_after(SeqNumber(adj.initial_ack))
    {
        set_u32(hdr, tcp::field::ACK_NUM, (ack + adj.ack_delta).0);
    }
    if !l4_partial {
        let csum = get_u16(hdr, tcp::field::CHECKSUM);
        let new = checksum::update(csum, &old, &hdr[tcp::field::SEQ_ACK]);
        set_u16(hdr, tcp::field::CHECKSUM, new);
    }
    Ok(())
}

/// Moves every SACK block edge (option kind 5, RFC 2018 section 3) at or
/// after `initial_ack` by `ack_delta`, in a TCP header with options
/// (`hdr` is the whole header); the checksum takes one delta over the
/// options (they start at an even offset, so any edge alignment sums
/// right). A malformed option list stops the walk where it breaks.
fn adjust_sack(hdr: &mut [u8], adj: &SeqAdjustAction, l4_partial: bool) {
    let mut before = [0u8; tcp::MAX_OPTIONS_LEN];
    let opts_len = (hdr.len() - tcp::HEADER_LEN).min(tcp::MAX_OPTIONS_LEN);
    before[..opts_len].copy_from_slice(&hdr[tcp::HEADER_LEN..tcp::HEADER_LEN + opts_len]);
    let mut changed = false;
    let mut i = 0;
    while i < opts_len {
        let opts = &mut hdr[tcp::HEADER_LEN..tcp::HEADER_LEN + opts_len];
        match opts[i] {
            tcp::option::END => break,
            tcp::option::NOP => i += 1,
            kind => {
                let Some(&len) = opts.get(i + 1) else { break };
                let len = len as usize;
                if len < 2 || i + len > opts_len {
                    break;
                }
                if kind == tcp::option::SACK {
                    let mut e = i + 2;
                    while e + 4 <= i + len {
                        let f = e..e + 4;
                        let edge = SeqNumber(get_u32(opts, f.clone()));
                        if edge.is_at_or_after(SeqNumber(adj.initial_ack)) {
                            set_u32(opts, f, (edge + adj.ack_delta).0);
                            changed = true;
                        }
                        e += 4;
                    }
                }
                i += len;
            }
        }
    }
    if changed && !l4_partial {
        let csum = get_u16(hdr, tcp::field::CHECKSUM);
        let d = checksum::delta(
            &before[..opts_len],
            &hdr[tcp::HEADER_LEN..tcp::HEADER_LEN + opts_len],
        );
        set_u16(hdr, tcp::field::CHECKSUM, checksum::apply(csum, d));
    }
}

/// Decrements the TTL with an incremental checksum update; false (packet
/// untouched) when the TTL would reach 0.
pub fn decrement_ttl(pkt: &mut [u8]) -> bool {
    let Some(ip) = pkt.first_chunk_mut::<{ ipv4::HEADER_LEN }>() else {
        return false;
    };
    if ip[ipv4::field::TTL] <= 1 {
        return false;
    }
    let mut old = [0u8; 2];
    old.copy_from_slice(&ip[ipv4::field::TTL_PROTOCOL]);
    ip[ipv4::field::TTL] -= 1;
    let csum = checksum::update(
        get_u16(ip, ipv4::field::CHECKSUM),
        &old,
        &ip[ipv4::field::TTL_PROTOCOL],
    );
    set_u16(ip, ipv4::field::CHECKSUM, csum);
    true
}

/// Writes IPv4 and UDP headers (28 bytes) into `out` for a UDP datagram of
/// `payload_len` bytes, as used to send a punt from a packet's headroom.
/// The UDP checksum is left 0 (optional in IPv4); the IP checksum is set.
/// Returns false when `out` is shorter than 28 bytes or the length overflows.
pub fn write_ipv4_udp_header(
    out: &mut [u8],
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload_len: usize,
    ip_id: u16,
) -> bool {
    let total = IPV4_UDP_HEADER_LEN + payload_len;
    if total > u16::MAX as usize {
        return false;
    }
    let Some((ip, rest)) = out
        .first_chunk_mut::<IPV4_UDP_HEADER_LEN>()
        .map(|h| h.split_at_mut(ipv4::HEADER_LEN))
    else {
        return false;
    };
    ip[ipv4::field::VER_IHL] = ipv4::ver_ihl(ipv4::HEADER_LEN);
    ip[ipv4::field::DSCP_ECN] = 0;
    set_u16(ip, ipv4::field::LENGTH, total as u16);
    set_u16(ip, ipv4::field::IDENT, ip_id);
    set_u16(ip, ipv4::field::FLG_OFF, ipv4::flags::DF);
    ip[ipv4::field::TTL] = ipv4::DEFAULT_TTL;
    ip[ipv4::field::PROTOCOL] = IpProtocol::Udp.number();
    set_u16(ip, ipv4::field::CHECKSUM, 0);
    ip[ipv4::field::SRC_ADDR].copy_from_slice(&src.ip().octets());
    ip[ipv4::field::DST_ADDR].copy_from_slice(&dst.ip().octets());
    let c = checksum::ipv4_header_checksum(ip);
    set_u16(ip, ipv4::field::CHECKSUM, c);
    set_u16(rest, udp::field::SRC_PORT, src.port());
    set_u16(rest, udp::field::DST_PORT, dst.port());
    set_u16(
        rest,
        udp::field::LENGTH,
        (udp::HEADER_LEN + payload_len) as u16,
    );
    set_u16(rest, udp::field::CHECKSUM, udp::NO_CHECKSUM);
    true
}

#[cfg(test)]
mod tests {
    use super::write_ipv4_udp_header;
    use crate::wire::{checksum, parse_ipv4, Fragment};
    use std::net::SocketAddrV4;

    #[test]
    fn golden_punt_header() {
        let mut b = [0xaau8; 30];
        let src: SocketAddrV4 = "192.0.2.1:1638".parse().unwrap();
        let dst: SocketAddrV4 = "198.51.100.9:4000".parse().unwrap();
        assert!(write_ipv4_udp_header(&mut b, src, dst, 2, 0x0102));
        #[rustfmt::skip]
        let expected: [u8; 28] = [
            0x45, 0x00, 0x00, 0x1e, 0x01, 0x02, 0x40, 0x00, 0x40, 0x11, // ver/ihl, tos, len 30, id, DF, ttl 64, UDP
            0x4d, 0x8f,                                                 // header checksum (computed independently)
            192, 0, 2, 1, 198, 51, 100, 9,                              // src, dst
            0x06, 0x66, 0x0f, 0xa0, 0x00, 0x0a, 0x00, 0x00,             // sport 1638, dport 4000, len 10, no checksum
        ];
        assert_eq!(b[..28], expected);
        assert_eq!(b[28..], [0xaa, 0xaa], "payload untouched");
        assert!(checksum::verify_ipv4(&b));
        let info = parse_ipv4(&b).unwrap();
        assert_eq!(
            (info.key.src_port, info.key.dst_port, info.payload_len),
            (1638, 4000, 2)
        );
        assert_eq!(info.fragment, Fragment::None);
        assert!(!write_ipv4_udp_header(&mut b[..27], src, dst, 0, 0));
        assert!(!write_ipv4_udp_header(&mut b, src, dst, 65_508, 0));
        assert!(write_ipv4_udp_header(&mut b, src, dst, 65_507, 0));
    }
}
