//! Flow placement: an interest match places a new flow on a backend (or
//! finds its known flow, or reopens a closed one), installs both directions'
//! fixed affinities, and follows FIN/RST (connection tracking).

use super::flows::HalfOpenAdmit;
use super::services::Refusal;
use super::{Flow, FlowState, Interest, ManagerCore, Outgoing, SEC};
use crate::config::{HalfOpenPolicy, HALF_OPEN_MIN_AGE_NS};
use affinity_api::{interest, AffinityKey};
use affinity_forwarding_agent::wire;
use std::net::SocketAddrV4;

impl ManagerCore {
    /// The state a flow (re)starts in for a packet with interest `reason`
    /// bits: TCP SYN without ACK → SYN seen; other TCP → established
    /// (adopted mid-connection); UDP/ICMP → active.
    pub(super) fn start_state(key: &AffinityKey, reason: u16) -> FlowState {
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
    pub(super) fn install(
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
    pub(super) fn end_flow(
        &mut self,
        fwd: &AffinityKey,
        why: &'static str,
        out: &mut Vec<Outgoing>,
    ) {
        if let Some(f) = self.flows.end(fwd) {
            for a in &f.agents {
                if let Some(m) = self.messages.flow(*a.ip(), &f, 0, None, None) {
                    out.push((*a, m));
                }
            }
            self.count(why);
        }
    }

    /// Ends half-open flow `fwd` for a new one (`half_open_policy =
    /// "evict-oldest"`), as nat44-ed frees the oldest transitory session
    /// at its limit: its agents get TTL 0, and its keys and SNAT port are
    /// free at once (a flood's flows would otherwise hold them for a
    /// fixed TTL more, at the flood's rate). Counted as `half-open-evicted`.
    fn evict_half_open(&mut self, fwd: &AffinityKey, out: &mut Vec<Outgoing>) {
        self.end_flow(fwd, "half-open-evicted", out);
        if let Some(f) = self.flows.remove(fwd) {
            self.services.release(&f);
        }
    }

    /// After a reload: the half-open queues of removed services are
    /// forgotten, and an `evict-oldest` service with more half-open flows
    /// than a lowered `max_half_open_flows` has its oldest past it evicted
    /// (else each new SYN would evict one and the count never come down).
    pub(super) fn half_open_reconfigure(&mut self, out: &mut Vec<Outgoing>) {
        let limit = self.cfg.manager.max_half_open_flows as usize;
        let services = &self.cfg.services;
        let evict = self.flows.half_open_reconfigure(
            |name| services.iter().any(|s| s.name == name),
            |name| {
                services
                    .iter()
                    .find(|s| s.name == name)
                    .filter(|s| s.half_open_policy() == HalfOpenPolicy::EvictOldest)
                    .map(|_| limit)
            },
        );
        for k in evict {
            self.evict_half_open(&k, out);
        }
    }

    pub(super) fn on_interest(&mut self, now: u64, m: Interest<'_>, out: &mut Vec<Outgoing>) {
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
                let proxied = self.services.syn_proxy(&f.service);
                let Some(f) = self.flows.get_mut(&fk) else {
                    return;
                };
                let second_agent = !f.agents.contains(&from);
                if second_agent {
                    f.agents.push(from);
                }
                f.last_active = now;
                if reopen {
                    f.reopen(now, state, from);
                }
                let proof = proxied
                    && fk == key
                    && reason & interest::SYN != 0
                    && reason & interest::ACK != 0;
                if proof {
                    // The agent that proved it is the one that splices it
                    // (a reused 5-tuple's new connection, or a repeat).
                    f.proved_by = Some(from);
                }
                let f = f.clone();
                if reopen {
                    self.count("flows-reopened");
                }
                // A SYN proxy's proof of a flow already placed (the agent
                // punted it again after its reproof time without an answer:
                // a lost punt or answer, or this manager slow): answered as
                // any match of a known flow — the same backend and SNAT
                // port, nothing placed anew — and the agent, which knows the
                // connection by its cookie, starts no second backend SYN
                // (PROTOCOL.md, the SYN proxy).
                if proof {
                    self.count("syn-proxy-proof-repeated");
                }
                if second_agent && proxied && !f.splice_known() {
                    // The splice's adjusts are not known yet (the backend's
                    // SYN-ACK has not reached the proxying agent, or its
                    // splice report has not reached us): this agent gets
                    // the flow without them and this packet goes on
                    // unadjusted. Once the report comes, the flow is
                    // installed here again with them; a SYN-ACK that
                    // crosses another agent is never spliced at all
                    // (manager README, "SYN proxy and asymmetric paths").
                    self.count("syn-proxy-flow-on-second-agent");
                    if self.overload_log.allow(now) {
                        tracing::warn!(agent = %from, service = %f.service, "a SYN-proxied flow crosses a second agent before its splice is known: the backend's SYN-ACK must return through the agent that answered the SYN (counted as syn-proxy-flow-on-second-agent; logged at most once a second)");
                    }
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
        // A SYN proxy's proof (the client's cookie ACK, punted with SYN and
        // ACK set): a new connection whose backend has not answered yet, so
        // placed half-open like a SYN, not adopted as established (a dead
        // backend would otherwise pin it for the established timeout).
        let proof =
            is_tcp && s.cfg.syn_proxy && reason & interest::SYN != 0 && reason & interest::ACK != 0;
        let syn = proof || (reason & interest::SYN != 0 && reason & interest::ACK == 0);
        if is_tcp && !syn && !s.is_consistent() {
            self.count("unknown-flow-dropped");
            return;
        }
        // The half-open limit bounds what spoofed SYNs make the manager
        // keep; a proof proved its client's address, and the client holds a
        // completed handshake: refused, it would get no answer at all (a
        // server-first protocol's client would wait for ever). So proofs
        // are neither refused nor counted.
        if is_tcp && syn && !proof {
            let limit = self.cfg.manager.max_half_open_flows as usize;
            let policy = s.cfg.half_open_policy();
            let name = s.name.clone();
            match self
                .flows
                .half_open_admit(&name, now, limit, policy, HALF_OPEN_MIN_AGE_NS)
            {
                HalfOpenAdmit::Room => {}
                HalfOpenAdmit::Refuse => {
                    self.count("half-open-limit-refused");
                    if self.overload_log.allow(now) {
                        let why = match policy {
                            HalfOpenPolicy::Refuse => "half_open_policy refuse",
                            // More than the limit's SYNs a second.
                            HalfOpenPolicy::EvictOldest => "the oldest is younger than 1 s",
                        };
                        tracing::warn!(service = %name, limit, why, "half-open flows at max_half_open_flows: new SYNs refused (counted as half-open-limit-refused; logged at most once a second)");
                    }
                    return;
                }
                HalfOpenAdmit::Evict(old) => {
                    self.evict_half_open(&old, out);
                    if self.overload_log.allow(now) {
                        tracing::warn!(service = %name, limit, "half-open flows at max_half_open_flows: the oldest evicted for each new SYN (counted as half-open-evicted; logged at most once a second)");
                    }
                }
            }
        }
        // Looked up again: an eviction above needed the whole core.
        let Some(s) = self.services.serving(&key) else {
            return;
        };
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
        let mut flow = Flow::new(name.clone(), vip, key, to.placement, from, now);
        flow.proved_by = proof.then_some(from);
        flow.state = if proof {
            FlowState::SynSeen
        } else {
            Self::start_state(&key, reason)
        };
        let half_open = flow.state == FlowState::SynSeen;
        self.flows.insert(flow);
        if half_open && !proof && self.cfg.manager.max_half_open_flows > 0 {
            self.flows.note_half_open(&name, key, now);
        }
        self.install(now, &key, &[from], echo, packet, out);
        self.count("flows-created");
    }

    /// A tracked copy from a flow's fixed affinity: FIN/RST close it; a SYN
    /// (without ACK, client → virtual address) on a closing or closed flow
    /// reopens it on the same backend (RFC 793 TIME-WAIT reuse; nat44-ed
    /// does the same), renewed on every agent holding it.
    pub(super) fn on_tracking(
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
}
