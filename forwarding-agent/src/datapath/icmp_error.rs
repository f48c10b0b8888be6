//! Packet path, after a fixed-affinity miss: an ICMP error (destination
//! unreachable, time exceeded, parameter problem) about a tracked flow is
//! translated as part of that flow (RFC 5508 section 4, REQ-4) — the flow
//! of the quoted packet reversed, looked up in the fixed table — and sent
//! where the flow's packets go. Without such a flow the error goes on as
//! any packet (wildcards, then passed). Only errors that miss the fixed
//! table by their own key come here, so ordinary packets pay nothing.
//!
//! Errors are never punted to a manager (so nothing needs rate-limiting
//! toward one); an error whose quote does not parse is not translated.
//! The quoted TCP sequence numbers are not sequence-adjusted (Linux does
//! not either). The wire rewrite is [`crate::wire::icmp_error`].

use super::{BatchCtx, Disposition, Matched, PacketBuf, Worker};
use crate::counters::Counter;
use crate::wire::{self, PacketInfo};

impl Worker {
    /// Translates and dispatches `info` if it is an ICMP error about a live
    /// fixed affinity; `None` to carry on with the look-up.
    #[cold]
    #[inline(never)]
    pub(super) fn icmp_error(
        &mut self,
        ctx: &BatchCtx<'_>,
        p: &mut PacketBuf<'_>,
        info: &PacketInfo,
    ) -> Option<Disposition> {
        let q = wire::quoted_packet(p.packet(), info)?;
        let (v, slot) = ctx
            .agent
            .fixed
            .lookup(&q.reversed_key())
            .filter(|(v, _)| v.expires_ds > ctx.now)?;
        let a = ctx.agent.actions.view(v.action);
        if let Some(n) = a.nat() {
            wire::translate_icmp_error(p.packet(), info, &q, &n.into()).ok()?;
            self.cur.nat = true;
        }
        self.cur.matched = Matched::Fixed { slot };
        self.cur.action = v.action;
        self.counters.inc(Counter::IcmpErrorTranslated);
        Some(self.next_hop(&a))
    }
}
