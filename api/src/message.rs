//! A received message: [`ServiceMessage::parse`] checks the whole datagram
//! once (header, every segment's framing and body, the placement rules of
//! `rules.rs`) and returns a view that borrows it.

use crate::affinities::AffinityGroups;
use crate::error::{ParseError, SegmentErrorKind};
use crate::header::Header;
use crate::numbers::{seg, MessageType, HEADER_LEN, REQUIRED_FLAG, SEGMENT_HEADER_LEN};
use crate::rules;
use crate::segment::{frame, peek_type, DenyReason, IdentityInfo, Security, Segment, Segments};

/// A validated service message borrowing its datagram.
#[derive(Debug, Clone, Copy)]
pub struct ServiceMessage<'a> {
    /// The checked header.
    pub header: Header,
    raw: &'a [u8],
    once: Singletons<'a>,
}

/// The segments a message carries at most once, as parsing found them.
#[derive(Debug, Clone, Copy, Default)]
struct Singletons<'a> {
    /// Security segment and the byte offset of its digest in `raw`.
    security: Option<(Security<'a>, usize)>,
    identity: Option<IdentityInfo<'a>>,
    sm_interest_data: Option<&'a [u8]>,
    fa_interest_data: Option<&'a [u8]>,
    ip_packet: Option<&'a [u8]>,
    deny: Option<DenyReason>,
}

impl<'a> ServiceMessage<'a> {
    /// Checks the whole datagram: header, every segment's claimed length and
    /// body, placement rules, required segments. Never allocates.
    pub fn parse(datagram: &'a [u8]) -> Result<ServiceMessage<'a>, ParseError> {
        let header = Header::parse(datagram)?;
        let mut msg = ServiceMessage {
            header,
            raw: datagram,
            once: Singletons::default(),
        };
        // Bit n set: segment type n seen (types 1..=31 are tracked).
        let mut seen: u32 = 0;
        let mut offset = HEADER_LEN;
        let mut index = 0;
        while offset < datagram.len() {
            let rest = &datagram[offset..];
            let err = |kind| ParseError::Segment {
                index,
                seg_type: peek_type(rest),
                kind,
            };
            let framed = frame(rest).map_err(err)?;
            let required = framed.raw_type & REQUIRED_FLAG != 0;
            let t = framed.raw_type & !REQUIRED_FLAG;
            let body = framed.body;
            // Nothing, known or not, may follow the IP packet segment.
            if msg.once.ip_packet.is_some() {
                return Err(ParseError::Segment {
                    index: index - 1,
                    seg_type: seg::IP_PACKET,
                    kind: SegmentErrorKind::PacketNotLast,
                });
            }
            match Segment::body_bounds(t) {
                None if required => return Err(err(SegmentErrorKind::UnknownRequired)),
                None => {}
                Some((min, max)) => {
                    if !rules::allowed(header.msg_type, t) {
                        return Err(err(SegmentErrorKind::NotAllowed));
                    }
                    if body.len() < min {
                        return Err(err(SegmentErrorKind::BodyTooShort {
                            need: min,
                            have: body.len(),
                        }));
                    }
                    if body.len() > max {
                        return Err(err(SegmentErrorKind::BodyTooLong {
                            max,
                            have: body.len(),
                        }));
                    }
                    let bit = 1u32 << t.min(31);
                    if rules::once(t) && seen & bit != 0 {
                        return Err(err(SegmentErrorKind::Duplicate));
                    }
                    seen |= bit;
                    match Segment::parse_body(t, body).map_err(err)? {
                        Segment::Security(s) => {
                            if index != 0 {
                                return Err(err(SegmentErrorKind::SecurityNotFirst));
                            }
                            let digest_at = offset + SEGMENT_HEADER_LEN + Security::DIGEST_OFFSET;
                            msg.once.security = Some((s, digest_at));
                        }
                        Segment::IdentityInfo(i) => msg.once.identity = Some(i),
                        Segment::SmInterestData(d) => msg.once.sm_interest_data = Some(d),
                        Segment::FaInterestData(d) => msg.once.fa_interest_data = Some(d),
                        Segment::IpPacket(p) => msg.once.ip_packet = Some(p),
                        Segment::DenyReason(d) => msg.once.deny = Some(d),
                        _ => {}
                    }
                }
            }
            offset += framed.len;
            index += 1;
        }
        if let Some(t) = rules::required_segments(header.msg_type).find(|t| seen & (1 << t) == 0) {
            return Err(ParseError::MissingSegment {
                msg_type: header.msg_type,
                seg_type: t,
            });
        }
        Ok(msg)
    }

    /// The header's message type.
    pub fn msg_type(&self) -> MessageType {
        self.header.msg_type
    }
    /// The sender's sequence number (header bytes 8–15).
    pub fn sequence(&self) -> u64 {
        self.header.sequence
    }
    /// The whole datagram.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }
    /// The security segment (type 6), when the message is signed.
    pub fn security(&self) -> Option<Security<'a>> {
        self.once.security.map(|s| s.0)
    }
    /// Byte range of the digest inside [`ServiceMessage::as_bytes`].
    pub fn digest_range(&self) -> Option<std::ops::Range<usize>> {
        self.once.security.map(|(s, off)| off..off + s.digest.len())
    }
    /// The identity info segment (type 9), if present.
    pub fn identity(&self) -> Option<IdentityInfo<'a>> {
        self.once.identity
    }
    /// Manager interest data (type 7), 0–1024 bytes, if present.
    pub fn sm_interest_data(&self) -> Option<&'a [u8]> {
        self.once.sm_interest_data
    }
    /// Agent interest data (type 8), 0–1024 bytes, if present.
    pub fn fa_interest_data(&self) -> Option<&'a [u8]> {
        self.once.fa_interest_data
    }
    /// The carried IPv4 packet (type 15), from its IP header, if present.
    pub fn ip_packet(&self) -> Option<&'a [u8]> {
        self.once.ip_packet
    }
    /// The deny reason (type 16) of an update-deny.
    pub fn deny_reason(&self) -> Option<DenyReason> {
        self.once.deny
    }

    /// All segments in order, with their Required flag. Unknown optional
    /// segments appear as [`Segment::Unknown`].
    pub fn segments(&self) -> Segments<'a> {
        Segments::new(&self.raw[HEADER_LEN..])
    }

    /// The affinities of an update (or the flow key of an interest match),
    /// each with the per-affinity segments that apply to it.
    pub fn affinities(&self) -> AffinityGroups<'a> {
        AffinityGroups::new(self.segments())
    }
}
