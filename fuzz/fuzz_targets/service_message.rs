#![no_main]
//! Arbitrary datagrams through the service message parser: it must never
//! panic, and whatever it accepts must iterate, group and verify cleanly.
use affinity_api::{
    datagram_messages, dispatch, info, ActionList, AuthAlgorithm, AuthPolicy, Key, Segment,
    ServiceMessage,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = ServiceMessage::parse(data) {
        let n = msg.segments().count();
        // The stricter parser (issue 13, item 12): nothing it accepts holds
        // what PROTOCOL.md calls malformed.
        let mut after_packet = false;
        for (s, _) in msg.segments() {
            assert!(!after_packet, "a segment after the IP packet");
            match s {
                Segment::WildcardAffinity(w) => {
                    assert_eq!(w.dispatch_flags & !dispatch::DEFINED, 0);
                    assert_eq!(w.info_flags & !info::DEFINED, 0);
                }
                Segment::FixedAffinity(f) => {
                    assert_eq!(f.dispatch_flags & !dispatch::DEFINED, 0);
                    assert_eq!(f.info_flags & !info::DEFINED, 0);
                }
                Segment::DenyReason(d) => assert!((1..=5).contains(&d.code)),
                Segment::ActionList(l) => assert!(l.entries().all(|(t, _)| ActionList::is_action(t))),
                Segment::Security(sec) => {
                    let alg = AuthAlgorithm::from_u8(sec.algorithm).expect("known algorithm");
                    assert_eq!(sec.digest.len(), alg.digest_len());
                }
                Segment::IpPacket(_) => after_packet = true,
                _ => {}
            }
        }
        let groups = msg.affinities().count();
        assert!(groups <= n);
        let policy = AuthPolicy::with_key(Key::new(1, AuthAlgorithm::HmacSha256, b"k".to_vec()));
        let _ = policy.verify(&msg, 0);
    }
    // The datagram's framing: messages tile it exactly, or the walk ends
    // in an error; never a panic, never past the end.
    let mut covered = 0;
    for m in datagram_messages(data) {
        match m {
            Ok(m) => {
                covered += m.len();
                let _ = ServiceMessage::parse(m);
            }
            Err(_) => {
                covered = data.len();
                break;
            }
        }
    }
    assert_eq!(covered, data.len());
});
