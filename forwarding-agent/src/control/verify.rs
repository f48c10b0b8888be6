//! Control path, step 2: parse the message, authenticate it, reject
//! replays, and find (or add) the manager that sent it.

use super::ControlOutput;
use crate::agent::{Agent, ControlState};
use crate::counters::Counter;
use crate::introspection::ManagerInfo;
use affinity_api::{
    seg, AuthAlgorithm, AuthPolicy, DenyReason, Header, ParseError, ReplayWindow, SegmentErrorKind,
    ServiceMessage, HEADER_LEN, REQUIRED_FLAG,
};
use std::net::{Ipv4Addr, SocketAddrV4};

impl Agent {
    /// Parses `bytes`; on failure counts it and, for an unknown required
    /// segment in an otherwise readable message, queues a deny.
    pub(super) fn parse<'m>(
        &self,
        st: &mut ControlState,
        out: &mut ControlOutput,
        now_ns: u64,
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
            let known = st.managers.iter_mut().find(|m| m.address == *from.ip());
            let window = known.map(|m| &mut m.replay);
            let now = now_ns / 1_000_000_000;
            if verify_unparsed_ok(&self.auth(), now, bytes, h.sequence, window) {
                let deny = DenyReason {
                    denied_type: seg_type & !REQUIRED_FLAG,
                    code: DenyReason::UNKNOWN_REQUIRED_SEGMENT,
                    denied_sequence: h.sequence,
                };
                out.replies
                    .push((from, self.build_deny(deny, &[], None, None)));
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
        // Seed: a receiver that expects no security (no key, signatures not
        // required) ignores the security segment and accepts the message,
        // so turning signing on at one end first is not an outage.
        let keyless = {
            let policy = self.auth();
            policy.keys.is_empty() && !policy.require
        };
        if !keyless && self.auth().verify(msg, now_ns / 1_000_000_000).is_err() {
            st.counters.inc(Counter::CtlAuthFail);
            return None;
        }
        let (owner_addr, name) = match msg.identity() {
            Some(i) if !i.address.is_unspecified() => (i.address, i.host_name),
            _ => (*from.ip(), ""),
        };
        let owner = self.owner_index(st, owner_addr, name, now_ns);
        let signed = msg.security().is_some() && !keyless;
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

/// Whether a message that did not parse (an unknown Required segment) may
/// be answered with a deny: always when authentication is off; with it
/// on, only when its first segment is a security segment whose digest,
/// computed over the raw bytes, verifies with an accepted key and its
/// sequence passes the sender's replay window (when the sender is known),
/// with a key still accepted at `now_secs` (the caller's clock, seconds),
/// so a forged or replayed packet cannot make the agent send.
fn verify_unparsed_ok(
    policy: &AuthPolicy,
    now_secs: u64,
    bytes: &[u8],
    sequence: u64,
    window: Option<&mut ReplayWindow>,
) -> bool {
    if !policy.require {
        return true;
    }
    // Header (16 bytes), then the security segment: type, length,
    // algorithm, reserved, key id, digest (PROTOCOL.md "6 — security").
    let at = HEADER_LEN;
    let field = |i: usize| {
        bytes
            .get(i..i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    let (Some(t), Some(len), Some(key_id)) = (field(at), field(at + 2), field(at + 6)) else {
        return false;
    };
    let digest_at = at + 8;
    let end = at + len as usize;
    if t & !REQUIRED_FLAG != seg::SECURITY || end > bytes.len() || end < digest_at {
        return false;
    }
    let Some(key) = policy.keys.get(key_id) else {
        return false;
    };
    if key.accept_until.is_some_and(|t| now_secs > t) {
        return false;
    }
    let algorithm = AuthAlgorithm::from_u8(bytes[at + 4]);
    if algorithm != Some(key.algorithm) || end - digest_at != key.algorithm.digest_len() {
        return false;
    }
    let mut signed = bytes.to_vec();
    key.sign_in_place(&mut signed);
    // Compared in full (no early exit), as the parsed path does.
    let diff = signed[digest_at..end]
        .iter()
        .zip(&bytes[digest_at..end])
        .fold(0u8, |d, (a, b)| d | (a ^ b));
    diff == 0 && window.is_none_or(|w| w.accept(sequence))
}
