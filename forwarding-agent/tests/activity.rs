//! Activity reports (statistics report, type 19) and the drop of a packet
//! whose fixed affinity was refused (issue 11).

mod common;
use affinity_api::{MessageType, Segment, ServiceMessage};
use affinity_forwarding_agent::{Agent, AgentConfig, Counter, Disposition, PacketBuf};
use common::{data, flow_msg, from, wildcard_msg, Wc, MGR, SEC};
use std::net::Ipv4Addr;

fn agent(fixed_capacity: usize) -> std::sync::Arc<Agent> {
    let a = Agent::new(AgentConfig {
        fixed_capacity,
        agent_addr: Ipv4Addr::new(192, 0, 2, 1),
        activity_report_interval_ms: 10_000,
        ..Default::default()
    });
    a.handle_control(
        0,
        from(MGR),
        &wildcard_msg(MGR, 1, &[Wc::to_vip(10), Wc::from_backends(11)], None),
    );
    a
}

/// (fixed affinity key's client port, TTL left, packets) per reported
/// entry of each report message.
fn entries(msgs: &[(std::net::SocketAddrV4, Vec<u8>)]) -> Vec<Vec<(u16, u32, u64)>> {
    msgs.iter()
        .map(|(to, m)| {
            assert_eq!(*to, from(MGR), "sent to the manager's own port");
            let msg = ServiceMessage::parse(m).expect("a valid message");
            assert_eq!(msg.msg_type(), MessageType::StatisticsReport);
            assert!(m.len() <= 1400, "bounded: {} bytes", m.len());
            let mut out = Vec::new();
            let mut cur = None;
            for (seg, _) in msg.segments() {
                match seg {
                    Segment::FixedAffinity(f) => cur = Some(f),
                    Segment::Statistics(s) => {
                        if let Some(f) = cur.take() {
                            out.push((f.key.src_port, f.ttl, s.packets));
                        }
                    }
                    _ => {}
                }
            }
            out
        })
        .collect()
}

#[test]
fn each_interval_one_report_lists_the_affinities_that_carried_packets() {
    let a = agent(1024);
    let mut w = a.worker();
    for port in 1..=30u16 {
        a.handle_control(
            SEC,
            from(MGR),
            &flow_msg(MGR, 1 + port as u64, port, 30, None, None),
        );
    }
    assert_eq!(
        a.poll_timeout(),
        Some(10 * SEC),
        "first report an interval after the manager"
    );
    // Flow 1 carries 3 packets, flow 2 one; the other 28 none.
    for (port, n) in [(1u16, 3), (2, 1)] {
        for _ in 0..n {
            let p = data(port, 0x10);
            let mut buf = common::buffer(&p, 256);
            let mut out = [Disposition::Pass];
            w.process_batch(
                2 * SEC,
                &mut [PacketBuf::new(&mut buf, 256, p.len())],
                &mut out,
            );
            assert_eq!(out[0], Disposition::Pass);
        }
    }
    let mut r = entries(&a.tick(10 * SEC));
    r.iter_mut().for_each(|m| m.sort());
    // TTL 30 s given at 1 s: 21 s left at 10 s.
    assert_eq!(r, vec![vec![(1, 21, 3), (2, 21, 1)]]);
    // Next interval: nothing new carried packets; the report still goes
    // (the manager learns the agent reports) and lists nothing.
    let r = entries(&a.tick(20 * SEC));
    assert_eq!(r, vec![vec![]]);
    // 30 active flows: split 24 + 6, one message per 24 entries.
    for port in 1..=30u16 {
        let p = data(port, 0x10);
        let mut buf = common::buffer(&p, 256);
        let mut out = [Disposition::Pass];
        w.process_batch(
            21 * SEC,
            &mut [PacketBuf::new(&mut buf, 256, p.len())],
            &mut out,
        );
    }
    let r = entries(&a.tick(30 * SEC));
    assert_eq!(r.iter().map(Vec::len).collect::<Vec<_>>(), vec![24, 6]);
    assert!(r.iter().flatten().all(|&(_, _, p)| p == 1));
    assert_eq!(a.counter(Counter::ActivityReports), 4);
}

#[test]
fn a_packet_whose_affinity_was_refused_is_dropped_and_counted() {
    // Room for one flow (two entries) only.
    let a = agent(2);
    a.handle_control(SEC, from(MGR), &flow_msg(MGR, 2, 1, 30, None, None));
    let syn = common::syn(2);
    let out = a.handle_control(SEC, from(MGR), &flow_msg(MGR, 3, 2, 30, None, Some(&syn)));
    assert!(
        out.returned.is_empty(),
        "the SYN is not returned untranslated"
    );
    assert_eq!(a.counter(Counter::ReturnedDroppedRefused), 1);
    assert!(a.counter(Counter::DenySent) >= 1, "and the manager is told");
}

/// (fixed affinity key's source port, activity flags) per reported entry.
fn flags(msgs: &[(std::net::SocketAddrV4, Vec<u8>)]) -> Vec<(u16, u8)> {
    let mut out = Vec::new();
    for (_, m) in msgs {
        let msg = ServiceMessage::parse(m).expect("a valid message");
        let mut cur = None;
        for (seg, _) in msg.segments() {
            match seg {
                Segment::FixedAffinity(f) => cur = Some(f),
                Segment::Statistics(_) => {
                    if let Some(f) = cur.take() {
                        out.push((f.key.src_port, f.activity_flags));
                    }
                }
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// Issue 14 (punt admission): the reports mark which fixed affinities a
/// handshake-complete TCP segment (ACK, no SYN, no RST) hit. A spoofed
/// SYN sent twice and the backend's SYN-ACK (packets both ways: what made
/// a manager count the flow established) mark nothing; RSTs neither; the
/// client's ACK marks the forward affinity, the backend's data the
/// reverse one; every TCP pair says the agent tracks the mark; UDP pairs
/// carry no flags whatever the bytes where TCP flags would be.
#[test]
fn reports_mark_the_affinities_a_handshake_complete_segment_hit() {
    use affinity_api::activity::{HANDSHAKE_COMPLETE, TRACKED};
    use affinity_forwarding_agent::wire::{self, build};
    let a = agent(1024);
    let mut udp_wc = Wc::to_vip(12);
    udp_wc.key.protocol = wire::UDP;
    udp_wc.key.dst_port = 53;
    a.handle_control(
        SEC,
        from(MGR),
        &wildcard_msg(
            MGR,
            2,
            &[Wc::to_vip(10), Wc::from_backends(11), udp_wc],
            None,
        ),
    );
    let cport = 40000;
    a.handle_control(SEC, from(MGR), &flow_msg(MGR, 3, cport, 60, None, None));
    let udp_key = affinity_api::AffinityKey {
        protocol: wire::UDP,
        src_addr: common::CLIENT,
        dst_addr: common::VIP,
        src_port: 7000,
        dst_port: 53,
    };
    a.handle_control(
        SEC,
        from(MGR),
        &common::fixed_msg(MGR, 4, &[(udp_key, 60, &[])], None, None),
    );
    let mut w = a.worker();
    let mut send = |now: u64, p: &[u8]| {
        common::run_one(&mut w, now, p, 256);
    };
    let client = |f: u8| build::tcp(common::CLIENT, cport, common::VIP, 80, f, 1000, 0, &[]);
    let server = |f: u8| {
        build::tcp(
            common::BACKEND,
            8080,
            common::CLIENT,
            cport,
            f,
            5000,
            1001,
            &[],
        )
    };
    // The attack: the same SYN twice, the backend's SYN-ACK; UDP with the
    // byte at TCP's flags offset holding ACK.
    send(2 * SEC, &common::syn(cport));
    send(2 * SEC, &common::syn(cport));
    send(2 * SEC, &server(build::TCP_SYN | build::TCP_ACK));
    let ack_like = [0x10u8; 16];
    send(
        2 * SEC,
        &build::udp(common::CLIENT, 7000, common::VIP, 53, &ack_like),
    );
    assert_eq!(
        flags(&a.tick(10 * SEC)),
        vec![(7000, 0), (8080, TRACKED), (cport, TRACKED)],
        "SYN, SYN again, SYN-ACK: no mark"
    );
    // A blind attacker's RST, the backend's RST to a bogus ACK: no mark.
    send(11 * SEC, &client(build::TCP_RST));
    send(11 * SEC, &server(build::TCP_RST | build::TCP_ACK));
    assert_eq!(
        flags(&a.tick(20 * SEC)),
        vec![(8080, TRACKED), (cport, TRACKED)],
        "RSTs mark nothing"
    );
    // The client's ACK completes the handshake on the forward affinity.
    send(21 * SEC, &client(build::TCP_ACK));
    assert_eq!(
        flags(&a.tick(30 * SEC)),
        vec![(cport, TRACKED | HANDSHAKE_COMPLETE)]
    );
    // The backend's first data: the reverse one.
    send(
        31 * SEC,
        &common::reply(cport, build::TCP_ACK | build::TCP_PSH),
    );
    send(31 * SEC, &common::data(cport, build::TCP_ACK));
    send(
        31 * SEC,
        &build::udp(common::CLIENT, 7000, common::VIP, 53, &ack_like),
    );
    assert_eq!(
        flags(&a.tick(40 * SEC)),
        vec![
            (7000, 0),
            (8080, TRACKED | HANDSHAKE_COMPLETE),
            (cport, TRACKED | HANDSHAKE_COMPLETE)
        ]
    );
    // A new SYN on the 5-tuple (a connection restarting) clears the
    // forward mark.
    send(41 * SEC, &common::syn(cport));
    assert_eq!(flags(&a.tick(50 * SEC)), vec![(cport, TRACKED)]);
    // The dumps show the same marks (`fixed verbose`, `fixed --json`).
    let marks: Vec<(u16, bool)> = {
        let mut m: Vec<_> = a
            .fixed_entries(50 * SEC, 10, |_| true)
            .iter()
            .map(|r| (r.key.src_port, r.handshake_complete))
            .collect();
        m.sort();
        m
    };
    assert_eq!(marks, vec![(7000, false), (8080, true), (cport, false)]);
    let text =
        affinity_forwarding_agent::show::render(&a, 50 * SEC, "fixed src 198.51.100.2 verbose");
    assert!(text.contains("handshake complete"), "{text}");
}

/// A fixed affinity's first handshake-complete segment is reported within
/// `PROMPT_REPORT_INTERVAL_NS` (200 ms), not at the next interval: a
/// manager sees a real connection established at once, before a flood's
/// `evict-oldest` could take it for half-open. Only newly marked
/// affinities are listed, their packets are not reported twice, and a
/// second handshake-complete segment sends nothing more. Failed before:
/// nothing went before the 10 s interval.
#[test]
fn a_new_handshake_mark_is_reported_at_once() {
    let a = agent(1024);
    let mut w = a.worker();
    for port in 1..=3u16 {
        a.handle_control(
            SEC,
            from(MGR),
            &flow_msg(MGR, 1 + port as u64, port, 30, None, None),
        );
    }
    let send = |w: &mut affinity_forwarding_agent::Worker, now: u64, port: u16, flags: u8| {
        let p = data(port, flags);
        let mut buf = common::buffer(&p, 256);
        let mut out = [Disposition::Pass];
        w.process_batch(now, &mut [PacketBuf::new(&mut buf, 256, p.len())], &mut out);
        assert_eq!(out[0], Disposition::Pass);
    };
    // Flow 1: the handshake's ACK and one more; flow 2: a SYN (no mark);
    // flow 3: nothing.
    send(&mut w, 2 * SEC, 1, 0x10);
    send(&mut w, 2 * SEC, 1, 0x18);
    send(&mut w, 2 * SEC, 2, 0x02);
    assert_eq!(a.counter(Counter::HandshakeMarked), 1);
    // Due at once (no prompt report in the last 200 ms): the next tick.
    let due = a.poll_timeout().expect("a prompt report is due");
    assert!(due <= 2 * SEC, "before the interval: {due}");
    let r = a.tick(2 * SEC + SEC / 10);
    assert_eq!(entries(&r), vec![vec![(1, 29, 2)]]);
    assert_eq!(
        flags(&r),
        vec![(
            1,
            affinity_api::activity::TRACKED | affinity_api::activity::HANDSHAKE_COMPLETE
        )]
    );
    assert_eq!(a.counter(Counter::ActivityReportsPrompt), 1);
    // Already marked: more packets send no prompt report.
    send(&mut w, 3 * SEC, 1, 0x10);
    assert!(a.poll_timeout().is_some_and(|t| t >= 10 * SEC));
    assert!(a.tick(3 * SEC + SEC / 2).is_empty());
    // The periodic report lists flow 1's packets since the prompt one (1)
    // and flow 2's SYN.
    let mut r = entries(&a.tick(10 * SEC));
    r.iter_mut().for_each(|m| m.sort());
    assert_eq!(r, vec![vec![(1, 21, 1), (2, 21, 1)]]);
    assert_eq!(a.counter(Counter::ActivityReportsPrompt), 1);
}
