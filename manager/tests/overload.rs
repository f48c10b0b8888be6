//! The manager bounds its own work under a SYN flood: half-open flows per
//! service (`max_half_open_flows`), through simulated agents running the
//! real agent core. (The receive queue's drop-newest is tested in
//! `batch_io`.)

use affinity_forwarding_agent::wire::build;
use affinity_forwarding_agent::Disposition;
use affinity_manager::{Config, FlowState};

mod common;
use common::{client, config, Sim, B, SEC, VIP};

/// Two TCP services on the virtual address (:80 and :81), one backend
/// each, with `max_half_open_flows = limit`.
fn two_services(limit: u32) -> Config {
    config(
        &format!("max_half_open_flows = {limit}"),
        r#"
[[service]]
name = "web"
virtual = "203.0.113.10:80"
client_domain = "198.18.0.0/15"
[[service.backend]]
address = "198.51.100.1:8080"

[[service]]
name = "other"
virtual = "203.0.113.10:81"
client_domain = "198.18.0.0/15"
[[service.backend]]
address = "198.51.100.2:8080"
"#,
    )
}

fn syn(port: u16, vport: u16) -> Vec<u8> {
    build::tcp(client(1), port, VIP, vport, build::TCP_SYN, 1, 0, &[])
}

#[test]
fn half_open_flows_are_capped_per_service_and_room_returns_when_one_closes() {
    let mut s = Sim::new(two_services(3));
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
fn queue_drops_reported_by_the_daemon_are_counted() {
    let mut s = Sim::new(two_services(3));
    s.mgr.receive_queue_dropped(SEC, 0, 8192);
    assert_eq!(s.counter("rx-queue-dropped"), 0);
    s.mgr.receive_queue_dropped(SEC, 5, 8192);
    s.mgr.receive_queue_dropped(2 * SEC, 7, 8192);
    assert_eq!(s.counter("rx-queue-dropped"), 12);
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
            protocol: 6,
            src_addr: std::net::Ipv4Addr::new(198, 19, 7, i),
            dst_addr: VIP,
            src_port: 3000,
            dst_port: 80,
        };
        let f = s.mgr.flow(&k).expect("placed");
        assert_eq!((f.packets_fwd, f.packets_rev), (2, 1), "reported");
        assert_eq!(f.state, FlowState::SynSeen, "not established by counts");
    }
    // The cap holds: a fourth SYN is refused.
    s.send(0, &syn(4000, 80));
    assert_eq!(s.counter("half-open-limit-refused"), 1);
    assert_eq!(s.counter("flows-created"), 3);
    // They end at the transitory timeout (240 s after the last forward
    // packet reported), freeing the room for a real client, whose
    // handshake and the backend's answer establish its flow.
    s.run_until(260 * SEC);
    assert_eq!(
        s.mgr
            .flow(&affinity_api::AffinityKey {
                protocol: 6,
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
        protocol: 6,
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
