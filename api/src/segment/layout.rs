//! What every segment body implements ([`SegmentBody`]), the
//! `fixed_layout!` macro that derives it from one list of fields, and the
//! small checks the family files share. A leaf inside `segment/`: the family
//! files and `mod.rs` use it, it uses none of them.

use crate::codec::{Reader, Writer};
use crate::error::SegmentErrorKind;

/// One segment type's body: its number, its length bounds and how it is
/// read and written. `Value` is what the [`super::Segment`] variant carries (the
/// implementing type itself, except for the opaque byte bodies).
pub(crate) trait SegmentBody<'a> {
    type Value;
    /// Segment type number (without the Required flag).
    const TYPE: u16;
    /// Shortest body a receiver accepts, bytes (the whole body when fixed).
    const MIN_LEN: usize;
    /// Longest body a receiver accepts, bytes.
    const MAX_LEN: usize;
    /// Reads a body of `MIN_LEN..=MAX_LEN` bytes. Shorter input is reported
    /// as [`SegmentErrorKind::BodyTooShort`], never trusted away.
    fn parse(body: &'a [u8]) -> Result<Self::Value, SegmentErrorKind>;
    /// Writes exactly `len(value)` bytes.
    fn emit(value: &Self::Value, w: &mut Writer<'_>);
    /// Emitted body length, bytes; the fixed length unless the body varies.
    fn len(_value: &Self::Value) -> usize {
        Self::MIN_LEN
    }
}

/// Fails with [`SegmentErrorKind::BodyTooShort`] when `r`, reading `body`
/// as a `B`, ran past its end.
pub(crate) fn read_whole<'a, B: SegmentBody<'a>>(
    r: &Reader<'_>,
    body: &[u8],
) -> Result<(), SegmentErrorKind> {
    if r.is_short() {
        return Err(SegmentErrorKind::BodyTooShort {
            need: B::MIN_LEN,
            have: body.len(),
        });
    }
    Ok(())
}

/// Rejects a flags or mask field with a bit outside `defined` set, naming
/// `field` in the error (PROTOCOL.md: undefined bits make a segment
/// malformed).
pub(crate) fn only_defined(
    value: impl Into<u32>,
    defined: impl Into<u32>,
    field: &'static str,
) -> Result<(), SegmentErrorKind> {
    let value = value.into();
    if value & !defined.into() != 0 {
        return Err(bad(field, value));
    }
    Ok(())
}

/// Reads a flags byte with one defined bit: whether it is set, or an error
/// naming `field` when an undefined bit is.
pub(crate) fn one_flag(flags: u8, bit: u8, field: &'static str) -> Result<bool, SegmentErrorKind> {
    only_defined(flags, bit, field)?;
    Ok(flags & bit != 0)
}

/// A field holding a value the protocol does not define.
pub(crate) fn bad(field: &'static str, value: u32) -> SegmentErrorKind {
    SegmentErrorKind::BadValue { field, value }
}

/// Bytes of one field kind of a `fixed_layout!` list.
macro_rules! layout_field_len {
    (zero($n:literal)) => {
        $n
    };
    (u8($($f:tt)*)) => {
        1
    };
    (u16($($f:tt)*)) => {
        2
    };
    (u32($($f:tt)*)) => {
        4
    };
    (addr($($f:tt)*)) => {
        4
    };
    (u64($($f:tt)*)) => {
        8
    };
}

/// Implements [`SegmentBody`] for a struct whose body is a fixed list of
/// network-order fields: `kind(path.to.field)` for a field, `zero(n)` for
/// `n` reserved bytes (ignored on receipt, written as zero). Parse, emit and
/// the length all follow the one list. `check` names a function that
/// rejects undefined flag bits after parsing. Invoked from the family files
/// (`segment/*.rs`), whose `super::layout` is this module.
macro_rules! fixed_layout {
    ($ty:ident = $seg_type:expr $(, check $check:path)?;
     $($kind:ident($($field:tt)*)),+ $(,)?) => {
        impl<'a> super::layout::SegmentBody<'a> for $ty {
            type Value = Self;
            const TYPE: u16 = $seg_type;
            const MIN_LEN: usize = 0 $(+ super::layout::layout_field_len!($kind($($field)*)))+;
            const MAX_LEN: usize = Self::MIN_LEN;

            fn parse(body: &'a [u8]) -> Result<Self, $crate::error::SegmentErrorKind> {
                let mut r = $crate::codec::Reader::new(body);
                let mut v = Self::default();
                $(super::layout::fixed_layout!(@read r v $kind($($field)*));)+
                super::layout::read_whole::<Self>(&r, body)?;
                $($check(&v)?;)?
                Ok(v)
            }

            fn emit(v: &Self, w: &mut $crate::codec::Writer<'_>) {
                $(super::layout::fixed_layout!(@write w v $kind($($field)*));)+
            }
        }
    };
    (@read $r:ident $v:ident zero($n:literal)) => {
        $r.zero($n)
    };
    (@read $r:ident $v:ident $kind:ident($($f:ident).+)) => {
        $v.$($f).+ = $r.$kind()
    };
    (@write $w:ident $v:ident zero($n:literal)) => {
        $w.zero($n)
    };
    (@write $w:ident $v:ident $kind:ident($($f:ident).+)) => {
        $w.$kind($v.$($f).+)
    };
}
pub(crate) use fixed_layout;
pub(crate) use layout_field_len;
