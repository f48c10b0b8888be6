//! Issue 16, item 5 (agent side): after a (re)start, until each configured
//! manager's wildcards arrived or the hold-down ends, a TCP segment that
//! matches nothing is dropped, not routed bare (a backend's reply routed
//! untranslated draws a RST from the client). Failed before the warm-up:
//! every such packet was passed.

mod common;

use affinity_forwarding_agent::{Agent, AgentConfig, Counter, Disposition, PacketBuf};
use common::{from, reply, syn, wildcard_msg, Wc, BACKEND, CLIENT, MGR, MGR2, SEC};
use std::sync::Arc;

fn agent() -> Arc<Agent> {
    Agent::new(AgentConfig {
        fixed_capacity: 1024,
        ..Default::default()
    })
}

fn run(a: &Arc<Agent>, now: u64, pkt: &[u8]) -> Disposition {
    let mut w = a.worker();
    let mut buf = pkt.to_vec();
    let n = buf.len();
    let mut out = [Disposition::Pass];
    w.process_batch(now, &mut [PacketBuf::new(&mut buf, 0, n)], &mut out);
    out[0]
}

const DROP: Disposition = Disposition::Drop(Counter::DropWarmUp);

#[test]
fn warm_up_drops_unmatched_tcp_until_every_manager_sent_wildcards() {
    let a = agent();
    a.start_warm_up(0, 5_000, &[MGR, MGR2]);
    assert!(a.warming(SEC));
    // A backend's reply (ACK, FIN, SYN-ACK) of a connection the agent no
    // longer knows: dropped. A bare SYN and UDP still pass.
    for flags in [0x10u8, 0x11, 0x12, 0x18] {
        assert_eq!(run(&a, SEC, &reply(4000, flags)), DROP, "flags {flags:#x}");
    }
    assert_eq!(run(&a, SEC, &syn(4001)), Disposition::Pass);
    let udp = affinity_forwarding_agent::wire::build::udp(BACKEND, 53, CLIENT, 4000, b"x");
    assert_eq!(run(&a, SEC, &udp), Disposition::Pass);
    // One manager's wildcards are not enough...
    a.handle_control(
        SEC,
        from(MGR),
        &wildcard_msg(MGR, 1, &[Wc::to_vip(1)], None),
    );
    assert!(a.warming(SEC));
    assert_eq!(run(&a, SEC, &reply(4000, 0x10)), DROP);
    // ...the last one's ends the window: a miss is routed again.
    a.handle_control(
        SEC,
        from(MGR2),
        &wildcard_msg(MGR2, 1, &[Wc::to_vip(2)], None),
    );
    assert!(!a.warming(SEC));
    assert_eq!(run(&a, SEC, &reply(4000, 0x10)), Disposition::Pass);
    let shown = a.counter(Counter::DropWarmUp);
    assert_eq!(shown, 5, "drops counted");
}

#[test]
fn warm_up_ends_after_the_hold_down_and_is_off_by_default() {
    let a = agent();
    assert!(!a.warming(0));
    assert_eq!(run(&a, 0, &reply(4000, 0x10)), Disposition::Pass);
    a.start_warm_up(10 * SEC, 2_000, &[MGR]);
    assert_eq!(run(&a, 11 * SEC, &reply(4000, 0x10)), DROP);
    assert_eq!(run(&a, 12 * SEC, &reply(4000, 0x10)), Disposition::Pass);
    // No managers or no hold-down: warm at once.
    a.start_warm_up(20 * SEC, 0, &[MGR]);
    assert!(!a.warming(20 * SEC));
    a.start_warm_up(20 * SEC, 2_000, &[]);
    assert!(!a.warming(20 * SEC));
}

#[test]
fn warm_up_leaves_matched_packets_alone() {
    let a = agent();
    a.handle_control(
        0,
        from(MGR),
        &wildcard_msg(MGR, 1, &[Wc::from_backends(1)], None),
    );
    a.start_warm_up(0, 5_000, &[MGR2]);
    // Covered by a wildcard: handled by it (sent to its manager), not
    // dropped by the warm-up.
    assert_ne!(run(&a, SEC, &reply(4000, 0x18)), DROP);
    assert_eq!(a.counter(Counter::WildcardHit), 1);
    assert_eq!(a.counter(Counter::DropWarmUp), 0);
}

#[test]
fn warm_up_lets_a_managers_own_connections_through() {
    // A manager's health check crosses the agent on its way to a backend
    // (the e2e lab routes the control LAN's traffic to the backends through
    // agent 1). With the backup manager down, the window runs its full
    // length: dropping the backend's SYN-ACK to the manager there marked
    // every backend down after each agent restart. Failed before the
    // exemption: both segments were dropped.
    let a = agent();
    a.start_warm_up(0, 5_000, &[MGR, MGR2]);
    let build = |src, sport, dst, dport, flags| {
        affinity_forwarding_agent::wire::build::tcp(src, sport, dst, dport, flags, 7, 8, &[])
    };
    let syn_ack = build(BACKEND, 8080, MGR, 40000, 0x12);
    let ack = build(MGR, 40000, BACKEND, 8080, 0x10);
    assert_eq!(run(&a, SEC, &syn_ack), Disposition::Pass);
    assert_eq!(run(&a, SEC, &ack), Disposition::Pass);
    assert_eq!(a.counter(Counter::DropWarmUp), 0);
    // The same reply to a client is still held back.
    assert_eq!(
        run(&a, SEC, &build(BACKEND, 8080, CLIENT, 40000, 0x12)),
        DROP
    );
}
