//! Packet path: the SYN proxy's hook on a wildcard match (the cookie logic
//! itself is in [`crate::synproxy`]). A wildcard whose admission action has
//! `SYN_PROXY` answers a SYN in place with a cookie SYN-ACK and sends its
//! manager nothing; a pure ACK carrying a valid cookie goes on as the flow's
//! first packet (an interest match with SYN|ACK, the proxied state after
//! the agent's interest data); anything else without a fixed affinity is
//! dropped.

use super::{BatchCtx, Disposition, PacketBuf, Worker};
use crate::counters::Counter;
use crate::synproxy::{self, SynProxyState};
use crate::wildcard_affinity::WildcardEntry;
use crate::wire::{self, tcp, PacketInfo};
use affinity_api::AdmissionAction;

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
                self.counters.inc(Counter::SynProxyProved);
                return Ok(s);
            }
        }
        self.counters.inc(Counter::SynProxyBadCookie);
        Err(Disposition::Drop(Counter::SynProxyBadCookie))
    }
}
