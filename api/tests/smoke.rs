use affinity_api::*;
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
