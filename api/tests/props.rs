//! Property tests (encode/parse round trips, tamper detection, no panics on
//! arbitrary input), error variants, replay window and key rotation.

use affinity_api::{
    interest, seg, AdvertiseAction, AffinityIdentifier, AffinityKey, AuthAlgorithm, AuthError,
    AuthPolicy, BackupPrecedence, Capabilities, FixedAffinity, InterestCriteria, Key,
    MessageBuilder, MessageType, NatAction, ParseError, ReplayWindow, Security, Segment,
    SegmentErrorKind, SeqAdjustAction, ServiceMessage, ServicePrecedence, TsAdjustAction,
    WildcardAffinity, REQUIRED_FLAG,
};
use proptest::prelude::{any, prop_assert, prop_assert_eq, prop_oneof, proptest, Strategy};
use std::net::Ipv4Addr;

fn addr() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from)
}

fn key() -> impl Strategy<Value = AffinityKey> {
    (any::<u8>(), addr(), addr(), any::<u16>(), any::<u16>()).prop_map(
        |(protocol, src_addr, dst_addr, src_port, dst_port)| AffinityKey {
            protocol,
            src_addr,
            dst_addr,
            src_port,
            dst_port,
        },
    )
}

#[derive(Debug, Clone)]
enum Owned {
    Wildcard(WildcardAffinity),
    Fixed(FixedAffinity),
    Id(AffinityIdentifier),
    Prec(ServicePrecedence),
    Backup(BackupPrecedence),
    Nat(NatAction),
    Adv(AdvertiseAction),
    Seq(SeqAdjustAction),
    Interest(InterestCriteria),
}

impl Owned {
    fn seg(&self) -> Segment<'static> {
        match *self {
            Owned::Wildcard(w) => Segment::WildcardAffinity(w),
            Owned::Fixed(f) => Segment::FixedAffinity(f),
            Owned::Id(i) => Segment::AffinityIdentifier(i),
            Owned::Prec(p) => Segment::ServicePrecedence(p),
            Owned::Backup(b) => Segment::BackupPrecedence(b),
            Owned::Nat(n) => Segment::NatAction(n),
            Owned::Adv(a) => Segment::AdvertiseAction(a),
            Owned::Seq(s) => Segment::SeqAdjustAction(s),
            Owned::Interest(c) => Segment::InterestCriteria(c),
        }
    }
}

fn per_affinity() -> impl Strategy<Value = Owned> {
    prop_oneof![
        (any::<u32>(), any::<u16>())
            .prop_map(|(id, reason)| Owned::Id(AffinityIdentifier { id, reason })),
        (any::<bool>(), any::<u16>()).prop_map(|(search_first, value)| Owned::Prec(
            ServicePrecedence {
                search_first,
                value
            }
        )),
        any::<u16>().prop_map(|value| Owned::Backup(BackupPrecedence { value })),
        (0u8..16, addr(), addr(), any::<u16>(), any::<u16>()).prop_map(
            |(flags, src_addr, dst_addr, src_port, dst_port)| Owned::Nat(NatAction {
                flags,
                src_addr,
                dst_addr,
                src_port,
                dst_port
            })
        ),
        (addr(), proptest::option::of(addr()))
            .prop_map(|(address, mask)| Owned::Adv(AdvertiseAction { address, mask })),
        (any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(a, b, c, d)| {
            Owned::Seq(SeqAdjustAction {
                seq_delta: a,
                initial_seq: b,
                ack_delta: c,
                initial_ack: d,
            })
        }),
        (addr(), any::<u16>(), any::<u16>(), 0u8..8).prop_map(|(address, port, mask, flags)| {
            Owned::Interest(InterestCriteria {
                address,
                port,
                mask: mask & interest::DEFINED,
                flags,
            })
        }),
    ]
}

fn update() -> impl Strategy<Value = (bool, Vec<Owned>)> {
    (
        any::<bool>(),
        proptest::collection::vec(
            (
                key(),
                addr(),
                addr(),
                // Dispatch bit 0 and information bit 0: the only defined ones.
                0u8..4,
                any::<u32>(),
                proptest::collection::vec(per_affinity(), 0..4),
            ),
            1..5,
        ),
    )
        .prop_map(|(wild, groups)| {
            let mut v = Vec::new();
            for (k, m1, m2, flags, ttl, rest) in groups {
                v.push(if wild {
                    Owned::Wildcard(WildcardAffinity {
                        key: k,
                        src_mask: m1,
                        dst_mask: m2,
                        dispatch_flags: flags & 1,
                        info_flags: flags >> 1,
                        forward_addr: m1,
                        ttl,
                    })
                } else {
                    Owned::Fixed(FixedAffinity {
                        key: k,
                        dispatch_flags: flags & 1,
                        info_flags: flags >> 1,
                        activity_flags: (ttl >> 8) as u8,
                        forward_addr: m1,
                        ttl,
                    })
                });
                v.extend(rest);
            }
            (wild, v)
        })
}

proptest! {
    #[test]
    fn build_parse_round_trip((wild, segs) in update(), seq in any::<u64>(), signed in any::<bool>()) {
        let t = if wild { MessageType::AffinityUpdateWildcard } else { MessageType::AffinityUpdateFixed };
        let key = Key::new(3, AuthAlgorithm::HmacSha256, b"secret".to_vec());
        let mut b = if signed { MessageBuilder::signed(t, seq, &key) } else { MessageBuilder::new(t, seq) };
        for s in &segs {
            b.push(s.seg());
        }
        let bytes = b.finish().unwrap();
        let msg = ServiceMessage::parse(&bytes).unwrap();
        prop_assert_eq!(msg.sequence(), seq);
        let got: Vec<Segment<'_>> = msg.segments().map(|(s, _)| s).filter(|s| !matches!(s, Segment::Security(_))).collect();
        let want: Vec<Segment<'_>> = segs.iter().map(Owned::seg).collect();
        prop_assert_eq!(got, want);
        // Grouping: one entry per affinity, each with the last per-affinity values after it.
        prop_assert_eq!(msg.affinities().count(), segs.iter().filter(|s| matches!(s, Owned::Wildcard(_) | Owned::Fixed(_))).count());
        if signed {
            let policy = AuthPolicy::with_key(key);
            prop_assert!(policy.verify(&msg, 0).is_ok());
        }
    }

    /// A spliced flow's two fixed affinities, each with its sequence and
    /// timestamp adjust (an update-fixed or an agent's splice report),
    /// round-trip and group per affinity.
    #[test]
    fn timestamp_adjust_round_trip(
        k in key(),
        seq in any::<[u32; 4]>(),
        deltas in any::<(u32, u32)>(),
        report in any::<bool>(),
    ) {
        let t = if report { MessageType::StatisticsReport } else { MessageType::AffinityUpdateFixed };
        let mut segs = Vec::new();
        if report {
            segs.push(Segment::Statistics(Default::default()));
        }
        for (key, delta, flags) in [(k, deltas.0, TsAdjustAction::ECHO), (k.reversed(), deltas.1, 0)] {
            segs.push(Segment::FixedAffinity(FixedAffinity { key, ttl: 30, ..Default::default() }));
            segs.push(Segment::SeqAdjustAction(SeqAdjustAction {
                seq_delta: seq[0],
                initial_seq: seq[1],
                ack_delta: seq[2],
                initial_ack: seq[3],
            }));
            segs.push(Segment::TsAdjustAction(TsAdjustAction { delta, flags }));
        }
        let mut b = MessageBuilder::new(t, 9);
        for s in &segs {
            b.push(*s);
        }
        let bytes = b.finish().unwrap();
        let msg = ServiceMessage::parse(&bytes).unwrap();
        let got: Vec<Segment<'_>> = msg.segments().map(|(s, _)| s).collect();
        prop_assert_eq!(&got, &segs);
        let ts: Vec<_> = msg.affinities().map(|e| e.ts_adjust).collect();
        prop_assert_eq!(ts, vec![
            Some(TsAdjustAction { delta: deltas.0, flags: TsAdjustAction::ECHO }),
            Some(TsAdjustAction { delta: deltas.1, flags: 0 }),
        ]);
    }

    #[test]
    fn any_bit_flip_fails_parse_or_verify((wild, segs) in update(), bit in any::<usize>()) {
        let t = if wild { MessageType::AffinityUpdateWildcard } else { MessageType::AffinityUpdateFixed };
        let key = Key::new(3, AuthAlgorithm::HmacSha256, b"secret".to_vec());
        let mut b = MessageBuilder::signed(t, 1, &key);
        for s in &segs {
            b.push(s.seg());
        }
        let mut bytes = b.finish().unwrap();
        let bit = bit % (bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        if let Ok(msg) = ServiceMessage::parse(&bytes) {
            prop_assert!(AuthPolicy::with_key(key).verify(&msg, 0).is_err());
        }
    }

    #[test]
    fn truncation_is_always_rejected((wild, segs) in update(), cut in any::<usize>()) {
        let t = if wild { MessageType::AffinityUpdateWildcard } else { MessageType::AffinityUpdateFixed };
        let mut b = MessageBuilder::new(t, 1);
        for s in &segs {
            b.push(s.seg());
        }
        let bytes = b.finish().unwrap();
        let cut = cut % bytes.len();
        prop_assert!(ServiceMessage::parse(&bytes[..cut]).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(m) = ServiceMessage::parse(&bytes) {
            for _ in m.segments() {}
            for _ in m.affinities() {}
        }
    }

    #[test]
    fn lengths_past_the_datagram_are_rejected(claim in 5u16..2000, extra in 0usize..64) {
        let mut bytes = vec![1, 17, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        bytes.extend_from_slice(&[0x00, 0x63]);
        bytes.extend_from_slice(&claim.to_be_bytes());
        bytes.extend(std::iter::repeat_n(0u8, extra));
        let len = bytes.len() as u16;
        bytes[2..4].copy_from_slice(&len.to_be_bytes());
        let r = ServiceMessage::parse(&bytes);
        if claim as usize > 4 + extra {
            let is_bad_length = matches!(r, Err(ParseError::Segment { kind: SegmentErrorKind::BadLength { .. }, .. }));
            prop_assert!(is_bad_length);
        }
    }
}

fn msg_with(t: MessageType, segs: &[(Segment<'_>, bool)]) -> Vec<u8> {
    let mut b = MessageBuilder::new(t, 9);
    for (s, r) in segs {
        b.push_with(*s, *r);
    }
    b.finish().unwrap()
}

#[test]
fn every_error_variant_from_a_crafted_input() {
    let fixed = Segment::FixedAffinity(FixedAffinity::default());
    let ok = msg_with(MessageType::AffinityUpdateFixed, &[(fixed, true)]);
    let mut cases: Vec<(Vec<u8>, ParseError)> =
        vec![(ok[..10].to_vec(), ParseError::TooShort { have: 10 })];
    let mut v = ok.clone();
    v[0] = 2;
    cases.push((v, ParseError::BadVersion(2)));
    let mut v = ok.clone();
    v[1] = 99;
    cases.push((v, ParseError::UnknownMessageType(99)));
    let mut v = ok.clone();
    v[4] = 2;
    cases.push((v, ParseError::UnsupportedFamily(2)));
    let mut v = ok.clone();
    v.push(0);
    cases.push((
        v,
        ParseError::BadLength {
            claimed: ok.len(),
            actual: ok.len() + 1,
        },
    ));
    cases.push((
        msg_with(MessageType::AffinityUpdateFixed, &[]),
        ParseError::MissingSegment {
            msg_type: MessageType::AffinityUpdateFixed,
            seg_type: seg::FIXED_AFFINITY,
        },
    ));
    cases.push((
        msg_with(
            MessageType::AffinityUpdateFixed,
            &[
                (fixed, true),
                (
                    Segment::Unknown {
                        seg_type: 77,
                        body: &[],
                    },
                    true,
                ),
            ],
        ),
        ParseError::Segment {
            index: 1,
            seg_type: 77 | REQUIRED_FLAG,
            kind: SegmentErrorKind::UnknownRequired,
        },
    ));
    cases.push((
        msg_with(
            MessageType::AffinityUpdateFixed,
            &[
                (fixed, true),
                (Segment::Capabilities(Capabilities::default()), false),
            ],
        ),
        ParseError::Segment {
            index: 1,
            seg_type: seg::CAPABILITIES,
            kind: SegmentErrorKind::NotAllowed,
        },
    ));
    cases.push((
        msg_with(
            MessageType::AffinityUpdateFixed,
            &[
                (fixed, true),
                (Segment::FaInterestData(&[1]), false),
                (Segment::FaInterestData(&[2]), false),
            ],
        ),
        ParseError::Segment {
            index: 2,
            seg_type: seg::FA_INTEREST_DATA,
            kind: SegmentErrorKind::Duplicate,
        },
    ));
    cases.push((
        msg_with(
            MessageType::AffinityUpdateFixed,
            &[
                (fixed, true),
                (
                    Segment::Security(Security {
                        algorithm: 2,
                        key_id: 1,
                        digest: &[0; 32],
                    }),
                    true,
                ),
            ],
        ),
        ParseError::Segment {
            index: 1,
            seg_type: seg::SECURITY | REQUIRED_FLAG,
            kind: SegmentErrorKind::SecurityNotFirst,
        },
    ));
    let pkt = [0x45u8; 20];
    cases.push((
        msg_with(
            MessageType::AffinityUpdateFixed,
            &[
                (fixed, true),
                (Segment::IpPacket(&pkt), true),
                (fixed, true),
            ],
        ),
        ParseError::Segment {
            index: 1,
            seg_type: seg::IP_PACKET,
            kind: SegmentErrorKind::PacketNotLast,
        },
    ));
    cases.push((
        msg_with(
            MessageType::AffinityUpdateFixed,
            &[
                (fixed, true),
                (
                    Segment::NatAction(NatAction {
                        flags: 0x30,
                        ..Default::default()
                    }),
                    true,
                ),
            ],
        ),
        ParseError::Segment {
            index: 1,
            seg_type: seg::NAT_ACTION | REQUIRED_FLAG,
            kind: SegmentErrorKind::BadValue {
                field: "NAT flags",
                value: 0x30,
            },
        },
    ));
    // A fixed affinity with a 4-byte body and one with 28 bytes.
    let mut short = ok.clone();
    short.truncate(16 + 4 + 4);
    short[18..20].copy_from_slice(&8u16.to_be_bytes());
    short[2..4].copy_from_slice(&24u16.to_be_bytes());
    let fixed_error = |kind| ParseError::Segment {
        index: 0,
        seg_type: seg::FIXED_AFFINITY | REQUIRED_FLAG,
        kind,
    };
    cases.push((
        short,
        fixed_error(SegmentErrorKind::BodyTooShort { need: 24, have: 4 }),
    ));
    let mut long = ok.clone();
    long.extend_from_slice(&[0; 4]);
    long[18..20].copy_from_slice(&32u16.to_be_bytes());
    let n = long.len() as u16;
    long[2..4].copy_from_slice(&n.to_be_bytes());
    cases.push((
        long,
        fixed_error(SegmentErrorKind::BodyTooLong { max: 24, have: 28 }),
    ));
    for (bytes, want) in cases {
        let got = ServiceMessage::parse(&bytes).unwrap_err();
        assert_eq!(got, want);
        assert!(!got.to_string().is_empty() && !got.reason().is_empty());
    }
}

#[test]
fn replay_window() {
    let mut w = ReplayWindow::default();
    assert!(w.accept(100));
    assert!(!w.accept(100), "duplicate");
    assert!(w.accept(99), "late but inside the window");
    assert!(w.accept(200));
    assert!(!w.accept(136), "older than 64 behind the highest");
    assert!(w.accept(137));
    assert!(!w.accept(137));
}

#[test]
fn key_rotation_window_and_bad_keys() {
    let old = Key::new(1, AuthAlgorithm::HmacSha256, b"old".to_vec());
    let new = Key::new(2, AuthAlgorithm::HmacSha256, b"new".to_vec());
    let mut policy = AuthPolicy::with_key(old.clone());
    policy.keys.rotate_to(new.clone(), 1000, 30);
    let by_old = MessageBuilder::signed(MessageType::Keepalive, 1, &old)
        .finish()
        .unwrap();
    let by_new = MessageBuilder::signed(MessageType::Keepalive, 2, &new)
        .finish()
        .unwrap();
    let m_old = ServiceMessage::parse(&by_old).unwrap();
    let m_new = ServiceMessage::parse(&by_new).unwrap();
    assert_eq!(
        policy.verify(&m_old, 1020),
        Ok(()),
        "old key inside the overlap"
    );
    assert_eq!(policy.verify(&m_new, 1020), Ok(()));
    assert_eq!(policy.verify(&m_old, 1031), Err(AuthError::ExpiredKey(1)));
    policy.keys.expire(1031);
    assert_eq!(policy.verify(&m_old, 1031), Err(AuthError::UnknownKey(1)));
    assert_eq!(policy.keys.signing_key().unwrap().id, 2);
    let md5 = Key::new(2, AuthAlgorithm::KeyedMd5, b"new".to_vec());
    let by_md5 = MessageBuilder::signed(MessageType::Keepalive, 3, &md5)
        .finish()
        .unwrap();
    assert_eq!(
        policy.verify(&ServiceMessage::parse(&by_md5).unwrap(), 0),
        Err(AuthError::BadAlgorithm(1))
    );
    let unsigned = MessageBuilder::new(MessageType::Keepalive, 4)
        .finish()
        .unwrap();
    assert_eq!(
        policy.verify(&ServiceMessage::parse(&unsigned).unwrap(), 0),
        Err(AuthError::Unsigned)
    );
    let pkt_only = MessageBuilder::new(MessageType::IpPacketOnly, 5)
        .push(Segment::IpPacket(&[0x45; 20]))
        .clone()
        .finish()
        .unwrap();
    // Issue 16: with keys, IP-packet-only must be signed too by default...
    assert_eq!(
        policy.verify(&ServiceMessage::parse(&pkt_only).unwrap(), 0),
        Err(AuthError::Unsigned),
        "keyed: an unsigned IP-packet-only message is refused by default"
    );
    // ...and the seed's exemption is an explicit opt-in.
    policy.allow_unsigned_ip_packet_only = true;
    assert_eq!(
        policy.verify(&ServiceMessage::parse(&pkt_only).unwrap(), 0),
        Ok(()),
        "seed: IP-packet-only may be unsigned when allowed"
    );
}

#[test]
fn far_future_sequences_are_refused() {
    let policy = AuthPolicy::with_key(Key::new(1, AuthAlgorithm::HmacSha256, b"k".to_vec()));
    let now = 1_800_000_000u64;
    assert_eq!(policy.check_sequence(now << 32, now), Ok(()));
    let bound = (now + AuthPolicy::DEFAULT_MAX_AHEAD_SECS) << 32;
    assert_eq!(policy.check_sequence(bound, now), Ok(()));
    assert_eq!(
        policy.check_sequence(bound + 1, now),
        Err(AuthError::FarFuture(bound + 1))
    );
    assert_eq!(
        policy.check_sequence(1 << 63, now),
        Err(AuthError::FarFuture(1 << 63))
    );
}

#[test]
fn a_key_speaks_only_for_its_identities() {
    use affinity_api::IdentityInfo;
    use std::net::Ipv4Addr;
    let mine = Ipv4Addr::new(192, 0, 2, 10);
    let key = Key::new(1, AuthAlgorithm::HmacSha256, b"k".to_vec()).for_identities(vec![mine]);
    let policy = AuthPolicy::with_key(key.clone());
    let claiming = |addr| {
        let mut b = MessageBuilder::signed(MessageType::Keepalive, 1, &key);
        b.push(Segment::IdentityInfo(IdentityInfo {
            address: addr,
            host_name: "m",
        }));
        b.finish().unwrap()
    };
    let good = claiming(mine);
    let other = claiming(Ipv4Addr::new(192, 0, 2, 11));
    let src = Ipv4Addr::new(192, 0, 2, 99);
    let parse = |b: &[u8]| policy.verify_from(&ServiceMessage::parse(b).unwrap(), 0, src);
    assert_eq!(parse(&good), Ok(()));
    assert_eq!(parse(&other), Err(AuthError::WrongIdentity(1)));
    // Without identity info, the source address is the identity.
    let bare = MessageBuilder::signed(MessageType::Keepalive, 2, &key)
        .finish()
        .unwrap();
    assert_eq!(parse(&bare), Err(AuthError::WrongIdentity(1)));
    assert_eq!(
        policy.verify_from(&ServiceMessage::parse(&bare).unwrap(), 0, mine),
        Ok(())
    );
}

#[test]
fn receiver_segment_round_trips_and_is_signed() {
    use affinity_api::Receiver;
    use std::net::Ipv4Addr;
    let key = Key::new(1, AuthAlgorithm::HmacSha256, b"k".to_vec());
    let to = Ipv4Addr::new(192, 0, 2, 1);
    let mut b = MessageBuilder::signed(MessageType::Keepalive, 1, &key);
    b.push(Segment::Receiver(Receiver { address: to }));
    let mut bytes = b.finish().unwrap();
    let m = ServiceMessage::parse(&bytes).unwrap();
    assert_eq!(m.receiver(), Some(to));
    let policy = AuthPolicy::with_key(key);
    assert_eq!(policy.verify(&m, 0), Ok(()));
    // Rewriting the receiver breaks the digest (the last 4 bytes are it).
    let n = bytes.len();
    bytes[n - 1] = 2;
    let m = ServiceMessage::parse(&bytes).unwrap();
    assert_eq!(m.receiver(), Some(Ipv4Addr::new(192, 0, 2, 2)));
    assert_eq!(policy.verify(&m, 0), Err(AuthError::BadDigest));
}
