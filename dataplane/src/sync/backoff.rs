//! Reconnection delays: exponential with full jitter, as a pure function of
//! the attempt number and a random draw so it can be tested without a clock.

use std::time::Duration;

/// First delay ceiling.
pub const BASE: Duration = Duration::from_millis(100);
/// Largest delay ceiling.
pub const CAP: Duration = Duration::from_secs(10);

/// The ceiling of the `attempt`-th delay (0-based): `base * 2^attempt`,
/// capped, without overflow for any attempt.
pub fn ceiling(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt).unwrap_or(u32::MAX);
    base.checked_mul(factor).map_or(cap, |d| d.min(cap))
}

/// Full jitter: a delay drawn uniformly from `[0, ceiling]`, where `unit` is
/// the draw in `[0, 1]` (clamped). Spreads reconnecting data planes apart
/// after an operator restart.
pub fn full_jitter(base: Duration, cap: Duration, attempt: u32, unit: f64) -> Duration {
    let unit = if unit.is_finite() {
        unit.clamp(0.0, 1.0)
    } else {
        1.0
    };
    ceiling(base, cap, attempt).mul_f64(unit)
}

/// The attempt counter behind the policy.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The next delay, given a uniform draw in `[0, 1]`.
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let delay = full_jitter(self.base, self.cap, self.attempt, unit);
        self.attempt = self.attempt.saturating_add(1);
        delay
    }

    /// Back to the shortest delays, once a connection has succeeded.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(BASE, CAP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn ceiling_doubles_then_caps() {
        let got: Vec<_> = (0..9).map(|a| ceiling(BASE, CAP, a)).collect();
        let want = [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000].map(MS);
        assert_eq!(got, want);
    }

    #[test]
    fn huge_attempts_do_not_overflow() {
        assert_eq!(ceiling(BASE, CAP, 31), CAP);
        assert_eq!(ceiling(BASE, CAP, 32), CAP);
        assert_eq!(ceiling(BASE, CAP, u32::MAX), CAP);
        assert_eq!(ceiling(Duration::MAX, CAP, 3), CAP);
    }

    #[test]
    fn full_jitter_spans_zero_to_ceiling() {
        assert_eq!(full_jitter(BASE, CAP, 3, 0.0), Duration::ZERO);
        assert_eq!(full_jitter(BASE, CAP, 3, 1.0), MS(800));
        assert_eq!(full_jitter(BASE, CAP, 3, 0.5), MS(400));
        assert_eq!(full_jitter(BASE, CAP, 3, 7.0), MS(800));
        assert_eq!(full_jitter(BASE, CAP, 3, -1.0), Duration::ZERO);
        assert_eq!(full_jitter(BASE, CAP, 3, f64::NAN), MS(800));
    }

    #[test]
    fn backoff_grows_and_resets() {
        let mut b = Backoff::default();
        let got: Vec<_> = (0..4).map(|_| b.next_delay(1.0)).collect();
        assert_eq!(got, [100, 200, 400, 800].map(MS));
        b.reset();
        assert_eq!(b.next_delay(1.0), MS(100));
    }
}
