//! Traffic statistics per backend, from the agents' activity reports
//! (statistics report, type 19; api/PROTOCOL.md "Activity reports"): each
//! reported fixed affinity is attributed to its flow (forward key: client
//! → virtual address, "in"; reverse key: backend → client, "out") and so
//! to its service and backend. Totals are summed over every agent; rates
//! are over a short moving window ([`RATE_WINDOW`]), the `ipvsadm -Ln
//! --stats --rate` view.

use std::collections::VecDeque;

const SEC: u64 = 1_000_000_000;

/// The moving window rates are computed over (ns): 10 s, a few activity
/// report intervals (the agents' default interval is 1-2 s).
pub const RATE_WINDOW: u64 = 10 * SEC;

/// Cumulative traffic of one backend (or a service: the sum of its
/// backends) since the manager started or the backend was configured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Flows ever placed (connections).
    pub connections: u64,
    /// Packets client → virtual address the agents reported.
    pub packets_in: u64,
    /// Packets backend → client the agents reported.
    pub packets_out: u64,
    /// Bytes (IP packet length) client → virtual address.
    pub bytes_in: u64,
    /// Bytes (IP packet length) backend → client.
    pub bytes_out: u64,
}

impl Traffic {
    /// Adds `o` (saturating).
    pub fn add(&mut self, o: &Traffic) {
        self.connections = self.connections.saturating_add(o.connections);
        self.packets_in = self.packets_in.saturating_add(o.packets_in);
        self.packets_out = self.packets_out.saturating_add(o.packets_out);
        self.bytes_in = self.bytes_in.saturating_add(o.bytes_in);
        self.bytes_out = self.bytes_out.saturating_add(o.bytes_out);
    }

    /// Per-second rates of the growth from `base` to `self` over `dt` ns
    /// (zeros when `dt` is 0).
    pub fn rates_since(&self, base: &Traffic, dt: u64) -> Rates {
        if dt == 0 {
            return Rates::default();
        }
        let s = dt as f64 / 1e9;
        let r = |a: u64, b: u64| a.saturating_sub(b) as f64 / s;
        Rates {
            connections_per_s: r(self.connections, base.connections),
            packets_in_per_s: r(self.packets_in, base.packets_in),
            packets_out_per_s: r(self.packets_out, base.packets_out),
            bytes_in_per_s: r(self.bytes_in, base.bytes_in),
            bytes_out_per_s: r(self.bytes_out, base.bytes_out),
        }
    }
}

/// Rates per second over the moving window.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Rates {
    /// New flows per second.
    pub connections_per_s: f64,
    /// Packets per second, client → virtual address.
    pub packets_in_per_s: f64,
    /// Packets per second, backend → client.
    pub packets_out_per_s: f64,
    /// Bytes per second, client → virtual address.
    pub bytes_in_per_s: f64,
    /// Bytes per second, backend → client.
    pub bytes_out_per_s: f64,
}

/// Samples of a [`Traffic`] total taken when it changes (at most one per
/// second: a newer change within the second replaces the sample), kept
/// back to the newest one at least [`RATE_WINDOW`] old.
#[derive(Debug, Clone, Default)]
pub struct RateWindow {
    samples: VecDeque<(u64, Traffic)>,
}

impl RateWindow {
    /// Records `total` as of `now` (ns).
    pub fn record(&mut self, now: u64, total: Traffic) {
        let several = self.samples.len() > 1;
        match self.samples.back_mut() {
            Some((t, v)) if now.saturating_sub(*t) < SEC && several => {
                *t = now;
                *v = total;
            }
            _ => self.samples.push_back((now, total)),
        }
        // Keep one sample at least a window old: the base of the rates.
        while self.samples.len() > 2
            && self
                .samples
                .get(1)
                .is_some_and(|(t, _)| now.saturating_sub(*t) >= RATE_WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// Rates of `total` (as of `now`, ns) over the window: from the newest
    /// sample at least a window old to now. With less than a window of
    /// history (a service's first traffic), what grew since the oldest
    /// sample over the whole window, as a sliding-window rate counter
    /// does: divided by the few milliseconds since the first sample
    /// instead, eleven connections in 85 ms read as 130 per second. Zero
    /// before any sample.
    pub fn rates(&self, now: u64, total: &Traffic) -> Rates {
        let base = self
            .samples
            .iter()
            .rev()
            .find(|(t, _)| now.saturating_sub(*t) >= RATE_WINDOW)
            .or_else(|| self.samples.front());
        match base {
            Some((t, v)) => total.rates_since(v, now.saturating_sub(*t).max(RATE_WINDOW)),
            None => Rates::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{RateWindow, Traffic, RATE_WINDOW, SEC};

    #[test]
    fn rates_are_growth_over_the_window_and_fall_to_zero_when_idle() {
        let mut w = RateWindow::default();
        let mut t = Traffic::default();
        w.record(0, t);
        for s in 1..=20u64 {
            t.packets_in += 100;
            t.bytes_in += 100 * 60;
            t.connections += 1;
            w.record(s * SEC, t);
        }
        let r = w.rates(20 * SEC, &t);
        assert!((r.packets_in_per_s - 100.0).abs() < 1e-9, "{r:?}");
        assert!((r.bytes_in_per_s - 6000.0).abs() < 1e-9, "{r:?}");
        assert!((r.connections_per_s - 1.0).abs() < 1e-9, "{r:?}");
        // Idle for a window and more: no growth since the base.
        w.record(20 * SEC + 2 * RATE_WINDOW, t);
        let r = w.rates(20 * SEC + 2 * RATE_WINDOW, &t);
        assert_eq!(r.packets_in_per_s, 0.0);
        assert!(w.samples.len() <= 12, "bounded: {}", w.samples.len());
    }

    /// A service's first traffic: eleven connections within 85 ms of its
    /// first sample read as 10 over the window (1 per second), not 10 over
    /// 85 ms (118 per second; the stop-20 trial saw 129.6).
    #[test]
    fn a_first_burst_is_a_rate_over_the_window_not_over_milliseconds() {
        let mut w = RateWindow::default();
        let mut t = Traffic {
            connections: 1,
            ..Traffic::default()
        };
        let t0 = 5 * SEC;
        w.record(t0, t);
        for i in 1..=10u64 {
            t.connections += 1;
            w.record(t0 + i * 8_500_000, t);
        }
        let r = w.rates(t0 + 85_000_000, &t);
        let want = 10.0 / (RATE_WINDOW as f64 / SEC as f64);
        assert!((r.connections_per_s - want).abs() < 1e-9, "{r:?}");
    }
}
