//! Big-endian cursors over byte slices: [`Reader`] takes fields off the front
//! of a received body, [`Writer`] puts them into an emit buffer. The two have
//! the same method per field kind, so a layout written as a list of fields
//! (`segment/mod.rs`, `fixed_layout!`) drives both. Neither allocates.

use std::net::Ipv4Addr;

/// Reads network-order fields from the front of a slice. Reading past the
/// end yields zeros and marks the reader short, so a parser reads its whole
/// layout and asks once, at the end, whether the bytes were there
/// ([`Reader::is_short`]).
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
    short: bool,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader {
            rest: bytes,
            short: false,
        }
    }

    fn take<const N: usize>(&mut self) -> [u8; N] {
        match self.rest.split_first_chunk::<N>() {
            Some((head, tail)) => {
                self.rest = tail;
                *head
            }
            None => {
                self.short = true;
                self.rest = &[];
                [0; N]
            }
        }
    }

    pub(crate) fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    pub(crate) fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.take())
    }
    pub(crate) fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take())
    }
    pub(crate) fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.take())
    }
    pub(crate) fn addr(&mut self) -> Ipv4Addr {
        Ipv4Addr::from(self.u32())
    }

    /// Passes over `n` reserved bytes (their value is ignored on receipt).
    pub(crate) fn zero(&mut self, n: usize) {
        match self.rest.get(n..) {
            Some(tail) => self.rest = tail,
            None => {
                self.short = true;
                self.rest = &[];
            }
        }
    }

    /// Whether a field ran past the end of the input.
    pub(crate) fn is_short(&self) -> bool {
        self.short
    }

    /// The bytes not read yet (a variable-length tail).
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.rest
    }
}

/// Writes network-order fields into a buffer the caller has sized (the
/// emitters compute the length first, from the same layout).
pub(crate) struct Writer<'b> {
    out: &'b mut [u8],
    pos: usize,
}

impl<'b> Writer<'b> {
    pub(crate) fn new(out: &'b mut [u8]) -> Self {
        Writer { out, pos: 0 }
    }
    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.out[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
    }
    pub(crate) fn u8(&mut self, v: u8) {
        self.bytes(&[v]);
    }
    pub(crate) fn u16(&mut self, v: u16) {
        self.bytes(&v.to_be_bytes());
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.bytes(&v.to_be_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.bytes(&v.to_be_bytes());
    }
    pub(crate) fn addr(&mut self, a: Ipv4Addr) {
        self.bytes(&a.octets());
    }
    /// Writes `n` reserved bytes as zero.
    pub(crate) fn zero(&mut self, n: usize) {
        self.out[self.pos..self.pos + n].fill(0);
        self.pos += n;
    }
}
