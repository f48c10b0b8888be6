//! Table-driven data-path tests: affinities installed through real service
//! messages, packets in, bytes/dispositions/counters out.

mod common;
use affinity_api::{
    dispatch, info, interest, seg, AdvertiseAction, AffinityIdentifier, AffinityRef, AuthAlgorithm,
    AuthPolicy, DenyReason, InterestCriteria, Key, MessageType, ServiceMessage, MANAGER_PORT,
};
use affinity_forwarding_agent::wire::{self, build};
use affinity_forwarding_agent::{
    Agent, AgentConfig, Counter, Disposition, ForwardingAgentInterestData, PacketBuf, Worker,
};
use common::{
    buffer, checksums_ok, data, flow_msg, from, install_chain, reply, run_one, syn,
    syn_interest_msg, unknown_required_msg, wildcard_msg, Wc, BACKEND, CLIENT, MGR, MGR2, SEC, VIP,
};
use std::net::{Ipv4Addr, SocketAddrV4};

fn agent(cfg: AgentConfig) -> (std::sync::Arc<Agent>, Worker) {
    let a = Agent::new(AgentConfig {
        fixed_capacity: cfg.fixed_capacity.min(1024),
        agent_addr: Ipv4Addr::new(192, 0, 2, 1),
        agent_name: "fa1".into(),
        ..cfg
    });
    let w = a.worker();
    (a, w)
}

fn install_service(a: &Agent) {
    let out = a.handle_control(
        0,
        from(MGR),
        &wildcard_msg(MGR, 1, &[Wc::to_vip(10), Wc::from_backends(11)], None),
    );
    assert!(out.replies.is_empty());
    assert_eq!(a.wildcard_entries(0).len(), 2);
}

#[test]
fn syn_is_punted_in_place_with_interest_match() {
    let (a, mut w) = agent(AgentConfig::default());
    install_service(&a);
    let pkt = syn(40000);
    let (d, buf) = run_one(&mut w, SEC, &pkt, 256);
    let Disposition::Punt { to, start } = d else {
        panic!("{d:?}")
    };
    assert_eq!(to, SocketAddrV4::new(MGR, MANAGER_PORT));
    let msg = ServiceMessage::parse(&buf[start..]).unwrap();
    assert_eq!(msg.msg_type(), MessageType::InterestMatchWildcard);
    assert_eq!(msg.ip_packet().unwrap(), &pkt[..]);
    let e = msg.affinities().next().unwrap();
    assert_eq!(
        e.identifier.unwrap(),
        AffinityIdentifier {
            id: 10,
            reason: interest::SYN | interest::ALL
        }
    );
    assert!(
        matches!(e.affinity, AffinityRef::Fixed(f) if f.key.src_port == 40000 && f.key.dst_addr == VIP)
    );
    assert_eq!(msg.identity().unwrap().host_name, "fa1");
    assert_eq!(a.counter(Counter::Punted), 1);
}

#[test]
fn punt_in_place_leaves_link_padding_out() {
    // Ethernet pads a 40-byte SYN to 46 bytes; the padding is not part of
    // the IP packet, and the punt (which ends where the packet's buffer
    // length now says) carries exactly the IP packet. Found by the fuzzer.
    let (a, mut w) = agent(AgentConfig::default());
    install_service(&a);
    let pkt = syn(40000);
    let mut padded = pkt.clone();
    padded.extend_from_slice(&[0xee; 6]);
    let mut buf = buffer(&padded, 256);
    let mut pkts = [PacketBuf::new(&mut buf, 256, padded.len())];
    let mut out = [Disposition::Pass];
    w.process_batch(SEC, &mut pkts, &mut out);
    let Disposition::Punt { start, .. } = out[0] else {
        panic!("{:?}", out[0])
    };
    assert_eq!(pkts[0].len, pkt.len());
    let end = pkts[0].start + pkts[0].len;
    let msg = ServiceMessage::parse(&buf[start..end]).unwrap();
    assert_eq!(msg.ip_packet().unwrap(), &pkt[..]);
}

#[test]
fn punt_without_headroom_is_copied_out() {
    let (a, mut w) = agent(AgentConfig::default());
    install_service(&a);
    let (d, _) = run_one(&mut w, SEC, &syn(40000), 8);
    assert_eq!(d, Disposition::Consumed(Counter::PuntCopiedOut));
    let msgs = w.take_messages();
    assert_eq!(msgs.len(), 1);
    assert!(ServiceMessage::parse(&msgs[0].1)
        .unwrap()
        .ip_packet()
        .is_some());
    assert_eq!(a.counter(Counter::PuntCopiedOut), 1);
}

#[test]
fn fixed_affinities_nat_both_directions_with_valid_checksums() {
    let (a, mut w) = agent(AgentConfig::default());
    install_service(&a);
    let out = a.handle_control(
        SEC,
        from(MGR),
        &flow_msg(MGR, 2, 40000, 30, None, Some(&syn(40000))),
    );
    assert!(out.replies.is_empty(), "{:?}", out.replies);
    assert_eq!(out.returned.len(), 1);
    assert_eq!(a.fixed_count(SEC), 2);

    // The returned SYN is NAT'ed to the backend, not punted again.
    let mut buf = buffer(&out.returned[0].packet, 64);
    let len = out.returned[0].packet.len();
    let d = w.process_returned(
        SEC,
        &mut PacketBuf::new(&mut buf, 64, len),
        out.returned[0].rank_limit,
    );
    assert_eq!(d, Disposition::Pass);
    let p = &buf[64..];
    assert_eq!(&p[16..20], &BACKEND.octets());
    assert_eq!(u16::from_be_bytes([p[22], p[23]]), 8080);
    assert!(checksums_ok(p));

    // Expected bytes: the same packet built directly towards the backend.
    let table: [(Vec<u8>, Vec<u8>); 2] = [
        (
            data(40000, build::TCP_ACK | build::TCP_PSH),
            build::tcp(
                CLIENT,
                40000,
                BACKEND,
                8080,
                build::TCP_ACK | build::TCP_PSH,
                1001,
                5000,
                b"GET / HTTP/1.0\r\n\r\n",
            ),
        ),
        (
            reply(40000, build::TCP_ACK),
            build::tcp(
                VIP,
                80,
                CLIENT,
                40000,
                build::TCP_ACK,
                5000,
                1019,
                b"HTTP/1.0 200 OK\r\n\r\n",
            ),
        ),
    ];
    for (input, expected) in table {
        let (d, buf) = run_one(&mut w, 2 * SEC, &input, 64);
        assert_eq!(d, Disposition::Pass);
        assert_eq!(&buf[64..], &expected[..], "rewritten bytes");
        assert!(checksums_ok(&buf[64..]));
    }
    assert_eq!(a.counter(Counter::NatApplied), 3);
    assert_eq!(a.counter(Counter::FixedHit), 3);
    let rows = a.fixed_entries(2 * SEC, 10, |k| k.src_addr == CLIENT);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].packets, 2);
    // `fixed limit 0` lists none (it listed one: the limit was checked
    // after a row was taken).
    assert!(a.fixed_entries(2 * SEC, 0, |_| true).is_empty());
    let text = affinity_forwarding_agent::show::render(&a, 2 * SEC, "fixed limit 0");
    assert!(text.contains("(showing 0)"), "{text}");

    // `clear affinity stats`: the summed counters restart from zero while
    // the threads' own keep growing; per-flow counters stay with the flow.
    let text = affinity_forwarding_agent::show::render(&a, 2 * SEC, "clear stats");
    assert!(text.contains("cleared"), "{text}");
    assert_eq!(a.counter(Counter::FixedHit), 0);
    let (d, _) = run_one(&mut w, 2 * SEC, &reply(40000, build::TCP_ACK), 64);
    assert_eq!(d, Disposition::Pass);
    assert_eq!(a.counter(Counter::FixedHit), 1);
    assert!(a
        .counters()
        .iter()
        .any(|&(n, v)| n == Counter::NatApplied.name() && v == 1));
    let rows = a.fixed_entries(2 * SEC, 10, |k| k.src_addr == CLIENT);
    assert_eq!(rows[0].packets, 2);
}

#[test]
fn fin_on_fixed_affinity_sends_copy_and_forwards() {
    let (a, mut w) = agent(AgentConfig::default());
    install_service(&a);
    a.handle_control(SEC, from(MGR), &flow_msg(MGR, 2, 40000, 30, None, None));
    let (d, buf) = run_one(
        &mut w,
        SEC,
        &data(40000, build::TCP_FIN | build::TCP_ACK),
        64,
    );
    assert_eq!(d, Disposition::Pass);
    assert_eq!(&buf[64 + 16..64 + 20], &BACKEND.octets());
    let msgs = w.take_messages();
    assert_eq!(msgs.len(), 1);
    let m = ServiceMessage::parse(&msgs[0].1).unwrap();
    assert_eq!(m.msg_type(), MessageType::InterestMatchFixed);
    assert_ne!(
        m.affinities().next().unwrap().identifier.unwrap().reason & interest::FIN,
        0
    );
    assert!(m.ip_packet().is_none());
}

#[test]
fn messages_back_to_back_in_one_datagram_are_all_applied() {
    // What a manager's UDP GSO burst looks like to an agent that captures
    // before the kernel segments it.
    let (a, mut w) = agent(AgentConfig::default());
    install_service(&a);
    let mut datagram = flow_msg(MGR, 2, 40000, 30, None, Some(&syn(40000)));
    datagram.extend(flow_msg(MGR, 3, 40001, 30, None, Some(&syn(40001))));
    let out = a.handle_control(SEC, from(MGR), &datagram);
    assert!(out.replies.is_empty(), "{:?}", out.replies);
    assert_eq!(out.returned.len(), 2);
    assert_eq!(a.fixed_count(SEC), 4);
    for r in &out.returned {
        let mut buf = buffer(&r.packet, 64);
        let len = r.packet.len();
        let d = w.process_returned(SEC, &mut PacketBuf::new(&mut buf, 64, len), r.rank_limit);
        assert_eq!(d, Disposition::Pass);
        assert_eq!(&buf[64 + 16..64 + 20], &BACKEND.octets());
    }
    // A broken frame after a good message: the good one stands, the rest
    // is counted as unparsable.
    let errors = a.counter(Counter::CtlParseError);
    let mut broken = flow_msg(MGR, 4, 40002, 30, None, None);
    broken.extend_from_slice(&[1, 0, 0]);
    a.handle_control(SEC, from(MGR), &broken);
    assert_eq!(a.fixed_count(SEC), 6);
    assert_eq!(a.counter(Counter::CtlParseError), errors + 1);
}

#[test]
fn fixed_without_supporting_wildcard_is_denied() {
    let (a, _w) = agent(AgentConfig::default());
    let out = a.handle_control(SEC, from(MGR), &flow_msg(MGR, 2, 40000, 30, None, None));
    assert_eq!(a.fixed_count(SEC), 0);
    assert_eq!(out.replies.len(), 2);
    let m = ServiceMessage::parse(&out.replies[0].1).unwrap();
    assert_eq!(m.msg_type(), MessageType::AffinityUpdateDeny);
    assert_eq!(
        m.deny_reason().unwrap().code,
        DenyReason::NO_SUPPORTING_WILDCARD
    );
    // A wildcard of another manager does not support it either.
    a.handle_control(
        SEC,
        from(MGR2),
        &wildcard_msg(MGR2, 1, &[Wc::to_vip(10), Wc::from_backends(11)], None),
    );
    a.handle_control(SEC, from(MGR), &flow_msg(MGR, 3, 40000, 30, None, None));
    assert_eq!(a.fixed_count(SEC), 0);
    assert_eq!(a.counter(Counter::FixedNoWildcard), 4);
}

#[test]
fn unsupported_required_action_is_denied_and_affinity_discarded() {
    let (a, _w) = agent(AgentConfig {
        disabled_actions: vec![seg::ADVERTISE_ACTION],
        ..Default::default()
    });
    let mut wc = Wc::to_vip(10);
    wc.actions_required = vec![seg::ADVERTISE_ACTION];
    wc.advertise = Some(AdvertiseAction {
        address: VIP,
        mask: None,
    });
    let out = a.handle_control(0, from(MGR), &wildcard_msg(MGR, 1, &[wc], None));
    assert_eq!(a.wildcard_entries(0).len(), 0);
    let m = ServiceMessage::parse(&out.replies[0].1).unwrap();
    let r = m.deny_reason().unwrap();
    assert_eq!(
        (r.code, r.denied_type, r.denied_sequence),
        (
            DenyReason::UNSUPPORTED_REQUIRED_ACTION,
            seg::ADVERTISE_ACTION,
            1
        )
    );
    // Retried without the action: accepted.
    a.handle_control(0, from(MGR), &wildcard_msg(MGR, 2, &[Wc::to_vip(10)], None));
    assert_eq!(a.wildcard_entries(0).len(), 1);
}

#[test]
fn unknown_required_segment_is_denied() {
    let (a, _w) = agent(AgentConfig::default());
    let out = a.handle_control(0, from(MGR), &unknown_required_msg(9, None));
    let m = ServiceMessage::parse(&out.replies[0].1).unwrap();
    assert_eq!(
        m.deny_reason().unwrap(),
        DenyReason {
            denied_type: 99,
            code: DenyReason::UNKNOWN_REQUIRED_SEGMENT,
            denied_sequence: 9
        }
    );
    assert_eq!(a.wildcard_entries(0).len(), 0);
}

#[test]
fn wrong_key_and_replay_are_counted_and_install_nothing() {
    let good = Key::new(1, AuthAlgorithm::HmacSha256, b"right".to_vec());
    let (a, _w) = agent(AgentConfig {
        auth: AuthPolicy::with_key(good.clone()),
        ..Default::default()
    });
    let bad = Key::new(1, AuthAlgorithm::HmacSha256, b"wrong".to_vec());
    let out = a.handle_control(
        0,
        from(MGR),
        &wildcard_msg(MGR, 1, &[Wc::to_vip(10)], Some(&bad)),
    );
    assert!(out.replies.is_empty());
    let out = a.handle_control(0, from(MGR), &wildcard_msg(MGR, 1, &[Wc::to_vip(10)], None));
    assert!(out.replies.is_empty());
    assert_eq!(a.counter(Counter::CtlAuthFail), 2);
    assert_eq!(a.wildcard_entries(0).len(), 0);
    let msg = wildcard_msg(MGR, 5, &[Wc::to_vip(10)], Some(&good));
    a.handle_control(0, from(MGR), &msg);
    assert_eq!(a.wildcard_entries(0).len(), 1);
    a.handle_control(0, from(MGR), &msg);
    assert_eq!(a.counter(Counter::CtlReplay), 1);
}

#[test]
fn ttl_expiry_refresh_and_delete() {
    let (a, mut w) = agent(AgentConfig::default());
    install_service(&a);
    a.handle_control(0, from(MGR), &flow_msg(MGR, 2, 40000, 3, None, None));
    assert_eq!(a.fixed_count(2 * SEC), 2);
    // Refresh at 2 s: lives until 5 s.
    a.handle_control(2 * SEC, from(MGR), &flow_msg(MGR, 3, 40000, 3, None, None));
    let (d, _) = run_one(&mut w, 4 * SEC, &data(40000, build::TCP_ACK), 64);
    assert_eq!(d, Disposition::Pass);
    assert_eq!(a.counter(Counter::FixedHit), 1);
    // Past the TTL the entry no longer matches, even before reclaim.
    let (d, _) = run_one(&mut w, 5 * SEC + 1, &data(40000, build::TCP_ACK), 256);
    assert!(matches!(d, Disposition::Punt { .. }), "{d:?}");
    assert_eq!(a.fixed_count(5 * SEC + 1), 0);
    a.tick(7 * SEC);
    assert_eq!(a.counter(Counter::FixedReclaimed), 2);
    // TTL 0 deletes a wildcard.
    let mut wc = Wc::to_vip(10);
    wc.ttl = 0;
    a.handle_control(8 * SEC, from(MGR), &wildcard_msg(MGR, 9, &[wc], None));
    assert_eq!(a.wildcard_entries(8 * SEC).len(), 1);
}

/// Installs at 0 s a wildcard for the VIP from MGR2 with backup precedence
/// 100, and the same from MGR as primary with a 1 s TTL; the primary.
fn primary_with_backup(a: &Agent) -> Wc {
    let mut primary = Wc::to_vip(10);
    primary.ttl = 1;
    let mut backup = Wc::to_vip(10);
    backup.backup = 100;
    a.handle_control(0, from(MGR2), &wildcard_msg(MGR2, 1, &[backup], None));
    a.handle_control(
        0,
        from(MGR),
        &wildcard_msg(MGR, 1, &[primary.clone()], None),
    );
    primary
}

#[test]
fn backup_precedence_orders_and_primary_expiry_fails_over() {
    let (a, mut w) = agent(AgentConfig::default());
    primary_with_backup(&a);
    let (d, _) = run_one(&mut w, SEC / 2, &syn(1), 256);
    assert!(matches!(d, Disposition::Punt { to, .. } if *to.ip() == MGR));
    let (d, _) = run_one(&mut w, SEC + 1, &syn(2), 256);
    assert!(matches!(d, Disposition::Punt { to, .. } if *to.ip() == MGR2));
}

#[test]
fn wildcard_refresh_moves_its_expiry_either_way_without_a_rebuild() {
    let (a, mut w) = agent(AgentConfig::default());
    let mut primary = primary_with_backup(&a);
    // Refreshed at 0.5 s for 3 s: still the primary at 2 s.
    primary.ttl = 3;
    a.handle_control(
        SEC / 2,
        from(MGR),
        &wildcard_msg(MGR, 2, &[primary.clone()], None),
    );
    assert_eq!(a.counter(Counter::WildcardRefresh), 1);
    let (d, _) = run_one(&mut w, 2 * SEC, &syn(1), 256);
    assert!(matches!(d, Disposition::Punt { to, .. } if *to.ip() == MGR));
    // Refreshed at 2.5 s for 1 s: the backup's from 3.5 s on.
    primary.ttl = 1;
    a.handle_control(
        5 * SEC / 2,
        from(MGR),
        &wildcard_msg(MGR, 3, &[primary], None),
    );
    let (d, _) = run_one(&mut w, 3 * SEC, &syn(2), 256);
    assert!(matches!(d, Disposition::Punt { to, .. } if *to.ip() == MGR));
    let (d, _) = run_one(&mut w, 7 * SEC / 2 + 1, &syn(3), 256);
    assert!(matches!(d, Disposition::Punt { to, .. } if *to.ip() == MGR2));
    assert_eq!(a.counter(Counter::WildcardRefresh), 2);
}

#[test]
fn service_chaining_returned_packet_goes_to_next_precedence_only() {
    let (a, mut w) = agent(AgentConfig::default());
    install_chain(&a);
    let (d, buf) = run_one(&mut w, 0, &syn(1), 256);
    let Disposition::Punt { to, start } = d else {
        panic!()
    };
    assert_eq!(*to.ip(), MGR);
    let m = ServiceMessage::parse(&buf[start..]).unwrap();
    let rank = ForwardingAgentInterestData::decode(m.fa_interest_data().unwrap())
        .unwrap()
        .rank();
    // Returned by the first manager: the lower-precedence service punts it.
    let mut b = buffer(&syn(1), 256);
    let len = syn(1).len();
    let d = w.process_returned(0, &mut PacketBuf::new(&mut b, 256, len), Some(rank));
    assert!(matches!(d, Disposition::Punt { to, .. } if *to.ip() == MGR2));
    // Returned again by the second: nothing lower, so it is routed, not punted.
    let d = w.process_returned(
        0,
        &mut PacketBuf::new(&mut buffer(&syn(1), 256), 256, len),
        Some((true, u16::MAX - 100)),
    );
    assert_eq!(d, Disposition::Pass);
    assert_eq!(a.counter(Counter::ReturnedNotRepunted), 1);
}

#[test]
fn advertised_address_without_match_is_dropped() {
    let (a, mut w) = agent(AgentConfig::default());
    let wc = Wc::advertising_vip(10);
    a.handle_control(0, from(MGR), &wildcard_msg(MGR, 1, &[wc], None));
    // Port 22 on the VIP matches no wildcard.
    let p = build::tcp(CLIENT, 1, VIP, 22, build::TCP_SYN, 0, 0, &[]);
    assert_eq!(
        run_one(&mut w, 0, &p, 64).0,
        Disposition::Drop(Counter::DropAdvertised)
    );
    let other = build::tcp(
        CLIENT,
        1,
        Ipv4Addr::new(203, 0, 113, 99),
        22,
        build::TCP_SYN,
        0,
        0,
        &[],
    );
    assert_eq!(run_one(&mut w, 0, &other, 64).0, Disposition::Pass);
}

#[test]
fn dispatch_to_forward_address_and_zero_drops_with_statistics() {
    let (a, mut w) = agent(AgentConfig::default());
    let mut wc = Wc::to_vip(10);
    wc.interest = None;
    wc.dispatch = dispatch::FORWARD;
    wc.info = info::STATISTICS;
    wc.forward = Ipv4Addr::new(198, 51, 100, 1);
    let mut zero = Wc::to_vip(11);
    zero.key.dst_port = 81;
    zero.interest = None;
    zero.dispatch = dispatch::FORWARD;
    zero.info = info::STATISTICS;
    a.handle_control(0, from(MGR), &wildcard_msg(MGR, 1, &[wc, zero], None));
    let p = syn(1);
    assert_eq!(
        run_one(&mut w, 0, &p, 64),
        (
            Disposition::Forward(Ipv4Addr::new(198, 51, 100, 1)),
            buffer(&p, 64)
        )
    );
    let p81 = build::tcp(CLIENT, 1, VIP, 81, build::TCP_SYN, 0, 0, &[]);
    assert_eq!(
        run_one(&mut w, 0, &p81, 64).0,
        Disposition::Drop(Counter::DropForwardZero)
    );
    let stats = a.forward_stats();
    assert_eq!(stats.len(), 2);
    assert!(stats
        .iter()
        .any(|(addr, s)| *addr == Ipv4Addr::new(198, 51, 100, 1)
            && s.packets == 1
            && s.bytes == p.len() as u64));
}

#[test]
fn fragments_follow_the_first_fragments_affinity() {
    let (a, mut w) = agent(AgentConfig::default());
    install_service(&a);
    a.handle_control(0, from(MGR), &flow_msg(MGR, 2, 40000, 30, None, None));
    let whole = build::tcp(CLIENT, 40000, VIP, 80, build::TCP_ACK, 1, 1, &[7u8; 64]);
    let first = build::fragment(&whole, 0, 40, true);
    let later = build::fragment(&whole, 40, 44, false);
    let (d, b1) = run_one(&mut w, 0, &first, 64);
    assert_eq!(d, Disposition::Pass);
    assert_eq!(&b1[64 + 16..64 + 20], &BACKEND.octets());
    assert!(wire::checksum::verify_ipv4(&b1[64..]));
    let (d, b2) = run_one(&mut w, 0, &later, 64);
    assert_eq!(d, Disposition::Pass);
    assert_eq!(
        &b2[64 + 16..64 + 20],
        &BACKEND.octets(),
        "later fragment NAT'ed by address"
    );
    assert!(wire::checksum::verify_ipv4(&b2[64..]));
    assert_eq!(a.counter(Counter::FragmentCacheHit), 1);
    // A later fragment with no first: held until its first fragment decides
    // (issue 12; it used to pass untranslated, which lost the datagram).
    let stray = build::fragment(
        &build::tcp(CLIENT, 1, VIP, 80, 0, 0, 0, &[0; 64]),
        40,
        44,
        false,
    );
    let mut stray = stray;
    stray[5] ^= 0x55; // another IP id
    let c = wire::checksum::ipv4_header_checksum(&stray[..20]);
    stray[10..12].copy_from_slice(&c.to_be_bytes());
    assert_eq!(
        run_one(&mut w, 0, &stray, 64).0,
        Disposition::Consumed(Counter::FragmentHeld)
    );
    assert_eq!(a.counter(Counter::FragmentNoState), 1);
    assert_eq!(a.counter(Counter::FragmentHeld), 1);
}

#[test]
fn hold_releases_on_fixed_update_and_times_out_to_manager() {
    let (a, mut w) = agent(AgentConfig {
        hold_timeout_ms: 500,
        ..Default::default()
    });
    a.handle_control(0, from(MGR), &syn_interest_msg(InterestCriteria::HOLD));
    assert_eq!(
        run_one(&mut w, 0, &syn(1), 256).0,
        Disposition::Consumed(Counter::Held)
    );
    assert_eq!(
        run_one(&mut w, 0, &syn(2), 256).0,
        Disposition::Consumed(Counter::Held)
    );
    assert_eq!(a.held_packets(), 2);
    let msgs = w.take_messages();
    let m = ServiceMessage::parse(&msgs[0].1).unwrap();
    assert!(m.ip_packet().is_none());
    let echo = m.fa_interest_data().unwrap().to_vec();
    let out = a.handle_control(
        SEC / 10,
        from(MGR),
        &flow_msg(MGR, 2, 1, 30, Some(&echo), None),
    );
    assert_eq!(out.returned.len(), 1);
    assert_eq!(out.returned[0].packet, syn(1));
    assert_eq!(a.held_packets(), 1);
    let sends = a.tick(SEC);
    assert_eq!(sends.len(), 1);
    let m = ServiceMessage::parse(&sends[0].1).unwrap();
    assert_eq!(m.msg_type(), MessageType::IpPacketOnly);
    assert_eq!(m.ip_packet().unwrap(), &syn(2)[..]);
    assert_eq!(a.counter(Counter::HoldTimeout), 1);
}

#[test]
fn full_fixed_table_refuses_and_counts() {
    let (a, _w) = agent(AgentConfig {
        fixed_capacity: 4,
        ..Default::default()
    });
    install_service(&a);
    for port in 1..=3u16 {
        a.handle_control(
            0,
            from(MGR),
            &flow_msg(MGR, port as u64 + 1, port, 30, None, None),
        );
    }
    assert_eq!(a.fixed_count(0), 4);
    assert_eq!(a.counter(Counter::FixedFull), 2);
}

#[test]
fn malformed_packets_pass_or_drop_by_rule() {
    let (_a, mut w) = agent(AgentConfig::default());
    let mut bad = syn(1);
    bad[0] = 0x4f; // IHL 60 > packet
    assert_eq!(run_one(&mut w, 0, &bad, 64).0, Disposition::Pass);
    let (_a, mut w) = agent(AgentConfig {
        drop_malformed: true,
        ..Default::default()
    });
    assert_eq!(
        run_one(&mut w, 0, &bad, 64).0,
        Disposition::Drop(Counter::DropMalformed)
    );
    assert_eq!(
        run_one(&mut w, 0, &[0x45], 64).0,
        Disposition::Drop(Counter::DropMalformed)
    );
}

#[test]
fn ipv6_packets_pass_with_their_own_counter_not_as_malformed() {
    let (a, mut w) = agent(AgentConfig {
        drop_malformed: true,
        ..Default::default()
    });
    // An IPv6 header (version 6, next header TCP, hop limit 64), no payload.
    let mut v6 = vec![0u8; 40];
    v6[0] = 0x60;
    v6[6] = 6;
    v6[7] = 64;
    assert_eq!(run_one(&mut w, 0, &v6, 64).0, Disposition::Pass);
    assert_eq!(a.counter(Counter::Ipv6Passed), 1);
    assert_eq!(a.counter(Counter::MalformedPassed), 0);
    assert_eq!(a.counter(Counter::DropMalformed), 0);
}

#[test]
fn ten_thousand_wildcards_pick_the_right_one() {
    let (a, mut w) = agent(AgentConfig::default());
    let wcs: Vec<Wc> = (0..10_000u32)
        .map(|i| {
            let mut wc = Wc::to_vip(i);
            wc.key.dst_addr = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 0)) + i);
            wc
        })
        .collect();
    for chunk in wcs.chunks(500) {
        a.handle_control(
            0,
            from(MGR),
            &wildcard_msg(MGR, chunk[0].id as u64 + 1, chunk, None),
        );
    }
    assert_eq!(a.wildcard_entries(0).len(), 10_000);
    let p = build::tcp(
        CLIENT,
        1,
        Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 0)) + 7777),
        80,
        build::TCP_SYN,
        0,
        0,
        &[],
    );
    let (d, buf) = run_one(&mut w, 0, &p, 256);
    let Disposition::Punt { start, .. } = d else {
        panic!()
    };
    let m = ServiceMessage::parse(&buf[start..]).unwrap();
    assert_eq!(m.affinities().next().unwrap().identifier.unwrap().id, 7777);
}
