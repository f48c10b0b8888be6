//! Time: wildcard refreshes, renewals of active flows, idle and lifetime
//! expiry, sticky deletion, and `poll_timeout` (when `tick` is next due).

use super::messages;
use super::{
    Flow, FlowState, ManagerCore, Outgoing, Timeouts, AGENT_EXPIRY, MIN_WILDCARD_REFRESH, SEC,
};
use affinity_api::AffinityKey;

impl ManagerCore {
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
            self.routability_tick(now, &mut out);
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
    pub(super) fn timeouts(&self) -> Timeouts {
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
    pub(super) fn renew(&mut self, now: u64, out: &mut Vec<Outgoing>) {
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
            self.send_renewals(agent, &keys, ttl, out);
        }
    }

    /// Renews `keys` on `agent` for `ttl` seconds: renewal messages sized
    /// by bytes (a spliced flow carries its sequence and timestamp
    /// adjusts, `messages::renewal_chunks`).
    pub(super) fn send_renewals(
        &mut self,
        agent: std::net::SocketAddrV4,
        keys: &[AffinityKey],
        ttl: u32,
        out: &mut Vec<Outgoing>,
    ) {
        let flows = &self.flows;
        let spliced = |k: &AffinityKey| {
            flows
                .get(k)
                .is_some_and(|f| f.splice_fwd.is_some() || f.splice_rev.is_some())
        };
        for chunk in messages::renewal_chunks(keys, spliced) {
            let flows = chunk.iter().filter_map(|k| self.flows.get(k));
            if let Some(m) = self.messages.renewal(*agent.ip(), flows, ttl) {
                out.push((agent, m));
                self.count("renewal-messages-sent");
            }
        }
    }

    /// Ends the flows whose backend can no longer take them (removed by a
    /// reload, or unhealthy): UDP and ICMP always (their next packet is
    /// placed anew: moved within one renewal interval), TCP when the
    /// service has `expire_nodest_conn` (IPVS's sysctl of that name).
    pub(super) fn end_flows_without_backend(&mut self, out: &mut Vec<Outgoing>) {
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
}
