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
        }
    }
}

impl std::error::Error for AuthError {}

/// What a receiver demands of incoming messages.
#[derive(Debug, Clone, Default)]
pub struct AuthPolicy {
    /// Keys accepted, and the one to sign with.
    pub keys: KeyRing,
    /// Reject unsigned messages (true whenever a key is configured).
    pub require: bool,
    /// Accept unsigned IP-packet-only messages even when `require` is set (seed).
    pub allow_unsigned_ip_packet_only: bool,
}

impl AuthPolicy {
    /// No authentication.
    pub fn open() -> Self {
        Self::default()
    }

    /// Signs with and requires `key`.
    pub fn with_key(key: Key) -> Self {
        let mut keys = KeyRing::default();
        keys.rotate_to(key, 0, 0);
        AuthPolicy {
            keys,
            require: true,
            allow_unsigned_ip_packet_only: true,
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
