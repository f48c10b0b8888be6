//! Arbitrary packets through the data path with affinities installed from
//! the input: the first bytes choose wildcard/fixed affinities (as real
//! service messages), the rest are packets. Nothing may panic, and every
//! rewritten packet that verified before must still verify. Each packet
//! also drives an ICMP error quoting a packet of the installed flow's
//! reverse (so errors about a tracked flow are translated) and a train of
//! fragments of a packet of the flow, in an order, with duplicates and a
//! clock the input chooses; every fragment that leaves, at once or
//! released later, keeps a valid IP header checksum.
use affinity_api::{
    interest, AffinityKey, FixedAffinity, InterestCriteria, MessageBuilder, MessageType,
    NatAction, Segment, SeqAdjustAction, ServiceMessage, TsAdjustAction, WildcardAffinity,
    MANAGER_PORT,
};
use affinity_forwarding_agent::wire::{self, build, checksum};
use affinity_forwarding_agent::{Agent, AgentConfig, Disposition, PacketBuf, Worker};
use std::net::{Ipv4Addr, SocketAddrV4};

/// Packets taken from one input (each also drives an ICMP error and a
/// fragment train). Was 8: each packet costs up to 26 batches, and runs per
/// second matter more than packets per run (issue 16, item 12: 10 M runs
/// an hour on one core); the fuzzer reaches longer histories by mutation
/// of the installed affinities instead.
const PACKETS: usize = 4;

/// Fragment sends per train (one batch each): as many as a train has
/// fragments at most (16), so every order of a full train is reachable;
/// duplicates come from indices modulo a shorter train. Was 24.
const FRAGMENT_SENDS: usize = 16;

fn addr(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

/// One fuzz input through the data path (see the module text).
pub fn run(data: &[u8]) {
    if data.len() < 40 {
        return;
    }
    let (cfg, rest) = data.split_at(40);
    let agent = Agent::new(AgentConfig { fixed_capacity: 64, action_capacity: 64, wildcard_capacity: 16, ..Default::default() });
    let mut w = agent.worker();
    let mgr = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 10), MANAGER_PORT);
    let key = AffinityKey { protocol: [0u8, 6, 17][cfg[0] as usize % 3], src_addr: addr(&cfg[1..]), dst_addr: addr(&cfg[5..]), src_port: u16::from_be_bytes([cfg[9], cfg[10]]), dst_port: u16::from_be_bytes([cfg[11], cfg[12]]) };
    let mut b = MessageBuilder::new(MessageType::AffinityUpdateWildcard, 1);
    b.push(Segment::WildcardAffinity(WildcardAffinity { key, src_mask: addr(&cfg[13..]), dst_mask: addr(&cfg[17..]), dispatch_flags: cfg[21] & 1, info_flags: cfg[22] & 1, forward_addr: addr(&cfg[23..]), ttl: 60 }));
    b.push(Segment::InterestCriteria(InterestCriteria { address: Ipv4Addr::UNSPECIFIED, port: 0, mask: u16::from_be_bytes([cfg[27], cfg[28]]) & interest::DEFINED, flags: cfg[29] & 7 }));
    let nat = NatAction { flags: cfg[30] & 15, src_addr: addr(&cfg[31..]), dst_addr: addr(&cfg[35..]), src_port: 1000, dst_port: 2000 };
    b.push(Segment::NatAction(nat));
    if let Ok(m) = b.finish() {
        agent.handle_control(0, mgr, &m);
    }
    let mut f = MessageBuilder::new(MessageType::AffinityUpdateFixed, 2);
    f.push(Segment::FixedAffinity(FixedAffinity { key, ttl: 60, ..Default::default() }));
    f.push(Segment::NatAction(nat));
    f.push(Segment::SeqAdjustAction(SeqAdjustAction { seq_delta: cfg[39] as u32, ..Default::default() }));
    // Half the inputs also carry a timestamp adjust (segment 21), TSval or
    // TSecr by the low bit; on a UDP or protocol-0 key it is refused.
    if cfg[39] & 0x80 != 0 {
        f.push(Segment::TsAdjustAction(TsAdjustAction { delta: u32::from(cfg[39]).wrapping_mul(0x0101_0101), flags: cfg[39] & TsAdjustAction::ECHO }));
    }
    if let Ok(m) = f.finish() {
        agent.handle_control(0, mgr, &m);
    }
    let mut now = 1u64;
    for pkt in rest.split(|&b| b == 0xfe).take(PACKETS) {
        icmp_error_about(&mut w, &key, pkt);
        fragment_train(&mut w, &key, pkt, &mut now);
        // The common case's parser reads only what the full one reads the
        // same (datapath::fast relies on it).
        if let Some(pl) = wire::parse_plain(pkt) {
            let full = wire::parse_ipv4(pkt).expect("a plain packet parses in full");
            assert!(
                full.fragment == wire::Fragment::None
                    && full.header_len == 20
                    && pl.key() == full.key
                    && usize::from(pl.total_len) == full.total_len
                    && pl.tcp_flags == full.tcp_flags,
                "parse_plain disagrees with parse_ipv4"
            );
        }
        let before = wire::parse_ipv4(pkt).ok().filter(|i| checksum::verify_ipv4(pkt) && checksum::verify_l4(pkt, i));
        let mut buf = vec![0u8; 256 + pkt.len()];
        buf[256..].copy_from_slice(pkt);
        let mut out = [Disposition::Pass];
        let mut bufs = [PacketBuf::new(&mut buf, 256, pkt.len())];
        w.process_batch(1, &mut bufs, &mut out);
        // A punt ends where the packet's IP total length does (link padding
        // is cut off), as the PacketBuf's length now says.
        let end = 256 + bufs[0].len;
        if let (Disposition::Pass | Disposition::Forward(_), Some(_)) = (out[0], before) {
            let p = &buf[256..];
            let info = wire::parse_ipv4(p).expect("a rewritten packet still parses");
            assert!(checksum::verify_ipv4(p) && checksum::verify_l4(p, &info), "checksum broken by rewrite");
        }
        if let Disposition::Punt { start, .. } = out[0] {
            ServiceMessage::parse(&buf[start..end]).expect("punt is a valid message");
        }
        let _ = w.take_messages();
    }
    let _ = agent.tick(10_000_000_000);
}

/// A packet of `key`'s flow (TCP or UDP by its protocol; else ICMP echo)
/// carrying `payload`.
fn flow_packet(k: &AffinityKey, reverse: bool, payload: &[u8]) -> Vec<u8> {
    let (s, sp, d, dp) = if reverse {
        (k.dst_addr, k.dst_port, k.src_addr, k.src_port)
    } else {
        (k.src_addr, k.src_port, k.dst_addr, k.dst_port)
    };
    match k.protocol {
        6 => build::tcp(s, sp, d, dp, build::TCP_ACK, 1, 1, payload),
        17 => build::udp(s, sp, d, dp, payload),
        _ => build::icmp_echo(s, d, sp, dp, true, payload),
    }
}

fn ip_ok(p: &[u8]) -> bool {
    wire::parse_ipv4(p).is_ok() && checksum::verify_ipv4(p)
}

/// An ICMP error (type, code, quote length from `b`) toward the source of a
/// reverse-direction packet of the installed flow, quoting it.
fn icmp_error_about(w: &mut Worker, k: &AffinityKey, b: &[u8]) {
    if b.len() < 3 {
        return;
    }
    let q = flow_packet(k, true, &b[3..]);
    let qlen = (20 + b[2] as usize).min(q.len());
    let mut l4 = vec![[3u8, 11, 12, 5][b[0] as usize % 4], b[1], 0, 0, 0, 0, 5, 120];
    l4.extend_from_slice(&q[..qlen]);
    let c = !checksum::fold(checksum::sum16(&l4));
    l4[2..4].copy_from_slice(&c.to_be_bytes());
    let outer = build::udp(Ipv4Addr::new(192, 0, 2, 254), 0, k.dst_addr, 0, &l4[8..]);
    // Rebuild as ICMP: the UDP builder's IP header with protocol 1.
    let mut p = outer[..20].to_vec();
    p.extend_from_slice(&l4);
    let len = p.len() as u16;
    p[2..4].copy_from_slice(&len.to_be_bytes());
    p[9] = 1;
    p[10..12].copy_from_slice(&[0, 0]);
    let c = checksum::ipv4_header_checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    let icmp_ok = checksum::fold(checksum::sum16(&p[20..])) == 0xffff;
    let mut buf = p.clone();
    let n = buf.len();
    let mut out = [Disposition::Pass];
    w.process_batch(1, &mut [PacketBuf::new(&mut buf, 0, n)], &mut out);
    if let Disposition::Pass | Disposition::Forward(_) = out[0] {
        assert!(ip_ok(&buf), "outer IP checksum broken");
        if icmp_ok {
            assert_eq!(checksum::fold(checksum::sum16(&buf[20..])), 0xffff, "ICMP checksum broken");
        }
    }
    let _ = w.take_messages();
}

/// A packet of the flow cut into fragments at 8-byte boundaries from `b`,
/// sent in the order `b` gives (indices modulo the count, so duplicates
/// and missing ones), with the clock stepping by up to ~1 s per fragment.
fn fragment_train(w: &mut Worker, k: &AffinityKey, b: &[u8], now: &mut u64) {
    if b.len() < 4 {
        return;
    }
    let whole = flow_packet(k, false, &b[4..]);
    let payload_len = whole.len() - 20;
    let step = 8 * (1 + b[0] as usize % 8);
    let mut frags = Vec::new();
    let mut off = 0;
    while off < payload_len && frags.len() < 16 {
        let len = step.min(payload_len - off);
        frags.push(build::fragment(&whole, off, len, off + len < payload_len));
        off += len;
    }
    for &i in b.iter().skip(1).take(FRAGMENT_SENDS) {
        let f = &frags[i as usize % frags.len()];
        *now += (i as u64) << 22;
        let mut buf = f.clone();
        let n = buf.len();
        let mut out = [Disposition::Pass];
        w.process_batch(*now, &mut [PacketBuf::new(&mut buf, 0, n)], &mut out);
        // A first fragment too short for its transport header is
        // malformed and passed as it is; the others must stay valid.
        if let (Disposition::Pass | Disposition::Forward(_), true) = (out[0], ip_ok(f)) {
            assert!(ip_ok(&buf), "fragment IP checksum broken");
        }
        for (p, d) in w.take_released() {
            if let Disposition::Pass | Disposition::Forward(_) = d {
                assert!(ip_ok(&p), "released fragment IP checksum broken");
            }
        }
        let _ = w.take_messages();
    }
    w.poll_fragments(*now + 3_000_000_000);
    let _ = w.take_released();
}
