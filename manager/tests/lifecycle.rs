//! Flow lifecycle and isolation (issue 11): the manager core against
//! simulated forwarding agents running the real agent core, every
//! delivered packet's checksums verified by full recompute. Each test is
//! one of the issue's cases, with its right values.

use affinity_api::AffinityKey;
use affinity_forwarding_agent::wire::{self, build};
use affinity_forwarding_agent::Disposition;
use affinity_manager::{Command, Config, FlowState, ManagerCore, Outgoing};
use std::net::{Ipv4Addr, SocketAddrV4};

mod common;
use common::{backends, client, config, dns, service, web, Sim, B, SEC, VIP};

const VIP2: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 11);

/// TCP `web` 203.0.113.10:80 → 198.51.100.1–3:8080, round robin, sticky 2 s.
fn web_rr() -> String {
    web("round-robin", &[])
}

/// TCP `web` 203.0.113.10:80 → 198.51.100.1:8080 only, round robin.
fn web_b1() -> String {
    let rr = [r#"algorithm = "round-robin""#];
    service("web", "203.0.113.10:80", &rr, &backends(1, 8080))
}

/// TCP `web2` 203.0.113.11:80 → the same backend as [`web_b1`].
fn web2_b1() -> String {
    let rr = [r#"algorithm = "round-robin""#];
    service("web2", "203.0.113.11:80", &rr, &backends(1, 8080))
}

/// Another manager (B, 192.0.2.11:1638) with `cfg`, and its address.
fn second_manager(mut cfg: Config) -> (ManagerCore, SocketAddrV4) {
    cfg.manager.listen = "192.0.2.11:1638".parse().unwrap();
    let addr = cfg.manager.listen;
    (ManagerCore::new(cfg, 0), addr)
}

fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flags: u8, data: &[u8]) -> Vec<u8> {
    build::tcp(src, sport, dst, dport, flags, 1, 1, data)
}

fn fwd_key(src: Ipv4Addr, sport: u16, proto: u8, dst: Ipv4Addr, dport: u16) -> AffinityKey {
    AffinityKey {
        protocol: proto,
        src_addr: src,
        dst_addr: dst,
        src_port: sport,
        dst_port: dport,
    }
}

/// Case 1: a 5-tuple reused after close (TIME_WAIT reuse) reopens on the
/// same backend and keeps working past the sticky time, whatever the
/// algorithm (round robin here).
#[test]
fn case1_syn_on_a_closed_five_tuple_reopens_it_on_the_same_backend() {
    let mut s = Sim::reporting(config("", &web_rr()), 4096);
    let c = client(8);
    let k = s
        .through(0, &tcp(c, 40000, VIP, 80, build::TCP_SYN, &[]))
        .expect("SYN NAT'ed");
    let backend = k.dst_addr;
    assert!(B.contains(&backend));
    assert_eq!(
        s.through(0, &tcp(c, 40000, VIP, 80, build::TCP_ACK, b"GET /"))
            .map(|k| k.dst_addr),
        Some(backend)
    );
    // Both sides FIN.
    s.send(
        0,
        &tcp(c, 40000, VIP, 80, build::TCP_FIN | build::TCP_ACK, &[]),
    );
    s.send(
        0,
        &tcp(
            backend,
            8080,
            c,
            40000,
            build::TCP_FIN | build::TCP_ACK,
            &[],
        ),
    );
    let key = fwd_key(c, 40000, wire::TCP, VIP, 80);
    assert_eq!(s.mgr.flow(&key).map(|f| f.state), Some(FlowState::Closed));
    // One second later: a new SYN on the same 5-tuple.
    let t = s.now + SEC;
    s.tick(t);
    assert_eq!(
        s.through(0, &tcp(c, 40000, VIP, 80, build::TCP_SYN, &[]))
            .map(|k| k.dst_addr),
        Some(backend),
        "the new SYN goes to the same backend"
    );
    // Past the sticky time (2 s) and past a fixed TTL: it keeps working.
    s.run_until(t + 45 * SEC);
    assert_eq!(s.counter("flows-deleted-after-sticky"), 0);
    assert_eq!(
        s.through(0, &tcp(c, 40000, VIP, 80, build::TCP_ACK, b"GET /2"))
            .map(|k| k.dst_addr),
        Some(backend),
        "still forwarded to the same backend past the sticky time"
    );
    assert_eq!(s.counter("unknown-flow-dropped"), 0);
    assert_eq!(s.counter("flows-reopened"), 1);
    let back = s
        .through(0, &tcp(backend, 8080, c, 40000, build::TCP_ACK, b"200"))
        .expect("reply");
    assert_eq!((back.src_addr, back.src_port), (VIP, 80));
}

/// Case 2: flows of a backend removed by reload or gone unhealthy. UDP is
/// moved within one fixed TTL (30 s) and the agents' affinities are
/// deleted; TCP is kept, or ended with `expire_nodest_conn = true`.
#[test]
fn case2_udp_flows_move_off_a_removed_or_unhealthy_backend() {
    for how in ["reload", "health"] {
        let mut s = Sim::reporting(config("", &dns()), 4096);
        let c = client(9);
        let first = s
            .through(0, &build::udp(c, 7000, VIP, 53, b"q0"))
            .expect("query")
            .dst_addr;
        assert!(B[..2].contains(&first));
        let other = if first == B[0] { B[1] } else { B[0] };
        let t0 = s.now + SEC;
        s.tick(t0);
        match how {
            "reload" => {
                let kept = dns().replace(
                    &format!("[[service.backend]]\naddress = \"{first}:53\"\n"),
                    "",
                );
                let out = s.mgr.reload(config("", &kept), t0);
                s.deliver(out);
            }
            _ => {
                let out = s.mgr.health("dns", SocketAddrV4::new(first, 53), false);
                s.deliver(out);
            }
        }
        assert_eq!(
            s.agents[0].1.fixed_count(s.now),
            0,
            "{how}: the agent's affinities are deleted"
        );
        // Queries every 5 s for 2 minutes: all reach the other backend
        // from the first one after the change (within one fixed TTL).
        let mut t = t0;
        let mut got = Vec::new();
        while t < t0 + 120 * SEC {
            t += 5 * SEC;
            s.run_until(t);
            got.push(
                s.through(0, &build::udp(c, 7000, VIP, 53, b"q"))
                    .map(|k| k.dst_addr),
            );
        }
        assert!(
            got.iter().all(|d| *d == Some(other)),
            "{how}: every query after the change reaches {other}: {got:?}"
        );
        assert_eq!(s.counter("flows-ended-backend-gone"), 1, "{how}");
    }
}

/// Case 2, TCP: kept on an unhealthy backend by default (its affinities
/// stay), ended with `expire_nodest_conn = true`.
#[test]
fn case2_tcp_flows_of_an_unhealthy_backend_follow_expire_nodest_conn() {
    for expire in [false, true] {
        let web = web_rr().replace(
            "sticky_timeout_ms = 2000",
            &format!("sticky_timeout_ms = 2000\nexpire_nodest_conn = {expire}"),
        );
        let mut s = Sim::reporting(config("", &web), 4096);
        let k = s
            .through(0, &tcp(client(1), 1000, VIP, 80, build::TCP_SYN, &[]))
            .expect("SYN");
        let out = s
            .mgr
            .health("web", SocketAddrV4::new(k.dst_addr, 8080), false);
        s.deliver(out);
        assert_eq!(
            s.agents[0].1.fixed_count(s.now),
            if expire { 0 } else { 2 },
            "expire_nodest_conn = {expire}"
        );
        assert_eq!(s.mgr.flow_count(), if expire { 0 } else { 1 });
    }
}

/// Case 3: half-open (SYN-only) flows expire after the transitory timeout
/// (240 s by default, RFC 5382) and one-shot UDP flows after the UDP
/// timeout (300 s, RFC 4787), on the manager and on the agents; while the
/// agents' tables are full, a packet whose affinity could not be installed
/// is dropped and counted, never forwarded untranslated.
#[test]
fn case3_half_open_and_idle_flows_expire_and_a_full_table_drops() {
    // The issue's numbers: agents with 4096 fixed entries, 2500 spoofed
    // SYNs never answered and 200 one-shot DNS queries fill them.
    let cfg = config("", &format!("{}{}", web_rr(), dns()));
    let mut s = Sim::reporting(cfg, 4096);
    for i in 0..2500u16 {
        let spoofed = Ipv4Addr::new(198, 19, (i >> 8) as u8, i as u8);
        s.send(0, &tcp(spoofed, 1024 + i, VIP, 80, build::TCP_SYN, &[]));
    }
    for i in 0..200u16 {
        s.send(0, &build::udp(client(100), 5000 + i, VIP, 53, b"q"));
    }
    assert_eq!(s.mgr.flow_count(), 2700);
    assert_eq!(s.agents[0].1.fixed_count(s.now), 4096, "table full");
    // A legitimate SYN now: its affinity is denied (table full), and it
    // is dropped and counted, not routed untranslated toward the VIP.
    let legit = tcp(client(1), 50000, VIP, 80, build::TCP_SYN, &[]);
    let out = s.through(0, &legit);
    assert!(
        out.is_none_or(|k| k.dst_addr != VIP),
        "never forwarded untranslated toward the VIP: {out:?}"
    );
    let dropped = s.agents[0]
        .1
        .counters()
        .into_iter()
        .find(|(n, _)| *n == "returned-dropped-install-refused")
        .map_or(0, |(_, v)| v);
    assert!(dropped >= 1, "the refused packet is counted");
    assert_eq!(s.mgr.flow_count(), 2701);
    // SYN-only flows end after the transitory timeout (240 s), the idle
    // UDP flows after the UDP timeout (300 s); activity reports and the
    // renewal run every 10 s, so each ends within 10 s of its timeout
    // after its last packet was reported.
    s.run_until(235 * SEC);
    assert_eq!(s.mgr.flow_count(), 2701, "nothing ends early");
    s.run_until(255 * SEC);
    assert_eq!(s.mgr.flow_count(), 200, "half-open TCP ended at 240 s");
    s.run_until(295 * SEC);
    assert_eq!(s.mgr.flow_count(), 200, "UDP kept until 300 s");
    s.run_until(315 * SEC);
    assert_eq!(s.mgr.flow_count(), 0, "idle UDP ended at 300 s");
    assert_eq!(s.counter("flows-expired-idle"), 2701);
    s.run_until(600 * SEC);
    assert_eq!(s.agents[0].1.fixed_count(s.now), 0, "agents' tables empty");
    let k = s.through(0, &legit).expect("a new SYN works");
    assert!(B.contains(&k.dst_addr) && k.dst_port == 8080);
}

/// Case 3, timing: a SYN-only flow ends at the transitory timeout, not
/// before; an established one (packets both ways) stays.
#[test]
fn case3_transitory_and_established_timeouts_apply_per_state() {
    let mut s = Sim::reporting(config("tcp_transitory_timeout = 60", &web_rr()), 4096);
    let half = fwd_key(client(1), 1, wire::TCP, VIP, 80);
    let full = fwd_key(client(2), 2, wire::TCP, VIP, 80);
    s.send(0, &tcp(client(1), 1, VIP, 80, build::TCP_SYN, &[]));
    let b = s
        .through(0, &tcp(client(2), 2, VIP, 80, build::TCP_SYN, &[]))
        .expect("SYN")
        .dst_addr;
    // Ended within the transitory timeout plus a report interval (10 s).
    for t in 1..=80u64 {
        s.tick(t * SEC);
        if t % 5 == 0 {
            s.send(0, &tcp(client(2), 2, VIP, 80, build::TCP_ACK, b"x"));
            s.send(0, &tcp(b, 8080, client(2), 2, build::TCP_ACK, b"y"));
        }
        if t == 55 {
            assert!(s.mgr.flow(&half).is_some_and(|f| f.is_open()));
        }
    }
    assert_eq!(
        s.mgr.flow(&full).map(|f| f.state),
        Some(FlowState::Established)
    );
    assert!(
        s.mgr
            .flow(&half)
            .is_none_or(|f| f.state == FlowState::Ended),
        "SYN-only flow ended 60 s after its last packet"
    );
    assert_eq!(s.counter("flows-expired-idle"), 1, "only the SYN-only flow");
    assert_eq!(s.counter("flows-revived"), 0);
    assert!(s
        .mgr
        .status(s.now)
        .contains("timeouts tcp-transitory 60s tcp-established 7440s udp 300s icmp 60s"));
}

/// Case 4: two services share a backend; the same client port to both
/// would make the same reverse key. The second install is refused and
/// counted, and the first flow's replies still come from its own VIP.
#[test]
fn case4_an_install_never_replaces_another_flows_reverse_affinity() {
    let two = &format!("{}{}", web_b1(), web2_b1());
    let mut s = Sim::reporting(config("", two), 4096);
    let c = client(12);
    assert!(s
        .through(0, &tcp(c, 40000, VIP, 80, build::TCP_SYN, &[]))
        .is_some());
    let second = s.through(0, &tcp(c, 40000, VIP2, 80, build::TCP_SYN, &[]));
    assert!(
        second.is_none_or(|k| k.dst_addr != B[0] || k.src_port != 40000),
        "no second flow on the same reverse key: {second:?}"
    );
    assert_eq!(s.counter("install-collision-refused"), 1);
    let back = s
        .through(0, &tcp(B[0], 8080, c, 40000, build::TCP_ACK, b"data"))
        .expect("reply");
    assert_eq!(
        (back.src_addr, back.src_port),
        (VIP, 80),
        "the first connection's data comes from its own VIP"
    );
}

/// Case 4 with source NAT: two services draw ports from the same SNAT
/// address; a port whose reverse key is live is never handed out again.
#[test]
fn case4_snat_ports_live_elsewhere_are_remapped() {
    let snat = r#"snat = { address = "198.51.100.254", ports = "20000-20001" }"#;
    let two = &format!(
        "{}{}",
        service("web", "203.0.113.10:80", &[snat], &backends(1, 8080)),
        service("web2", "203.0.113.11:80", &[snat], &backends(1, 8080))
    );
    let mut s = Sim::reporting(config("", two), 4096);
    let a = s
        .through(0, &tcp(client(1), 1, VIP, 80, build::TCP_SYN, &[]))
        .expect("first");
    let b = s
        .through(0, &tcp(client(2), 2, VIP2, 80, build::TCP_SYN, &[]))
        .expect("second");
    assert_eq!(a.src_addr, Ipv4Addr::new(198, 51, 100, 254));
    assert_ne!(
        a.src_port, b.src_port,
        "distinct SNAT ports toward one backend"
    );
    assert_eq!(s.counter("install-collision-remapped"), 1);
    // The first flow's replies still reach client 1 from the first VIP.
    let back = s
        .through(
            0,
            &tcp(B[0], 8080, a.src_addr, a.src_port, build::TCP_ACK, b"x"),
        )
        .expect("reply");
    assert_eq!((back.src_addr, back.dst_addr), (VIP, client(1)));
}

/// Case 5: a backend that connects to its own service's VIP is never
/// balanced to itself; with `hairpin_snat` it is also source-NATed.
#[test]
fn case5_hairpin_client_is_never_sent_to_itself_and_can_be_snated() {
    let options = [
        r#"client_domain = "0.0.0.0/0""#,
        r#"algorithm = "maglev""#,
        r#"hairpin_snat = { address = "198.51.100.250", ports = "30000-30100" }"#,
    ];
    let svc = service("web", "203.0.113.10:80", &options, &backends(3, 8080));
    for snat in [false, true] {
        let text = if snat {
            svc.to_string()
        } else {
            svc.replace(
                "hairpin_snat = { address = \"198.51.100.250\", ports = \"30000-30100\" }\n",
                "",
            )
        };
        let mut s = Sim::reporting(config("", &text), 4096);
        let mut to_self = 0;
        for p in 0..60u16 {
            let k = s
                .through(0, &tcp(B[0], 40000 + p, VIP, 80, build::TCP_SYN, &[]))
                .expect("placed");
            if k.dst_addr == B[0] {
                to_self += 1;
            }
            if snat {
                assert_eq!(k.src_addr, Ipv4Addr::new(198, 51, 100, 250));
            }
        }
        assert_eq!(to_self, 0, "never balanced to itself (snat {snat})");
        assert_eq!(s.counter("hairpin-flows"), 60);
    }
}

/// Case 6: `flow_max_lifetime = 10`, `fixed_ttl = 30`, UDP round robin.
/// When the manager ends the flow (t = 20) it deletes it on the agent and
/// keeps its placement while any agent may still hold it, so the same
/// client through another agent at t = 25 gets the same backend.
#[test]
fn case6_the_manager_keeps_a_flow_as_long_as_an_agent_may_hold_it() {
    let mut s = Sim::reporting(config("flow_max_lifetime = 10", &dns()), 4096);
    let c = client(9);
    let first = s
        .through(0, &build::udp(c, 7000, VIP, 53, b"q"))
        .expect("placed")
        .dst_addr;
    s.run_until(20 * SEC);
    assert_eq!(s.counter("flows-expired-lifetime"), 1);
    assert_eq!(s.agents[0].1.fixed_count(s.now), 0, "TTL 0 sent to agent 1");
    s.run_until(25 * SEC);
    let key = fwd_key(c, 7000, wire::UDP, VIP, 53);
    assert!(s.mgr.flow(&key).is_some(), "still known at t = 25");
    let second = s
        .through(1, &build::udp(c, 7000, VIP, 53, b"q"))
        .expect("placed")
        .dst_addr;
    assert_eq!(second, first, "the two agents agree on the flow");
    // An ended flow's keys stay reserved for a fixed TTL after the last
    // TTL given (at least twice the TTL after its last renewal).
    let mut s = Sim::reporting(config("flow_max_lifetime = 10", &dns()), 4096);
    s.send(0, &build::udp(c, 7000, VIP, 53, b"q"));
    s.run_until(20 * SEC);
    s.run_until(69 * SEC);
    assert!(s.mgr.flow(&key).is_some(), "held until 10 + 30 + 30 s");
    s.run_until(71 * SEC);
    assert!(s.mgr.flow(&key).is_none());
}

/// Case 7: operator state. The effective weight never exceeds the set
/// weight; load reports are bounded, cleared by set-weight and refused on
/// non-feedback services; set-weight and drain survive a reload; `listen`
/// and `metrics` changes are refused on reload; a backend added by reload
/// is unhealthy until its first check passes.
#[test]
fn case7_operator_state_survives_reload_and_load_reports_are_bounded() {
    let fb = service(
        "fb",
        "203.0.113.10:80",
        &[
            r#"algorithm = "feedback""#,
            "[service.health]",
            r#"kind = "tcp""#,
        ],
        &[
            "198.51.100.1:8080 weight = 10",
            "198.51.100.2:8080 weight = 4",
        ],
    );
    let mut s = Sim::reporting(config("", &fb), 4096);
    let b1 = SocketAddrV4::new(B[0], 8080);
    let b2 = SocketAddrV4::new(B[1], 8080);
    for b in [b1, b2] {
        let out = s.mgr.health("fb", b, true);
        s.deliver(out);
    }
    let cmd = |s: &mut Sim, line: &str| s.mgr.command(Command::parse(line).unwrap(), 0);
    let r = cmd(&mut s, "load-report fb 198.51.100.2:8080 75").unwrap();
    assert!(r.contains("effective weight 1"), "{r}");
    cmd(&mut s, "load-report fb 198.51.100.1:8080 0").unwrap();
    cmd(&mut s, "set-weight fb 198.51.100.1:8080 3").unwrap();
    let weights = |s: &Sim| -> Vec<(u32, u32)> {
        s.mgr.services()[0]
            .backends
            .iter()
            .map(|b| (b.weight, b.effective_weight()))
            .collect()
    };
    assert_eq!(weights(&s)[0], (3, 3), "weight 3 effective 3, not 10");
    assert!(cmd(&mut s, "load-report fb 198.51.100.1:8080 150")
        .unwrap_err()
        .contains("over 100"));
    cmd(&mut s, "drain fb 198.51.100.2:8080").unwrap();
    // Reload with the same file, a new backend and another listen address.
    let more = fb.clone() + "[[service.backend]]\naddress = \"198.51.100.3:8080\"\n";
    let mut cfg = config("", &more);
    cfg.manager.listen = "192.0.2.99:1638".parse().unwrap();
    let out = s.mgr.reload(cfg, SEC);
    s.deliver(out);
    assert_eq!(weights(&s)[0], (3, 3), "set-weight survives the reload");
    assert_eq!(weights(&s)[1], (0, 0), "the drain survives the reload");
    assert_eq!(
        weights(&s)[2],
        (1, 0),
        "new backend: no flows before its first check"
    );
    assert!(!s.mgr.services()[0].backends[2].healthy);
    assert_eq!(
        s.mgr.config().manager.listen,
        s.mgr_addr,
        "listen change refused"
    );
    assert_eq!(s.counter("reload-listen-metrics-refused"), 1);
    for p in 0..10u16 {
        let k = s
            .through(0, &tcp(client(1), 100 + p, VIP, 80, build::TCP_SYN, &[]))
            .expect("placed");
        assert_eq!(k.dst_addr, B[0], "only the set-weight backend takes flows");
    }
    let out = s.mgr.health("fb", SocketAddrV4::new(B[2], 8080), true);
    s.deliver(out);
    assert!(
        s.mgr.services()[0].backends[2].healthy,
        "first check passed"
    );
    // A reload that changes the file's weight applies the file's.
    let changed = more.replace("weight = 10", "weight = 5");
    let out = s.mgr.reload(config("", &changed), 2 * SEC);
    s.deliver(out);
    assert_eq!(weights(&s)[0], (5, 5));
}

/// Case 4 across managers: another manager (a backup that took over,
/// another client domain's) learns the keys in use from the agents'
/// activity reports and never installs over them.
#[test]
fn case4_another_manager_learns_live_keys_from_activity_reports() {
    let mut s = Sim::reporting(config("", &web_b1()), 4096);
    let (mut b, b_addr) = second_manager(config("", &web2_b1()));
    let agent = s.agents[0].0;
    // Manager B's answers go to agent 1 as coming from B.
    let to_agent = |s: &mut Sim, out: Vec<Outgoing>| -> Vec<Vec<u8>> {
        let mut returned = Vec::new();
        for (to, m) in out {
            if to == agent {
                let co = s.agents[0].1.handle_control(s.now, b_addr, &m);
                returned.extend(co.returned.into_iter().map(|r| r.packet));
            }
        }
        returned
    };
    let out = b.tick(0);
    to_agent(&mut s, out);
    let c = client(12);
    s.through(0, &tcp(c, 40000, VIP, 80, build::TCP_SYN, &[]))
        .expect("placed by manager A");
    s.through(0, &tcp(c, 40000, VIP, 80, build::TCP_ACK, b"GET /"));
    s.through(0, &tcp(B[0], 8080, c, 40000, build::TCP_ACK, b"200"));
    // The report at 10 s goes to both managers.
    s.now = 10 * SEC;
    let reports = s.agents[0].1.tick(s.now);
    assert_eq!(reports.len(), 2, "one report per manager");
    for (to, m) in reports {
        if to == b_addr {
            b.handle_datagram(s.now, agent, &m);
        }
    }
    assert!(b.counters.contains_key("activity-foreign-keys"));
    let out = b.tick(s.now);
    to_agent(&mut s, out);
    // The same client port to B's service, same backend: B refuses.
    let syn = tcp(c, 40000, VIP2, 80, build::TCP_SYN, &[]);
    let (d, buf) = s.process(0, &syn);
    let Disposition::Punt { start, .. } = d else {
        panic!("punted to B: {d:?}");
    };
    let out = b.handle_datagram(s.now, agent, &buf[start..]);
    assert!(to_agent(&mut s, out).is_empty(), "nothing installed");
    assert_eq!(b.counters.get("install-collision-refused"), Some(&1));
    let back = s
        .through(0, &tcp(B[0], 8080, c, 40000, build::TCP_ACK, b"200"))
        .expect("reply");
    assert_eq!((back.src_addr, back.src_port), (VIP, 80));
}

/// Case 3, reverse packets: a backend's SYN-ACK retransmitted after a
/// half-open flow ended does not bring the flow back (only the client's
/// packets do, on the same backend).
#[test]
fn case3_backend_packets_do_not_revive_an_ended_half_open_flow() {
    let mut s = Sim::reporting(config("tcp_transitory_timeout = 60", &web_rr()), 4096);
    let spoofed = Ipv4Addr::new(198, 19, 0, 1);
    let b = s
        .through(0, &tcp(spoofed, 1000, VIP, 80, build::TCP_SYN, &[]))
        .expect("placed")
        .dst_addr;
    s.run_until(80 * SEC);
    assert_eq!(s.mgr.flow_count(), 0);
    let synack = tcp(b, 8080, spoofed, 1000, build::TCP_SYN | build::TCP_ACK, &[]);
    s.send(0, &synack);
    assert_eq!(s.mgr.flow_count(), 0, "not revived by the backend");
    assert_eq!(s.counter("ended-flow-reverse-dropped"), 1);
    assert_eq!(s.agents[0].1.fixed_count(s.now), 0);
}

/// Learned keys do not block a takeover: a backup adopts an established
/// flow of the primary (Maglev) even though the agents reported that
/// flow's keys to it, on the same backend.
#[test]
fn case4_a_backup_still_adopts_the_flows_whose_keys_it_learned() {
    let web = |backup: u16| {
        let backup = format!("backup_precedence = {backup}");
        let options = [r#"algorithm = "maglev""#, &backup];
        service("web", "203.0.113.10:80", &options, &backends(3, 8080))
    };
    let mut s = Sim::reporting(config("", &web(0)), 4096);
    let (mut b, b_addr) = second_manager(config("", &web(100)));
    // Manager B's messages to the agents, as coming from B.
    let to_agents = |s: &mut Sim, out: Vec<Outgoing>| -> Vec<(usize, Vec<u8>)> {
        let mut returned = Vec::new();
        for (to, m) in out {
            if let Some(i) = s.agents.iter().position(|(a, _, _)| *a == to) {
                let co = s.agents[i].1.handle_control(s.now, b_addr, &m);
                returned.extend(co.returned.into_iter().map(|r| (i, r.packet)));
            }
        }
        returned
    };
    let out = b.tick(0);
    to_agents(&mut s, out);
    let c = client(20);
    let backend = s
        .through(0, &tcp(c, 41000, VIP, 80, build::TCP_SYN, &[]))
        .expect("placed by the primary")
        .dst_addr;
    s.through(0, &tcp(c, 41000, VIP, 80, build::TCP_ACK, b"GET /"));
    s.through(0, &tcp(backend, 8080, c, 41000, build::TCP_ACK, b"200"));
    // The primary stops (no more ticks: its 3 s wildcards expire); the
    // backup keeps refreshing and gets agent 1's activity report.
    s.now = 10 * SEC;
    let out = b.tick(s.now);
    to_agents(&mut s, out);
    for (to, m) in s.agents[0].1.tick(s.now) {
        if to == b_addr {
            let agent = s.agents[0].0;
            b.handle_datagram(s.now, agent, &m);
        }
    }
    assert!(b.counters.contains_key("activity-foreign-keys"));
    // The flow's next packet crosses agent 2, which never held it: it is
    // punted to the backup, which adopts it on the same backend.
    let ack = tcp(c, 41000, VIP, 80, build::TCP_ACK, b"more");
    let (d, buf) = s.process(1, &ack);
    let Disposition::Punt { start, .. } = d else {
        panic!("punted to the backup: {d:?}");
    };
    let agent2 = s.agents[1].0;
    let out = b.handle_datagram(s.now, agent2, &buf[start..]);
    assert_eq!(b.counters.get("install-collision-refused"), None);
    assert_eq!(b.counters.get("flow-adopted"), Some(&1));
    let returned = to_agents(&mut s, out);
    assert_eq!(returned.len(), 1, "the packet comes back with the install");
    assert!(
        s.agents[1].1.fixed_count(s.now) == 2,
        "installed on agent 2"
    );
    let k = s.through(1, &ack).expect("forwarded on the fast path");
    assert_eq!(k.dst_addr, backend, "the same backend as the primary chose");
}

/// Issue 15 (visibility): `stats` sums the agents' activity reports per
/// backend. Three TCP flows through two agents (the second agent learns
/// one of them by punting, FIGURE 5); once they reported (promptly: the
/// flows' new handshake marks) the per-backend packet and byte counts
/// equal every packet sent, in each
/// direction — the punted ones too: the manager's answer returns them to
/// the agent, which sends them through the new fixed affinity (counted
/// there) — and `connections` lists each flow once with both agents on
/// the shared one.
#[test]
fn stats_count_every_packet_the_agents_carried_per_backend_and_direction() {
    let mut s = Sim::reporting(config("", &web_rr()), 4096);
    let mut sent_in: std::collections::BTreeMap<Ipv4Addr, (u64, u64)> = Default::default();
    let mut sent_out: std::collections::BTreeMap<Ipv4Addr, (u64, u64)> = Default::default();
    let mut backends = Vec::new();
    for n in 0..3u8 {
        let c = client(20 + n);
        let port = 41000 + n as u16;
        let syn = tcp(c, port, VIP, 80, build::TCP_SYN, &[]);
        let k = s.through(0, &syn).expect("SYN NAT'ed");
        let b = k.dst_addr;
        backends.push((c, port, b));
        // The SYN was punted, returned, and carried by the fixed affinity.
        let e = sent_in.entry(b).or_default();
        e.0 += 1;
        e.1 += syn.len() as u64;
        for i in 0..(5 + n as usize) {
            let p = tcp(c, port, VIP, 80, build::TCP_ACK, &vec![b'x'; 10 * i]);
            assert_eq!(s.through(0, &p).map(|k| k.dst_addr), Some(b));
            let e = sent_in.entry(b).or_default();
            e.0 += 1;
            e.1 += p.len() as u64;
        }
        for i in 0..(3 + n as usize) {
            let p = tcp(b, 8080, c, port, build::TCP_ACK, &vec![b'y'; 100 + i]);
            assert!(s.through(0, &p).is_some(), "reply translated");
            let e = sent_out.entry(b).or_default();
            e.0 += 1;
            e.1 += p.len() as u64;
        }
    }
    // The first flow's replies also cross agent 2: its first one is
    // punted (agent 2 learns the flow) and returned, the next two pass its
    // new fixed affinity; all are counted.
    let (c0, p0, b0) = backends[0];
    for i in 0..3 {
        let p = tcp(b0, 8080, c0, p0, build::TCP_ACK, b"zz");
        assert!(s.through(1, &p).is_some(), "reply {i} through agent 2");
        let e = sent_out.entry(b0).or_default();
        e.0 += 1;
        e.1 += p.len() as u64;
    }
    // The agents report these flows within a fraction of a second (their
    // handshake marks are new: prompt reports), not at the interval.
    s.run_until(s.now + 2 * SEC);
    assert!(s.counter("rx-activity-report") >= 2);
    let j = s
        .mgr
        .command(Command::Stats { json: true }, s.now)
        .expect("stats");
    let v: serde_json::Value = serde_json::from_str(&j).expect("JSON");
    let web = &v["services"][0];
    assert_eq!(web["name"], "web");
    let (mut all_in, mut all_out) = (0, 0);
    for b in web["backends"].as_array().expect("backends") {
        let addr: SocketAddrV4 = b["address"].as_str().unwrap_or("").parse().expect("addr");
        let t = &b["traffic"];
        let (pi, bi) = sent_in.get(addr.ip()).copied().unwrap_or_default();
        let (po, bo) = sent_out.get(addr.ip()).copied().unwrap_or_default();
        assert_eq!(t["packets_in"], pi, "{addr} in: {j}");
        assert_eq!(t["bytes_in"], bi, "{addr} bytes in: {j}");
        assert_eq!(t["packets_out"], po, "{addr} out: {j}");
        assert_eq!(t["bytes_out"], bo, "{addr} bytes out: {j}");
        let flows = backends.iter().filter(|x| x.2 == *addr.ip()).count() as u64;
        assert_eq!(t["connections"], flows, "{addr}: {j}");
        assert_eq!(t["active_connections"], flows, "{addr}: {j}");
        all_in += pi;
        all_out += po;
    }
    assert_eq!(web["traffic"]["packets_in"], all_in);
    assert_eq!(web["traffic"]["packets_out"], all_out);
    assert_eq!(web["traffic"]["connections"], 3);
    assert_eq!(web["role"], "serving");
    assert!(
        web["traffic"]["rates"]["packets_in_per_s"].as_f64() > Some(0.0),
        "{j}"
    );
    let text = s
        .mgr
        .command(Command::Stats { json: false }, s.now)
        .expect("stats");
    assert!(text.contains("TCP 203.0.113.10:80 (web)"), "{text}");

    let all = s
        .mgr
        .command(
            Command::Connections {
                service: Some("web".into()),
                backend: None,
                limit: 1000,
                json: true,
            },
            s.now,
        )
        .expect("connections");
    let v: serde_json::Value = serde_json::from_str(&all).expect("JSON");
    assert_eq!(v["matched"], 3, "{all}");
    let first = &v["connections"][0];
    assert_eq!(first["client"], format!("{c0}:{p0}"));
    assert_eq!(first["virtual_address"], "203.0.113.10:80");
    assert_eq!(first["backend"], format!("{b0}:8080"));
    assert_eq!(first["source_to_backend"], format!("{c0}:{p0}"), "no SNAT");
    assert_eq!(first["state"], "established");
    assert_eq!(first["agents"].as_array().map(Vec::len), Some(2), "{all}");
    assert!(first["expires_in_s"].as_f64() > Some(0.0));
    // Filtered by backend and limited.
    let one = s
        .mgr
        .command(
            Command::Connections {
                service: Some("web".into()),
                backend: Some(SocketAddrV4::new(b0, 8080)),
                limit: 0,
                json: false,
            },
            s.now,
        )
        .expect("connections");
    assert!(one.contains("more not shown (--limit 0)"), "{one}");
    assert!(s
        .mgr
        .command(
            Command::Connections {
                service: Some("nope".into()),
                backend: None,
                limit: 1,
                json: false,
            },
            s.now,
        )
        .is_err());
    // A backend the service does not have: an error, as for an unknown
    // service (it was an empty list and success).
    let e = s
        .mgr
        .command(
            Command::Connections {
                service: Some("web".into()),
                backend: Some(SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 99), 5)),
                limit: 10,
                json: false,
            },
            s.now,
        )
        .expect_err("unknown backend");
    assert!(e.contains("has no backend 198.51.100.99:5"), "{e}");
}

/// Issue 15: health detail — the last failure's reason, latency,
/// failures in a row, time since the change — and drain as a state.
#[test]
fn status_shows_health_detail_and_drain_as_a_state() {
    let svc = web_rr().replace(
        "sticky_timeout_ms = 2000\n",
        "sticky_timeout_ms = 2000\n[service.health]\nkind = \"tcp\"\ninterval_ms = 1000\ntimeout_ms = 500\nrise = 2\nfall = 2\n",
    );
    let mut s = Sim::reporting(config("", &svc), 4096);
    let b1 = SocketAddrV4::new(B[0], 8080);
    let b2 = SocketAddrV4::new(B[1], 8080);
    for ok in [true, true] {
        s.mgr.health_check(SEC, "web", b1, ok, None, Some(800));
        s.mgr.health_check(SEC, "web", b2, ok, None, Some(800));
    }
    s.mgr
        .health_check(2 * SEC, "web", b1, false, Some("refused"), Some(150));
    s.mgr
        .health_check(3 * SEC, "web", b1, false, Some("timeout"), Some(500_000));
    s.mgr
        .command(
            Command::SetWeight {
                service: "web".into(),
                backend: b2,
                weight: 0,
            },
            3 * SEC,
        )
        .expect("drain");
    let now = 13 * SEC;
    let j = s.mgr.command(Command::StatusJson, now).expect("status");
    let v: serde_json::Value = serde_json::from_str(&j).expect("JSON");
    let b = &v["services"][0]["backends"];
    assert_eq!(b[0]["state"], "down", "{j}");
    assert_eq!(b[0]["last_failure"], "timeout");
    assert_eq!(b[0]["consecutive_failures"], 2);
    assert_eq!(b[0]["check_latency_ms"], 500.0);
    assert_eq!(b[0]["since_change_s"], 10.0);
    assert_eq!(b[0]["checks"], 4);
    assert_eq!(b[1]["state"], "draining");
    assert_eq!(b[1]["last_failure"], serde_json::Value::Null);
    assert_eq!(v["services"][0]["role"], "idle", "no traffic yet");
    let text = s.mgr.command(Command::Status, now).expect("status");
    assert!(
        text.contains("state down checks 4 failing-in-a-row 2 last-failure \"timeout\" latency 500.0ms changed 10s ago"),
        "{text}"
    );
    assert!(text.contains("state draining"), "{text}");
}

/// Issue 15: the role per service. Manager A places and carries a flow
/// (`serving`); manager B, configured with the same service as a backup
/// (backup precedence 100), places nothing and learns A's live keys
/// toward the virtual address from the agent's activity report
/// (`standing-by`); before any traffic both are `idle`.
#[test]
fn role_per_service_serving_standing_by_and_idle() {
    let options = [r#"algorithm = "round-robin""#, "backup_precedence = BP"];
    let web = service("web", "203.0.113.10:80", &options, &backends(1, 8080));
    let mut s = Sim::reporting(config("", &web.replace("BP", "0")), 4096);
    let (mut b, b_addr) = second_manager(config("", &web.replace("BP", "100")));
    let agent = s.agents[0].0;
    let role = |m: &mut ManagerCore, now: u64| -> String {
        let j = m.command(Command::StatusJson, now).expect("status");
        let v: serde_json::Value = serde_json::from_str(&j).expect("JSON");
        v["services"][0]["role"].as_str().unwrap_or("").to_string()
    };
    assert_eq!(role(&mut s.mgr, 0), "idle");
    assert_eq!(role(&mut b, 0), "idle");
    // B's wildcards reach agent 1, so the agent reports to B too.
    for (to, m) in b.tick(0) {
        if to == agent {
            s.agents[0].1.handle_control(s.now, b_addr, &m);
        }
    }
    let c = client(13);
    s.through(0, &tcp(c, 40000, VIP, 80, build::TCP_SYN, &[]))
        .expect("placed by manager A");
    s.through(0, &tcp(c, 40000, VIP, 80, build::TCP_ACK, b"GET /"));
    s.now = 10 * SEC;
    for (to, m) in s.agents[0].1.tick(s.now) {
        if to == b_addr {
            b.handle_datagram(s.now, agent, &m);
        } else if to == s.mgr_addr {
            s.mgr.handle_datagram(s.now, agent, &m);
        }
    }
    assert_eq!(role(&mut s.mgr, s.now), "serving");
    assert_eq!(role(&mut b, s.now), "standing-by");
    let m = affinity_manager::metrics::encode(&b.status_report(s.now), None);
    assert!(
        m.contains("affinity_manager_service_role{service=\"web\",role=\"standing-by\"} 1"),
        "{m}"
    );
}
