//! Splitting a received datagram into the messages it carries, by each
//! header's length field, before any of them is parsed.

use crate::error::ParseError;
use crate::header::Header;
use crate::numbers::HEADER_LEN;

/// The messages of one datagram. A datagram normally carries one message;
/// several may follow each other back to back, each framed by its header's
/// length field (a sender may coalesce them, and a burst sent with UDP
/// segmentation offload reaches a receiver that captures before the
/// kernel segments it — VPP's `af_packet` on a veth — as one datagram).
/// Yields each message's bytes for [`crate::ServiceMessage::parse`]; a length
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
        let Some(claimed) = Header::claimed_length(rest) else {
            return Some(Err(ParseError::TooShort { have: rest.len() }));
        };
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
