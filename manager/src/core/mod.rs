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

pub use command::Command;
pub use flows::{Flow, FlowTable};
pub use messages::Messages;
pub use services::{Backend, Service, ServiceRegistry};

use crate::config::Config;
use affinity_api::{
    datagram_messages, interest, seg, AffinityKey, AffinityRef, AuthPolicy, DenyReason,
    MessageType, ReplayWindow, Segment, ServiceMessage, AGENT_PORT,
};
use affinity_forwarding_agent::wire;
use reports::Report;
use services::Refusal;
use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddrV4};

/// A datagram to send.
pub type Outgoing = (SocketAddrV4, Vec<u8>);

const SEC: u64 = 1_000_000_000;
/// Shortest wildcard refresh interval (ns), whatever the TTL.
const MIN_WILDCARD_REFRESH: u64 = SEC / 10;

/// An agent the manager has heard from.
#[derive(Debug, Clone, Default)]
pub struct AgentSeen {
    /// Host name from its identity info.
    pub name: String,
    /// When it was last heard (ns).
    pub last_heard: u64,
    pub interest_matches: u64,
    pub denies: u64,
    /// Action types it performs (bit n: action segment type n), from its
    /// hello's capabilities; `None` until it sent one.
    pub capabilities: Option<u32>,
    /// Services this agent is not used for, by name, and why (from its
    /// capabilities or its denies); shown by `status`.
    pub refused: BTreeMap<String, String>,
}

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
        let verified = if keyless {
            Ok(())
        } else {
            self.auth.verify(&msg, now / SEC)
        };
        if let Err(e) = verified {
            self.count("rx-auth-failed");
            tracing::debug!(%from, error = %e, "authentication failed");
            return out;
        }
        if msg.security().is_some()
            && !keyless
            && !self
                .replay
                .entry(*from.ip())
                .or_default()
                .accept(msg.sequence())
        {
            self.count("rx-replay");
            return out;
        }
        let agent = self.agents.entry(from).or_default();
        agent.last_heard = now;
        if let Some(i) = msg.identity() {
            if agent.name != i.host_name {
                agent.name = i.host_name.to_string();
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
            MessageType::AffinityUpdateDeny => self.on_deny(from, &msg, &mut out),
            MessageType::AgentHello => self.on_hello(from, &msg),
            MessageType::Keepalive => self.count("rx-hello"),
            _ => self.count("rx-unexpected-type"),
        }
        out
    }

    fn on_deny(&mut self, from: SocketAddrV4, msg: &ServiceMessage<'_>, out: &mut Vec<Outgoing>) {
        self.count("rx-deny");
        if let Some(a) = self.agents.get_mut(&from) {
            a.denies += 1;
        }
        let Some(r) = msg.deny_reason() else { return };
        tracing::info!(%from, code = r.code, denied_type = r.denied_type, "agent denied an update");
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
            DenyReason::NO_SUPPORTING_WILDCARD => {
                // The agent missed our wildcards (e.g. multicast loss): send them directly.
                self.count("deny-no-supporting-wildcard");
                let ttl = self.cfg.manager.wildcard_ttl;
                for m in self.messages.wildcards(self.services.as_slice(), ttl) {
                    out.push((SocketAddrV4::new(*from.ip(), AGENT_PORT), m));
                }
            }
            DenyReason::TABLE_FULL => self.count("deny-table-full"),
            _ => self.count("deny-other"),
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
                self.on_tracking(now, fk, fk == key, reason);
                return;
            }
            // Known flow punted (duplicate SYN, or another agent: FIGURE 5).
            let Some(f) = self.flows.get_mut(&fk) else {
                return;
            };
            if !f.agents.contains(&from) {
                f.agents.push(from);
            }
            let f = f.clone();
            let ttl = if f.closed_at.is_some() {
                (self.services.sticky_ms(&f.service) / 1000).max(1) as u32
            } else {
                self.cfg.manager.fixed_ttl
            };
            if let Some(m) = self.messages.flow(&f, ttl, echo, packet) {
                out.push((from, m));
                self.count("known-flow-installed");
            }
            return;
        }
        if tracking {
            self.count("tracking-unknown-flow");
            return;
        }
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
        let placed = s.place(&key);
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
        };
        let flow = Flow::new(name, vip, key, to, from, now);
        let ttl = self.cfg.manager.fixed_ttl;
        if let Some(m) = self.messages.flow(&flow, ttl, echo, packet) {
            out.push((from, m));
        }
        self.flows.insert(flow);
        self.count("flows-created");
    }

    fn on_tracking(&mut self, now: u64, fk: AffinityKey, is_fwd: bool, reason: u16) {
        let Some(f) = self.flows.get(&fk) else {
            return;
        };
        let sticky = self.services.sticky_ms(&f.service);
        if self.flows.note_close(now, fk, is_fwd, reason, sticky) {
            self.count("flows-closed");
        }
    }

    /// Timers: wildcard refresh, sticky deletion, fixed renewal (with the
    /// lifetime limit). Call at [`Self::poll_timeout`] (calling earlier is
    /// harmless: it does work only when something is due).
    pub fn tick(&mut self, now: u64) -> Vec<Outgoing> {
        let mut out = Vec::new();
        if now >= self.next_wildcards {
            let ttl = self.cfg.manager.wildcard_ttl;
            self.send_wildcards(ttl, &mut out);
            self.next_wildcards = now + (ttl as u64 * SEC / 3).max(MIN_WILDCARD_REFRESH);
        }
        for f in self.flows.take_due(now) {
            self.services.release(&f);
            if let Some(m) = self.messages.flow(&f, 0, None, None) {
                for a in &f.agents {
                    out.push((*a, m.clone()));
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
    /// the fixed TTL; flows past `flow_max_lifetime` are dropped then) and
    /// the next sticky deletion of a closed flow. It may be in the past:
    /// tick now. Health checks are not here: they run on their own thread
    /// and arrive as [`Self::health`] events; there are no other timers.
    pub fn poll_timeout(&self) -> u64 {
        let next = self.next_wildcards.min(self.next_renewal);
        self.flows.next_deletion().map_or(next, |t| t.min(next))
    }

    fn renew(&mut self, now: u64, out: &mut Vec<Outgoing>) {
        let lifetime = self.cfg.manager.flow_max_lifetime as u64 * SEC;
        for f in self.flows.take_expired(now, lifetime) {
            self.services.release(&f);
            self.count("flows-expired-lifetime");
        }
        let ttl = self.cfg.manager.fixed_ttl;
        for (agent, keys) in self.flows.open_by_agent(now) {
            for chunk in keys.chunks(messages::FLOWS_PER_MESSAGE) {
                let flows = chunk.iter().filter_map(|k| self.flows.get(k));
                if let Some(m) = self.messages.renewal(flows, ttl) {
                    out.push((agent, m));
                    self.count("renewal-messages-sent");
                }
            }
        }
    }

    /// A health-check result for a backend (rise/fall from the service's
    /// `health`; logged and counted when the backend changes state).
    pub fn health(&mut self, service: &str, backend: SocketAddrV4, ok: bool) {
        match self.services.health(service, backend, ok) {
            Some(true) => tracing::info!(service, %backend, "backend healthy"),
            Some(false) => {
                tracing::warn!(service, %backend, "backend unhealthy: no new flows");
                self.count("backend-went-unhealthy");
            }
            None => {}
        }
    }

    /// Executes a control command; the text answer, or what is wrong.
    pub fn command(&mut self, cmd: Command, now: u64) -> Result<String, String> {
        match cmd {
            Command::Status => Ok(self.status(now)),
            Command::Metrics => Ok(self.metrics()),
            Command::SetWeight {
                service,
                backend,
                weight,
            } => {
                let b = self.services.backend_mut(&service, backend)?;
                b.weight = weight;
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
                let b = self.services.backend_mut(&service, backend)?;
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
    pub fn reload(&mut self, cfg: Config, now: u64) -> Vec<Outgoing> {
        let mut out = Vec::new();
        let gone = self.services.take_removed(&cfg.services);
        if !gone.is_empty() {
            let msgs = self.messages.wildcards(&gone, 0);
            self.fan_out(msgs, &mut out);
        }
        self.auth = cfg.auth_policy();
        self.messages.reconfigure(&cfg, &self.auth);
        self.cfg = cfg;
        self.services.rebuild(&self.cfg.services);
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
            agents: &self.agents,
            counters: &self.counters,
        }
    }

    /// Human-readable status (`affinity-manager status`); `now` in ns.
    pub fn status(&self, now: u64) -> String {
        self.report().status(now)
    }

    /// Prometheus text exposition.
    pub fn metrics(&self) -> String {
        self.report().metrics()
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
