//! Control path, step 2: parse the message, authenticate it, reject
//! replays, and find (or add) the manager that sent it.

use super::ControlOutput;
use crate::agent::{Agent, ControlState};
use crate::counters::Counter;
use crate::introspection::ManagerInfo;
use affinity_api::{
    AuthPolicy, DenyReason, Header, ParseError, ReplayWindow, SegmentErrorKind, ServiceMessage,
    REQUIRED_FLAG,
};
use std::net::{Ipv4Addr, SocketAddrV4};

impl Agent {
    /// Parses `bytes`; on failure counts it and, for an unknown required
    /// segment in an otherwise readable message, queues a deny.
    pub(super) fn parse<'m>(
        &self,
        st: &mut ControlState,
        out: &mut ControlOutput,
        from: SocketAddrV4,
        bytes: &'m [u8],
    ) -> Option<ServiceMessage<'m>> {
        let e = match ServiceMessage::parse(bytes) {
            Ok(m) => return Some(m),
            Err(e) => e,
        };
        st.counters.inc(Counter::CtlParseError);
        // Only an unknown required segment in an otherwise readable
        // message is worth a deny; garbage is just counted.
        if let (
            ParseError::Segment {
                seg_type,
                kind: SegmentErrorKind::UnknownRequired,
                ..
            },
            Ok(h),
        ) = (e, Header::parse(bytes))
        {
            if verify_unparsed_ok(&self.auth()) {
                let deny = DenyReason {
                    denied_type: seg_type & !REQUIRED_FLAG,
                    code: DenyReason::UNKNOWN_REQUIRED_SEGMENT,
                    denied_sequence: h.sequence,
                };
                out.replies.push((from, self.build_deny(deny, None, None)));
                st.counters.inc(Counter::DenySent);
            }
        }
        None
    }

    /// Authenticates `msg` and checks its sequence against the sender's
    /// replay window; the sender's owner index, or `None` (counted) when
    /// the message must be ignored.
    pub(super) fn verify(
        &self,
        st: &mut ControlState,
        now_ns: u64,
        from: SocketAddrV4,
        msg: &ServiceMessage<'_>,
    ) -> Option<u16> {
        if self.auth().verify(msg, now_ns / 1_000_000_000).is_err() {
            st.counters.inc(Counter::CtlAuthFail);
            return None;
        }
        let (owner_addr, name) = match msg.identity() {
            Some(i) if !i.address.is_unspecified() => (i.address, i.host_name),
            _ => (*from.ip(), ""),
        };
        let owner = self.owner_index(st, owner_addr, name, now_ns);
        let signed = msg.security().is_some();
        let m = &mut st.managers[owner as usize];
        if signed && !m.replay.accept(msg.sequence()) {
            st.counters.inc(Counter::CtlReplay);
            return None;
        }
        m.last_heard_ns = now_ns;
        m.messages += 1;
        Some(owner)
    }

    /// The manager's index, adding it (and publishing the new address to
    /// the workers) when first heard from.
    fn owner_index(&self, st: &mut ControlState, addr: Ipv4Addr, name: &str, now_ns: u64) -> u16 {
        let i = match st.managers.iter().position(|m| m.address == addr) {
            Some(i) => i,
            None => {
                st.managers.push(ManagerInfo {
                    address: addr,
                    name: String::new(),
                    last_heard_ns: now_ns,
                    messages: 0,
                    replay: ReplayWindow::default(),
                });
                self.republish(st);
                st.managers.len() - 1
            }
        };
        let m = &mut st.managers[i];
        if !name.is_empty() && m.name != name {
            m.name = name.to_string();
        }
        i.min(u16::MAX as usize) as u16
    }
}

/// A message that did not parse cannot be authenticated; answer it only
/// when authentication is off, so a forged packet cannot make us send.
fn verify_unparsed_ok(policy: &AuthPolicy) -> bool {
    !policy.require
}
