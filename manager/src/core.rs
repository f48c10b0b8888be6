//! The manager's decision logic, without I/O: events in (`now`, datagrams,
//! health results, commands), datagrams out. The daemon around it only moves
//! bytes and time.

use crate::algorithm::{Candidate, Selector};
use crate::config::{parse_port_range, Config, ServiceConfig};
use crate::snat::PortPool;
use affinity_api::*;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

type FlowMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A datagram to send.
pub type Outgoing = (SocketAddrV4, Vec<u8>);

const SEC: u64 = 1_000_000_000;
/// Flows per renewal message (two affinities each) to stay under ~1400 bytes.
const FLOWS_PER_MESSAGE: usize = 8;

/// Run-time state of one backend.
#[derive(Debug, Clone)]
pub struct Backend {
    pub addr: SocketAddrV4,
    /// Weight from the configuration or `set-weight` (0 = drained).
    pub weight: u32,
    /// Feedback algorithm: weight derived from the last load report.
    pub feedback_weight: Option<u32>,
    pub healthy: bool,
    ok_streak: u32,
    fail_streak: u32,
    pub active: u64,
    pub total: u64,
}

impl Backend {
    pub fn effective_weight(&self) -> u32 {
        if !self.healthy {
            0
        } else {
            self.feedback_weight
                .unwrap_or(self.weight)
                .min(self.weight.saturating_mul(100))
        }
    }
}

/// Run-time state of one service.
#[derive(Debug)]
pub struct Service {
    pub cfg: ServiceConfig,
    /// `cfg.name`, shared with this service's flows (no copy per flow).
    name: Arc<str>,
    /// Scratch for the selector's candidates (no allocation per flow).
    cands: Vec<Candidate>,
    /// `cfg.domain()`, parsed once (address, mask).
    domain: (Ipv4Addr, Ipv4Addr),
    /// Affinity identifiers: base + 0 forward, base + 1 + i reverse of backend i.
    pub id_base: u32,
    pub backends: Vec<Backend>,
    names: Vec<Vec<u8>>,
    selector: Selector,
    snat: Option<PortPool>,
    /// Cleared when an agent denied the advertise action and it is optional.
    pub advertise: bool,
}

/// A flow the manager placed.
#[derive(Debug, Clone)]
pub struct Flow {
    pub service: Arc<str>,
    pub fwd: AffinityKey,
    pub rev: AffinityKey,
    pub vip: SocketAddrV4,
    pub backend: SocketAddrV4,
    pub snat: Option<SocketAddrV4>,
    pub agents: Vec<SocketAddrV4>,
    fin_fwd: bool,
    fin_rev: bool,
    pub closed_at: Option<u64>,
    pub created: u64,
}

/// An agent the manager has heard from.
#[derive(Debug, Clone, Default)]
pub struct AgentSeen {
    pub name: String,
    pub last_heard: u64,
    pub interest_matches: u64,
    pub denies: u64,
}

/// A command from the local control socket.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Status,
    Metrics,
    SetWeight {
        service: String,
        backend: SocketAddrV4,
        weight: u32,
    },
    LoadReport {
        service: String,
        backend: SocketAddrV4,
        load: u32,
    },
}

impl Command {
    pub fn parse(line: &str) -> Result<Command, String> {
        let w: Vec<&str> = line.split_whitespace().collect();
        let backend = |s: &str| {
            s.parse::<SocketAddrV4>()
                .map_err(|_| format!("{s:?} is not ADDR:PORT"))
        };
        match w.as_slice() {
            ["status"] => Ok(Command::Status),
            ["metrics"] => Ok(Command::Metrics),
            ["set-weight", s, b, n] => Ok(Command::SetWeight { service: s.to_string(), backend: backend(b)?, weight: n.parse().map_err(|_| format!("bad weight {n:?}"))? }),
            ["drain", s, b] => Ok(Command::SetWeight { service: s.to_string(), backend: backend(b)?, weight: 0 }),
            ["load-report", s, b, n] => Ok(Command::LoadReport { service: s.to_string(), backend: backend(b)?, load: n.parse::<u32>().map_err(|_| format!("bad load {n:?}"))?.min(100) }),
            _ => Err(format!("unknown command {line:?}; try: status | metrics | set-weight SERVICE BACKEND W | drain SERVICE BACKEND | load-report SERVICE BACKEND LOAD(0-100)")),
        }
    }
}

/// The decision core.
pub struct ManagerCore {
    cfg: Config,
    auth: AuthPolicy,
    seq: SequenceSource,
    pub services: Vec<Service>,
    // foldhash: keys come from the network (client addresses and ports), so
    // the hasher is seeded per process; SipHash cost a fifth of a flow setup.
    flows: FlowMap<AffinityKey, Flow>,
    rev: FlowMap<AffinityKey, AffinityKey>,
    closing: VecDeque<(u64, AffinityKey)>,
    replay: HashMap<Ipv4Addr, ReplayWindow>,
    pub agents: BTreeMap<SocketAddrV4, AgentSeen>,
    pub counters: BTreeMap<&'static str, u64>,
    next_wildcards: u64,
    next_renewal: u64,
}

fn flow_hash(k: &AffinityKey) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in u32::from(k.src_addr)
        .to_be_bytes()
        .into_iter()
        .chain(k.src_port.to_be_bytes())
        .chain([k.protocol])
    {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^ (h >> 31)
}

fn in_prefix(a: Ipv4Addr, (net, mask): (Ipv4Addr, Ipv4Addr)) -> bool {
    u32::from(a) & u32::from(mask) == u32::from(net)
}

/// The 5-tuple and TCP flags of an IPv4 packet (for IP-packet-only messages).
fn packet_key(p: &[u8]) -> Option<(AffinityKey, u8)> {
    let ihl = (*p.first()? & 0x0f) as usize * 4;
    if p[0] >> 4 != 4 || ihl < 20 || p.len() < ihl + 4 {
        return None;
    }
    let a = |i: usize| Ipv4Addr::new(p[i], p[i + 1], p[i + 2], p[i + 3]);
    let port = |i: usize| u16::from_be_bytes([p[i], p[i + 1]]);
    let flags = if p[9] == 6 {
        p.get(ihl + 13).copied().unwrap_or(0)
    } else {
        0
    };
    Some((
        AffinityKey {
            protocol: p[9],
            src_addr: a(12),
            dst_addr: a(16),
            src_port: port(ihl),
            dst_port: port(ihl + 2),
        },
        flags,
    ))
}

impl ManagerCore {
    pub fn new(cfg: Config, now: u64) -> Self {
        let mut core = ManagerCore {
            auth: cfg.auth_policy(),
            seq: SequenceSource::from_system_clock(),
            services: Vec::new(),
            flows: FlowMap::default(),
            rev: FlowMap::default(),
            closing: VecDeque::new(),
            replay: HashMap::new(),
            agents: BTreeMap::new(),
            counters: BTreeMap::new(),
            next_wildcards: now,
            next_renewal: now,
            cfg,
        };
        core.build_services();
        core
    }

    fn count(&mut self, name: &'static str) {
        *self.counters.entry(name).or_default() += 1;
    }

    fn build_services(&mut self) {
        let old: HashMap<String, Service> = self
            .services
            .drain(..)
            .map(|s| (s.cfg.name.clone(), s))
            .collect();
        let mut old = old;
        for (i, cfg) in self.cfg.services.iter().enumerate() {
            let prev = old.remove(&cfg.name);
            let backends = cfg
                .backends
                .iter()
                .map(|b| {
                    let kept = prev
                        .as_ref()
                        .and_then(|p| p.backends.iter().find(|o| o.addr == b.address));
                    Backend {
                        addr: b.address,
                        weight: b.weight,
                        feedback_weight: kept.and_then(|k| k.feedback_weight),
                        healthy: kept.is_none_or(|k| k.healthy),
                        ok_streak: 0,
                        fail_streak: 0,
                        active: kept.map_or(0, |k| k.active),
                        total: kept.map_or(0, |k| k.total),
                    }
                })
                .collect();
            let snat = cfg
                .snat
                .as_ref()
                .and_then(|n| parse_port_range(&n.ports).map(|(lo, hi)| PortPool::new(lo, hi)));
            let snat = match (prev.as_ref().and_then(|p| p.snat.clone()), snat) {
                (Some(p), Some(n)) if p.range() == n.range() => Some(p),
                (_, n) => n,
            };
            self.services.push(Service {
                name: Arc::from(cfg.name.as_str()),
                cands: Vec::new(),
                domain: cfg.domain(),
                id_base: (i as u32 + 1) << 16,
                names: cfg
                    .backends
                    .iter()
                    .map(|b| b.address.to_string().into_bytes())
                    .collect(),
                selector: Selector::new(cfg.algorithm),
                advertise: cfg.advertise
                    && prev
                        .as_ref()
                        .is_none_or(|p| p.advertise || !p.cfg.advertise),
                backends,
                snat,
                cfg: cfg.clone(),
            });
        }
    }

    fn builder(&mut self, t: MessageType) -> MessageBuilder {
        let seq = self.seq.next();
        let mut b = match self.auth.keys.signing_key() {
            Some(k) => MessageBuilder::signed(t, seq, k),
            None => MessageBuilder::new(t, seq),
        };
        b.push(Segment::IdentityInfo(IdentityInfo {
            address: *self.cfg.manager.listen.ip(),
            host_name: &self.cfg.manager.name,
        }));
        b
    }

    /// Where wildcard updates go: the multicast group and unicast agents.
    fn wildcard_destinations(&self) -> Vec<SocketAddrV4> {
        let mut d: Vec<SocketAddrV4> = self.cfg.agents.unicast.clone();
        if let Some(g) = self.cfg.agents.multicast_group {
            d.push(SocketAddrV4::new(g, AGENT_PORT));
        }
        d
    }

    fn interest(&self, mask: u16, flags: u8) -> InterestCriteria {
        InterestCriteria {
            address: *self.cfg.manager.listen.ip(),
            port: self.cfg.manager.listen.port(),
            mask,
            flags,
        }
    }

    /// One wildcard update per service (forward + one reverse per backend).
    fn wildcard_messages(&mut self, ttl: u32) -> Vec<Vec<u8>> {
        let mut msgs = Vec::new();
        for si in 0..self.services.len() {
            let s = &self.services[si];
            let proto = s.cfg.protocol_number();
            let domain = s.domain;
            let vip = s.cfg.virtual_addr;
            let sp = ServicePrecedence {
                search_first: false,
                value: s.cfg.service_precedence,
            };
            let bp = BackupPrecedence {
                value: s.cfg.backup_precedence,
            };
            let punt = self.interest(interest::ALL, InterestCriteria::DATA);
            let advertise = s.advertise;
            let (dst_rev, dst_rev_mask) = match &s.cfg.snat {
                Some(n) => (n.address, Ipv4Addr::BROADCAST),
                None => domain,
            };
            let id_base = s.id_base;
            let backends: Vec<SocketAddrV4> = s.backends.iter().map(|b| b.addr).collect();
            let mut required = vec![(seg::INTEREST_CRITERIA_ACTION, true)];
            if advertise {
                required.push((seg::ADVERTISE_ACTION, true));
            }
            let list = encode_action_list(&required);
            let rev_list = encode_action_list(&[(seg::INTEREST_CRITERIA_ACTION, true)]);
            let mut b = self.builder(MessageType::AffinityUpdateWildcard);
            b.push(Segment::ServicePrecedence(sp));
            b.push(Segment::BackupPrecedence(bp));
            b.push(Segment::InterestCriteria(punt));
            b.push(Segment::WildcardAffinity(WildcardAffinity {
                key: AffinityKey {
                    protocol: proto,
                    src_addr: domain.0,
                    dst_addr: *vip.ip(),
                    src_port: 0,
                    dst_port: vip.port(),
                },
                src_mask: domain.1,
                dst_mask: Ipv4Addr::BROADCAST,
                dispatch_flags: 0,
                info_flags: 0,
                forward_addr: Ipv4Addr::UNSPECIFIED,
                ttl,
            }));
            b.push(Segment::AffinityIdentifier(AffinityIdentifier {
                id: id_base,
                reason: 0,
            }));
            b.push(Segment::ActionList(ActionList::from_raw(&list).unwrap_or(
                ActionList::from_raw(&[]).expect("empty list is valid"),
            )));
            if advertise {
                b.push(Segment::AdvertiseAction(AdvertiseAction {
                    address: *vip.ip(),
                    mask: None,
                }));
            }
            for (i, be) in backends.iter().enumerate() {
                b.push(Segment::WildcardAffinity(WildcardAffinity {
                    key: AffinityKey {
                        protocol: proto,
                        src_addr: *be.ip(),
                        dst_addr: dst_rev,
                        src_port: be.port(),
                        dst_port: 0,
                    },
                    src_mask: Ipv4Addr::BROADCAST,
                    dst_mask: dst_rev_mask,
                    dispatch_flags: 0,
                    info_flags: 0,
                    forward_addr: Ipv4Addr::UNSPECIFIED,
                    ttl,
                }));
                b.push(Segment::AffinityIdentifier(AffinityIdentifier {
                    id: id_base + 1 + i as u32,
                    reason: 0,
                }));
                if let Some(l) = ActionList::from_raw(&rev_list) {
                    b.push(Segment::ActionList(l));
                }
            }
            if let Ok(m) = b.finish() {
                msgs.push(m);
            }
        }
        msgs
    }

    fn send_wildcards(&mut self, ttl: u32, out: &mut Vec<Outgoing>) {
        let dests = self.wildcard_destinations();
        for m in self.wildcard_messages(ttl) {
            for d in &dests {
                out.push((*d, m.clone()));
            }
            self.count("wildcard-updates-sent");
        }
    }

    /// The two fixed affinities of a flow, appended to `b`.
    fn push_flow(b: &mut MessageBuilder, f: &Flow, ttl: u32, tracking: InterestCriteria) {
        let fwd_nat = match f.snat {
            Some(s) => NatAction {
                flags: 0x0f,
                src_addr: *s.ip(),
                src_port: s.port(),
                dst_addr: *f.backend.ip(),
                dst_port: f.backend.port(),
            },
            None => NatAction {
                flags: NatAction::DST_ADDR | NatAction::DST_PORT,
                dst_addr: *f.backend.ip(),
                dst_port: f.backend.port(),
                ..Default::default()
            },
        };
        let rev_nat = match f.snat {
            Some(_) => NatAction {
                flags: 0x0f,
                src_addr: *f.vip.ip(),
                src_port: f.vip.port(),
                dst_addr: f.fwd.src_addr,
                dst_port: f.fwd.src_port,
            },
            None => NatAction {
                flags: NatAction::SRC_ADDR | NatAction::SRC_PORT,
                src_addr: *f.vip.ip(),
                src_port: f.vip.port(),
                ..Default::default()
            },
        };
        for (key, nat) in [(f.fwd, fwd_nat), (f.rev, rev_nat)] {
            b.push(Segment::FixedAffinity(FixedAffinity {
                key,
                ttl,
                ..Default::default()
            }));
            b.push(Segment::NatAction(nat));
            if ttl > 0 && f.fwd.protocol == 6 {
                b.push(Segment::InterestCriteria(tracking));
            }
        }
    }

    fn flow_message(
        &mut self,
        f: &Flow,
        ttl: u32,
        echo: Option<&[u8]>,
        packet: Option<&[u8]>,
    ) -> Option<Vec<u8>> {
        let tracking = self.interest(interest::FIN | interest::RST, InterestCriteria::COPY);
        let mut b = self.builder(MessageType::AffinityUpdateFixed);
        if let Some(e) = echo {
            b.push(Segment::FaInterestData(e));
        }
        Self::push_flow(&mut b, f, ttl, tracking);
        if let Some(p) = packet {
            b.push(Segment::IpPacket(p));
        }
        b.finish().ok()
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
        if let Err(e) = self.auth.verify(&msg, now / SEC) {
            self.count("rx-auth-failed");
            tracing::debug!(%from, error = %e, "authentication failed");
            return out;
        }
        if msg.security().is_some()
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
                let reason = e.identifier.map_or(0, |i| i.reason);
                let tracking = msg.msg_type() == MessageType::InterestMatchFixed;
                self.on_interest(
                    now,
                    from,
                    f.key,
                    reason,
                    tracking,
                    msg.fa_interest_data(),
                    msg.ip_packet(),
                    &mut out,
                );
            }
            MessageType::IpPacketOnly => {
                self.count("rx-ip-packet-only");
                if let Some((key, flags)) = msg.ip_packet().and_then(packet_key) {
                    let reason = flags as u16 & 0x3f | interest::ALL;
                    self.on_interest(
                        now,
                        from,
                        key,
                        reason,
                        false,
                        msg.fa_interest_data(),
                        msg.ip_packet(),
                        &mut out,
                    );
                }
            }
            MessageType::AffinityUpdateDeny => self.on_deny(now, from, &msg, &mut out),
            MessageType::AgentHello | MessageType::Keepalive => self.count("rx-hello"),
            _ => self.count("rx-unexpected-type"),
        }
        out
    }

    fn on_deny(
        &mut self,
        _now: u64,
        from: SocketAddrV4,
        msg: &ServiceMessage<'_>,
        out: &mut Vec<Outgoing>,
    ) {
        self.count("rx-deny");
        if let Some(a) = self.agents.get_mut(&from) {
            a.denies += 1;
        }
        let Some(r) = msg.deny_reason() else { return };
        tracing::info!(%from, code = r.code, denied_type = r.denied_type, "agent denied an update");
        match r.code {
            DenyReason::UNSUPPORTED_REQUIRED_ACTION => {
                self.count("deny-unsupported-action");
                if r.denied_type == seg::ADVERTISE_ACTION {
                    let id = msg
                        .affinities()
                        .next()
                        .and_then(|e| e.identifier)
                        .map(|i| i.id);
                    let mut changed = false;
                    for s in &mut self.services {
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
                for m in self.wildcard_messages(ttl) {
                    out.push((SocketAddrV4::new(*from.ip(), AGENT_PORT), m));
                }
            }
            DenyReason::TABLE_FULL => self.count("deny-table-full"),
            _ => self.count("deny-other"),
        }
    }

    fn find_service(&self, k: &AffinityKey) -> Option<usize> {
        self.services.iter().position(|s| {
            s.cfg.protocol_number() == k.protocol
                && *s.cfg.virtual_addr.ip() == k.dst_addr
                && s.cfg.virtual_addr.port() == k.dst_port
                && in_prefix(k.src_addr, s.domain)
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn on_interest(
        &mut self,
        now: u64,
        from: SocketAddrV4,
        key: AffinityKey,
        reason: u16,
        tracking: bool,
        echo: Option<&[u8]>,
        packet: Option<&[u8]>,
        out: &mut Vec<Outgoing>,
    ) {
        let fwd_key = if self.flows.contains_key(&key) {
            Some(key)
        } else {
            self.rev.get(&key).copied()
        };
        if let Some(fk) = fwd_key {
            let is_fwd = fk == key;
            if tracking {
                self.on_tracking(now, fk, is_fwd, reason);
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
                (self.sticky_ms(&f) / 1000).max(1) as u32
            } else {
                self.cfg.manager.fixed_ttl
            };
            if let Some(m) = self.flow_message(&f, ttl, echo, packet) {
                out.push((from, m));
                self.count("known-flow-installed");
            }
            return;
        }
        if tracking {
            self.count("tracking-unknown-flow");
            return;
        }
        let Some(si) = self.find_service(&key) else {
            self.count("interest-no-service");
            return;
        };
        let is_tcp = key.protocol == 6;
        let syn = reason & interest::SYN != 0 && reason & interest::ACK == 0;
        let consistent = self.services[si].selector.is_consistent();
        if is_tcp && !syn && !consistent {
            self.count("unknown-flow-dropped");
            return;
        }
        if is_tcp && !syn {
            self.count("flow-adopted");
        }
        let s = &mut self.services[si];
        s.cands.clear();
        s.cands.extend(s.backends.iter().map(|b| Candidate {
            weight: b.effective_weight(),
            active: b.active,
        }));
        let Some(bi) = s.selector.pick(&s.cands, &s.names, flow_hash(&key)) else {
            self.count("no-backend-available");
            tracing::warn!(service = %self.services[si].cfg.name, "no healthy backend with weight > 0");
            return;
        };
        let s = &mut self.services[si];
        let snat = match (&s.cfg.snat, &mut s.snat) {
            (Some(n), Some(pool)) => match pool.allocate() {
                Some(p) => Some(SocketAddrV4::new(n.address, p)),
                None => {
                    self.count("snat-ports-exhausted");
                    tracing::warn!(service = %self.services[si].cfg.name, "source NAT ports exhausted; new flow refused");
                    return;
                }
            },
            _ => None,
        };
        let backend = s.backends[bi].addr;
        s.backends[bi].active += 1;
        s.backends[bi].total += 1;
        let (rdst, rport) = snat.map_or((key.src_addr, key.src_port), |a| (*a.ip(), a.port()));
        let flow = Flow {
            service: s.name.clone(),
            fwd: key,
            rev: AffinityKey {
                protocol: key.protocol,
                src_addr: *backend.ip(),
                dst_addr: rdst,
                src_port: backend.port(),
                dst_port: rport,
            },
            vip: s.cfg.virtual_addr,
            backend,
            snat,
            agents: vec![from],
            fin_fwd: false,
            fin_rev: false,
            closed_at: None,
            created: now,
        };
        self.rev.insert(flow.rev, key);
        let ttl = self.cfg.manager.fixed_ttl;
        if let Some(m) = self.flow_message(&flow, ttl, echo, packet) {
            out.push((from, m));
        }
        self.flows.insert(key, flow);
        self.count("flows-created");
    }

    fn sticky_ms(&self, f: &Flow) -> u64 {
        self.services
            .iter()
            .find(|s| *s.name == *f.service)
            .map_or(5000, |s| s.cfg.sticky_timeout_ms)
    }

    fn on_tracking(&mut self, now: u64, fk: AffinityKey, is_fwd: bool, reason: u16) {
        let sticky = self
            .flows
            .get(&fk)
            .map(|f| self.sticky_ms(f))
            .unwrap_or(5000);
        let Some(f) = self.flows.get_mut(&fk) else {
            return;
        };
        if reason & interest::FIN != 0 {
            if is_fwd {
                f.fin_fwd = true;
            } else {
                f.fin_rev = true;
            }
        }
        let closed = reason & interest::RST != 0 || (f.fin_fwd && f.fin_rev);
        if closed && f.closed_at.is_none() {
            f.closed_at = Some(now);
            self.closing.push_back((now + sticky * 1_000_000, fk));
            self.count("flows-closed");
        }
    }

    fn release_flow(&mut self, f: &Flow) {
        self.rev.remove(&f.rev);
        if let Some(s) = self.services.iter_mut().find(|s| *s.name == *f.service) {
            if let Some(b) = s.backends.iter_mut().find(|b| b.addr == f.backend) {
                b.active = b.active.saturating_sub(1);
            }
            if let (Some(a), Some(pool)) = (f.snat, &mut s.snat) {
                pool.release(a.port());
            }
        }
    }

    /// Timers: wildcard refresh, fixed renewal, sticky expiry. Call often
    /// (every ~50 ms); it does work only when something is due.
    pub fn tick(&mut self, now: u64) -> Vec<Outgoing> {
        let mut out = Vec::new();
        if now >= self.next_wildcards {
            let ttl = self.cfg.manager.wildcard_ttl;
            self.send_wildcards(ttl, &mut out);
            self.next_wildcards = now + (ttl as u64 * SEC / 3).max(SEC / 10);
        }
        while self.closing.front().is_some_and(|(t, _)| *t <= now) {
            let Some((_, k)) = self.closing.pop_front() else {
                break;
            };
            if let Some(f) = self.flows.remove(&k) {
                self.release_flow(&f);
                if let Some(m) = self.flow_message(&f, 0, None, None) {
                    for a in &f.agents {
                        out.push((*a, m.clone()));
                    }
                }
                self.count("flows-deleted-after-sticky");
            }
        }
        if now >= self.next_renewal {
            self.renew(now, &mut out);
            self.next_renewal = now + self.cfg.manager.fixed_ttl as u64 * SEC / 3;
        }
        out
    }

    fn renew(&mut self, now: u64, out: &mut Vec<Outgoing>) {
        let lifetime = self.cfg.manager.flow_max_lifetime as u64 * SEC;
        let expired: Vec<AffinityKey> = self
            .flows
            .iter()
            .filter(|(_, f)| f.closed_at.is_none() && now.saturating_sub(f.created) > lifetime)
            .map(|(k, _)| *k)
            .collect();
        for k in expired {
            if let Some(f) = self.flows.remove(&k) {
                self.release_flow(&f);
                self.count("flows-expired-lifetime");
            }
        }
        let mut per_agent: HashMap<SocketAddrV4, Vec<AffinityKey>> = HashMap::new();
        for (k, f) in &self.flows {
            if f.closed_at.is_none() && now > f.created {
                for a in &f.agents {
                    per_agent.entry(*a).or_default().push(*k);
                }
            }
        }
        let ttl = self.cfg.manager.fixed_ttl;
        let tracking = self.interest(interest::FIN | interest::RST, InterestCriteria::COPY);
        for (agent, keys) in per_agent {
            for chunk in keys.chunks(FLOWS_PER_MESSAGE) {
                let mut b = self.builder(MessageType::AffinityUpdateFixed);
                for k in chunk {
                    if let Some(f) = self.flows.get(k) {
                        Self::push_flow(&mut b, f, ttl, tracking);
                    }
                }
                if let Ok(m) = b.finish() {
                    out.push((agent, m));
                    self.count("renewal-messages-sent");
                }
            }
        }
    }

    /// A health-check result for a backend.
    pub fn health(&mut self, service: &str, backend: SocketAddrV4, ok: bool) {
        let Some(s) = self.services.iter_mut().find(|s| s.cfg.name == service) else {
            return;
        };
        let (rise, fall) = s.cfg.health.as_ref().map_or((1, 1), |h| (h.rise, h.fall));
        let Some(b) = s.backends.iter_mut().find(|b| b.addr == backend) else {
            return;
        };
        if ok {
            b.ok_streak += 1;
            b.fail_streak = 0;
            if !b.healthy && b.ok_streak >= rise {
                b.healthy = true;
                tracing::info!(service, %backend, "backend healthy");
            }
        } else {
            b.fail_streak += 1;
            b.ok_streak = 0;
            if b.healthy && b.fail_streak >= fall {
                b.healthy = false;
                tracing::warn!(service, %backend, "backend unhealthy: no new flows");
                *self.counters.entry("backend-went-unhealthy").or_default() += 1;
            }
        }
    }

    /// Executes a control command; the text answer.
    pub fn command(&mut self, cmd: Command, now: u64) -> Result<String, String> {
        match cmd {
            Command::Status => Ok(self.status(now)),
            Command::Metrics => Ok(self.metrics()),
            Command::SetWeight {
                service,
                backend,
                weight,
            } => {
                let b = self.backend_mut(&service, backend)?;
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
                let b = self.backend_mut(&service, backend)?;
                // Feedback: spare capacity scales the configured weight.
                let w = (b.weight as u64 * (100 - load as u64)).div_ceil(100).max(1) as u32;
                b.feedback_weight = Some(if b.weight == 0 { 0 } else { w });
                Ok(format!(
                    "{service} {backend} load {load}% -> effective weight {}\n",
                    b.effective_weight()
                ))
            }
        }
    }

    fn backend_mut(
        &mut self,
        service: &str,
        backend: SocketAddrV4,
    ) -> Result<&mut Backend, String> {
        let s = self
            .services
            .iter_mut()
            .find(|s| s.cfg.name == service)
            .ok_or_else(|| format!("no service {service:?}"))?;
        s.backends
            .iter_mut()
            .find(|b| b.addr == backend)
            .ok_or_else(|| format!("service {service:?} has no backend {backend}"))
    }

    /// Reloads the configuration; established flows are kept.
    pub fn reload(&mut self, cfg: Config, now: u64) -> Vec<Outgoing> {
        let mut out = Vec::new();
        let old: Vec<(String, Vec<u32>)> = self
            .services
            .iter()
            .map(|s| (s.cfg.name.clone(), (0..s.backends.len() as u32).collect()))
            .collect();
        // Wildcards of removed services are deleted.
        let removed: Vec<usize> = old
            .iter()
            .enumerate()
            .filter(|(_, (n, _))| !cfg.services.iter().any(|s| &s.name == n))
            .map(|(i, _)| i)
            .collect();
        if !removed.is_empty() {
            let keep = std::mem::take(&mut self.services);
            let (gone, stay): (Vec<_>, Vec<_>) = keep
                .into_iter()
                .enumerate()
                .partition(|(i, _)| removed.contains(i));
            self.services = gone.into_iter().map(|(_, s)| s).collect();
            self.send_wildcards(0, &mut out);
            self.services = stay.into_iter().map(|(_, s)| s).collect();
        }
        self.auth = cfg.auth_policy();
        self.cfg = cfg;
        self.build_services();
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

    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    pub fn flow(&self, fwd: &AffinityKey) -> Option<&Flow> {
        self.flows.get(fwd)
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Human-readable status (`affinity-manager status`).
    pub fn status(&self, now: u64) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "manager {} on {} ({} flows)",
            self.cfg.manager.name,
            self.cfg.manager.listen,
            self.flows.len()
        );
        for svc in &self.services {
            let c = &svc.cfg;
            let _ = writeln!(
                s,
                "service {} {} {}/{} clients {} algorithm {:?} precedence {}/{}{}{}",
                c.name,
                c.protocol,
                c.virtual_addr.ip(),
                c.virtual_addr.port(),
                c.client_domain,
                c.algorithm,
                c.service_precedence,
                c.backup_precedence,
                c.snat.as_ref().map_or(String::new(), |n| format!(
                    " snat {} {}",
                    n.address, n.ports
                )),
                if svc.advertise { " advertise" } else { "" }
            );
            if let Some(p) = &svc.snat {
                let _ = writeln!(s, "  snat ports in use {} of {}", p.in_use(), p.size());
            }
            for b in &svc.backends {
                let _ = writeln!(
                    s,
                    "  backend {:<22} {:<9} weight {:>3} effective {:>3} active {:>6} total {:>8}",
                    b.addr,
                    if b.healthy { "healthy" } else { "UNHEALTHY" },
                    b.weight,
                    b.effective_weight(),
                    b.active,
                    b.total
                );
            }
        }
        for (a, info) in &self.agents {
            let _ = writeln!(
                s,
                "agent {:<22} {:<16} last heard {:.1}s ago, interest matches {}, denies {}",
                a,
                info.name,
                now.saturating_sub(info.last_heard) as f64 / 1e9,
                info.interest_matches,
                info.denies
            );
        }
        for (k, v) in &self.counters {
            let _ = writeln!(s, "counter {k} {v}");
        }
        s
    }

    /// Prometheus text exposition.
    pub fn metrics(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# TYPE affinity_manager_flows gauge\naffinity_manager_flows {}",
            self.flows.len()
        );
        let _ = writeln!(s, "# TYPE affinity_manager_backend_active_flows gauge");
        for svc in &self.services {
            for b in &svc.backends {
                let _ = writeln!(
                    s,
                    "affinity_manager_backend_active_flows{{service=\"{}\",backend=\"{}\"}} {}",
                    svc.cfg.name, b.addr, b.active
                );
            }
        }
        let _ = writeln!(s, "# TYPE affinity_manager_backend_healthy gauge");
        for svc in &self.services {
            for b in &svc.backends {
                let _ = writeln!(
                    s,
                    "affinity_manager_backend_healthy{{service=\"{}\",backend=\"{}\"}} {}",
                    svc.cfg.name, b.addr, b.healthy as u8
                );
            }
        }
        let _ = writeln!(s, "# TYPE affinity_manager_events_total counter");
        for (k, v) in &self.counters {
            let _ = writeln!(s, "affinity_manager_events_total{{event=\"{k}\"}} {v}");
        }
        s
    }
}
