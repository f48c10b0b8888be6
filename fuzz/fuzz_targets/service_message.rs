#![no_main]
//! Arbitrary datagrams through the service message parser: it must never
//! panic, and whatever it accepts must iterate, group and verify cleanly.
use affinity_api::{datagram_messages, AuthAlgorithm, AuthPolicy, Key, ServiceMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = ServiceMessage::parse(data) {
        let n = msg.segments().count();
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
