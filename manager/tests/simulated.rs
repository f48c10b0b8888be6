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
    // A reply that crosses the other agent (FIGURE 5): the agent reported
    // the splice, so the manager installs the flow there with its adjusts
    // and the reply reaches the client in the cookie's sequence space;
    // nothing is counted as broken (manager README, "SYN proxy and
    // asymmetric paths"; the whole exchange: the test after this one).
    assert_eq!(s.counter("syn-proxy-splices-reported"), 2);
    assert_eq!(s.counter("syn-proxy-flow-on-second-agent"), 0);
    let reply = tcp_ts((backend, 8080), c, build::TCP_ACK, 90_001, 501, (6, 101));
    s.send(1, &reply);
    assert_eq!(s.counter("syn-proxy-flow-on-second-agent"), 0);
    let (k, out) = s.last(1);
    assert_eq!((k.src_addr, k.dst_addr), (VIP, client(7)));
    assert_eq!(
        u32::from_be_bytes([out[24], out[25], out[26], out[27]]),
        cookie.wrapping_add(1)
    );
}

/// What a test needs of a spliced proxied connection.
struct Proxied {
    /// The client's address and port.
    c: (Ipv4Addr, u16),
    /// The client's ISN.
    isn: u32,
    /// The SYN proxy's cookie (its ISN toward the client).
    cookie: u32,
    /// The proxy's TSval in its SYN-ACK (its timestamp clock).
    ours: u32,
    /// The backend chosen, port 8080.
    backend: Ipv4Addr,
    /// The backend's ISN and the TSval of its SYN-ACK.
    b_isn: u32,
    b_ts: u32,
}

impl Proxied {
    /// A packet from the backend to the client: sequence `off` bytes past
    /// the backend's ISN + 1, acknowledging `ack_off` bytes of the client,
    /// TSval `b_ts + dt`, TSecr `ecr`.
    fn backend_pkt(&self, off: u32, ack_off: u32, dt: u32, ecr: u32, data: &[u8]) -> Vec<u8> {
        tcp_ts_data(
            (self.backend, 8080),
            self.c,
            build::TCP_ACK | build::TCP_PSH,
            (
                self.b_isn.wrapping_add(1 + off),
                self.isn.wrapping_add(1 + ack_off),
            ),
            (self.b_ts.wrapping_add(dt), ecr),
            data,
        )
    }

    /// A packet from the client: sequence `off` bytes past its ISN + 1,
    /// acknowledging `ack_off` bytes past the cookie + 1 (the client's
    /// view), TSval `val`, TSecr `ecr` (on the proxy's clock).
    fn client_pkt(&self, off: u32, ack_off: u32, val: u32, ecr: u32, data: &[u8]) -> Vec<u8> {
        tcp_ts_data(
            self.c,
            (VIP, 80),
            build::TCP_ACK | build::TCP_PSH,
            (
                self.isn.wrapping_add(1 + off),
                self.cookie.wrapping_add(1 + ack_off),
            ),
            (val, ecr),
            data,
        )
    }
}

/// (sequence, acknowledgment, TSval, TSecr) of a TCP packet with timestamps.
fn seq_ack_ts(p: &[u8]) -> (u32, u32, u32, u32) {
    use affinity_forwarding_agent::synproxy::TcpOptions;
    let be32 = |at: usize| u32::from_be_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]]);
    let thl = (p[32] >> 4) as usize * 4;
    let (val, ecr) = TcpOptions::parse(&p[40..20 + thl])
        .timestamps
        .expect("timestamps");
    (be32(24), be32(28), val, ecr)
}

/// A proxied connection of client `c` (ISN 500, TSval 100) through agent
/// `i`, spliced with backend ISN `b_isn` and TSval `b_ts`; its splice
/// report reaches the manager unless `hold_report`, in which case it is
/// returned for the test to deliver.
fn proxied_connection(
    s: &mut Sim,
    i: usize,
    c: (Ipv4Addr, u16),
    (b_isn, b_ts): (u32, u32),
    hold_report: bool,
) -> (Proxied, Vec<Vec<u8>>) {
    let be32 = |p: &[u8], at: usize| u32::from_be_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]]);
    let isn = 500;
    let syn = tcp_ts(c, (VIP, 80), build::TCP_SYN, isn, 0, (100, 0));
    assert_eq!(s.send(i, &syn), Disposition::Pass);
    let (_, synack) = s.last(i);
    let (cookie, ours) = (be32(&synack, 24), be32(&synack, 44));
    let ack = tcp_ts(
        c,
        (VIP, 80),
        build::TCP_ACK,
        isn + 1,
        cookie.wrapping_add(1),
        (101, ours),
    );
    assert!(matches!(s.send(i, &ack), Disposition::Punt { .. }));
    let (k, _) = s.last(i);
    let backend = k.dst_addr;
    let bsa = tcp_ts(
        (backend, 8080),
        c,
        build::TCP_SYN | build::TCP_ACK,
        b_isn,
        isn + 1,
        (b_ts, 101),
    );
    let mut held = Vec::new();
    if hold_report {
        let (d, _) = s.process(i, &bsa);
        assert_eq!(d, Disposition::Pass);
        let from = s.agents[i].0;
        for (_, m) in s.agents[i].2.take_messages() {
            let t = affinity_api::ServiceMessage::parse(&m).map(|m| m.msg_type());
            if t == Ok(affinity_api::MessageType::StatisticsReport) {
                held.push(m);
            } else {
                let out = s.mgr.handle_datagram(s.now, from, &m);
                s.deliver(out);
            }
        }
        assert_eq!(held.len(), 1, "the splice report");
    } else {
        assert_eq!(s.send(i, &bsa), Disposition::Pass);
        let (k, out) = s.last(i);
        assert_eq!((k.dst_addr, out[33]), (backend, build::TCP_ACK));
    }
    let p = Proxied {
        c,
        isn,
        cookie,
        ours,
        backend,
        b_isn,
        b_ts,
    };
    (p, held)
}

/// The backend's replies (and the client's packets) cross agent 2 while
/// agent 1 answered the SYN and spliced (FIGURE 5): agent 1 reported the
/// adjusts, the manager installs them on agent 2 with the flow, and every
/// packet leaves agent 2 as agent 1 would send it — sequence and
/// acknowledgment numbers and TSval/TSecr in the other side's space, both
/// checksums valid against a full recompute ([`Sim::last`]).
#[test]
fn syn_proxy_replies_crossing_a_second_agent_are_adjusted_both_ways() {
    let mut s = Sim::new(config("syn_proxy = true", ""));
    // The backend's clock far from the proxy's, and its ISN just below
    // 2^32, so both deltas and the sequence space wrap.
    let (p, _) = proxied_connection(
        &mut s,
        0,
        (client(7), 41000),
        (0xffff_fff0, 3_000_000_000),
        false,
    );
    assert_eq!(s.counter("syn-proxy-splices-reported"), 2);
    let fwd = affinity_api::AffinityKey {
        protocol: 6,
        src_addr: p.c.0,
        dst_addr: VIP,
        src_port: p.c.1,
        dst_port: 80,
    };
    let f = s.mgr.flow(&fwd).expect("the flow");
    assert!(f.splice_fwd.is_some() && f.splice_rev.is_some());
    // The response, in two segments, through agent 2.
    let body = b"HTTP/1.1 200 OK\r\n\r\n";
    let n = body.len() as u32;
    for (i, off) in [0u32, n].into_iter().enumerate() {
        let dt = 10 + i as u32;
        let reply = p.backend_pkt(off, 0, dt, 101, body);
        s.send(1, &reply);
        let (k, out) = s.last(1);
        assert_eq!(
            (k.src_addr, k.src_port, k.dst_addr, k.dst_port),
            (VIP, 80, p.c.0, p.c.1)
        );
        assert_eq!(
            seq_ack_ts(&out),
            (
                p.cookie.wrapping_add(1 + off),
                p.isn + 1,
                p.ours.wrapping_add(dt),
                101
            ),
            "reply {i}: the cookie's space and the proxy's clock"
        );
    }
    // The client's acknowledgment crosses agent 2 as well.
    let ack = p.client_pkt(0, 2 * n, 102, p.ours.wrapping_add(11), &[]);
    s.send(1, &ack);
    let (k, out) = s.last(1);
    assert_eq!((k.dst_addr, k.dst_port), (p.backend, 8080));
    assert_eq!(
        seq_ack_ts(&out),
        (
            p.isn + 1,
            p.b_isn.wrapping_add(1 + 2 * n),
            102,
            p.b_ts.wrapping_add(11)
        ),
        "the backend's space and its clock"
    );
    // And back through agent 1, which spliced: the same.
    let ack = p.client_pkt(0, 2 * n, 103, p.ours.wrapping_add(11), &[]);
    s.send(0, &ack);
    let (_, out) = s.last(0);
    assert_eq!(
        seq_ack_ts(&out),
        (
            p.isn + 1,
            p.b_isn.wrapping_add(1 + 2 * n),
            103,
            p.b_ts.wrapping_add(11)
        )
    );
    assert_eq!(s.counter("syn-proxy-flow-on-second-agent"), 0);
    assert!(s.agents[1].1.counter(Counter::SeqAdjusted) >= 3);
}

/// What stays broken is counted: a reply that crosses agent 2 before the
/// splice is known goes on unadjusted (`syn-proxy-flow-on-second-agent`);
/// once the report comes, the manager installs the flow on agent 2 again
/// with the adjusts and the next reply is right. A backend's SYN-ACK that
/// crosses agent 2 is never spliced (agent 2 has nothing pending): counted.
#[test]
fn syn_proxy_second_agent_before_the_splice_report_is_counted_then_fixed() {
    let mut s = Sim::new(config("syn_proxy = true", ""));
    let (p, held) = proxied_connection(&mut s, 0, (client(7), 41000), (90_000, 5), true);
    let reply = p.backend_pkt(0, 0, 1, 101, b"early");
    s.send(1, &reply);
    assert_eq!(s.counter("syn-proxy-flow-on-second-agent"), 1);
    let (_, out) = s.last(1);
    assert_eq!(seq_ack_ts(&out).0, p.b_isn + 1, "unadjusted");
    // The report arrives: agent 2 gets the flow again, with the adjusts.
    let from = s.agents[0].0;
    for m in held {
        let out = s.mgr.handle_datagram(s.now, from, &m);
        s.deliver(out);
    }
    assert_eq!(s.counter("syn-proxy-splice-installed-elsewhere"), 1);
    let reply = p.backend_pkt(0, 0, 2, 101, b"early");
    s.send(1, &reply);
    let (_, out) = s.last(1);
    assert_eq!(
        seq_ack_ts(&out),
        (
            p.cookie.wrapping_add(1),
            p.isn + 1,
            p.ours.wrapping_add(2),
            101
        )
    );
    assert_eq!(s.counter("syn-proxy-flow-on-second-agent"), 1);

    // Another connection whose backend SYN-ACK takes agent 2's path.
    let c = (client(8), 42000);
    let syn = tcp_ts(c, (VIP, 80), build::TCP_SYN, 700, 0, (100, 0));
    assert_eq!(s.send(0, &syn), Disposition::Pass);
    let (_, synack) = s.last(0);
    let cookie = u32::from_be_bytes([synack[24], synack[25], synack[26], synack[27]]);
    let tsval = u32::from_be_bytes([synack[44], synack[45], synack[46], synack[47]]);
    let ack = tcp_ts(
        c,
        (VIP, 80),
        build::TCP_ACK,
        701,
        cookie.wrapping_add(1),
        (101, tsval),
    );
    assert!(matches!(s.send(0, &ack), Disposition::Punt { .. }));
    let (k, _) = s.last(0);
    let bsa = tcp_ts(
        (k.dst_addr, 8080),
        c,
        build::TCP_SYN | build::TCP_ACK,
        1,
        701,
        (5, 101),
    );
    s.send(1, &bsa);
    assert_eq!(s.counter("syn-proxy-flow-on-second-agent"), 2);
    assert_eq!(s.agents[1].1.counter(Counter::SynProxySpliced), 0);
}

/// The agent that spliced restarts (a new core instance: its tables and
/// adjusts gone): the manager's resynchronisation — the flow installed
/// again from what the agent reported, at the first packet it punts (the
/// backend's reply, FIGURE 5 on its own path) and at every renewal —
/// carries the adjusts, and both directions are still adjusted.
#[test]
fn syn_proxy_connection_survives_a_restart_of_the_splicing_agent() {
    let mut s = Sim::new(config("syn_proxy = true", ""));
    let (p, _) = proxied_connection(
        &mut s,
        0,
        (client(7), 41000),
        (90_000, 2_000_000_000),
        false,
    );
    s.tick(2 * SEC);
    s.restart_agent(0);
    assert_eq!(s.agents[0].1.fixed_count(s.now), 0, "a new instance");
    // Open mode: the hello brings the wildcard refresh forward (100 ms).
    s.tick(s.now + SEC / 5);
    assert!(
        !s.agents[0].1.wildcard_entries(s.now).is_empty(),
        "resynchronised"
    );
    // The backend's reply reaches the restarted agent first.
    let body = b"HTTP/1.1 200 OK\r\n\r\n";
    let n = body.len() as u32;
    s.send(0, &p.backend_pkt(0, 0, 7, 101, body));
    let (k, out) = s.last(0);
    assert_eq!((k.src_addr, k.dst_addr), (VIP, p.c.0));
    assert_eq!(
        seq_ack_ts(&out),
        (
            p.cookie.wrapping_add(1),
            p.isn + 1,
            p.ours.wrapping_add(7),
            101
        )
    );
    // The client's answer: the backend's space and clock.
    s.send(0, &p.client_pkt(0, n, 102, p.ours.wrapping_add(7), &[]));
    let (k, out) = s.last(0);
    assert_eq!((k.dst_addr, k.dst_port), (p.backend, 8080));
    assert_eq!(
        seq_ack_ts(&out),
        (
            p.isn + 1,
            p.b_isn.wrapping_add(1 + n),
            102,
            p.b_ts.wrapping_add(7)
        )
    );
    assert_eq!(s.counter("syn-proxy-flow-on-second-agent"), 0);

    // Restarted again, the client speaks first: the renewal brings the
    // flow back with its adjusts (with keys, the hello's resynchronisation
    // does at once: the same message), and its request goes on adjusted.
    s.restart_agent(0);
    s.run_until(s.now + 11 * SEC);
    assert!(s.agents[0].1.fixed_count(s.now) >= 2, "renewed");
    s.send(
        0,
        &p.client_pkt(0, n, 103, p.ours.wrapping_add(7), b"GET / HTTP/1.1\r\n\r\n"),
    );
    let (k, out) = s.last(0);
    assert_eq!((k.dst_addr, k.dst_port), (p.backend, 8080));
    assert_eq!(
        seq_ack_ts(&out),
        (
            p.isn + 1,
            p.b_isn.wrapping_add(1 + n),
            103,
            p.b_ts.wrapping_add(7)
        )
    );
    s.send(0, &p.backend_pkt(n, 18, 9, 103, b"x"));
    let (_, out) = s.last(0);
    assert_eq!(
        seq_ack_ts(&out),
        (
            p.cookie.wrapping_add(1 + n),
            p.isn + 19,
            p.ours.wrapping_add(9),
            103
        )
    );
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

/// A splice report from an agent that does not hold the flow (a forged or
/// misrouted one) changes nothing; the splicing agent's is taken.
#[test]
fn a_splice_report_from_an_agent_without_the_flow_is_ignored() {
    let mut s = Sim::new(config("syn_proxy = true", ""));
    let (p, held) = proxied_connection(&mut s, 0, (client(7), 41000), (90_000, 5), true);
    let fwd = affinity_api::AffinityKey {
        protocol: 6,
        src_addr: p.c.0,
        dst_addr: VIP,
        src_port: p.c.1,
        dst_port: 80,
    };
    let other = s.agents[1].0;
    let out = s.mgr.handle_datagram(s.now, other, &held[0]);
    s.deliver(out);
    assert_eq!(s.counter("syn-proxy-splice-report-ignored"), 2);
    assert_eq!(s.counter("syn-proxy-splices-reported"), 0);
    let f = s.mgr.flow(&fwd).expect("the flow");
    assert!(!f.splice_known() && !f.agents.contains(&other));
    let from = s.agents[0].0;
    let out = s.mgr.handle_datagram(s.now, from, &held[0]);
    s.deliver(out);
    assert_eq!(s.counter("syn-proxy-splices-reported"), 2);
    assert!(s.mgr.flow(&fwd).expect("the flow").splice_known());
    // Not an activity report: agents with reports off are still renewed.
    assert_eq!(s.counter("rx-splice-report"), 2);
    assert_eq!(s.counter("rx-activity-report"), 0);
}

/// A splice report for a connection no SYN-proxy proof placed (a plain
/// service's flow), even from the agent that holds it, is ignored: taken,
/// its sequence adjust went into the install a second agent got for the
/// backend's reply (FIGURE 5) and moved the client's numbers by 12345 and
/// 777, breaking the connection. Equally a report from a second agent that
/// holds a proxied flow but did not prove it.
#[test]
fn a_splice_report_for_a_flow_no_proof_placed_is_ignored() {
    use affinity_api::{FixedAffinity, IdentityInfo, MessageBuilder, MessageType, Segment};
    let mut s = Sim::new(config("", ""));
    let c = (client(9), 41001u16);
    let syn = build::tcp(c.0, c.1, VIP, 80, build::TCP_SYN, 1, 0, &[]);
    assert!(matches!(s.send(0, &syn), Disposition::Punt { .. }));
    let fwd = affinity_api::AffinityKey {
        protocol: 6,
        src_addr: c.0,
        dst_addr: VIP,
        src_port: c.1,
        dst_port: 80,
    };
    let from = s.agents[0].0;
    let mut b = MessageBuilder::new(MessageType::StatisticsReport, 99);
    b.push(Segment::IdentityInfo(IdentityInfo {
        address: *from.ip(),
        host_name: "fa0",
    }));
    b.push(Segment::Statistics(Default::default()));
    b.push(Segment::FixedAffinity(FixedAffinity {
        key: fwd,
        ttl: 10,
        ..Default::default()
    }));
    b.push(Segment::SeqAdjustAction(affinity_api::SeqAdjustAction {
        seq_delta: 12345,
        initial_seq: 0,
        ack_delta: 777,
        initial_ack: 0,
    }));
    b.push(Segment::Statistics(Default::default()));
    let report = b.finish().unwrap();
    let out = s.mgr.handle_datagram(s.now, from, &report);
    s.deliver(out);
    assert_eq!(s.counter("syn-proxy-splice-report-ignored"), 1);
    assert_eq!(s.counter("syn-proxy-splices-reported"), 0);
    assert!(s.mgr.flow(&fwd).unwrap().splice_fwd.is_none());
    // The backend's reply crosses agent 1, then the client's next packet:
    // both leave with the numbers they came with.
    let backend = *s.mgr.flow(&fwd).unwrap().backend.ip();
    let sa = build::tcp(
        backend,
        8080,
        c.0,
        c.1,
        build::TCP_SYN | build::TCP_ACK,
        5000,
        2,
        &[],
    );
    s.send(1, &sa);
    let ack = build::tcp(c.0, c.1, VIP, 80, build::TCP_ACK, 2, 5001, &[]);
    s.send(1, &ack);
    let (_, out) = s.last(1);
    let word = |at: usize| u32::from_be_bytes([out[at], out[at + 1], out[at + 2], out[at + 3]]);
    assert_eq!((word(24), word(28)), (2, 5001));
    let info = wire::parse_ipv4(&out).unwrap();
    assert!(wire::checksum::verify_ipv4(&out) && wire::checksum::verify_l4(&out, &info));
}

/// A lost splice report is not lost for good: the agent sends it once more
/// with its next periodic activity round, and the manager, which missed
/// the first, takes the repeat (a repeat of one it has changes nothing).
#[test]
fn a_lost_splice_report_is_sent_again_with_the_next_activity_round() {
    let mut s = Sim::reporting_every(config("syn_proxy = true", ""), 4096, 1000);
    s.run_until(SEC);
    let (p, lost) = proxied_connection(&mut s, 0, (client(7), 41000), (90_000, 5), true);
    assert_eq!(lost.len(), 1);
    let fwd = affinity_api::AffinityKey {
        protocol: 6,
        src_addr: p.c.0,
        dst_addr: VIP,
        src_port: p.c.1,
        dst_port: 80,
    };
    assert!(!s.mgr.flow(&fwd).expect("the flow").splice_known());
    s.run_until(s.now + 2 * SEC);
    assert!(s.mgr.flow(&fwd).expect("the flow").splice_known());
    assert_eq!(s.counter("syn-proxy-splices-reported"), 2);
    assert_eq!(s.agents[0].1.counter(Counter::SynProxySpliceReported), 2);
    // The round after: nothing more.
    s.run_until(s.now + 2 * SEC);
    assert_eq!(s.agents[0].1.counter(Counter::SynProxySpliceReported), 2);
    // A reply through agent 2 is adjusted.
    s.send(1, &p.backend_pkt(0, 0, 3, 101, b"ok"));
    let (_, out) = s.last(1);
    assert_eq!(
        seq_ack_ts(&out),
        (
            p.cookie.wrapping_add(1),
            p.isn + 1,
            p.ours.wrapping_add(3),
            101
        )
    );
}
