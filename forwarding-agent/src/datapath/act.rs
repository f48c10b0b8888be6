//! Packet path, step 3: act on the matched action set — count forward
//! statistics, hand interest matches to [`super::punt`], rewrite the packet
//! in place (NAT, then TCP sequence adjust; a partial checksum the NIC
//! completes is kept partial) and choose its next hop.

use super::lookup::Origin;
use super::{BatchCtx, Disposition, PacketBuf, Worker};
use crate::actions::ActionView;
use crate::counters::{Counter, LocalCounters};
use crate::synproxy::Early;
use crate::wildcard_affinity::WildcardEntry;
use crate::wire::{self, PacketInfo};
use affinity_api::{dispatch, info, InterestCriteria};
use std::net::Ipv4Addr;

/// A packet's match: what the look-up found, as acting needs it. Borrowed,
/// not copied: with the packet info and action set held by value the
/// fixed-affinity path measured 2–3 ns per packet slower (1k-flow bench,
/// alternating runs).
pub(super) struct Hit<'b> {
    pub info: &'b PacketInfo,
    pub actions: &'b ActionView,
    /// The packet's interest bits (`affinity_api::interest`); 0 for a fixed
    /// affinity without interest criteria (not worked out: nothing reads
    /// them).
    pub bits: u16,
    /// The wildcard that matched; `None` for a fixed affinity.
    pub wildcard: Option<&'b WildcardEntry>,
    pub origin: Origin,
    /// A returned packet met the wildcard that punted it (or one above):
    /// its rewrite and next hop apply, its interest criteria do not (seed:
    /// the action "is performed by the forwarding agent at that time").
    pub no_interest: bool,
}

impl Worker {
    /// Acts on `hit` (`#[inline]` for the reason given at `process_one`).
    #[inline]
    pub(super) fn act(
        &mut self,
        ctx: &BatchCtx<'_>,
        p: &mut PacketBuf<'_>,
        hit: &Hit<'_>,
    ) -> Disposition {
        let a = hit.actions;
        if a.info_flags() & info::STATISTICS != 0 {
            self.forward
                .add(Ipv4Addr::from(a.forward_addr()), hit.info.total_len as u64);
        }
        if let Some(c) = a.interest().filter(|_| !hit.no_interest) {
            // A returned packet is never punted again by the affinity that
            // punted it; on a fixed affinity only copies are sent for it.
            let repunt_ok = hit.wildcard.is_some()
                || hit.origin == Origin::Wire
                || c.flags & InterestCriteria::COPY != 0;
            // The packet's own bits are reported: a superset of those that
            // hit, so a manager sees e.g. SYN even when it asked for ALL.
            if c.mask & hit.bits != 0 && repunt_ok {
                // Admission control (wildcard matches only): a copy past
                // its budget is not sent, a punt past it is dropped.
                let admitted = match hit.wildcard {
                    Some(w) => self.admission.admit(w, hit.bits, ctx.now_ns),
                    None => Ok(()),
                };
                if let Err(reason) = admitted {
                    self.counters.inc(reason);
                    if c.flags & InterestCriteria::COPY == 0 {
                        return Disposition::Drop(reason);
                    }
                } else if c.flags & InterestCriteria::COPY != 0 {
                    self.send_copy(ctx, p, hit);
                } else {
                    return self.punt(ctx, p, hit);
                }
            }
        }
        // A client packet of a SYN-proxied flow proved but not spliced
        // yet (its request right behind the cookie ACK): a copy is held,
        // to go on adjusted right after the splice; past the bounds it is
        // dropped (the client retransmits). Unadjusted, its acknowledgment
        // is in the cookie's space and the backend would answer with a
        // reset. No lock for any other flow (the splice table's filter),
        // and never for SYNs (the backend SYN takes this path).
        if hit.wildcard.is_none()
            && hit.info.key.protocol == wire::TCP
            && hit.info.tcp_flags & wire::tcp::flags::SYN == 0
        {
            if let Some(d) = self.hold_early(ctx, p, hit.info) {
                return d;
            }
        }
        // Rewrite.
        let mut info = *hit.info;
        let partial = p.l4_partial;
        if let Some(n) = a.nat() {
            match wire::apply_nat_in_place(p.packet(), &mut info, &n.into(), partial) {
                Ok(()) => {
                    self.cur.nat = true;
                    self.counters.inc(Counter::NatApplied);
                }
                Err(_) => return self.malformed(ctx),
            }
        }
        // A backend's SYN-ACK for a SYN-proxied connection ends here.
        let synack = wire::tcp::flags::SYN | wire::tcp::flags::ACK;
        if info.tcp_flags & synack == synack
            && hit.wildcard.is_none()
            && ctx.agent.splice.any_pending()
        {
            if let Some(d) = self.splice(ctx, p, hit.info, &info) {
                return d;
            }
        }
        // A backend's RST refusing a SYN-proxied connection goes on to the
        // client in the cookie's sequence space.
        if info.tcp_flags & wire::tcp::flags::RST != 0
            && hit.wildcard.is_none()
            && ctx.agent.splice.any_pending()
        {
            self.refuse_pending(ctx, p, &info, partial);
        }
        if let Some(s) = a.seq_adjust() {
            if wire::apply_seq_adjust_offload(p.packet(), &info, &s.into(), partial).is_ok()
                && info.key.protocol == wire::TCP
            {
                self.counters.inc(Counter::SeqAdjusted);
            }
        }
        if let Some(t) = a.ts_adjust() {
            crate::synproxy::apply_ts_adjust(p.packet(), &info, t, partial);
        }
        self.next_hop(a)
    }

    /// [`crate::synproxy::SpliceTable::hold_early`] for a client packet on
    /// a fixed affinity: `None` when it goes on, else its disposition (held
    /// or dropped, counted).
    #[inline(always)]
    fn hold_early(
        &mut self,
        ctx: &BatchCtx<'_>,
        p: &mut PacketBuf<'_>,
        info: &PacketInfo,
    ) -> Option<Disposition> {
        let partial = p.l4_partial;
        let pkt = p.packet();
        let pkt = pkt.get(..info.total_len).unwrap_or(pkt);
        match ctx
            .agent
            .splice
            .hold_early(&info.key, pkt, partial, ctx.now_ns)
        {
            Early::Pass => None,
            Early::Held => {
                self.counters.inc(Counter::SynProxyEarlyDataHeld);
                Some(Disposition::Consumed(Counter::SynProxyEarlyDataHeld))
            }
            Early::Full => {
                self.counters.inc(Counter::SynProxyEarlyData);
                Some(Disposition::Drop(Counter::SynProxyEarlyData))
            }
        }
    }

    /// The next hop an action set gives: its forward address, or normal
    /// routing.
    #[inline(always)]
    pub(super) fn next_hop(&mut self, a: &ActionView) -> Disposition {
        let forward = (a.dispatch_flags() & dispatch::FORWARD != 0).then(|| a.forward_addr());
        let mut d = Disposition::Pass;
        self.dispatch(forward, &mut d);
        d
    }

    /// Writes into `out` the next hop of a forward address (host order;
    /// `None`: normal routing), counted: a forward address of 0 is
    /// dropped. Written in place for the common case's path
    /// (`FastState::fast_fixed` says why).
    #[inline(always)]
    pub(super) fn dispatch(&mut self, forward: Option<u32>, out: &mut Disposition) {
        dispatch_to(&mut self.counters, forward, out);
    }

    /// A packet whose headers could not be read or rewritten: dropped or
    /// passed as configured (`AgentConfig::drop_malformed`).
    pub(super) fn malformed(&mut self, ctx: &BatchCtx<'_>) -> Disposition {
        if ctx.agent.config.drop_malformed {
            self.counters.inc(Counter::DropMalformed);
            Disposition::Drop(Counter::DropMalformed)
        } else {
            self.counters.inc(Counter::MalformedPassed);
            Disposition::Pass
        }
    }
}

/// [`Worker::dispatch`] on the worker's counters alone (the common case's
/// path borrows them apart from the rest of the worker).
#[inline(always)]
pub(super) fn dispatch_to(
    counters: &mut LocalCounters,
    forward: Option<u32>,
    out: &mut Disposition,
) {
    match forward {
        None => *out = Disposition::Pass,
        Some(0) => {
            counters.inc(Counter::DropForwardZero);
            *out = Disposition::Drop(Counter::DropForwardZero);
        }
        Some(to) => {
            counters.inc(Counter::Forwarded);
            *out = Disposition::Forward(Ipv4Addr::from(to));
        }
    }
}
