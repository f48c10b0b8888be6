//! What the manager knows of agents: hellos (capabilities, resync), denies
//! (unsupported actions, missed wildcards, stale sequences) and activity
//! reports (renewal by activity, keys in use elsewhere, traffic counts).

use super::flows::SpliceAdjust;
use super::messages;
use super::{
    action_name, FlowState, Handshake, ManagerCore, Outgoing, Service, MIN_WILDCARD_REFRESH, SEC,
};
use affinity_api::{
    activity, capability, seg, unix_now, AffinityKey, AffinityRef, DenyReason, Segment,
    SeqAdjustAction, ServiceMessage, TsAdjustAction, AGENT_PORT,
};
use std::net::SocketAddrV4;

impl ManagerCore {
    /// Records that agent `from` is not used for the services for which
    /// `lacks` returns a missing action (by type), with the reason.
    pub(super) fn refuse_services(
        &mut self,
        from: SocketAddrV4,
        lacks: impl Fn(&Service) -> Option<u16>,
    ) {
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
    /// services that need an action it lacks — never for a lacking action
    /// the service lists as optional (`optional_actions`): that one is
    /// dropped from the service when the agent denies it, and the service
    /// goes on without it. Before, a hello that came before that deny (a
    /// restarted agent hearing the manager: its hello and its deny race)
    /// stopped the service on the agent for good, and its clients' new
    /// connections timed out (the e2e `unsupported-action` flake).
    pub(super) fn on_hello(&mut self, from: SocketAddrV4, msg: &ServiceMessage<'_>) {
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
            messages::needed_actions(s).into_iter().find(|&t| {
                caps & (1u32 << t) == 0
                    && !(t == seg::ADVERTISE_ACTION && s.cfg.action_optional("advertise"))
            })
        });
    }

    pub(super) fn on_deny(
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
            if matches!(r.code, DenyReason::TABLE_FULL | DenyReason::QUOTA_EXCEEDED) {
                // The agent keeps refusing until the operator acts (its
                // table or its wildcard quota or pattern cap is full): the
                // service does not work through it.
                tracing::warn!(%from, code = r.code, denied_type = r.denied_type, "agent refused an update: its table or quota is full (deny-table-full / deny-quota-exceeded; logged at most once a second)");
            } else {
                tracing::info!(%from, code = r.code, denied_type = r.denied_type, "agent denied an update (logged at most once a second)");
            }
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
            DenyReason::QUOTA_EXCEEDED => self.count("deny-quota-exceeded"),
            _ => self.count("deny-other"),
        }
    }

    /// A deny (code 2) naming actions the agent cannot perform (the deny
    /// reason's type and its action list): the service it was about, found
    /// by the affinity identifier or the denied flow's key, no longer uses
    /// the agent, unless every such action is optional for it (advertise
    /// is then retried without, in `on_deny`).
    pub(super) fn refuse_denied(
        &mut self,
        from: SocketAddrV4,
        msg: &ServiceMessage<'_>,
        first: u16,
    ) {
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
    pub(super) fn resync_agent(
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
        self.send_renewals(from, &keys, ttl, out);
    }

    /// An agent's activity report (statistics report, type 19): each fixed
    /// affinity listed carried the packets of the statistics segment after
    /// it since the agent's previous report. Flows listed are active
    /// (their idle timer restarts); a report for an ended flow means the
    /// agent missed its deletion, which is sent again; a key that is not
    /// one of ours is another manager's, kept in the index of keys in use
    /// for the TTL the agent reported.
    pub(super) fn on_activity(
        &mut self,
        now: u64,
        from: SocketAddrV4,
        msg: &ServiceMessage<'_>,
        out: &mut Vec<Outgoing>,
    ) {
        // A splice report (pairs with adjusts, PROTOCOL.md "Splice
        // reports") is not an activity report: it must not tell the manager
        // this agent reports activity (flows on agents that never report
        // are not ended as idle).
        let splice = msg
            .segments()
            .any(|(s, _)| matches!(s, Segment::SeqAdjustAction(_) | Segment::TsAdjustAction(_)));
        if splice {
            self.count("rx-splice-report");
        } else {
            self.count("rx-activity-report");
            if let Some(a) = self.agents.get_mut(&from) {
                a.activity_reports += 1;
            }
        }
        // An agent that advertised handshake marks in its hello, or whose
        // pair says it tracks them (a manager restarted after the agent's
        // hello has only that), is judged by its marks, never its counts.
        let marks = self
            .agents
            .get(&from)
            .and_then(|a| a.capabilities)
            .is_some_and(|c| c & capability::HANDSHAKE_MARKS != 0);
        let mut current: Option<(AffinityKey, u32, u8)> = None;
        // The splice adjusts of the current pair (a splice report).
        let mut seq_adjust = None;
        let mut ts_adjust = None;
        let mut resend = Vec::new();
        let mut spliced: Vec<AffinityKey> = Vec::new();
        for (seg, _) in msg.segments() {
            match seg {
                Segment::FixedAffinity(f) => {
                    current = Some((f.key, f.ttl, f.activity_flags));
                    (seq_adjust, ts_adjust) = (None, None);
                }
                Segment::SeqAdjustAction(a) if current.is_some() => seq_adjust = Some(a),
                Segment::TsAdjustAction(a) if current.is_some() => ts_adjust = Some(a),
                Segment::Statistics(st) => {
                    let Some((key, ttl, flags)) = current.take() else {
                        continue;
                    };
                    if let Some(seq) = seq_adjust.take() {
                        let ts = ts_adjust.take();
                        if let Some(fk) = self.note_splice(from, key, seq, ts) {
                            if !spliced.contains(&fk) {
                                spliced.push(fk);
                            }
                        }
                        if st.packets == 0 {
                            // A splice report's pair: no traffic to note.
                            continue;
                        }
                    }
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
                    let handshake = if marks || flags & activity::TRACKED != 0 {
                        Handshake::Tracked(flags & activity::HANDSHAKE_COMPLETE != 0)
                    } else {
                        Handshake::Untracked
                    };
                    f.note_activity(now, fk == key, st.packets, st.bytes, handshake);
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
        self.splice_installs(now, from, &spliced, out);
    }

    /// Notes the adjusts agent `from` reports it installed on fixed
    /// affinity `key` at a SYN proxy's splice (a splice report's pair) on
    /// the open flow `key` belongs to; that flow's forward key when they
    /// are new for it, or `None` (a repeat; not one of ours, ended or
    /// closed: nothing to carry them to; or `from` is not the agent whose
    /// SYN-proxy proof placed the flow, [`Flow::proved_by`], which is the
    /// only one that answered its SYN and splices it: another sender's
    /// report, or one for a flow no proof placed, is ignored,
    /// `syn-proxy-splice-report-ignored`, and cannot make the manager
    /// install adjusts on a connection that has none).
    fn note_splice(
        &mut self,
        from: SocketAddrV4,
        key: AffinityKey,
        seq: SeqAdjustAction,
        ts: Option<TsAdjustAction>,
    ) -> Option<AffinityKey> {
        let fk = self.flows.lookup(&key)?;
        let f = self.flows.get_mut(&fk)?;
        if !f.is_open() || !f.is_tcp() {
            return None;
        }
        // Only from the agent whose proof placed the connection: no other
        // answered its SYN, and a flow no proof placed has no splice (a
        // report for it would put adjusts on a plain connection).
        if f.proved_by != Some(from) || !f.agents.contains(&from) {
            self.count("syn-proxy-splice-report-ignored");
            return None;
        }
        let a = Some(SpliceAdjust { seq, ts });
        let slot = if fk == key {
            &mut f.splice_fwd
        } else {
            &mut f.splice_rev
        };
        // A repeat (the agent sends each report once more with its next
        // activity round) changes nothing and installs nothing again.
        let changed = *slot != a;
        *slot = a;
        self.count("syn-proxy-splices-reported");
        changed.then_some(fk)
    }

    /// After a splice report from `from`: the flows in `fwd` that other
    /// agents hold too (a reply crossed one before the adjusts were known,
    /// FIGURE 5) are installed again there, now with their adjusts, so the
    /// connection works on that path from the next packet.
    fn splice_installs(
        &mut self,
        now: u64,
        from: SocketAddrV4,
        fwd: &[AffinityKey],
        out: &mut Vec<Outgoing>,
    ) {
        for fk in fwd {
            let Some(f) = self.flows.get(fk) else {
                continue;
            };
            if !f.splice_known() {
                continue;
            }
            let others: Vec<SocketAddrV4> =
                f.agents.iter().copied().filter(|a| *a != from).collect();
            if others.is_empty() {
                continue;
            }
            self.install(now, fk, &others, None, None, out);
            self.count("syn-proxy-splice-installed-elsewhere");
        }
    }
}
