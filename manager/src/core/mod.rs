//! The manager's decision logic, without I/O: events in (`now`, datagrams,
//! health results, commands), datagrams out. The daemon around it only moves
//! bytes and time, and sleeps until [`ManagerCore::poll_timeout`].
//!
//! [`ManagerCore`] owns its parts, each in a sibling file (the shape of
//! quinn-proto's `connection/`):
//! - `services.rs` — [`ServiceRegistry`]: services and backends (weights,
//!   health, active flows, SNAT ports); places new flows on backends;
//!   one backend's state in `services/backend.rs`.
//! - `flows.rs` — [`FlowTable`]: placed flows by either direction's key,
//!   close tracking, sticky deletion and the lifetime limit.
//! - `messages.rs` — [`Messages`]: builders of everything the manager sends
//!   (wildcards, fixed affinities, renewals), signed and with identity.
//! - `command.rs` — [`Command`]: the control socket's command language.
//! - `reports.rs` — status and Prometheus text.
//!
//! Its methods live by the path a message and an event take:
//! - `receive.rs` — receive → verify → dispatch per message type;
//! - `placement.rs` — interest matches: place, install, track, end flows;
//! - `agents.rs` — hellos, denies and activity reports from agents;
//! - `timers.rs` — `tick` and `poll_timeout`: refresh, renew, expire;
//! - `operator.rs` — health results, commands, reload, shutdown.
//!
//! This file holds the type, its construction, the wildcard fan-out and
//! the read accessors.
//! All times are nanoseconds on the caller's monotonic clock.

mod agents;
mod command;
mod flows;
mod messages;
mod operator;
mod placement;
mod receive;
mod reports;
mod routability;
mod services;
mod stats;
mod timers;

pub use command::{Command, DEFAULT_CONNECTIONS_LIMIT};
pub use flows::{Flow, FlowState, FlowTable, HalfOpenStats, Handshake, Timeouts};
pub use messages::Messages;
pub use services::{backend_state, Backend, HealthDetail, Service, ServiceRegistry};
pub use stats::{RateWindow, Rates, Traffic, RATE_WINDOW};

use crate::config::Config;
use affinity_api::{seg, AffinityKey, AuthError, AuthPolicy, ReplayWindow, AGENT_PORT};
use affinity_forwarding_agent::wire;
use reports::Report;
pub use reports::{
    AdmissionReport, AgentReport, BackendReport, BackendStats, ConnectionReport, ConnectionsReport,
    ManagerReport, ReceiveQueueReport, ServiceReport, ServiceStats, SnatReport, StatsReport,
    StatusReport, TrafficReport, EVENTS, SERVICE_ROLES,
};
use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddrV4};

/// A datagram to send.
pub type Outgoing = (SocketAddrV4, Vec<u8>);

const SEC: u64 = 1_000_000_000;
/// Shortest wildcard refresh interval (ns), whatever the TTL.
const MIN_WILDCARD_REFRESH: u64 = SEC / 10;
/// Peers (agents, replay windows) remembered at most: bounds what senders
/// can make the manager keep (issue 16).
const MAX_PEERS: usize = 4096;
/// Agents not heard from for this long (ns) are forgotten.
const AGENT_EXPIRY: u64 = 600 * SEC;

/// The per-reason counter name of an authentication failure.
fn auth_counter(e: &AuthError) -> &'static str {
    match e {
        AuthError::Unsigned => "rx-auth-unsigned",
        AuthError::UnknownKey(_) | AuthError::ExpiredKey(_) => "rx-auth-unknown-key",
        AuthError::BadAlgorithm(_) | AuthError::BadDigest => "rx-auth-bad-digest",
        AuthError::WrongIdentity(_) => "rx-auth-wrong-identity",
        AuthError::FarFuture(_) => "rx-auth-far-future",
        AuthError::WrongReceiver => "rx-auth-wrong-receiver",
        AuthError::Replay(_) => "rx-replay",
    }
}

/// An agent the manager has heard from.
#[derive(Debug, Clone, Default)]
pub struct AgentSeen {
    /// Host name from its identity info.
    pub name: String,
    /// When it was last heard (ns).
    pub last_heard: u64,
    pub interest_matches: u64,
    pub denies: u64,
    /// Activity reports received (0: the agent does not send them, so
    /// flows it holds are not ended as idle).
    pub activity_reports: u64,
    /// Action types it performs (bit n: action segment type n), from its
    /// hello's capabilities; `None` until it sent one.
    pub capabilities: Option<u32>,
    /// Services this agent is not used for, by name, and why (from its
    /// capabilities or its denies); shown by `status`.
    pub refused: BTreeMap<String, String>,
    /// When its hello was last logged (ns; 0 never): hellos are logged at
    /// info at most once per [`HELLO_LOG_INTERVAL`] per agent.
    pub hello_logged: u64,
}

/// Shortest time (ns) between two logged hellos of one agent: a restart
/// loop or a forged flood makes one line a minute, not one per datagram.
pub const HELLO_LOG_INTERVAL: u64 = 60_000_000_000;

/// A readable name of action segment type `t`, for `status`.
fn action_name(t: u16) -> &'static str {
    match t {
        seg::NAT_ACTION => "nat",
        seg::ADVERTISE_ACTION => "advertise",
        seg::SEQ_ADJUST_ACTION => "seq-adjust",
        seg::INTEREST_CRITERIA_ACTION => "interest",
        seg::ADMISSION_ACTION => "admission",
        _ => "unknown action",
    }
}

/// The decision core.
pub struct ManagerCore {
    cfg: Config,
    /// Verifies what agents send (signatures; replay per agent below).
    auth: AuthPolicy,
    messages: Messages,
    services: ServiceRegistry,
    flows: FlowTable,
    replay: HashMap<Ipv4Addr, ReplayWindow>,
    pub agents: BTreeMap<SocketAddrV4, AgentSeen>,
    /// Event counters by name (status `counter NAME N`, metrics `event`).
    pub counters: BTreeMap<&'static str, u64>,
    /// When wildcards are next refreshed (ns).
    next_wildcards: u64,
    /// When open flows' fixed affinities are next renewed (ns).
    next_renewal: u64,
    /// When wildcards were last sent (ns).
    last_wildcards: u64,
    /// When a refused message was last logged (ns; 0 = never).
    last_auth_log: u64,
    /// When a deny was last logged at INFO (ns; 0 = never).
    last_deny_log: u64,
    /// The latest time the core was given (ns): for events that come
    /// without one ([`Self::health`]).
    clock: u64,
    /// Addresses that showed they receive what is sent to them, and punts
    /// waiting for that (open mode: `routability.rs`).
    routability: routability::Routability,
    /// Overload lines (half-open limit, receive queue drops): a flood
    /// costs at most one line a second, the rest are counted.
    overload_log: crate::logging::RateLimit,
}

/// The 5-tuple and TCP flags (FIN..URG, else 0) of the IPv4 packet an
/// IP-packet-only message carries, parsed by the forwarding-agent core's
/// `wire` (the manager has no header parser of its own); `None` when it is
/// not a well-formed IPv4 packet.
fn packet_key(p: &[u8]) -> Option<(AffinityKey, u8)> {
    wire::parse_ipv4(p).ok().map(|i| (i.key, i.tcp_flags))
}

impl ManagerCore {
    /// A core for `cfg` at time `now` (ns): wildcards and renewals are due
    /// at once.
    pub fn new(cfg: Config, now: u64) -> Self {
        let auth = cfg.auth_policy();
        ManagerCore {
            messages: Messages::new(&cfg, &auth),
            services: ServiceRegistry::new(&cfg.services),
            auth,
            flows: FlowTable::default(),
            replay: HashMap::new(),
            agents: BTreeMap::new(),
            counters: BTreeMap::new(),
            next_wildcards: now,
            next_renewal: now,
            last_wildcards: now,
            last_auth_log: 0,
            last_deny_log: 0,
            clock: now,
            routability: Default::default(),
            overload_log: crate::logging::RateLimit::new(1),
            cfg,
        }
    }

    fn count(&mut self, name: &'static str) {
        *self.counters.entry(name).or_default() += 1;
    }

    /// Notes `n` datagrams the daemon's receive queue (at most `limit`
    /// datagrams, `[manager] receive_queue`) dropped at `now` (ns), being
    /// full: counted as `rx-queue-dropped`, logged at most once a second.
    pub fn receive_queue_dropped(&mut self, now: u64, n: u64, limit: usize) {
        if n == 0 {
            return;
        }
        *self.counters.entry("rx-queue-dropped").or_default() += n;
        if self.overload_log.allow(now) {
            tracing::warn!(dropped = n, limit, "receive queue full: newest datagrams dropped (counted as rx-queue-dropped; logged at most once a second)");
        }
    }

    /// Notes `n` datagrams the kernel dropped on the service-message socket
    /// (its receive buffer full, `[manager] receive_buffer`) seen at `now`
    /// (ns): counted as `rx-kernel-dropped`, logged at most once a second.
    /// Activity reports lost this way leave flows unrenewed and half-open
    /// flows unpromoted, so the loss must show.
    pub fn receive_kernel_dropped(&mut self, now: u64, n: u64) {
        if n == 0 {
            return;
        }
        *self.counters.entry("rx-kernel-dropped").or_default() += n;
        if self.overload_log.allow(now) {
            tracing::warn!(
                dropped = n,
                buffer = self.cfg.manager.receive_buffer,
                "service-message datagrams dropped by the kernel: receive buffer full (counted as rx-kernel-dropped; raise [manager] receive_buffer and net.core.rmem_max)"
            );
        }
    }

    /// Where wildcard updates go: the multicast group and unicast agents.
    fn wildcard_destinations(&self) -> Vec<SocketAddrV4> {
        let mut d: Vec<SocketAddrV4> = self.cfg.agents.unicast.clone();
        if let Some(g) = self.cfg.agents.multicast_group {
            d.push(SocketAddrV4::new(g, AGENT_PORT));
        }
        d
    }

    /// Every service's wildcards with `ttl` (s) to every wildcard
    /// destination, except (with `ttl` > 0) to a unicast agent that is not
    /// used for the service (its capabilities or a deny said it cannot
    /// perform an action the service needs: seed FIG 9C).
    fn send_wildcards(&mut self, ttl: u32, out: &mut Vec<Outgoing>) {
        let dests = self.wildcard_destinations();
        for s in self.services.as_slice() {
            for m in self.messages.wildcards(std::slice::from_ref(s), ttl) {
                for d in &dests {
                    let refused = self
                        .agents
                        .get(d)
                        .is_some_and(|a| a.refused.contains_key(&s.cfg.name));
                    if ttl > 0 && refused {
                        *self.counters.entry("wildcards-withheld").or_default() += 1;
                        continue;
                    }
                    out.push((*d, m.clone()));
                }
                *self.counters.entry("wildcard-updates-sent").or_default() += 1;
            }
        }
    }

    fn fan_out(&mut self, msgs: Vec<Vec<u8>>, out: &mut Vec<Outgoing>) {
        let dests = self.wildcard_destinations();
        for m in msgs {
            for d in &dests {
                out.push((*d, m.clone()));
            }
            self.count("wildcard-updates-sent");
        }
    }

    /// Flows placed and not yet deleted.
    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    /// A flow by its forward (client → virtual address) key.
    pub fn flow(&self, fwd: &AffinityKey) -> Option<&Flow> {
        self.flows.get(fwd)
    }

    /// The services, in configuration order.
    pub fn services(&self) -> &[Service] {
        self.services.as_slice()
    }

    /// The configuration in force (the last reload's).
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    fn report(&self) -> Report<'_> {
        Report {
            cfg: &self.cfg,
            services: self.services.as_slice(),
            flows: self.flows.len(),
            flow_table: &self.flows,
            by_state: self.flows.by_state(),
            agents: &self.agents,
            counters: &self.counters,
            tables: [
                ("agents", self.agents.len(), MAX_PEERS),
                ("replay-windows", self.replay.len(), MAX_PEERS),
                (
                    "validated-agents",
                    self.routability.validated.len(),
                    MAX_PEERS,
                ),
            ],
        }
    }

    /// Human-readable status (`affinity-manager status`); `now` in ns.
    pub fn status(&self, now: u64) -> String {
        self.report().status(now)
    }

    /// Everything `status` shows, as data (`status --json`, metrics);
    /// `now` in ns.
    pub fn status_report(&self, now: u64) -> StatusReport {
        self.report().snapshot(now)
    }

    /// The metrics exposition (OpenMetrics text, [`crate::metrics`]) of the
    /// core alone; the daemon adds its own (uptime, reloads).
    pub fn metrics(&self, now: u64) -> String {
        crate::metrics::encode(&self.status_report(now), None)
    }
}

/// An interest match (or an IP-packet-only message read as one).
struct Interest<'m> {
    /// The agent that sent it.
    from: SocketAddrV4,
    /// The packet's key (either direction of a flow).
    key: AffinityKey,
    /// Interest bits that matched (SYN, FIN, ..., ALL).
    reason: u16,
    /// From a fixed affinity's interest criteria (close tracking), not a
    /// wildcard's punt.
    tracking: bool,
    /// The agent's interest data, echoed back.
    echo: Option<&'m [u8]>,
    /// The punted packet, returned with the answer.
    packet: Option<&'m [u8]>,
}

#[cfg(test)]
mod handshake_tests;
#[cfg(test)]
mod tests;
