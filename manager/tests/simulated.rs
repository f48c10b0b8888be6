//! The manager core against simulated forwarding agents that run the real
//! agent core (`affinity-forwarding-agent`): packets in, affinities and rewrites out.

use affinity_api::{seg, AuthAlgorithm, AuthPolicy, Key, AGENT_PORT};
use affinity_forwarding_agent::wire::{self, build};
use affinity_forwarding_agent::{Agent, AgentConfig, Counter, Disposition};
use affinity_manager::{Command, Config, ManagerCore};
use std::net::{Ipv4Addr, SocketAddrV4};

mod common;
use common::{client, dns, web, Sim, B, SEC, VIP};

/// TCP `web` (Maglev, sticky 2 s, three backends, `extra_service` keys
/// added) and UDP `dns` (round robin, two backends), `manager_extra`
/// lines in `[manager]`.
fn config(extra_service: &str, manager_extra: &str) -> Config {
    let text = format!("{}\n{}", web("maglev", &[extra_service]), dns());
    common::config(manager_extra, &text)
}

#[test]
fn new_flow_is_nated_to_a_backend_both_ways_and_figure5() {
    let mut s = Sim::new(config("", ""));
    assert_eq!(
        s.agents[0].1.wildcard_entries(0).len(),
        7,
        "web: 1 + 3 reverse, dns: 1 + 2 reverse"
    );
    let syn = build::tcp(client(1), 40000, VIP, 80, build::TCP_SYN, 1, 0, &[]);
    assert!(matches!(s.send(0, &syn), Disposition::Punt { .. }));
    let (k, _) = s.last(0);
    assert!(
        B.contains(&k.dst_addr) && k.dst_port == 8080,
        "SYN returned and NAT'ed to a backend: {k:?}"
    );
    assert_eq!(k.src_addr, client(1), "backends see the client");
    let backend = k.dst_addr;
    // Later packets take the fast path on agent 1.
    assert_eq!(
        s.send(
            0,
            &build::tcp(client(1), 40000, VIP, 80, build::TCP_ACK, 2, 1, b"GET /")
        ),
        Disposition::Pass
    );
    assert_eq!(s.last(0).0.dst_addr, backend);
    // The reply crosses agent 2 (FIGURE 5): punted once, then fixed there too.
    let reply = build::tcp(
        backend,
        8080,
        client(1),
        40000,
        build::TCP_ACK | build::TCP_SYN,
        9,
        2,
        &[],
    );
    assert!(matches!(s.send(1, &reply), Disposition::Punt { .. }));
    let (k, _) = s.last(1);
    assert_eq!(
        (k.src_addr, k.src_port, k.dst_addr),
        (VIP, 80, client(1)),
        "client only sees the VIP"
    );
    assert_eq!(s.send(1, &reply), Disposition::Pass);
    assert_eq!(s.agents[1].1.fixed_count(s.now), 2);
    // A duplicate SYN gets the same backend.
    s.send(0, &syn);
    assert_eq!(s.mgr.flow_count(), 1);
}

#[test]
fn udp_maps_consistently_and_round_robin_spreads() {
    let mut s = Sim::new(config("", ""));
    let mut seen = std::collections::HashSet::new();
    for c in 1..=4u8 {
        s.send(0, &build::udp(client(c), 5000, VIP, 53, b"q"));
        let (k, _) = s.last(0);
        seen.insert(k.dst_addr);
        s.send(0, &build::udp(client(c), 5000, VIP, 53, b"q2"));
        assert_eq!(
            s.last(0).0.dst_addr,
            k.dst_addr,
            "same client, same backend"
        );
    }
    assert_eq!(seen.len(), 2);
}

#[test]
fn close_deletes_after_sticky_timer_and_renewal_keeps_open_flows() {
    let mut s = Sim::new(config("", ""));
    s.send(
        0,
        &build::tcp(client(1), 1, VIP, 80, build::TCP_SYN, 1, 0, &[]),
    );
    let backend = s.last(0).0.dst_addr;
    s.send(
        0,
        &build::tcp(client(2), 2, VIP, 80, build::TCP_SYN, 1, 0, &[]),
    );
    // Renewal: both flows outlive their 30 s TTL while open.
    for t in 1..=40 {
        s.tick(t * SEC);
    }
    assert_eq!(s.agents[0].1.fixed_count(s.now), 4);
    // Close flow 1 with FINs from both sides (copies; packets still forwarded).
    assert_eq!(
        s.send(
            0,
            &build::tcp(
                client(1),
                1,
                VIP,
                80,
                build::TCP_FIN | build::TCP_ACK,
                5,
                1,
                &[]
            )
        ),
        Disposition::Pass
    );
    let back = build::tcp(
        backend,
        8080,
        client(1),
        1,
        build::TCP_FIN | build::TCP_ACK,
        9,
        6,
        &[],
    );
    s.send(1, &back);
    s.send(1, &back);
    assert_eq!(s.agents[1].1.fixed_count(s.now), 2);
    let closed_at = s.now;
    s.tick(closed_at + SEC);
    assert_eq!(
        s.agents[0].1.fixed_count(s.now),
        4,
        "still within the sticky timer"
    );
    s.tick(closed_at + 2 * SEC + 1);
    assert_eq!(
        s.agents[0].1.fixed_count(s.now),
        2,
        "flow 1 deleted with TTL 0"
    );
    assert_eq!(s.agents[1].1.fixed_count(s.now), 0);
    assert_eq!(s.mgr.flow_count(), 1);
}

#[test]
fn source_nat_allocates_unique_ports_and_reports_exhaustion() {
    let mut s = Sim::new(config(
        "snat = { address = \"198.51.100.254\", ports = \"20000-20001\" }",
        "",
    ));
    let mut ports = Vec::new();
    for c in 1..=3u8 {
        s.send(
            0,
            &build::tcp(client(c), 1000, VIP, 80, build::TCP_SYN, 1, 0, &[]),
        );
        if s.delivered[0].len() == ports.len() + 1 {
            let (k, _) = s.last(0);
            assert_eq!(
                k.src_addr,
                Ipv4Addr::new(198, 51, 100, 254),
                "backends see the SNAT address"
            );
            ports.push(k.src_port);
        }
    }
    assert_eq!(ports, vec![20000, 20001]);
    assert_eq!(s.mgr.counters.get("snat-ports-exhausted"), Some(&1));
    // The reply to the SNAT address is translated back to the client.
    let (k, _) = (s.delivered[0][0].clone(), ());
    let k = wire::parse_ipv4(&k).unwrap().key;
    s.send(
        1,
        &build::tcp(
            k.dst_addr,
            8080,
            k.src_addr,
            k.src_port,
            build::TCP_SYN | build::TCP_ACK,
            1,
            2,
            &[],
        ),
    );
    let (r, _) = s.last(1);
    assert_eq!(
        (r.src_addr, r.src_port, r.dst_addr, r.dst_port),
        (VIP, 80, client(1), 1000)
    );
}

#[test]
fn maglev_backup_adopts_established_flows_to_the_same_backend() {
    let mut primary = Sim::new(config("", ""));
    primary.send(
        0,
        &build::tcp(client(7), 4242, VIP, 80, build::TCP_SYN, 1, 0, &[]),
    );
    let backend = primary.last(0).0.dst_addr;
    let mut backup = Sim::new(config("backup_precedence = 100", ""));
    let d = backup.send(
        0,
        &build::tcp(client(7), 4242, VIP, 80, build::TCP_ACK, 2, 1, b"more"),
    );
    assert!(matches!(d, Disposition::Punt { .. }));
    assert_eq!(backup.last(0).0.dst_addr, backend);
    assert_eq!(backup.mgr.counters.get("flow-adopted"), Some(&1));
}

#[test]
fn unsupported_optional_advertise_is_retried_without_it() {
    let cfg = config("advertise = true\noptional_actions = [\"advertise\"]", "");
    let mgr_addr = cfg.manager.listen;
    let mut mgr = ManagerCore::new(cfg, 0);
    let agent = Agent::new(AgentConfig {
        disabled_actions: vec![seg::ADVERTISE_ACTION],
        ..Default::default()
    });
    let out = mgr.tick(0);
    let mut retried = Vec::new();
    for (to, m) in out
        .iter()
        .filter(|(to, _)| *to == SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), AGENT_PORT))
    {
        let co = agent.handle_control(0, mgr_addr, m);
        for (_, deny) in co.replies {
            retried.extend(mgr.handle_datagram(0, *to, &deny));
        }
    }
    assert_eq!(mgr.counters.get("deny-unsupported-action"), Some(&1));
    assert_eq!(
        agent.wildcard_entries(0).len(),
        6,
        "all but the web forward wildcard"
    );
    for (to, m) in retried
        .iter()
        .filter(|(to, _)| *to == SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), AGENT_PORT))
    {
        assert!(
            agent.handle_control(0, mgr_addr, m).replies.is_empty(),
            "{to}"
        );
    }
    assert_eq!(agent.wildcard_entries(0).len(), 7);
    assert!(!mgr.status(0).contains("advertise\n"));
}

/// The same, with the agent's hello (which lacks the advertise action)
/// reaching the manager before its deny, as a restarted agent that hears
/// the manager sends both at once: the optional action is dropped, the
/// agent still used, and its clients' connections placed. Failed before:
/// the hello stopped the service on the agent for good
/// (`interest-from-agent-not-used`), the e2e `unsupported-action` flake.
#[test]
fn a_hello_lacking_an_optional_action_does_not_stop_the_service() {
    let cfg = config("advertise = true\noptional_actions = [\"advertise\"]", "");
    let mgr_addr = cfg.manager.listen;
    let mut mgr = ManagerCore::new(cfg, 0);
    let agent = Agent::new(AgentConfig {
        disabled_actions: vec![seg::ADVERTISE_ACTION],
        agent_addr: Ipv4Addr::new(192, 0, 2, 1),
        ..Default::default()
    });
    let a1 = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), AGENT_PORT);
    let _ = mgr.handle_datagram(0, a1, &agent.build_hello());
    let out = mgr.tick(0);
    let mut retried = Vec::new();
    for (_, m) in out.iter().filter(|(to, _)| *to == a1) {
        for (_, deny) in agent.handle_control(0, mgr_addr, m).replies {
            retried.extend(mgr.handle_datagram(0, a1, &deny));
        }
    }
    for (_, m) in retried.iter().filter(|(to, _)| *to == a1) {
        let _ = agent.handle_control(0, mgr_addr, m);
    }
    assert_eq!(agent.wildcard_entries(0).len(), 7);
    // A client's SYN through the agent: punted, and placed.
    let mut w = agent.worker();
    let syn = build::tcp(client(7), 4242, VIP, 80, build::TCP_SYN, 1, 0, &[]);
    let mut buf = vec![0u8; 256 + syn.len()];
    buf[256..].copy_from_slice(&syn);
    let mut out = [Disposition::Pass];
    let n = syn.len();
    w.process_batch(
        SEC,
        &mut [affinity_forwarding_agent::PacketBuf::new(&mut buf, 256, n)],
        &mut out,
    );
    let Disposition::Punt { start, .. } = out[0] else {
        panic!("{:?}", out[0])
    };
    let _ = mgr.handle_datagram(SEC, a1, &buf[start..]);
    assert_eq!(mgr.counters.get("interest-from-agent-not-used"), None);
    assert_eq!(mgr.counters.get("flows-created"), Some(&1));
}

#[test]
fn unhealthy_and_drained_backends_get_no_new_flows() {
    let mut s = Sim::new(config("", ""));
    for _ in 0..2 {
        s.mgr.health("web", SocketAddrV4::new(B[0], 8080), false);
    }
    s.mgr
        .command(Command::parse("drain web 198.51.100.2:8080").unwrap(), 0)
        .unwrap();
    for c in 1..=20u8 {
        s.send(
            0,
            &build::tcp(
                client(c),
                1000 + c as u16,
                VIP,
                80,
                build::TCP_SYN,
                1,
                0,
                &[],
            ),
        );
        assert_eq!(s.last(0).0.dst_addr, B[2]);
    }
    assert!(s.mgr.status(0).contains("UNHEALTHY"));
    // Load reports are for feedback services only (issue 11 case 7); the
    // scaled weight ("effective weight 1") is asserted in
    // operator_state_survives_reload_and_load_reports_are_bounded.
    let r = s.mgr.command(
        Command::parse("load-report web 198.51.100.3:8080 75").unwrap(),
        0,
    );
    assert!(r.unwrap_err().contains("feedback"));
    assert!(Command::parse("bogus").is_err());
}

#[test]
fn wrong_key_is_rejected_by_the_agent() {
    let dir = std::env::temp_dir().join(format!("affinity-key-{}", std::process::id()));
    std::fs::write(&dir, "manager-secret\n").unwrap();
    let cfg = config("", "").clone();
    let text = format!("{}\n", "");
    let _ = text;
    let mut cfg = cfg;
    cfg.auth.keys.push(affinity_manager::config::KeyConfig {
        id: 3,
        file: dir.clone(),
        algorithm: "hmac-sha256".into(),
        send: true,
        identities: Vec::new(),
    });
    let mut mgr = ManagerCore::new(cfg, 0);
    let out = mgr.tick(0);
    let agent = Agent::new(AgentConfig {
        auth: AuthPolicy::with_key(Key::new(3, AuthAlgorithm::HmacSha256, b"other".to_vec())),
        ..Default::default()
    });
    for (_, m) in &out {
        agent.handle_control(0, "192.0.2.10:1638".parse().unwrap(), m);
    }
    assert_eq!(agent.wildcard_entries(0).len(), 0);
    assert!(agent.counter(Counter::CtlAuthFail) > 0);
    let good = Agent::new(AgentConfig {
        auth: AuthPolicy::with_key(Key::new(
            3,
            AuthAlgorithm::HmacSha256,
            b"manager-secret".to_vec(),
        )),
        ..Default::default()
    });
    for (_, m) in &out {
        good.handle_control(0, "192.0.2.10:1638".parse().unwrap(), m);
    }
    assert!(!good.wildcard_entries(0).is_empty());
    let _ = std::fs::remove_file(dir);
}

#[test]
fn check_config_explains_errors_with_places() {
    let errs = Config::parse("[manager]\nlisten = \"192.0.2.10:1638\"\nfixed_ttl = 1\n[[service]]\nname = \"a\"\nvirtual = \"203.0.113.1:80\"\nprotocol = \"sctp\"\nclient_domain = \"198.18.0.0/40\"\n").unwrap_err();
    let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert!(
        text.iter()
            .any(|e| e.starts_with("3:") && e.contains("fixed_ttl")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|e| e.starts_with("7:") && e.contains("tcp or udp")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|e| e.starts_with("8:") && e.contains("client_domain")),
        "{text:?}"
    );
    assert!(
        text.iter().any(|e| e.contains("no [[service.backend]]")),
        "{text:?}"
    );
    let syntax = Config::parse("[manager]\nlisten = 12\n").unwrap_err();
    assert_eq!(syntax[0].line, 2, "{syntax:?}");
    let unknown = Config::parse("[manager]\nlisten = \"192.0.2.1:1\"\nbogus = 1\n").unwrap_err();
    assert!(unknown[0].message.contains("bogus"), "{unknown:?}");
}

#[test]
fn shutdown_deletes_wildcards_and_reload_keeps_flows() {
    let mut s = Sim::new(config("", ""));
    s.send(
        0,
        &build::tcp(client(1), 1, VIP, 80, build::TCP_SYN, 1, 0, &[]),
    );
    let out = s.mgr.reload(config("", ""), SEC);
    s.deliver(out);
    assert_eq!(s.mgr.flow_count(), 1);
    let out = s.mgr.shutdown();
    s.deliver(out);
    assert_eq!(s.agents[0].1.wildcard_entries(s.now).len(), 0);
    assert_eq!(
        s.agents[0].1.fixed_count(s.now),
        2,
        "established flows stay on agents"
    );
}

/// A TCP packet with timestamps (TSval, TSecr) and, on a SYN, MSS 1460,
/// SACK-permitted and window scale 8; valid checksums.
fn tcp_ts(
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    flags: u8,
    seq: u32,
    ack: u32,
    ts: (u32, u32),
) -> Vec<u8> {
    tcp_ts_data(src, dst, flags, (seq, ack), ts, &[])
}

/// [`tcp_ts`] carrying `payload` after its options; (seq, ack).
fn tcp_ts_data(
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    flags: u8,
    (seq, ack): (u32, u32),
    ts: (u32, u32),
    payload: &[u8],
) -> Vec<u8> {
    use affinity_forwarding_agent::synproxy::TcpOptions;
    let syn = flags & build::TCP_SYN != 0;
    let opts = TcpOptions {
        mss: syn.then_some(1460),
        wscale: syn.then_some(8),
        sack_permitted: syn,
        timestamps: Some(ts),
    };
    let mut o = [0u8; 20];
    let n = opts.emit(&mut o);
    // Built without options, then given them: the builder's header plus
    // the options area, lengths and checksums redone.
    let mut body = o[..n].to_vec();
    body.extend_from_slice(payload);
    let mut p = build::tcp(src.0, src.1, dst.0, dst.1, flags, seq, ack, &body);
    p[32] = (((20 + n) / 4) as u8) << 4;
    p[36..38].fill(0);
    let info = wire::parse_ipv4(&p).unwrap();
    let c = wire::checksum::l4_checksum(&p, &info).unwrap();
    p[36..38].copy_from_slice(&c.to_be_bytes());
    p
}

#[test]
fn syn_proxy_service_punts_only_the_proved_handshake_and_splices_the_backend() {
    let mut s = Sim::new(config("syn_proxy = true", ""));
    let c = (client(7), 41000);
    let syn = tcp_ts(c, (VIP, 80), build::TCP_SYN, 500, 0, (100, 0));
    // The agent answers; the manager hears nothing.
    assert_eq!(s.send(0, &syn), Disposition::Pass);
    assert_eq!(s.mgr.flow_count(), 0);
    let (k, synack) = s.last(0);
    assert_eq!((k.src_addr, k.dst_addr), (VIP, client(7)));
    let cookie = u32::from_be_bytes([synack[24], synack[25], synack[26], synack[27]]);
    let tsval = u32::from_be_bytes([synack[44], synack[45], synack[46], synack[47]]);
    // 100 spoofed SYNs: answered, no flow, no fixed affinity.
    for i in 0..100u16 {
        let spoof = tcp_ts(
            (client(9), 1024 + i),
            (VIP, 80),
            build::TCP_SYN,
            1,
            0,
            (1, 0),
        );
        assert_eq!(s.send(0, &spoof), Disposition::Pass);
    }
    assert_eq!(s.mgr.flow_count(), 0);
    assert_eq!(s.agents[0].1.fixed_count(s.now), 0);
    assert_eq!(s.agents[0].1.counter(Counter::Punted), 0);
    // The cookie ACK: a flow; the agent sends the backend the client's SYN.
    let ack = tcp_ts(
        c,
        (VIP, 80),
        build::TCP_ACK,
        501,
        cookie.wrapping_add(1),
        (101, tsval),
    );
    assert!(matches!(s.send(0, &ack), Disposition::Punt { .. }));
    assert_eq!(s.mgr.flow_count(), 1);
    // Placed half-open, as a SYN is (the backend has not answered yet),
    // not adopted as established: a dead backend would pin it for the
    // established timeout (2 h) instead of the transitory one.
    let fwd = affinity_api::AffinityKey {
        protocol: affinity_forwarding_agent::wire::TCP,
        src_addr: c.0,
        dst_addr: VIP,
        src_port: c.1,
        dst_port: 80,
    };
    assert_eq!(
        s.mgr.flow(&fwd).map(|f| f.state),
        Some(affinity_manager::FlowState::SynSeen)
    );
    assert_eq!(s.counter("flow-adopted"), 0);
    let (k, bsyn) = s.last(0);
    assert!(B.contains(&k.dst_addr) && k.dst_port == 8080, "{k:?}");
    assert_eq!(bsyn[33], build::TCP_SYN);
    assert_eq!(
        u32::from_be_bytes([bsyn[24], bsyn[25], bsyn[26], bsyn[27]]),
        500
    );
    // The backend answers (on the same agent): the client's ACK goes on.
    let backend = k.dst_addr;
    let bsa = tcp_ts(
        (backend, 8080),
        c,
        build::TCP_SYN | build::TCP_ACK,
        90_000,
        501,
        (5, 100),
    );
    assert_eq!(s.send(0, &bsa), Disposition::Pass);
    let (k, out) = s.last(0);
    assert_eq!((k.dst_addr, k.dst_port), (backend, 8080));
    assert_eq!(out[33], build::TCP_ACK);
    assert_eq!(
        u32::from_be_bytes([out[28], out[29], out[30], out[31]]),
        90_001
    );
    assert_eq!(s.agents[0].1.counter(Counter::SynProxySpliced), 1);
    // A reply that crosses the other agent (FIGURE 5): it has no sequence
    // adjust for the flow, so the manager says so (the connection cannot
    // work on that path; manager README, "SYN proxy and asymmetric paths").
    assert_eq!(s.counter("syn-proxy-flow-on-second-agent"), 0);
    let reply = tcp_ts((backend, 8080), c, build::TCP_ACK, 90_001, 501, (6, 101));
    s.send(1, &reply);
    assert_eq!(s.counter("syn-proxy-flow-on-second-agent"), 1);
}

#[test]
fn syn_proxy_port_reuse_is_answered_by_the_agent_and_the_manager_reopens_the_flow() {
    let mut s = Sim::new(config("syn_proxy = true", ""));
    let c = (client(7), 41000);
    let be32 = |p: &[u8], at: usize| u32::from_be_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]]);
    // One proxied connection, spliced: (cookie, backend, backend ISN).
    let connect = |s: &mut Sim, isn: u32, b_isn: u32| {
        let syn = tcp_ts(c, (VIP, 80), build::TCP_SYN, isn, 0, (100, 0));
        assert_eq!(s.send(0, &syn), Disposition::Pass);
        let (k, synack) = s.last(0);
        assert_eq!(
            (k.src_addr, k.dst_addr),
            (VIP, client(7)),
            "the agent's SYN-ACK"
        );
        assert_eq!(be32(&synack, 28), isn.wrapping_add(1));
        let (cookie, tsval) = (be32(&synack, 24), be32(&synack, 44));
        let ack = tcp_ts(
            c,
            (VIP, 80),
            build::TCP_ACK,
            isn.wrapping_add(1),
            cookie.wrapping_add(1),
            (101, tsval),
        );
        assert!(matches!(s.send(0, &ack), Disposition::Punt { .. }));
        let (k, bsyn) = s.last(0);
        assert!(B.contains(&k.dst_addr) && k.dst_port == 8080, "{k:?}");
        assert_eq!((bsyn[33], be32(&bsyn, 24)), (build::TCP_SYN, isn));
        let backend = k.dst_addr;
        let bsa = tcp_ts(
            (backend, 8080),
            c,
            build::TCP_SYN | build::TCP_ACK,
            b_isn,
            isn.wrapping_add(1),
            (5, 101),
        );
        assert_eq!(s.send(0, &bsa), Disposition::Pass);
        let (k, out) = s.last(0);
        assert_eq!((k.dst_addr, out[33]), (backend, build::TCP_ACK));
        assert_eq!(be32(&out, 28), b_isn.wrapping_add(1));
        (cookie, backend)
    };
    let (cookie, backend) = connect(&mut s, 500, 90_000);
    // Both sides close.
    let fin = |seq, ack| {
        tcp_ts(
            c,
            (VIP, 80),
            build::TCP_FIN | build::TCP_ACK,
            seq,
            ack,
            (102, 6),
        )
    };
    assert_eq!(
        s.send(0, &fin(501, cookie.wrapping_add(1))),
        Disposition::Pass
    );
    let bfin = tcp_ts(
        (backend, 8080),
        c,
        build::TCP_FIN | build::TCP_ACK,
        90_001,
        502,
        (6, 102),
    );
    assert_eq!(s.send(0, &bfin), Disposition::Pass);
    // The client reuses the 5-tuple at once, the old affinities still
    // installed: the agent answers its SYN, and the new connection is
    // spliced with its own adjusts, on the same backend.
    let reopened = s.counter("flows-reopened");
    let (cookie2, backend2) = connect(&mut s, 7_000, 300_000);
    assert_ne!(cookie2, cookie);
    assert_eq!(backend2, backend, "the flow's backend");
    assert_eq!(s.agents[0].1.counter(Counter::SynProxySpliced), 2);
    assert_eq!(s.agents[0].1.counter(Counter::SynProxyReuseAnswered), 1);
    assert_eq!(
        s.counter("flows-reopened"),
        reopened + 1,
        "the backend SYN's tracking copy reopens the closed flow"
    );
    // The reopened flow outlives the closed one's sticky timer.
    let t = s.now;
    s.run_until(t + 10 * SEC);
    assert_eq!(s.agents[0].1.fixed_count(s.now), 2);
    let data = tcp_ts(
        c,
        (VIP, 80),
        build::TCP_ACK,
        7_001,
        cookie2.wrapping_add(1),
        (103, 7),
    );
    assert_eq!(s.send(0, &data), Disposition::Pass);
    let (k, out) = s.last(0);
    assert_eq!((k.dst_addr, k.dst_port), (backend, 8080));
    assert_eq!(be32(&out, 28), 300_001);
}

/// A SYN proxy's proofs are not held to `max_half_open_flows`: each comes
/// from a client whose address the cookie proved and whose handshake the
/// agent completed, so a refusal left it with no answer at all (a client
/// waiting for a server greeting hung; the new-user trial). Failed before:
/// the second proof was refused (`half-open-limit-refused`).
#[test]
fn syn_proxy_proofs_are_not_held_to_the_half_open_limit() {
    let mut s = Sim::new(config("syn_proxy = true", "max_half_open_flows = 1"));
    for (i, port) in [(0u32, 41000u16), (1, 41001), (2, 41002)] {
        let c = (client(7), port);
        let syn = tcp_ts(c, (VIP, 80), build::TCP_SYN, 500 + i, 0, (100, 0));
        assert_eq!(s.send(0, &syn), Disposition::Pass);
        let (_, synack) = s.last(0);
        let cookie = u32::from_be_bytes([synack[24], synack[25], synack[26], synack[27]]);
        let tsval = u32::from_be_bytes([synack[44], synack[45], synack[46], synack[47]]);
        let ack = tcp_ts(
            c,
            (VIP, 80),
            build::TCP_ACK,
            501 + i,
            cookie.wrapping_add(1),
            (101, tsval),
        );
        assert!(matches!(s.send(0, &ack), Disposition::Punt { .. }));
    }
    assert_eq!(s.mgr.flow_count(), 3, "every proof placed");
    assert_eq!(s.counter("half-open-limit-refused"), 0);
    assert_eq!(s.counter("half-open-evicted"), 0);
}

/// A manager given two proofs of one SYN-proxied connection (the agent
/// punted its request as the proof again after `REPROVE_NS` without an
/// answer, the manager slow to answer the first): one flow, one backend,
/// one SYN to the backend, the request held and sent on after the splice.
/// And when the backend refuses (closed port) before the answer to the
/// second proof arrives, no second SYN (failed before: the late answer
/// opened the connection again, two SYNs and two refusals in the lab).
#[test]
fn two_proofs_of_one_connection_place_one_flow_and_send_one_backend_syn() {
    use affinity_forwarding_agent::synproxy::REPROVE_NS;
    let be32 = |p: &[u8], at: usize| u32::from_be_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]]);
    for refused in [false, true] {
        let mut s = Sim::new(config("syn_proxy = true", ""));
        let c = (client(7), 41000);
        let syn = tcp_ts(c, (VIP, 80), build::TCP_SYN, 500, 0, (100, 0));
        assert_eq!(s.send(0, &syn), Disposition::Pass);
        let (_, synack) = s.last(0);
        let (cookie, tsval) = (be32(&synack, 24), be32(&synack, 44));
        let from = s.agents[0].0;
        // The agent's punt, as the manager receives it; its answer is held
        // back (a slow manager, a congested path).
        let punt = |s: &mut Sim, pkt: &[u8]| {
            let (d, buf) = s.process(0, pkt);
            let Disposition::Punt { start, .. } = d else {
                panic!("{d:?}")
            };
            buf[start..].to_vec()
        };
        let ack = tcp_ts(
            c,
            (VIP, 80),
            build::TCP_ACK,
            501,
            cookie.wrapping_add(1),
            (101, tsval),
        );
        let m1 = punt(&mut s, &ack);
        let out1 = s.mgr.handle_datagram(s.now, from, &m1);
        // The request right behind: held, not a second proof.
        let req = tcp_ts_data(
            c,
            (VIP, 80),
            build::TCP_ACK | build::TCP_PSH,
            (501, cookie.wrapping_add(1)),
            (102, tsval),
            b"GET /",
        );
        assert_eq!(
            s.process(0, &req).0,
            Disposition::Consumed(Counter::SynProxyEarlyDataHeld)
        );
        // No answer within the reproof time: its retransmission is the
        // proof again.
        s.now += REPROVE_NS;
        let m2 = punt(&mut s, &req);
        let out2 = s.mgr.handle_datagram(s.now, from, &m2);
        assert_eq!(s.mgr.flow_count(), 1);
        assert_eq!(s.counter("flows-created"), 1);
        assert_eq!(s.counter("syn-proxy-proof-repeated"), 1);
        // Both answers name the same backend.
        let backends: Vec<Ipv4Addr> = [&out1, &out2]
            .iter()
            .map(|o| {
                assert_eq!(o.len(), 1, "{o:?}");
                let msg = affinity_api::ServiceMessage::parse(&o[0].1).unwrap();
                let a = msg.affinities().next().unwrap();
                a.nat.unwrap().dst_addr
            })
            .collect();
        assert_eq!(backends[0], backends[1]);
        let backend = backends[0];
        assert!(B.contains(&backend));
        let syns = |s: &Sim| {
            s.delivered[0]
                .iter()
                .filter(|p| {
                    p[33] == build::TCP_SYN && wire::parse_ipv4(p).unwrap().key.dst_addr == backend
                })
                .count()
        };
        s.deliver(out1);
        assert_eq!(syns(&s), 1, "the backend SYN");
        if refused {
            // Closed port: the RST reaches the client, the connection is
            // given up; the late answer to the second proof opens nothing.
            let rst = build::tcp(
                backend,
                8080,
                c.0,
                c.1,
                build::TCP_RST | build::TCP_ACK,
                0,
                501,
                &[],
            );
            assert_eq!(s.send(0, &rst), Disposition::Pass);
            let (k, out) = s.last(0);
            assert_eq!(
                (k.dst_addr, k.dst_port, out[33] & build::TCP_RST),
                (c.0, c.1, build::TCP_RST)
            );
            s.deliver(out2);
            assert_eq!(syns(&s), 1, "no second SYN after the refusal");
            let a = &s.agents[0].1;
            assert_eq!(a.counter(Counter::SynProxyBackendRefused), 1);
            assert_eq!(a.counter(Counter::SynProxyAnswerAfterRefusal), 1);
            continue;
        }
        // Pending: the answer to the second proof holds the request.
        s.deliver(out2);
        assert_eq!(syns(&s), 1, "no second SYN");
        let bsa = tcp_ts(
            (backend, 8080),
            c,
            build::TCP_SYN | build::TCP_ACK,
            90_000,
            501,
            (5, 101),
        );
        let before = s.delivered[0].len();
        assert_eq!(
            s.send(0, &bsa),
            Disposition::Consumed(Counter::SynProxySpliced)
        );
        let released = s.agents[0].2.take_released();
        // The ACK, then the request (held twice: before the reproof, and
        // the reproof's answer), all to the backend, adjusted.
        assert_eq!(released.len(), 3, "{released:?}");
        assert_eq!(s.delivered[0].len(), before);
        for (p, d) in &released {
            assert_eq!(*d, Disposition::Pass);
            let info = wire::parse_ipv4(p).unwrap();
            assert_eq!((info.key.dst_addr, info.key.dst_port), (backend, 8080));
            assert_eq!(be32(p, 28), 90_001);
            assert!(wire::checksum::verify_l4(p, &info));
        }
        assert_eq!(released[0].0[33], build::TCP_ACK);
        assert_eq!(s.agents[0].1.counter(Counter::SynProxyBackendSyn), 1);
    }
}
