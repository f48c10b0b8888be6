//! Checking a received message's signature against the keys a receiver
//! accepts ([`AuthPolicy::verify`]); the replay window is checked apart
//! ([`crate::ReplayWindow`]).

use crate::message::ServiceMessage;
use crate::numbers::MessageType;
use crate::security::{AuthAlgorithm, Key, KeyRing};
use std::fmt;
use subtle::ConstantTimeEq;

/// Why a message failed authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// Authentication is required and the message has no security segment.
    Unsigned,
    /// No accepted key has this key id.
    UnknownKey(u16),
    /// The key's acceptance window has passed.
    ExpiredKey(u16),
    /// The algorithm byte is unknown or does not match the key.
    BadAlgorithm(u8),
    /// The digest does not match the message (or the message has none).
    BadDigest,
    /// The sequence number is old or was seen already.
    Replay(u64),
    /// The key may not speak for the identity the message claims
    /// ([`crate::Key::identities`]).
    WrongIdentity(u16),
    /// The sequence number is further ahead of the receiver's clock than
    /// [`AuthPolicy::max_ahead_secs`] allows (it would lock the real
    /// sender out of the replay window).
    FarFuture(u64),
    /// The receiver segment names another receiver, or a message that must
    /// name its receiver does not (a replay from elsewhere).
    WrongReceiver,
}

impl AuthError {
    /// Short stable name for counters.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Unsigned => "unsigned",
            AuthError::UnknownKey(_) => "unknown-key",
            AuthError::ExpiredKey(_) => "expired-key",
            AuthError::BadAlgorithm(_) => "bad-algorithm",
            AuthError::BadDigest => "bad-digest",
            AuthError::Replay(_) => "replay",
            AuthError::WrongIdentity(_) => "wrong-identity",
            AuthError::FarFuture(_) => "far-future",
            AuthError::WrongReceiver => "wrong-receiver",
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Unsigned => write!(f, "message is not signed"),
            AuthError::UnknownKey(id) => write!(f, "unknown key id {id}"),
            AuthError::ExpiredKey(id) => write!(f, "key id {id} is no longer accepted"),
            AuthError::BadAlgorithm(a) => write!(f, "algorithm {a} does not match the key"),
            AuthError::BadDigest => write!(f, "digest does not match"),
            AuthError::Replay(s) => write!(f, "sequence {s} replayed or too old"),
            AuthError::WrongIdentity(id) => {
                write!(f, "key id {id} may not speak for the claimed identity")
            }
            AuthError::FarFuture(s) => write!(f, "sequence {s} is too far ahead of the clock"),
            AuthError::WrongReceiver => write!(f, "message names another receiver"),
        }
    }
}

impl std::error::Error for AuthError {}

/// What a receiver demands of incoming messages.
#[derive(Debug, Clone)]
pub struct AuthPolicy {
    /// Keys accepted, and the one to sign with.
    pub keys: KeyRing,
    /// Reject unsigned messages (true whenever a key is configured).
    pub require: bool,
    /// Accept unsigned IP-packet-only messages even when `require` is set
    /// (the seed's exemption). Off by default: an unsigned IP-packet-only
    /// message makes a manager place a flow (and answer with a signed
    /// update) and makes an agent forward the packet it carries, so
    /// accepting it lets anyone on the control LAN do both.
    pub allow_unsigned_ip_packet_only: bool,
    /// How far a signed message's sequence number may be ahead of
    /// `receiver's Unix time << 32`, seconds (default
    /// [`AuthPolicy::DEFAULT_MAX_AHEAD_SECS`]). Senders start their
    /// sequence at their Unix time `<< 32` ([`crate::SequenceSource`]), so
    /// a genuine sender is ahead only by clock skew plus its message count
    /// / 2^32; a message further ahead would push the replay window where
    /// the real sender cannot follow.
    pub max_ahead_secs: u64,
}

impl Default for AuthPolicy {
    fn default() -> Self {
        AuthPolicy {
            keys: KeyRing::default(),
            require: false,
            allow_unsigned_ip_packet_only: false,
            max_ahead_secs: Self::DEFAULT_MAX_AHEAD_SECS,
        }
    }
}

impl AuthPolicy {
    /// Default bound on sequence numbers ahead of the clock, seconds: five
    /// minutes of clock skew (NTP keeps hosts far closer).
    pub const DEFAULT_MAX_AHEAD_SECS: u64 = 300;

    /// No authentication.
    pub fn open() -> Self {
        Self::default()
    }

    /// Signs with and requires `key`; every message, IP-packet-only
    /// included, must be signed.
    pub fn with_key(key: Key) -> Self {
        let mut keys = KeyRing::default();
        keys.rotate_to(key, 0, 0);
        AuthPolicy {
            keys,
            require: true,
            ..Self::default()
        }
    }

    /// Checks a signed message's sequence number against the receiver's
    /// clock (`unix_secs`, seconds since 1970): errors with
    /// [`AuthError::FarFuture`] when it is more than
    /// [`AuthPolicy::max_ahead_secs`] ahead of `unix_secs << 32`.
    pub fn check_sequence(&self, seq: u64, unix_secs: u64) -> Result<(), AuthError> {
        let limit = unix_secs
            .saturating_add(self.max_ahead_secs)
            .saturating_mul(1 << 32);
        if seq > limit {
            Err(AuthError::FarFuture(seq))
        } else {
            Ok(())
        }
    }

    /// Checks the digest of a parsed message (not the replay window), and
    /// that the key may speak for the identity claimed (identity info's
    /// address, else `source`, the datagram's source address).
    pub fn verify_from(
        &self,
        msg: &ServiceMessage<'_>,
        now: u64,
        source: std::net::Ipv4Addr,
    ) -> Result<(), AuthError> {
        self.verify(msg, now)?;
        let Some(sec) = msg.security() else {
            return Ok(());
        };
        let claimed = match msg.identity() {
            Some(i) if !i.address.is_unspecified() => i.address,
            _ => source,
        };
        match self.keys.get(sec.key_id) {
            Some(k) if !k.may_speak_for(claimed) => Err(AuthError::WrongIdentity(k.id)),
            _ => Ok(()),
        }
    }

    /// Checks the digest of a parsed message (not the replay window).
    pub fn verify(&self, msg: &ServiceMessage<'_>, now: u64) -> Result<(), AuthError> {
        let Some(sec) = msg.security() else {
            let exempt =
                self.allow_unsigned_ip_packet_only && msg.msg_type() == MessageType::IpPacketOnly;
            return if self.require && !exempt {
                Err(AuthError::Unsigned)
            } else {
                Ok(())
            };
        };
        let key = self
            .keys
            .get(sec.key_id)
            .ok_or(AuthError::UnknownKey(sec.key_id))?;
        if key.accept_until.is_some_and(|t| now > t) {
            return Err(AuthError::ExpiredKey(key.id));
        }
        if AuthAlgorithm::from_u8(sec.algorithm) != Some(key.algorithm)
            || sec.digest.len() != key.algorithm.digest_len()
        {
            return Err(AuthError::BadAlgorithm(sec.algorithm));
        }
        let range = msg.digest_range().ok_or(AuthError::BadDigest)?;
        let mut d = [0u8; 32];
        let n = key.digest(msg.as_bytes(), range, &mut d);
        if bool::from(d[..n].ct_eq(sec.digest)) {
            Ok(())
        } else {
            Err(AuthError::BadDigest)
        }
    }
}
