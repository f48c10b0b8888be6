//! Whole service messages: validation, segment iteration, affinity grouping
//! and emission.

use crate::error::{EmitError, ParseError, SegmentErrorKind};
use crate::header::{Header, MessageType, HEADER_LEN};
use crate::security::Key;
use crate::segment::*;

/// Where a segment type may appear.
fn allowed(msg: MessageType, t: u16) -> bool {
    use seg::*;
    use MessageType::*;
    const ACTIONS: [u16; 5] = [
        NAT_ACTION,
        ADVERTISE_ACTION,
        SEQ_ADJUST_ACTION,
        INTEREST_CRITERIA_ACTION,
        ACTION_LIST,
    ];
    if t == SECURITY || t == IDENTITY_INFO {
        return true;
    }
    let per_affinity = |t| {
        ACTIONS.contains(&t)
            || matches!(
                t,
                AFFINITY_IDENTIFIER | SERVICE_PRECEDENCE | BACKUP_PRECEDENCE
            )
    };
    match msg {
        AffinityUpdateWildcard => {
            t == WILDCARD_AFFINITY || t == SM_INTEREST_DATA || per_affinity(t)
        }
        AffinityUpdateFixed => {
            matches!(
                t,
                FIXED_AFFINITY | SM_INTEREST_DATA | FA_INTEREST_DATA | IP_PACKET
            ) || per_affinity(t)
        }
        AffinityUpdateDeny => matches!(
            t,
            DENY_REASON | AFFINITY_IDENTIFIER | WILDCARD_AFFINITY | FIXED_AFFINITY
        ),
        InterestMatchWildcard | InterestMatchFixed => matches!(
            t,
            AFFINITY_IDENTIFIER | FIXED_AFFINITY | SM_INTEREST_DATA | FA_INTEREST_DATA | IP_PACKET
        ),
        IpPacketOnly => matches!(t, IP_PACKET | FA_INTEREST_DATA),
        AgentHello => t == CAPABILITIES,
        Keepalive => false,
        AffinityDumpRequest => t == AFFINITY_IDENTIFIER,
        StatisticsReport => matches!(t, STATISTICS | AFFINITY_IDENTIFIER | FIXED_AFFINITY),
    }
}

/// Segments each message type must carry.
fn required_segments(msg: MessageType) -> &'static [u16] {
    use seg::*;
    use MessageType::*;
    match msg {
        AffinityUpdateWildcard => &[WILDCARD_AFFINITY],
        AffinityUpdateFixed => &[FIXED_AFFINITY],
        AffinityUpdateDeny => &[DENY_REASON],
        InterestMatchWildcard | InterestMatchFixed => &[AFFINITY_IDENTIFIER, FIXED_AFFINITY],
        IpPacketOnly => &[IP_PACKET],
        AgentHello => &[CAPABILITIES],
        StatisticsReport => &[STATISTICS],
        Keepalive | AffinityDumpRequest => &[],
    }
}

/// Segment types that may appear at most once per message.
fn singleton(t: u16) -> bool {
    use seg::*;
    matches!(
        t,
        SECURITY
            | IDENTITY_INFO
            | SM_INTEREST_DATA
            | FA_INTEREST_DATA
            | IP_PACKET
            | DENY_REASON
            | CAPABILITIES
    )
}

/// A validated service message borrowing its datagram.
#[derive(Debug, Clone, Copy)]
pub struct ServiceMessage<'a> {
    pub header: Header,
    raw: &'a [u8],
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
            security: None,
            identity: None,
            sm_interest_data: None,
            fa_interest_data: None,
            ip_packet: None,
            deny: None,
        };
        // Bit n set: segment type n seen (types 1..=31 are tracked).
        let mut seen: u32 = 0;
        let mut offset = HEADER_LEN;
        let mut index = 0;
        while offset < datagram.len() {
            let rest = &datagram[offset..];
            let raw_type = if rest.len() >= 2 {
                u16::from_be_bytes([rest[0], rest[1]])
            } else {
                0
            };
            let err = |kind| ParseError::Segment {
                index,
                seg_type: raw_type,
                kind,
            };
            if rest.len() < SEGMENT_HEADER_LEN {
                return Err(err(SegmentErrorKind::BadLength {
                    claimed: 0,
                    remaining: rest.len(),
                }));
            }
            let claimed = u16::from_be_bytes([rest[2], rest[3]]) as usize;
            if claimed < SEGMENT_HEADER_LEN || claimed > rest.len() {
                return Err(err(SegmentErrorKind::BadLength {
                    claimed,
                    remaining: rest.len(),
                }));
            }
            let required = raw_type & REQUIRED_FLAG != 0;
            let t = raw_type & !REQUIRED_FLAG;
            let body = &rest[SEGMENT_HEADER_LEN..claimed];
            match body_bounds(t) {
                None if required => return Err(err(SegmentErrorKind::UnknownRequired)),
                None => {}
                Some((min, max)) => {
                    if !allowed(header.msg_type, t) {
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
                    if singleton(t) && seen & bit != 0 {
                        return Err(err(SegmentErrorKind::Duplicate));
                    }
                    seen |= bit;
                    if msg.ip_packet.is_some() {
                        return Err(ParseError::Segment {
                            index: index - 1,
                            seg_type: seg::IP_PACKET,
                            kind: SegmentErrorKind::PacketNotLast,
                        });
                    }
                    match parse_body(t, body).map_err(err)? {
                        Segment::Security(s) => {
                            if index != 0 {
                                return Err(err(SegmentErrorKind::SecurityNotFirst));
                            }
                            msg.security = Some((s, offset + SEGMENT_HEADER_LEN + 4));
                        }
                        Segment::IdentityInfo(i) => msg.identity = Some(i),
                        Segment::SmInterestData(d) => msg.sm_interest_data = Some(d),
                        Segment::FaInterestData(d) => msg.fa_interest_data = Some(d),
                        Segment::IpPacket(p) => msg.ip_packet = Some(p),
                        Segment::DenyReason(d) => msg.deny = Some(d),
                        _ => {}
                    }
                }
            }
            offset += claimed;
            index += 1;
        }
        for &t in required_segments(header.msg_type) {
            if seen & (1 << t) == 0 {
                return Err(ParseError::MissingSegment {
                    msg_type: header.msg_type,
                    seg_type: t,
                });
            }
        }
        Ok(msg)
    }

    pub fn msg_type(&self) -> MessageType {
        self.header.msg_type
    }
    pub fn sequence(&self) -> u64 {
        self.header.sequence
    }
    /// The whole datagram.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }
    pub fn security(&self) -> Option<Security<'a>> {
        self.security.map(|s| s.0)
    }
    /// Byte range of the digest inside [`ServiceMessage::as_bytes`].
    pub fn digest_range(&self) -> Option<std::ops::Range<usize>> {
        self.security.map(|(s, off)| off..off + s.digest.len())
    }
    pub fn identity(&self) -> Option<IdentityInfo<'a>> {
        self.identity
    }
    pub fn sm_interest_data(&self) -> Option<&'a [u8]> {
        self.sm_interest_data
    }
    pub fn fa_interest_data(&self) -> Option<&'a [u8]> {
        self.fa_interest_data
    }
    pub fn ip_packet(&self) -> Option<&'a [u8]> {
        self.ip_packet
    }
    pub fn deny_reason(&self) -> Option<DenyReason> {
        self.deny
    }

    /// All segments in order, with their Required flag. Unknown optional
    /// segments appear as [`Segment::Unknown`].
    pub fn segments(&self) -> Segments<'a> {
        Segments {
            rest: &self.raw[HEADER_LEN..],
        }
    }

    /// The affinities of an update (or the flow key of an interest match),
    /// each with the per-affinity segments that apply to it.
    pub fn affinities(&self) -> AffinityGroups<'a> {
        let mut defaults = AffinityEntry::default_for(AffinityRef::Fixed(FixedAffinity::default()));
        let mut it = self.segments();
        loop {
            let before = it.rest;
            match it.next() {
                Some((Segment::WildcardAffinity(_) | Segment::FixedAffinity(_), _)) => {
                    it.rest = before;
                    break;
                }
                Some((s, _)) => defaults.apply(&s),
                None => break,
            }
        }
        AffinityGroups { it, defaults }
    }
}

/// Iterator over a validated message's segments.
#[derive(Debug, Clone)]
pub struct Segments<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Segments<'a> {
    type Item = (Segment<'a>, bool);
    fn next(&mut self) -> Option<Self::Item> {
        // The message was validated by `parse`; these checks only keep the
        // iterator total (it stops instead of panicking).
        if self.rest.len() < SEGMENT_HEADER_LEN {
            return None;
        }
        let raw_type = u16::from_be_bytes([self.rest[0], self.rest[1]]);
        let len = u16::from_be_bytes([self.rest[2], self.rest[3]]) as usize;
        if len < SEGMENT_HEADER_LEN || len > self.rest.len() {
            self.rest = &[];
            return None;
        }
        let body = &self.rest[SEGMENT_HEADER_LEN..len];
        self.rest = &self.rest[len..];
        let t = raw_type & !REQUIRED_FLAG;
        let seg = match body_bounds(t) {
            Some(_) => parse_body(t, body).ok()?,
            None => Segment::Unknown { seg_type: t, body },
        };
        Some((seg, raw_type & REQUIRED_FLAG != 0))
    }
}

/// The affinity an [`AffinityEntry`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AffinityRef {
    Wildcard(WildcardAffinity),
    Fixed(FixedAffinity),
}

/// One affinity of a message and the segments that apply to it: those
/// placed before the first affinity (message defaults), overridden by those
/// placed after it and before the next affinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AffinityEntry<'a> {
    pub affinity: AffinityRef,
    pub identifier: Option<AffinityIdentifier>,
    pub service_precedence: Option<ServicePrecedence>,
    pub backup_precedence: Option<BackupPrecedence>,
    pub nat: Option<NatAction>,
    pub advertise: Option<AdvertiseAction>,
    pub seq_adjust: Option<SeqAdjustAction>,
    pub interest: Option<InterestCriteria>,
    pub action_list: Option<ActionList<'a>>,
}

impl<'a> AffinityEntry<'a> {
    fn default_for(affinity: AffinityRef) -> Self {
        AffinityEntry {
            affinity,
            identifier: None,
            service_precedence: None,
            backup_precedence: None,
            nat: None,
            advertise: None,
            seq_adjust: None,
            interest: None,
            action_list: None,
        }
    }

    fn apply(&mut self, s: &Segment<'a>) {
        match *s {
            Segment::AffinityIdentifier(v) => self.identifier = Some(v),
            Segment::ServicePrecedence(v) => self.service_precedence = Some(v),
            Segment::BackupPrecedence(v) => self.backup_precedence = Some(v),
            Segment::NatAction(v) => self.nat = Some(v),
            Segment::AdvertiseAction(v) => self.advertise = Some(v),
            Segment::SeqAdjustAction(v) => self.seq_adjust = Some(v),
            Segment::InterestCriteria(v) => self.interest = Some(v),
            Segment::ActionList(v) => self.action_list = Some(v),
            _ => {}
        }
    }
}

/// Iterator over the affinities of a message (see [`ServiceMessage::affinities`]).
#[derive(Debug, Clone)]
pub struct AffinityGroups<'a> {
    it: Segments<'a>,
    defaults: AffinityEntry<'a>,
}

impl<'a> Iterator for AffinityGroups<'a> {
    type Item = AffinityEntry<'a>;
    fn next(&mut self) -> Option<AffinityEntry<'a>> {
        let affinity = loop {
            match self.it.next()? {
                (Segment::WildcardAffinity(w), _) => break AffinityRef::Wildcard(w),
                (Segment::FixedAffinity(f), _) => break AffinityRef::Fixed(f),
                _ => {}
            }
        };
        let mut entry = self.defaults;
        entry.affinity = affinity;
        loop {
            let before = self.it.rest;
            match self.it.next() {
                Some((Segment::WildcardAffinity(_) | Segment::FixedAffinity(_), _)) => {
                    self.it.rest = before;
                    break;
                }
                Some((s, _)) => entry.apply(&s),
                None => break,
            }
        }
        Some(entry)
    }
}

/// Whether a segment type is marked Required by default when emitted: the
/// receiver must not act on the message without understanding it.
fn required_by_default(t: u16) -> bool {
    use seg::*;
    matches!(
        t,
        WILDCARD_AFFINITY
            | FIXED_AFFINITY
            | SECURITY
            | NAT_ACTION
            | SEQ_ADJUST_ACTION
            | INTEREST_CRITERIA_ACTION
            | IP_PACKET
            | DENY_REASON
    )
}

/// Builds a message into an owned buffer.
#[derive(Debug, Clone)]
pub struct MessageBuilder {
    buf: Vec<u8>,
    msg_type: MessageType,
    sequence: u64,
    key: Option<Key>,
    error: Option<EmitError>,
}

impl MessageBuilder {
    pub fn new(msg_type: MessageType, sequence: u64) -> Self {
        // Room for a typical message (a flow's two fixed affinities and a
        // returned SYN) without growing the buffer segment by segment.
        let mut buf = Vec::with_capacity(512);
        buf.resize(HEADER_LEN, 0);
        MessageBuilder {
            buf,
            msg_type,
            sequence,
            key: None,
            error: None,
        }
    }

    /// A message signed with `key` on [`MessageBuilder::finish`]. The
    /// security segment is placed first, as the protocol requires.
    pub fn signed(msg_type: MessageType, sequence: u64, key: &Key) -> Self {
        let mut b = Self::new(msg_type, sequence);
        let zero = [0u8; 64];
        let digest = &zero[..key.algorithm.digest_len()];
        b.push(Segment::Security(Security {
            algorithm: key.algorithm as u8,
            key_id: key.id,
            digest,
        }));
        b.key = Some(key.clone());
        b
    }

    /// Appends a segment with its default Required flag.
    pub fn push(&mut self, seg: Segment<'_>) -> &mut Self {
        let req = required_by_default(seg.seg_type());
        self.push_with(seg, req)
    }

    /// Appends a segment with an explicit Required flag.
    pub fn push_with(&mut self, seg: Segment<'_>, required: bool) -> &mut Self {
        let len = seg.wire_len();
        if len > u16::MAX as usize {
            self.error.get_or_insert(EmitError::TooLong { len });
            return self;
        }
        let start = self.buf.len();
        self.buf.resize(start + len, 0);
        seg.emit(required, &mut self.buf[start..]);
        self
    }

    /// Bytes emitted so far (header included).
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the header (and digest) and returns the datagram.
    pub fn finish(mut self) -> Result<Vec<u8>, EmitError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let len = self.buf.len();
        if len > u16::MAX as usize {
            return Err(EmitError::TooLong { len });
        }
        Header {
            msg_type: self.msg_type,
            length: len as u16,
            sequence: self.sequence,
        }
        .emit(&mut self.buf);
        if let Some(key) = &self.key {
            key.sign_in_place(&mut self.buf);
        }
        Ok(self.buf)
    }
}

/// Length of the prefix [`emit_prefix`] writes for these segments.
pub fn prefix_len(key: Option<&Key>, segments: &[Segment<'_>]) -> usize {
    HEADER_LEN
        + key.map_or(0, |k| SEGMENT_HEADER_LEN + 4 + k.algorithm.digest_len())
        + segments.iter().map(|s| s.wire_len()).sum::<usize>()
        + SEGMENT_HEADER_LEN
}

/// Writes a message's header, optional security segment, `segments` and the
/// header of a final IP packet segment of `packet_len` bytes into `out`, so
/// that the packet bytes following `out` complete the message. This is how
/// the data path punts a packet in its own buffer's headroom without copying
/// it. Returns the prefix length. When `key` is given, the digest is zero:
/// call [`Key::sign_in_place`] on the complete message afterwards.
pub fn emit_prefix(
    out: &mut [u8],
    msg_type: MessageType,
    sequence: u64,
    key: Option<&Key>,
    segments: &[Segment<'_>],
    packet_len: usize,
) -> Result<usize, EmitError> {
    let prefix = prefix_len(key, segments);
    if out.len() < prefix {
        return Err(EmitError::BufferTooSmall {
            need: prefix,
            have: out.len(),
        });
    }
    let total = prefix + packet_len;
    if total > u16::MAX as usize {
        return Err(EmitError::TooLong { len: total });
    }
    Header {
        msg_type,
        length: total as u16,
        sequence,
    }
    .emit(out);
    let mut pos = HEADER_LEN;
    if let Some(k) = key {
        let zero = [0u8; 64];
        let s = Segment::Security(Security {
            algorithm: k.algorithm as u8,
            key_id: k.id,
            digest: &zero[..k.algorithm.digest_len()],
        });
        s.emit(true, &mut out[pos..]);
        pos += s.wire_len();
    }
    for s in segments {
        s.emit(required_by_default(s.seg_type()), &mut out[pos..]);
        pos += s.wire_len();
    }
    let t = seg::IP_PACKET | REQUIRED_FLAG;
    out[pos..pos + 2].copy_from_slice(&t.to_be_bytes());
    out[pos + 2..pos + 4]
        .copy_from_slice(&((SEGMENT_HEADER_LEN + packet_len) as u16).to_be_bytes());
    Ok(pos + SEGMENT_HEADER_LEN)
}

/// The messages of one datagram. A datagram normally carries one message;
/// several may follow each other back to back, each framed by its header's
/// length field (a sender may coalesce them, and a burst sent with UDP
/// segmentation offload reaches a receiver that captures before the
/// kernel segments it — VPP's `af_packet` on a veth — as one datagram).
/// Yields each message's bytes for [`ServiceMessage::parse`]; a length
/// that is too small or runs past the datagram ends the walk with an error
/// (the messages before it stand). An empty datagram is one such error:
/// every datagram yields at least one item.
pub fn datagram_messages(datagram: &[u8]) -> DatagramMessages<'_> {
    DatagramMessages {
        rest: datagram,
        first: true,
    }
}

/// Iterator of [`datagram_messages`].
pub struct DatagramMessages<'a> {
    rest: &'a [u8],
    first: bool,
}

impl<'a> Iterator for DatagramMessages<'a> {
    type Item = Result<&'a [u8], ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() && !std::mem::take(&mut self.first) {
            return None;
        }
        self.first = false;
        let rest = std::mem::take(&mut self.rest);
        if rest.len() < HEADER_LEN {
            return Some(Err(ParseError::TooShort { have: rest.len() }));
        }
        let claimed = u16::from_be_bytes([rest[2], rest[3]]) as usize;
        if claimed < HEADER_LEN || claimed > rest.len() {
            return Some(Err(ParseError::BadLength {
                claimed,
                actual: rest.len(),
            }));
        }
        let (msg, tail) = rest.split_at(claimed);
        self.rest = tail;
        Some(Ok(msg))
    }
}
