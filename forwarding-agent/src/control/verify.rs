//! Control path, step 2: parse the message, authenticate it, reject
//! replays, and find (or add) the manager that sent it.

use super::ControlOutput;
use crate::agent::{Agent, ControlState};
use crate::counters::Counter;
use crate::introspection::ManagerInfo;
use affinity_api::{
    seg, unix_now, AuthAlgorithm, AuthError, AuthPolicy, DenyReason, Header, MessageType,
    ParseError, ReplayWindow, SegmentErrorKind, ServiceMessage, HEADER_LEN, REQUIRED_FLAG,
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
            let require = self.auth().require;
            if verify_unparsed_ok(&self.auth(), now, bytes, h.sequence, window) {
                let deny = DenyReason {
                    denied_type: seg_type & !REQUIRED_FLAG,
                    code: DenyReason::UNKNOWN_REQUIRED_SEGMENT,
                    denied_sequence: h.sequence,
                };
                // Identity info only when the digest was checked.
                let m = self.deny_message(require, deny, &[], None, None);
                out.replies.push((from, m));
                st.counters.inc(Counter::DenySent);
            }
        }
        None
    }

    /// Authenticates `msg` and checks its sequence against the sender's
    /// replay window; the sender's owner index, or `None` (counted by
    /// reason) when the message must be ignored.
    ///
    /// In order: the sender must be an allowed manager (when a list is
    /// configured); the signature must verify with a key that may speak for
    /// the claimed identity; a signed message's sequence must not be far
    /// ahead of the clock, and its receiver segment (required on
    /// fixed updates and IP-packet-only when keys are configured) must name
    /// this agent or one of its groups; only then is per-sender state
    /// created (bounded by `max_managers`). A signed message behind the
    /// window draws a stale-sequence deny (at most one a second per
    /// manager) so the manager can move its sequence on.
    pub(super) fn verify(
        &self,
        st: &mut ControlState,
        out: &mut ControlOutput,
        now_ns: u64,
        from: SocketAddrV4,
        msg: &ServiceMessage<'_>,
    ) -> Option<u16> {
        if let Some(allowed) = &self.config.allowed_managers {
            if !allowed.contains(from.ip()) {
                st.counters.inc(Counter::CtlNotAllowed);
                return None;
            }
        }
        // Seed: a receiver that expects no security (no key, signatures not
        // required) ignores the security segment and accepts the message,
        // so turning signing on at one end first is not an outage.
        let keyless = {
            let policy = self.auth();
            policy.keys.is_empty() && !policy.require
        };
        let signed = msg.security().is_some() && !keyless;
        let checked = if keyless {
            Ok(())
        } else {
            let auth = self.auth();
            auth.verify_from(msg, now_ns / 1_000_000_000, *from.ip())
                .and_then(|()| {
                    if signed {
                        auth.check_sequence(msg.sequence(), unix_now())
                    } else {
                        Ok(())
                    }
                })
                .and_then(|()| self.check_receiver(&auth, msg))
        };
        if let Err(e) = checked {
            st.counters.inc(Counter::CtlAuthFail);
            st.counters.inc(auth_counter(&e));
            self.log_refusal(st, out, now_ns, from, &e);
            return None;
        }
        // Only the message types an agent acts on create or refresh a
        // manager entry: a hello, a report or an interest match (agent-to-
        // manager types) sent to an agent is counted and dropped here.
        if !matches!(
            msg.msg_type(),
            MessageType::AffinityUpdateWildcard
                | MessageType::AffinityUpdateFixed
                | MessageType::IpPacketOnly
                | MessageType::Keepalive
        ) {
            st.counters.inc(Counter::CtlUnexpected);
            return None;
        }
        let (owner_addr, name) = match msg.identity() {
            Some(i) if !i.address.is_unspecified() => (i.address, i.host_name),
            _ => (*from.ip(), ""),
        };
        let Some(owner) = self.owner_index(st, owner_addr, name, now_ns) else {
            st.counters.inc(Counter::CtlManagersFull);
            return None;
        };
        let m = &mut st.managers[owner as usize];
        if signed && !m.replay.accept(msg.sequence()) {
            st.counters.inc(Counter::CtlReplay);
            let stale = m.replay.is_stale(msg.sequence());
            let due = m
                .last_stale_deny_ns
                .is_none_or(|t| now_ns.saturating_sub(t) >= 1_000_000_000);
            if stale && due {
                m.last_stale_deny_ns = Some(now_ns);
                let deny = DenyReason {
                    denied_type: 0,
                    code: DenyReason::STALE_SEQUENCE,
                    denied_sequence: m.replay.highest(),
                };
                out.replies
                    .push((from, self.build_deny(deny, &[], None, None)));
                st.counters.inc(Counter::StaleDenySent);
                st.counters.inc(Counter::DenySent);
            }
            return None;
        }
        m.last_heard_ns = now_ns;
        m.messages += 1;
        Some(owner)
    }

    /// The receiver segment, when present, must name this agent or a
    /// group it listens on; with keys configured, fixed updates and
    /// IP-packet-only messages (which carry flows and packets for one
    /// agent) must have one.
    fn check_receiver(&self, auth: &AuthPolicy, msg: &ServiceMessage<'_>) -> Result<(), AuthError> {
        match msg.receiver() {
            Some(r) => {
                let ours = r == self.config.agent_addr
                    || self.config.multicast_groups.contains(&r)
                    || self.config.agent_addr.is_unspecified();
                if ours {
                    Ok(())
                } else {
                    Err(AuthError::WrongReceiver)
                }
            }
            None if auth.require
                && matches!(
                    msg.msg_type(),
                    MessageType::AffinityUpdateFixed | MessageType::IpPacketOnly
                ) =>
            {
                Err(AuthError::WrongReceiver)
            }
            None => Ok(()),
        }
    }

    /// Queues a log line for a refused message ([`ControlOutput::log`]),
    /// at most once a second (an attacker's flood must not flood the log);
    /// the per-reason counters have every one.
    fn log_refusal(
        &self,
        st: &mut ControlState,
        out: &mut ControlOutput,
        now_ns: u64,
        from: SocketAddrV4,
        e: &AuthError,
    ) {
        if st
            .last_auth_log_ns
            .is_none_or(|t| now_ns.saturating_sub(t) >= 1_000_000_000)
        {
            st.last_auth_log_ns = Some(now_ns);
            out.log.push(format!(
                "control message from {from} refused ({}): {e} (logged at most once a second; see the control-auth-* counters)",
                e.reason()
            ));
        }
    }

    /// The manager's index, adding it (and publishing the new address to
    /// the workers) when first heard from; `None` when the table already
    /// holds `max_managers` (or `u16::MAX`) others.
    fn owner_index(
        &self,
        st: &mut ControlState,
        addr: Ipv4Addr,
        name: &str,
        now_ns: u64,
    ) -> Option<u16> {
        let fresh = ManagerInfo {
            address: addr,
            name: String::new(),
            last_heard_ns: now_ns,
            messages: 0,
            replay: ReplayWindow::default(),
            last_stale_deny_ns: None,
        };
        let i = match st.managers.iter().position(|m| m.address == addr) {
            Some(i) => i,
            None if st.managers.len() < self.config.max_managers.min(u16::MAX as usize) => {
                st.managers.push(fresh);
                self.republish(st);
                st.managers.len() - 1
            }
            None => {
                // Full: a slot whose manager has been silent for
                // MANAGER_IDLE_NS and owns no fixed or wildcard entry is
                // reused (its index names nothing any more), so entries
                // made by senders that went away cannot lock others out.
                let reusable = (0..st.managers.len()).find(|&i| {
                    let owner = i as u16;
                    now_ns.saturating_sub(st.managers[i].last_heard_ns) >= MANAGER_IDLE_NS
                        && st.fixed_by_owner.get(&owner).copied().unwrap_or(0) == 0
                        && self.wildcards.owner_len(owner) == 0
                })?;
                st.managers[reusable] = fresh;
                st.activity.forget_manager(reusable as u16);
                st.counters.inc(Counter::CtlManagerReused);
                self.republish(st);
                reusable
            }
        };
        let m = &mut st.managers[i];
        if !name.is_empty() && m.name != name {
            m.name = name.to_string();
        }
        Some(i as u16)
    }
}

/// How long a manager entry must be silent (ns) before its slot may be
/// reused for another sender when the table is full (it must also own no
/// entries): longer than any wildcard refresh interval.
const MANAGER_IDLE_NS: u64 = 60_000_000_000;

/// The per-reason counter of an authentication failure.
fn auth_counter(e: &AuthError) -> Counter {
    match e {
        AuthError::Unsigned => Counter::CtlAuthUnsigned,
        AuthError::UnknownKey(_) | AuthError::ExpiredKey(_) => Counter::CtlAuthUnknownKey,
        AuthError::BadAlgorithm(_) | AuthError::BadDigest => Counter::CtlAuthBadDigest,
        AuthError::WrongIdentity(_) => Counter::CtlAuthWrongIdentity,
        AuthError::FarFuture(_) => Counter::CtlAuthFarFuture,
        AuthError::WrongReceiver => Counter::CtlAuthWrongReceiver,
        AuthError::Replay(_) => Counter::CtlReplay,
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
