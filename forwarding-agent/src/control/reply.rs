//! Control path, step 4: what the agent sends managers — affinity
//! update-denies for what it could not apply, and its hello.

use super::{ControlOutput, Incoming};
use crate::agent::{Agent, ControlState};
use crate::config::SUPPORTED_ACTIONS;
use crate::counters::Counter;
use affinity_api::{
    capability, encode_action_list, ActionList, AffinityEntry, AffinityIdentifier, AffinityRef,
    Capabilities, DenyReason, MessageBuilder, MessageType, Segment,
};

impl Agent {
    /// Counts and queues an affinity update-deny naming `denied[0]` (a
    /// segment type) with deny `code`, for the affinity `e` of `inc`. With
    /// code 2 every type in `denied` is also listed in an action list
    /// (each with the Required bit), so the manager learns all it must drop
    /// at once (seed FIG 9C: the deny names every unsupported action).
    pub(super) fn deny(
        &self,
        st: &mut ControlState,
        out: &mut ControlOutput,
        inc: &Incoming<'_, '_>,
        denied: &[u16],
        code: u16,
        e: Option<&AffinityEntry<'_>>,
    ) {
        st.counters.inc(Counter::DenySent);
        let reason = DenyReason {
            denied_type: denied.first().copied().unwrap_or(0),
            code,
            denied_sequence: inc.msg.sequence(),
        };
        let listed = if code == DenyReason::UNSUPPORTED_REQUIRED_ACTION {
            denied
        } else {
            &[]
        };
        let deny = self.deny_message(
            inc.authenticated,
            reason,
            listed,
            e.and_then(|e| e.identifier),
            e.map(|e| e.affinity),
        );
        out.replies.push((inc.from, deny));
    }

    /// An affinity update-deny (the encoded message; empty if it could not
    /// be built): the deny reason, an action list naming `unsupported`
    /// (action segment types, each marked required; left out when empty),
    /// and the refused affinity with its identifier when given.
    pub fn build_deny(
        &self,
        reason: DenyReason,
        unsupported: &[u16],
        id: Option<AffinityIdentifier>,
        affinity: Option<AffinityRef>,
    ) -> Vec<u8> {
        self.deny_message(true, reason, unsupported, id, affinity)
    }

    /// [`Agent::build_deny`], with identity info only when `identify`
    /// (the answer to an unauthenticated message goes without: its
    /// sender learns nothing it needs from it, and it keeps the deny
    /// smaller than what it answers).
    pub(super) fn deny_message(
        &self,
        identify: bool,
        reason: DenyReason,
        unsupported: &[u16],
        id: Option<AffinityIdentifier>,
        affinity: Option<AffinityRef>,
    ) -> Vec<u8> {
        let mut b = if identify {
            self.builder(MessageType::AffinityUpdateDeny)
        } else {
            self.bare_builder(MessageType::AffinityUpdateDeny)
        };
        b.push(Segment::DenyReason(reason));
        let entries: Vec<(u16, bool)> = unsupported.iter().map(|&t| (t, true)).collect();
        let raw = encode_action_list(&entries);
        if let Some(list) = ActionList::from_raw(&raw).filter(|l| !l.is_empty()) {
            b.push(Segment::ActionList(list));
        }
        if let Some(id) = id {
            b.push(Segment::AffinityIdentifier(id));
        }
        match affinity {
            Some(AffinityRef::Wildcard(w)) => b.push(Segment::WildcardAffinity(w)),
            Some(AffinityRef::Fixed(f)) => b.push(Segment::FixedAffinity(f)),
            None => &mut b,
        };
        b.finish().unwrap_or_default()
    }

    /// The answer to a manager's return-routability challenge: a keepalive
    /// carrying `cookie` (the challenge's manager interest data) unchanged,
    /// signed when the agent signs, without identity info, so it is no
    /// larger than the challenge (the encoded message; empty if it could
    /// not be built).
    pub fn build_echo(&self, cookie: &[u8]) -> Vec<u8> {
        let mut b = self.bare_builder(MessageType::Keepalive);
        b.push(Segment::SmInterestData(cookie));
        b.finish().unwrap_or_default()
    }

    /// A message of type `t` with the next sequence number, signed when
    /// the agent signs, without identity info.
    fn bare_builder(&self, t: MessageType) -> MessageBuilder {
        let seq = self.next_sequence();
        match &self.published.load().signing_key {
            Some(k) => MessageBuilder::signed(t, seq, k),
            None => MessageBuilder::new(t, seq),
        }
    }

    /// An agent hello announcing capabilities (the encoded message): the
    /// actions performed (bit n: action segment type n) and the feature
    /// bits, [`capability::HANDSHAKE_MARKS`] (the activity reports mark
    /// handshake-complete TCP segments; only with `per_flow_counters`, which
    /// the marks and the reports need; PROTOCOL.md, segment 17).
    pub fn build_hello(&self) -> Vec<u8> {
        let features = if self.config.per_flow_counters {
            capability::HANDSHAKE_MARKS
        } else {
            0
        };
        let actions = SUPPORTED_ACTIONS
            .iter()
            .filter(|t| !self.config.disabled_actions.contains(t))
            .fold(features, |m, &t| m | 1 << t);
        let mut b = self.builder(MessageType::AgentHello);
        b.push(Segment::Capabilities(Capabilities {
            actions,
            fixed_capacity: self.fixed.capacity() as u32,
            wildcard_capacity: self.config.wildcard_capacity as u32,
        }));
        b.finish().unwrap_or_default()
    }
}
