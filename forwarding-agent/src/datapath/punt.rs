//! Packet path, step 4: interest matches. A copy goes out of line and the
//! packet carries on; a punt becomes a service message written into the
//! packet's own headroom (out of line when there is no room); a hold keeps
//! the packet in [`crate::hold`] and sends the manager the match.
//!
//! Everything here reads the batch's snapshots ([`super::BatchCtx`]): the
//! manager address and signing key come from `Published`, not from locks.

use super::act::Hit;
use super::{BatchCtx, Disposition, PacketBuf, Worker};
use crate::actions::ActionView;
use crate::counters::Counter;
use crate::interest_data::ForwardingAgentInterestData;
use crate::synproxy::SynProxyState;
use affinity_api::{
    emit_prefix, prefix_len, AffinityIdentifier, FixedAffinity, IdentityInfo, InterestCriteria,
    MessageType, Segment, MANAGER_PORT,
};
use std::net::{Ipv4Addr, SocketAddrV4};

/// The rank reported for a fixed affinity's punt (below every wildcard).
const FIXED_RANK: (bool, u16) = (true, u16::MAX);

/// Longest agent interest data: the 16 bytes, then a proxied connection's state.
const INTEREST_MAX: usize = ForwardingAgentInterestData::LEN + SynProxyState::LEN;

/// The agent interest data of one match, on the stack.
struct InterestBytes {
    buf: [u8; INTEREST_MAX],
    len: usize,
}

impl std::ops::Deref for InterestBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Worker {
    /// Where the match goes: the interest criteria's address and port, or
    /// else the owning manager at [`MANAGER_PORT`].
    pub(super) fn destination(&self, ctx: &BatchCtx<'_>, a: &ActionView) -> SocketAddrV4 {
        let c = a.interest().unwrap_or_default();
        let addr = if c.address == 0 {
            ctx.published
                .managers
                .get(a.owner() as usize)
                .copied()
                .unwrap_or(Ipv4Addr::UNSPECIFIED)
        } else {
            c.address()
        };
        SocketAddrV4::new(addr, if c.port == 0 { MANAGER_PORT } else { c.port })
    }

    fn interest_data(&self, hit: &Hit<'_>, token: u32) -> InterestBytes {
        let (rank, id) = hit.wildcard.map_or((FIXED_RANK, 0), |w| (w.rank(), w.id));
        let d =
            ForwardingAgentInterestData::for_rank(self.agent.config.instance_id, token, rank, id);
        let mut out = InterestBytes {
            buf: [0; INTEREST_MAX],
            len: ForwardingAgentInterestData::LEN,
        };
        out.buf[..ForwardingAgentInterestData::LEN].copy_from_slice(&d.encode());
        // A proved SYN-proxy ACK: the connection's state follows, for the
        // manager to echo in its fixed update.
        if let Some(s) = &self.proxied {
            out.buf[out.len..].copy_from_slice(&s.encode());
            out.len = INTEREST_MAX;
        }
        out
    }

    fn message_type(hit: &Hit<'_>) -> MessageType {
        if hit.wildcard.is_some() {
            MessageType::InterestMatchWildcard
        } else {
            MessageType::InterestMatchFixed
        }
    }

    /// The segments of an interest match before identity and packet:
    /// affinity identifier, fixed affinity, the affinity's manager interest
    /// data when it has any (`smd`, seed FIG 10C), this agent's interest
    /// data. The second value is how many of the four are used.
    fn match_segments<'s>(
        hit: &Hit<'_>,
        smd: Option<&'s [u8]>,
        data: &'s [u8],
    ) -> ([Segment<'s>; 4], usize) {
        let id = Segment::AffinityIdentifier(AffinityIdentifier {
            id: hit.actions.affinity_id(),
            reason: hit.bits,
        });
        // The affinity's own dispatch and information flags (seed FIG
        // 9D), the packet's key as received, TTL 0.
        let fixed = Segment::FixedAffinity(FixedAffinity {
            key: hit.info.key,
            dispatch_flags: hit.actions.dispatch_flags(),
            info_flags: hit.actions.info_flags(),
            ..Default::default()
        });
        let fa = Segment::FaInterestData(data);
        match smd {
            Some(d) => ([id, fixed, Segment::SmInterestData(d), fa], 4),
            None => ([id, fixed, fa, fa], 3),
        }
    }

    /// The affinity's manager interest data, if it has any.
    fn manager_data(&self, hit: &Hit<'_>) -> Option<std::sync::Arc<[u8]>> {
        match hit.actions.manager_data() {
            0 => None,
            id => self.agent.manager_data.get(id),
        }
    }

    /// An out-of-line interest match (with the packet, if given).
    fn build_match(
        &self,
        ctx: &BatchCtx<'_>,
        hit: &Hit<'_>,
        data: &[u8],
        packet: Option<&[u8]>,
    ) -> Option<Vec<u8>> {
        let mut b = self
            .agent
            .builder_with(Self::message_type(hit), ctx.published);
        let smd = self.manager_data(hit);
        let (segs, n) = Self::match_segments(hit, smd.as_deref(), data);
        for s in &segs[..n] {
            b.push(*s);
        }
        if let Some(pkt) = packet {
            b.push(Segment::IpPacket(pkt));
        }
        b.finish().ok()
    }

    /// The packet up to its IPv4 total length (link padding left out).
    fn ip_packet<'p>(p: &'p mut PacketBuf<'_>, hit: &Hit<'_>) -> &'p [u8] {
        p.packet().get(..hit.info.total_len).unwrap_or_default()
    }

    /// A packet about to leave the data path in a form that no longer
    /// carries its buffer's checksum-offload request (a service message, a
    /// held copy sent later as a new buffer) gets its TCP/UDP checksum
    /// computed in full first: left partial, it reached the manager, and
    /// came back from it or from the hold queue, with a checksum the
    /// backend drops (every SYN-proxied request waited for a
    /// retransmission on VPP, whose af_packet input marks a local sender's
    /// packets partial).
    #[cold]
    fn complete_partial(p: &mut PacketBuf<'_>) {
        crate::wire::checksum::complete_l4(p.packet());
        p.l4_partial = false;
    }

    /// Sends the manager a copy of the match; the packet carries on.
    pub(super) fn send_copy(&mut self, ctx: &BatchCtx<'_>, p: &mut PacketBuf<'_>, hit: &Hit<'_>) {
        let data = self.interest_data(hit, 0);
        let with_packet = hit
            .actions
            .interest()
            .is_some_and(|c| c.flags & InterestCriteria::DATA != 0);
        if with_packet && p.l4_partial {
            // The copy must be whole; the packet itself goes on complete
            // too (a full checksum is valid where a partial one was).
            Self::complete_partial(p);
        }
        let pkt = if with_packet {
            Some(Self::ip_packet(p, hit))
        } else {
            None
        };
        if let Some(m) = self.build_match(ctx, hit, &data, pkt) {
            self.messages.push((self.destination(ctx, hit.actions), m));
            self.counters.inc(Counter::InterestCopy);
        }
    }

    /// Punts (or holds) the packet: the manager decides its fate.
    pub(super) fn punt(
        &mut self,
        ctx: &BatchCtx<'_>,
        p: &mut PacketBuf<'_>,
        hit: &Hit<'_>,
    ) -> Disposition {
        let to = self.destination(ctx, hit.actions);
        let c = hit.actions.interest().unwrap_or_default();
        let with_packet = c.flags & InterestCriteria::DATA != 0;
        if p.l4_partial {
            // Held, copied or punted in place, it leaves without its
            // offload request.
            Self::complete_partial(p);
        }
        if c.flags & InterestCriteria::HOLD != 0 {
            let deadline = ctx.now_ns + self.agent.config.hold_timeout_ms * 1_000_000;
            let rank = hit.wildcard.map_or(FIXED_RANK, |w| w.rank());
            let held = self
                .agent
                .hold
                .hold(Self::ip_packet(p, hit), deadline, to, rank);
            if let Some(token) = held {
                let data = self.interest_data(hit, token);
                let pkt = if with_packet {
                    Some(Self::ip_packet(p, hit))
                } else {
                    None
                };
                if let Some(m) = self.build_match(ctx, hit, &data, pkt) {
                    self.messages.push((to, m));
                }
                self.counters.inc(Counter::Held);
                return Disposition::Consumed(Counter::Held);
            }
            self.counters.inc(Counter::HoldOverflow);
        }
        // Not held (no HOLD flag, or the queue is full): the packet goes to
        // the manager in the match whatever the DATA flag says, since the
        // agent keeps no copy and the manager must return it (seed, hold
        // flag; DATA only decides for copies and holds).
        let data = self.interest_data(hit, 0);
        // In place: the service message goes into the headroom in front of
        // the packet, which becomes its last segment.
        let key = ctx.published.signing_key.as_ref();
        let smd = self.manager_data(hit);
        let (segs, n) = Self::match_segments(hit, smd.as_deref(), &data);
        let identity = Segment::IdentityInfo(IdentityInfo {
            address: self.agent.config.agent_addr,
            host_name: &self.agent.config.agent_name,
        });
        let mut all = [identity; 5];
        all[..n].copy_from_slice(&segs[..n]);
        let all = &all[..n + 1];
        let need = prefix_len(key, all);
        // Link padding past the IP total length is not part of the punt.
        p.len = p.len.min(hit.info.total_len);
        if need <= p.start {
            let new_start = p.start - need;
            let seq = self.agent.next_sequence();
            let t = Self::message_type(hit);
            if emit_prefix(&mut p.buf[new_start..p.start], t, seq, key, all, p.len).is_ok() {
                if let Some(k) = key {
                    let end = p.start + p.len;
                    k.sign_in_place(&mut p.buf[new_start..end]);
                }
                self.counters.inc(Counter::Punted);
                return Disposition::Punt {
                    to,
                    start: new_start,
                };
            }
        }
        let pkt = p.packet().to_vec();
        match self.build_match(ctx, hit, &data, Some(&pkt)) {
            Some(m) => {
                self.messages.push((to, m));
                self.counters.inc(Counter::Punted);
                self.counters.inc(Counter::PuntCopiedOut);
                Disposition::Consumed(Counter::PuntCopiedOut)
            }
            None => {
                self.counters.inc(Counter::PuntFailed);
                Disposition::Drop(Counter::PuntFailed)
            }
        }
    }
}
