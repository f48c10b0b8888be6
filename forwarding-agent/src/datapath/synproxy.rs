//! Packet path: the SYN proxy's hook on a wildcard match (the cookie logic
//! itself is in [`crate::synproxy`]). A wildcard whose admission action has
//! `SYN_PROXY` answers a SYN in place with a cookie SYN-ACK and sends its
//! manager nothing; a pure ACK carrying a valid cookie goes on as the flow's
//! first packet (an interest match with SYN|ACK, the proxied state after
//! the agent's interest data); anything else without a fixed affinity is
//! dropped.

use super::lookup::{Lookup, Origin};
use super::{BatchCtx, Disposition, PacketBuf, Worker};
use crate::actions::TsAdjustKey;
use crate::counters::Counter;
use crate::synproxy::{self, SynProxyState};
use crate::wildcard_affinity::WildcardEntry;
use crate::wire::{self, checksum, tcp, PacketInfo};
use affinity_api::AdmissionAction;
use affinity_api::MessageType;

/// Whether the SYN proxy handles `info` on wildcard `w` (a TCP packet with
/// ports, on a wildcard with the `SYN_PROXY` flag).
#[inline]
pub(super) fn applies(w: &WildcardEntry, info: &PacketInfo) -> bool {
    info.key.protocol == wire::TCP
        && info.fragment != wire::Fragment::Later
        && w.admission
            .is_some_and(|a| a.flags & AdmissionAction::SYN_PROXY != 0)
}

impl Worker {
    /// The SYN proxy's step for a packet of a proxied wildcard: `Err` with
    /// the packet's disposition when it ends here (a SYN answered, a bad
    /// cookie dropped), `Ok` with the proved connection's state for a valid
    /// cookie ACK, which then goes on to the interest match.
    pub(super) fn syn_proxy(
        &mut self,
        ctx: &BatchCtx<'_>,
        p: &mut PacketBuf<'_>,
        info: &PacketInfo,
    ) -> Result<SynProxyState, Disposition> {
        let f = info.tcp_flags;
        let (syn, ack) = (tcp::flags::SYN, tcp::flags::ACK);
        let other = tcp::flags::RST | tcp::flags::FIN;
        if f & (syn | ack | other) == syn {
            // Answered in place: the SYN-ACK goes back where the SYN came
            // from (`Pass`: normal routing toward the client).
            return match synproxy::answer_syn(p.packet(), info, &mut self.cookies, ctx.now_ns) {
                Some(len) => {
                    p.len = len;
                    self.counters.inc(Counter::SynProxyAnswered);
                    Err(Disposition::Pass)
                }
                None => {
                    self.counters.inc(Counter::SynProxyNoRoom);
                    Err(Disposition::Drop(Counter::SynProxyNoRoom))
                }
            };
        }
        if f & (syn | ack | other) == ack {
            if let Some(s) = synproxy::prove_ack(p.packet(), info, &mut self.cookies, ctx.now_ns) {
                return self.prove(ctx, p, info, s);
            }
        }
        self.counters.inc(Counter::SynProxyBadCookie);
        Err(Disposition::Drop(Counter::SynProxyBadCookie))
    }
}

impl Worker {
    /// A packet with a valid cookie (`state`) on flow `info.key`: `Ok` when
    /// it is the connection's proof (the first, or again after
    /// `synproxy::REPROVE_NS` without an answer), else the disposition of
    /// early data of a connection proved already — held for the splice,
    /// or dropped past the bounds. The client's request right behind its
    /// ACK carries the same cookie; before this, each proved the
    /// connection and the manager got two interest matches for it (half
    /// the connections in the lab trials, and two backend SYNs to a
    /// closed port). Checked and noted under one lock, so two packets in
    /// one batch, or on two workers, prove it once. From the proof on the
    /// manager's answer may install the flow before the control path makes
    /// it pending (`SpliceTable::holds_back`).
    fn prove(
        &mut self,
        ctx: &BatchCtx<'_>,
        p: &mut PacketBuf<'_>,
        info: &PacketInfo,
        state: SynProxyState,
    ) -> Result<SynProxyState, Disposition> {
        let deadline = ctx.now_ns.saturating_add(synproxy::PENDING_NS);
        let partial = p.l4_partial;
        let pkt = p.packet();
        let pkt = pkt.get(..info.total_len).unwrap_or(pkt);
        let cap = ctx.agent.config.hold_limit;
        match ctx
            .agent
            .splice
            .prove(info.key, pkt, partial, (ctx.now_ns, deadline, cap))
        {
            synproxy::Proving::First => {
                self.counters.inc(Counter::SynProxyProved);
                Ok(state)
            }
            synproxy::Proving::Again => {
                self.counters.inc(Counter::SynProxyProved);
                self.counters.inc(Counter::SynProxyReproved);
                Ok(state)
            }
            synproxy::Proving::Early(synproxy::Early::Held) => {
                self.counters.inc(Counter::SynProxyEarlyDataHeld);
                Err(Disposition::Consumed(Counter::SynProxyEarlyDataHeld))
            }
            synproxy::Proving::Early(_) => {
                self.counters.inc(Counter::SynProxyEarlyData);
                Err(Disposition::Drop(Counter::SynProxyEarlyData))
            }
        }
    }

    /// After a proof's interest match was acted on with disposition `d`:
    /// when it did not leave (dropped by admission control, or no punt
    /// could be built), the flow's next cookie packet proves it again at
    /// once rather than wait behind a proof the manager never got.
    pub(super) fn proof_sent(&self, ctx: &BatchCtx<'_>, info: &PacketInfo, d: Disposition) {
        if !matches!(d, Disposition::Punt { .. } | Disposition::Consumed(_)) {
            ctx.agent.splice.proof_not_sent(&info.key);
        }
    }
}

impl Worker {
    /// A backend's RST (`info`: after NAT, so client-bound) on a fixed
    /// affinity while SYN-proxied connections are pending: if it refuses
    /// one — its flow reversed is a pending client flow, and it
    /// acknowledges the client's ISN, as a reset answering the agent's SYN
    /// does (RFC 9293 section 3.10.7.1: ACK = SYN's sequence + 1, sequence
    /// 0) — the connection is given up (its held early data dropped,
    /// counted) and the RST goes on to the client with the sequence number
    /// the client expects, the cookie's ISN + 1 (the client is already
    /// synchronized, and accepts a reset only in its window, RFC 5961
    /// section 3.2), so its connection fails at once ("connection reset")
    /// instead of at its own timeout. The TCP checksum is updated
    /// incrementally (RFC 1624), left alone when partial (the sequence
    /// number is not in the pseudo-header). Anything else: unchanged.
    #[cold]
    #[inline(never)]
    pub(super) fn refuse_pending(
        &mut self,
        ctx: &BatchCtx<'_>,
        p: &mut PacketBuf<'_>,
        info: &PacketInfo,
        partial: bool,
    ) {
        let agent = ctx.agent;
        let client_flow = info.key.reversed();
        let Some(state) = agent.splice.pending_state(&client_flow, ctx.now_ns) else {
            return;
        };
        let Some(l4) = p.packet().get(info.l4_offset..info.total_len) else {
            return;
        };
        let ack = wire::get_u32(l4, tcp::field::ACK_NUM);
        if info.tcp_flags & tcp::flags::ACK == 0 || ack != state.client_isn.wrapping_add(1) {
            return;
        }
        let Some((_, held)) = agent.splice.take_pending(&client_flow, ctx.now_ns) else {
            return;
        };
        // A late answer to a repeated proof of this connection must not
        // open it again (a second SYN, a second refusal).
        agent.splice.note_refused(
            client_flow,
            state.cookie_isn,
            ctx.now_ns,
            agent.config.hold_limit,
        );
        self.counters
            .add(Counter::SynProxyEarlyData, held.len() as u64);
        self.counters.inc(Counter::SynProxyBackendRefused);
        let Some(l4) = p.packet().get_mut(info.l4_offset..info.total_len) else {
            return;
        };
        let old = wire::get_u32(l4, tcp::field::SEQ_NUM);
        let new = state.cookie_isn.wrapping_add(1);
        if !partial {
            let c = wire::get_u16(l4, tcp::field::CHECKSUM);
            let c = checksum::apply(c, checksum::delta32(old, new));
            wire::set_u16(l4, tcp::field::CHECKSUM, c);
        }
        wire::set_u32(l4, tcp::field::SEQ_NUM, new);
    }

    /// A SYN-ACK on a fixed affinity while SYN-proxied connections are
    /// pending: if it answers one (its flow reversed, after NAT, is a
    /// pending client flow, and it acknowledges the client's ISN), installs
    /// the sequence adjusts that join the halves on both fixed affinities,
    /// drops the SYN-ACK (the client had the agent's) and puts the client's
    /// kept ACK in its place, sent on through the now spliced flow — which
    /// acknowledges the backend's SYN-ACK. `None`: not a proxied one.
    /// `orig` is the SYN-ACK as received, `info` after NAT.
    pub(super) fn splice(
        &mut self,
        ctx: &BatchCtx<'_>,
        p: &mut PacketBuf<'_>,
        orig: &PacketInfo,
        info: &PacketInfo,
    ) -> Option<Disposition> {
        let agent = ctx.agent;
        let client_flow = info.key.reversed();
        // The adjusts go in before the connection stops being held back, so
        // a client packet another worker looks up meanwhile is either held
        // or already adjusted (the window left is between its look-up and
        // its hold check, not the whole installation).
        let state = agent.splice.pending_state(&client_flow, ctx.now_ns)?;
        let l4 = p.packet().get(info.l4_offset..info.total_len)?;
        let backend_isn = wire::get_u32(l4, tcp::field::SEQ_NUM);
        let ack = wire::get_u32(l4, tcp::field::ACK_NUM);
        if ack != state.client_isn.wrapping_add(1) {
            // Not the backend's answer to our SYN: the connection is given
            // up, with its early data.
            if let Some((_, held)) = agent.splice.take_pending(&client_flow, ctx.now_ns) {
                self.counters
                    .add(Counter::SynProxyEarlyData, held.len() as u64);
            }
            self.counters.inc(Counter::SynProxyBadCookie);
            return Some(Disposition::Drop(Counter::SynProxyBadCookie));
        }
        let (fwd, rev) = synproxy::splice_adjusts(state.cookie_isn, backend_isn);
        // Timestamps (when both sides use them): the client knows the
        // agent's TSval clock (its ACK echoed `ours`), the backend its own.
        let ours = state.timestamps.map(|(_, ecr)| ecr);
        let (fwd_ts, rev_ts) = match (ours, synproxy::tsval(p.packet(), info)) {
            (Some(ours), Some(theirs)) => (
                Some(TsAdjustKey {
                    delta: theirs.wrapping_sub(ours),
                    echo: true,
                }),
                Some(TsAdjustKey {
                    delta: ours.wrapping_sub(theirs),
                    echo: false,
                }),
            ),
            _ => (None, None),
        };
        // The splice report's pairs, and the first's actions (where the
        // report goes: where its interest matches go).
        let mut report: Vec<crate::activity::SplicePair> = Vec::with_capacity(2);
        let mut report_to = None;
        for (key, adj, ts) in [(client_flow, fwd, fwd_ts), (orig.key, rev, rev_ts)] {
            let Some((v, _)) = agent.fixed.lookup(&key) else {
                continue;
            };
            let mut actions = agent.actions.get(v.action);
            actions.seq_adjust = Some(adj.into());
            actions.ts_adjust = ts;
            // Whole seconds left, rounded up (table time is deciseconds).
            let ttl = v.expires_ds.saturating_sub(ctx.now).div_ceil(10);
            if agent
                .install_fixed_local(ctx.now_ns, key, &actions, ttl)
                .is_ok()
            {
                let installed = (adj.into(), ts);
                agent
                    .splice
                    .remember(key, installed, agent.config.fixed_capacity);
                report.push((key, ttl, adj, ts));
                report_to.get_or_insert_with(|| crate::actions::ActionView::from(&actions));
            }
        }
        // Another worker spliced it meanwhile (a duplicate SYN-ACK): this
        // one goes on as any packet of the flow (that worker reports it).
        let (pending, held) = agent.splice.take_pending(&client_flow, ctx.now_ns)?;
        self.counters.inc(Counter::SynProxySpliced);
        if let Some(to) = report_to {
            self.report_splice(ctx, &to, &report);
        }
        if !held.is_empty() {
            // Early data behind it: the ACK leaves first through the same
            // queue as the data, and the SYN-ACK's buffer is consumed, so
            // every agent sends them in the client's order. In the
            // SYN-ACK's buffer the ACK left after the queue on VPP (the
            // frame is enqueued once the node returns, released packets
            // from inside the call).
            self.counters.inc(Counter::Packets);
            self.release(ctx, pending.packet);
            for pkt in held {
                self.release(ctx, pkt);
                self.counters.inc(Counter::SynProxyEarlyDataReleased);
            }
            return Some(Disposition::Consumed(Counter::SynProxySpliced));
        }
        // The client's ACK takes the SYN-ACK's buffer, if it fits.
        let end = p.start + pending.packet.len();
        let d = match p.buf.get_mut(p.start..end) {
            Some(dst) => {
                dst.copy_from_slice(&pending.packet);
                p.len = pending.packet.len();
                let parsed = wire::parse_ipv4(p.packet());
                self.process_one_cold(ctx, p, &parsed, Lookup::Later, Origin::Wire)
            }
            None => {
                self.counters.inc(Counter::SynProxyAckNotReleased);
                Disposition::Consumed(Counter::SynProxyAckNotReleased)
            }
        };
        Some(d)
    }
}

impl Worker {
    /// Tells the flow's manager, at once, the adjusts a splice installed
    /// (PROTOCOL.md, "Splice reports"): a statistics report (type 19) with
    /// a zero summary statistics segment, then per affinity its fixed
    /// affinity segment (key, seconds left), sequence adjust (12),
    /// timestamp adjust (21, when timestamps are on) and a zero statistics
    /// segment. The manager puts them in every later install of the flow
    /// (a reply crossing another agent, FIGURE 5; the resynchronisation of
    /// a restarted agent). Sent from the worker, in the splice's batch:
    /// the first reply can cross another agent within a round trip. Sent
    /// where the interest matches of `actions` go (the first reported
    /// affinity's, the forward one's: its manager's listen socket), and
    /// once more, from the control thread, with the
    /// next periodic activity round (`Agent::activity_reports`). Cold: once
    /// per spliced connection.
    #[cold]
    #[inline(never)]
    fn report_splice(
        &mut self,
        ctx: &BatchCtx<'_>,
        actions: &crate::actions::ActionView,
        pairs: &[crate::activity::SplicePair],
    ) {
        let to = self.destination(ctx, actions);
        if to.ip().is_unspecified() {
            return;
        }
        let mut b = ctx
            .agent
            .builder_with(MessageType::StatisticsReport, ctx.published);
        crate::activity::push_splice_report(&mut b, pairs);
        if let Ok(m) = b.finish() {
            self.messages.push((to, m));
            self.counters.inc(Counter::SynProxySpliceReported);
            // Once more with the next periodic activity round.
            let keys: Vec<affinity_api::AffinityKey> = pairs.iter().map(|p| p.0).collect();
            ctx.agent
                .splice
                .note_reported(&keys, 2 * ctx.agent.config.hold_limit);
        }
    }
}

impl Worker {
    /// A 5-tuple reused while the old connection's fixed affinities (with
    /// the sequence adjust the SYN proxy installed) are still there, as
    /// Linux's SYNPROXY with conntrack treats it (every bare SYN answered
    /// by the proxy, a SYN on a closed tuple a new connection): a bare SYN
    /// on such a flow is answered with a new cookie instead of reaching the
    /// backend with the old adjust, and the ACK that proves it becomes an
    /// interest match of the proxy's wildcard, as a new connection's does;
    /// the manager's answer opens the backend connection again and its
    /// SYN-ACK installs the new adjusts. `None`: the packet goes on through
    /// the fixed affinity. Cheap for everything else: a flag test, and for
    /// an ACK a lock-free filter.
    #[inline(always)]
    pub(super) fn syn_proxy_reuse(
        &mut self,
        ctx: &BatchCtx<'_>,
        p: &mut PacketBuf<'_>,
        info: &PacketInfo,
        actions: &crate::actions::ActionView,
    ) -> Option<Disposition> {
        let f = info.tcp_flags
            & (tcp::flags::SYN | tcp::flags::ACK | tcp::flags::RST | tcp::flags::FIN);
        if f == tcp::flags::SYN && actions.seq_adjust().is_some() {
            return self.reuse_syn(ctx, p, info);
        }
        if f == tcp::flags::ACK
            && (ctx.agent.splice.may_reopen(&info.key) || ctx.agent.splice.may_be_proved(&info.key))
        {
            return self.reuse_ack(ctx, p, info);
        }
        None
    }

    /// The SYN proxy's wildcard for `info`, if one covers it.
    fn proxy_wildcard<'c>(
        ctx: &'c BatchCtx<'_>,
        info: &PacketInfo,
    ) -> Option<&'c crate::wildcard_affinity::Member> {
        ctx.wild
            .lookup(&info.key, true, ctx.now, |_| true)
            .filter(|w| applies(&w.entry, info))
    }

    #[cold]
    #[inline(never)]
    fn reuse_syn(
        &mut self,
        ctx: &BatchCtx<'_>,
        p: &mut PacketBuf<'_>,
        info: &PacketInfo,
    ) -> Option<Disposition> {
        // Only an adjust the proxy installed (a manager's own sequence
        // adjust is left alone), on a flow its wildcard still covers.
        ctx.agent.splice.installed(&info.key)?;
        Self::proxy_wildcard(ctx, info)?;
        let d = match synproxy::answer_syn(p.packet(), info, &mut self.cookies, ctx.now_ns) {
            Some(len) => {
                p.len = len;
                self.counters.inc(Counter::SynProxyAnswered);
                self.counters.inc(Counter::SynProxyReuseAnswered);
                let deadline = ctx.now_ns.saturating_add(synproxy::PENDING_NS);
                ctx.agent.splice.note_reopening(
                    info.key,
                    deadline,
                    ctx.now_ns,
                    ctx.agent.config.hold_limit,
                );
                Disposition::Pass
            }
            None => {
                self.counters.inc(Counter::SynProxyNoRoom);
                Disposition::Drop(Counter::SynProxyNoRoom)
            }
        };
        Some(d)
    }

    #[cold]
    #[inline(never)]
    fn reuse_ack(
        &mut self,
        ctx: &BatchCtx<'_>,
        p: &mut PacketBuf<'_>,
        info: &PacketInfo,
    ) -> Option<Disposition> {
        let agent = ctx.agent;
        // Reopening, or its new connection's proof unanswered past the
        // reproof time (the punt lost: the next cookie packet proves it
        // again, as on the wildcard).
        if !agent.splice.is_reopening(&info.key, ctx.now_ns)
            && !agent.splice.reprove_due(&info.key, ctx.now_ns)
        {
            return None;
        }
        // Not a cookie ACK (the old connection's last packets): goes on.
        let state = synproxy::prove_ack(p.packet(), info, &mut self.cookies, ctx.now_ns)?;
        // The old connection's own cookie (its pure ACK again, before any
        // data either way): not a new connection, goes on.
        let joined = agent.splice.installed(&info.key).map(|(adj, _)| adj.3);
        if joined == Some(state.cookie_isn.wrapping_add(1)) {
            return None;
        }
        let w = Self::proxy_wildcard(ctx, info)?;
        agent.splice.end_reopening(&info.key);
        if let Err(d) = self.prove(ctx, p, info, state) {
            return Some(d);
        }
        self.cur.matched = super::Matched::Wildcard { id: w.entry.id };
        self.cur.action = w.action;
        let mut bits = wire::interest_bits(info) | affinity_api::interest::ALL;
        bits |= affinity_api::interest::SYN;
        if bits & affinity_api::interest::DATA != 0 {
            bits |= affinity_api::interest::FIRST_DATA;
        }
        let actions = agent.actions.view(w.action);
        let hit = super::act::Hit {
            info,
            actions: &actions,
            bits,
            wildcard: Some(&w.entry),
            origin: Origin::Wire,
            no_interest: false,
        };
        self.proxied = Some(state);
        let d = self.act(ctx, p, &hit);
        self.proxied = None;
        self.proof_sent(ctx, info, d);
        Some(d)
    }
}
