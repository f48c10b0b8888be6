//! The manager's decision logic, without I/O: events in (`now`, datagrams,
//! health results, commands), datagrams out. The daemon around it only moves
//! bytes and time, and sleeps until [`ManagerCore::poll_timeout`].
//!
//! [`ManagerCore`] owns its parts, each in a sibling file (the shape of
//! quinn-proto's `connection/`):
//! - `services.rs` — [`ServiceRegistry`]: services and backends (weights,
//!   health, active flows, SNAT ports); places new flows on backends.
//! - `flows.rs` — [`FlowTable`]: placed flows by either direction's key,
//!   close tracking, sticky deletion and the lifetime limit.
//! - `messages.rs` — [`Messages`]: builders of everything the manager sends
//!   (wildcards, fixed affinities, renewals), signed and with identity.
//! - `command.rs` — [`Command`]: the control socket's command language.
//! - `reports.rs` — status and Prometheus text.
//!
//! This file is the dispatch: receive → verify → per message type, and the
//! timers (`tick`, `poll_timeout`), reload and command execution.
//! All times are nanoseconds on the caller's monotonic clock.

mod command;
mod flows;
mod messages;
mod reports;
mod services;
mod stats;

pub use command::{Command, DEFAULT_CONNECTIONS_LIMIT};
pub use flows::{Flow, FlowState, FlowTable, Timeouts};
pub use messages::Messages;
pub use services::{backend_state, Backend, HealthDetail, Service, ServiceRegistry};
pub use stats::{RateWindow, Rates, Traffic, RATE_WINDOW};

use crate::config::Config;
use affinity_api::{
    datagram_messages, interest, seg, unix_now, AffinityKey, AffinityRef, AuthError, AuthPolicy,
    DenyReason, MessageType, ReplayWindow, Segment, ServiceMessage, AGENT_PORT,
};
use affinity_forwarding_agent::wire;
use reports::Report;
pub use reports::{
    AgentReport, BackendReport, BackendStats, ConnectionReport, ConnectionsReport, ManagerReport,
    ServiceReport, ServiceStats, SnatReport, StatsReport, StatusReport, TrafficReport, EVENTS,
    SERVICE_ROLES,
};
use services::Refusal;
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
            cfg,
        }
    }

    fn count(&mut self, name: &'static str) {
        *self.counters.entry(name).or_default() += 1;
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

    /// Records that agent `from` is not used for the services for which
    /// `lacks` returns a missing action (by type), with the reason.
    fn refuse_services(&mut self, from: SocketAddrV4, lacks: impl Fn(&Service) -> Option<u16>) {
        let mut refused = Vec::new();
        for s in self.services.as_slice() {
            if let Some(t) = lacks(s) {
                refused.push((s.cfg.name.clone(), t));
            }
        }
        let agent = self.agents.entry(from).or_default();
        for (name, t) in refused {
            let why = format!("cannot perform {}", action_name(t));
            if agent.refused.get(&name) != Some(&why) {
                tracing::warn!(%from, service = %name, reason = %why, "agent not used for the service");
            }
            agent.refused.insert(name, why);
        }
    }

    /// An agent hello: keeps its capabilities and stops using it for the
    /// services that need an action it lacks.
    fn on_hello(&mut self, from: SocketAddrV4, msg: &ServiceMessage<'_>) {
        self.count("rx-hello");
        let Some(caps) = msg.segments().find_map(|(s, _)| match s {
            Segment::Capabilities(c) => Some(c.actions),
            _ => None,
        }) else {
            return;
        };
        if let Some(a) = self.agents.get_mut(&from) {
            a.capabilities = Some(caps);
            a.refused.clear();
        }
        self.refuse_services(from, |s| {
            messages::needed_actions(s)
                .into_iter()
                .find(|&t| caps & (1u32 << t) == 0)
        });
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

    /// Handles a datagram from `from`: its message, or its messages back to
    /// back (PROTOCOL.md); broken framing is counted as unparsable.
    pub fn handle_datagram(&mut self, now: u64, from: SocketAddrV4, bytes: &[u8]) -> Vec<Outgoing> {
        self.clock = self.clock.max(now);
        let mut out = Vec::new();
        for m in datagram_messages(bytes) {
            out.extend(self.handle_message(now, from, m.unwrap_or_default()));
        }
        out
    }

    fn handle_message(&mut self, now: u64, from: SocketAddrV4, bytes: &[u8]) -> Vec<Outgoing> {
        let mut out = Vec::new();
        let msg = match ServiceMessage::parse(bytes) {
            Ok(m) => m,
            Err(e) => {
                self.count("rx-parse-error");
                tracing::debug!(%from, error = %e, "unparsable service message");
                return out;
            }
        };
        // Seed: with no key and signatures not required, a security
        // segment is ignored and the message accepted.
        let keyless = self.auth.keys.is_empty() && !self.auth.require;
        let signed = msg.security().is_some() && !keyless;
        let checked = if keyless {
            Ok(())
        } else {
            self.auth
                .verify_from(&msg, now / SEC, *from.ip())
                .and_then(|()| {
                    if signed {
                        self.auth.check_sequence(msg.sequence(), unix_now())
                    } else {
                        Ok(())
                    }
                })
                .and_then(|()| match msg.receiver() {
                    Some(r)
                        if r != *self.cfg.manager.listen.ip()
                            && !self.cfg.manager.listen.ip().is_unspecified() =>
                    {
                        Err(AuthError::WrongReceiver)
                    }
                    _ => Ok(()),
                })
        };
        if let Err(e) = checked {
            self.count("rx-auth-failed");
            self.count(auth_counter(&e));
            if self.last_auth_log == 0 || now.saturating_sub(self.last_auth_log) >= SEC {
                self.last_auth_log = now.max(1);
                tracing::warn!(%from, reason = e.reason(), error = %e, "service message refused (logged at most once a second; see rx-auth-* counters)");
            }
            return out;
        }
        if signed {
            let ip = *from.ip();
            if !self.replay.contains_key(&ip) && self.replay.len() >= MAX_PEERS {
                self.count("rx-peer-table-full");
                return out;
            }
            if !self.replay.entry(ip).or_default().accept(msg.sequence()) {
                self.count("rx-replay");
                return out;
            }
        }
        if !self.agents.contains_key(&from) && self.agents.len() >= MAX_PEERS {
            // Unverified senders (open mode) must not grow the table without
            // bound; entries also expire (`tick`). The message is still handled.
            self.count("agent-table-full");
        } else {
            let agent = self.agents.entry(from).or_default();
            agent.last_heard = now;
            if let Some(i) = msg.identity() {
                if agent.name != i.host_name {
                    agent.name = i.host_name.to_string();
                }
            }
        }
        match msg.msg_type() {
            MessageType::InterestMatchWildcard | MessageType::InterestMatchFixed => {
                self.count("rx-interest-match");
                if let Some(a) = self.agents.get_mut(&from) {
                    a.interest_matches += 1;
                }
                let Some(e) = msg.affinities().next() else {
                    return out;
                };
                let AffinityRef::Fixed(f) = e.affinity else {
                    return out;
                };
                let m = Interest {
                    from,
                    key: f.key,
                    reason: e.identifier.map_or(0, |i| i.reason),
                    tracking: msg.msg_type() == MessageType::InterestMatchFixed,
                    echo: msg.fa_interest_data(),
                    packet: msg.ip_packet(),
                };
                self.on_interest(now, m, &mut out);
            }
            MessageType::IpPacketOnly => {
                self.count("rx-ip-packet-only");
                if let Some((key, flags)) = msg.ip_packet().and_then(packet_key) {
                    let m = Interest {
                        from,
                        key,
                        // TCP flag bits FIN..URG are interest bits 0x01..0x20.
                        reason: flags as u16 | interest::ALL,
                        tracking: false,
                        echo: msg.fa_interest_data(),
                        packet: msg.ip_packet(),
                    };
                    self.on_interest(now, m, &mut out);
                }
            }
            MessageType::AffinityUpdateDeny => self.on_deny(now, from, &msg, signed, &mut out),
            MessageType::StatisticsReport => self.on_activity(now, from, &msg, &mut out),
            MessageType::AgentHello => {
                // Only agents already in the (bounded) table are logged: an
                // unverified flood of hellos must not grow it.
                if let Some(a) = self.agents.get_mut(&from) {
                    if a.hello_logged == 0
                        || now.saturating_sub(a.hello_logged) >= HELLO_LOG_INTERVAL
                    {
                        a.hello_logged = now.max(1);
                        tracing::info!(agent = %from, name = %a.name, "agent hello");
                    }
                }
                self.on_hello(from, &msg);
                self.resync_agent(now, from, signed, &mut out);
            }
            MessageType::Keepalive => self.count("rx-hello"),
            _ => self.count("rx-unexpected-type"),
        }
        out
    }

    fn on_deny(
        &mut self,
        now: u64,
        from: SocketAddrV4,
        msg: &ServiceMessage<'_>,
        verified: bool,
        out: &mut Vec<Outgoing>,
    ) {
        self.count("rx-deny");
        if let Some(a) = self.agents.get_mut(&from) {
            a.denies += 1;
        }
        let Some(r) = msg.deny_reason() else { return };
        if self.last_deny_log == 0 || now.saturating_sub(self.last_deny_log) >= SEC {
            // One line a second at most: denies come in bursts (and in open
            // mode from anyone); the counters have every one.
            self.last_deny_log = now.max(1);
            tracing::info!(%from, code = r.code, denied_type = r.denied_type, "agent denied an update (logged at most once a second)");
        }
        match r.code {
            DenyReason::UNSUPPORTED_REQUIRED_ACTION => {
                self.count("deny-unsupported-action");
                self.refuse_denied(from, msg, r.denied_type);
                if r.denied_type == seg::ADVERTISE_ACTION {
                    let id = msg
                        .affinities()
                        .next()
                        .and_then(|e| e.identifier)
                        .map(|i| i.id);
                    let mut changed = false;
                    for s in self.services.iter_mut() {
                        if s.advertise && (id.is_none() || id == Some(s.id_base)) {
                            if s.cfg.action_optional("advertise") {
                                s.advertise = false;
                                changed = true;
                                tracing::warn!(service = %s.cfg.name, %from, "agent cannot advertise; retrying without the optional advertise action");
                            } else {
                                tracing::error!(service = %s.cfg.name, %from, "agent cannot advertise and the service requires it");
                            }
                        }
                    }
                    if changed {
                        self.count("retry-without-optional-action");
                        let ttl = self.cfg.manager.wildcard_ttl;
                        self.send_wildcards(ttl, out);
                    }
                }
            }
            DenyReason::NO_SUPPORTING_WILDCARD if verified => {
                // The agent missed our wildcards (e.g. multicast loss): send them directly.
                self.count("deny-no-supporting-wildcard");
                let ttl = self.cfg.manager.wildcard_ttl;
                for m in self.messages.wildcards(self.services.as_slice(), ttl) {
                    out.push((SocketAddrV4::new(*from.ip(), AGENT_PORT), m));
                }
            }
            DenyReason::NO_SUPPORTING_WILDCARD => {
                // Unverified (open mode): anyone can claim to be that agent,
                // so never unicast the wildcard set to the claimed source
                // (×19 amplification); refresh the usual destinations
                // early instead, at most every MIN_WILDCARD_REFRESH.
                self.count("deny-no-supporting-wildcard");
                self.next_wildcards = self
                    .next_wildcards
                    .min(self.last_wildcards.saturating_add(MIN_WILDCARD_REFRESH));
            }
            DenyReason::STALE_SEQUENCE if verified => {
                // Our sequence is behind the agent's window (our clock
                // stepped back, or someone replayed far ahead within the
                // bound): continue above it, if it is not itself far ahead.
                self.count("deny-stale-sequence");
                if self
                    .auth
                    .check_sequence(r.denied_sequence, unix_now())
                    .is_ok()
                {
                    self.messages.resynchronise(r.denied_sequence);
                    self.next_wildcards = now;
                }
            }
            DenyReason::TABLE_FULL => self.count("deny-table-full"),
            _ => self.count("deny-other"),
        }
    }

    /// The state a flow (re)starts in for a packet with interest `reason`
    /// bits: TCP SYN without ACK → SYN seen; other TCP → established
    /// (adopted mid-connection); UDP/ICMP → active.
    fn start_state(key: &AffinityKey, reason: u16) -> FlowState {
        if key.protocol != wire::TCP {
            FlowState::Active
        } else if reason & interest::SYN != 0 && reason & interest::ACK == 0 {
            FlowState::SynSeen
        } else {
            FlowState::Established
        }
    }

    /// Sends flow `fwd`'s affinities with the fixed TTL to `to`, noting how
    /// long agents may hold them.
    fn install(
        &mut self,
        now: u64,
        fwd: &AffinityKey,
        to: &[SocketAddrV4],
        echo: Option<&[u8]>,
        packet: Option<&[u8]>,
        out: &mut Vec<Outgoing>,
    ) {
        let ttl = self.cfg.manager.fixed_ttl;
        let Some(f) = self.flows.get_mut(fwd) else {
            return;
        };
        f.held_until = f.held_until.max(now + ttl as u64 * SEC);
        let f = f.clone();
        // One message per agent: with keys, each names its receiver.
        for a in to {
            if let Some(m) = self.messages.flow(*a.ip(), &f, ttl, echo, packet) {
                out.push((*a, m));
            }
        }
    }

    /// Ends flow `fwd` (TTL 0 to every agent holding it); its keys stay
    /// reserved until no agent may hold them (`Flow::held_until`).
    fn end_flow(&mut self, fwd: &AffinityKey, why: &'static str, out: &mut Vec<Outgoing>) {
        if let Some(f) = self.flows.end(fwd) {
            for a in &f.agents {
                if let Some(m) = self.messages.flow(*a.ip(), &f, 0, None, None) {
                    out.push((*a, m));
                }
            }
            self.count(why);
        }
    }

    /// A deny (code 2) naming actions the agent cannot perform (the deny
    /// reason's type and its action list): the service it was about, found
    /// by the affinity identifier or the denied flow's key, no longer uses
    /// the agent, unless every such action is optional for it (advertise
    /// is then retried without, in `on_deny`).
    fn refuse_denied(&mut self, from: SocketAddrV4, msg: &ServiceMessage<'_>, first: u16) {
        let mut types = vec![first];
        for (s, _) in msg.segments() {
            if let Segment::ActionList(l) = s {
                types.extend(l.entries().map(|(t, _)| t));
            }
        }
        let entry = msg.affinities().next();
        let by_id = entry
            .and_then(|e| e.identifier)
            .and_then(|i| (i.id >> 16).checked_sub(1))
            .and_then(|i| self.services.as_slice().get(i as usize))
            .map(|s| s.cfg.name.clone());
        let by_flow = entry.and_then(|e| match e.affinity {
            AffinityRef::Fixed(f) => self
                .flows
                .lookup(&f.key)
                .and_then(|k| self.flows.get(&k))
                .map(|f| f.service.to_string()),
            AffinityRef::Wildcard(_) => None,
        });
        let Some(name) = by_id.or(by_flow) else {
            return;
        };
        self.refuse_services(from, |s| {
            (s.cfg.name == name)
                .then(|| {
                    types.iter().copied().find(|&t| {
                        !(t == seg::ADVERTISE_ACTION && s.cfg.action_optional("advertise"))
                    })
                })
                .flatten()
        });
    }

    /// An agent (re)started: resynchronise it at once instead of at the
    /// next refresh — our wildcards, and the fixed affinities of the open
    /// flows it carries — so replies from backends are translated from
    /// its first packets (issue 16, item 5). Unverified (open mode), the
    /// claimed source gets nothing directly (no amplification): only the
    /// usual wildcard refresh is brought forward, at most every
    /// [`MIN_WILDCARD_REFRESH`].
    fn resync_agent(
        &mut self,
        now: u64,
        from: SocketAddrV4,
        verified: bool,
        out: &mut Vec<Outgoing>,
    ) {
        self.count("agent-hello-resync");
        if !verified {
            // Only the wildcards, which go to the configured destinations
            // (multicast group, unicast agents), never to the claimed
            // source; renewals are not brought forward either: they go to
            // the agents holding flows, which in open mode may be any
            // address an earlier unverified punt named (issue 16 item 7).
            let soon = self.last_wildcards.saturating_add(MIN_WILDCARD_REFRESH);
            self.next_wildcards = self.next_wildcards.min(soon);
            return;
        }
        let ttl = self.cfg.manager.wildcard_ttl;
        for m in self.messages.wildcards(self.services.as_slice(), ttl) {
            out.push((from, m));
        }
        let ttl = self.cfg.manager.fixed_ttl;
        // The agent now holds them for a TTL: noted like a renewal's.
        let keys = self
            .flows
            .renew_by_agent(now, ttl as u64 * SEC)
            .remove(&from)
            .unwrap_or_default();
        for chunk in keys.chunks(messages::FLOWS_PER_MESSAGE) {
            let flows = chunk.iter().filter_map(|k| self.flows.get(k));
            if let Some(m) = self.messages.renewal(*from.ip(), flows, ttl) {
                out.push((from, m));
                self.count("renewal-messages-sent");
            }
        }
    }

    fn on_interest(&mut self, now: u64, m: Interest<'_>, out: &mut Vec<Outgoing>) {
        let Interest {
            from,
            key,
            reason,
            tracking,
            echo,
            packet,
        } = m;
        if let Some(fk) = self.flows.lookup(&key) {
            if tracking {
                self.on_tracking(now, fk, fk == key, reason, from, out);
                return;
            }
            let Some(f) = self.flows.get(&fk) else {
                return;
            };
            let state = Self::start_state(&fk, reason);
            if f.state == FlowState::Ended {
                if fk != key {
                    // The backend still sending on an ended flow (e.g. a
                    // SYN-ACK retransmitted to a spoofed client): only the
                    // client's own packets bring a flow back.
                    self.count("ended-flow-reverse-dropped");
                    return;
                }
                if self.services.can_take(&f.service, f.backend) {
                    // A packet of a flow that ended but whose keys are still
                    // reserved: it goes on where it was (same backend, same
                    // SNAT port), so agents cannot disagree about it.
                    self.flows.revive(&fk, now, state, from);
                    self.install(now, &fk, &[from], echo, packet, out);
                    self.count("flows-revived");
                    return;
                }
                // Its backend is gone: free it and place the packet anew.
                if let Some(old) = self.flows.remove(&fk) {
                    self.services.release(&old);
                }
            } else {
                // Known flow punted (duplicate SYN, or another agent: FIGURE 5).
                let reopen =
                    f.state == FlowState::Closed && fk == key && state == FlowState::SynSeen;
                let Some(f) = self.flows.get_mut(&fk) else {
                    return;
                };
                if !f.agents.contains(&from) {
                    f.agents.push(from);
                }
                f.last_active = now;
                if reopen {
                    f.reopen(now, state, from);
                }
                let f = f.clone();
                if reopen {
                    self.count("flows-reopened");
                }
                if f.closed_at.is_some() {
                    let ttl = (self.services.sticky_ms(&f.service) / 1000).max(1) as u32;
                    if let Some(m) = self.messages.flow(*from.ip(), &f, ttl, echo, packet) {
                        out.push((from, m));
                    }
                } else {
                    self.install(now, &fk, &[from], echo, packet, out);
                }
                self.count("known-flow-installed");
                return;
            }
        }
        if tracking {
            self.count("tracking-unknown-flow");
            return;
        }
        // A punted key another manager installed (learned from activity
        // reports) is that flow going on here (a backup adopting it after
        // a takeover): its reverse key is then expected in use too.
        let continuation = self.flows.is_foreign(&key);
        let refused = self.agents.get(&from).map(|a| a.refused.clone());
        let Some(s) = self.services.serving(&key) else {
            self.count("interest-no-service");
            return;
        };
        if refused.is_some_and(|r| r.contains_key(&s.cfg.name)) {
            // It cannot perform what the service needs (e.g. NAT): no flow
            // is placed through it, so nothing leaves untranslated.
            self.count("interest-from-agent-not-used");
            return;
        }
        let is_tcp = key.protocol == wire::TCP;
        let syn = reason & interest::SYN != 0 && reason & interest::ACK == 0;
        if is_tcp && !syn && !s.is_consistent() {
            self.count("unknown-flow-dropped");
            return;
        }
        let adopted = is_tcp && !syn;
        let flows = &self.flows;
        let placed = s.place(&key, |rev| {
            flows.own_key(rev) || (!continuation && flows.is_foreign(rev))
        });
        let (name, vip) = (s.name.clone(), s.cfg.virtual_addr);
        if adopted {
            self.count("flow-adopted");
        }
        let to = match placed {
            Ok(to) => to,
            Err(Refusal::NoBackend) => {
                self.count("no-backend-available");
                tracing::warn!(service = %name, "no healthy backend with weight > 0");
                return;
            }
            Err(Refusal::SnatExhausted) => {
                self.count("snat-ports-exhausted");
                tracing::warn!(service = %name, "source NAT ports exhausted; new flow refused");
                return;
            }
            Err(Refusal::Collision) => {
                self.count("install-collision-refused");
                tracing::info!(service = %name, client = %key.src_addr, port = key.src_port, "the flow's reverse key is another live flow's; refused");
                return;
            }
        };
        if to.remapped {
            self.count("install-collision-remapped");
        }
        if to.hairpin {
            self.count("hairpin-flows");
        }
        // A new connection: the backend's rates and the service's role.
        self.services
            .note_traffic(now, &name, to.placement.backend, true, 0, 0);
        let mut flow = Flow::new(name, vip, key, to.placement, from, now);
        flow.state = Self::start_state(&key, reason);
        self.flows.insert(flow);
        self.install(now, &key, &[from], echo, packet, out);
        self.count("flows-created");
    }

    /// A tracked copy from a flow's fixed affinity: FIN/RST close it; a SYN
    /// (without ACK, client → virtual address) on a closing or closed flow
    /// reopens it on the same backend (RFC 793 TIME-WAIT reuse; nat44-ed
    /// does the same), renewed on every agent holding it.
    fn on_tracking(
        &mut self,
        now: u64,
        fk: AffinityKey,
        is_fwd: bool,
        reason: u16,
        from: SocketAddrV4,
        out: &mut Vec<Outgoing>,
    ) {
        let Some(f) = self.flows.get(&fk) else {
            return;
        };
        let syn = reason & interest::SYN != 0 && reason & interest::ACK == 0;
        if syn && is_fwd {
            if matches!(f.state, FlowState::Closing | FlowState::Closed) {
                let agents = f.agents.clone();
                if let Some(f) = self.flows.get_mut(&fk) {
                    f.reopen(now, FlowState::SynSeen, from);
                }
                self.install(now, &fk, &agents, None, None, out);
                self.count("flows-reopened");
            } else if let Some(f) = self.flows.get_mut(&fk) {
                f.last_active = now;
            }
            return;
        }
        let sticky = self.services.sticky_ms(&f.service);
        if self.flows.note_close(now, fk, is_fwd, reason, sticky) {
            self.count("flows-closed");
        }
    }

    /// An agent's activity report (statistics report, type 19): each fixed
    /// affinity listed carried the packets of the statistics segment after
    /// it since the agent's previous report. Flows listed are active
    /// (their idle timer restarts); a report for an ended flow means the
    /// agent missed its deletion, which is sent again; a key that is not
    /// one of ours is another manager's, kept in the index of keys in use
    /// for the TTL the agent reported.
    fn on_activity(
        &mut self,
        now: u64,
        from: SocketAddrV4,
        msg: &ServiceMessage<'_>,
        out: &mut Vec<Outgoing>,
    ) {
        self.count("rx-activity-report");
        if let Some(a) = self.agents.get_mut(&from) {
            a.activity_reports += 1;
        }
        let mut current: Option<(AffinityKey, u32)> = None;
        let mut resend = Vec::new();
        for (seg, _) in msg.segments() {
            match seg {
                Segment::FixedAffinity(f) => current = Some((f.key, f.ttl)),
                Segment::Statistics(st) => {
                    let Some((key, ttl)) = current.take() else {
                        continue;
                    };
                    let Some(fk) = self.flows.lookup(&key) else {
                        // Another manager's affinity (a primary's, another
                        // client domain's): never install over it.
                        self.flows.note_foreign(key, now + ttl as u64 * SEC);
                        self.count("activity-foreign-keys");
                        continue;
                    };
                    let Some(f) = self.flows.get_mut(&fk) else {
                        continue;
                    };
                    // Counted whatever the flow's state: the agent carried
                    // these packets to the flow's backend.
                    self.services.note_traffic(
                        now,
                        &f.service,
                        f.backend,
                        fk == key,
                        st.packets,
                        st.bytes,
                    );
                    if f.state == FlowState::Ended {
                        resend.push(fk);
                        continue;
                    }
                    f.note_activity(now, fk == key, st.packets, st.bytes);
                    if !f.agents.contains(&from) {
                        f.agents.push(from);
                    }
                }
                _ => {}
            }
        }
        for fk in resend {
            if let Some(f) = self.flows.get(&fk) {
                if let Some(m) = self.messages.flow(*from.ip(), f, 0, None, None) {
                    out.push((from, m));
                    self.count("deletions-resent");
                }
            }
        }
    }

    /// Timers: wildcard refresh, sticky deletion, idle expiry and fixed
    /// renewal. Call at [`Self::poll_timeout`] (calling earlier is
    /// harmless: it does work only when something is due).
    pub fn tick(&mut self, now: u64) -> Vec<Outgoing> {
        self.clock = self.clock.max(now);
        let mut out = Vec::new();
        if now >= self.next_wildcards {
            let ttl = self.cfg.manager.wildcard_ttl;
            self.send_wildcards(ttl, &mut out);
            self.last_wildcards = now;
            self.agents
                .retain(|_, a| now.saturating_sub(a.last_heard) < AGENT_EXPIRY);
            self.next_wildcards = now + (ttl as u64 * SEC / 3).max(MIN_WILDCARD_REFRESH);
        }
        for f in self.flows.take_due(now) {
            for a in &f.agents {
                if let Some(m) = self.messages.flow(*a.ip(), &f, 0, None, None) {
                    out.push((*a, m));
                }
            }
            self.count("flows-deleted-after-sticky");
        }
        if now >= self.next_renewal {
            self.renew(now, &mut out);
            self.next_renewal = now + self.cfg.manager.fixed_ttl as u64 * SEC / 3;
        }
        out
    }

    /// When [`Self::tick`] next has work (ns, the same clock as `now`): the
    /// earliest of the next wildcard refresh (every third of the wildcard
    /// TTL, at least 100 ms apart), the next fixed renewal (every third of
    /// the fixed TTL; idle flows are ended then) and the next sticky
    /// deletion of a closed flow. It may be in the past: tick now. Health
    /// checks are not here: they run on their own thread and arrive as
    /// [`Self::health`] events; there are no other timers.
    pub fn poll_timeout(&self) -> u64 {
        let next = self.next_wildcards.min(self.next_renewal);
        self.flows.next_deletion().map_or(next, |t| t.min(next))
    }

    /// The idle timeouts in force.
    fn timeouts(&self) -> Timeouts {
        let m = &self.cfg.manager;
        Timeouts {
            tcp_transitory: m.tcp_transitory_timeout,
            tcp_established: m.tcp_established_timeout,
            udp: m.udp_timeout,
            icmp: m.icmp_timeout,
        }
    }

    /// Every third of the fixed TTL: ends flows idle past their state's
    /// timeout (or past `flow_max_lifetime`), frees ended flows no agent
    /// can hold any more (a fixed TTL after the last TTL given, so at least
    /// twice the TTL after the last renewal: EXCHANGES.md), and renews the
    /// open ones on the agents holding them.
    fn renew(&mut self, now: u64, out: &mut Vec<Outgoing>) {
        let lifetime = self.cfg.manager.flow_max_lifetime as u64 * SEC;
        let t = self.timeouts();
        let agents = &self.agents;
        let reported = |f: &Flow| {
            f.agents
                .iter()
                .all(|a| agents.get(a).is_some_and(|s| s.activity_reports > 0))
        };
        for k in self.flows.idle(now, &t, lifetime, reported) {
            let old = lifetime > 0
                && self
                    .flows
                    .get(&k)
                    .is_some_and(|f| now.saturating_sub(f.created) > lifetime);
            let why = if old {
                "flows-expired-lifetime"
            } else {
                "flows-expired-idle"
            };
            self.end_flow(&k, why, out);
        }
        self.flows.expire_foreign(now);
        let ttl = self.cfg.manager.fixed_ttl;
        let margin = ttl as u64 * SEC;
        for f in self.flows.take_released(now.saturating_sub(margin)) {
            self.services.release(&f);
        }
        for (agent, keys) in self.flows.renew_by_agent(now, margin) {
            for chunk in keys.chunks(messages::FLOWS_PER_MESSAGE) {
                let flows = chunk.iter().filter_map(|k| self.flows.get(k));
                if let Some(m) = self.messages.renewal(*agent.ip(), flows, ttl) {
                    out.push((agent, m));
                    self.count("renewal-messages-sent");
                }
            }
        }
    }

    /// Ends the flows whose backend can no longer take them (removed by a
    /// reload, or unhealthy): UDP and ICMP always (their next packet is
    /// placed anew: moved within one renewal interval), TCP when the
    /// service has `expire_nodest_conn` (IPVS's sysctl of that name).
    fn end_flows_without_backend(&mut self, out: &mut Vec<Outgoing>) {
        let gone: Vec<AffinityKey> = self
            .flows
            .iter()
            .filter(|f| f.state != FlowState::Ended)
            .filter(|f| !self.services.can_take(&f.service, f.backend))
            .filter(|f| !f.is_tcp() || self.services.expire_nodest_conn(&f.service))
            .map(|f| f.fwd)
            .collect();
        for k in gone {
            self.end_flow(&k, "flows-ended-backend-gone", out);
            // Nothing may revive it onto the gone backend: free it now.
            if let Some(f) = self.flows.remove(&k) {
                self.services.release(&f);
            }
        }
    }

    /// A health-check result for a backend (rise/fall from the service's
    /// `health`; logged and counted when the backend changes state).
    ///
    /// When it goes unhealthy, its flows are ended as for a removed backend
    /// (UDP always, TCP with `expire_nodest_conn`): the deletions are
    /// returned, to send.
    pub fn health(&mut self, service: &str, backend: SocketAddrV4, ok: bool) -> Vec<Outgoing> {
        let now = self.clock;
        self.health_check(now, service, backend, ok, None, None)
    }

    /// [`Self::health`] with the check's detail, shown by `status`: why it
    /// failed (`refused`, `timeout`, `http status 503`, ...), its latency
    /// (µs), and `now` (ns) for the time since the backend's last change.
    pub fn health_check(
        &mut self,
        now: u64,
        service: &str,
        backend: SocketAddrV4,
        ok: bool,
        failure: Option<&str>,
        latency_us: Option<u64>,
    ) -> Vec<Outgoing> {
        self.clock = self.clock.max(now);
        let mut out = Vec::new();
        match self
            .services
            .health(now, service, backend, ok, failure, latency_us)
        {
            Some(true) => tracing::info!(service, %backend, "backend healthy"),
            Some(false) => {
                tracing::warn!(service, %backend, "backend unhealthy: no new flows; its UDP flows move");
                self.count("backend-went-unhealthy");
                self.end_flows_without_backend(&mut out);
            }
            None => {}
        }
        out
    }

    /// Executes a control command; the text answer, or what is wrong.
    pub fn command(&mut self, cmd: Command, now: u64) -> Result<String, String> {
        match cmd {
            Command::Status => Ok(self.status(now)),
            Command::StatusJson => serde_json::to_string_pretty(&self.status_report(now))
                .map(|j| j + "\n")
                .map_err(|e| e.to_string()),
            Command::Metrics => Ok(self.metrics(now)),
            Command::Stats { json: false } => Ok(self.report().stats_text(now)),
            Command::Stats { json: true } => {
                serde_json::to_string_pretty(&self.report().stats(now))
                    .map(|j| j + "\n")
                    .map_err(|e| e.to_string())
            }
            Command::Connections {
                service,
                backend,
                limit,
                json,
            } => {
                if let Some(s) = &service {
                    if !self.services.as_slice().iter().any(|x| x.cfg.name == *s) {
                        return Err(format!("no service {s:?}"));
                    }
                }
                let r = self.report().connections(
                    now,
                    service.as_deref(),
                    backend,
                    limit,
                    &self.timeouts(),
                );
                if json {
                    serde_json::to_string_pretty(&r)
                        .map(|j| j + "\n")
                        .map_err(|e| e.to_string())
                } else {
                    Ok(reports::connections_text(&r))
                }
            }
            Command::SetWeight {
                service,
                backend,
                weight,
            } => {
                let b = self.services.backend_mut(&service, backend)?;
                b.weight = weight;
                // A load report scaled the old weight: it no longer holds.
                b.feedback_weight = None;
                Ok(format!(
                    "{service} {backend} weight {weight}{}\n",
                    if weight == 0 {
                        " (draining: existing flows stay)"
                    } else {
                        ""
                    }
                ))
            }
            Command::LoadReport {
                service,
                backend,
                load,
            } => {
                if load > 100 {
                    return Err(format!("load {load} is over 100 (percent)"));
                }
                let feedback = self
                    .services
                    .as_slice()
                    .iter()
                    .find(|s| s.cfg.name == service)
                    .is_some_and(|s| s.cfg.algorithm == crate::config::Algorithm::Feedback);
                let b = self.services.backend_mut(&service, backend)?;
                if !feedback {
                    return Err(format!(
                        "service {service:?} does not use the feedback algorithm; load reports are refused"
                    ));
                }
                b.report_load(load);
                Ok(format!(
                    "{service} {backend} load {load}% -> effective weight {}\n",
                    b.effective_weight()
                ))
            }
        }
    }

    /// Reloads the configuration; established flows are kept, removed
    /// services' wildcards are deleted (TTL 0) and the rest are resent now.
    /// Flows of removed backends end as for an unhealthy one (UDP moved,
    /// TCP per `expire_nodest_conn`). Runtime weights and drains survive
    /// (see `ServiceRegistry::rebuild`). `listen` and `metrics` need a
    /// restart (their sockets are bound once): a change to them is refused
    /// with an error log line and the old values stay in force.
    pub fn reload(&mut self, mut cfg: Config, now: u64) -> Vec<Outgoing> {
        let mut out = Vec::new();
        let old = self.cfg.manager.clone();
        if cfg.manager.listen != old.listen || cfg.manager.metrics != old.metrics {
            tracing::error!(
                listen = %old.listen,
                new_listen = %cfg.manager.listen,
                metrics = ?old.metrics,
                new_metrics = ?cfg.manager.metrics,
                "reload: listen and metrics cannot change without a restart; keeping the old ones"
            );
            self.count("reload-listen-metrics-refused");
            cfg.manager.listen = old.listen;
            cfg.manager.metrics = old.metrics;
        }
        let gone = self.services.take_removed(&cfg.services);
        if !gone.is_empty() {
            let msgs = self.messages.wildcards(&gone, 0);
            self.fan_out(msgs, &mut out);
        }
        self.auth = cfg.auth_policy();
        self.messages.reconfigure(&cfg, &self.auth);
        self.cfg = cfg;
        self.services.rebuild(&self.cfg.services);
        self.end_flows_without_backend(&mut out);
        self.next_wildcards = now;
        self.count("config-reloads");
        out.extend(self.tick(now));
        out
    }

    /// Clean shutdown: delete our wildcards everywhere (TTL 0).
    pub fn shutdown(&mut self) -> Vec<Outgoing> {
        let mut out = Vec::new();
        self.send_wildcards(0, &mut out);
        out
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
mod tests;
