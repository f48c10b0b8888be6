//! The manager bounds its own work under a SYN flood: half-open flows per
//! service (`max_half_open_flows`), through simulated agents running the
//! real agent core. (The receive queue's drop-newest is tested in
//! `batch_io`.)

use affinity_forwarding_agent::wire::build;
use affinity_forwarding_agent::Disposition;
use affinity_manager::Config;

mod common;
use common::{client, config, Sim, SEC, VIP};

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
