//! Golden bytes for every message type: hand-written per the field tables in
//! PROTOCOL.md; each parses to the expected segments and is emitted back to
//! the same bytes (into a buffer pre-filled with 0xA5, so any byte the
//! emitter forgot to write shows).

use affinity_api::{
    emit_prefix, interest, prefix_len, AdmissionAction, AffinityIdentifier, AffinityKey,
    AuthAlgorithm, Capabilities, DenyReason, EmitError, FixedAffinity, IdentityInfo,
    InterestCriteria, Key, MessageBuilder, MessageType, NatAction, ParseError, Segment,
    SeqAdjustAction, ServiceMessage, ServicePrecedence, Statistics, TsAdjustAction,
    WildcardAffinity,
};
use std::net::Ipv4Addr;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join(" ");
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).expect("hex byte"))
        .collect()
}

/// Re-emits a parsed message segment by segment with the same Required flags.
fn reemit(msg: &ServiceMessage<'_>) -> Vec<u8> {
    let mut b = MessageBuilder::new(msg.msg_type(), msg.sequence());
    for (s, req) in msg.segments() {
        b.push_with(s, req);
    }
    b.finish().unwrap()
}

fn check(golden: &[u8], t: MessageType, segs: &[Segment<'_>]) {
    let msg = ServiceMessage::parse(golden).unwrap_or_else(|e| panic!("{t:?}: {e}"));
    assert_eq!(msg.msg_type(), t);
    let got: Vec<Segment<'_>> = msg.segments().map(|(s, _)| s).collect();
    assert_eq!(got, segs, "{t:?} segments");
    assert_eq!(reemit(&msg), golden, "{t:?} re-emitted bytes");
}

const A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 5);
const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const BE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const M: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
/// The flow of the fixed-affinity examples: TCP 198.18.0.5:40000 -> 203.0.113.10:80.
const FLOW: AffinityKey = AffinityKey {
    protocol: 6,
    src_addr: A,
    dst_addr: VIP,
    src_port: 40000,
    dst_port: 80,
};

#[test]
fn type1_wildcard_update() {
    let g = hex("
        01 01 00 58 01 00 00 00  00 00 00 00 00 00 00 01   # v1 type1 len 88 IPv4; seq 1
        80 01 00 24                                        # wildcard affinity, required, 36
        06 00 00 00                                        # tcp, dispatch 0, info 0
        c6 12 00 00 ff fe 00 00                            # src 198.18.0.0 / 255.254.0.0
        cb 00 71 0a ff ff ff ff                            # dst 203.0.113.10 / 32
        00 00 00 50 00 00 00 00 00 00 00 03                # sport any, dport 80, forward 0, ttl 3
        00 03 00 0c 00 01 00 00 00 00 00 00                # affinity identifier: id 65536
        00 04 00 08 00 00 00 64                            # service precedence 100
        80 0d 00 10 c0 00 02 0a 06 76 80 00 01 00 00 00    # interest, required: 192.0.2.10:1654, mask ALL, DATA
    ");
    let segs = [
        Segment::WildcardAffinity(WildcardAffinity {
            key: AffinityKey {
                protocol: 6,
                src_addr: Ipv4Addr::new(198, 18, 0, 0),
                dst_addr: VIP,
                src_port: 0,
                dst_port: 80,
            },
            src_mask: Ipv4Addr::new(255, 254, 0, 0),
            dst_mask: Ipv4Addr::BROADCAST,
            dispatch_flags: 0,
            info_flags: 0,
            forward_addr: Ipv4Addr::UNSPECIFIED,
            ttl: 3,
        }),
        Segment::AffinityIdentifier(AffinityIdentifier {
            id: 65536,
            reason: 0,
        }),
        Segment::ServicePrecedence(ServicePrecedence {
            search_first: false,
            value: 100,
        }),
        Segment::InterestCriteria(InterestCriteria {
            address: M,
            port: 1654,
            mask: interest::ALL,
            flags: InterestCriteria::DATA,
        }),
    ];
    check(&g, MessageType::AffinityUpdateWildcard, &segs);
}

#[test]
fn type1_wildcard_update_with_admission_action() {
    let g = hex("
        01 01 00 5c 01 00 00 00  00 00 00 00 00 00 00 04   # v1 type1 len 92 IPv4; seq 4
        80 01 00 24                                        # wildcard affinity, required, 36
        06 00 00 00                                        # tcp, dispatch 0, info 0
        00 00 00 00 00 00 00 00                            # src any
        cb 00 71 0a ff ff ff ff                            # dst 203.0.113.10 / 32
        00 00 00 50 00 00 00 00 00 00 00 1e                # sport any, dport 80, forward 0, ttl 30
        00 14 00 18 01 00 00 00                            # admission, optional, 24: SYN_PROXY
        00 00 03 e8 00 00 07 d0                            # new: 1000/s, burst 2000
        00 00 00 00 00 00 00 00                            # known: defaults
        00 0d 00 10 00 00 00 00 00 00 00 02 01 00 00 00    # interest: owner, mask SYN, DATA
    ");
    let segs = [
        Segment::WildcardAffinity(WildcardAffinity {
            key: AffinityKey {
                protocol: 6,
                src_addr: Ipv4Addr::UNSPECIFIED,
                dst_addr: VIP,
                src_port: 0,
                dst_port: 80,
            },
            src_mask: Ipv4Addr::UNSPECIFIED,
            dst_mask: Ipv4Addr::BROADCAST,
            dispatch_flags: 0,
            info_flags: 0,
            forward_addr: Ipv4Addr::UNSPECIFIED,
            ttl: 30,
        }),
        Segment::AdmissionAction(AdmissionAction {
            flags: AdmissionAction::SYN_PROXY,
            new_rate: 1000,
            new_burst: 2000,
            known_rate: 0,
            known_burst: 0,
        }),
        Segment::InterestCriteria(InterestCriteria {
            address: Ipv4Addr::UNSPECIFIED,
            port: 0,
            mask: interest::SYN,
            flags: InterestCriteria::DATA,
        }),
    ];
    check(&g, MessageType::AffinityUpdateWildcard, &segs);
    let msg = ServiceMessage::parse(&g).unwrap();
    let e = msg.affinities().next().unwrap();
    let adm = e.admission.unwrap();
    assert_eq!(adm.new_budget(), (1000, 2000));
    assert_eq!(
        adm.known_budget(),
        (
            AdmissionAction::DEFAULT_KNOWN_RATE,
            AdmissionAction::DEFAULT_KNOWN_BURST
        )
    );
    // An undefined flag bit is malformed.
    let mut bad = g.clone();
    bad[16 + 36 + 4] = 0x02;
    assert!(ServiceMessage::parse(&bad).is_err());
}

#[test]
fn type2_fixed_update_with_packet() {
    let pkt = hex("45 00 00 14 00 00 00 00 40 06 00 00 c6 12 00 05 cb 00 71 0a");
    let g = hex("
        01 02 00 5c 01 00 00 00  00 00 00 00 00 00 00 02   # v1 type2 len 92; seq 2
        00 08 00 04                                        # agent interest data, empty
        80 02 00 1c                                        # fixed affinity, required, 28
        06 00 00 00 c6 12 00 05 cb 00 71 0a 9c 40 00 50    # tcp 198.18.0.5:40000 -> 203.0.113.10:80
        00 00 00 00 00 00 00 1e                            # forward 0, ttl 30
        80 0a 00 14 0a 00 00 00                            # NAT, required: flags dst addr|dst port
        00 00 00 00 c6 33 64 02 00 00 1f 90                # src 0, dst 198.51.100.2, sport 0, dport 8080
        80 0f 00 18                                        # IP packet, required, 24
        45 00 00 14 00 00 00 00 40 06 00 00 c6 12 00 05 cb 00 71 0a
    ");
    let key = FLOW;
    let segs = [
        Segment::FaInterestData(&[]),
        Segment::FixedAffinity(FixedAffinity {
            key,
            ttl: 30,
            ..Default::default()
        }),
        Segment::NatAction(NatAction {
            flags: NatAction::DST_ADDR | NatAction::DST_PORT,
            dst_addr: BE,
            dst_port: 8080,
            ..Default::default()
        }),
        Segment::IpPacket(&pkt),
    ];
    check(&g, MessageType::AffinityUpdateFixed, &segs);
}

/// A spliced SYN-proxied flow's forward affinity as a manager reinstalls
/// it: the sequence adjust (type 12) and the timestamp adjust (type 21,
/// optional, ECHO: the TSecr) apply to the fixed affinity before them.
#[test]
fn type2_fixed_update_with_sequence_and_timestamp_adjust() {
    let g = hex("
        01 02 00 4c 01 00 00 00  00 00 00 00 00 00 00 02   # v1 type2 len 76; seq 2
        80 02 00 1c                                        # fixed affinity, required, 28
        06 00 00 00 c6 12 00 05 cb 00 71 0a 9c 40 00 50    # tcp 198.18.0.5:40000 -> 203.0.113.10:80
        00 00 00 00 00 00 00 1e                            # forward 0, ttl 30
        80 0c 00 14                                        # sequence adjust, required, 20
        00 00 00 00 00 00 00 00                            # seq delta 0, initial seq 0
        12 34 56 78 9a bc de f1                            # ack delta 0x12345678 from 0x9abcdef1
        00 15 00 0c                                        # timestamp adjust, optional, 12
        fe dc ba 98 01 00 00 00                            # delta 0xfedcba98, flags ECHO, reserved
    ");
    let segs = [
        Segment::FixedAffinity(FixedAffinity {
            key: FLOW,
            ttl: 30,
            ..Default::default()
        }),
        Segment::SeqAdjustAction(SeqAdjustAction {
            seq_delta: 0,
            initial_seq: 0,
            ack_delta: 0x1234_5678,
            initial_ack: 0x9abc_def1,
        }),
        Segment::TsAdjustAction(TsAdjustAction {
            delta: 0xfedc_ba98,
            flags: TsAdjustAction::ECHO,
        }),
    ];
    check(&g, MessageType::AffinityUpdateFixed, &segs);
    // Built with the default flags, the same bytes.
    let mut b = MessageBuilder::new(MessageType::AffinityUpdateFixed, 2);
    for s in segs {
        b.push(s);
    }
    assert_eq!(b.finish().unwrap(), g);
    let msg = ServiceMessage::parse(&g).unwrap();
    let e = msg.affinities().next().unwrap();
    assert_eq!(e.ts_adjust.map(|t| t.delta), Some(0xfedc_ba98));
    assert_eq!(e.seq_adjust.map(|s| s.initial_ack), Some(0x9abc_def1));
    // An undefined flag bit is malformed.
    let mut bad = g.clone();
    bad[16 + 28 + 20 + 8] = 0x03;
    assert!(ServiceMessage::parse(&bad).is_err());
    // A reserved byte is ignored on receipt, as everywhere.
    let mut reserved = g.clone();
    reserved[16 + 28 + 20 + 9] = 0xff;
    assert!(ServiceMessage::parse(&reserved).is_ok());
    // Not allowed on a wildcard update (a per-flow offset).
    let mut w = g.clone();
    w[1] = 1;
    assert!(ServiceMessage::parse(&w).is_err());
    // A receiver that predates type 21 skips it (no Required flag): as an
    // unknown optional segment, which is how it parses an unknown type.
    let mut unknown = g.clone();
    unknown[16 + 28 + 20 + 1] = 0x7f;
    let m = ServiceMessage::parse(&unknown).unwrap();
    assert!(m
        .segments()
        .any(|(s, _)| matches!(s, Segment::Unknown { seg_type: 0x7f, .. })));
}

#[test]
fn type3_deny() {
    let g = hex("
        01 03 00 20 01 00 00 00  00 00 00 00 00 00 00 03   # v1 type3 len 32
        80 10 00 10 00 0b 00 02 00 00 00 00 00 00 00 07    # deny reason: type 11, code 2, seq 7
    ");
    check(
        &g,
        MessageType::AffinityUpdateDeny,
        &[Segment::DenyReason(DenyReason {
            denied_type: 11,
            code: 2,
            denied_sequence: 7,
        })],
    );
}

#[test]
fn type4_and_5_interest_matches() {
    for (t, b) in [
        (MessageType::InterestMatchWildcard, 4u8),
        (MessageType::InterestMatchFixed, 5),
    ] {
        let g = hex(&format!(
            "
            01 {b:02x} 00 40 01 00 00 00  00 00 00 00 00 00 00 2a  # len 64, seq 42
            00 03 00 0c 00 00 00 0a 80 02 00 00                # identifier 10, reason SYN|ALL
            80 02 00 1c 06 00 00 00 c6 12 00 05 cb 00 71 0a    # the packet's key
            9c 40 00 50 00 00 00 00 00 00 00 00
            00 09 00 08 c0 00 02 01                            # identity 192.0.2.1, no name
        "
        ));
        let key = FLOW;
        let segs = [
            Segment::AffinityIdentifier(AffinityIdentifier {
                id: 10,
                reason: interest::SYN | interest::ALL,
            }),
            Segment::FixedAffinity(FixedAffinity {
                key,
                ..Default::default()
            }),
            Segment::IdentityInfo(IdentityInfo {
                address: Ipv4Addr::new(192, 0, 2, 1),
                host_name: "",
            }),
        ];
        check(&g, t, &segs);
    }
}

#[test]
fn type6_ip_packet_only() {
    let g = hex("
        01 06 00 28 01 00 00 00  00 00 00 00 00 00 00 05   # len 40
        80 0f 00 18 45 00 00 14 00 00 00 00 40 11 00 00 c6 12 00 05 cb 00 71 0a
    ");
    let pkt = &g[20..];
    check(&g, MessageType::IpPacketOnly, &[Segment::IpPacket(pkt)]);
}

#[test]
fn extensions_16_to_19() {
    let hello = hex("
        01 10 00 20 01 00 00 00  00 00 00 00 00 00 00 01
        00 11 00 10 00 00 7c 00 00 10 00 00 00 00 40 00    # capabilities: actions 10-14, 1 M fixed, 16 k wildcards
    ");
    check(
        &hello,
        MessageType::AgentHello,
        &[Segment::Capabilities(Capabilities {
            actions: 0x7c00,
            fixed_capacity: 1 << 20,
            wildcard_capacity: 16384,
        })],
    );
    let keepalive = hex("01 11 00 10 01 00 00 00 00 00 00 00 00 00 00 09");
    check(&keepalive, MessageType::Keepalive, &[]);
    let dump = hex("
        01 12 00 1c 01 00 00 00  00 00 00 00 00 00 00 02
        00 03 00 0c 00 00 00 05 00 00 00 00
    ");
    check(
        &dump,
        MessageType::AffinityDumpRequest,
        &[Segment::AffinityIdentifier(AffinityIdentifier {
            id: 5,
            reason: 0,
        })],
    );
    let stats = hex("
        01 13 00 28 01 00 00 00  00 00 00 00 00 00 00 03
        00 12 00 18 c6 33 64 02 00 00 00 00 00 00 00 64 00 00 00 00 00 00 19 00  # 100 packets, 6400 bytes
    ");
    check(
        &stats,
        MessageType::StatisticsReport,
        &[Segment::Statistics(Statistics {
            forward_addr: BE,
            packets: 100,
            bytes: 6400,
        })],
    );
}

/// An activity report (type 19) whose pair carries the activity flags
/// (byte 3 of the fixed affinity, PROTOCOL.md "Activity reports"):
/// TRACKED | HANDSHAKE_COMPLETE = 0x03; and a hello advertising the
/// handshake marks (bit 0 of the capabilities' first word) with the
/// seed's actions and admission (0x0010_7c01).
#[test]
fn activity_report_pair_with_handshake_flags() {
    use affinity_api::{activity, capability};
    assert_eq!(activity::HANDSHAKE_COMPLETE, 0x01);
    assert_eq!(activity::TRACKED, 0x02);
    assert_eq!(capability::HANDSHAKE_MARKS, 0x0000_0001);
    let report = hex("
        01 13 00 5c 01 00 00 00  00 00 00 00 00 00 00 04   # v1 type19 len 92, seq 4
        00 12 00 18 00 00 00 00 00 00 00 00 00 00 00 03 00 00 00 00 00 00 00 b4  # summary: 3 packets, 180 bytes
        00 02 00 1c 06 00 00 03 c6 12 00 05 cb 00 71 0a    # fixed: tcp, flags 0 0, activity 0x03
        9c 40 00 50 00 00 00 00 00 00 00 1c                # 198.18.0.5:40000 -> 203.0.113.10:80, ttl 28
        00 12 00 18 00 00 00 00 00 00 00 00 00 00 00 03 00 00 00 00 00 00 00 b4  # 3 packets, 180 bytes
    ");
    let counts = Statistics {
        forward_addr: Ipv4Addr::UNSPECIFIED,
        packets: 3,
        bytes: 180,
    };
    check(
        &report,
        MessageType::StatisticsReport,
        &[
            Segment::Statistics(counts),
            Segment::FixedAffinity(FixedAffinity {
                key: FLOW,
                activity_flags: activity::TRACKED | activity::HANDSHAKE_COMPLETE,
                ttl: 28,
                ..Default::default()
            }),
            Segment::Statistics(counts),
        ],
    );
    // Bits past the defined ones were reserved (ignored on receipt): still
    // a valid segment, read as they are.
    let mut odd = report.clone();
    odd[47] = 0x83;
    let msg = ServiceMessage::parse(&odd).expect("undefined activity bits are not malformed");
    assert!(msg.segments().any(|(s, _)| matches!(
        s,
        Segment::FixedAffinity(f) if f.activity_flags & activity::DEFINED == 0x03
    )));
    let hello = hex("
        01 10 00 20 01 00 00 00  00 00 00 00 00 00 00 02
        00 11 00 10 00 10 7c 01 00 10 00 00 00 00 40 00    # capabilities: marks, 10-14, 20; 1 M fixed, 16 k wildcards
    ");
    check(
        &hello,
        MessageType::AgentHello,
        &[Segment::Capabilities(Capabilities {
            actions: 0x0010_7c00 | capability::HANDSHAKE_MARKS,
            fixed_capacity: 1 << 20,
            wildcard_capacity: 16384,
        })],
    );
}

#[test]
fn emit_prefix_writes_every_byte_in_front_of_the_packet() {
    let pkt = hex("45 00 00 14 00 00 00 00 40 06 00 00 c6 12 00 05 cb 00 71 0a");
    let segs = [Segment::AffinityIdentifier(AffinityIdentifier {
        id: 10,
        reason: interest::SYN,
    })];
    let n = prefix_len(None, &segs);
    let mut buf = vec![0xa5u8; n + pkt.len()];
    buf[n..].copy_from_slice(&pkt);
    assert_eq!(
        emit_prefix(
            &mut buf[..n],
            MessageType::InterestMatchWildcard,
            42,
            None,
            &segs,
            pkt.len()
        ),
        Ok(n)
    );
    let expected = hex("
        01 04 00 34 01 00 00 00  00 00 00 00 00 00 00 2a   # len 52 = 16 + 12 + 4 + 20
        00 03 00 0c 00 00 00 0a 00 02 00 00
        80 0f 00 18
        45 00 00 14 00 00 00 00 40 06 00 00 c6 12 00 05 cb 00 71 0a
    ");
    assert_eq!(buf, expected);
    // Interest matches need a fixed affinity too: this one is rejected by type rules.
    assert!(matches!(
        ServiceMessage::parse(&buf),
        Err(ParseError::MissingSegment { .. })
    ));
    // Too little headroom is an error, not a panic.
    assert!(matches!(
        emit_prefix(&mut [0u8; 8], MessageType::IpPacketOnly, 1, None, &[], 20),
        Err(EmitError::BufferTooSmall { .. })
    ));
}

#[test]
fn signed_message_layout() {
    let key = Key::new(7, AuthAlgorithm::KeyedMd5, b"k".to_vec());
    let bytes = MessageBuilder::signed(MessageType::Keepalive, 1, &key)
        .finish()
        .unwrap();
    // Header + security segment (4 + 4 + 16).
    assert_eq!(bytes.len(), 40);
    assert_eq!(&bytes[16..24], &hex("80 06 00 18 01 00 00 07")[..]);
    // MD5(key ‖ message-with-zero-digest ‖ key), computed independently.
    let mut zeroed = bytes.clone();
    zeroed[24..].fill(0);
    let digest = md5_reference(&[b"k".as_slice(), &zeroed, b"k"].concat());
    assert_eq!(&bytes[24..], &digest[..]);
}

/// A small independent MD5 (RFC 1321) so the keyed-MD5 test does not check
/// the implementation against itself.
fn md5_reference(msg: &[u8]) -> [u8; 16] {
    let s: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    let k: Vec<u32> = (0..64)
        .map(|i| ((i as f64 + 1.0).sin().abs() * 4294967296.0) as u32)
        .collect();
    let (mut a0, mut b0, mut c0, mut d0) =
        (0x67452301u32, 0xefcdab89u32, 0x98badcfeu32, 0x10325476u32);
    let mut m = msg.to_vec();
    m.push(0x80);
    while m.len() % 64 != 56 {
        m.push(0);
    }
    m.extend_from_slice(&((msg.len() as u64) * 8).to_le_bytes());
    for chunk in m.chunks(64) {
        let w: Vec<u32> = chunk
            .chunks(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let (mut a, mut b, mut c, mut d) = (a0, b0, c0, d0);
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(w[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(s[i]));
        }
        a0 = a0.wrapping_add(a);
        b0 = b0.wrapping_add(b);
        c0 = c0.wrapping_add(c);
        d0 = d0.wrapping_add(d);
    }
    let mut out = [0u8; 16];
    for (i, v) in [a0, b0, c0, d0].iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
    }
    out
}
