//! Rate limiting for log lines an outsider can provoke (agent hellos,
//! control actions); the logging set-up is `affinity_daemon_common`'s.

/// At most `per_second` lines in each one-second window (by the caller's
/// clock in ns); the lines refused are counted and reported once when the
/// next window opens, so a flood costs one line a second.
#[derive(Debug, Clone)]
pub struct RateLimit {
    per_second: u32,
    window_start: u64,
    used: u32,
    suppressed: u64,
}

impl RateLimit {
    /// A limit of `per_second` lines a second.
    pub fn new(per_second: u32) -> Self {
        RateLimit {
            per_second,
            window_start: 0,
            used: 0,
            suppressed: 0,
        }
    }

    /// Whether a line may be logged at `now` (ns). When a new window opens
    /// after lines were refused, says how many (at warn) first.
    pub fn allow(&mut self, now: u64) -> bool {
        if now.saturating_sub(self.window_start) >= 1_000_000_000 {
            if self.suppressed > 0 {
                tracing::warn!(
                    suppressed = self.suppressed,
                    "log lines suppressed by the rate limit"
                );
            }
            self.window_start = now;
            self.used = 0;
            self.suppressed = 0;
        }
        if self.used < self.per_second {
            self.used += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RateLimit;

    #[test]
    fn a_burst_is_cut_to_the_limit_and_the_next_second_opens_again() {
        let mut r = RateLimit::new(3);
        let allowed = (0..100).filter(|i| r.allow(*i * 1000)).count();
        assert_eq!(allowed, 3);
        assert!(r.allow(1_000_000_000), "a new window");
        assert_eq!(r.suppressed, 0, "reported and reset");
    }
}
