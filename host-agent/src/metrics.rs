//! `--metrics ADDR`: the agent's counters, tables and managers in the
//! Prometheus text format (0.0.4), encoded by the Prometheus client library
//! and served over HTTP (`GET /metrics`) by `tiny_http`. Every counter is
//! there from start at 0; every family has `# HELP` and `# TYPE`.

use affinity_forwarding_agent::Agent;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// The MIME type of [`encode`]'s output (Prometheus text format 0.0.4).
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

type Labels = Vec<(&'static str, String)>;

fn gauge(reg: &mut Registry, name: &str, help: &str, v: i64) {
    let g = Gauge::<i64>::default();
    g.set(v);
    reg.register(name, help, g);
}

/// The exposition at `now` (ns, the agent's clock), `uptime_s` seconds
/// after start: names `affinity_agent_*`.
pub fn encode(agent: &Agent, now: u64, uptime_s: f64) -> String {
    let mut reg = Registry::with_prefix("affinity_agent");
    let info = Family::<Labels, Gauge>::default();
    reg.register("build_info", "Build of this agent (value 1)", info.clone());
    info.get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_string())])
        .set(1);
    let up = Gauge::<f64, AtomicU64>::default();
    up.set(uptime_s);
    reg.register("uptime_seconds", "Seconds since the agent started", up);
    let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
    gauge(
        &mut reg,
        "fixed_affinities",
        "Fixed affinities installed",
        n(agent.fixed_count(now)),
    );
    gauge(
        &mut reg,
        "fixed_capacity",
        "Fixed affinity table size",
        n(agent.fixed_capacity()),
    );
    gauge(
        &mut reg,
        "wildcard_affinities",
        "Wildcard affinities installed",
        n(agent.wildcard_entries(now).len()),
    );
    let o = agent.occupancy();
    gauge(
        &mut reg,
        "wildcard_patterns",
        "Distinct wildcard mask patterns in use (each one more probe for a packet that misses the fixed table)",
        n(o.wildcard_patterns),
    );
    gauge(
        &mut reg,
        "wildcard_patterns_cap",
        "Agent-wide cap on distinct wildcard mask patterns (--max-wildcard-patterns); past it a wildcard is denied (wildcard-patterns-full)",
        n(o.wildcard_patterns_cap),
    );
    gauge(
        &mut reg,
        "held_packets",
        "Packets held until their fixed affinity arrives",
        n(agent.held_packets()),
    );
    let events = Family::<Labels, Counter>::default();
    reg.register(
        "events",
        "Agent counters by name (the lines of `affinity-agent stats`)",
        events.clone(),
    );
    for (name, v) in agent.counters() {
        events
            .get_or_create(&vec![("counter", name.to_string())])
            .inc_by(v);
    }
    let heard = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    reg.register(
        "manager_last_heard_seconds",
        "Seconds since the manager was last heard",
        heard.clone(),
    );
    let msgs = Family::<Labels, Counter>::default();
    reg.register(
        "manager_messages",
        "Service messages accepted from the manager",
        msgs.clone(),
    );
    for m in agent.managers() {
        let l: Labels = vec![("manager", m.address.to_string()), ("name", m.name)];
        heard
            .get_or_create(&l)
            .set(now.saturating_sub(m.last_heard_ns) as f64 / 1e9);
        msgs.get_or_create(&l).inc_by(m.messages);
    }
    let fwd_p = Family::<Labels, Counter>::default();
    reg.register(
        "forward_packets",
        "Packets of fixed affinities with STATISTICS, by forward address",
        fwd_p.clone(),
    );
    let fwd_b = Family::<Labels, Counter>::default();
    reg.register(
        "forward_bytes",
        "Bytes of fixed affinities with STATISTICS, by forward address",
        fwd_b.clone(),
    );
    for (a, s) in agent.forward_stats() {
        let l: Labels = vec![("forward", a.to_string())];
        fwd_p.get_or_create(&l).inc_by(s.packets);
        fwd_b.get_or_create(&l).inc_by(s.bytes);
    }
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_text::encode(&mut out, &reg);
    out
}

/// Serves `GET /metrics` on `server` until the process ends (other paths:
/// 404). `now` is the agent's clock (ns since start).
pub fn serve(server: tiny_http::Server, agent: Arc<Agent>, now: impl Fn() -> u64) {
    let ctype = tiny_http::Header::from_bytes("Content-Type", CONTENT_TYPE)
        .expect("static header is valid");
    for req in server.incoming_requests() {
        let path = req.url().split('?').next().unwrap_or("");
        let resp = if req.method() == &tiny_http::Method::Get && path == "/metrics" {
            let t = now();
            tiny_http::Response::from_string(encode(&agent, t, t as f64 / 1e9))
                .with_header(ctype.clone())
        } else {
            tiny_http::Response::from_string("try /metrics\n").with_status_code(404)
        };
        let _ = req.respond(resp);
    }
}

#[cfg(test)]
mod tests {
    use super::encode;
    use affinity_forwarding_agent::{Agent, AgentConfig};

    #[test]
    fn every_family_has_help_and_every_counter_starts_at_zero() {
        let a = Agent::new(AgentConfig {
            fixed_capacity: 64,
            ..Default::default()
        });
        let text = encode(&a, 0, 1.5);
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = line.split_whitespace().nth(2).unwrap_or("");
            assert!(text.contains(&format!("# HELP {name} ")), "{name}:\n{text}");
        }
        for want in [
            "affinity_agent_events_total{counter=\"ipv6-passed\"} 0",
            "affinity_agent_events_total{counter=\"packets\"} 0",
            "affinity_agent_uptime_seconds 1.5",
            "affinity_agent_fixed_affinities 0",
            "affinity_agent_wildcard_patterns 0",
            "affinity_agent_wildcard_patterns_cap 12",
            "affinity_agent_build_info{version=\"",
        ] {
            assert!(text.contains(want), "no {want:?} in:\n{text}");
        }
    }
}
