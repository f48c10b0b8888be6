//! Control path, step 4: what the agent sends managers — affinity
//! update-denies for what it could not apply, and its hello.

use super::{ControlOutput, Incoming};
use crate::agent::{Agent, ControlState};
use crate::config::SUPPORTED_ACTIONS;
use crate::counters::Counter;
use affinity_api::{
    AffinityEntry, AffinityIdentifier, AffinityRef, Capabilities, DenyReason, MessageType, Segment,
};

impl Agent {
    /// Counts and queues an affinity update-deny naming `denied_type`
    /// (a segment type) with deny `code`, for the affinity `e` of `inc`.
    pub(super) fn deny(
        &self,
        st: &mut ControlState,
        out: &mut ControlOutput,
        inc: &Incoming<'_, '_>,
        denied_type: u16,
        code: u16,
        e: &AffinityEntry<'_>,
    ) {
        st.counters.inc(Counter::DenySent);
        let reason = DenyReason {
            denied_type,
            code,
            denied_sequence: inc.msg.sequence(),
        };
        out.replies.push((
            inc.from,
            self.build_deny(reason, e.identifier, Some(e.affinity)),
        ));
    }

    /// An affinity update-deny (the encoded message; empty if it could not
    /// be built).
    pub fn build_deny(
        &self,
        reason: DenyReason,
        id: Option<AffinityIdentifier>,
        affinity: Option<AffinityRef>,
    ) -> Vec<u8> {
        let mut b = self.builder(MessageType::AffinityUpdateDeny);
        b.push(Segment::DenyReason(reason));
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

    /// An agent hello announcing capabilities (the encoded message).
    pub fn build_hello(&self) -> Vec<u8> {
        let actions = SUPPORTED_ACTIONS
            .iter()
            .filter(|t| !self.config.disabled_actions.contains(t))
            .fold(0u32, |m, &t| m | 1 << t);
        let mut b = self.builder(MessageType::AgentHello);
        b.push(Segment::Capabilities(Capabilities {
            actions,
            fixed_capacity: self.fixed.capacity() as u32,
            wildcard_capacity: self.config.wildcard_capacity as u32,
        }));
        b.finish().unwrap_or_default()
    }
}
