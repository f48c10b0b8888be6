//! When a half-open TCP flow becomes established (issue 14, punt
//! admission): on both directions' handshake marks from agents that mark
//! handshakes (advertised in the hello, or TRACKED in the report's pairs),
//! on packet counts from agents that do not. A spoofed SYN sent twice and
//! the backend's SYN-ACK (2 forward packets, 1 reverse) must not pass the
//! half-open cap.

use super::{FlowState, ManagerCore, SEC};
use crate::config::Config;
use affinity_api::{
    activity, capability, interest, AffinityIdentifier, AffinityKey, Capabilities, FixedAffinity,
    MessageBuilder, MessageType, Segment, Statistics,
};
use std::net::{Ipv4Addr, SocketAddrV4};

const AGENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 1637);

/// One backend, `max_half_open_flows = 1` with `half_open_policy =
/// "refuse"`: a refused SYN is these tests' probe that a flow still counts
/// as half-open (`evict-oldest` would end the flow under test).
fn core() -> ManagerCore {
    let mut cfg = Config::parse(
        r#"
[manager]
listen = "192.0.2.10:1638"
max_half_open_flows = 1
[agents]
unicast = ["192.0.2.1:1637"]
[[service]]
name = "web"
virtual = "203.0.113.10:80"
half_open_policy = "refuse"
[[service.backend]]
address = "198.51.100.1:8080"
"#,
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    cfg.agents.multicast_group = None;
    let mut c = ManagerCore::new(cfg, 0);
    c.tick(0);
    c
}

/// Client 198.18.0.1:`port` → 203.0.113.10:80.
fn key(port: u16) -> AffinityKey {
    AffinityKey {
        protocol: affinity_forwarding_agent::wire::TCP,
        src_addr: Ipv4Addr::new(198, 18, 0, 1),
        dst_addr: Ipv4Addr::new(203, 0, 113, 10),
        src_port: port,
        dst_port: 80,
    }
}

/// A SYN punted for `key(port)` (sequence `seq`).
fn syn(seq: u64, port: u16) -> Vec<u8> {
    let mut b = MessageBuilder::new(MessageType::InterestMatchWildcard, seq);
    b.push(Segment::AffinityIdentifier(AffinityIdentifier {
        id: 1 << 16,
        reason: interest::SYN | interest::ALL,
    }));
    b.push(Segment::FixedAffinity(FixedAffinity {
        key: key(port),
        ..Default::default()
    }));
    b.finish().unwrap()
}

/// An agent hello with capabilities' first word `actions`.
fn hello(seq: u64, actions: u32) -> Vec<u8> {
    let mut b = MessageBuilder::new(MessageType::AgentHello, seq);
    b.push(Segment::Capabilities(Capabilities {
        actions,
        fixed_capacity: 4096,
        wildcard_capacity: 1024,
    }));
    b.finish().unwrap()
}

/// An activity report: per (key, activity flags, packets) a pair.
fn report(seq: u64, pairs: &[(AffinityKey, u8, u64)]) -> Vec<u8> {
    let mut b = MessageBuilder::new(MessageType::StatisticsReport, seq);
    b.push(Segment::Statistics(Statistics {
        packets: pairs.iter().map(|p| p.2).sum(),
        bytes: 0,
        ..Default::default()
    }));
    for &(key, activity_flags, packets) in pairs {
        b.push(Segment::FixedAffinity(FixedAffinity {
            key,
            ttl: 30,
            activity_flags,
            ..Default::default()
        }));
        b.push(Segment::Statistics(Statistics {
            packets,
            bytes: 60 * packets,
            ..Default::default()
        }));
    }
    b.finish().unwrap()
}

/// How the agent says it marks handshakes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Agent {
    /// In its hello (pairs without TRACKED).
    Hello,
    /// In its pairs only (the manager missed its hello: restarted after it).
    Pairs,
    /// It does not (an older agent): no capability, no flags.
    Untracked,
}

/// The manager with flow `key(1000)` placed on a SYN from `AGENT` (which
/// said hello as `agent`); the flow's reverse key and the flags a pair of
/// that agent carries when it saw a handshake-complete segment or not.
fn placed(agent: Agent) -> (ManagerCore, AffinityKey, u8, u8) {
    let mut c = core();
    assert_eq!(c.handle_datagram(SEC, AGENT, &syn(1, 1000)).len(), 1);
    let caps = if agent == Agent::Hello {
        0x0010_7c00 | capability::HANDSHAKE_MARKS
    } else {
        0x0010_7c00
    };
    c.handle_datagram(SEC, AGENT, &hello(2, caps));
    let f = c.flow(&key(1000)).expect("placed");
    assert_eq!(f.state, FlowState::SynSeen);
    let rev = f.rev;
    let (none, seen) = match agent {
        Agent::Hello => (0, activity::HANDSHAKE_COMPLETE),
        Agent::Pairs => (
            activity::TRACKED,
            activity::TRACKED | activity::HANDSHAKE_COMPLETE,
        ),
        Agent::Untracked => (0, 0),
    };
    (c, rev, none, seen)
}

/// Whether a new SYN (another client port) is refused for the half-open
/// cap (1) at `now`: the first flow still counts as half-open.
fn refused(c: &mut ManagerCore, now: u64, seq: u64, port: u16) -> bool {
    let before = c.counters.get("half-open-limit-refused").copied();
    c.handle_datagram(now, AGENT, &syn(seq, port));
    c.counters.get("half-open-limit-refused").copied() != before
}

#[test]
fn a_syn_sent_twice_and_the_syn_ack_keep_a_marking_agents_flow_half_open() {
    for agent in [Agent::Hello, Agent::Pairs] {
        let (mut c, rev, none, seen) = placed(agent);
        let k = key(1000);
        // The attack: SYN, the same SYN again (2 forward packets), the
        // backend's SYN-ACK (1 reverse): packets both ways, no mark.
        c.handle_datagram(2 * SEC, AGENT, &report(3, &[(k, none, 2), (rev, none, 1)]));
        let f = c.flow(&k).expect("kept");
        assert_eq!((f.packets_fwd, f.packets_rev), (2, 1), "{agent:?}");
        assert_eq!(f.state, FlowState::SynSeen, "{agent:?}: still half-open");
        assert!(
            refused(&mut c, 3 * SEC, 4, 2000),
            "{agent:?}: it fills the cap"
        );
        // A blind attacker's ACK marks the forward affinity (the backend
        // answers it with an RST, which marks nothing and, tracked, ends
        // the flow). The client's side looks done: as conntrack's
        // ESTABLISHED on the third packet, the flow leaves the half-open
        // count, but it is not established (the transitory timeout, not
        // the established one).
        c.handle_datagram(4 * SEC, AGENT, &report(5, &[(k, seen, 1), (rev, none, 1)]));
        assert_eq!(
            c.flow(&k).map(|f| f.state),
            Some(FlowState::SynSeen),
            "{agent:?}"
        );
        assert!(
            !refused(&mut c, 5 * SEC, 6, 2001),
            "{agent:?}: left the count"
        );
        // The backend's data after the handshake marks the reverse one:
        // established.
        c.handle_datagram(6 * SEC, AGENT, &report(7, &[(rev, seen, 1)]));
        assert_eq!(
            c.flow(&k).map(|f| f.state),
            Some(FlowState::Established),
            "{agent:?}"
        );
        // The new flow (2001) is half-open and fills the cap.
        assert_eq!(
            c.flow(&key(2001)).map(|f| f.state),
            Some(FlowState::SynSeen),
            "{agent:?}"
        );
        assert!(refused(&mut c, 7 * SEC, 8, 2002), "{agent:?}");
    }
}

#[test]
fn marks_from_both_directions_in_any_order_establish_the_flow() {
    let (mut c, rev, _, seen) = placed(Agent::Hello);
    let k = key(1000);
    c.handle_datagram(2 * SEC, AGENT, &report(3, &[(rev, seen, 1)]));
    assert_eq!(c.flow(&k).map(|f| f.state), Some(FlowState::SynSeen));
    c.handle_datagram(3 * SEC, AGENT, &report(4, &[(k, seen, 3)]));
    assert_eq!(c.flow(&k).map(|f| f.state), Some(FlowState::Established));
    // The marks are kept across reports: a later pair without one (a new
    // SYN cleared the agent's mark) does not undo the state.
    c.handle_datagram(4 * SEC, AGENT, &report(5, &[(k, 0, 1)]));
    assert_eq!(c.flow(&k).map(|f| f.state), Some(FlowState::Established));
}

#[test]
fn an_agent_without_marks_keeps_the_count_rule() {
    let (mut c, rev, none, _) = placed(Agent::Untracked);
    assert_eq!(none, 0);
    let k = key(1000);
    // One forward packet and the reverse one: not yet (≥ 2 forward).
    c.handle_datagram(2 * SEC, AGENT, &report(3, &[(k, 0, 1), (rev, 0, 1)]));
    assert_eq!(c.flow(&k).map(|f| f.state), Some(FlowState::SynSeen));
    assert!(refused(&mut c, 3 * SEC, 4, 2000));
    // The second forward packet: established by counts, as before.
    c.handle_datagram(4 * SEC, AGENT, &report(5, &[(k, 0, 1)]));
    assert_eq!(c.flow(&k).map(|f| f.state), Some(FlowState::Established));
    assert!(!refused(&mut c, 5 * SEC, 6, 2001));
}

#[test]
fn in_a_mixed_fleet_each_direction_is_judged_by_its_reporter() {
    // The forward affinity on a marking agent (TRACKED, no mark), the
    // reverse one counted by an older agent: the forward direction still
    // needs its mark, whatever the counts.
    let (mut c, rev, _, _) = placed(Agent::Untracked);
    let k = key(1000);
    let older = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 2), 1637);
    c.handle_datagram(2 * SEC, AGENT, &report(3, &[(k, activity::TRACKED, 5)]));
    c.handle_datagram(2 * SEC, older, &report(1, &[(rev, 0, 3)]));
    let f = c.flow(&k).expect("kept");
    assert_eq!((f.packets_fwd, f.packets_rev), (5, 3));
    assert_eq!(f.state, FlowState::SynSeen);
    c.handle_datagram(
        3 * SEC,
        AGENT,
        &report(
            4,
            &[(k, activity::TRACKED | activity::HANDSHAKE_COMPLETE, 1)],
        ),
    );
    assert_eq!(c.flow(&k).map(|f| f.state), Some(FlowState::Established));
}

#[test]
fn a_reopened_flow_needs_the_marks_again() {
    let (mut c, rev, _, seen) = placed(Agent::Hello);
    let k = key(1000);
    c.handle_datagram(2 * SEC, AGENT, &report(3, &[(k, seen, 3), (rev, seen, 2)]));
    assert_eq!(c.flow(&k).map(|f| f.state), Some(FlowState::Established));
    // An RST closes it; a SYN on the same 5-tuple reopens it half-open.
    let mut b = MessageBuilder::new(MessageType::InterestMatchFixed, 4);
    b.push(Segment::AffinityIdentifier(AffinityIdentifier {
        id: 1 << 16,
        reason: interest::RST,
    }));
    b.push(Segment::FixedAffinity(FixedAffinity {
        key: k,
        ..Default::default()
    }));
    c.handle_datagram(3 * SEC, AGENT, &b.finish().unwrap());
    assert_eq!(c.flow(&k).map(|f| f.state), Some(FlowState::Closed));
    c.handle_datagram(3 * SEC + 1, AGENT, &syn(5, 1000));
    assert_eq!(c.flow(&k).map(|f| f.state), Some(FlowState::SynSeen));
    c.handle_datagram(4 * SEC, AGENT, &report(6, &[(k, 0, 2), (rev, 0, 1)]));
    assert_eq!(c.flow(&k).map(|f| f.state), Some(FlowState::SynSeen));
    c.handle_datagram(5 * SEC, AGENT, &report(7, &[(k, seen, 1), (rev, seen, 1)]));
    assert_eq!(c.flow(&k).map(|f| f.state), Some(FlowState::Established));
}
