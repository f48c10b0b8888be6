//! Keys and sequence numbers: the digest algorithms (keyed MD5 as in the
//! seed, HMAC-SHA256 by default), signing in place, key rotation, the replay
//! window and the sender's sequence source. Checking a received message
//! against them is `auth.rs`.

use crate::numbers::{HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::segment::Security;
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;
use std::fmt;

/// Digest algorithms of the security segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum AuthAlgorithm {
    /// MD5(key ‖ message ‖ key), 16 bytes: the seed's keyed MD5.
    KeyedMd5 = 1,
    /// HMAC-SHA256(key, message), 32 bytes: the default.
    HmacSha256 = 2,
}

impl AuthAlgorithm {
    /// The algorithm of a security segment's algorithm byte; `None` if unknown.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(AuthAlgorithm::KeyedMd5),
            2 => Some(AuthAlgorithm::HmacSha256),
            _ => None,
        }
    }
    /// Digest length, bytes: 16 (keyed MD5) or 32 (HMAC-SHA256).
    pub fn digest_len(self) -> usize {
        match self {
            AuthAlgorithm::KeyedMd5 => 16,
            AuthAlgorithm::HmacSha256 => 32,
        }
    }
}

/// A shared secret with its key id.
#[derive(Clone, PartialEq, Eq)]
pub struct Key {
    /// Key id carried in the security segment.
    pub id: u16,
    /// Digest algorithm used with this key.
    pub algorithm: AuthAlgorithm,
    /// The shared secret, any length.
    pub secret: Vec<u8>,
    /// Accept messages signed with this key until this time (seconds, the
    /// caller's clock); `None` = no end. Set when a newer key replaces it.
    pub accept_until: Option<u64>,
    /// The identities (identity-info addresses) a message signed with this
    /// key may claim; empty = any. Binding a key to its holder's addresses
    /// keeps one key holder from speaking for another (PROTOCOL.md,
    /// "Security": a claimed identity owns affinities and a replay window).
    pub identities: Vec<std::net::Ipv4Addr>,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("id", &self.id)
            .field("algorithm", &self.algorithm)
            .field("secret", &"<redacted>")
            .field("accept_until", &self.accept_until)
            .field("identities", &self.identities)
            .finish()
    }
}

impl Key {
    /// A key accepted without an end.
    pub fn new(id: u16, algorithm: AuthAlgorithm, secret: impl Into<Vec<u8>>) -> Key {
        Key {
            id,
            algorithm,
            secret: secret.into(),
            accept_until: None,
            identities: Vec::new(),
        }
    }

    /// The same key, allowed to speak only for `identities` (identity-info
    /// addresses; empty = any).
    pub fn for_identities(mut self, identities: Vec<std::net::Ipv4Addr>) -> Key {
        self.identities = identities;
        self
    }

    /// Whether a message signed with this key may claim `identity` (the
    /// identity info's address, or the datagram's source address when the
    /// message has none).
    pub fn may_speak_for(&self, identity: std::net::Ipv4Addr) -> bool {
        self.identities.is_empty() || self.identities.contains(&identity)
    }

    /// Digest of `msg` with the bytes in `zeroed` treated as zero.
    pub(crate) fn digest(
        &self,
        msg: &[u8],
        zeroed: std::ops::Range<usize>,
        out: &mut [u8; 32],
    ) -> usize {
        let zeros = [0u8; Security::MAX_DIGEST_LEN];
        let parts = [
            &msg[..zeroed.start],
            &zeros[..zeroed.len()],
            &msg[zeroed.end..],
        ];
        match self.algorithm {
            AuthAlgorithm::KeyedMd5 => {
                let mut h = Md5::new();
                h.update(&self.secret);
                for p in parts {
                    h.update(p);
                }
                h.update(&self.secret);
                out[..16].copy_from_slice(&h.finalize());
                16
            }
            AuthAlgorithm::HmacSha256 => {
                // HMAC accepts keys of any length.
                let Ok(mut m) = Hmac::<Sha256>::new_from_slice(&self.secret) else {
                    return 0;
                };
                for p in parts {
                    m.update(p);
                }
                out.copy_from_slice(&m.finalize().into_bytes());
                32
            }
        }
    }

    /// Fills in the digest of a complete message whose first segment is a
    /// security segment for this key (as [`crate::MessageBuilder::signed`]
    /// and [`crate::emit_prefix`] write it). Does nothing to a message
    /// without room for it.
    pub fn sign_in_place(&self, msg: &mut [u8]) {
        let start = HEADER_LEN + SEGMENT_HEADER_LEN + Security::DIGEST_OFFSET;
        let end = start + self.algorithm.digest_len();
        if msg.len() < end {
            return;
        }
        let mut d = [0u8; 32];
        let n = self.digest(msg, start..end, &mut d);
        msg[start..end].copy_from_slice(&d[..n]);
    }
}

/// Keys a node accepts and the one it signs with.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    keys: Vec<Key>,
    send: Option<u16>,
}

impl KeyRing {
    /// Adds (or replaces) a key and makes it the signing key. The previous
    /// signing key stays accepted for `overlap_secs` after `now`.
    pub fn rotate_to(&mut self, key: Key, now: u64, overlap_secs: u64) {
        if let Some(old) = self
            .send
            .and_then(|id| self.keys.iter_mut().find(|k| k.id == id))
        {
            if old.id != key.id {
                old.accept_until = Some(now.saturating_add(overlap_secs));
            }
        }
        self.send = Some(key.id);
        self.keys.retain(|k| k.id != key.id);
        self.keys.push(key);
    }

    /// Adds a key that is accepted but not used for signing.
    pub fn add_accepted(&mut self, key: Key) {
        self.keys.retain(|k| k.id != key.id);
        self.keys.push(key);
    }

    /// Drops keys whose acceptance window has passed.
    pub fn expire(&mut self, now: u64) {
        self.keys
            .retain(|k| k.accept_until.is_none_or(|t| now <= t));
    }

    /// The key outgoing messages are signed with, if any.
    pub fn signing_key(&self) -> Option<&Key> {
        self.send
            .and_then(|id| self.keys.iter().find(|k| k.id == id))
    }

    /// The accepted key with key id `id`.
    pub fn get(&self, id: u16) -> Option<&Key> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// Whether no key is configured.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Sliding replay window over a sender's sequence numbers (as in IPsec):
/// accepts each number once, and nothing older than 64 behind the highest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    highest: u64,
    /// Bit i set: `highest - i` was seen.
    seen: u64,
    started: bool,
}

impl ReplayWindow {
    /// Width of the window: sequence numbers accepted behind the highest seen.
    pub const SIZE: u64 = 64;

    /// Whether `seq` would be accepted, without recording it.
    pub fn check(&self, seq: u64) -> bool {
        if !self.started || seq > self.highest {
            return true;
        }
        let age = self.highest - seq;
        age < Self::SIZE && self.seen & (1 << age) == 0
    }

    /// The highest sequence number accepted (0 before the first).
    pub fn highest(&self) -> u64 {
        self.highest
    }

    /// Whether `seq` is older than the window (not merely a duplicate
    /// inside it): the sender is behind, e.g. restarted with its clock
    /// stepped back.
    pub fn is_stale(&self, seq: u64) -> bool {
        self.started && seq <= self.highest && self.highest - seq >= Self::SIZE
    }

    /// Records `seq`; false if it is a replay or too old.
    pub fn accept(&mut self, seq: u64) -> bool {
        if !self.check(seq) {
            return false;
        }
        if !self.started {
            self.started = true;
            self.highest = seq;
            self.seen = 1;
        } else if seq > self.highest {
            let shift = seq - self.highest;
            self.seen = if shift >= Self::SIZE {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.highest = seq;
        } else {
            self.seen |= 1 << (self.highest - seq);
        }
        true
    }
}

/// Sequence numbers for a sender: starts at the Unix time in the high 32
/// bits so that a restarted sender keeps moving forward in its peers'
/// replay windows.
#[derive(Debug, Clone)]
pub struct SequenceSource {
    next: u64,
}

impl SequenceSource {
    /// Numbers after `unix_secs << 32`.
    pub fn starting_at_unix_time(unix_secs: u64) -> Self {
        SequenceSource {
            next: unix_secs << 32,
        }
    }
    /// Numbers after the current Unix time `<< 32` (0 if the clock is before 1970).
    pub fn from_system_clock() -> Self {
        Self::starting_at_unix_time(unix_now())
    }
    /// Moves on so the next number is above `seq` (a receiver's
    /// [`crate::DenyReason::STALE_SEQUENCE`] named it); never moves back.
    pub fn advance_past(&mut self, seq: u64) {
        self.next = self.next.max(seq);
    }

    #[allow(clippy::should_implement_trait)]
    /// The next sequence number (wrapping).
    pub fn next(&mut self) -> u64 {
        self.next = self.next.wrapping_add(1);
        self.next
    }
}

/// The current Unix time in seconds (0 if the clock is before 1970): the
/// clock sequence numbers start from ([`SequenceSource`]) and are bounded
/// by ([`crate::AuthPolicy::check_sequence`]).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
