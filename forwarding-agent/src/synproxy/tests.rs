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
