//! The parser refuses what PROTOCOL.md calls malformed (issue 13, item 12):
//! undefined dispatch/information bits, deny codes outside 1–5, action-list
//! entries that are not action types, a security algorithm whose digest
//! length does not match, and any segment after the IP packet.

use affinity_api::{
    DenyReason, FixedAffinity, MessageBuilder, MessageType, ParseError, Segment, SegmentErrorKind,
    ServiceMessage, WildcardAffinity,
};

/// A message of type `t` carrying `segs` (Required flag as the table says).
fn msg(t: MessageType, segs: &[Segment<'_>]) -> Vec<u8> {
    let mut b = MessageBuilder::new(t, 7);
    for s in segs {
        b.push(*s);
    }
    b.finish().unwrap()
}

fn bad_value(bytes: &[u8]) -> &'static str {
    match ServiceMessage::parse(bytes) {
        Err(ParseError::Segment {
            kind: SegmentErrorKind::BadValue { field, .. },
            ..
        }) => field,
        other => panic!("expected a bad value, got {other:?}"),
    }
}

/// Offset of the first segment's body in a message built by [`msg`].
const BODY: usize = 16 + 4;

#[test]
fn undefined_dispatch_and_information_bits_are_malformed() {
    let w = msg(
        MessageType::AffinityUpdateWildcard,
        &[Segment::WildcardAffinity(WildcardAffinity {
            ttl: 5,
            ..Default::default()
        })],
    );
    assert!(ServiceMessage::parse(&w).is_ok());
    let mut d = w.clone();
    d[BODY + 1] = 0x02;
    assert_eq!(bad_value(&d), "dispatch flags");
    let mut i = w.clone();
    i[BODY + 2] = 0x80;
    assert_eq!(bad_value(&i), "information flags");
    let f = msg(
        MessageType::AffinityUpdateFixed,
        &[Segment::FixedAffinity(FixedAffinity {
            ttl: 5,
            ..Default::default()
        })],
    );
    let mut d = f.clone();
    d[BODY + 1] = 0x10;
    assert_eq!(bad_value(&d), "dispatch flags");
}

#[test]
fn deny_codes_outside_one_to_five_are_malformed() {
    for (code, ok) in [
        (0, false),
        (1, true),
        (5, true),
        (6, false),
        (0xffff, false),
    ] {
        let m = msg(
            MessageType::AffinityUpdateDeny,
            &[Segment::DenyReason(DenyReason {
                denied_type: 10,
                code,
                denied_sequence: 1,
            })],
        );
        assert_eq!(ServiceMessage::parse(&m).is_ok(), ok, "code {code}");
    }
}

#[test]
fn action_list_entries_must_be_action_types() {
    let wc = Segment::WildcardAffinity(WildcardAffinity {
        ttl: 5,
        ..Default::default()
    });
    for (entry, ok) in [
        (10u16, true),
        (13 | 0x8000, true),
        (9, false),
        (14, false),
        (15 | 0x8000, false),
        (0, false),
    ] {
        let raw = entry.to_be_bytes();
        let list = affinity_api::ActionList::from_raw(&raw).unwrap();
        let m = msg(
            MessageType::AffinityUpdateWildcard,
            &[wc, Segment::ActionList(list)],
        );
        assert_eq!(ServiceMessage::parse(&m).is_ok(), ok, "entry {entry:#x}");
    }
}

#[test]
fn security_algorithm_and_digest_length_must_agree() {
    for (algorithm, len, ok) in [
        (1u8, 16usize, true),
        (2, 32, true),
        (1, 32, false),
        (2, 16, false),
        (3, 32, false),
        (0, 0, false),
    ] {
        let digest = vec![0u8; len];
        let m = msg(
            MessageType::Keepalive,
            &[Segment::Security(affinity_api::Security {
                algorithm,
                key_id: 1,
                digest: &digest,
            })],
        );
        assert_eq!(
            ServiceMessage::parse(&m).is_ok(),
            ok,
            "algorithm {algorithm} digest {len}"
        );
    }
}

#[test]
fn unknown_optional_segment_after_the_ip_packet_is_malformed() {
    let pkt = [0x45u8; 20];
    let mut b = MessageBuilder::new(MessageType::IpPacketOnly, 7);
    b.push(Segment::IpPacket(&pkt));
    b.push_with(
        Segment::Unknown {
            seg_type: 99,
            body: &[1, 2],
        },
        false,
    );
    let m = b.finish().unwrap();
    assert!(matches!(
        ServiceMessage::parse(&m),
        Err(ParseError::Segment {
            kind: SegmentErrorKind::PacketNotLast,
            ..
        })
    ));
}

#[test]
fn a_deny_may_list_every_unsupported_action() {
    let raw = affinity_api::encode_action_list(&[(10, true), (12, true)]);
    let m = msg(
        MessageType::AffinityUpdateDeny,
        &[
            Segment::DenyReason(DenyReason {
                denied_type: 10,
                code: DenyReason::UNSUPPORTED_REQUIRED_ACTION,
                denied_sequence: 1,
            }),
            Segment::ActionList(affinity_api::ActionList::from_raw(&raw).unwrap()),
        ],
    );
    assert!(ServiceMessage::parse(&m).is_ok());
}
