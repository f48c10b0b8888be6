//! Packets real networks send (issue 12): ICMP errors about translated
//! flows, fragments in any order, SACK under sequence adjust, partial
//! (offloaded) checksums, ICMP query flows. Each case is table-driven with
//! exact bytes; expected packets are built independently with every
//! checksum computed in full, so a byte comparison is a full recompute.

mod common;
use affinity_api::{
    AffinityKey, FixedAffinity, IdentityInfo, MessageBuilder, MessageType, NatAction, Segment,
    SeqAdjustAction,
};
use affinity_forwarding_agent::wire::{self, build, checksum};
use affinity_forwarding_agent::{Agent, AgentConfig, Counter, Disposition, PacketBuf, Worker};
use common::{from, wildcard_msg, Wc, MGR, SEC};
use std::net::Ipv4Addr;
use std::sync::Arc;

const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const SNAT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);
const ROUTER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);
const BROUTER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 254);
const C1: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 5);
const C2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 6);
const C3: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 7);
const B3: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);
const B1: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn key(protocol: u8, src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> AffinityKey {
    AffinityKey {
        protocol,
        src_addr: src.0,
        dst_addr: dst.0,
        src_port: src.1,
        dst_port: dst.1,
    }
}

fn nat_dst(a: Ipv4Addr, port: u16) -> NatAction {
    NatAction {
        flags: NatAction::DST_ADDR | NatAction::DST_PORT,
        dst_addr: a,
        dst_port: port,
        ..Default::default()
    }
}

fn nat_src(a: Ipv4Addr, port: u16) -> NatAction {
    NatAction {
        flags: NatAction::SRC_ADDR | NatAction::SRC_PORT,
        src_addr: a,
        src_port: port,
        ..Default::default()
    }
}

fn nat_both(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> NatAction {
    NatAction {
        flags: NatAction::SRC_ADDR
            | NatAction::SRC_PORT
            | NatAction::DST_ADDR
            | NatAction::DST_PORT,
        src_addr: src.0,
        src_port: src.1,
        dst_addr: dst.0,
        dst_port: dst.1,
    }
}

/// Fixed affinities (key, NAT, sequence adjust) as a manager sends them.
fn fixed_msg(seq: u64, entries: &[(AffinityKey, NatAction, Option<SeqAdjustAction>)]) -> Vec<u8> {
    let segments: Vec<Vec<Segment<'_>>> = entries
        .iter()
        .map(|(_, n, s)| {
            let adjust = s.map(Segment::SeqAdjustAction);
            [Segment::NatAction(*n)].into_iter().chain(adjust).collect()
        })
        .collect();
    let affinities: Vec<(AffinityKey, u32, &[Segment<'_>])> = entries
        .iter()
        .zip(&segments)
        .map(|((k, _, _), segs)| (*k, 30, &segs[..]))
        .collect();
    common::fixed_msg(MGR, seq, &affinities, None, None)
}

/// An agent with a catch-all wildcard (no actions) supporting `entries`.
fn agent_with(
    cfg: AgentConfig,
    entries: &[(AffinityKey, NatAction, Option<SeqAdjustAction>)],
) -> (Arc<Agent>, Worker) {
    let a = Agent::new(AgentConfig {
        fixed_capacity: 1024,
        agent_addr: Ipv4Addr::new(192, 0, 2, 1),
        ..cfg
    });
    let mut any = Wc::to_vip(1);
    any.key = key(0, (Ipv4Addr::UNSPECIFIED, 0), (Ipv4Addr::UNSPECIFIED, 0));
    any.dst_mask = Ipv4Addr::UNSPECIFIED;
    any.interest = None;
    a.handle_control(0, from(MGR), &wildcard_msg(MGR, 1, &[any], None));
    if !entries.is_empty() {
        let out = a.handle_control(0, from(MGR), &fixed_msg(2, entries));
        assert!(out.replies.is_empty(), "{:?}", out.replies);
        assert_eq!(a.fixed_count(0), entries.len());
    }
    let w = a.worker();
    (a, w)
}

fn run(w: &mut Worker, now: u64, pkt: &[u8]) -> (Disposition, Vec<u8>) {
    run_buf(w, now, pkt, false)
}

fn run_buf(w: &mut Worker, now: u64, pkt: &[u8], partial: bool) -> (Disposition, Vec<u8>) {
    let mut buf = pkt.to_vec();
    let len = buf.len();
    let mut p = PacketBuf::new(&mut buf, 0, len);
    if partial {
        p = p.with_partial_l4_checksum();
    }
    let mut pkts = [p];
    let mut out = [Disposition::Pass];
    w.process_batch(now, &mut pkts, &mut out);
    (out[0], buf)
}

/// An IPv4 header (id 0x4242, no flags, TTL 64) in front of `l4`, with its
/// checksum computed in full.
fn ip(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, l4: &[u8]) -> Vec<u8> {
    let mut p = vec![0x45, 0, 0, 0, 0x42, 0x42, 0, 0, 64, protocol, 0, 0];
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let len = (20 + l4.len()) as u16;
    p[2..4].copy_from_slice(&len.to_be_bytes());
    let c = checksum::ipv4_header_checksum(&p);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(l4);
    p
}

/// An ICMP error (type, code, the 4-byte rest) quoting `quoted`, all
/// checksums computed in full.
fn icmp_error(src: Ipv4Addr, dst: Ipv4Addr, ty: u8, code: u8, rest: u32, quoted: &[u8]) -> Vec<u8> {
    let mut l4 = vec![ty, code, 0, 0];
    l4.extend_from_slice(&rest.to_be_bytes());
    l4.extend_from_slice(quoted);
    let c = !checksum::fold(checksum::sum16(&l4));
    l4[2..4].copy_from_slice(&c.to_be_bytes());
    ip(src, dst, wire::ICMP, &l4)
}

/// What an error quotes of a packet: its IP header and first 8 bytes after.
fn quote(pkt: &[u8]) -> Vec<u8> {
    pkt[..28].to_vec()
}

/// The quoted TCP segment of the issue's error: header id 0x4242, total
/// length 1440, seq 0x2328 (only the first 8 bytes are quoted).
fn quoted_tcp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&src.1.to_be_bytes());
    l4.extend_from_slice(&dst.1.to_be_bytes());
    l4.extend_from_slice(&0x2328u32.to_be_bytes());
    let mut p = ip(src.0, dst.0, wire::TCP, &l4);
    p[2..4].copy_from_slice(&1440u16.to_be_bytes());
    p[10..12].copy_from_slice(&[0, 0]);
    let c = checksum::ipv4_header_checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p
}

fn udp_dns(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> Vec<u8> {
    build::udp(src.0, src.1, dst.0, dst.1, b"\x12\x34\x01\x00\x00\x01query")
}

/// Every checksum of an ICMP error verified by full recompute: outer IP,
/// ICMP, and the quoted IP header.
fn icmp_error_checksums_ok(p: &[u8]) -> bool {
    checksum::verify_ipv4(p)
        && checksum::fold(checksum::sum16(&p[20..])) == 0xffff
        && checksum::verify_ipv4(&p[28..])
}

/// The flows of the ICMP error cases: the issue's TCP flow, a UDP flow, and
/// a TCP flow with source NAT; both directions of each.
fn error_flows() -> Vec<(AffinityKey, NatAction, Option<SeqAdjustAction>)> {
    vec![
        // 198.18.0.5:43000 → VIP:80 ⇒ 198.51.100.3:8080.
        (key(6, (C1, 43000), (VIP, 80)), nat_dst(B3, 8080), None),
        (key(6, (B3, 8080), (C1, 43000)), nat_src(VIP, 80), None),
        // 198.18.0.7:5700 → VIP:53 ⇒ 198.51.100.1:53 (UDP).
        (key(17, (C3, 5700), (VIP, 53)), nat_dst(B1, 53), None),
        (key(17, (B1, 53), (C3, 5700)), nat_src(VIP, 53), None),
        // 198.18.0.6:43001 → VIP:80 ⇒ SNAT 203.0.113.20:20001 → 198.51.100.3:8080.
        (
            key(6, (C2, 43001), (VIP, 80)),
            nat_both((SNAT, 20001), (B3, 8080)),
            None,
        ),
        (
            key(6, (B3, 8080), (SNAT, 20001)),
            nat_both((VIP, 80), (C2, 43001)),
            None,
        ),
    ]
}

#[test]
fn icmp_errors_about_tracked_flows_are_translated_both_ways() {
    let issue_in = hex("45000038424200004001397ac00002fecb00710a03042c1300000578450005a042420000400630f4cb00710ac61200050050a7f800002328");
    let issue_out = hex("450000384242000040014b4ec00002fec633640303040cd300000578450005a042420000400642c8c6336403c61200051f90a7f800002328");
    // The helpers build the issue's bytes exactly (so the derived cases
    // below are built the same way).
    let frag_needed = |src, dst, q: &[u8]| icmp_error(src, dst, 3, 4, 1400, q);
    assert_eq!(
        frag_needed(ROUTER, VIP, &quote(&quoted_tcp((VIP, 80), (C1, 43000)))),
        issue_in
    );
    assert_eq!(
        frag_needed(ROUTER, B3, &quote(&quoted_tcp((B3, 8080), (C1, 43000)))),
        issue_out
    );
    let t = |src, dst, ty, code, q: Vec<u8>| icmp_error(src, dst, ty, code, 0, &quote(&q));
    #[rustfmt::skip]
    let table: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
        ("issue: frag-needed toward the VIP about a reply", issue_in.clone(), issue_out.clone()),
        ("time exceeded toward the VIP",
            t(ROUTER, VIP, 11, 0, quoted_tcp((VIP, 80), (C1, 43000))),
            t(ROUTER, B3, 11, 0, quoted_tcp((B3, 8080), (C1, 43000)))),
        ("parameter problem toward the VIP",
            icmp_error(ROUTER, VIP, 12, 0, 0x1400_0000, &quote(&quoted_tcp((VIP, 80), (C1, 43000)))),
            icmp_error(ROUTER, B3, 12, 0, 0x1400_0000, &quote(&quoted_tcp((B3, 8080), (C1, 43000))))),
        ("reverse: frag-needed from the backend side toward the client",
            frag_needed(BROUTER, C1, &quote(&quoted_tcp((C1, 43000), (B3, 8080)))),
            frag_needed(BROUTER, C1, &quote(&quoted_tcp((C1, 43000), (VIP, 80))))),
        ("reverse: host unreachable toward the client",
            t(BROUTER, C1, 3, 1, quoted_tcp((C1, 43000), (B3, 8080))),
            t(BROUTER, C1, 3, 1, quoted_tcp((C1, 43000), (VIP, 80)))),
        ("UDP: the client's port unreachable toward the VIP (quoted UDP checksum fixed)",
            t(C3, VIP, 3, 3, udp_dns((VIP, 53), (C3, 5700))),
            t(C3, B1, 3, 3, udp_dns((B1, 53), (C3, 5700)))),
        ("UDP reverse: time exceeded toward the client",
            t(BROUTER, C3, 11, 0, udp_dns((C3, 5700), (B1, 53))),
            t(BROUTER, C3, 11, 0, udp_dns((C3, 5700), (VIP, 53)))),
        ("source NAT: frag-needed from the backend side toward the SNAT address",
            frag_needed(BROUTER, SNAT, &quote(&quoted_tcp((SNAT, 20001), (B3, 8080)))),
            frag_needed(BROUTER, C2, &quote(&quoted_tcp((C2, 43001), (VIP, 80))))),
        ("source NAT: the backend itself reports (outer source translated too)",
            t(B3, SNAT, 3, 3, quoted_tcp((SNAT, 20001), (B3, 8080))),
            t(VIP, C2, 3, 3, quoted_tcp((C2, 43001), (VIP, 80)))),
        ("source NAT: time exceeded on the client side toward the VIP",
            t(ROUTER, VIP, 11, 0, quoted_tcp((VIP, 80), (C2, 43001))),
            t(ROUTER, B3, 11, 0, quoted_tcp((B3, 8080), (SNAT, 20001)))),
    ];
    let (a, mut w) = agent_with(AgentConfig::default(), &error_flows());
    for (i, (name, input, expected)) in table.iter().enumerate() {
        assert!(icmp_error_checksums_ok(input), "{name}: input");
        let (d, out) = run(&mut w, SEC, input);
        assert_eq!(d, Disposition::Pass, "{name}");
        assert_eq!(out, *expected, "{name}: bytes");
        assert!(icmp_error_checksums_ok(&out), "{name}: checksums");
        assert_eq!(
            a.counter(Counter::IcmpErrorTranslated),
            i as u64 + 1,
            "{name}"
        );
    }
    // The quoted UDP checksum, recomputed over the full datagram, is the
    // one the translated header needs.
    let q = udp_dns((B1, 53), (C3, 5700));
    assert!(common::checksums_ok(&q));
}

#[test]
fn icmp_errors_about_untracked_flows_pass_as_before() {
    let (a, mut w) = agent_with(AgentConfig::default(), &error_flows());
    let table = [
        // Another client port: no flow.
        icmp_error(
            ROUTER,
            VIP,
            3,
            4,
            1400,
            &quote(&quoted_tcp((VIP, 80), (C1, 43002))),
        ),
        // The flow's key not reversed (the error would go to the client).
        icmp_error(
            ROUTER,
            C1,
            3,
            4,
            1400,
            &quote(&quoted_tcp((C1, 43000), (VIP, 80))),
        ),
        // Quote cut short (7 bytes after its header).
        icmp_error(
            ROUTER,
            VIP,
            3,
            4,
            1400,
            &quoted_tcp((VIP, 80), (C1, 43000))[..27],
        ),
        // Not an error: a redirect (type 5) is never translated.
        icmp_error(
            ROUTER,
            VIP,
            5,
            1,
            0,
            &quote(&quoted_tcp((VIP, 80), (C1, 43000))),
        ),
    ];
    for (i, input) in table.iter().enumerate() {
        let (d, out) = run(&mut w, SEC, input);
        assert_eq!(d, Disposition::Pass, "case {i}");
        assert_eq!(out, *input, "case {i}: unchanged");
    }
    assert_eq!(a.counter(Counter::IcmpErrorTranslated), 0);
}

/// IPv4 + TCP (id 0x4242, ACK, window 0xfaf0) with `opts` (padded to 4
/// bytes with NOPs at the front), checksums computed in full.
fn tcp_opts(
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    seq: u32,
    ack: u32,
    opts: &[u8],
) -> Vec<u8> {
    let mut o = vec![1u8; (4 - opts.len() % 4) % 4];
    o.extend_from_slice(opts);
    let mut l4 = Vec::new();
    l4.extend_from_slice(&src.1.to_be_bytes());
    l4.extend_from_slice(&dst.1.to_be_bytes());
    l4.extend_from_slice(&seq.to_be_bytes());
    l4.extend_from_slice(&ack.to_be_bytes());
    l4.extend_from_slice(&[
        (((20 + o.len()) / 4) << 4) as u8,
        0x10,
        0xfa,
        0xf0,
        0,
        0,
        0,
        0,
    ]);
    l4.extend_from_slice(&o);
    let mut p = ip(src.0, dst.0, wire::TCP, &l4);
    let info = wire::parse_ipv4(&p).unwrap();
    let c = checksum::l4_checksum(&p, &info).unwrap();
    p[36..38].copy_from_slice(&c.to_be_bytes());
    p
}

fn sack(blocks: &[(u32, u32)]) -> Vec<u8> {
    let mut o = vec![5u8, (2 + 8 * blocks.len()) as u8];
    for (l, r) in blocks {
        o.extend_from_slice(&l.to_be_bytes());
        o.extend_from_slice(&r.to_be_bytes());
    }
    o
}

#[test]
fn sack_edges_move_with_the_ack() {
    const C14: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 14);
    let issue_in = hex("45000034424200004006482dc6336401c612000e1f90abe000000007000002008010faf0b9ff00000101050a0000030000000400");
    let issue_out = hex("450000344242000040063657cb00710ac612000e0050abe0000000070000019c8010faf0c89500000101050a0000029c0000039c");
    let back = SeqAdjustAction {
        ack_delta: (-100i32) as u32,
        initial_ack: 0x54,
        ..Default::default()
    };
    let fwd = SeqAdjustAction {
        ack_delta: 100,
        initial_ack: 0x54u32.wrapping_sub(100),
        ..Default::default()
    };
    let (_a, mut w) = agent_with(
        AgentConfig::default(),
        &[
            (
                key(6, (B1, 8080), (C14, 44000)),
                nat_src(VIP, 80),
                Some(back),
            ),
            (
                key(6, (C14, 44000), (VIP, 80)),
                nat_dst(B1, 8080),
                Some(fwd),
            ),
        ],
    );
    assert_eq!(
        tcp_opts((B1, 8080), (C14, 44000), 7, 0x200, &sack(&[(0x300, 0x400)])),
        issue_in,
        "the builder makes the issue's packet"
    );
    let s = |blocks: &[(u32, u32)]| sack(blocks);
    #[rustfmt::skip]
    let table: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
        ("issue: the server's SACK toward the client", issue_in.clone(), issue_out.clone()),
        ("three blocks, one before the adjust point (left as is)",
            tcp_opts((B1, 8080), (C14, 44000), 7, 0x200, &s(&[(0x300, 0x400), (0x500, 0x600), (0x10, 0x20)])),
            tcp_opts((VIP, 80), (C14, 44000), 7, 0x19c, &s(&[(0x29c, 0x39c), (0x49c, 0x59c), (0x10, 0x20)]))),
        ("edges at an odd offset (one NOP before, timestamps after)",
            tcp_opts((B1, 8080), (C14, 44000), 7, 0x200, &[&[1u8][..], &s(&[(0x300, 0x400)]), &[8, 10, 0, 0, 0, 1, 0, 0, 0, 2]].concat()),
            tcp_opts((VIP, 80), (C14, 44000), 7, 0x19c, &[&[1u8][..], &s(&[(0x29c, 0x39c)]), &[8, 10, 0, 0, 0, 1, 0, 0, 0, 2]].concat())),
        ("reverse: the client's SACK toward the backend",
            tcp_opts((C14, 44000), (VIP, 80), 9, 0x19c, &s(&[(0x29c, 0x39c)])),
            tcp_opts((C14, 44000), (B1, 8080), 9, 0x200, &s(&[(0x300, 0x400)]))),
    ];
    for (name, input, expected) in &table {
        let (d, out) = run(&mut w, SEC, input);
        assert_eq!(d, Disposition::Pass, "{name}");
        assert_eq!(out, *expected, "{name}: bytes");
        assert!(common::checksums_ok(&out), "{name}: checksums");
    }
    // The same at the wire level, edges wrapping past 2^32.
    let adj = SeqAdjustAction {
        ack_delta: 0x200,
        initial_ack: 0xffff_ff00,
        ..Default::default()
    };
    let mut p = tcp_opts(
        (B1, 1),
        (C14, 2),
        7,
        0xffff_ff10,
        &s(&[(0xffff_ff80, 0x0000_0010)]),
    );
    let info = wire::parse_ipv4(&p).unwrap();
    wire::apply_seq_adjust(&mut p, &info, &adj).unwrap();
    assert_eq!(
        p,
        tcp_opts((B1, 1), (C14, 2), 7, 0x110, &s(&[(0x180, 0x210)]))
    );
}

/// The UDP datagram of the issue's case 2: 2,008 bytes (8 header + 2,000
/// payload), IP id 0x1002, from 198.18.0.7:5700 to `dst`.
fn datagram(dst: (Ipv4Addr, u16)) -> Vec<u8> {
    let payload: Vec<u8> = (0..2000u32).map(|i| (i * 7) as u8).collect();
    let mut p = build::udp(C3, 5700, dst.0, dst.1, &payload);
    p[4..6].copy_from_slice(&0x1002u16.to_be_bytes());
    p[10..12].copy_from_slice(&[0, 0]);
    let c = checksum::ipv4_header_checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p
}

/// Reassembles fragments (any order) into the datagram, checking each
/// fragment's IP checksum; the UDP checksum then verifies in full.
fn reassemble(frags: &[Vec<u8>]) -> Vec<u8> {
    let mut body = vec![0u8; 0];
    let mut head = None;
    for f in frags {
        assert!(checksum::verify_ipv4(f), "fragment IP checksum");
        let off = (u16::from_be_bytes([f[6], f[7]]) & 0x1fff) as usize * 8;
        let end = off + f.len() - 20;
        if body.len() < end {
            body.resize(end, 0);
        }
        body[off..end].copy_from_slice(&f[20..]);
        if off == 0 {
            head = Some(f[..20].to_vec());
        }
    }
    let mut p = head.expect("first fragment");
    p.extend_from_slice(&body);
    let len = p.len() as u16;
    p[2..4].copy_from_slice(&len.to_be_bytes());
    p[6..8].copy_from_slice(&[0, 0]);
    p[10..12].copy_from_slice(&[0, 0]);
    let c = checksum::ipv4_header_checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p
}

fn udp_flow() -> Vec<(AffinityKey, NatAction, Option<SeqAdjustAction>)> {
    vec![
        (key(17, (C3, 5700), (VIP, 53)), nat_dst(B1, 53), None),
        (key(17, (B1, 53), (C3, 5700)), nat_src(VIP, 53), None),
    ]
}

/// Runs `order` (indices into `frags`) through `w` at `now`; returns every
/// fragment that left, in order, with its disposition (released ones right
/// after the packet that released them).
fn run_train(
    w: &mut Worker,
    now: u64,
    frags: &[Vec<u8>],
    order: &[usize],
) -> Vec<(Disposition, Vec<u8>)> {
    let mut out = Vec::new();
    for &i in order {
        let (d, p) = run(w, now, &frags[i]);
        if !matches!(d, Disposition::Consumed(_)) {
            out.push((d, p));
        }
        for (p, d) in w.take_released() {
            out.push((d, p));
        }
    }
    out
}

#[test]
fn fragments_in_any_order_follow_the_first() {
    let whole = datagram((VIP, 53));
    let expected_whole = datagram((B1, 53));
    // The issue's split: 1,480 bytes, then 528 at offset 1,480.
    let two = [
        build::fragment(&whole, 0, 1480, true),
        build::fragment(&whole, 1480, 528, false),
    ];
    let three = [
        build::fragment(&whole, 0, 800, true),
        build::fragment(&whole, 800, 800, true),
        build::fragment(&whole, 1600, 408, false),
    ];
    let overlapping = [
        build::fragment(&whole, 0, 800, true),
        build::fragment(&whole, 800, 800, true),
        build::fragment(&whole, 1200, 808, false),
    ];
    /// (name, fragments, arrival order, held, released)
    type Case<'f> = (&'static str, &'f [Vec<u8>], Vec<usize>, u64, u64);
    #[rustfmt::skip]
    let table: Vec<Case<'_>> = vec![
        ("issue: second before first", &two, vec![1, 0], 1, 1),
        ("in order", &two, vec![0, 1], 0, 0),
        ("reversed train of three", &three, vec![2, 1, 0], 2, 2),
        ("middle first", &three, vec![1, 0, 2], 1, 1),
        ("duplicated later fragment before and after the first", &two, vec![1, 1, 0, 1], 2, 2),
        ("duplicated first fragment", &two, vec![1, 0, 0], 1, 1),
        ("overlapping later fragments", &overlapping, vec![2, 1, 0], 2, 2),
    ];
    for (name, frags, order, held, released) in table {
        let (a, mut w) = agent_with(AgentConfig::default(), &udp_flow());
        let out = run_train(&mut w, SEC, frags, &order);
        assert_eq!(out.len(), order.len(), "{name}: every fragment leaves");
        for (d, p) in &out {
            assert_eq!(*d, Disposition::Pass, "{name}");
            assert_eq!(&p[16..20], &B1.octets(), "{name}: translated");
        }
        let got: Vec<Vec<u8>> = out.into_iter().map(|(_, p)| p).collect();
        assert_eq!(
            reassemble(&got),
            expected_whole,
            "{name}: the datagram, reassembled"
        );
        assert!(
            common::checksums_ok(&reassemble(&got)),
            "{name}: UDP checksum in full"
        );
        assert_eq!(a.counter(Counter::FragmentHeld), held, "{name}: held");
        assert_eq!(
            a.counter(Counter::FragmentReleased),
            released,
            "{name}: released"
        );
        assert_eq!(a.counter(Counter::FragmentExpired), 0, "{name}");
    }
}

#[test]
fn held_fragments_expire_and_the_cache_is_bounded() {
    let whole = datagram((VIP, 53));
    let later = build::fragment(&whole, 1480, 528, false);
    let first = build::fragment(&whole, 0, 1480, true);
    // Timeout: held, then dropped after 2 s; the first then finds nothing.
    let (a, mut w) = agent_with(AgentConfig::default(), &udp_flow());
    assert_eq!(
        run(&mut w, SEC, &later).0,
        Disposition::Consumed(Counter::FragmentHeld)
    );
    assert_eq!(run(&mut w, 2 * SEC, &first).0, Disposition::Pass);
    assert_eq!(w.take_released().len(), 1, "within the time: released");
    assert_eq!(
        run(&mut w, 10 * SEC, &later).0,
        Disposition::Consumed(Counter::FragmentHeld)
    );
    w.poll_fragments(12 * SEC + 1);
    assert_eq!(a.counter(Counter::FragmentExpired), 1);
    assert_eq!(run(&mut w, 12 * SEC + 2, &first).0, Disposition::Pass);
    assert!(w.take_released().is_empty(), "expired fragments are gone");

    // One datagram's room: another datagram's later fragment overflows and
    // goes on as before the cache (passed untranslated here).
    let (a, mut w) = agent_with(
        AgentConfig {
            fragment_cache: 1,
            ..Default::default()
        },
        &udp_flow(),
    );
    assert_eq!(
        run(&mut w, SEC, &later).0,
        Disposition::Consumed(Counter::FragmentHeld)
    );
    let mut other = later.clone();
    other[5] ^= 1; // another IP id
    other[10..12].copy_from_slice(&[0, 0]);
    let c = checksum::ipv4_header_checksum(&other[..20]);
    other[10..12].copy_from_slice(&c.to_be_bytes());
    let (d, out) = run(&mut w, SEC, &other);
    assert_eq!((d, out), (Disposition::Pass, other.clone()));
    assert_eq!(a.counter(Counter::FragmentOverflow), 1);
    assert_eq!(a.counter(Counter::FragmentNoState), 2);
    // A first fragment's decision evicts the oldest datagram.
    let mut other_first = first.clone();
    other_first[5] ^= 1;
    other_first[10..12].copy_from_slice(&[0, 0]);
    let c = checksum::ipv4_header_checksum(&other_first[..20]);
    other_first[10..12].copy_from_slice(&c.to_be_bytes());
    assert_eq!(run(&mut w, SEC, &other_first).0, Disposition::Pass);
    assert_eq!(
        a.counter(Counter::FragmentOverflow),
        2,
        "the held one evicted"
    );
    assert!(w.take_released().is_empty());

    // Per datagram: at most 64 held.
    let (a, mut w) = agent_with(AgentConfig::default(), &udp_flow());
    for _ in 0..65 {
        run(&mut w, SEC, &later);
    }
    assert_eq!(a.counter(Counter::FragmentHeld), 64);
    assert_eq!(a.counter(Counter::FragmentOverflow), 1);
    assert_eq!(run(&mut w, SEC, &first).0, Disposition::Pass);
    assert_eq!(w.take_released().len(), 64);
}

#[test]
fn a_new_flows_held_fragments_follow_its_first_back_from_the_manager() {
    for same_worker in [true, false] {
        let a = Agent::new(AgentConfig {
            fixed_capacity: 1024,
            ..Default::default()
        });
        a.handle_control(
            0,
            from(MGR),
            &wildcard_msg(MGR, 1, &[Wc::to_vip(10), Wc::from_backends(11)], None),
        );
        let mut w = a.worker();
        let whole = build::tcp(
            common::CLIENT,
            40000,
            VIP,
            80,
            build::TCP_ACK,
            1,
            1,
            &[7u8; 64],
        );
        let first = build::fragment(&whole, 0, 40, true);
        let later = build::fragment(&whole, 40, 44, false);
        // The first is punted (with its packet) to the manager; the later
        // one waits.
        let mut buf = common::buffer(&first, 256);
        let mut pkts = [PacketBuf::new(&mut buf, 256, first.len())];
        let mut out = [Disposition::Pass];
        w.process_batch(SEC, &mut pkts, &mut out);
        assert!(matches!(out[0], Disposition::Punt { .. }), "{:?}", out[0]);
        assert_eq!(
            run(&mut w, SEC, &later).0,
            Disposition::Consumed(Counter::FragmentHeld)
        );
        // The manager places the flow and returns the first fragment.
        let ret = a.handle_control(
            SEC,
            from(MGR),
            &common::flow_msg(MGR, 2, 40000, 30, None, Some(&first)),
        );
        assert_eq!(ret.returned.len(), 1);
        let mut buf = ret.returned[0].packet.clone();
        let len = buf.len();
        let mut other = a.worker();
        let ret_worker = if same_worker { &mut w } else { &mut other };
        let d = ret_worker.process_returned(
            SEC,
            &mut PacketBuf::new(&mut buf, 0, len),
            ret.returned[0].rank_limit,
        );
        assert_eq!(d, Disposition::Pass);
        assert_eq!(&buf[16..20], &common::BACKEND.octets());
        if !same_worker {
            assert!(w.take_released().is_empty(), "held on the first worker");
            w.poll_fragments(SEC + 1);
        }
        let rel = w.take_released();
        assert_eq!(rel.len(), 1, "same worker: {same_worker}");
        let (p, d) = &rel[0];
        assert_eq!(*d, Disposition::Pass);
        assert_eq!(
            p[..],
            build::fragment(
                &build::tcp(
                    common::CLIENT,
                    40000,
                    common::BACKEND,
                    8080,
                    build::TCP_ACK,
                    1,
                    1,
                    &[7u8; 64]
                ),
                40,
                44,
                false
            )[..],
            "same worker: {same_worker}"
        );
        assert_eq!(a.counter(Counter::FragmentReleased), 1);
    }
}

#[test]
fn icmp_echo_identifier_is_the_port_of_query_flows() {
    const SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);
    let id = 0x0100;
    let flows = vec![
        // Two clients with the same identifier, source NAT'ed to one address.
        (key(1, (C1, id), (SERVER, id)), nat_src(SNAT, 1000), None),
        (key(1, (C2, id), (SERVER, id)), nat_src(SNAT, 1001), None),
        (key(1, (SERVER, 1000), (SNAT, 1000)), nat_dst(C1, id), None),
        (key(1, (SERVER, 1001), (SNAT, 1001)), nat_dst(C2, id), None),
    ];
    let (a, mut w) = agent_with(AgentConfig::default(), &flows);
    let echo = |s, d, i, req| build::icmp_echo(s, d, i, 7, req, b"ping-payload");
    #[rustfmt::skip]
    let table = [
        ("client 1 request", echo(C1, SERVER, id, true), echo(SNAT, SERVER, 1000, true)),
        ("client 2 request", echo(C2, SERVER, id, true), echo(SNAT, SERVER, 1001, true)),
        ("reply to client 1", echo(SERVER, SNAT, 1000, false), echo(SERVER, C1, id, false)),
        ("reply to client 2", echo(SERVER, SNAT, 1001, false), echo(SERVER, C2, id, false)),
        // An error about client 2's request goes back to client 2 (REQ-4
        // with the identifier as the port).
        ("time exceeded about client 2's request",
            icmp_error(BROUTER, SNAT, 11, 0, 0, &quote(&echo(SNAT, SERVER, 1001, true))),
            icmp_error(BROUTER, C2, 11, 0, 0, &quote(&echo(C2, SERVER, id, true)))),
    ];
    for (name, input, expected) in &table {
        let (d, out) = run(&mut w, SEC, input);
        assert_eq!(d, Disposition::Pass, "{name}");
        assert_eq!(out, *expected, "{name}: bytes");
        assert!(checksum::verify_ipv4(&out), "{name}");
        assert_eq!(
            checksum::fold(checksum::sum16(&out[20..])),
            0xffff,
            "{name}: ICMP checksum"
        );
    }
    assert_eq!(a.counter(Counter::FixedHit), 4);
    let info = wire::parse_ipv4(&echo(C1, SERVER, 0xbeef, true)).unwrap();
    assert_eq!((info.key.src_port, info.key.dst_port), (0xbeef, 0xbeef));
}

/// The TCP/UDP checksum field as a NIC with checksum offload expects it:
/// the folded pseudo-header sum, not complemented.
fn with_partial_checksum(mut p: Vec<u8>) -> Vec<u8> {
    let info = wire::parse_ipv4(&p).unwrap();
    let l4 = p.len() - 20;
    let sum = checksum::sum16(&p[12..20]) + info.key.protocol as u32 + l4 as u32;
    let at = if info.key.protocol == wire::TCP {
        36
    } else {
        26
    };
    p[at..at + 2].copy_from_slice(&checksum::fold(sum).to_be_bytes());
    p
}

/// What the NIC does: the one's complement sum over the segment with the
/// field as it is, complemented.
fn complete(mut p: Vec<u8>) -> Vec<u8> {
    let info = wire::parse_ipv4(&p).unwrap();
    let at = if info.key.protocol == wire::TCP {
        36
    } else {
        26
    };
    let c = !checksum::fold(checksum::sum16(&p[20..]));
    p[at..at + 2].copy_from_slice(&c.to_be_bytes());
    p
}

#[test]
fn partial_checksums_stay_partial_through_nat() {
    let (_a, mut w) = agent_with(AgentConfig::default(), &{
        let mut f = error_flows();
        f[0].2 = Some(SeqAdjustAction {
            seq_delta: 1000,
            ..Default::default()
        });
        f
    });
    let payload = b"GET / HTTP/1.0\r\n\r\n";
    #[rustfmt::skip]
    let table = [
        ("TCP toward the backend, sequence adjusted",
            build::tcp(C1, 43000, VIP, 80, build::TCP_ACK, 5, 9, payload),
            build::tcp(C1, 43000, B3, 8080, build::TCP_ACK, 1005, 9, payload)),
        ("TCP reply",
            build::tcp(B3, 8080, C1, 43000, build::TCP_ACK, 9, 5, payload),
            build::tcp(VIP, 80, C1, 43000, build::TCP_ACK, 9, 5, payload)),
        ("UDP toward the backend",
            build::udp(C3, 5700, VIP, 53, payload),
            build::udp(C3, 5700, B1, 53, payload)),
    ];
    for (name, input, expected) in &table {
        let (d, out) = run_buf(&mut w, SEC, &with_partial_checksum(input.clone()), true);
        assert_eq!(d, Disposition::Pass, "{name}");
        assert_eq!(
            out,
            with_partial_checksum(expected.clone()),
            "{name}: a pseudo-header sum of the new addresses"
        );
        assert_eq!(
            complete(out),
            *expected,
            "{name}: the NIC's checksum is right"
        );
        // Without the flag the same packet's checksum is a full one.
        let (_, full) = run(&mut w, SEC, input);
        assert_eq!(full, *expected, "{name}: full checksum");
    }
}

#[test]
fn later_fragments_follow_every_kind_of_first_fragment_decision() {
    let to_vip = datagram((VIP, 53));
    let first = build::fragment(&to_vip, 0, 1480, true);
    let later = build::fragment(&to_vip, 1480, 528, false);
    let natted = datagram((B1, 53));
    let natted_later = build::fragment(&natted, 1480, 528, false);
    // (name, wildcard, expected disposition, expected later fragment)
    let mut nat_wc = Wc::to_vip(5);
    nat_wc.key = key(17, (Ipv4Addr::UNSPECIFIED, 0), (VIP, 53));
    nat_wc.interest = None;
    nat_wc.nat = Some(nat_dst(B1, 53));
    let mut adv_wc = Wc::to_vip(6);
    adv_wc.advertise = Some(affinity_api::AdvertiseAction {
        address: VIP,
        mask: None,
    });
    let mut other_wc = Wc::to_vip(7);
    other_wc.key.dst_addr = Ipv4Addr::new(203, 0, 113, 99);
    let drop = Disposition::Drop(Counter::DropAdvertised);
    #[rustfmt::skip]
    let table = [
        ("a wildcard's NAT (not punted)", nat_wc, Disposition::Pass, natted_later.clone()),
        ("no match: passed", other_wc, Disposition::Pass, later.clone()),
        ("advertised without a match: dropped", adv_wc, drop, later.clone()),
    ];
    for (name, wc, disposition, expected) in table {
        for later_first in [true, false] {
            let a = Agent::new(AgentConfig {
                fixed_capacity: 1024,
                ..Default::default()
            });
            a.handle_control(
                0,
                from(MGR),
                &wildcard_msg(MGR, 1, std::slice::from_ref(&wc), None),
            );
            let mut w = a.worker();
            let order: &[&Vec<u8>] = if later_first {
                &[&later, &first]
            } else {
                &[&first, &later]
            };
            let mut left = Vec::new();
            for p in order {
                let (d, out) = run(&mut w, SEC, p);
                if !matches!(d, Disposition::Consumed(_)) {
                    left.push((d, out));
                }
                left.extend(w.take_released().into_iter().map(|(p, d)| (d, p)));
            }
            assert_eq!(left.len(), 2, "{name}");
            let (d, out) = left.iter().find(|(_, p)| p[6..8] != [0x20, 0]).unwrap();
            assert_eq!(
                (*d, out),
                (disposition, &expected),
                "{name}, later first: {later_first}"
            );
            assert_eq!(
                left.iter().filter(|(d, _)| *d == disposition).count(),
                2,
                "{name}"
            );
        }
    }
}

#[test]
fn icmp_errors_go_where_their_flow_is_dispatched() {
    let hop = Ipv4Addr::new(192, 0, 2, 77);
    let (a, mut w) = agent_with(AgentConfig::default(), &[]);
    let mut b = MessageBuilder::new(MessageType::AffinityUpdateFixed, 3);
    b.push(Segment::IdentityInfo(IdentityInfo {
        address: MGR,
        host_name: "mgr",
    }));
    b.push(Segment::FixedAffinity(FixedAffinity {
        key: key(6, (C1, 43000), (VIP, 80)),
        ttl: 30,
        dispatch_flags: affinity_api::dispatch::FORWARD,
        forward_addr: hop,
        ..Default::default()
    }));
    b.push(Segment::NatAction(nat_dst(B3, 8080)));
    let out = a.handle_control(0, from(MGR), &b.finish().unwrap());
    assert!(out.replies.is_empty());
    let err = icmp_error(
        ROUTER,
        VIP,
        3,
        4,
        1400,
        &quote(&quoted_tcp((VIP, 80), (C1, 43000))),
    );
    let expected = icmp_error(
        ROUTER,
        B3,
        3,
        4,
        1400,
        &quote(&quoted_tcp((B3, 8080), (C1, 43000))),
    );
    let (d, out) = run(&mut w, SEC, &err);
    assert_eq!((d, out), (Disposition::Forward(hop), expected));
    // Expired: the error is no longer the flow's.
    let (d, out) = run(&mut w, 40 * SEC, &err);
    assert_eq!((d, out), (Disposition::Pass, err));
}

/// clients → VIP:53/udp, punting every packet (with data) to `MGR`.
fn udp_to_vip(id: u32) -> Wc {
    let mut w = Wc::to_vip(id);
    w.key.protocol = wire::UDP;
    w.key.dst_port = 53;
    w
}

/// The service message of punt `d` (in place in `buf`, or copied out by
/// `w`).
fn punted_message(w: &mut Worker, d: Disposition, buf: &[u8]) -> Vec<u8> {
    match d {
        Disposition::Punt { start, .. } => buf[start..].to_vec(),
        Disposition::Consumed(Counter::PuntCopiedOut) => {
            let mut m = w.take_messages();
            assert_eq!(m.len(), 1);
            m.remove(0).1
        }
        d => panic!("not punted: {d:?}"),
    }
}

/// A UDP packet marked partial (offload) whose checksum field is 0. In
/// IPv4, 0 in a UDP checksum means "none" (RFC 768), but a partial field
/// is no checksum: it holds the pseudo-header's one's complement sum for
/// the NIC to finish, and that sum is never 0 — the pseudo-header's
/// protocol (17) and length (≥ 8) are nonzero, and an end-around-carry sum
/// with a nonzero term is never +0 (RFC 1071 section 1, RFC 1624 section
/// 3: +0 arises only from all-zero data). So the field's 0 cannot have
/// come from a partial sum and does not ask for "no checksum"; the buffer's
/// offload mark asks for a checksum. Punted (the message carries no
/// offload request), the packet gets its checksum computed in full,
/// ignoring the field — never 0 (a computed 0 is sent as 0xffff) — as the
/// NIC would have given it, had the field held the right partial sum.
#[test]
fn a_partial_udp_checksum_field_of_zero_is_punted_with_the_full_checksum() {
    let a = Agent::new(AgentConfig {
        fixed_capacity: 1024,
        agent_addr: Ipv4Addr::new(192, 0, 2, 1),
        ..Default::default()
    });
    a.handle_control(0, from(MGR), &wildcard_msg(MGR, 1, &[udp_to_vip(1)], None));
    let mut w = a.worker();
    let vip = Ipv4Addr::new(203, 0, 113, 10);
    let client = Ipv4Addr::new(198, 18, 0, 5);
    let whole = build::udp(client, 40000, vip, 53, b"a query");
    let info = wire::parse_ipv4(&whole).unwrap();
    let full = checksum::l4_checksum(&whole, &info).unwrap();
    assert_ne!(full, 0);
    assert_eq!(&whole[26..28], &full.to_be_bytes());
    // The pseudo-header sum the field would hold: never 0.
    let pseudo = with_partial_checksum(whole.clone());
    assert_ne!(&pseudo[26..28], &[0, 0]);
    let mut zero = whole.clone();
    zero[26..28].fill(0);
    for headroom in [0usize, 256] {
        let mut buf = vec![0u8; headroom + zero.len()];
        buf[headroom..].copy_from_slice(&zero);
        let len = zero.len();
        let p = PacketBuf::new(&mut buf, headroom, len).with_partial_l4_checksum();
        let mut pkts = [p];
        let mut out = [Disposition::Pass];
        w.process_batch(SEC, &mut pkts, &mut out);
        let msg = punted_message(&mut w, out[0], &buf);
        let msg = affinity_api::ServiceMessage::parse(&msg).expect("a message");
        let got = msg.ip_packet().expect("the packet");
        assert_eq!(got, &whole[..], "headroom {headroom}: the full checksum");
        let ginfo = wire::parse_ipv4(got).unwrap();
        assert_eq!(
            checksum::l4_checksum(got, &ginfo),
            Some(u16::from_be_bytes([got[26], got[27]])),
            "headroom {headroom}: a full recompute's"
        );
        assert!(common::checksums_ok(got));
    }
}

/// A packet whose TCP/UDP checksum the NIC was to complete (partial:
/// VPP's af_packet input marks a local sender's packets so) is punted with
/// its checksum computed in full, in place and copied out alike: the
/// service message carries no offload request, and the manager hands the
/// packet back (returned packets, a SYN proxy's kept ACK) to be sent as a
/// new buffer. Failed before: the punted copy kept the pseudo-header sum,
/// the backend dropped the returned packet, and every SYN-proxied request
/// on VPP waited for a retransmission (p50 205 ms in the flood bench).
#[test]
fn a_partial_checksum_is_completed_before_the_packet_is_punted() {
    let a = Agent::new(AgentConfig {
        fixed_capacity: 1024,
        agent_addr: Ipv4Addr::new(192, 0, 2, 1),
        ..Default::default()
    });
    a.handle_control(
        0,
        from(MGR),
        &wildcard_msg(MGR, 1, &[Wc::to_vip(1), udp_to_vip(2)], None),
    );
    assert_eq!(a.wildcard_entries(0).len(), 2);
    let mut w = a.worker();
    let vip = Ipv4Addr::new(203, 0, 113, 10);
    let client = Ipv4Addr::new(198, 18, 0, 5);
    let tcp = build::tcp(client, 40000, vip, 80, build::TCP_SYN, 1000, 0, &[]);
    let udp = build::udp(client, 40000, vip, 53, b"a query");
    for (name, whole) in [("tcp", tcp), ("udp", udp)] {
        assert!(common::checksums_ok(&whole), "{name}");
        let partial = with_partial_checksum(whole.clone());
        assert!(!common::checksums_ok(&partial), "{name}: partial differs");
        for headroom in [0usize, 256] {
            let mut buf = vec![0u8; headroom + partial.len()];
            buf[headroom..].copy_from_slice(&partial);
            let len = partial.len();
            let p = PacketBuf::new(&mut buf, headroom, len).with_partial_l4_checksum();
            let mut pkts = [p];
            let mut out = [Disposition::Pass];
            w.process_batch(SEC, &mut pkts, &mut out);
            let msg = match out[0] {
                Disposition::Punt { start, .. } => buf[start..].to_vec(),
                Disposition::Consumed(Counter::PuntCopiedOut) => {
                    let mut m = w.take_messages();
                    assert_eq!(m.len(), 1, "{name}");
                    m.remove(0).1
                }
                d => panic!("{name} headroom {headroom}: {d:?}"),
            };
            let msg = affinity_api::ServiceMessage::parse(&msg).expect("a message");
            assert_eq!(
                msg.ip_packet(),
                Some(&whole[..]),
                "{name} headroom {headroom}: the whole checksum"
            );
        }
    }
}
