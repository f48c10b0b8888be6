//! The action table's unit tests: slot layout round trips, sharing and
//! reference counts, quarantine before reuse.

use super::{
    ActionSet, ActionTable, ActionView, InterestKey, NatActionKey, SeqAdjustKey, TsAdjustKey,
    QUARANTINE_NS,
};

#[test]
fn timestamp_offset_round_trips_in_the_free_bits() {
    let a = ActionSet {
        ts_adjust: Some(TsAdjustKey {
            delta: 0xdead_beef,
            echo: true,
        }),
        interest: Some(InterestKey {
            flags: 7,
            ..Default::default()
        }),
        ..Default::default()
    };
    let w = a.encode();
    assert_eq!(w[6], 0xdead << 48 | 7);
    assert_eq!(w[2], 1 << 16 | 0xbeef);
    assert_eq!(ActionView(w).decode(), a);
}

#[test]
fn encode_decode_round_trip_and_sharing() {
    let t = ActionTable::new(4);
    let a = ActionSet {
        nat: Some(NatActionKey {
            flags: 3,
            src_addr: 1,
            dst_addr: 2,
            src_port: 3,
            dst_port: 4,
        }),
        seq_adjust: Some(SeqAdjustKey(5, 6, 7, 8)),
        interest: Some(InterestKey {
            address: 9,
            port: 10,
            mask: 11,
            flags: 2,
        }),
        ts_adjust: None,
        dispatch_flags: 1,
        info_flags: 1,
        forward_addr: 12,
        affinity_id: 13,
        owner: 14,
        ..Default::default()
    };
    // The new fields (precedence, manager data) round-trip in the
    // room word 0 and word 6 had left.
    let ranked = ActionSet {
        search_first: true,
        service_precedence: 0xfedc,
        backup_precedence: 0xba98,
        manager_data: 0x00ab_cdef,
        ..a
    };
    assert_eq!(ActionView::from(&ranked).decode(), ranked);
    // The slot layout, word by word (the encoding before `slot` named it).
    assert_eq!(
        a.encode(),
        [
            0x0e01_0107,
            1 << 32 | 2,
            3 << 48 | 4 << 32 | 3 << 24,
            5 << 32 | 6,
            7 << 32 | 8,
            9 << 32 | 10 << 16 | 11,
            2,
            12 << 32 | 13,
        ]
    );
    let i = t.acquire(&a, 0).unwrap();
    assert_eq!(t.get(i), a);
    assert_eq!(t.acquire(&a, 0), Some(i));
    let b = ActionSet {
        affinity_id: 99,
        ..a
    };
    let j = t.acquire(&b, 0).unwrap();
    assert_ne!(i, j);
    t.release(j, 0);
    // Quarantined: not reused before the quarantine ends.
    let c = ActionSet {
        affinity_id: 100,
        ..a
    };
    let k = t.acquire(&c, 1).unwrap();
    assert_ne!(k, j);
    let d = ActionSet {
        affinity_id: 101,
        ..a
    };
    let l = t.acquire(&d, 1).unwrap();
    assert!(
        t.acquire(
            &ActionSet {
                affinity_id: 102,
                ..a
            },
            2
        )
        .is_none(),
        "full"
    );
    t.release(l, 2);
    let m = t
        .acquire(
            &ActionSet {
                affinity_id: 103,
                ..a
            },
            2 + QUARANTINE_NS,
        )
        .unwrap();
    assert!(
        m == j || m == l,
        "a quarantined slot is reused once its time has passed"
    );
}

/// The common case's NAT form is the one worked out from the set's NAT
/// action (`PlainNat::from`), for every flag combination, including the
/// set bytes' word sums (checked against a sum taken here); and a slot
/// reused after quarantine for another NAT action reads the new form, not
/// the old one.
#[test]
fn plain_nat_form_is_stored_with_the_set() {
    let t = ActionTable::new(2);
    let nat = |flags: u8, port: u16| NatActionKey {
        flags,
        src_addr: 0xc633_6401,
        dst_addr: 0xffff_0001,
        src_port: port,
        dst_port: 0xfffe,
    };
    let words = |x: u64| (0..4).map(|i| (x >> (16 * i)) & 0xffff).sum::<u64>();
    let mut now = 1;
    for flags in 0..16u8 {
        let n = nat(flags, 1000 + u16::from(flags));
        let set = ActionSet {
            nat: Some(n),
            ..ActionSet::default()
        };
        let idx = t.acquire(&set, now).unwrap();
        let got = t.plain(idx).and_then(|p| p.nat()).unwrap();
        let want = crate::wire::PlainNat::from(&n);
        assert_eq!(got, want, "flags {flags:#x}");
        assert_eq!(
            u64::from(got.addr_sum),
            words(got.addr_set),
            "flags {flags:#x}"
        );
        assert_eq!(
            u64::from(got.port_sum),
            words(u64::from(got.port_set)),
            "flags {flags:#x}"
        );
        // Released and quarantined: the next set (another port) reuses a
        // slot only once the quarantine is over.
        t.release(idx, now);
        now += QUARANTINE_NS + 1;
    }
    // A set without NAT in a slot a NAT set used: no NAT form.
    let idx = t.acquire(&ActionSet::default(), now).unwrap();
    assert!(t.plain(idx).is_some_and(|p| p.nat().is_none()));
}
