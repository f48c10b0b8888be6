//! Big-endian cursors over byte slices: [`Reader`] takes fields off the front
//! of a received body, [`Writer`] puts them into an emit buffer. The two have
//! the same method per field kind, so a layout written as a list of fields
//! (`segment/mod.rs`, `fixed_layout!`) drives both. Neither allocates.
//! Reading uses nom's big-endian number parsers with `()` as the error type
//! (no error value is built: a short body is one flag, checked once).

use nom::bytes::complete::take;
use nom::number::complete::{be_u16, be_u32, be_u64, be_u8};
use nom::IResult;
use std::net::Ipv4Addr;

/// One nom parser of a fixed-size field; `()` errors cost nothing to build.
type FieldParser<'a, T> = fn(&'a [u8]) -> IResult<&'a [u8], T, ()>;

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

    /// Runs one nom field parser on the unread bytes; on too few bytes the
    /// reader is marked short and the field reads as its default (zero).
    fn field<T: Default>(&mut self, parse: FieldParser<'a, T>) -> T {
        match parse(self.rest) {
            Ok((tail, value)) => {
                self.rest = tail;
                value
            }
            Err(_) => {
                self.short = true;
                self.rest = &[];
                T::default()
            }
        }
    }

    pub(crate) fn u8(&mut self) -> u8 {
        self.field(be_u8)
    }
    pub(crate) fn u16(&mut self) -> u16 {
        self.field(be_u16)
    }
    pub(crate) fn u32(&mut self) -> u32 {
        self.field(be_u32)
    }
    pub(crate) fn u64(&mut self) -> u64 {
        self.field(be_u64)
    }
    pub(crate) fn addr(&mut self) -> Ipv4Addr {
        Ipv4Addr::from(self.u32())
    }

    /// Passes over `n` reserved bytes (their value is ignored on receipt).
    pub(crate) fn zero(&mut self, n: usize) {
        match take::<usize, &'a [u8], ()>(n)(self.rest) {
            Ok((tail, _)) => self.rest = tail,
            Err(_) => {
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
