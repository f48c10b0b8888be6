//! Return routability (issue 16, item 7): in open mode nothing an agent
//! sends is authenticated, so its source address may be forged, and the
//! answer to a punt (a fixed update with two affinities, their actions and
//! the packet) is about three times the punt's bytes: a reflector for
//! anyone on the control LAN. As QUIC validates a client's address before
//! sending it more than it received (RFC 9000, section 8.1), the manager
//! answers an unauthenticated sender in full only once its address has
//! shown it receives what is sent to it:
//!
//! - a signed, verified message is answered as always;
//! - an address listed as a unicast agent (`[agents] unicast`) is trusted
//!   by configuration;
//! - any other address gets a *challenge* instead: a keepalive (type 17)
//!   carrying 8 bytes of manager interest data, a cookie computed from the
//!   address with a per-process secret key (SipHash, the time slot of
//!   [`COOKIE_SLOT`]), smaller than any message that draws it. An agent
//!   answers a keepalive carrying manager interest data with a keepalive
//!   carrying the same bytes (EXCHANGES.md, "Return routability"); a
//!   cookie that checks out makes the address *validated* for
//!   [`VALIDATED_FOR`], renewed by a fresh challenge before it runs out.
//!
//! The punt that drew the challenge is kept (a few per address, for
//! [`PENDING_FOR`], for a bounded number of addresses) and handled as soon
//! as the cookie comes back, so a validating agent loses no packet; past
//! the bounds it is dropped and the client's retransmission goes through.
//! No state is kept for an address that never answers beyond that bounded,
//! expiring queue, and the cookie is stateless.
//!
//! What this does not stop: a sender on the path to an agent (it sees the
//! cookie) or a forged message claiming an address already validated (it
//! is answered in full, to a real agent). Open mode is for trusted LANs.

use super::{ManagerCore, Outgoing, MAX_PEERS, SEC};
use affinity_api::{MessageBuilder, MessageType, Segment};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, SocketAddrV4};

/// How long a returned cookie validates its address (ns).
pub const VALIDATED_FOR: u64 = 600 * SEC;
/// A validated address is challenged again this long after its last
/// validation (ns), at most once per [`RECHALLENGE_EVERY`]: a live agent
/// stays validated without losing a packet.
const RECHALLENGE_AFTER: u64 = VALIDATED_FOR / 2;
const RECHALLENGE_EVERY: u64 = 10 * SEC;
/// A cookie is valid in the slot it was made in and the next (ns).
pub const COOKIE_SLOT: u64 = 30 * SEC;
/// Messages kept per address while its challenge is out, and addresses.
const PENDING_PER_ADDR: usize = 8;
const PENDING_ADDRS: usize = 256;
/// How long a kept message waits for the cookie (ns).
pub const PENDING_FOR: u64 = 2 * SEC;

/// An address that returned a cookie.
#[derive(Debug, Clone, Copy)]
pub(super) struct Validated {
    /// Where it answered from (the next challenge goes there).
    from: SocketAddrV4,
    /// When it last returned a cookie (ns).
    at: u64,
    /// When it was last challenged again (ns; 0 never).
    rechallenged: u64,
}

/// Messages from an address whose challenge is out.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    from: SocketAddrV4,
    /// When the first was kept (ns).
    since: u64,
    messages: Vec<Vec<u8>>,
}

/// The return-routability state of a manager core.
#[derive(Debug, Default)]
pub(super) struct Routability {
    /// Keys the cookies (random per process).
    key: std::hash::RandomState,
    pub(super) validated: HashMap<Ipv4Addr, Validated>,
    pending: HashMap<Ipv4Addr, Pending>,
}

impl Routability {
    /// The cookie of `ip` in time slot `slot`: 8 bytes of SipHash-1-3
    /// keyed with the process's random key.
    fn cookie(&self, ip: Ipv4Addr, slot: u64) -> [u8; 8] {
        let mut h = self.key.build_hasher();
        h.write_u32(ip.into());
        h.write_u64(slot);
        h.finish().to_be_bytes()
    }

    /// A challenge for `ip` at `now` (ns): a keepalive carrying the cookie
    /// as manager interest data, unsigned and without identity info (28
    /// bytes: smaller than any message that draws one).
    fn challenge(&self, now: u64, ip: Ipv4Addr) -> Vec<u8> {
        let cookie = self.cookie(ip, now / COOKIE_SLOT);
        let mut b = MessageBuilder::new(MessageType::Keepalive, 0);
        b.push(Segment::SmInterestData(&cookie));
        b.finish().unwrap_or_default()
    }

    /// Whether `data` is `ip`'s cookie of this slot or the previous one.
    fn check(&self, now: u64, ip: Ipv4Addr, data: &[u8]) -> bool {
        let slot = now / COOKIE_SLOT;
        [slot, slot.saturating_sub(1)]
            .iter()
            .any(|&s| self.cookie(ip, s) == data)
    }
}

impl ManagerCore {
    /// Whether a message from `from` that was not signed may be answered in
    /// full at `now` (ns): a configured unicast agent, or an address that
    /// returned a cookie within [`VALIDATED_FOR`].
    pub(super) fn routable(&self, now: u64, from: SocketAddrV4) -> bool {
        let ip = *from.ip();
        self.cfg.agents.unicast.iter().any(|a| *a.ip() == ip)
            || self
                .routability
                .validated
                .get(&ip)
                .is_some_and(|v| now.saturating_sub(v.at) < VALIDATED_FOR)
    }

    /// An unauthenticated message from an address not (yet) routable that
    /// would draw a full answer (`bytes`, a punt): kept until the cookie
    /// comes back (within the bounds), and a challenge sent in its place.
    pub(super) fn challenge_for(
        &mut self,
        now: u64,
        from: SocketAddrV4,
        bytes: &[u8],
        out: &mut Vec<Outgoing>,
    ) {
        let ip = *from.ip();
        let r = &mut self.routability;
        let room = r.pending.len() < PENDING_ADDRS || r.pending.contains_key(&ip);
        let kept = room && {
            let p = r.pending.entry(ip).or_insert_with(|| Pending {
                from,
                since: now,
                messages: Vec::new(),
            });
            p.messages.len() < PENDING_PER_ADDR && {
                p.messages.push(bytes.to_vec());
                true
            }
        };
        if kept {
            self.count("unvalidated-kept");
        } else {
            self.count("unvalidated-dropped");
        }
        let c = self.routability.challenge(now, ip);
        // Never more than the message that drew it (28 bytes against a
        // punt's 56 or more; checked all the same).
        if c.len() <= bytes.len() {
            out.push((from, c));
            self.count("challenges-sent");
        }
    }

    /// A keepalive carrying manager interest data: an agent's answer to a
    /// challenge. A cookie that checks out validates the address (within
    /// [`MAX_PEERS`] addresses) and the messages kept for it are handled.
    pub(super) fn on_cookie(
        &mut self,
        now: u64,
        from: SocketAddrV4,
        data: &[u8],
        out: &mut Vec<Outgoing>,
    ) {
        let ip = *from.ip();
        if !self.routability.check(now, ip, data) {
            self.count("challenge-bad-cookie");
            return;
        }
        let r = &mut self.routability;
        if !r.validated.contains_key(&ip) && r.validated.len() >= MAX_PEERS {
            self.count("validated-table-full");
            return;
        }
        r.validated.insert(
            ip,
            Validated {
                from,
                at: now,
                rechallenged: 0,
            },
        );
        self.count("agents-validated");
        if let Some(p) = self.routability.pending.remove(&ip) {
            for m in p.messages {
                out.extend(self.handle_datagram(now, p.from, &m));
                self.count("unvalidated-kept-handled");
            }
        }
    }

    /// Timers: kept messages past [`PENDING_FOR`] and validations past
    /// [`VALIDATED_FOR`] are dropped; a validation half run out is
    /// renewed by a fresh challenge (at most every [`RECHALLENGE_EVERY`]).
    pub(super) fn routability_tick(&mut self, now: u64, out: &mut Vec<Outgoing>) {
        let r = &mut self.routability;
        let before = r.pending.values().map(|p| p.messages.len()).sum::<usize>();
        r.pending
            .retain(|_, p| now.saturating_sub(p.since) < PENDING_FOR);
        let expired = before - r.pending.values().map(|p| p.messages.len()).sum::<usize>();
        r.validated
            .retain(|_, v| now.saturating_sub(v.at) < VALIDATED_FOR);
        let mut again = Vec::new();
        for (ip, v) in r.validated.iter_mut() {
            if now.saturating_sub(v.at) >= RECHALLENGE_AFTER
                && now.saturating_sub(v.rechallenged) >= RECHALLENGE_EVERY
            {
                v.rechallenged = now;
                again.push((*ip, v.from));
            }
        }
        for (ip, to) in again {
            out.push((to, self.routability.challenge(now, ip)));
            self.count("challenges-sent");
        }
        if expired > 0 {
            *self.counters.entry("unvalidated-expired").or_default() += expired as u64;
        }
    }

    /// Addresses validated and still within `VALIDATED_FOR` at `now`.
    pub fn validated_count(&self, now: u64) -> usize {
        self.routability
            .validated
            .values()
            .filter(|v| now.saturating_sub(v.at) < VALIDATED_FOR)
            .count()
    }
}
