//! The fixed table filled to capacity: how far keys sit from their home
//! line (the two lines the batch loop prefetches), and that clustered keys
//! all fit.

use super::{FixedTable, FixedValue};
use crate::wire::TCP;
use affinity_api::AffinityKey;
use std::net::Ipv4Addr;

/// At capacity (≤ 50 % load) most keys are in their home line and
/// nearly all in it or the next: the two lines the batch loop prefetches.
#[test]
fn nearly_all_keys_sit_in_the_two_prefetched_lines() {
    // 49.6 % of the 2^19 entries.
    let n = 260_000u32;
    let t = FixedTable::new(n as usize);
    let key = |i: u32| AffinityKey {
        protocol: TCP,
        src_addr: Ipv4Addr::from(0xc612_0000u32 + (i >> 8)),
        dst_addr: Ipv4Addr::new(203, 0, 113, 10),
        src_port: 1024 + (i & 0xff) as u16,
        dst_port: 80,
    };
    let v = FixedValue {
        action: 0,
        expires_ds: 1,
    };
    for i in 0..n {
        t.insert(&key(i), v).unwrap();
    }
    // Lines past the home line (the table is far from wrapping here).
    let beyond = |i: u32| (t.lookup(&key(i)).unwrap().1 / 2).wrapping_sub(t.bucket_of(&key(i)) / 2);
    let share = |lines: usize| (0..n).filter(|&i| beyond(i) >= lines).count() as f64 / n as f64;
    let (home, two) = (share(1), share(2));
    eprintln!(
        "{:.1} % of keys outside their home line, {:.2} % outside it and the next",
        home * 100.0,
        two * 100.0
    );
    assert!(home < 0.15, "{home}");
    assert!(two < 0.05, "{two}");
}

/// A table takes its full capacity of sequential-looking keys.
#[test]
fn fills_to_capacity_with_clustered_keys() {
    let n = 300_000u32;
    let t = FixedTable::new(n as usize);
    for i in 0..n {
        let k = AffinityKey {
            protocol: TCP,
            src_addr: Ipv4Addr::from(0xc612_0000u32 + (i >> 8)),
            dst_addr: Ipv4Addr::new(203, 0, 113, 10),
            src_port: 1024 + (i & 0xff) as u16,
            dst_port: 80,
        };
        assert!(
            t.insert(
                &k,
                FixedValue {
                    action: 0,
                    expires_ds: 1
                }
            )
            .is_ok(),
            "refused at {i}"
        );
    }
    assert_eq!(t.len(), n as usize);
}
