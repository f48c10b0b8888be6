use affinity_api::{
    datagram_messages, AffinityIdentifier, AffinityKey, AffinityRef, AuthAlgorithm, AuthError,
    AuthPolicy, FixedAffinity, Key, MessageBuilder, MessageType, NatAction, ParseError, Segment,
    ServiceMessage,
};
use std::net::Ipv4Addr;

#[test]
fn fixed_update_two_directions_signed_round_trip() {
    let key = Key::new(7, AuthAlgorithm::HmacSha256, b"secret".to_vec());
    let fwd = FixedAffinity {
        key: AffinityKey {
            protocol: 6,
            src_addr: Ipv4Addr::new(198, 18, 0, 1),
            dst_addr: Ipv4Addr::new(203, 0, 113, 10),
            src_port: 40000,
            dst_port: 80,
        },
        ttl: 60,
        ..Default::default()
    };
    let mut b = MessageBuilder::signed(MessageType::AffinityUpdateFixed, 42, &key);
    b.push(Segment::AffinityIdentifier(AffinityIdentifier {
        id: 1,
        reason: 0,
    }));
    b.push(Segment::FixedAffinity(fwd));
    b.push(Segment::NatAction(NatAction {
        flags: NatAction::DST_ADDR,
        dst_addr: Ipv4Addr::new(198, 19, 0, 2),
        ..Default::default()
    }));
    let rev = FixedAffinity {
        key: fwd.key.reversed(),
        ..fwd
    };
    b.push(Segment::FixedAffinity(rev));
    let bytes = b.finish().unwrap();
    let msg = ServiceMessage::parse(&bytes).unwrap();
    assert_eq!(msg.sequence(), 42);
    AuthPolicy::with_key(key.clone()).verify(&msg, 0).unwrap();
    let entries: Vec<_> = msg.affinities().collect();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].affinity, AffinityRef::Fixed(fwd));
    assert!(entries[0].nat.is_some());
    assert!(entries[1].nat.is_none());
    assert_eq!(entries[1].identifier.unwrap().id, 1);
    let mut tampered = bytes.clone();
    let n = tampered.len();
    tampered[n - 1] ^= 1;
    let msg = ServiceMessage::parse(&tampered).unwrap();
    assert_eq!(
        AuthPolicy::with_key(key).verify(&msg, 0),
        Err(AuthError::BadDigest)
    );
}

#[test]
fn a_datagram_may_carry_messages_back_to_back() {
    let one = |seq: u64, port: u16| {
        let mut b = MessageBuilder::new(MessageType::IpPacketOnly, seq);
        b.push(Segment::FaInterestData(&port.to_be_bytes()));
        b.push(Segment::IpPacket(&[0x45; 20]));
        b.finish().unwrap()
    };
    let (a, b) = (one(1, 80), one(2, 443));
    let mut datagram = a.clone();
    datagram.extend_from_slice(&b);
    let msgs: Vec<_> = datagram_messages(&datagram).collect();
    assert_eq!(msgs, vec![Ok(&a[..]), Ok(&b[..])]);
    for (m, seq) in msgs.iter().zip([1, 2]) {
        assert_eq!(ServiceMessage::parse(m.unwrap()).unwrap().sequence(), seq);
    }
    // One message alone is the usual case.
    assert_eq!(datagram_messages(&a).collect::<Vec<_>>(), vec![Ok(&a[..])]);
    // Trailing bytes shorter than a header, a length past the end, or a
    // length below the header's end the walk with an error; what came
    // before stands.
    let mut short = a.clone();
    short.extend_from_slice(&[1, 2, 3]);
    let m: Vec<_> = datagram_messages(&short).collect();
    assert_eq!(m[0], Ok(&a[..]));
    assert_eq!(m[1], Err(ParseError::TooShort { have: 3 }));
    let mut long = a.clone();
    long.extend_from_slice(&b[..b.len() - 1]);
    let m: Vec<_> = datagram_messages(&long).collect();
    assert_eq!(m.len(), 2);
    assert!(matches!(m[1], Err(ParseError::BadLength { .. })));
    let mut zero = b.clone();
    zero[2..4].copy_from_slice(&0u16.to_be_bytes());
    assert!(matches!(
        datagram_messages(&zero).collect::<Vec<_>>()[..],
        [Err(ParseError::BadLength { claimed: 0, .. })]
    ));
    // An empty datagram carries no message: one error, counted as such.
    assert_eq!(
        datagram_messages(&[]).collect::<Vec<_>>(),
        vec![Err(ParseError::TooShort { have: 0 })]
    );
}
