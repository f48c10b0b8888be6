//! `Agent::poll_timeout`: the agent says when `tick` next has work — the
//! first hold deadline, the next fixed expiry check, the next wildcard
//! reclaim — and `tick` at that time does it.

mod common;
use affinity_api::InterestCriteria;
use affinity_forwarding_agent::{Agent, AgentConfig, Counter, Disposition, PacketBuf};
use common::{flow_msg, from, syn, syn_interest_msg, MGR, SEC};
use std::net::Ipv4Addr;

const MS: u64 = 1_000_000;

fn held_service(hold_timeout_ms: u64) -> std::sync::Arc<Agent> {
    let a = Agent::new(AgentConfig {
        fixed_capacity: 1024,
        agent_addr: Ipv4Addr::new(192, 0, 2, 1),
        hold_timeout_ms,
        ..Default::default()
    });
    a.handle_control(0, from(MGR), &syn_interest_msg(InterestCriteria::HOLD));
    a
}

#[test]
fn nothing_installed_nothing_scheduled() {
    let a = Agent::new(AgentConfig {
        fixed_capacity: 1024,
        ..Default::default()
    });
    assert_eq!(a.poll_timeout(), None);
    assert!(a.tick(10 * SEC).is_empty());
    assert_eq!(a.poll_timeout(), None);
}

#[test]
fn wildcards_are_due_a_second_after_they_expire() {
    let a = held_service(500);
    // TTL 30 s from time 0: expired at 30 s, reclaimed from 31 s.
    assert_eq!(a.poll_timeout(), Some(31 * SEC));
    assert!(a.tick(31 * SEC).is_empty());
    assert_eq!(a.counter(Counter::WildcardReclaimed), 2);
    assert_eq!(a.poll_timeout(), None);
}

#[test]
fn a_held_packet_makes_its_deadline_the_next_timeout() {
    let a = held_service(500);
    let mut w = a.worker();
    let mut buf = vec![0u8; 256 + 64];
    let p = syn(1);
    buf[256..256 + p.len()].copy_from_slice(&p);
    let mut pkts = [PacketBuf::new(&mut buf, 256, p.len())];
    let mut out = [Disposition::Pass];
    w.process_batch(200 * MS, &mut pkts, &mut out);
    assert_eq!(out[0], Disposition::Consumed(Counter::Held));
    assert_eq!(a.held_packets(), 1);
    // Held at 0.2 s for 500 ms: due at 0.7 s, before the wildcards.
    assert_eq!(a.poll_timeout(), Some(700 * MS));
    // Not yet due: nothing sent, still held.
    assert!(a.tick(699 * MS).is_empty());
    assert_eq!(a.held_packets(), 1);
    assert_eq!(a.poll_timeout(), Some(700 * MS));
    // Due: the packet goes to its manager and the wildcards are next.
    assert_eq!(a.tick(700 * MS).len(), 1);
    assert_eq!(a.counter(Counter::HoldTimeout), 1);
    assert_eq!(a.poll_timeout(), Some(31 * SEC));
}

#[test]
fn a_fixed_affinity_is_checked_the_second_after_it_expires() {
    let a = held_service(500);
    // TTL 10 s installed at 2 s (both directions of the flow): expires
    // at 12 s, checked from 13 s.
    a.handle_control(2 * SEC, from(MGR), &flow_msg(MGR, 2, 1, 10, None, None));
    assert_eq!(a.fixed_count(2 * SEC), 2);
    assert_eq!(a.poll_timeout(), Some(13 * SEC));
    assert!(a.tick(13 * SEC).is_empty());
    assert_eq!(a.counter(Counter::FixedReclaimed), 2);
    assert_eq!(a.poll_timeout(), Some(31 * SEC));
}
