//! Grouping a message's segments by affinity (PROTOCOL.md, "Which affinity
//! a segment applies to"): per-affinity segments placed before the first
//! affinity are defaults, those after an affinity apply to it.

use crate::segment::{
    ActionList, AdmissionAction, AdvertiseAction, AffinityIdentifier, BackupPrecedence,
    FixedAffinity, InterestCriteria, NatAction, Segment, Segments, SeqAdjustAction,
    ServicePrecedence, TsAdjustAction, WildcardAffinity,
};

/// The affinity an [`AffinityEntry`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AffinityRef {
    /// A wildcard affinity (update-wildcard, update-deny).
    Wildcard(WildcardAffinity),
    /// A fixed affinity (update-fixed, interest matches, deny, statistics).
    Fixed(FixedAffinity),
}

/// One affinity of a message and the segments that apply to it: those
/// placed before the first affinity (message defaults), overridden by those
/// placed after it and before the next affinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AffinityEntry<'a> {
    /// The affinity segment itself.
    pub affinity: AffinityRef,
    /// Affinity identifier (type 3) that applies, if any.
    pub identifier: Option<AffinityIdentifier>,
    /// Service precedence (type 4) that applies, if any.
    pub service_precedence: Option<ServicePrecedence>,
    /// Backup precedence (type 5) that applies, if any.
    pub backup_precedence: Option<BackupPrecedence>,
    /// NAT action (type 10) that applies, if any.
    pub nat: Option<NatAction>,
    /// Advertise action (type 11) that applies, if any.
    pub advertise: Option<AdvertiseAction>,
    /// Sequence-number adjust action (type 12) that applies, if any.
    pub seq_adjust: Option<SeqAdjustAction>,
    /// Timestamp adjust action (type 21) that applies, if any.
    pub ts_adjust: Option<TsAdjustAction>,
    /// Interest criteria (type 13) that apply, if any.
    pub interest: Option<InterestCriteria>,
    /// Action list (type 14) that applies, if any.
    pub action_list: Option<ActionList<'a>>,
    /// Admission action (type 20) that applies, if any.
    pub admission: Option<AdmissionAction>,
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
            ts_adjust: None,
            interest: None,
            action_list: None,
            admission: None,
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
            Segment::TsAdjustAction(v) => self.ts_adjust = Some(v),
            Segment::InterestCriteria(v) => self.interest = Some(v),
            Segment::ActionList(v) => self.action_list = Some(v),
            Segment::AdmissionAction(v) => self.admission = Some(v),
            _ => {}
        }
    }

    /// Applies the segments from `it` up to (not including) the next
    /// affinity segment, leaving `it` at that affinity.
    fn apply_until_affinity(&mut self, it: &mut Segments<'a>) {
        loop {
            let before = it.clone();
            match it.next() {
                Some((Segment::WildcardAffinity(_) | Segment::FixedAffinity(_), _)) => {
                    *it = before;
                    return;
                }
                Some((s, _)) => self.apply(&s),
                None => return,
            }
        }
    }
}

/// Iterator over the affinities of a message (see
/// [`crate::ServiceMessage::affinities`]).
#[derive(Debug, Clone)]
pub struct AffinityGroups<'a> {
    it: Segments<'a>,
    defaults: AffinityEntry<'a>,
}

impl<'a> AffinityGroups<'a> {
    /// Reads the message defaults off the front of `it`.
    pub(crate) fn new(mut it: Segments<'a>) -> Self {
        let mut defaults = AffinityEntry::default_for(AffinityRef::Fixed(FixedAffinity::default()));
        defaults.apply_until_affinity(&mut it);
        AffinityGroups { it, defaults }
    }
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
        entry.apply_until_affinity(&mut self.it);
        Some(entry)
    }
}
