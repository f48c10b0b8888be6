//! Cookies, option encoding and the timestamp offset.

use super::{mss_index, CookieInput, SynCookies, SynProxyState, TcpOptions, GENERATION_NS};
use std::net::Ipv4Addr;

const C: CookieInput = CookieInput {
    src: Ipv4Addr::new(198, 18, 0, 5),
    dst: Ipv4Addr::new(203, 0, 113, 10),
    sport: 40000,
    dport: 80,
    client_isn: 1000,
};

#[test]
fn cookies_check_for_two_generations_then_expire() {
    let mut k = SynCookies::new([7; 32]);
    let t0 = 5 * GENERATION_NS + 1;
    let c = k.make(t0, &C, 6);
    assert_eq!(k.check(t0, &C, c), Some(6));
    assert_eq!(k.check(t0 + GENERATION_NS, &C, c), Some(6));
    assert_eq!(k.check(t0 + 2 * GENERATION_NS, &C, c), None);
    // Another tuple, ISN, MSS index or secret: refused.
    let other = CookieInput { sport: 40001, ..C };
    assert_eq!(k.check(t0, &other, c), None);
    let isn = CookieInput {
        client_isn: 1001,
        ..C
    };
    assert_eq!(k.check(t0, &isn, c), None);
    assert_eq!(k.check(t0, &C, c ^ 1), None);
    assert_eq!(SynCookies::new([8; 32]).check(t0, &C, c), None);
}

#[test]
fn options_round_trip_and_mss_table() {
    let o = TcpOptions {
        mss: Some(1460),
        wscale: Some(7),
        sack_permitted: true,
        timestamps: Some((1, 2)),
    };
    let mut b = [0u8; 20];
    let n = o.emit(&mut b);
    assert_eq!(n, 20);
    assert_eq!(TcpOptions::parse(&b[..n]), o);
    assert_eq!(mss_index(1460), 6);
    assert_eq!(mss_index(1459), 5);
    assert_eq!(mss_index(100), 0);
    assert_eq!(mss_index(9000), 7);
    let s = SynProxyState {
        client_isn: 1,
        cookie_isn: 2,
        mss: 1460,
        wscale: Some(3),
        sack_permitted: true,
        timestamps: None,
    };
    assert_eq!(SynProxyState::decode(&s.encode()), Some(s));
}

#[test]
fn proved_flows_are_held_back_until_spliced_or_expired() {
    use super::{Pending, SpliceTable, PENDING_NS};
    let t = SpliceTable::default();
    let key = |port| affinity_api::AffinityKey {
        protocol: crate::wire::TCP,
        src_addr: C.src,
        dst_addr: C.dst,
        src_port: port,
        dst_port: 80,
    };
    assert!(!t.holds_back(&key(1), 0), "nothing noted: no lock taken");
    t.note_proved(key(1), PENDING_NS, 0, 2);
    t.note_proved(key(2), PENDING_NS, 0, 2);
    t.note_proved(key(3), PENDING_NS, 0, 2);
    assert!(t.holds_back(&key(1), 1) && t.holds_back(&key(2), 1));
    assert!(!t.holds_back(&key(3), 1), "past the cap: not noted");
    // Spliced (its pending entry taken): no longer held back.
    let p = Pending {
        state: SynProxyState::default(),
        packet: vec![],
        deadline_ns: PENDING_NS,
    };
    assert!(t.add_pending(key(1), p, 1, 8));
    assert!(t.take_pending(&key(1), 2).is_some());
    assert!(!t.holds_back(&key(1), 2));
    // Never spliced: past its deadline it is not held back, and the
    // agent's timers forget it.
    assert!(!t.holds_back(&key(2), PENDING_NS));
    t.expire(PENDING_NS);
    assert!(!t.any_pending());
    t.note_proved(key(3), 2 * PENDING_NS, PENDING_NS, 2);
    assert!(t.holds_back(&key(3), PENDING_NS + 1), "room again");
}

#[test]
fn early_data_is_bounded_agent_wide_and_leaves_in_order_with_its_splice() {
    use super::{
        Early, Pending, SpliceTable, EARLY_DATA_BYTES, EARLY_DATA_TOTAL_BYTES, PENDING_NS,
    };
    let t = SpliceTable::default();
    let key = |i: u32| affinity_api::AffinityKey {
        protocol: crate::wire::TCP,
        src_addr: Ipv4Addr::from(0xc612_0000 + i),
        dst_addr: C.dst,
        src_port: 40000,
        dst_port: 80,
    };
    // Connections at their per-connection byte bound fill the agent-wide
    // one exactly; the next connection's first packet finds no room.
    let size = EARLY_DATA_BYTES / 2;
    let conns = (EARLY_DATA_TOTAL_BYTES / EARLY_DATA_BYTES) as u32;
    for i in 0..=conns {
        t.note_proved(key(i), PENDING_NS, 0, 4096);
    }
    for i in 0..conns {
        for j in 0..2u8 {
            let pkt = vec![j; size];
            assert_eq!(t.hold_early(&key(i), &pkt, false, 1), Early::Held);
        }
    }
    assert_eq!(t.held(), (2 * conns as usize, EARLY_DATA_TOTAL_BYTES));
    assert_eq!(t.hold_early(&key(conns), &[0; 60], false, 1), Early::Full);
    assert_eq!(
        t.hold_early(&key(conns + 1), &[0; 60], false, 1),
        Early::Pass
    );
    // A splice takes its connection's packets, in order, and frees room.
    let p = Pending {
        state: SynProxyState::default(),
        packet: vec![],
        deadline_ns: PENDING_NS,
    };
    assert!(t.add_pending(key(0), p, 1, 8));
    let (_, held) = t.take_pending(&key(0), 2).unwrap();
    assert_eq!(held, vec![vec![0u8; size], vec![1u8; size]]);
    assert_eq!(t.hold_early(&key(conns), &[0; 60], false, 2), Early::Held);
    // Past their time, the rest are dropped and reported once.
    assert_eq!(t.expire(PENDING_NS), 2 * (conns as u64 - 1) + 1);
    assert_eq!(t.expire(PENDING_NS), 0);
    assert_eq!(t.held(), (0, 0));
}

#[test]
fn early_data_with_a_partial_checksum_is_held_with_a_complete_one() {
    use super::{Early, Pending, SpliceTable, PENDING_NS};
    use crate::wire::{self, build, checksum};
    let pkt = build::tcp(
        C.src,
        C.sport,
        C.dst,
        C.dport,
        build::TCP_ACK,
        1001,
        7,
        b"GET /",
    );
    let info = wire::parse_ipv4(&pkt).unwrap();
    // As an offloading sender leaves it: the pseudo-header sum only.
    let mut partial = pkt.clone();
    let at = info.l4_offset + 16;
    partial[at..at + 2].copy_from_slice(&[0x12, 0x34]);
    let t = SpliceTable::default();
    t.note_proved(info.key, PENDING_NS, 0, 8);
    assert_eq!(t.hold_early(&info.key, &partial, true, 1), Early::Held);
    let p = Pending {
        state: SynProxyState::default(),
        packet: vec![],
        deadline_ns: PENDING_NS,
    };
    assert!(t.add_pending(info.key, p, 1, 8));
    let (_, held) = t.take_pending(&info.key, 2).unwrap();
    assert_eq!(held, vec![pkt.clone()]);
    assert!(checksum::verify_l4(&held[0], &info));
}
