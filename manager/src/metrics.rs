//! The manager's metrics in the Prometheus text format (0.0.4), encoded by
//! the Prometheus client library (`prometheus-client`) from a
//! [`StatusReport`]: every family has `# HELP` and `# TYPE`, every counter
//! is there from start at 0. Served over HTTP by [`serve`] (`tiny_http`).

use crate::core::StatusReport;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// The MIME type of [`encode`]'s output (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What only the daemon knows: its age and its reloads.
#[derive(Debug, Clone, Copy, Default)]
pub struct DaemonStats {
    /// Seconds since the daemon started.
    pub uptime_s: f64,
    /// SIGHUP reloads applied.
    pub reloads_succeeded: u64,
    /// SIGHUP reloads refused (the file did not check).
    pub reloads_failed: u64,
    /// Service-message datagrams sent.
    pub datagrams_sent: u64,
    /// Sends the kernel refused.
    pub send_errors: u64,
}

type Labels = Vec<(&'static str, String)>;

fn gauge_family(reg: &mut Registry, name: &str, help: &str) -> Family<Labels, Gauge> {
    let f = Family::<Labels, Gauge>::default();
    reg.register(name, help, f.clone());
    f
}

fn counter_family(reg: &mut Registry, name: &str, help: &str) -> Family<Labels, Counter> {
    let f = Family::<Labels, Counter>::default();
    reg.register(name, help, f.clone());
    f
}

/// Saturating u64 → i64 for gauges (counts never come near 2^63).
fn g(v: impl TryInto<i64>) -> i64 {
    v.try_into().unwrap_or(i64::MAX)
}

/// Encodes `r` (and the daemon's own figures, when given) as Prometheus
/// text: names `affinity_manager_*`, labels `service`, `backend`
/// (`A.B.C.D:PORT`), `agent`, `event`.
pub fn encode(r: &StatusReport, daemon: Option<&DaemonStats>) -> String {
    let mut reg = Registry::with_prefix("affinity_manager");
    gauge_family(&mut reg, "build_info", "Build of this manager (value 1)")
        .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_string())])
        .set(1);
    if let Some(d) = daemon {
        let up = Gauge::<f64, AtomicU64>::default();
        up.set(d.uptime_s);
        reg.register("uptime_seconds", "Seconds since the manager started", up);
        let reloads = counter_family(
            &mut reg,
            "config_reloads",
            "Configuration reloads (SIGHUP) by result: succeeded, or failed (refused, old configuration kept)",
        );
        reloads
            .get_or_create(&vec![("result", "succeeded".into())])
            .inc_by(d.reloads_succeeded);
        reloads
            .get_or_create(&vec![("result", "failed".into())])
            .inc_by(d.reloads_failed);
        let sent = Counter::<u64>::default();
        sent.inc_by(d.datagrams_sent);
        reg.register("datagrams_sent", "Service-message datagrams sent", sent);
        let errs = Counter::<u64>::default();
        errs.inc_by(d.send_errors);
        reg.register(
            "send_errors",
            "Service-message datagrams the kernel refused to send",
            errs,
        );
    }
    let flows = Gauge::<i64>::default();
    flows.set(g(r.flows));
    reg.register("flows", "Flows placed and not yet deleted", flows);
    let by_state = gauge_family(
        &mut reg,
        "flows_by_state",
        "Flows per connection-tracking state",
    );
    for (state, n) in &r.flows_by_state {
        by_state
            .get_or_create(&vec![("state", state.clone())])
            .set(g(*n));
    }
    let active = gauge_family(
        &mut reg,
        "backend_active_flows",
        "Flows placed on the backend and not yet released",
    );
    let total = counter_family(
        &mut reg,
        "backend_flows",
        "Flows ever placed on the backend (since start or its service's last reload)",
    );
    let healthy = gauge_family(
        &mut reg,
        "backend_healthy",
        "1 when the backend passes its health check (or has none), else 0",
    );
    let weight = gauge_family(
        &mut reg,
        "backend_weight",
        "Configured or set-weight weight (0 = drained)",
    );
    let effective = gauge_family(
        &mut reg,
        "backend_effective_weight",
        "Weight the selector sees (0 when unhealthy; feedback-derived)",
    );
    let packets = counter_family(
        &mut reg,
        "backend_packets",
        "Packets of the backend's flows the agents reported (activity reports, summed over agents), by direction: in = client to virtual address, out = backend to client",
    );
    let bytes = counter_family(
        &mut reg,
        "backend_bytes",
        "Bytes (IP length) of the backend's flows the agents reported, by direction (in, out)",
    );
    let failures = gauge_family(
        &mut reg,
        "backend_check_consecutive_failures",
        "Health checks failed in a row (0 after a success)",
    );
    let latency = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    reg.register(
        "backend_check_latency_seconds",
        "Latency of the backend's last health check (connect, plus the HTTP answer)",
        latency.clone(),
    );
    let state = gauge_family(
        &mut reg,
        "backend_state",
        "1 for the backend's state: up, draining (weight 0) or down (failing its health check)",
    );
    let role = gauge_family(
        &mut reg,
        "service_role",
        "1 for this manager's role for the service: serving, standing-by (another manager's affinities are live) or idle",
    );
    let syn_proxy = gauge_family(
        &mut reg,
        "service_syn_proxy",
        "1 when agents answer the service's SYNs with SYN cookies (syn_proxy), else 0",
    );
    let half_open = gauge_family(
        &mut reg,
        "service_half_open_flows",
        "Half-open TCP flows of the service (placed on a SYN, still syn-seen)",
    );
    let half_open_max = gauge_family(
        &mut reg,
        "service_max_half_open_flows",
        "max_half_open_flows: half-open flows per service at most (0 = no limit)",
    );
    let half_open_refused = counter_family(
        &mut reg,
        "service_half_open_refused",
        "SYNs of the service refused at max_half_open_flows (half-open-limit-refused)",
    );
    let half_open_evicted = counter_family(
        &mut reg,
        "service_half_open_evicted",
        "Half-open flows of the service evicted, oldest first, for new SYNs at max_half_open_flows (half-open-evicted)",
    );
    for s in &r.services {
        let l: Labels = vec![("service", s.name.clone())];
        // TCP services only: a UDP service has no SYN proxy or half-open
        // flows.
        if let Some(a) = &s.admission {
            syn_proxy.get_or_create(&l).set(i64::from(a.syn_proxy));
            half_open.get_or_create(&l).set(g(a.half_open_flows));
            half_open_max
                .get_or_create(&l)
                .set(i64::from(a.max_half_open_flows));
            half_open_refused
                .get_or_create(&l)
                .inc_by(a.half_open_refused);
            half_open_evicted
                .get_or_create(&l)
                .inc_by(a.half_open_evicted);
        }
        for name in crate::core::SERVICE_ROLES {
            role.get_or_create(&vec![
                ("service", s.name.clone()),
                ("role", name.to_string()),
            ])
            .set(i64::from(s.role == name));
        }
        for b in &s.backends {
            let l: Labels = vec![
                ("service", s.name.clone()),
                ("backend", b.address.to_string()),
            ];
            for (dir, p, n) in [
                ("in", b.packets_in, b.bytes_in),
                ("out", b.packets_out, b.bytes_out),
            ] {
                let mut d = l.clone();
                d.push(("direction", dir.to_string()));
                packets.get_or_create(&d).inc_by(p);
                bytes.get_or_create(&d).inc_by(n);
            }
            failures
                .get_or_create(&l)
                .set(i64::from(b.consecutive_failures));
            if let Some(ms) = b.check_latency_ms {
                latency.get_or_create(&l).set(ms / 1e3);
            }
            for st in ["up", "draining", "down"] {
                let mut d = l.clone();
                d.push(("state", st.to_string()));
                state.get_or_create(&d).set(i64::from(b.state == st));
            }
            active.get_or_create(&l).set(g(b.active_flows));
            total.get_or_create(&l).inc_by(b.total_flows);
            healthy.get_or_create(&l).set(i64::from(b.healthy));
            weight.get_or_create(&l).set(i64::from(b.weight));
            effective
                .get_or_create(&l)
                .set(i64::from(b.effective_weight));
        }
    }
    let heard = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    reg.register(
        "agent_last_heard_seconds",
        "Seconds since the agent was last heard",
        heard.clone(),
    );
    for a in &r.agents {
        heard
            .get_or_create(&vec![
                ("agent", a.address.to_string()),
                ("name", a.name.clone()),
            ])
            .set(a.last_heard_s);
    }
    let rxq = gauge_family(
        &mut reg,
        "receive_queue_limit",
        "The receive queue's limits (receive_queue datagrams, and bytes); past either the newest datagrams are dropped (rx-queue-dropped)",
    );
    rxq.get_or_create(&vec![("unit", "datagrams".into())])
        .set(i64::from(r.receive_queue.limit_datagrams));
    rxq.get_or_create(&vec![("unit", "bytes".into())])
        .set(g(r.receive_queue.limit_bytes));
    let entries = gauge_family(
        &mut reg,
        "table_entries",
        "Entries in each of the manager's bounded tables (agents heard from, replay windows)",
    );
    let capacity = gauge_family(
        &mut reg,
        "table_capacity",
        "Capacity of each of the manager's bounded tables",
    );
    for t in &r.tables {
        let l = vec![("table", t.name.to_string())];
        entries.get_or_create(&l).set(g(t.entries));
        capacity.get_or_create(&l).set(g(t.capacity));
    }
    let events = counter_family(
        &mut reg,
        "events",
        "Manager events by name (the counter lines of `affinity-manager status`)",
    );
    for (k, v) in &r.counters {
        events.get_or_create(&vec![("event", k.clone())]).inc_by(*v);
    }
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_text::encode(&mut out, &reg);
    out
}

/// Serves `GET /metrics` (any other path: 404) on `listener` until the
/// process ends; `scrape` produces the body for each request.
pub fn serve(listener: tiny_http::Server, scrape: impl Fn() -> Option<String>) {
    let ctype = tiny_http::Header::from_bytes("Content-Type", CONTENT_TYPE)
        .expect("static header is valid");
    for req in listener.incoming_requests() {
        let path = req.url().split('?').next().unwrap_or("");
        let resp = match (req.method(), path) {
            (tiny_http::Method::Get, "/metrics") => match scrape() {
                Some(body) => tiny_http::Response::from_string(body).with_header(ctype.clone()),
                None => tiny_http::Response::from_string("manager busy\n").with_status_code(503),
            },
            _ => tiny_http::Response::from_string("try /metrics\n").with_status_code(404),
        };
        let _ = req.respond(resp);
    }
}

#[cfg(test)]
mod tests {
    use super::{encode, DaemonStats};
    use crate::core::ManagerCore;
    use crate::Config;

    fn core() -> ManagerCore {
        let cfg = Config::parse("[manager]\nlisten = \"192.0.2.10:1638\"\n[[service]]\nname = \"web\"\nvirtual = \"203.0.113.10:80\"\n[[service.backend]]\naddress = \"198.51.100.11:8080\"\n").unwrap();
        ManagerCore::new(cfg, 0)
    }

    #[test]
    fn every_family_has_help_and_type_and_counters_start_at_zero() {
        let c = core();
        let text = encode(
            &c.status_report(0),
            Some(&DaemonStats {
                uptime_s: 2.5,
                reloads_succeeded: 1,
                reloads_failed: 2,
                ..Default::default()
            }),
        );
        let mut families = 0;
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = line.split_whitespace().nth(2).unwrap_or("");
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "{name} has no HELP:\n{text}"
            );
            families += 1;
        }
        assert!(families >= 12, "{text}");
        for want in [
            "affinity_manager_build_info{version=\"",
            "affinity_manager_uptime_seconds 2.5",
            "affinity_manager_config_reloads_total{result=\"succeeded\"} 1",
            "affinity_manager_config_reloads_total{result=\"failed\"} 2",
            "affinity_manager_events_total{event=\"flows-created\"} 0",
            "affinity_manager_events_total{event=\"rx-hello\"} 0",
            "affinity_manager_backend_flows_total{service=\"web\",backend=\"198.51.100.11:8080\"} 0",
            "affinity_manager_backend_healthy{service=\"web\",backend=\"198.51.100.11:8080\"} 1",
            "affinity_manager_flows 0",
            "affinity_manager_backend_packets_total{service=\"web\",backend=\"198.51.100.11:8080\",direction=\"in\"} 0",
            "affinity_manager_backend_bytes_total{service=\"web\",backend=\"198.51.100.11:8080\",direction=\"out\"} 0",
            "affinity_manager_backend_state{service=\"web\",backend=\"198.51.100.11:8080\",state=\"up\"} 1",
            "affinity_manager_service_role{service=\"web\",role=\"idle\"} 1",
            "affinity_manager_service_syn_proxy{service=\"web\"} 0",
            "affinity_manager_service_half_open_flows{service=\"web\"} 0",
            "affinity_manager_service_max_half_open_flows{service=\"web\"} 100000",
            "affinity_manager_service_half_open_refused_total{service=\"web\"} 0",
            "affinity_manager_service_half_open_evicted_total{service=\"web\"} 0",
            "affinity_manager_receive_queue_limit{unit=\"datagrams\"} 8192",
            "affinity_manager_receive_queue_limit{unit=\"bytes\"} 16777216",
        ] {
            assert!(text.contains(want), "no {want:?} in:\n{text}");
        }
    }

    #[test]
    fn status_json_names_addresses_as_dotted_quads() {
        let mut c = core();
        let j = c.command(crate::Command::StatusJson, 0).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&j).unwrap_or_default();
        assert_eq!(v["manager"]["listen"], "192.0.2.10:1638", "{j}");
        assert_eq!(v["services"][0]["virtual_address"], "203.0.113.10:80");
        assert_eq!(v["services"][0]["algorithm"], "maglev");
        assert_eq!(
            v["services"][0]["backends"][0]["address"],
            "198.51.100.11:8080"
        );
        assert_eq!(v["counters"]["flows-created"], 0);
    }
}
