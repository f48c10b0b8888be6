//! The forwarding agent against the seed's protocol rules that the code
//! once missed (issue 13): Required actions it cannot perform, packets
//! punted without DATA, hold with DATA, returned packets (rewrite, chaining,
//! advertised addresses), first data on fixed affinities, the flags an
//! interest match carries, fixed-affinity ownership and precedence,
//! wildcards without identifier, manager interest data, and signed
//! messages to a receiver without keys. Agent 192.0.2.1, manager
//! 192.0.2.10 (and 192.0.2.11), VIP 203.0.113.10, client 198.18.0.5,
//! backend 198.51.100.2.

mod common;
use affinity_api::{
    dispatch, info, interest, seg, AffinityIdentifier, AffinityKey, AffinityRef, BackupPrecedence,
    DenyReason, IdentityInfo, InterestCriteria, MessageBuilder, MessageType, NatAction, Segment,
    ServiceMessage, ServicePrecedence, WildcardAffinity,
};
use affinity_forwarding_agent::wire::{self, build};
use affinity_forwarding_agent::{
    Agent, AgentConfig, Counter, Disposition, ForwardingAgentInterestData, PacketBuf, Worker,
};
use common::{
    buffer, data, flow_msg, from, install_chain, run_one, syn, syn_interest_msg,
    unknown_required_msg, wildcard_msg, Wc, BACKEND, CLIENT, MGR, MGR2, SEC, VIP,
};
use std::net::Ipv4Addr;
use std::sync::Arc;

fn agent(cfg: AgentConfig) -> (Arc<Agent>, Worker) {
    let a = Agent::new(AgentConfig {
        fixed_capacity: 1024,
        agent_addr: Ipv4Addr::new(192, 0, 2, 1),
        agent_name: "fa1".into(),
        ..cfg
    });
    let w = a.worker();
    (a, w)
}

fn run(w: &mut Worker, now: u64, pkt: &[u8]) -> (Disposition, Vec<u8>) {
    run_one(w, now, pkt, 256)
}

fn returned(
    w: &mut Worker,
    now: u64,
    pkt: &[u8],
    rank: Option<(bool, u16)>,
) -> (Disposition, Vec<u8>) {
    let mut buf = buffer(pkt, 256);
    let d = w.process_returned(now, &mut PacketBuf::new(&mut buf, 256, pkt.len()), rank);
    (d, buf[256..].to_vec())
}

/// The punt in `buf` (in place) as a parsed message's bytes.
fn punt_bytes(d: Disposition, buf: &[u8]) -> Vec<u8> {
    let Disposition::Punt { start, .. } = d else {
        panic!("not punted: {d:?}")
    };
    buf[start..].to_vec()
}

fn fwd_key(cport: u16) -> AffinityKey {
    AffinityKey {
        protocol: wire::TCP,
        src_addr: CLIENT,
        dst_addr: VIP,
        src_port: cport,
        dst_port: 80,
    }
}

/// An update-fixed from `mgr`: one fixed affinity for `key` with the given
/// per-affinity segments, optionally echoing agent data and returning a packet.
fn fixed_msg(
    mgr: Ipv4Addr,
    seq: u64,
    key: AffinityKey,
    ttl: u32,
    per_affinity: &[Segment<'_>],
    echo: Option<&[u8]>,
    packet: Option<&[u8]>,
) -> Vec<u8> {
    common::fixed_msg(mgr, seq, &[(key, ttl, per_affinity)], echo, packet)
}

fn deny_of(bytes: &[u8]) -> (DenyReason, Vec<(u16, bool)>) {
    let m = ServiceMessage::parse(bytes).unwrap();
    assert_eq!(m.msg_type(), MessageType::AffinityUpdateDeny);
    let listed = m
        .segments()
        .find_map(|(s, _)| match s {
            Segment::ActionList(l) => Some(l.entries().collect()),
            _ => None,
        })
        .unwrap_or_default();
    (m.deny_reason().unwrap(), listed)
}

// Item 1 (agent side): NAT disabled, a Required NAT segment is never
// installed without its action; the whole message is dropped and denied.
#[test]
fn required_nat_on_an_agent_without_nat_drops_the_message_with_a_deny() {
    let (a, _w) = agent(AgentConfig {
        disabled_actions: vec![seg::NAT_ACTION],
        ..Default::default()
    });
    let mut wc = Wc::to_vip(10);
    wc.nat = Some(NatAction {
        flags: NatAction::DST_ADDR,
        dst_addr: BACKEND,
        ..Default::default()
    });
    // The builder marks NAT Required (rules.rs); no action list.
    let out = a.handle_control(0, from(MGR), &wildcard_msg(MGR, 1, &[wc], None));
    assert_eq!(a.wildcard_entries(0).len(), 0, "nothing installed");
    assert_eq!(out.replies.len(), 1);
    let (r, listed) = deny_of(&out.replies[0].1);
    assert_eq!(
        (r.code, r.denied_type, r.denied_sequence),
        (DenyReason::UNSUPPORTED_REQUIRED_ACTION, seg::NAT_ACTION, 1)
    );
    assert_eq!(listed, vec![(seg::NAT_ACTION, true)]);

    // The fixed answer to a punt carries Required NAT: dropped whole, the
    // SYN is not returned (so it never leaves untranslated to the VIP).
    a.handle_control(
        0,
        from(MGR),
        &wildcard_msg(MGR, 2, &[Wc::to_vip(10), Wc::from_backends(11)], None),
    );
    let out = a.handle_control(
        SEC,
        from(MGR),
        &flow_msg(MGR, 3, 40000, 30, None, Some(&syn(40000))),
    );
    assert!(out.returned.is_empty());
    assert_eq!(a.fixed_count(SEC), 0);
    let (r, _) = deny_of(&out.replies[0].1);
    assert_eq!(r.denied_type, seg::NAT_ACTION);
    assert_eq!(a.counter(Counter::UnsupportedRequiredSegment), 2);
}

// Item 11 (second part): the deny names every unsupported action.
#[test]
fn deny_lists_every_unsupported_required_action() {
    let (a, _w) = agent(AgentConfig {
        disabled_actions: vec![seg::NAT_ACTION, seg::SEQ_ADJUST_ACTION],
        ..Default::default()
    });
    let mut wc = Wc::to_vip(10);
    wc.actions_required = vec![
        seg::INTEREST_CRITERIA_ACTION,
        seg::NAT_ACTION,
        seg::SEQ_ADJUST_ACTION,
    ];
    let out = a.handle_control(0, from(MGR), &wildcard_msg(MGR, 1, &[wc], None));
    let (r, listed) = deny_of(&out.replies[0].1);
    assert_eq!(r.denied_type, seg::NAT_ACTION);
    assert_eq!(
        listed,
        vec![(seg::NAT_ACTION, true), (seg::SEQ_ADJUST_ACTION, true)]
    );
}

// Item 4: criteria with none of DATA/COPY/HOLD: the packet still goes to
// the manager (not held, so it must not be lost).
#[test]
fn punt_without_data_copy_or_hold_carries_the_packet() {
    let (a, mut w) = agent(AgentConfig::default());
    let mut wc = Wc::to_vip(10);
    wc.interest = Some(InterestCriteria {
        address: Ipv4Addr::UNSPECIFIED,
        port: 0,
        mask: interest::ALL,
        flags: 0,
    });
    a.handle_control(0, from(MGR), &wildcard_msg(MGR, 1, &[wc], None));
    let (d, buf) = run(&mut w, SEC, &syn(1));
    let m = punt_bytes(d, &buf);
    let m = ServiceMessage::parse(&m).unwrap();
    assert_eq!(m.ip_packet().unwrap(), &syn(1)[..]);
    assert!(w.take_messages().is_empty());
}

// Item 5: HOLD with DATA: the manager returns the packet it was sent and
// releases the held one; the packet leaves once.
#[test]
fn hold_with_data_returns_the_packet_once() {
    let (a, mut w) = agent(AgentConfig::default());
    a.handle_control(
        0,
        from(MGR),
        &syn_interest_msg(InterestCriteria::HOLD | InterestCriteria::DATA),
    );
    assert_eq!(
        run(&mut w, 0, &syn(1)).0,
        Disposition::Consumed(Counter::Held)
    );
    let msgs = w.take_messages();
    let m = ServiceMessage::parse(&msgs[0].1).unwrap();
    let echo = m.fa_interest_data().unwrap().to_vec();
    let pkt = m.ip_packet().unwrap().to_vec();
    let out = a.handle_control(
        SEC / 10,
        from(MGR),
        &flow_msg(MGR, 2, 1, 30, Some(&echo), Some(&pkt)),
    );
    assert_eq!(out.returned.len(), 1);
    assert_eq!(out.returned[0].packet, syn(1));
    assert_eq!(a.held_packets(), 0);
}

// Item 6: the wildcard's own NAT (and sequence adjust) applies to the
// packet the manager returns, which it does not punt again.
#[test]
fn returned_packet_gets_the_punting_wildcards_nat() {
    let (a, mut w) = agent(AgentConfig::default());
    let mut wc = Wc::to_vip(10);
    wc.nat = Some(NatAction {
        flags: NatAction::DST_ADDR | NatAction::DST_PORT,
        dst_addr: BACKEND,
        dst_port: 8080,
        ..Default::default()
    });
    a.handle_control(0, from(MGR), &wildcard_msg(MGR, 1, &[wc], None));
    let (d, buf) = run(&mut w, SEC, &syn(1));
    let m = punt_bytes(d, &buf);
    let m = ServiceMessage::parse(&m).unwrap();
    let rank = ForwardingAgentInterestData::decode(m.fa_interest_data().unwrap())
        .unwrap()
        .rank();
    let (d, p) = returned(&mut w, SEC, &syn(1), Some(rank));
    assert_eq!(d, Disposition::Pass);
    let info = wire::parse_ipv4(&p).unwrap();
    assert_eq!(
        (info.key.dst_addr, info.key.dst_port),
        (BACKEND, 8080),
        "translated"
    );
    assert!(wire::checksum::verify_l4(&p, &info));
}

// Item 9: chaining continues after a fixed update: the first service's
// fixed affinity applies, then the second service (lower precedence) gets
// the packet.
#[test]
fn chaining_continues_to_the_next_service_after_a_fixed_update() {
    let (a, mut w) = agent(AgentConfig::default());
    install_chain(&a);
    let (d, buf) = run(&mut w, SEC, &syn(1));
    let Disposition::Punt { to, .. } = d else {
        panic!("{d:?}")
    };
    assert_eq!(*to.ip(), MGR);
    let m = punt_bytes(d, &buf);
    let m = ServiceMessage::parse(&m).unwrap();
    let echo = m.fa_interest_data().unwrap().to_vec();
    let out = a.handle_control(
        SEC,
        from(MGR),
        &fixed_msg(MGR, 2, fwd_key(1), 30, &[], Some(&echo), Some(&syn(1))),
    );
    assert!(out.replies.is_empty(), "{:?}", out.replies);
    let r = &out.returned[0];
    let (d, _) = returned(&mut w, SEC, &r.packet, r.rank_limit);
    let Disposition::Punt { to, .. } = d else {
        panic!("chaining stopped: {d:?}")
    };
    assert_eq!(*to.ip(), MGR2);
}

// Item 11: a packet a manager returns to an advertised address is routed.
#[test]
fn returned_packet_to_an_advertised_address_is_routed() {
    let (a, mut w) = agent(AgentConfig::default());
    let wc = Wc::advertising_vip(10);
    a.handle_control(0, from(MGR), &wildcard_msg(MGR, 1, &[wc], None));
    let p = build::tcp(CLIENT, 1, VIP, 22, build::TCP_SYN, 0, 0, &[]);
    assert_eq!(
        run(&mut w, 0, &p).0,
        Disposition::Drop(Counter::DropAdvertised)
    );
    let (d, _) = returned(&mut w, 0, &p, Some((true, u16::MAX - 100)));
    assert_eq!(d, Disposition::Pass);
    assert_eq!(a.counter(Counter::ReturnedAdvertisedRouted), 1);
}

// Item 11: interest matches carry the affinity's dispatch and information
// flags (seed FIG 9D).
#[test]
fn interest_match_carries_the_affinitys_flags() {
    let (a, mut w) = agent(AgentConfig::default());
    let mut wc = Wc::to_vip(10);
    wc.dispatch = dispatch::FORWARD;
    wc.info = info::STATISTICS;
    wc.forward = BACKEND;
    a.handle_control(0, from(MGR), &wildcard_msg(MGR, 1, &[wc], None));
    let (d, buf) = run(&mut w, SEC, &syn(1));
    let m = punt_bytes(d, &buf);
    let m = ServiceMessage::parse(&m).unwrap();
    let e = m.affinities().next().unwrap();
    let AffinityRef::Fixed(f) = e.affinity else {
        panic!()
    };
    assert_eq!((f.dispatch_flags, f.info_flags), (1, 1));
}

// Item 7: first data (bit 7) is reported for fixed affinities, once.
#[test]
fn first_data_is_reported_on_fixed_affinities_once() {
    let (a, mut w) = agent(AgentConfig::default());
    a.handle_control(0, from(MGR), &wildcard_msg(MGR, 1, &[Wc::to_vip(10)], None));
    let watch = InterestCriteria {
        address: Ipv4Addr::UNSPECIFIED,
        port: 0,
        mask: interest::FIRST_DATA | interest::DATA,
        flags: InterestCriteria::COPY,
    };
    a.handle_control(
        0,
        from(MGR),
        &fixed_msg(
            MGR,
            2,
            fwd_key(1),
            30,
            &[Segment::InterestCriteria(watch)],
            None,
            None,
        ),
    );
    let mut reasons = Vec::new();
    for _ in 0..2 {
        assert_eq!(
            run(&mut w, SEC, &data(1, build::TCP_ACK)).0,
            Disposition::Pass
        );
        for (_, m) in w.take_messages() {
            let m = ServiceMessage::parse(&m).unwrap();
            assert_eq!(m.msg_type(), MessageType::InterestMatchFixed);
            reasons.push(m.affinities().next().unwrap().identifier.unwrap().reason);
        }
    }
    assert_eq!(reasons.len(), 2);
    assert_ne!(reasons[0] & interest::FIRST_DATA, 0, "{:#x}", reasons[0]);
    assert_eq!(reasons[1] & interest::FIRST_DATA, 0, "{:#x}", reasons[1]);
}

fn nat_to(addr: Ipv4Addr) -> Segment<'static> {
    Segment::NatAction(NatAction {
        flags: NatAction::DST_ADDR | NatAction::DST_PORT,
        dst_addr: addr,
        dst_port: 8080,
        ..Default::default()
    })
}

/// Where a data packet of client port 1 goes now (destination address).
fn sent_to(w: &mut Worker) -> Ipv4Addr {
    let (d, buf) = run(w, 2 * SEC, &data(1, build::TCP_ACK));
    assert_eq!(d, Disposition::Pass);
    wire::parse_ipv4(&buf[256..]).unwrap().key.dst_addr
}

// Item 10: a fixed affinity belongs to its manager: a backup's (lower
// precedence) replacement or deletion is ignored; a manager that outranks
// the owner may replace it.
#[test]
fn fixed_affinity_changes_are_limited_to_the_owner_or_a_higher_precedence() {
    let (a, mut w) = agent(AgentConfig::default());
    let other = Ipv4Addr::new(198, 51, 100, 3);
    let mut backup = Wc::to_vip(10);
    backup.backup = 10;
    a.handle_control(0, from(MGR), &wildcard_msg(MGR, 1, &[Wc::to_vip(10)], None));
    a.handle_control(0, from(MGR2), &wildcard_msg(MGR2, 1, &[backup], None));
    a.handle_control(
        SEC,
        from(MGR),
        &fixed_msg(MGR, 2, fwd_key(1), 30, &[nat_to(BACKEND)], None, None),
    );
    assert_eq!(sent_to(&mut w), BACKEND);
    // The backup's affinity for the same flow is ignored (seed FIG 9B) ...
    a.handle_control(
        SEC,
        from(MGR2),
        &fixed_msg(MGR2, 2, fwd_key(1), 30, &[nat_to(other)], None, None),
    );
    assert_eq!(sent_to(&mut w), BACKEND);
    // ... and so is its deletion.
    a.handle_control(
        SEC,
        from(MGR2),
        &fixed_msg(MGR2, 3, fwd_key(1), 0, &[], None, None),
    );
    assert_eq!(a.fixed_count(SEC), 1);
    assert_eq!(a.counter(Counter::FixedNotOwner), 2);
    // A higher service precedence outranks the owner.
    let higher = Segment::ServicePrecedence(ServicePrecedence {
        search_first: false,
        value: 300,
    });
    a.handle_control(
        SEC,
        from(MGR2),
        &fixed_msg(
            MGR2,
            4,
            fwd_key(1),
            30,
            &[higher, nat_to(other)],
            None,
            None,
        ),
    );
    assert_eq!(sent_to(&mut w), other);
    // The owner now is the second manager: the first may no longer
    // delete it (its precedence 100 is lower than 300).
    a.handle_control(
        SEC,
        from(MGR),
        &fixed_msg(MGR, 5, fwd_key(1), 0, &[], None, None),
    );
    assert_eq!(a.fixed_count(SEC), 1);
    let lower = Segment::BackupPrecedence(BackupPrecedence { value: 20 });
    a.handle_control(
        SEC,
        from(MGR2),
        &fixed_msg(MGR2, 5, fwd_key(1), 0, &[lower], None, None),
    );
    assert_eq!(a.fixed_count(SEC), 0, "the owner deletes it");
}

// Item 8: wildcards without affinity identifier do not replace each other.
#[test]
fn wildcards_without_identifier_are_kept_apart() {
    let (a, _w) = agent(AgentConfig::default());
    let anon = |port: u16, ttl: u32, seq: u64| {
        let mut b = MessageBuilder::new(MessageType::AffinityUpdateWildcard, seq);
        b.push(Segment::IdentityInfo(IdentityInfo {
            address: MGR,
            host_name: "mgr",
        }));
        b.push(Segment::WildcardAffinity(WildcardAffinity {
            key: AffinityKey {
                dst_port: port,
                ..fwd_key(0)
            },
            dst_mask: Ipv4Addr::BROADCAST,
            ttl,
            ..Default::default()
        }));
        b.finish().unwrap()
    };
    for (seq, port) in [(1, 80), (2, 443), (3, 8443)] {
        a.handle_control(0, from(MGR), &anon(port, 30, seq));
    }
    assert_eq!(a.wildcard_entries(0).len(), 3);
    // Refreshing one keeps three; deleting one leaves the other two.
    a.handle_control(0, from(MGR), &anon(443, 30, 4));
    assert_eq!(a.wildcard_entries(0).len(), 3);
    a.handle_control(0, from(MGR), &anon(443, 0, 5));
    assert_eq!(a.wildcard_entries(0).len(), 2);
}

// Item 3: manager interest data is echoed in interest matches.
#[test]
fn manager_interest_data_is_echoed_in_interest_matches() {
    let (a, mut w) = agent(AgentConfig::default());
    let mut b = MessageBuilder::new(MessageType::AffinityUpdateWildcard, 1);
    b.push(Segment::IdentityInfo(IdentityInfo {
        address: MGR,
        host_name: "mgr",
    }));
    b.push(Segment::SmInterestData(b"service=web;v=3"));
    b.push(Segment::WildcardAffinity(WildcardAffinity {
        key: AffinityKey {
            src_port: 0,
            ..fwd_key(0)
        },
        dst_mask: Ipv4Addr::BROADCAST,
        ttl: 30,
        ..Default::default()
    }));
    b.push(Segment::AffinityIdentifier(AffinityIdentifier {
        id: 10,
        reason: 0,
    }));
    b.push(Segment::InterestCriteria(InterestCriteria {
        address: Ipv4Addr::UNSPECIFIED,
        port: 0,
        mask: interest::ALL,
        flags: InterestCriteria::DATA,
    }));
    a.handle_control(0, from(MGR), &b.finish().unwrap());
    // In place, and out of line (no headroom).
    let (d, buf) = run(&mut w, SEC, &syn(1));
    let m = punt_bytes(d, &buf);
    let m = ServiceMessage::parse(&m).unwrap();
    assert_eq!(m.sm_interest_data(), Some(&b"service=web;v=3"[..]));
    assert!(m.fa_interest_data().is_some());
    let mut small = buffer(&syn(2), 4);
    let mut pkts = [PacketBuf::new(&mut small, 4, syn(2).len())];
    let mut out = [Disposition::Pass];
    w.process_batch(SEC, &mut pkts, &mut out);
    assert_eq!(out[0], Disposition::Consumed(Counter::PuntCopiedOut));
    let msgs = w.take_messages();
    let m = ServiceMessage::parse(&msgs[0].1).unwrap();
    assert_eq!(m.sm_interest_data(), Some(&b"service=web;v=3"[..]));
}

// Item 2: a receiver that expects no security ignores the security
// segment and accepts the message (seed).
#[test]
fn receiver_without_keys_accepts_signed_messages() {
    let (a, _w) = agent(AgentConfig::default());
    let key = affinity_api::Key::new(1, affinity_api::AuthAlgorithm::HmacSha256, b"k".to_vec());
    let out = a.handle_control(
        0,
        from(MGR),
        &wildcard_msg(MGR, 1, &[Wc::to_vip(10)], Some(&key)),
    );
    assert!(out.replies.is_empty());
    assert_eq!(a.wildcard_entries(0).len(), 1);
    assert_eq!(a.counter(Counter::CtlAuthFail), 0);
}

// Item 11 (first part): with authentication on, a correctly signed message
// carrying an unknown Required segment is denied (the digest is checked
// over the raw bytes); a wrongly signed one is not answered.
#[test]
fn signed_message_with_unknown_required_segment_is_denied() {
    let key = affinity_api::Key::new(1, affinity_api::AuthAlgorithm::HmacSha256, b"k".to_vec());
    let (a, _w) = agent(AgentConfig {
        auth: affinity_api::AuthPolicy::with_key(key.clone()),
        ..Default::default()
    });
    let msg = |k: &affinity_api::Key, seq: u64| unknown_required_msg(seq, Some(k));
    let out = a.handle_control(0, from(MGR), &msg(&key, 9));
    assert_eq!(out.replies.len(), 1);
    let (r, _) = deny_of(&out.replies[0].1);
    assert_eq!(
        (r.code, r.denied_type, r.denied_sequence),
        (DenyReason::UNKNOWN_REQUIRED_SEGMENT, 99, 9)
    );
    let wrong = affinity_api::Key::new(1, affinity_api::AuthAlgorithm::HmacSha256, b"x".to_vec());
    assert!(a
        .handle_control(0, from(MGR), &msg(&wrong, 10))
        .replies
        .is_empty());
    assert_eq!(a.wildcard_entries(0).len(), 0);
}
