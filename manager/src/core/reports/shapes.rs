//! The reports as data: the serde shapes of `status --json`, `stats
//! --json` and `connections --json` (what [`crate::metrics`] encodes for
//! Prometheus too), and the list of every event counter.

use crate::core::stats::{Rates, Traffic};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};

/// `affinity-manager stats --json`.
#[derive(Debug, Clone, Serialize)]
pub struct StatsReport {
    /// The rates' moving window (s).
    pub window_s: f64,
    /// Agents that have sent activity reports (traffic is counted from
    /// those only).
    pub agents_reporting: usize,
    /// Services in configuration order.
    pub services: Vec<ServiceStats>,
}

/// One service's traffic: the sum of its backends'.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceStats {
    pub name: String,
    /// `tcp` or `udp`.
    pub protocol: String,
    pub virtual_address: SocketAddrV4,
    /// See [`SERVICE_ROLES`](super::SERVICE_ROLES).
    pub role: &'static str,
    pub traffic: TrafficReport,
    /// Backends in configuration order.
    pub backends: Vec<BackendStats>,
}

/// One backend's traffic.
#[derive(Debug, Clone, Serialize)]
pub struct BackendStats {
    pub address: SocketAddrV4,
    /// `up`, `draining` or `down`.
    pub state: &'static str,
    pub traffic: TrafficReport,
}

/// Traffic totals since the manager started (or the backend was
/// configured), summed over all agents, and rates.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TrafficReport {
    /// Flows ever placed (connections).
    pub connections: u64,
    /// Flows open now (not closed, not ended).
    pub active_connections: u64,
    /// Flows closed (within their sticky time) or ended whose keys are
    /// still held.
    pub inactive_connections: u64,
    /// Packets client → virtual address.
    pub packets_in: u64,
    /// Packets backend → client.
    pub packets_out: u64,
    /// Bytes (IP length) client → virtual address.
    pub bytes_in: u64,
    /// Bytes (IP length) backend → client.
    pub bytes_out: u64,
    /// Per second over the window.
    pub rates: Rates,
}

impl TrafficReport {
    pub(super) fn new(t: &Traffic, active: u64, inactive: u64, rates: Rates) -> TrafficReport {
        TrafficReport {
            connections: t.connections,
            active_connections: active,
            inactive_connections: inactive,
            packets_in: t.packets_in,
            packets_out: t.packets_out,
            bytes_in: t.bytes_in,
            bytes_out: t.bytes_out,
            rates,
        }
    }
}

/// `affinity-manager connections --json`.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionsReport {
    /// Flows that matched the filter.
    pub matched: usize,
    /// At most this many are listed.
    pub limit: usize,
    /// Oldest first.
    pub connections: Vec<ConnectionReport>,
}

/// One flow, both sides.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionReport {
    pub service: String,
    /// `tcp`, `udp`, `icmp`.
    pub protocol: &'static str,
    /// Client address and port (client side: client → virtual).
    pub client: SocketAddrV4,
    /// The virtual address and port the client sent to.
    pub virtual_address: SocketAddrV4,
    /// The source the backend sees (the client's, or the SNAT address and
    /// port); backend side: this → backend.
    pub source_to_backend: SocketAddrV4,
    pub backend: SocketAddrV4,
    /// Source NAT toward the backend.
    pub snat: bool,
    /// Connection-tracking state (`syn-seen`, `established`, ...).
    pub state: &'static str,
    /// Seconds since placed (or reopened).
    pub age_s: f64,
    /// Seconds until it ends without more packets (idle timeout, sticky
    /// deletion, or the last TTL an agent was given).
    pub expires_in_s: f64,
    /// Agents holding its affinities (`name(address)`).
    pub agents: Vec<String>,
    /// Packets client → virtual address the agents reported.
    pub packets_in: u64,
    /// Packets backend → client.
    pub packets_out: u64,
    /// Bytes client → virtual address.
    pub bytes_in: u64,
    /// Bytes backend → client.
    pub bytes_out: u64,
}

/// Every event counter the core keeps (`counter NAME N` in `status`,
/// `affinity_manager_events_total{event="NAME"}` in metrics): listed so
/// that each is shown from start at 0, not only once it first happened.
/// A test checks this list against the names the core counts.
pub const EVENTS: &[&str] = &[
    "activity-foreign-keys",
    "agent-hello-resync",
    "agent-table-full",
    "agents-validated",
    "answers-larger-than-request-dropped",
    "backend-went-unhealthy",
    "challenge-bad-cookie",
    "challenges-sent",
    "config-reloads",
    "deletions-resent",
    "deny-no-supporting-wildcard",
    "deny-other",
    "deny-quota-exceeded",
    "deny-stale-sequence",
    "deny-table-full",
    "deny-unsupported-action",
    "ended-flow-reverse-dropped",
    "flow-adopted",
    "flows-closed",
    "flows-created",
    "flows-deleted-after-sticky",
    "flows-ended-backend-gone",
    "flows-expired-idle",
    "flows-expired-lifetime",
    "flows-reopened",
    "flows-revived",
    "hairpin-flows",
    "half-open-evicted",
    "half-open-limit-refused",
    "install-collision-refused",
    "install-collision-remapped",
    "interest-from-agent-not-used",
    "interest-no-service",
    "known-flow-installed",
    "no-backend-available",
    "reload-listen-metrics-refused",
    "renewal-messages-sent",
    "retry-without-optional-action",
    "rx-activity-report",
    "rx-auth-bad-digest",
    "rx-auth-failed",
    "rx-auth-far-future",
    "rx-auth-unknown-key",
    "rx-auth-unsigned",
    "rx-auth-wrong-identity",
    "rx-auth-wrong-receiver",
    "rx-deny",
    "rx-hello",
    "rx-interest-match",
    "rx-ip-packet-only",
    "rx-kernel-dropped",
    "rx-parse-error",
    "rx-peer-table-full",
    "rx-queue-dropped",
    "rx-replay",
    "rx-splice-report",
    "rx-unexpected-type",
    "snat-ports-exhausted",
    "syn-proxy-flow-on-second-agent",
    "syn-proxy-proof-repeated",
    "syn-proxy-splice-installed-elsewhere",
    "syn-proxy-splice-report-ignored",
    "syn-proxy-splices-reported",
    "tracking-unknown-flow",
    "unknown-flow-dropped",
    "unvalidated-dropped",
    "unvalidated-expired",
    "unvalidated-kept",
    "unvalidated-kept-handled",
    "validated-table-full",
    "wildcard-updates-sent",
    "wildcards-withheld",
];

/// `affinity-manager status --json`: the manager, its services with their
/// backends, the agents heard from, and every event counter. Addresses are
/// strings `A.B.C.D` or `A.B.C.D:PORT`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// This manager.
    pub manager: ManagerReport,
    /// Flows placed and not yet deleted.
    pub flows: usize,
    /// Flows per connection-tracking state (`syn-seen`, `established`, ...).
    pub flows_by_state: BTreeMap<String, usize>,
    /// Services in configuration order.
    pub services: Vec<ServiceReport>,
    /// Agents heard from, by address.
    pub agents: Vec<AgentReport>,
    /// The daemon's receive queue: its limits and what it dropped.
    pub receive_queue: ReceiveQueueReport,
    /// The manager's bounded tables and how full they are.
    pub tables: Vec<TableReport>,
    /// Event counters by name (every name in [`EVENTS`], 0 if none yet).
    pub counters: BTreeMap<String, u64>,
}

/// One bounded table of the manager (state kept per sender is capped, so
/// unverified senders cannot grow it without bound).
#[derive(Debug, Clone, Serialize)]
pub struct TableReport {
    /// `agents` or `replay-windows`.
    pub name: &'static str,
    /// Entries now.
    pub entries: usize,
    /// The cap.
    pub capacity: usize,
}

/// The daemon's queue of datagrams received and not yet handled
/// (`[manager] receive_queue`): past either limit the newest are dropped.
#[derive(Debug, Clone, Serialize)]
pub struct ReceiveQueueReport {
    /// Datagrams it holds at most (`receive_queue`, default 8192).
    pub limit_datagrams: u32,
    /// Bytes it holds at most (16 MiB, whatever `receive_queue` says).
    pub limit_bytes: usize,
    /// Datagrams dropped since start (`rx-queue-dropped`).
    pub dropped: u64,
    /// The socket's kernel receive buffer asked for (bytes,
    /// `receive_buffer`).
    pub kernel_buffer_bytes: u32,
    /// Datagrams the kernel dropped since start, its receive buffer full
    /// (`rx-kernel-dropped`).
    pub kernel_dropped: u64,
}

/// A service's admission control: what bounds the work a flood of new
/// flows makes the manager do.
#[derive(Debug, Clone, Serialize)]
pub struct AdmissionReport {
    /// Agents answer SYNs with SYN cookies (`syn_proxy`).
    pub syn_proxy: bool,
    /// Half-open flows now (placed on a SYN, still `syn-seen`).
    pub half_open_flows: usize,
    /// `[manager] max_half_open_flows` (0 = no limit).
    pub max_half_open_flows: u32,
    /// `half_open_policy`: `evict-oldest` or `refuse`.
    pub half_open_policy: &'static str,
    /// SYNs refused at the limit since start (this service's share of
    /// `half-open-limit-refused`).
    pub half_open_refused: u64,
    /// Half-open flows evicted for new ones since start (this service's
    /// share of `half-open-evicted`).
    pub half_open_evicted: u64,
}

/// This manager: its name and the address service messages arrive on.
#[derive(Debug, Clone, Serialize)]
pub struct ManagerReport {
    /// `[manager] name`, sent to agents in identity info.
    pub name: String,
    /// Where service messages arrive (the bound port if 0 was configured).
    pub listen: SocketAddrV4,
}

/// One service as configured, with its live state.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceReport {
    /// `[[service]] name`.
    pub name: String,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// The address and port clients connect to.
    pub virtual_address: SocketAddrV4,
    /// Clients this manager serves, `ADDR/LEN`.
    pub client_domain: String,
    /// Configuration name (`maglev`, `round-robin`, ...).
    pub algorithm: &'static str,
    /// Higher is searched first by agents.
    pub service_precedence: u16,
    /// Lower wins among equal service precedence (primary < backup).
    pub backup_precedence: u16,
    /// Agents are asked to advertise the virtual address.
    pub advertise: bool,
    /// `serving`, `standing-by` or `idle`: see [`SERVICE_ROLES`](super::SERVICE_ROLES).
    pub role: &'static str,
    /// SYN proxy and half-open flows: TCP only (`None`, JSON `null`, for a
    /// UDP service, which has neither).
    pub admission: Option<AdmissionReport>,
    /// Source NAT toward the backends, if configured.
    pub snat: Option<SnatReport>,
    /// Backends in configuration order.
    pub backends: Vec<BackendReport>,
}

/// A service's source-NAT pool.
#[derive(Debug, Clone, Serialize)]
pub struct SnatReport {
    /// The source address backends see.
    pub address: Ipv4Addr,
    /// `LOW-HIGH` as configured.
    pub ports: String,
    /// Ports held by flows now.
    pub in_use: usize,
    /// Ports in the pool.
    pub size: usize,
}

/// One backend of a service.
#[derive(Debug, Clone, Serialize)]
pub struct BackendReport {
    /// Backend address and port.
    pub address: SocketAddrV4,
    /// Passing its health check (true without one).
    pub healthy: bool,
    /// Configured or `set-weight` weight (0 = drained).
    pub weight: u32,
    /// The weight the selector sees (0 when unhealthy; feedback-derived).
    pub effective_weight: u32,
    /// Flows placed on it and not yet released.
    pub active_flows: u64,
    /// Flows ever placed on it.
    pub total_flows: u64,
    /// `up`, `draining` (weight 0: no new flows, existing ones stay) or
    /// `down` (failing its health check).
    pub state: &'static str,
    /// Health checks run on it (0 without a health check).
    pub checks: u64,
    /// Failed checks in a row (0 after a success).
    pub consecutive_failures: u32,
    /// Why the last failed check failed (`refused`, `timeout`, `http
    /// status 503`, ...), `null` if none failed.
    pub last_failure: Option<String>,
    /// Latency of the last check (ms: connect, plus the HTTP answer).
    pub check_latency_ms: Option<f64>,
    /// Seconds since its health state last changed (`null`: never).
    pub since_change_s: Option<f64>,
    /// Packets client → virtual address the agents reported for its flows.
    pub packets_in: u64,
    /// Packets backend → client the agents reported for its flows.
    pub packets_out: u64,
    /// Bytes (IP length) client → virtual address.
    pub bytes_in: u64,
    /// Bytes (IP length) backend → client.
    pub bytes_out: u64,
}

/// An agent this manager has heard from.
#[derive(Debug, Clone, Serialize)]
pub struct AgentReport {
    /// Source address and port of its messages.
    pub address: SocketAddrV4,
    /// Host name from its identity info ("" if it sent none).
    pub name: String,
    /// Seconds since it was last heard.
    pub last_heard_s: f64,
    /// Interest matches (punts) received from it.
    pub interest_matches: u64,
    /// Affinity update-denies received from it.
    pub denies: u64,
}
