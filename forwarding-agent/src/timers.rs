//! The agent's timers: [`Agent::tick`] does the time-driven work (fixed and
//! wildcard expiry, hold timeouts) and [`Agent::poll_timeout`] says when it
//! is next needed, so a caller sleeps until then instead of ticking on a
//! fixed interval (quinn-proto's `poll_timeout` / `handle_timeout` pair).

use crate::agent::{ds, Agent};
use crate::counters::Counter;
use crate::interest_data::ForwardingAgentInterestData;
use affinity_api::{MessageType, Segment};
use std::net::SocketAddrV4;
use std::sync::atomic::Ordering::Relaxed;

/// Nanoseconds per table tick (a decisecond).
const NS_PER_DS: u64 = 100_000_000;

impl Agent {
    /// Housekeeping (control thread, at or after [`Agent::poll_timeout`]):
    /// reclaims expired entries via the expiry wheel (never a full scan of
    /// the fixed table), and sends packets whose hold timed out to their
    /// manager. Returns datagrams to send (destination, encoded message).
    pub fn tick(&self, now_ns: u64) -> Vec<(SocketAddrV4, Vec<u8>)> {
        let now = ds(now_ns);
        // Proxied connections never spliced: their held early data goes
        // (run at least every activity report interval while a manager is
        // known, which a proxied connection needs).
        let expired = self.splice.expire(now_ns);
        let mut st = self.control.lock();
        st.counters.add(Counter::SynProxyEarlyDataExpired, expired);
        let due: Vec<u32> = st.wheel.range(..=now / 10).map(|(k, _)| *k).collect();
        for sec in due {
            for key in st.wheel.remove(&sec).unwrap_or_default() {
                match self.fixed.lookup(&key) {
                    Some((v, _)) if v.expires_ds <= now => {
                        if let Some(old) = self.fixed.remove(&key) {
                            self.fixed_owner_dec(&mut st, old.action);
                            self.actions.release(old.action, now_ns);
                            st.counters.inc(Counter::FixedReclaimed);
                        }
                    }
                    Some((v, _)) => st.wheel.entry(v.expires_ds / 10 + 1).or_default().push(key),
                    None => {}
                }
            }
        }
        if st.next_wildcard_reclaim_ds <= now {
            for old in self.wildcards.reclaim(now) {
                self.actions.release(old.action, now_ns);
                st.counters.inc(Counter::WildcardReclaimed);
            }
            // The survivors' earliest reclaim time (refreshes may have
            // moved expiries since they were installed).
            st.next_wildcard_reclaim_ds = self
                .wildcards
                .snapshot()
                .entries()
                .iter()
                .map(|w| w.expires_ds.load(Relaxed).saturating_add(10))
                .min()
                .unwrap_or(u32::MAX);
        }
        let mut sends = Vec::new();
        let published = self.published.load();
        self.hold.expire(now_ns, |h| {
            st.counters.inc(Counter::HoldTimeout);
            let data = ForwardingAgentInterestData::for_rank(self.config.instance_id, 0, h.rank, 0)
                .encode();
            let mut b = self.builder_with(MessageType::IpPacketOnly, &published);
            b.push(Segment::FaInterestData(&data));
            b.push(Segment::IpPacket(&h.packet));
            if let Ok(bytes) = b.finish() {
                sends.push((h.manager, bytes));
            }
        });
        sends.extend(self.activity_reports(&mut st, now_ns));
        sends.extend(self.prompt_reports(&mut st, now_ns));
        self.publish_control(&st);
        sends
    }

    /// When [`Agent::tick`] next has work: the earliest of the next fixed
    /// expiry check (the wheel's first second), the next wildcard reclaim
    /// (a second after the earliest wildcard expiry) and the first hold
    /// deadline, in the caller's monotonic nanoseconds (the clock passed
    /// to `tick` and `handle_control`). `None`: nothing is scheduled (no
    /// affinity, nothing held) until the next control message or packet.
    ///
    /// The answer may be in the past (call `tick` now) and may be early
    /// (a refreshed entry is checked at its old time and rescheduled),
    /// never late. It changes with every control message and every held
    /// packet, so ask again after handling them; a caller that cannot be
    /// woken by a worker's hold should cap its sleep (the host agent caps
    /// it at one second).
    pub fn poll_timeout(&self) -> Option<u64> {
        let st = self.control.lock();
        let fixed = st
            .wheel
            .keys()
            .next()
            .map(|&sec| u64::from(sec) * 10 * NS_PER_DS);
        let wildcard = (st.next_wildcard_reclaim_ds != u32::MAX)
            .then(|| u64::from(st.next_wildcard_reclaim_ds) * NS_PER_DS);
        // The next activity report, once a manager has been heard from
        // (never when reports are off).
        let report = st.activity.next_ns;
        // Affinities a worker newly marked handshake-complete: reported
        // within PROMPT_REPORT_INTERVAL_NS (`Agent::prompt_reports`).
        let prompt = self.prompt_due(&st);
        drop(st);
        let hold = self.hold.next_deadline();
        [fixed, wildcard, hold, report, prompt]
            .into_iter()
            .flatten()
            .min()
    }
}
