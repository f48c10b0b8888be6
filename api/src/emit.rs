//! Writing messages: [`MessageBuilder`] into an owned buffer, [`emit_prefix`]
//! in place in front of a packet that is already in a buffer (for punting
//! from the data path). Signing fills the digest last ([`Key::sign_in_place`]).

use crate::codec::Writer;
use crate::error::EmitError;
use crate::header::Header;
use crate::numbers::{seg, MessageType, HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::rules;
use crate::security::Key;
use crate::segment::{emit_header, Security, Segment};

/// Digest bytes of an unsigned security segment (the digest is computed over
/// the message with them zero).
const ZERO_DIGEST: [u8; Security::MAX_DIGEST_LEN] = [0; Security::MAX_DIGEST_LEN];

/// The security segment for `key` with a zero digest, to be signed in place.
fn unsigned_security(key: &Key) -> Segment<'static> {
    Segment::Security(Security {
        algorithm: key.algorithm as u8,
        key_id: key.id,
        digest: &ZERO_DIGEST[..key.algorithm.digest_len()],
    })
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
    /// An unsigned message of type `msg_type` with the sender's `sequence`
    /// number; segments follow with [`MessageBuilder::push`].
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
        b.push(unsigned_security(key));
        b.key = Some(key.clone());
        b
    }

    /// Appends a segment with its default Required flag.
    pub fn push(&mut self, seg: Segment<'_>) -> &mut Self {
        let req = rules::required_by_default(seg.seg_type());
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
    /// Always false: the header is there from the start.
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

/// Length of the prefix [`emit_prefix`] writes for these segments, bytes.
pub fn prefix_len(key: Option<&Key>, segments: &[Segment<'_>]) -> usize {
    HEADER_LEN
        + key.map_or(0, |k| unsigned_security(k).wire_len())
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
        let s = unsigned_security(k);
        s.emit(true, &mut out[pos..]);
        pos += s.wire_len();
    }
    for s in segments {
        s.emit(rules::required_by_default(s.seg_type()), &mut out[pos..]);
        pos += s.wire_len();
    }
    // The packet segment's header only: its body is the packet that
    // follows `out`.
    let mut w = Writer::new(&mut out[pos..pos + SEGMENT_HEADER_LEN]);
    emit_header(
        &mut w,
        seg::IP_PACKET,
        true,
        SEGMENT_HEADER_LEN + packet_len,
    );
    Ok(pos + SEGMENT_HEADER_LEN)
}
