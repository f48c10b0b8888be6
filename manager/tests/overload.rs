//! The manager bounds its own work under a SYN flood: half-open flows per
//! service (`max_half_open_flows`), through simulated agents running the
//! real agent core. (The receive queue's drop-newest is tested in
//! `batch_io`.)

use affinity_api::AffinityKey;
use affinity_forwarding_agent::wire::build;
use affinity_forwarding_agent::Disposition;
use affinity_manager::{Config, FlowState};

mod common;
use common::{client, config, Sim, B, SEC, VIP};

/// Two TCP services on the virtual address (:80 and :81), one backend
/// each, with `max_half_open_flows = limit` and the default
/// `half_open_policy` (`evict-oldest`).
fn two_services(limit: u32) -> Config {
    two_services_with(limit, "")
}

/// [`two_services`] with `options` (TOML lines) in both services.
fn two_services_with(limit: u32, options: &str) -> Config {
    config(
        &format!("max_half_open_flows = {limit}"),
        &format!(
            r#"
[[service]]
name = "web"
virtual = "203.0.113.10:80"
client_domain = "198.18.0.0/15"
{options}
[[service.backend]]
address = "198.51.100.1:8080"

[[service]]
name = "other"
virtual = "203.0.113.10:81"
client_domain = "198.18.0.0/15"
{options}
[[service.backend]]
address = "198.51.100.2:8080"
"#
        ),
    )
}

/// [`two_services`] with `half_open_policy = "refuse"`: SYNs past the
/// limit are refused (the behaviour before `evict-oldest`).
fn two_services_refusing(limit: u32) -> Config {
    two_services_with(limit, r#"half_open_policy = "refuse""#)
}

/// The forward key of client 1's `port` toward the virtual address.
fn key(port: u16, vport: u16) -> AffinityKey {
    AffinityKey {
        protocol: affinity_forwarding_agent::wire::TCP,
        src_addr: client(1),
        dst_addr: VIP,
        src_port: port,
        dst_port: vport,
    }
}

/// The fixed affinities agent `i` holds for client 1's `port` (its
/// forward key from the port, its reverse key to it).
fn held(s: &Sim, i: usize, port: u16) -> usize {
    let c = client(1);
    s.agents[i]
        .1
        .fixed_entries(s.now, 100, |k| {
            (k.src_addr == c && k.src_port == port) || (k.dst_addr == c && k.dst_port == port)
        })
        .len()
}

fn syn(port: u16, vport: u16) -> Vec<u8> {
    build::tcp(client(1), port, VIP, vport, build::TCP_SYN, 1, 0, &[])
}

#[test]
fn half_open_flows_are_capped_per_service_and_room_returns_when_one_closes() {
    let mut s = Sim::new(two_services_refusing(3));
    s.tick(SEC);
    // Five SYNs to web: three placed, two refused (never installed, so
    // the agent drops them when the manager does not answer).
    for p in 1000..1005 {
        s.send(0, &syn(p, 80));
    }
    assert_eq!(s.mgr.flow_count(), 3);
    assert_eq!(s.counter("flows-created"), 3);
    assert_eq!(s.counter("half-open-limit-refused"), 2);
    // Another service has its own limit.
    s.send(0, &syn(1000, 81));
    assert_eq!(s.mgr.flow_count(), 4);
    assert_eq!(s.counter("half-open-limit-refused"), 2);
    // One of web's flows closes (RST through its fixed affinity): it is
    // no longer half-open. Within the pruning interval (100 ms) the set is
    // not walked again; after it, a new SYN finds room.
    let rst = build::tcp(client(1), 1000, VIP, 80, build::TCP_RST, 2, 0, &[]);
    assert!(matches!(s.send(0, &rst), Disposition::Pass));
    assert_eq!(s.counter("flows-closed"), 1);
    s.now += SEC / 20;
    s.send(0, &syn(1005, 80));
    assert_eq!(s.counter("half-open-limit-refused"), 3);
    s.now += SEC / 10;
    s.send(0, &syn(1006, 80));
    assert_eq!(s.counter("half-open-limit-refused"), 3);
    assert_eq!(s.counter("flows-created"), 5);
    // The counter is in the status report and the metrics from start.
    let report = s.mgr.status_report(s.now);
    assert_eq!(report.counters.get("half-open-limit-refused"), Some(&3));
    assert_eq!(report.counters.get("rx-queue-dropped"), Some(&0));
    let metrics = s.mgr.metrics(s.now);
    assert!(
        metrics.contains(r#"event="half-open-limit-refused"} 3"#),
        "{metrics}"
    );
}

#[test]
fn with_limit_zero_or_the_default_a_flood_of_syns_is_placed() {
    // 0 = no limit.
    let mut s = Sim::new(two_services(0));
    s.tick(SEC);
    for p in 1000..1100 {
        s.send(0, &syn(p, 80));
    }
    assert_eq!(s.mgr.flow_count(), 100);
    assert_eq!(s.counter("half-open-limit-refused"), 0);
    // The documented default.
    let cfg = config("", "");
    assert_eq!(cfg.manager.max_half_open_flows, 100_000);
    assert_eq!(cfg.manager.receive_queue, 8192);
    assert_eq!(cfg.manager.receive_buffer, 8 << 20);
}

#[test]
fn a_receive_queue_out_of_range_is_refused() {
    for bad in ["receive_queue = 0", "receive_queue = 1048577"] {
        let text = format!("{}\n", common::manager_section(bad));
        let errs = Config::parse(&text).err().unwrap_or_default();
        assert!(
            errs.iter()
                .any(|e| e.message.contains("receive_queue must be 1..=1048576")),
            "{bad}: {errs:?}"
        );
    }
}

#[test]
fn a_receive_buffer_out_of_range_is_refused() {
    for bad in ["receive_buffer = 4095", "receive_buffer = 1073741825"] {
        let text = format!("{}\n", common::manager_section(bad));
        let errs = Config::parse(&text).err().unwrap_or_default();
        assert!(
            errs.iter().any(|e| e
                .message
                .contains("receive_buffer must be 4096..=1073741824 bytes")),
            "{bad}: {errs:?}"
        );
    }
    let text = format!("{}\n", common::manager_section("receive_buffer = 65536"));
    assert_eq!(
        Config::parse(&text).map(|c| c.manager.receive_buffer).ok(),
        Some(65536)
    );
}

/// The kernel's drops on the service-message socket (its receive buffer
/// full), which the daemon reads once a second: lost activity reports
/// leave flows unrenewed, so the loss is counted, in status, JSON and
/// metrics.
#[test]
fn kernel_drops_reported_by_the_daemon_are_counted_and_shown() {
    let mut s = Sim::new(two_services_refusing(3));
    s.mgr.receive_kernel_dropped(SEC, 0);
    assert_eq!(s.counter("rx-kernel-dropped"), 0);
    s.mgr.receive_kernel_dropped(SEC, 40);
    s.mgr.receive_kernel_dropped(2 * SEC, 2);
    assert_eq!(s.counter("rx-kernel-dropped"), 42);
    let text = s.mgr.status(2 * SEC);
    assert!(
        text.contains("bytes dropped 0 kernel-buffer 8388608 bytes kernel-dropped 42\n"),
        "{text}"
    );
    let j = s
        .mgr
        .command(affinity_manager::Command::StatusJson, 2 * SEC)
        .expect("status");
    let v: serde_json::Value = serde_json::from_str(&j).expect("JSON");
    assert_eq!(v["receive_queue"]["kernel_dropped"], 42, "{j}");
    assert_eq!(v["receive_queue"]["kernel_buffer_bytes"], 8 << 20);
    assert!(s
        .mgr
        .metrics(2 * SEC)
        .contains(r#"event="rx-kernel-dropped"} 42"#));
}

#[test]
fn queue_drops_reported_by_the_daemon_are_counted() {
    let mut s = Sim::new(two_services_refusing(3));
    s.mgr.receive_queue_dropped(SEC, 0, 8192);
    assert_eq!(s.counter("rx-queue-dropped"), 0);
    s.mgr.receive_queue_dropped(SEC, 5, 8192);
    s.mgr.receive_queue_dropped(2 * SEC, 7, 8192);
    assert_eq!(s.counter("rx-queue-dropped"), 12);
}

/// Fault: a spoofed-SYN flood that filled `max_half_open_flows` refused
/// every new client until its flows aged out (240 s). With the default
/// `evict-oldest`, a SYN at the limit ends the service's oldest half-open
/// flow (TTL 0 to its agent: its fixed affinities are gone) and is placed;
/// one while the oldest is younger than 1 s (a handshake may be under
/// way) is refused.
#[test]
fn at_the_half_open_limit_the_oldest_is_evicted_and_the_new_syn_placed() {
    let mut s = Sim::new(two_services(3));
    s.tick(SEC);
    for (i, p) in (1000..1003).enumerate() {
        s.now = SEC + i as u64 * SEC / 10;
        s.send(0, &syn(p, 80));
    }
    assert_eq!(s.counter("flows-created"), 3);
    assert_eq!(held(&s, 0, 1000), 2, "both keys of the oldest installed");
    // 0.5 s after the oldest: nothing old enough to evict.
    s.now = SEC + SEC / 2;
    s.send(0, &syn(1003, 80));
    assert_eq!(s.counter("half-open-limit-refused"), 1);
    assert_eq!(s.counter("half-open-evicted"), 0);
    assert!(s.mgr.flow(&key(1003, 80)).is_none());
    // No activity reports here: the oldest is evictable once 30 s old
    // (`HALF_OPEN_UNREPORTED_AGE_NS`); it is evicted, the new SYN placed.
    s.run_until(32 * SEC);
    s.send(0, &syn(1004, 80));
    assert_eq!(s.counter("half-open-evicted"), 1);
    assert_eq!(s.counter("half-open-limit-refused"), 1);
    assert_eq!(s.counter("flows-created"), 4);
    assert_eq!(s.mgr.flow_count(), 3);
    assert!(s.mgr.flow(&key(1000, 80)).is_none(), "the oldest is gone");
    assert_eq!(held(&s, 0, 1000), 0, "its affinities deleted on the agent");
    assert!(s.mgr.flow(&key(1004, 80)).is_some());
    assert_eq!(held(&s, 0, 1004), 2);
    // The next one evicts the next oldest, not the newest.
    s.send(0, &syn(1005, 80));
    assert_eq!(s.counter("half-open-evicted"), 2);
    assert!(s.mgr.flow(&key(1001, 80)).is_none());
    assert_eq!(held(&s, 0, 1001), 0);
    for p in [1002, 1004, 1005] {
        assert!(s.mgr.flow(&key(p, 80)).is_some(), "{p} kept");
        assert_eq!(held(&s, 0, p), 2, "{p} kept on the agent");
    }
    assert_eq!(s.agents[0].1.fixed_count(s.now), 6);
    // The other service has its own queue: nothing evicted there.
    s.send(0, &syn(1000, 81));
    assert_eq!(s.counter("half-open-evicted"), 2);
    // Per service in status, status --json and metrics.
    let r = s.mgr.status_report(s.now);
    let a = r.services[0].admission.as_ref().expect("tcp");
    assert_eq!(
        (
            a.half_open_flows,
            a.max_half_open_flows,
            a.half_open_refused,
            a.half_open_evicted
        ),
        (3, 3, 1, 2)
    );
    assert_eq!(a.half_open_policy, "evict-oldest");
    assert_eq!(
        r.services[1]
            .admission
            .as_ref()
            .expect("tcp")
            .half_open_flows,
        1
    );
    assert_eq!(
        r.services[1]
            .admission
            .as_ref()
            .expect("tcp")
            .half_open_evicted,
        0
    );
    assert_eq!(r.counters.get("half-open-evicted"), Some(&2));
    let text = s.mgr.status(s.now);
    assert!(
        text.contains("\n  admission syn-proxy off half-open 3 of 3 policy evict-oldest refused 1 evicted 2\n"),
        "{text}"
    );
    let m = s.mgr.metrics(s.now);
    for want in [
        r#"affinity_manager_service_half_open_flows{service="web"} 3"#,
        r#"affinity_manager_service_half_open_evicted_total{service="web"} 2"#,
        r#"affinity_manager_service_half_open_refused_total{service="web"} 1"#,
        r#"affinity_manager_service_half_open_evicted_total{service="other"} 0"#,
        r#"event="half-open-evicted"} 2"#,
    ] {
        assert!(m.contains(want), "no {want:?} in:\n{m}");
    }
}

/// An evicted flow's source-NAT port is free at once: with 3 ports and a
/// limit of 3, a fourth SYN is placed on the port the oldest held.
#[test]
fn an_evicted_flow_frees_its_snat_port() {
    let cfg = config(
        "max_half_open_flows = 3",
        r#"
[[service]]
name = "web"
virtual = "203.0.113.10:80"
snat = { address = "198.51.100.250", ports = "40000-40002" }
[[service.backend]]
address = "198.51.100.1:8080"
"#,
    );
    let mut s = Sim::new(cfg);
    s.tick(SEC);
    for p in 1000..1003 {
        s.send(0, &syn(p, 80));
    }
    let oldest = s.mgr.flow(&key(1000, 80)).and_then(|f| f.snat);
    assert!(oldest.is_some());
    s.run_until(32 * SEC);
    s.send(0, &syn(1003, 80));
    assert_eq!(s.counter("half-open-evicted"), 1);
    assert_eq!(s.counter("snat-ports-exhausted"), 0);
    assert_eq!(s.mgr.flow(&key(1003, 80)).and_then(|f| f.snat), oldest);
    assert!(s.mgr.status(s.now).contains("snat ports in use 3 of 3"));
}

/// Only half-open flows are evicted: a flow seen established (its
/// handshake completed both ways in an activity report) stays, however old, while the
/// half-open ones after it are evicted oldest first.
#[test]
fn an_established_flow_is_never_evicted() {
    let mut s = Sim::reporting(two_services(2), 4096);
    s.tick(SEC);
    let real = key(2000, 80);
    let b = s
        .through(
            0,
            &build::tcp(client(1), 2000, VIP, 80, build::TCP_SYN, 1, 0, &[]),
        )
        .expect("placed")
        .dst_addr;
    s.send(
        0,
        &build::tcp(
            b,
            8080,
            client(1),
            2000,
            build::TCP_SYN | build::TCP_ACK,
            7,
            2,
            &[],
        ),
    );
    s.send(
        0,
        &build::tcp(client(1), 2000, VIP, 80, build::TCP_ACK, 2, 8, b"GET /"),
    );
    // The backend's answer: the reverse affinity's handshake mark.
    s.send(
        0,
        &build::tcp(b, 8080, client(1), 2000, build::TCP_ACK, 8, 7, b"200"),
    );
    s.run_until(11 * SEC);
    assert_eq!(
        s.mgr.flow(&real).map(|f| f.state),
        Some(FlowState::Established)
    );
    // Spoofed SYNs: two fill the limit (the established flow left it).
    s.send(0, &syn(1000, 80));
    s.send(0, &syn(1001, 80));
    assert_eq!(s.counter("half-open-evicted"), 0);
    // Not reported yet, 1 s old: not evictable (a real connection's first
    // report may still be to come).
    s.run_until(12 * SEC);
    s.send(0, &syn(1002, 80));
    assert_eq!(s.counter("half-open-evicted"), 0);
    assert_eq!(s.counter("half-open-limit-refused"), 1);
    // The 20 s report shows them half-open (their SYNs, no handshake).
    s.run_until(21 * SEC);
    for p in 1002..1004 {
        s.send(0, &syn(p, 80));
    }
    assert_eq!(s.counter("half-open-evicted"), 2);
    s.run_until(31 * SEC);
    for p in 1004..1006 {
        s.send(0, &syn(p, 80));
    }
    assert_eq!(s.counter("half-open-evicted"), 4);
    assert_eq!(s.counter("half-open-limit-refused"), 1);
    assert_eq!(
        s.mgr.flow(&real).map(|f| f.state),
        Some(FlowState::Established)
    );
    assert_eq!(
        held(&s, 0, 2000),
        2,
        "the established flow's affinities stay"
    );
    assert!(s.mgr.flow(&key(1004, 80)).is_some() && s.mgr.flow(&key(1005, 80)).is_some());
    assert_eq!(
        s.mgr.status_report(s.now).services[0]
            .admission
            .as_ref()
            .expect("tcp")
            .half_open_flows,
        2
    );
}

/// `half_open_policy = "refuse"` keeps the old behaviour at the limit:
/// nothing is evicted, however old, and status says so.
#[test]
fn with_policy_refuse_nothing_is_evicted() {
    let mut s = Sim::new(two_services_refusing(2));
    s.tick(SEC);
    s.send(0, &syn(1000, 80));
    s.send(0, &syn(1001, 80));
    s.run_until(60 * SEC);
    s.send(0, &syn(1002, 80));
    assert_eq!(s.counter("half-open-limit-refused"), 1);
    assert_eq!(s.counter("half-open-evicted"), 0);
    assert!(s.mgr.flow(&key(1000, 80)).is_some());
    assert!(s.mgr.flow(&key(1002, 80)).is_none());
    let text = s.mgr.status(s.now);
    assert!(
        text.contains(
            "\n  admission syn-proxy off half-open 2 of 2 policy refuse refused 1 evicted 0\n"
        ),
        "{text}"
    );
}

/// A flood much longer than the limit: every SYN after the first `limit`
/// evicts one, the table stays at the limit, and every flood SYN is placed.
/// The agents report every second, so each flood flow (its SYN counted on
/// the fixed affinity, no handshake) is reported half-open, and evictable,
/// before it is the oldest.
#[test]
fn a_long_flood_keeps_the_table_at_the_limit() {
    let mut s = Sim::reporting_every(two_services(200), 4096, 1_000);
    s.tick(SEC);
    for i in 0..2000u64 {
        // 100 SYNs/s: at the limit the oldest is 2 s old.
        let now = 2 * SEC + i * SEC / 100;
        if now / SEC != s.now / SEC {
            s.tick(now - now % SEC);
        }
        s.now = now;
        s.send(
            0,
            &build::tcp(
                client((i % 200) as u8 + 1),
                10_000 + (i / 200) as u16,
                VIP,
                80,
                build::TCP_SYN,
                1,
                0,
                &[],
            ),
        );
    }
    assert_eq!(s.counter("flows-created"), 2000);
    assert_eq!(s.counter("half-open-evicted"), 1800);
    assert_eq!(s.counter("half-open-limit-refused"), 0);
    assert_eq!(s.mgr.flow_count(), 200);
    assert_eq!(s.agents[0].1.fixed_count(s.now), 400);
}

/// Status shows each TCP service's admission control (SYN proxy on/off)
/// and the receive queue's limits, as text and as JSON; a UDP service has
/// no admission line.
#[test]
fn status_shows_admission_and_the_receive_queue() {
    let cfg = config(
        "",
        r#"
[[service]]
name = "web"
virtual = "203.0.113.10:80"
syn_proxy = true
[[service.backend]]
address = "198.51.100.1:8080"

[[service]]
name = "dns"
virtual = "203.0.113.10:53"
protocol = "udp"
[[service.backend]]
address = "198.51.100.2:53"
"#,
    );
    let mut s = Sim::new(cfg);
    s.mgr.receive_queue_dropped(SEC, 5, 8192);
    let text = s.mgr.status(SEC);
    assert!(
        text.contains("\nreceive-queue limit 8192 datagrams 16777216 bytes dropped 5 kernel-buffer 8388608 bytes kernel-dropped 0\n"),
        "{text}"
    );
    assert!(
        text.contains("\n  admission syn-proxy on half-open 0 of 100000 policy evict-oldest refused 0 evicted 0\n"),
        "{text}"
    );
    assert_eq!(text.matches("admission").count(), 1, "{text}");
    let j = s
        .mgr
        .command(affinity_manager::Command::StatusJson, SEC)
        .expect("status");
    let v: serde_json::Value = serde_json::from_str(&j).expect("JSON");
    assert_eq!(v["receive_queue"]["limit_datagrams"], 8192, "{j}");
    assert_eq!(v["receive_queue"]["limit_bytes"], 16 << 20);
    assert_eq!(v["receive_queue"]["dropped"], 5);
    let a = &v["services"][0]["admission"];
    assert_eq!(a["syn_proxy"], true, "{j}");
    assert_eq!(a["half_open_flows"], 0);
    assert_eq!(a["max_half_open_flows"], 100_000);
    assert_eq!(a["half_open_policy"], "evict-oldest");
    // The UDP service has no admission control to show (it showed the
    // TCP settings, zeroed, before): null in JSON, no metric rows.
    assert_eq!(v["services"][1]["protocol"], "udp", "{j}");
    assert!(v["services"][1]["admission"].is_null(), "{j}");
    let m = s.mgr.metrics(SEC);
    let udp = v["services"][1]["name"].as_str().unwrap_or_default();
    assert!(
        !m.contains(&format!(
            r#"affinity_manager_service_syn_proxy{{service="{udp}"}}"#
        )),
        "{m}"
    );
}

/// A reload that lowers `max_half_open_flows` evicts an `evict-oldest`
/// service's oldest half-open flows past the new limit at once (else each
/// new SYN would evict one and the count never come down); a `refuse`
/// service keeps its flows, as before.
#[test]
fn a_reload_lowering_the_limit_evicts_the_oldest_past_it() {
    let both = |limit: u32| {
        let mut c = two_services(limit);
        c.services[1].half_open_policy = Some(affinity_manager::config::HalfOpenPolicy::Refuse);
        c
    };
    let mut s = Sim::new(both(4));
    s.tick(SEC);
    for p in 1000..1004 {
        s.send(0, &syn(p, 80));
        s.send(0, &syn(p, 81));
    }
    assert_eq!(s.mgr.flow_count(), 8);
    s.now = 2 * SEC;
    let out = s.mgr.reload(both(2), s.now);
    s.deliver(out);
    assert_eq!(s.counter("half-open-evicted"), 2);
    for p in [1000, 1001] {
        assert!(s.mgr.flow(&key(p, 80)).is_none(), "{p} evicted");
        assert_eq!(held(&s, 0, p), 2, "{p}: the :81 flow's keys only");
    }
    assert!(s.mgr.flow(&key(1002, 80)).is_some() && s.mgr.flow(&key(1003, 80)).is_some());
    let r = s.mgr.status_report(s.now);
    assert_eq!(
        r.services[0]
            .admission
            .as_ref()
            .expect("tcp")
            .half_open_flows,
        2
    );
    assert_eq!(
        r.services[0]
            .admission
            .as_ref()
            .expect("tcp")
            .half_open_evicted,
        2
    );
    assert_eq!(
        r.services[1]
            .admission
            .as_ref()
            .expect("tcp")
            .half_open_flows,
        4,
        "refuse: kept"
    );
}

/// Issue 14 (punt admission): spoofed SYNs sent twice (a retransmission)
/// with the backend's SYN-ACK are packets both ways, 2 forward and 1
/// reverse, what made the manager count a flow established (2 h, outside
/// `max_half_open_flows`). Through agents that mark handshakes, no such
/// flow leaves SYN seen, the cap stays full and they end at the
/// transitory timeout; a client that completes its handshake, and whose
/// backend answers, is established.
#[test]
fn spoofed_syns_sent_twice_with_the_syn_ack_stay_half_open_under_the_cap() {
    let mut s = Sim::reporting(two_services(3), 4096);
    s.tick(SEC);
    let spoofed = |i: u8, flags: u8, to_client: bool| {
        let c = std::net::Ipv4Addr::new(198, 19, 7, i);
        if to_client {
            build::tcp(B[0], 8080, c, 3000, flags, 7000, 2, &[])
        } else {
            build::tcp(c, 3000, VIP, 80, flags, 1, 0, &[])
        }
    };
    for i in 1..=3 {
        s.send(0, &spoofed(i, build::TCP_SYN, false));
        s.send(0, &spoofed(i, build::TCP_SYN, false));
        s.send(0, &spoofed(i, build::TCP_SYN | build::TCP_ACK, true));
    }
    assert_eq!(s.counter("flows-created"), 3);
    // Reports every 10 s: the SYNs and SYN-ACKs are reported.
    s.run_until(21 * SEC);
    for i in 1..=3 {
        let k = affinity_api::AffinityKey {
            protocol: affinity_forwarding_agent::wire::TCP,
            src_addr: std::net::Ipv4Addr::new(198, 19, 7, i),
            dst_addr: VIP,
            src_port: 3000,
            dst_port: 80,
        };
        let f = s.mgr.flow(&k).expect("placed");
        assert_eq!((f.packets_fwd, f.packets_rev), (2, 1), "reported");
        assert_eq!(f.state, FlowState::SynSeen, "not established by counts");
    }
    // They still fill the cap: a fourth SYN evicts the oldest of them
    // (`evict-oldest`; only a half-open flow can be evicted).
    assert_eq!(
        s.mgr.status_report(s.now).services[0]
            .admission
            .as_ref()
            .expect("tcp")
            .half_open_flows,
        3
    );
    s.send(0, &syn(4000, 80));
    assert_eq!(s.counter("half-open-evicted"), 1);
    assert_eq!(s.counter("flows-created"), 4);
    // The rest end at the transitory timeout (240 s after the last
    // forward packet reported), freeing the room for a real client, whose
    // handshake and the backend's answer establish its flow.
    s.run_until(260 * SEC);
    assert_eq!(
        s.mgr
            .flow(&affinity_api::AffinityKey {
                protocol: affinity_forwarding_agent::wire::TCP,
                src_addr: std::net::Ipv4Addr::new(198, 19, 7, 1),
                dst_addr: VIP,
                src_port: 3000,
                dst_port: 80,
            })
            .map(|f| f.state)
            .unwrap_or(FlowState::Ended),
        FlowState::Ended
    );
    let c = client(1);
    let k = s
        .through(0, &build::tcp(c, 4001, VIP, 80, build::TCP_SYN, 1, 0, &[]))
        .expect("placed");
    assert_eq!(k.dst_addr, B[0]);
    s.send(
        0,
        &build::tcp(
            B[0],
            8080,
            c,
            4001,
            build::TCP_SYN | build::TCP_ACK,
            9,
            2,
            &[],
        ),
    );
    s.send(
        0,
        &build::tcp(c, 4001, VIP, 80, build::TCP_ACK, 2, 10, b"GET /"),
    );
    s.send(
        0,
        &build::tcp(B[0], 8080, c, 4001, build::TCP_ACK, 10, 7, b"200"),
    );
    s.run_until(271 * SEC);
    let key = affinity_api::AffinityKey {
        protocol: affinity_forwarding_agent::wire::TCP,
        src_addr: c,
        dst_addr: VIP,
        src_port: 4001,
        dst_port: 80,
    };
    assert_eq!(
        s.mgr.flow(&key).map(|f| f.state),
        Some(FlowState::Established)
    );
}

/// Fault: `evict-oldest` ended the oldest half-open flow once it was 1 s
/// old, but a real connection was seen established only in its agents'
/// next activity report (10 s by default): a flood of more than
/// `max_half_open_flows` SYNs per report interval evicted real
/// connections, established but not yet reported, and broke them. Now the
/// agents report new handshake marks within about 200 ms (prompt reports),
/// and a flow younger than 30 s is evicted only once a report showed it
/// half-open with the client's side of the handshake unseen: a client that
/// completed its handshake is kept even while its backend has sent
/// nothing since the SYN-ACK.
#[test]
fn real_connections_are_not_evicted_by_a_flood() {
    let mut s = Sim::reporting(two_services(3), 4096);
    s.run_until(12 * SEC);
    let synack = build::TCP_SYN | build::TCP_ACK;
    let open = |s: &mut Sim, port: u16| {
        let c = client(1);
        let b = s
            .through(0, &build::tcp(c, port, VIP, 80, build::TCP_SYN, 1, 0, &[]))
            .expect("placed")
            .dst_addr;
        s.send(0, &build::tcp(b, 8080, c, port, synack, 7, 2, &[]));
        let get = build::tcp(c, port, VIP, 80, build::TCP_ACK, 2, 8, b"GET /");
        s.send(0, &get);
        (b, get)
    };
    // A real connection whose backend answers, and one whose backend has
    // sent nothing since its SYN-ACK (the client's side alone).
    let (b, get) = open(&mut s, 2000);
    s.send(
        0,
        &build::tcp(b, 8080, client(1), 2000, build::TCP_ACK, 8, 7, b"200"),
    );
    let (_, quiet_get) = open(&mut s, 2001);
    // Within a second (prompt reports, not the 10 s interval): the first
    // is established and out of the count, the second still half-open.
    s.run_until(13 * SEC);
    assert_eq!(
        s.mgr.flow(&key(2000, 80)).map(|f| f.state),
        Some(FlowState::Established)
    );
    assert_eq!(
        s.mgr.flow(&key(2001, 80)).map(|f| f.state),
        Some(FlowState::SynSeen)
    );
    assert!(s.counter("rx-activity-report") > 0);
    // The client's side of the handshake is done: it left the half-open
    // count, as the established one did.
    let half_open = |s: &Sim| {
        s.mgr.status_report(s.now).services[0]
            .admission
            .as_ref()
            .expect("tcp")
            .half_open_flows
    };
    assert_eq!(half_open(&s), 0);
    // A flood fills the limit; its flows reach a report (their SYNs, no
    // handshake) and are evicted oldest first; flows no report covered
    // yet are not (they might be real), so past them SYNs are refused.
    for p in 1000..1003 {
        s.send(0, &syn(p, 80));
    }
    s.run_until(14 * SEC + SEC / 2);
    s.send(0, &syn(1003, 80));
    assert_eq!(s.counter("half-open-limit-refused"), 1, "none reported yet");
    s.run_until(23 * SEC);
    for p in 1004..1008 {
        s.send(0, &syn(p, 80));
    }
    assert_eq!(
        s.counter("half-open-evicted"),
        3,
        "the reported flood flows"
    );
    assert_eq!(
        s.counter("half-open-limit-refused"),
        2,
        "then the unreported"
    );
    for p in 1000..1003 {
        assert!(s.mgr.flow(&key(p, 80)).is_none(), "{p} evicted");
    }
    for p in [2000, 2001] {
        assert_eq!(held(&s, 0, p), 2, "{p}: the real connection's affinities");
    }
    assert!(s.through(0, &get).is_some());
    assert!(s.through(0, &quiet_get).is_some());
}
