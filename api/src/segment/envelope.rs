//! Segments that frame a message or ride along with it rather than describe
//! an affinity: security (type 6), manager and agent interest data (7, 8),
//! identity info (9) and the IP packet (15). Layouts: PROTOCOL.md,
//! "Segments".

use super::layout::{bad, read_whole, SegmentBody};
use crate::codec::{Reader, Writer};
use crate::error::SegmentErrorKind;
use crate::numbers::{seg, SEGMENT_HEADER_LEN};
use std::net::Ipv4Addr;

/// Security segment (type 6, 4 + digest bytes). The digest covers the whole
/// message with the digest bytes set to zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Security<'a> {
    /// [`crate::AuthAlgorithm`] number: 1 keyed MD5 (16-byte digest), 2
    /// HMAC-SHA256 (32-byte digest).
    pub algorithm: u8,
    /// Selects the shared key.
    pub key_id: u16,
    /// The digest bytes (16 or 32).
    pub digest: &'a [u8],
}

impl Security<'_> {
    /// Where the digest starts in the body, bytes (after algorithm,
    /// reserved byte and key id).
    pub(crate) const DIGEST_OFFSET: usize = 4;
    /// Longest digest a receiver accepts, bytes.
    pub(crate) const MAX_DIGEST_LEN: usize = 64;
}

impl<'a> SegmentBody<'a> for Security<'a> {
    type Value = Self;
    const TYPE: u16 = seg::SECURITY;
    const MIN_LEN: usize = Self::DIGEST_OFFSET;
    const MAX_LEN: usize = Self::DIGEST_OFFSET + Self::MAX_DIGEST_LEN;

    fn parse(body: &'a [u8]) -> Result<Self, SegmentErrorKind> {
        let mut r = Reader::new(body);
        let algorithm = r.u8();
        r.zero(1);
        let key_id = r.u16();
        read_whole::<Self>(&r, body)?;
        let digest = r.rest();
        // PROTOCOL.md "6 — security": algorithm 1 has a 16-byte digest,
        // 2 a 32-byte one; anything else is malformed.
        let want = match algorithm {
            1 => 16,
            2 => 32,
            _ => return Err(bad("security algorithm", algorithm.into())),
        };
        if digest.len() != want {
            return Err(bad("security digest length", digest.len() as u32));
        }
        Ok(Security {
            algorithm,
            key_id,
            digest,
        })
    }

    fn emit(v: &Self, w: &mut Writer<'_>) {
        w.u8(v.algorithm);
        w.zero(1);
        w.u16(v.key_id);
        w.bytes(v.digest);
    }

    fn len(v: &Self) -> usize {
        Self::DIGEST_OFFSET + v.digest.len()
    }
}

/// Identity info segment (type 9, 4 + 0–255 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentityInfo<'a> {
    /// The sender's address; it identifies the manager that owns affinities.
    pub address: Ipv4Addr,
    /// UTF-8 host name, at most 255 bytes.
    pub host_name: &'a str,
}

impl<'a> SegmentBody<'a> for IdentityInfo<'a> {
    type Value = Self;
    const TYPE: u16 = seg::IDENTITY_INFO;
    const MIN_LEN: usize = 4;
    const MAX_LEN: usize = 4 + 255;

    fn parse(body: &'a [u8]) -> Result<Self, SegmentErrorKind> {
        let mut r = Reader::new(body);
        let address = r.addr();
        read_whole::<Self>(&r, body)?;
        let host_name = std::str::from_utf8(r.rest())
            .map_err(|e| bad("host name (UTF-8 at byte)", e.valid_up_to() as u32))?;
        Ok(IdentityInfo { address, host_name })
    }

    fn emit(v: &Self, w: &mut Writer<'_>) {
        w.addr(v.address);
        w.bytes(v.host_name.as_bytes());
    }

    fn len(v: &Self) -> usize {
        Self::MIN_LEN + v.host_name.len()
    }
}

/// A body the codec carries as opaque bytes of `MIN..=MAX` length; the
/// [`super::Segment`] variant holds the borrowed slice.
pub(crate) struct Opaque<const TYPE: u16, const MIN: usize, const MAX: usize>;

impl<'a, const TYPE: u16, const MIN: usize, const MAX: usize> SegmentBody<'a>
    for Opaque<TYPE, MIN, MAX>
{
    type Value = &'a [u8];
    const TYPE: u16 = TYPE;
    const MIN_LEN: usize = MIN;
    const MAX_LEN: usize = MAX;

    fn parse(body: &'a [u8]) -> Result<&'a [u8], SegmentErrorKind> {
        Ok(body)
    }

    fn emit(v: &&'a [u8], w: &mut Writer<'_>) {
        w.bytes(v);
    }

    fn len(v: &&'a [u8]) -> usize {
        v.len()
    }
}

/// Manager interest data (type 7, 0–1024 bytes): opaque to the agent,
/// echoed in interest matches.
pub(crate) type SmInterestDataBody = Opaque<{ seg::SM_INTEREST_DATA }, 0, 1024>;
/// Agent interest data (type 8, 0–1024 bytes): opaque to the manager,
/// echoed in updates.
pub(crate) type FaInterestDataBody = Opaque<{ seg::FA_INTEREST_DATA }, 0, 1024>;
/// IP packet (type 15): at least an IPv4 header (20 bytes), at most what
/// the 16-bit segment length field leaves.
pub(crate) type IpPacketBody =
    Opaque<{ seg::IP_PACKET }, 20, { u16::MAX as usize - SEGMENT_HEADER_LEN }>;
