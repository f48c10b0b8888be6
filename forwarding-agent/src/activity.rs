//! Activity reports: every `activity_report_interval_ms` the agent tells
//! each manager it has heard from which fixed affinities carried packets
//! since the previous report, so a manager renews only its flows that are
//! in use and lets idle ones expire, and learns the keys other managers'
//! flows use (a backup that takes over, another client domain's manager)
//! so it never installs over them (issue 11; layout in `api/PROTOCOL.md`,
//! "Activity reports", exchange in `api/EXCHANGES.md`). Each TCP pair
//! also says whether a handshake-complete segment (ACK without SYN or RST)
//! hit the affinity (`affinity_api::activity`, the fixed table's handshake
//! mark), which a manager needs from both directions before it takes a
//! half-open flow as established.
//!
//! Cost: one scan of the fixed table per interval on the control thread
//! (the table's own per-entry counters, `per_flow_counters`, are read, no
//! data-path work is added), and per manager one statistics report (type
//! 19) per interval, plus one more for every [`ENTRIES_PER_REPORT`]
//! active affinities beyond the first batch.

use crate::agent::{ds, Agent, ControlState};
use crate::counters::Counter;
use affinity_api::{
    activity, AffinityKey, FixedAffinity, MessageBuilder, MessageType, Segment, SeqAdjustAction,
    Statistics,
};
use std::collections::HashMap;
use std::net::SocketAddrV4;

/// Active affinities per report message: each is a fixed affinity segment
/// (28 bytes) and a statistics segment (24 bytes); 24 of them with the
/// header, identity info, the summary statistics and a signature stay
/// under about 1400 bytes (no IP fragmentation on a 1500-byte path).
pub const ENTRIES_PER_REPORT: usize = 24;

/// Shortest time between two prompt reports (ns): 200 ms. A connection's
/// handshake marks reach its manager within about this after the segments
/// that set them, so a half-open flow is seen established in a fraction of
/// a second, not at the next interval (10 s by default); at most five
/// extra report rounds a second, each of the affinities newly marked since
/// the previous one only.
pub const PROMPT_REPORT_INTERVAL_NS: u64 = 200_000_000;

/// Newly marked fixed slots a worker queues at most between two prompt
/// reports; past it they wait for the periodic report
/// (`handshake-marks-dropped`).
pub const MARKS_QUEUED: usize = 65_536;

/// Pairs per splice report message: each is a fixed affinity (28 bytes),
/// sequence adjust (20), timestamp adjust (12) and statistics (24) segment;
/// 14 of them with the header, identity info, the summary and a signature
/// stay under about 1400 bytes.
pub const SPLICE_PAIRS_PER_REPORT: usize = 14;

/// One fixed affinity of a splice report: its key, the seconds the agent
/// still holds it, and the adjusts its splice installed.
pub(crate) type SplicePair = (
    AffinityKey,
    u32,
    SeqAdjustAction,
    Option<crate::actions::TsAdjustKey>,
);

/// Appends a splice report's body to `b` (PROTOCOL.md, "Splice reports"):
/// the zero summary statistics segment, then per pair its fixed affinity
/// segment, sequence adjust, timestamp adjust (when there is one) and a
/// zero statistics segment.
pub(crate) fn push_splice_report(b: &mut MessageBuilder, pairs: &[SplicePair]) {
    b.push(Segment::Statistics(Statistics::default()));
    for &(key, ttl, adj, ts) in pairs {
        b.push(Segment::FixedAffinity(FixedAffinity {
            key,
            ttl,
            ..Default::default()
        }));
        b.push(Segment::SeqAdjustAction(adj));
        if let Some(t) = ts {
            b.push(Segment::TsAdjustAction(t.into()));
        }
        b.push(Segment::Statistics(Statistics::default()));
    }
}

/// The control thread's activity bookkeeping.
#[derive(Debug, Default)]
pub(crate) struct ActivityState {
    /// When the next report is due (the caller's monotonic ns); `None`
    /// until a manager is heard (or with reports off).
    pub next_ns: Option<u64>,
    /// Per fixed affinity that carried packets: the (packets, bytes)
    /// totals at the last report.
    last: HashMap<AffinityKey, (u64, u64)>,
    /// When the last prompt report went (ns); 0 = none yet.
    pub last_prompt_ns: u64,
    /// Address and port each manager (by owner index) sends from: where its
    /// reports go (PROTOCOL.md: "to the address and port that manager's
    /// messages come from", never the address its identity claims).
    sources: Vec<Option<SocketAddrV4>>,
}

impl ActivityState {
    /// Notes the address and port manager `owner` sent from (its listen
    /// socket) at `now_ns`; the first manager heard schedules the first
    /// report an interval (`interval_ns`, 0 = reports off) later.
    pub fn note_manager(&mut self, owner: u16, from: SocketAddrV4, now_ns: u64, interval_ns: u64) {
        if self.next_ns.is_none() && interval_ns > 0 {
            self.next_ns = Some(now_ns + interval_ns);
        }
        let i = owner as usize;
        if self.sources.len() <= i {
            self.sources.resize(i + 1, None);
        }
        self.sources[i] = Some(from);
    }

    /// Forgets where manager `owner` sent from (its slot is being reused).
    pub fn forget_manager(&mut self, owner: u16) {
        if let Some(s) = self.sources.get_mut(owner as usize) {
            *s = None;
        }
    }
}

/// The (packets, bytes) `key`'s fixed affinity carried since its last
/// report, from its totals now and those at that report (`last`). Fewer
/// packets than then: the slot was reused by a new entry of the same key,
/// and everything it counted is new.
fn since_last(
    last: &HashMap<AffinityKey, (u64, u64)>,
    key: &AffinityKey,
    (p, b): (u64, u64),
) -> (u64, u64) {
    let (lp, lb) = last.get(key).copied().unwrap_or((0, 0));
    if p >= lp {
        (p - lp, b.saturating_sub(lb))
    } else {
        (p, b)
    }
}

/// One active affinity in a report.
struct Entry {
    key: AffinityKey,
    /// Seconds the agent still holds it.
    ttl: u32,
    packets: u64,
    bytes: u64,
    /// `affinity_api::activity` bits: TCP entries are TRACKED, and
    /// HANDSHAKE_COMPLETE when the entry's handshake mark is set.
    flags: u8,
}

impl Agent {
    /// Builds the activity reports due at `now_ns` (called from `tick`).
    /// Nothing when reports are off (`activity_report_interval_ms` 0) or
    /// per-flow counters are off (nothing to tell activity by).
    pub(crate) fn activity_reports(
        &self,
        st: &mut ControlState,
        now_ns: u64,
    ) -> Vec<(SocketAddrV4, Vec<u8>)> {
        let interval = self.config.activity_report_interval_ms * 1_000_000;
        if interval == 0 || !self.config.per_flow_counters {
            return Vec::new();
        }
        if st.activity.next_ns.is_none_or(|t| now_ns < t) {
            return Vec::new();
        }
        st.activity.next_ns = Some(now_ns + interval);
        let now = ds(now_ns);
        let mut entries: Vec<Entry> = Vec::new();
        let mut seen = HashMap::with_capacity(st.activity.last.len());
        let last = &st.activity.last;
        self.fixed.for_each(|slot, key, v| {
            if v.expires_ds <= now {
                return true;
            }
            let (p, b) = self.fixed.counters(slot);
            if p == 0 {
                return true;
            }
            seen.insert(key, (p, b));
            let (dp, db) = since_last(last, &key, (p, b));
            if dp > 0 {
                // Every TCP pair says the agent marks handshakes, so a
                // manager that missed this agent's hello still applies
                // the mark rule (PROTOCOL.md, "Activity reports").
                let flags = if key.protocol != crate::wire::TCP {
                    0
                } else if self.fixed.handshake_complete(slot) {
                    activity::TRACKED | activity::HANDSHAKE_COMPLETE
                } else {
                    activity::TRACKED
                };
                entries.push(Entry {
                    key,
                    ttl: (v.expires_ds - now).div_ceil(10),
                    packets: dp,
                    bytes: db,
                    flags,
                });
            }
            true
        });
        st.activity.last = seen;
        let mut sends = self.report_messages(st, &entries, true, Counter::ActivityReports);
        sends.extend(self.splice_reports_again(st, now_ns));
        sends
    }

    /// The splice reports of the fixed affinities spliced since the last
    /// periodic round, sent once more with it (the worker sent them at the
    /// splice; a manager takes a repeat as it took the first), each to the
    /// address and port its owner's messages come from, at most
    /// [`SPLICE_PAIRS_PER_REPORT`] pairs a message. Affinities gone or no
    /// longer carrying the agent's adjusts are left out.
    fn splice_reports_again(
        &self,
        st: &mut ControlState,
        now_ns: u64,
    ) -> Vec<(SocketAddrV4, Vec<u8>)> {
        let keys = self.splice.take_recent();
        let now = ds(now_ns);
        let mut by_owner: std::collections::BTreeMap<u16, Vec<SplicePair>> = Default::default();
        for key in keys {
            let Some((seq, ts)) = self.splice.installed(&key) else {
                continue;
            };
            let Some((v, _)) = self.fixed.lookup(&key) else {
                continue;
            };
            if v.expires_ds <= now {
                continue;
            }
            let owner = self.actions.view(v.action).owner();
            let ttl = (v.expires_ds - now).div_ceil(10);
            by_owner
                .entry(owner)
                .or_default()
                .push((key, ttl, seq.into(), ts));
        }
        let mut sends = Vec::new();
        for (owner, pairs) in by_owner {
            let Some(to) = st.activity.sources.get(owner as usize).copied().flatten() else {
                continue;
            };
            for chunk in pairs.chunks(SPLICE_PAIRS_PER_REPORT) {
                let mut b = self.builder(MessageType::StatisticsReport);
                push_splice_report(&mut b, chunk);
                if let Ok(m) = b.finish() {
                    sends.push((to, m));
                    st.counters.inc(Counter::SynProxySpliceReported);
                }
            }
        }
        sends
    }

    /// Type-19 reports of `entries` to every manager heard from, at most
    /// [`ENTRIES_PER_REPORT`] pairs a message, each message counted as
    /// `counter`. With `always`, a manager gets one message even when
    /// `entries` is empty (the periodic report: it tells the manager this
    /// agent reports).
    fn report_messages(
        &self,
        st: &mut ControlState,
        entries: &[Entry],
        always: bool,
        counter: Counter,
    ) -> Vec<(SocketAddrV4, Vec<u8>)> {
        let mut sends = Vec::new();
        if entries.is_empty() && !always {
            return sends;
        }
        let (packets, bytes) = entries
            .iter()
            .fold((0u64, 0u64), |(p, b), e| (p + e.packets, b + e.bytes));
        for i in 0..st.managers.len() {
            let Some(to) = st.activity.sources.get(i).copied().flatten() else {
                continue;
            };
            let mut chunks: Vec<&[Entry]> = entries.chunks(ENTRIES_PER_REPORT).collect();
            if chunks.is_empty() {
                chunks.push(&[]);
            }
            for chunk in chunks {
                let mut b = self.builder(MessageType::StatisticsReport);
                b.push(Segment::Statistics(Statistics {
                    packets,
                    bytes,
                    ..Default::default()
                }));
                for e in chunk {
                    b.push(Segment::FixedAffinity(FixedAffinity {
                        key: e.key,
                        ttl: e.ttl,
                        activity_flags: e.flags,
                        ..Default::default()
                    }));
                    b.push(Segment::Statistics(Statistics {
                        packets: e.packets,
                        bytes: e.bytes,
                        ..Default::default()
                    }));
                }
                if let Ok(bytes) = b.finish() {
                    sends.push((to, bytes));
                    st.counters.inc(counter);
                }
            }
        }
        sends
    }

    /// When the next prompt report may go (ns), if a worker queued newly
    /// marked affinities: for `poll_timeout`.
    pub(crate) fn prompt_due(&self, st: &ControlState) -> Option<u64> {
        if !self
            .marks_pending
            .load(std::sync::atomic::Ordering::Relaxed)
            || st.activity.next_ns.is_none()
        {
            return None;
        }
        Some(st.activity.last_prompt_ns + PROMPT_REPORT_INTERVAL_NS)
    }

    /// The prompt reports due at `now_ns` (called from `tick`): the TCP
    /// affinities the workers saw marked handshake-complete for the first
    /// time since the last prompt report, with their packets since their
    /// last report (which then counts from here, so no packet is reported
    /// twice), to every manager heard from; at most one round per
    /// [`PROMPT_REPORT_INTERVAL_NS`]. Why: a manager takes a half-open flow
    /// as established on both directions' marks, and a flow it still sees
    /// half-open is one `evict-oldest` may end under a flood; the periodic
    /// report alone would leave a real connection half-open up to an
    /// interval (PROTOCOL.md, "Activity reports"). Nothing when reports are
    /// off.
    pub(crate) fn prompt_reports(
        &self,
        st: &mut ControlState,
        now_ns: u64,
    ) -> Vec<(SocketAddrV4, Vec<u8>)> {
        let Some(due) = self.prompt_due(st) else {
            return Vec::new();
        };
        if now_ns < due {
            return Vec::new();
        }
        self.marks_pending
            .store(false, std::sync::atomic::Ordering::Relaxed);
        st.activity.last_prompt_ns = now_ns;
        let mut slots: Vec<u32> = Vec::new();
        for q in self.worker_marks.lock().iter() {
            slots.append(&mut q.lock());
        }
        slots.sort_unstable();
        slots.dedup();
        let now = ds(now_ns);
        let mut entries = Vec::with_capacity(slots.len());
        for slot in slots {
            let slot = slot as usize;
            let Some((key, v)) = self.fixed.entry_at(slot) else {
                continue;
            };
            // The slot may have been reused since it was noted: only a
            // live, marked TCP entry is reported.
            if v.expires_ds <= now
                || key.protocol != crate::wire::TCP
                || !self.fixed.handshake_complete(slot)
            {
                continue;
            }
            let (p, b) = self.fixed.counters(slot);
            let (dp, db) = since_last(&st.activity.last, &key, (p, b));
            if dp == 0 {
                // A periodic report since carried it, marks and all.
                continue;
            }
            st.activity.last.insert(key, (p, b));
            entries.push(Entry {
                key,
                ttl: (v.expires_ds - now).div_ceil(10),
                packets: dp,
                bytes: db,
                flags: activity::TRACKED | activity::HANDSHAKE_COMPLETE,
            });
        }
        self.report_messages(st, &entries, false, Counter::ActivityReportsPrompt)
    }
}
