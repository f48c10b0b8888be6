//! The control path: a service message from a manager, in the order it is
//! handled, one file per step:
//!
//! 1. receive (this file): split the datagram into messages, take the
//!    control state, hand each message on, collect what it produced;
//! 2. `verify`: parse, authenticate, check replay, find the owner;
//! 3. `apply`: install, refresh or delete the affinities it carries,
//!    release held packets, return packets to the data path;
//! 4. `reply`: the messages the agent sends back (denies, hello).
//!
//! Timers (expiry, hold timeouts) are in [`crate::timers`].

mod apply;
mod reply;
mod synproxy;
mod verify;

use crate::agent::{ds, Agent};
use crate::counters::Counter;
use crate::interest_data::ForwardingAgentInterestData;
use affinity_api::{datagram_messages, AffinityRef, DenyReason, MessageType, ServiceMessage};
use std::net::SocketAddrV4;

/// A packet the control plane hands back to the data path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnedPacket {
    pub packet: Vec<u8>,
    /// Wildcards at or above this rank must not match it (service chaining).
    pub rank_limit: Option<(bool, u16)>,
}

/// What handling one control message produced.
#[derive(Debug, Default)]
pub struct ControlOutput {
    /// Datagrams to send (denies), with their destination.
    pub replies: Vec<(SocketAddrV4, Vec<u8>)>,
    /// Packets to run through [`crate::Worker::process_returned`].
    pub returned: Vec<ReturnedPacket>,
    /// Lines for the host's log (refused messages, rate-limited to one a
    /// second by the core; the core itself does not log).
    pub log: Vec<String>,
}

/// A verified message and where it came from, as the apply step sees it.
pub(crate) struct Incoming<'a, 'm> {
    pub from: SocketAddrV4,
    pub msg: &'a ServiceMessage<'m>,
    /// Index of the sending manager (`ControlState::managers`).
    pub owner: u16,
    /// Table time (deciseconds) and the caller's monotonic nanoseconds.
    pub now: u32,
    pub now_ns: u64,
    /// Signed and verified: its answers carry identity info. Otherwise they
    /// do not (the sender may be forged; see [`Agent::handle_message`]).
    pub authenticated: bool,
}

impl Agent {
    /// Handles the service messages of one datagram from `from` (one
    /// control thread at a time).
    pub fn handle_control(&self, now_ns: u64, from: SocketAddrV4, bytes: &[u8]) -> ControlOutput {
        let mut out = ControlOutput::default();
        // Usually one message; several back to back (a coalesced or
        // GSO-sent burst) are handled in order. Broken framing is handled
        // as an unparsable message: counted, never answered.
        for m in datagram_messages(bytes) {
            self.handle_message(&mut out, now_ns, from, m.unwrap_or_default());
        }
        out
    }

    /// Handles a burst of datagrams (each from its sender) as
    /// [`Agent::handle_control`] would, but publishes the wildcard snapshot
    /// once at the end instead of once per message: a burst of N wildcard
    /// updates costs one snapshot rebuild, not N (issue 16, item 6). A
    /// fixed update inside the burst still sees the wildcards before it.
    pub fn handle_control_batch<'b>(
        &self,
        now_ns: u64,
        datagrams: impl IntoIterator<Item = (SocketAddrV4, &'b [u8])>,
    ) -> ControlOutput {
        let mut out = ControlOutput::default();
        self.control.lock().batching = true;
        for (from, bytes) in datagrams {
            for m in datagram_messages(bytes) {
                self.handle_message(&mut out, now_ns, from, m.unwrap_or_default());
            }
        }
        self.control.lock().batching = false;
        self.wildcards.commit();
        out
    }

    /// Records control datagrams the host lost before the core saw them
    /// (e.g. the kernel's count of drops on the control socket: a full
    /// receive buffer), `n` more since the last call; shown as
    /// `control-socket-drops`.
    pub fn note_control_drops(&self, n: u64) {
        if n > 0 {
            let mut st = self.control.lock();
            st.counters.add(Counter::CtlSocketDrops, n);
            self.publish_control(&st);
        }
    }

    /// Handles one message. What it makes the agent answer (denies, an
    /// echo) is bounded, unless the message was authenticated, by the
    /// message's own size in bytes: an unauthenticated sender's source
    /// address may be forged, and the agent must not be a reflector that
    /// amplifies (issue 16, item 7). Such answers leave out identity info
    /// (a deny is then smaller than the affinity segments it answers), are
    /// kept in order while they fit, and the rest are dropped and counted
    /// (`control-reply-larger-than-request`, one per answer).
    fn handle_message(
        &self,
        out: &mut ControlOutput,
        now_ns: u64,
        from: SocketAddrV4,
        bytes: &[u8],
    ) {
        let before = out.replies.len();
        if self.handle_one(out, now_ns, from, bytes) {
            return;
        }
        // In order, while they fit in the message's own size.
        let mut budget = bytes.len();
        let mut kept = before;
        while let Some((_, m)) = out.replies.get(kept) {
            if m.len() > budget {
                break;
            }
            budget -= m.len();
            kept += 1;
        }
        if kept < out.replies.len() {
            let dropped = (out.replies.len() - kept) as u64;
            out.replies.truncate(kept);
            let mut st = self.control.lock();
            st.counters.add(Counter::CtlReplyLargerThanRequest, dropped);
            self.publish_control(&st);
        }
    }

    /// [`Agent::handle_message`] without the reply bound; whether the
    /// message was authenticated (signed and verified).
    fn handle_one(
        &self,
        out: &mut ControlOutput,
        now_ns: u64,
        from: SocketAddrV4,
        bytes: &[u8],
    ) -> bool {
        let mut st = self.control.lock();
        st.counters.inc(Counter::CtlMessages);
        let Some(msg) = self.parse(&mut st, out, now_ns, from, bytes) else {
            self.publish_control(&st);
            // A deny for an unparsable message is queued, with
            // authentication required, only after its digest verified.
            return self.auth().require;
        };
        let Some(owner) = self.verify(&mut st, out, now_ns, from, &msg) else {
            self.publish_control(&st);
            // Refused: only a signed, verified sender is told (stale).
            return true;
        };
        let authenticated = {
            let policy = self.auth();
            msg.security().is_some() && (policy.require || !policy.keys.is_empty())
        };
        let interval_ns = self.config.activity_report_interval_ms * 1_000_000;
        st.activity.note_manager(owner, from, now_ns, interval_ns);
        let inc = Incoming {
            from,
            msg: &msg,
            owner,
            now: ds(now_ns),
            now_ns,
            authenticated,
        };
        if matches!(
            msg.msg_type(),
            MessageType::AffinityUpdateWildcard | MessageType::AffinityUpdateFixed
        ) {
            // Seed FIG 8B/9C: a Required action segment this agent cannot
            // perform drops the whole message (nothing installed, no packet
            // returned, so nothing leaves untranslated), and the deny names
            // every such action.
            let refused = self.unprocessable_required(&msg);
            if !refused.is_empty() {
                st.counters.inc(Counter::UnsupportedRequiredSegment);
                let first = msg.affinities().next();
                let code = DenyReason::UNSUPPORTED_REQUIRED_ACTION;
                self.deny(&mut st, out, &inc, &refused, code, first.as_ref());
                self.publish_control(&st);
                return authenticated;
            }
        }
        match msg.msg_type() {
            MessageType::AffinityUpdateWildcard => {
                for e in msg.affinities() {
                    if let AffinityRef::Wildcard(w) = e.affinity {
                        self.apply_wildcard(&mut st, out, &inc, &e, w);
                    }
                }
                self.warm_heard(&mut st, *from.ip());
            }
            MessageType::AffinityUpdateFixed => {
                let mut refused = false;
                for e in msg.affinities() {
                    if let AffinityRef::Fixed(f) = e.affinity {
                        refused |= !self.apply_fixed(&mut st, out, &inc, &e, f);
                    }
                }
                let data = self.own_interest_data(&msg);
                let mut released = false;
                if let Some(d) = data.filter(|d| d.hold_token != 0) {
                    self.hold.release(d.hold_token, |h| {
                        st.counters.inc(Counter::HoldReleased);
                        released = true;
                        if refused {
                            st.counters.inc(Counter::ReturnedDroppedRefused);
                        } else {
                            out.returned.push(ReturnedPacket {
                                packet: h.packet,
                                rank_limit: Some(h.rank),
                            });
                        }
                    });
                }
                // A held packet the match also carried (HOLD with DATA) comes
                // back twice: the held copy goes on, the returned one is
                // dropped, so the packet leaves once. A packet whose
                // affinities were refused (table full, ...) is dropped and
                // counted: returned, it would find no affinity and go on
                // untranslated (issue 11 case 3). A SYN-proxied flow's
                // update starts the backend handshake instead.
                if refused && !released && msg.ip_packet().is_some() {
                    st.counters.inc(Counter::ReturnedDroppedRefused);
                } else if !released && !self.syn_proxy_update(&mut st, out, &msg, now_ns) {
                    self.return_packet(out, &msg, data);
                }
            }
            MessageType::IpPacketOnly => {
                let data = self.own_interest_data(&msg);
                self.return_packet(out, &msg, data);
            }
            MessageType::Keepalive => {
                // A manager's return-routability challenge (EXCHANGES.md,
                // "Return routability"): the manager interest data goes
                // back as it came, in a keepalive no larger than this one.
                if let Some(cookie) = msg.sm_interest_data() {
                    out.replies.push((from, self.build_echo(cookie)));
                    st.counters.inc(Counter::CtlChallengeAnswered);
                }
            }
            _ => st.counters.inc(Counter::CtlUnexpected),
        }
        if !st.batching {
            self.wildcards.commit();
        }
        self.publish_control(&st);
        authenticated
    }

    /// The message's FA interest data, if it is this agent's.
    fn own_interest_data(&self, msg: &ServiceMessage<'_>) -> Option<ForwardingAgentInterestData> {
        msg.fa_interest_data()
            .and_then(ForwardingAgentInterestData::decode)
            .filter(|d| d.instance_id == self.config.instance_id)
    }

    /// A packet the message carries goes back to the data path, below the
    /// rank of the wildcard that punted it (if it was ours).
    fn return_packet(
        &self,
        out: &mut ControlOutput,
        msg: &ServiceMessage<'_>,
        data: Option<ForwardingAgentInterestData>,
    ) {
        if let Some(p) = msg.ip_packet() {
            out.returned.push(ReturnedPacket {
                packet: p.to_vec(),
                rank_limit: data.map(|d| d.rank()),
            });
        }
    }
}
