//! Packet views and rewrites: golden bytes, malformed inputs, and property
//! tests checking every incremental checksum against a full recompute.

use affinity_api::{NatAction, SeqAdjustAction};
use affinity_forwarding_agent::wire::{self, build, checksum, Fragment, PacketError};
use proptest::prelude::{any, prop_assert, prop_assert_eq, proptest, Strategy};
use std::net::Ipv4Addr;

fn ok(pkt: &[u8]) -> bool {
    let info = wire::parse_ipv4(pkt).unwrap();
    checksum::verify_ipv4(pkt) && checksum::verify_l4(pkt, &info)
}

#[test]
fn golden_udp_packet_and_dnat() {
    let p = build::udp(
        Ipv4Addr::new(198, 18, 0, 1),
        1000,
        Ipv4Addr::new(203, 0, 113, 10),
        53,
        b"hi",
    );
    #[rustfmt::skip]
    let expected: [u8; 30] = [
        0x45, 0x00, 0x00, 0x1e, 0x12, 0x34, 0x00, 0x00, 0x40, 0x11, // ver/ihl, tos, len 30, id, frag, ttl 64, UDP
        0x66, 0x7d,                                                 // header checksum (computed independently)
        198, 18, 0, 1, 203, 0, 113, 10,                             // src, dst
        0x03, 0xe8, 0x00, 0x35, 0x00, 0x0a,                         // sport 1000, dport 53, len 10
        0x91, 0x35,                                                 // UDP checksum (computed independently)
        b'h', b'i',
    ];
    assert_eq!(p, expected);
    let mut q = p.clone();
    let info = wire::parse_ipv4(&q).unwrap();
    let nat = NatAction {
        flags: NatAction::DST_ADDR | NatAction::DST_PORT,
        dst_addr: Ipv4Addr::new(198, 51, 100, 2),
        dst_port: 5353,
        ..Default::default()
    };
    let new = wire::apply_nat(&mut q, &info, &nat).unwrap();
    assert_eq!(new.key.dst_port, 5353);
    assert_eq!(
        q,
        build::udp(
            Ipv4Addr::new(198, 18, 0, 1),
            1000,
            Ipv4Addr::new(198, 51, 100, 2),
            5353,
            b"hi"
        )
    );
}

#[test]
fn udp_checksum_zero_stays_zero() {
    let mut p = build::udp_no_checksum(
        Ipv4Addr::new(198, 18, 0, 1),
        1,
        Ipv4Addr::new(198, 18, 0, 2),
        2,
        b"x",
    );
    let info = wire::parse_ipv4(&p).unwrap();
    let nat = NatAction {
        flags: NatAction::SRC_ADDR | NatAction::SRC_PORT,
        src_addr: Ipv4Addr::new(192, 0, 2, 9),
        src_port: 9,
        ..Default::default()
    };
    wire::apply_nat(&mut p, &info, &nat).unwrap();
    assert_eq!(&p[26..28], &[0, 0]);
    assert!(checksum::verify_ipv4(&p));
}

#[test]
fn icmp_echo_address_nat_keeps_checksums() {
    let mut p = build::icmp_echo(
        Ipv4Addr::new(198, 18, 0, 1),
        Ipv4Addr::new(203, 0, 113, 10),
        77,
        1,
        true,
        b"ping",
    );
    let info = wire::parse_ipv4(&p).unwrap();
    assert_eq!(info.icmp_echo_id, Some(77));
    let nat = NatAction {
        flags: NatAction::DST_ADDR,
        dst_addr: Ipv4Addr::new(198, 51, 100, 2),
        ..Default::default()
    };
    wire::apply_nat(&mut p, &info, &nat).unwrap();
    assert!(checksum::verify_ipv4(&p));
    assert_eq!(
        checksum::fold(checksum::sum16(&p[20..])),
        0xffff,
        "ICMP checksum untouched and valid"
    );
}

#[test]
fn malformed_inputs_give_the_right_error() {
    let good = build::tcp(
        Ipv4Addr::new(198, 18, 0, 1),
        1,
        Ipv4Addr::new(198, 18, 0, 2),
        2,
        build::TCP_SYN,
        0,
        0,
        b"abc",
    );
    for n in 0..good.len() {
        // Every truncation is rejected (the total length claims more).
        assert!(wire::parse_ipv4(&good[..n]).is_err(), "truncated at {n}");
    }
    type Mutation = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(Mutation, PacketError)> = vec![
        (Box::new(|p| p[0] = 0x65), PacketError::NotIpv4),
        (Box::new(|p| p[0] = 0x44), PacketError::BadHeaderLen),
        (Box::new(|p| p[0] = 0x4f), PacketError::BadHeaderLen),
        (
            Box::new(|p| p[2..4].copy_from_slice(&500u16.to_be_bytes())),
            PacketError::BadTotalLen,
        ),
        (
            Box::new(|p| p[2..4].copy_from_slice(&19u16.to_be_bytes())),
            PacketError::BadTotalLen,
        ),
        (Box::new(|p| p[32] = 0x40), PacketError::BadL4Header),
        (Box::new(|p| p[32] = 0xf0), PacketError::BadL4Header),
        (
            Box::new(|p| p[2..4].copy_from_slice(&30u16.to_be_bytes())),
            PacketError::TruncatedL4,
        ),
    ];
    for (i, (mutate, err)) in cases.iter().enumerate() {
        let mut p = good.clone();
        mutate(&mut p);
        assert_eq!(wire::parse_ipv4(&p), Err(*err), "case {i}");
        assert!(!err.reason().is_empty());
    }
    let mut u = build::udp(
        Ipv4Addr::new(198, 18, 0, 1),
        1,
        Ipv4Addr::new(198, 18, 0, 2),
        2,
        b"abc",
    );
    u[24..26].copy_from_slice(&100u16.to_be_bytes());
    assert_eq!(wire::parse_ipv4(&u), Err(PacketError::BadL4Header));
}

#[test]
fn ip_options_and_link_padding() {
    let base = build::tcp(
        Ipv4Addr::new(198, 18, 0, 1),
        1,
        Ipv4Addr::new(198, 18, 0, 2),
        2,
        build::TCP_ACK,
        7,
        8,
        b"data",
    );
    for words in 6..=15usize {
        let opt = (words - 5) * 4;
        let mut p = base[..20].to_vec();
        p[0] = 0x40 | words as u8;
        p.extend(std::iter::repeat_n(1u8, opt)); // NOP options
        p.extend_from_slice(&base[20..]);
        let total = p.len() as u16;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        let c = checksum::ipv4_header_checksum(&p[..words * 4]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p.extend_from_slice(&[0xee; 6]); // link padding past the total length
        let info = wire::parse_ipv4(&p).unwrap();
        assert_eq!(
            (info.header_len, info.payload_len, info.key.dst_port),
            (words * 4, 4, 2)
        );
        assert!(ok(&p));
        let nat = NatAction {
            flags: 0x0f,
            src_addr: Ipv4Addr::new(192, 0, 2, 1),
            dst_addr: Ipv4Addr::new(192, 0, 2, 2),
            src_port: 11,
            dst_port: 22,
        };
        wire::apply_nat(&mut p, &info, &nat).unwrap();
        assert!(ok(&p), "IHL {words}");
        assert_eq!(&p[p.len() - 6..], &[0xee; 6]);
    }
}

#[test]
fn fragments_have_no_ports_after_the_first() {
    let whole = build::udp(
        Ipv4Addr::new(198, 18, 0, 1),
        1,
        Ipv4Addr::new(198, 18, 0, 2),
        2,
        &[5u8; 100],
    );
    let first = build::fragment(&whole, 0, 48, true);
    let later = build::fragment(&whole, 48, 60, false);
    let i1 = wire::parse_ipv4(&first).unwrap();
    let i2 = wire::parse_ipv4(&later).unwrap();
    assert_eq!((i1.fragment, i1.key.src_port), (Fragment::First, 1));
    assert_eq!(
        (i2.fragment, i2.key.src_port, i2.key.dst_port),
        (Fragment::Later, 0, 0)
    );
    assert_ne!(
        wire::interest_bits(&i2) & affinity_api::interest::FRAGMENT,
        0
    );
}

#[test]
fn seq_adjust_respects_initial_numbers() {
    let mut p = build::tcp(
        Ipv4Addr::new(198, 18, 0, 1),
        1,
        Ipv4Addr::new(198, 18, 0, 2),
        2,
        build::TCP_ACK,
        1000,
        2000,
        b"x",
    );
    let info = wire::parse_ipv4(&p).unwrap();
    let adj = SeqAdjustAction {
        seq_delta: 10,
        initial_seq: 1000,
        ack_delta: (-5i32) as u32,
        initial_ack: 2001,
    };
    wire::apply_seq_adjust(&mut p, &info, &adj).unwrap();
    assert_eq!(u32::from_be_bytes(p[24..28].try_into().unwrap()), 1010);
    assert_eq!(
        u32::from_be_bytes(p[28..32].try_into().unwrap()),
        2000,
        "ack before initial_ack untouched"
    );
    assert!(ok(&p));
}

#[test]
fn ttl_decrement() {
    let mut p = build::tcp(
        Ipv4Addr::new(198, 18, 0, 1),
        1,
        Ipv4Addr::new(198, 18, 0, 2),
        2,
        0,
        0,
        0,
        b"",
    );
    assert!(wire::decrement_ttl(&mut p));
    assert_eq!(p[8], 63);
    assert!(checksum::verify_ipv4(&p));
    p[8] = 1;
    assert!(!wire::decrement_ttl(&mut p));
}

fn addr() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from)
}

fn packet() -> impl Strategy<Value = Vec<u8>> {
    (
        addr(),
        any::<u16>(),
        addr(),
        any::<u16>(),
        any::<u8>(),
        any::<u32>(),
        any::<u32>(),
        proptest::collection::vec(any::<u8>(), 0..64),
        0..3u8,
    )
        .prop_map(|(s, sp, d, dp, f, seq, ack, pl, kind)| match kind {
            0 => build::tcp(s, sp, d, dp, f & 0x3f, seq, ack, &pl),
            1 => build::udp(s, sp, d, dp, &pl),
            _ => build::udp_no_checksum(s, sp, d, dp, &pl),
        })
}

proptest! {
    #[test]
    fn nat_keeps_checksums_and_inverse_restores(p in packet(), flags in 0u8..16, sa in addr(), da in addr(), sp in any::<u16>(), dp in any::<u16>()) {
        let mut q = p.clone();
        let info = wire::parse_ipv4(&q).unwrap();
        let nat = NatAction { flags, src_addr: sa, dst_addr: da, src_port: sp, dst_port: dp };
        let new = wire::apply_nat(&mut q, &info, &nat).unwrap();
        prop_assert!(checksum::verify_ipv4(&q));
        prop_assert!(checksum::verify_l4(&q, &new));
        prop_assert_eq!(wire::parse_ipv4(&q).unwrap().key, new.key);
        let back = NatAction { flags, src_addr: info.key.src_addr, dst_addr: info.key.dst_addr, src_port: info.key.src_port, dst_port: info.key.dst_port };
        wire::apply_nat(&mut q, &new, &back).unwrap();
        // Equal up to the ±0 representation of a checksum.
        let norm = |v: &[u8]| { let mut v = v.to_vec(); for at in [10usize, 36] { if at + 1 < v.len() && v[at] == 0xff && v[at + 1] == 0xff { v[at] = 0; v[at + 1] = 0; } } v };
        prop_assert_eq!(norm(&q), norm(&p));
    }

    #[test]
    fn seq_adjust_keeps_checksum(p in packet(), d1 in any::<u32>(), i1 in any::<u32>(), d2 in any::<u32>(), i2 in any::<u32>()) {
        let mut q = p.clone();
        let info = wire::parse_ipv4(&q).unwrap();
        wire::apply_seq_adjust(&mut q, &info, &SeqAdjustAction { seq_delta: d1, initial_seq: i1, ack_delta: d2, initial_ack: i2 }).unwrap();
        prop_assert!(checksum::verify_l4(&q, &info));
    }

    #[test]
    fn icmp_error_translation_keeps_every_checksum(
        p in packet(), flags in 0u8..16, sa in addr(), da in addr(), sp in any::<u16>(),
        dp in any::<u16>(), ty in 0..3usize, quote_len in 8usize..80, from_peer in any::<bool>(),
        opts in 0..3usize,
    ) {
        // The error quotes `p` (a packet the error's destination sent), with
        // 0, 4 or 8 bytes of IP options in the quote.
        let mut q = p.clone();
        if opts > 0 {
            let n = 4 * opts;
            q.splice(20..20, std::iter::repeat_n(1u8, n));
            q[0] = 0x45 + opts as u8;
            let len = q.len() as u16;
            q[2..4].copy_from_slice(&len.to_be_bytes());
            q[10..12].copy_from_slice(&[0, 0]);
            let c = checksum::ipv4_header_checksum(&q[..20 + n]);
            q[10..12].copy_from_slice(&c.to_be_bytes());
        }
        let ihl = 20 + 4 * opts;
        let quoted = &q[..(ihl + quote_len).min(q.len())];
        let src = if from_peer { Ipv4Addr::from([q[16], q[17], q[18], q[19]]) } else { Ipv4Addr::new(192, 0, 2, 254) };
        let dst = Ipv4Addr::from([q[12], q[13], q[14], q[15]]);
        let mut l4 = vec![[3u8, 11, 12][ty], 0, 0, 0, 0, 0, 5, 120];
        l4.extend_from_slice(quoted);
        let c = !checksum::fold(checksum::sum16(&l4));
        l4[2..4].copy_from_slice(&c.to_be_bytes());
        let mut e = build::udp(src, 0, dst, 0, &[]);
        e.truncate(20);
        e[9] = wire::ICMP;
        e.extend_from_slice(&l4);
        let len = e.len() as u16;
        e[2..4].copy_from_slice(&len.to_be_bytes());
        e[10..12].copy_from_slice(&[0, 0]);
        let c = checksum::ipv4_header_checksum(&e[..20]);
        e[10..12].copy_from_slice(&c.to_be_bytes());

        let info = wire::parse_ipv4(&e).unwrap();
        let qp = wire::quoted_packet(&e, &info).unwrap();
        let pi = wire::parse_ipv4(&p).unwrap();
        prop_assert_eq!(qp.key, pi.key);
        let nat = NatAction { flags, src_addr: sa, dst_addr: da, src_port: sp, dst_port: dp };
        wire::translate_icmp_error(&mut e, &info, &qp, &nat).unwrap();
        prop_assert!(checksum::verify_ipv4(&e), "outer IP checksum");
        prop_assert_eq!(checksum::fold(checksum::sum16(&e[20..])), 0xffff, "ICMP checksum");
        prop_assert!(checksum::verify_ipv4(&e[28..]), "quoted IP checksum");
        // The quoted packet is the one the reversed flow's NAT makes: the
        // same translation applied to the packet itself, with roles
        // swapped (a NAT of the quoted direction).
        let swapped = NatAction {
            flags: (flags & 0b0101) << 1 | (flags & 0b1010) >> 1,
            src_addr: da, dst_addr: sa, src_port: dp, dst_port: sp,
        };
        let mut direct = q.clone();
        let qi = wire::parse_ipv4(&direct).unwrap();
        let after = wire::apply_nat(&mut direct, &qi, &swapped).unwrap();
        let n = quoted.len();
        let got = wire::quoted_packet(&e, &wire::parse_ipv4(&e).unwrap()).unwrap();
        prop_assert_eq!(got.key, after.key);
        // Bytes equal where both rewrite (the TCP checksum only when quoted).
        let tcp_csum_quoted = pi.key.protocol != wire::TCP || quote_len >= 18;
        if tcp_csum_quoted {
            prop_assert_eq!(&e[28..28 + n], &direct[..n]);
        }
        if from_peer && flags & NatAction::SRC_ADDR != 0 {
            prop_assert_eq!(&e[12..16], &sa.octets());
        }
        if flags & NatAction::DST_ADDR != 0 {
            prop_assert_eq!(&e[16..20], &da.octets());
        }
    }

    #[test]
    fn sack_adjust_keeps_checksum(
        p in packet(), d in any::<u32>(), i in any::<u32>(),
        edges in proptest::collection::vec(any::<u32>(), 0..8), lead in 0..3usize,
    ) {
        let info = wire::parse_ipv4(&p).unwrap();
        if info.key.protocol != wire::TCP {
            return Ok(());
        }
        // Re-build with NOPs (shifting the edges' alignment) and a SACK option.
        let blocks = edges.len() / 2;
        let mut opts = vec![1u8; lead];
        if blocks > 0 {
            opts.push(5);
            opts.push((2 + 8 * blocks) as u8);
            for e in &edges[..2 * blocks] {
                opts.extend_from_slice(&e.to_be_bytes());
            }
        }
        while opts.len() % 4 != 0 {
            opts.push(0);
        }
        opts.truncate(40);
        let mut q = p[..40].to_vec();
        q.extend_from_slice(&opts);
        q.extend_from_slice(&p[40..]);
        q[32] = (((20 + opts.len()) / 4) << 4) as u8;
        q[33] |= 0x10;
        let len = q.len() as u16;
        q[2..4].copy_from_slice(&len.to_be_bytes());
        q[10..12].copy_from_slice(&[0, 0]);
        let c = checksum::ipv4_header_checksum(&q[..20]);
        q[10..12].copy_from_slice(&c.to_be_bytes());
        let qi = wire::parse_ipv4(&q).unwrap();
        let c = checksum::l4_checksum(&q, &qi).unwrap();
        q[36..38].copy_from_slice(&c.to_be_bytes());
        let adj = SeqAdjustAction { ack_delta: d, initial_ack: i, ..Default::default() };
        let before = q.clone();
        wire::apply_seq_adjust(&mut q, &qi, &adj).unwrap();
        prop_assert!(checksum::verify_l4(&q, &qi));
        // Every edge moved exactly when at or after the initial ack.
        let start = 40 + lead + 2;
        for b in 0..2 * blocks {
            let at = start + 4 * b;
            if at + 4 > 40 + opts.len() { break; }
            let old = u32::from_be_bytes(before[at..at + 4].try_into().unwrap());
            let new = u32::from_be_bytes(q[at..at + 4].try_into().unwrap());
            let moved = d != 0 && wire::SeqNumber(old).is_at_or_after(wire::SeqNumber(i));
            prop_assert_eq!(new, if moved { old.wrapping_add(d) } else { old });
        }
    }

    #[test]
    fn partial_checksum_nat_is_the_pseudo_header_sum(p in packet(), flags in 0u8..16, sa in addr(), da in addr(), sp in any::<u16>(), dp in any::<u16>()) {
        let info = wire::parse_ipv4(&p).unwrap();
        let pseudo = |v: &[u8]| {
            let s = checksum::sum16(&v[12..20]) + info.key.protocol as u32 + (v.len() - 20) as u32;
            checksum::fold(s)
        };
        let at = if info.key.protocol == wire::TCP { 36 } else { 26 };
        let mut q = p.clone();
        let ps = pseudo(&q);
        q[at..at + 2].copy_from_slice(&ps.to_be_bytes());
        let nat = NatAction { flags, src_addr: sa, dst_addr: da, src_port: sp, dst_port: dp };
        wire::apply_nat_offload(&mut q, &info, &nat, true).unwrap();
        prop_assert!(checksum::verify_ipv4(&q));
        // Equal as one's complement numbers (0 and 0xffff are the same).
        let got = u16::from_be_bytes([q[at], q[at + 1]]);
        let want = pseudo(&q);
        prop_assert!(got == want || (got, want) == (0, 0xffff) || (got, want) == (0xffff, 0), "{:04x} vs {:04x}", got, want);
    }

    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
        if let Ok(info) = wire::parse_ipv4(&bytes) {
            prop_assert!(info.total_len <= bytes.len());
            let mut b = bytes.clone();
            let _ = wire::apply_nat(&mut b, &info, &NatAction { flags: 0x0f, ..Default::default() });
            if let Some(q) = wire::quoted_packet(&b, &info) {
                let _ = wire::translate_icmp_error(&mut b, &info, &q, &NatAction { flags: 0x0f, ..Default::default() });
            }
        }
    }
}
