//! Failed agent authentications, limited per source address: after
//! [`LIMIT`] failures within a [`WINDOW`], that address is refused without
//! checking its token until the window ends. Pure, with the clock passed in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const LIMIT: u32 = 20;
pub const WINDOW: Duration = Duration::from_secs(60);
/// Beyond this many addresses, expired windows are pruned on each failure.
const PRUNE_AT: usize = 4096;

#[derive(Default)]
pub struct FailureLimiter {
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl FailureLimiter {
    /// Whether `ip` may try to authenticate at `now`.
    pub fn allowed(&self, ip: IpAddr, now: Instant) -> bool {
        let windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        match windows.get(&ip) {
            Some((start, count)) => now.duration_since(*start) >= WINDOW || *count < LIMIT,
            None => true,
        }
    }

    /// Records a failure of `ip` at `now`.
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if windows.len() >= PRUNE_AT {
            windows.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        }
        let entry = windows.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_refused_after_the_limit_until_the_window_ends() {
        let limiter = FailureLimiter::default();
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let other: IpAddr = "10.0.0.2".parse().expect("ip");
        let t0 = Instant::now();
        for _ in 0..LIMIT {
            assert!(limiter.allowed(ip, t0));
            limiter.failed(ip, t0);
        }
        assert!(!limiter.allowed(ip, t0 + Duration::from_secs(1)));
        assert!(limiter.allowed(other, t0));
        assert!(limiter.allowed(ip, t0 + WINDOW));
        limiter.failed(ip, t0 + WINDOW);
        assert!(limiter.allowed(ip, t0 + WINDOW + Duration::from_secs(1)));
    }
}
