//! One backend's run-time state within a service: its weights (set,
//! configured, from load reports), health (rise/fall streaks and the last
//! check's detail) and its flows and traffic.

use crate::config::BackendConfig;
use crate::core::stats::{RateWindow, Traffic};
use std::net::SocketAddrV4;

/// One health check's outcome, as [`ServiceRegistry::health`] takes it.
#[derive(Debug, Clone, Copy)]
pub(in crate::core) struct HealthResult<'a> {
    /// Whether the check passed.
    pub ok: bool,
    /// Why it failed (`refused`, `timeout`, ...), kept as the last failure.
    pub failure: Option<&'a str>,
    /// How long the check took (µs).
    pub latency_us: Option<u64>,
}

/// Run-time state of one backend.
#[derive(Debug, Clone)]
pub struct Backend {
    pub addr: SocketAddrV4,
    /// Weight from the configuration or `set-weight` (0 = drained).
    pub weight: u32,
    /// The weight the configuration gives; a `set-weight` survives a
    /// reload unless this changes.
    pub config_weight: u32,
    /// Feedback algorithm: weight derived from the last load report.
    pub feedback_weight: Option<u32>,
    pub healthy: bool,
    /// A health check has answered since the backend appeared.
    checked: bool,
    ok_streak: u32,
    fail_streak: u32,
    /// Flows placed on this backend and not yet released.
    pub active: u64,
    /// Flows ever placed on this backend.
    pub total: u64,
    /// Traffic the agents reported for its flows, summed over agents
    /// (`connections` = `total`).
    pub traffic: Traffic,
    /// Samples of `traffic` for the rates.
    pub rates: RateWindow,
    /// Health-check detail (`status`): the last result's reason and
    /// latency, when the state last changed.
    pub check: HealthDetail,
}

/// What the health checks last said about a backend.
#[derive(Debug, Clone, Default)]
pub struct HealthDetail {
    /// Why the last failed check failed (`refused`, `timeout`, `http
    /// status 503`, ...); kept after later successes.
    pub last_failure: Option<String>,
    /// Latency of the last check (µs): connect, plus the HTTP answer.
    pub latency_us: Option<u64>,
    /// Checks run (since the manager started).
    pub checks: u64,
    /// When the healthy state last changed (ns, the core's clock); `None`
    /// before any change.
    pub changed_at: Option<u64>,
}

/// The state a backend is shown in: `down` (failing its health check),
/// `draining` (weight 0: no new flows, existing ones stay), else `up`.
pub fn backend_state(b: &Backend) -> &'static str {
    if !b.healthy {
        "down"
    } else if b.weight == 0 {
        "draining"
    } else {
        "up"
    }
}

impl Backend {
    /// The weight the selector sees: 0 when unhealthy, else the feedback
    /// weight or the set one, never above the set weight.
    pub fn effective_weight(&self) -> u32 {
        if !self.healthy {
            0
        } else {
            self.feedback_weight.unwrap_or(self.weight).min(self.weight)
        }
    }

    /// Feedback: a load report (percent, 0-100) scales the configured
    /// weight by the spare capacity, rounded up and at least 1; a drained
    /// backend (weight 0) stays at 0.
    pub fn report_load(&mut self, load: u32) {
        let load = load.min(100) as u64;
        let w = (self.weight as u64 * (100 - load)).div_ceil(100).max(1) as u32;
        self.feedback_weight = Some(if self.weight == 0 { 0 } else { w });
    }

    /// Consecutive failed checks (0 after a success).
    pub fn consecutive_failures(&self) -> u32 {
        self.fail_streak
    }

    /// Adds reported traffic (`packets`, `bytes` in IP length) in one
    /// direction (`inbound`: client → virtual address) at `now` (ns).
    pub(super) fn note_traffic(&mut self, now: u64, inbound: bool, packets: u64, bytes: u64) {
        let t = &mut self.traffic;
        if inbound {
            t.packets_in = t.packets_in.saturating_add(packets);
            t.bytes_in = t.bytes_in.saturating_add(bytes);
        } else {
            t.packets_out = t.packets_out.saturating_add(packets);
            t.bytes_out = t.bytes_out.saturating_add(bytes);
        }
        self.rates.record(now, self.traffic);
    }

    /// One health-check result: `rise` successes in a row make an unhealthy
    /// backend healthy, `fall` failures in a row the reverse. The new state
    /// when it changed.
    pub(super) fn record_health(&mut self, ok: bool, rise: u32, fall: u32) -> Option<bool> {
        let first = !self.checked;
        self.checked = true;
        if ok && first && !self.healthy {
            // Not yet checked (start, or added by a reload): the first
            // passing check is enough.
            self.ok_streak = 1;
            self.healthy = true;
            return Some(true);
        }
        if ok {
            self.ok_streak += 1;
            self.fail_streak = 0;
            if !self.healthy && self.ok_streak >= rise {
                self.healthy = true;
                return Some(true);
            }
        } else {
            self.fail_streak += 1;
            self.ok_streak = 0;
            if self.healthy && self.fail_streak >= fall {
                self.healthy = false;
                return Some(false);
            }
        }
        None
    }

    /// Backend `b` of service `service` as configured, keeping what `kept`
    /// (the same address before a reload) knew: health, streaks, flow
    /// counts, traffic and check detail. A runtime set-weight/drain survives
    /// unless the file's weight for the backend changed; load reports are
    /// cleared. Without `kept` the backend starts healthy as `start_healthy`
    /// says.
    pub(super) fn configured(
        service: &str,
        b: &BackendConfig,
        kept: Option<&Backend>,
        start_healthy: bool,
    ) -> Backend {
        let weight = match kept {
            Some(k) if k.config_weight == b.weight => {
                if k.weight != b.weight {
                    tracing::info!(service = %service, backend = %b.address, weight = k.weight, configured = b.weight, "reload keeps the runtime weight");
                }
                k.weight
            }
            _ => b.weight,
        };
        Backend {
            addr: b.address,
            weight,
            config_weight: b.weight,
            feedback_weight: None,
            healthy: kept.map_or(start_healthy, |k| k.healthy),
            checked: kept.is_some_and(|k| k.checked),
            ok_streak: kept.map_or(0, |k| k.ok_streak),
            fail_streak: kept.map_or(0, |k| k.fail_streak),
            active: kept.map_or(0, |k| k.active),
            total: kept.map_or(0, |k| k.total),
            traffic: kept.map_or(Traffic::default(), |k| k.traffic),
            rates: kept.map_or(RateWindow::default(), |k| k.rates.clone()),
            check: kept.map_or(HealthDetail::default(), |k| k.check.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Backend;
    use std::net::SocketAddrV4;

    fn backend(weight: u32) -> Backend {
        Backend {
            addr: SocketAddrV4::new([198, 51, 100, 1].into(), 80),
            weight,
            config_weight: weight,
            feedback_weight: None,
            healthy: true,
            checked: true,
            ok_streak: 0,
            fail_streak: 0,
            active: 0,
            total: 0,
            traffic: Default::default(),
            rates: Default::default(),
            check: Default::default(),
        }
    }

    #[test]
    fn load_reports_scale_the_weight_and_health_follows_rise_and_fall() {
        let mut b = backend(4);
        b.report_load(75);
        assert_eq!(b.effective_weight(), 1);
        b.report_load(100);
        assert_eq!(b.effective_weight(), 1, "at least 1 while not drained");
        assert_eq!(b.record_health(false, 2, 2), None);
        assert_eq!(b.record_health(false, 2, 2), Some(false));
        assert_eq!(b.effective_weight(), 0);
        assert_eq!(b.record_health(true, 2, 2), None);
        assert_eq!(b.record_health(true, 2, 2), Some(true));
        let mut drained = backend(0);
        drained.report_load(0);
        assert_eq!(drained.effective_weight(), 0);
    }
}
