//! Control path: the SYN proxy's part of a fixed update. When the manager
//! answers a proved cookie ACK (its fixed update echoes the agent interest
//! data with the proxied state, and returns the ACK), the agent does not
//! release the ACK: it keeps it pending and sends the backend a SYN with the
//! client's ISN and original options instead, through the flow's new fixed
//! affinity. The answer to a repeated proof of a connection still pending
//! (punted again after `synproxy::REPROVE_NS` without an answer) holds that
//! packet with the connection's early data; the answer to one the backend
//! already refused starts nothing. The backend's SYN-ACK completes the
//! splice on the packet path (`datapath::synproxy`), which reports the
//! adjusts to the manager. Refreshes of a flow this agent spliced keep the
//! adjusts it installed.

use super::{ControlOutput, ReturnedPacket};
use crate::actions::ActionSet;
use crate::agent::{Agent, ControlState};
use crate::counters::Counter;
use crate::interest_data::ForwardingAgentInterestData;
use crate::synproxy::{self, Pending, SynProxyState, PENDING_NS};
use crate::wire;
use affinity_api::{AffinityKey, ServiceMessage};

impl Agent {
    /// For a fixed update answering a proved cookie ACK: keeps the ACK
    /// pending and queues the backend SYN in `out.returned`; true when it
    /// did (the message's packet must then not be returned as is).
    pub(super) fn syn_proxy_update(
        &self,
        st: &mut ControlState,
        out: &mut ControlOutput,
        msg: &ServiceMessage<'_>,
        now_ns: u64,
    ) -> bool {
        const OWN: usize = ForwardingAgentInterestData::LEN;
        let Some(d) = msg.fa_interest_data() else {
            return false;
        };
        if d.len() != OWN + SynProxyState::LEN {
            return false;
        }
        let Some(own) = ForwardingAgentInterestData::decode(&d[..OWN])
            .filter(|x| x.instance_id == self.config.instance_id)
        else {
            return false;
        };
        let (Some(state), Some(pkt)) = (SynProxyState::decode(&d[OWN..]), msg.ip_packet()) else {
            return false;
        };
        let Ok(info) = wire::parse_ipv4(pkt) else {
            return false;
        };
        // Denied or not for this flow: the packet goes back as usual.
        if self.fixed.lookup(&info.key).is_none() {
            return false;
        }
        // Answered: the connection's later packets are early data from
        // here on, never a proof again.
        self.splice.proof_answered(&info.key);
        // A repeated proof of one connection (the agent punts a connection's
        // proof once, and again only after `synproxy::REPROVE_NS` without
        // an answer: a lost punt or answer, or a slow manager that then
        // answers both). Spliced already: it goes on through the adjusted flow. Still
        // waiting for the backend: the first proof's SYN is out and its ACK
        // kept, so this one is held with the connection's early data (sent
        // on right after the splice; past the bounds dropped, and the
        // client retransmits) rather than sending the backend a second SYN.
        // (The same connection: the adjust installed starts at its cookie;
        // a new connection on the 4-tuple has another cookie.)
        let joined = self.splice.installed(&info.key).map(|(adj, _)| adj.3);
        if joined == Some(state.cookie_isn.wrapping_add(1)) {
            return false;
        }
        // A late answer to a repeated proof of a connection the backend
        // refused (the client had the RST): a second SYN would only draw a
        // second refusal.
        if self.splice.was_refused(&info.key, state.cookie_isn, now_ns) {
            st.counters.inc(Counter::SynProxyAnswerAfterRefusal);
            return true;
        }
        if self.splice.any_pending() && self.splice.is_pending(&info.key) {
            // A returned packet's checksum is complete (it crossed the wire).
            let c = match self.splice.hold_early(&info.key, pkt, false, now_ns) {
                synproxy::Early::Held => Counter::SynProxyEarlyDataHeld,
                synproxy::Early::Full | synproxy::Early::Pass => Counter::SynProxyEarlyData,
            };
            st.counters.inc(c);
            return true;
        }
        let p = Pending {
            state,
            packet: pkt.to_vec(),
            deadline_ns: now_ns.saturating_add(PENDING_NS),
        };
        if !self
            .splice
            .add_pending(info.key, p, now_ns, self.config.hold_limit)
        {
            st.counters.inc(Counter::SynProxyPendingFull);
            return true;
        }
        out.returned.push(ReturnedPacket {
            packet: synproxy::backend_syn(&info.key, &state),
            rank_limit: Some(own.rank()),
        });
        st.counters.inc(Counter::SynProxyBackendSyn);
        true
    }

    /// `a` with the sequence adjust and timestamp offset this agent's SYN
    /// proxy installed on `key`, if it spliced the flow (a manager's
    /// refresh). The agent's own win over what the update carries: a
    /// manager learns them from the splice report, and one that carries
    /// older ones (a 5-tuple reused and spliced again, the new report not
    /// yet heard) must not undo the new splice. Without a splice here the
    /// update's own adjusts apply (segments 12 and 21: a reply crossing
    /// this agent, or this agent restarted; PROTOCOL.md, "Splice
    /// reports").
    pub(super) fn keep_splice(&self, key: &AffinityKey, mut a: ActionSet) -> ActionSet {
        if let Some((seq, ts)) = self.splice.installed(key) {
            a.seq_adjust = Some(seq);
            a.ts_adjust = ts;
        }
        a
    }
}
