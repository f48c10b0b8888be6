//! Where each segment type may appear: one table (PROTOCOL.md, "Message
//! types" and "Segment header" rules) from which the receiver's placement
//! checks and the emitter's default Required flag are read.

use crate::numbers::{seg, MessageType};

/// Whether a segment type may, must or must not appear in a message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cell {
    /// Not allowed: the message is refused (`segment not allowed`).
    No,
    /// Allowed.
    May,
    /// Required: a message without it is refused (`missing segment`).
    Must,
}

/// One row of [`RULES`].
struct Rule {
    seg_type: u16,
    /// At most once per message.
    once: bool,
    /// Marked Required when emitted unless the caller says otherwise: a
    /// receiver must not act on the message without understanding it.
    required_flag: bool,
    /// Indexed by [`MessageType::column`].
    cells: [Cell; MessageType::ALL.len()],
}

const fn rule(seg_type: u16, once: bool, required_flag: bool, cells: [Cell; 10]) -> Rule {
    Rule {
        seg_type,
        once,
        required_flag,
        cells,
    }
}

const ONCE: bool = true;
const MANY: bool = false;
const REQ: bool = true;
const OPT: bool = false;
const M: Cell = Cell::Must;
#[allow(non_upper_case_globals)]
const a: Cell = Cell::May;
const X: Cell = Cell::No;

/// The placement table. Columns: message types in [`MessageType::ALL`]
/// order — update-wildcard (1), update-fixed (2), update-deny (3), interest
/// match-wildcard (4) and -fixed (5), IP packet only (6), agent hello (16),
/// keepalive (17), dump request (18), statistics report (19).
///
/// Rows are in type order except the affinity identifier, which comes
/// first: an interest match missing both identifier and fixed affinity is
/// refused naming the identifier.
#[rustfmt::skip]
const RULES: [Rule; 21] = [
    //   segment type                    once  flag   1  2  3  4  5  6 16 17 18 19
    rule(seg::AFFINITY_IDENTIFIER,       MANY, OPT, [a, a, a, M, M, X, X, X, a, a]),
    rule(seg::WILDCARD_AFFINITY,         MANY, REQ, [M, X, a, X, X, X, X, X, X, X]),
    rule(seg::FIXED_AFFINITY,            MANY, REQ, [X, M, a, M, M, X, X, X, X, a]),
    rule(seg::SERVICE_PRECEDENCE,        MANY, OPT, [a, a, X, X, X, X, X, X, X, X]),
    rule(seg::BACKUP_PRECEDENCE,         MANY, OPT, [a, a, X, X, X, X, X, X, X, X]),
    rule(seg::SECURITY,                  ONCE, REQ, [a, a, a, a, a, a, a, a, a, a]),
    rule(seg::SM_INTEREST_DATA,          ONCE, OPT, [a, a, X, a, a, X, X, a, X, X]),
    rule(seg::FA_INTEREST_DATA,          ONCE, OPT, [X, a, X, a, a, a, X, X, X, X]),
    rule(seg::IDENTITY_INFO,             ONCE, OPT, [a, a, a, a, a, a, a, a, a, a]),
    rule(seg::NAT_ACTION,                MANY, REQ, [a, a, X, X, X, X, X, X, X, X]),
    rule(seg::ADVERTISE_ACTION,          MANY, OPT, [a, a, X, X, X, X, X, X, X, X]),
    rule(seg::SEQ_ADJUST_ACTION,         MANY, REQ, [a, a, X, X, X, X, X, X, X, a]),
    rule(seg::INTEREST_CRITERIA_ACTION,  MANY, REQ, [a, a, X, X, X, X, X, X, X, X]),
    rule(seg::ACTION_LIST,               MANY, OPT, [a, a, a, X, X, X, X, X, X, X]),
    rule(seg::IP_PACKET,                 ONCE, REQ, [X, a, X, a, a, M, X, X, X, X]),
    rule(seg::DENY_REASON,               ONCE, REQ, [X, X, M, X, X, X, X, X, X, X]),
    rule(seg::CAPABILITIES,              ONCE, OPT, [X, X, X, X, X, X, M, X, X, X]),
    rule(seg::STATISTICS,                MANY, OPT, [X, X, X, X, X, X, X, X, X, M]),
    rule(seg::RECEIVER,                  ONCE, OPT, [a, a, a, a, a, a, a, a, a, a]),
    rule(seg::ADMISSION_ACTION,          MANY, OPT, [a, X, X, X, X, X, X, X, X, X]),
    rule(seg::TS_ADJUST_ACTION,          MANY, OPT, [X, a, X, X, X, X, X, X, X, a]),
];

/// Index into [`RULES`] by segment type number (`u8::MAX`: no row), filled
/// at compile time so a lookup on the punt path is one load.
const ROW_OF: [u8; 32] = {
    let mut row_of = [u8::MAX; 32];
    let mut i = 0;
    while i < RULES.len() {
        row_of[RULES[i].seg_type as usize] = i as u8;
        i += 1;
    }
    row_of
};

fn row(t: u16) -> Option<&'static Rule> {
    RULES.get(*ROW_OF.get(t as usize)? as usize)
}

/// Whether segment type `t` may appear in a message of type `msg` (false
/// for a type the table does not know).
pub(crate) fn allowed(msg: MessageType, t: u16) -> bool {
    row(t).is_some_and(|r| r.cells[msg.column()] != Cell::No)
}

/// Segment types a message of type `msg` must carry, in the order a missing
/// one is reported.
pub(crate) fn required_segments(msg: MessageType) -> impl Iterator<Item = u16> {
    RULES
        .iter()
        .filter(move |r| r.cells[msg.column()] == Cell::Must)
        .map(|r| r.seg_type)
}

/// Whether segment type `t` may appear at most once per message.
pub(crate) fn once(t: u16) -> bool {
    row(t).is_some_and(|r| r.once)
}

/// Whether segment type `t` is marked Required by default when emitted.
pub(crate) fn required_by_default(t: u16) -> bool {
    row(t).is_some_and(|r| r.required_flag)
}

#[cfg(test)]
mod tests {
    use super::{row, RULES};
    use crate::numbers::MessageType;

    #[test]
    fn every_message_type_has_its_column() {
        for (i, t) in MessageType::ALL.into_iter().enumerate() {
            assert_eq!(t.column(), i);
            assert_eq!(MessageType::from_u8(t as u8), Some(t));
        }
    }

    #[test]
    fn every_segment_type_has_one_row() {
        for t in 1..=RULES.len() as u16 {
            assert!(row(t).is_some(), "segment type {t} has no row");
            assert_eq!(RULES.iter().filter(|r| r.seg_type == t).count(), 1);
        }
    }
}
