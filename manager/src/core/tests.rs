//! When the core needs time: `poll_timeout` against what `tick` does.

use super::{ManagerCore, SEC};
use crate::config::Config;
use affinity_api::{
    interest, AffinityIdentifier, AffinityKey, FixedAffinity, MessageBuilder, MessageType, Segment,
};
use std::net::{Ipv4Addr, SocketAddrV4};

const AGENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 1637);

/// Wildcards every 20 s (TTL 60), renewals every 10 s (TTL 30), sticky 2 s.
fn core() -> ManagerCore {
    let cfg = Config::parse(
        r#"
[manager]
listen = "192.0.2.10:1638"
wildcard_ttl = 60
fixed_ttl = 30
[agents]
unicast = ["192.0.2.1:1637"]
[[service]]
name = "web"
virtual = "203.0.113.10:80"
sticky_timeout_ms = 2000
[[service.backend]]
address = "198.51.100.1:8080"
"#,
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    let mut cfg = cfg;
    cfg.agents.multicast_group = None;
    ManagerCore::new(cfg, 0)
}

fn key() -> AffinityKey {
    AffinityKey {
        protocol: affinity_forwarding_agent::wire::TCP,
        src_addr: Ipv4Addr::new(198, 18, 0, 1),
        dst_addr: Ipv4Addr::new(203, 0, 113, 10),
        src_port: 40000,
        dst_port: 80,
    }
}

/// An agent's interest match on `key()`: a punt (wildcard) or a tracked
/// FIN/RST copy (fixed).
fn interest_match(t: MessageType, seq: u64, reason: u16) -> Vec<u8> {
    let mut b = MessageBuilder::new(t, seq);
    b.push(Segment::AffinityIdentifier(AffinityIdentifier {
        id: 1 << 16,
        reason,
    }));
    b.push(Segment::FixedAffinity(FixedAffinity {
        key: key(),
        ..Default::default()
    }));
    b.finish().unwrap()
}

#[test]
fn poll_timeout_is_the_next_wildcard_refresh_or_renewal() {
    let mut c = core();
    assert_eq!(c.poll_timeout(), 0, "everything is due at start");
    assert!(!c.tick(0).is_empty(), "wildcards sent");
    assert_eq!(c.poll_timeout(), 10 * SEC, "renewal: a third of fixed_ttl");
    assert!(c.tick(10 * SEC - 1).is_empty(), "nothing due before it");
    assert_eq!(c.poll_timeout(), 10 * SEC);
    c.tick(10 * SEC);
    assert_eq!(c.poll_timeout(), 20 * SEC, "wildcards and renewal together");
    assert!(!c.tick(20 * SEC).is_empty(), "wildcard refresh");
    assert_eq!(c.poll_timeout(), 30 * SEC);
}

#[test]
fn poll_timeout_includes_a_closed_flows_sticky_deletion() {
    let mut c = core();
    c.tick(0);
    let syn = interest_match(
        MessageType::InterestMatchWildcard,
        1,
        interest::SYN | interest::ALL,
    );
    assert_eq!(c.handle_datagram(SEC / 2, AGENT, &syn).len(), 1);
    assert_eq!(c.poll_timeout(), 10 * SEC, "an open flow adds no timer");
    let rst = interest_match(MessageType::InterestMatchFixed, 2, interest::RST);
    c.handle_datagram(SEC, AGENT, &rst);
    assert_eq!(c.poll_timeout(), 3 * SEC, "closed at 1 s, sticky 2 s");
    assert!(c.tick(3 * SEC - 1).is_empty());
    assert_eq!(c.flow_count(), 1);
    let out = c.tick(3 * SEC);
    assert_eq!(c.flow_count(), 0);
    assert_eq!(out.len(), 1, "deletion (TTL 0) to the agent holding it");
    assert_eq!(out[0].0, AGENT);
    assert_eq!(c.poll_timeout(), 10 * SEC);
}
