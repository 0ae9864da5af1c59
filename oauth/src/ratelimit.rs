//! Rate limits on the endpoints anyone can call without a token
//! (`/token`, `/register`, login): fixed windows per client address,
//! counted in the store so that every replica shares one count. Windows
//! are aligned on Unix time (window number = now / length), so replicas
//! agree on where one ends without talking to each other.
//!
//! When the store cannot count, requests pass: the endpoints behind these
//! limits need the store themselves and answer 503 in that case, and a
//! 429 would misreport an outage as the client's fault. A full memory
//! store (standalone mode under a flood) passes requests the same way.

use std::net::IpAddr;
use std::time::Duration;

use crate::refresh::unix_now;
use crate::store::Store;

/// At most `per_window` requests per client address per `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    pub per_window: u64,
    pub window: Duration,
}

impl Limit {
    /// `/token`: a client refreshes about hourly; bursts come from tests
    /// and from several clients behind one address.
    pub const TOKEN: Limit = Limit::per_minute(120);
    /// `/register`: clients register once, re-registering on a stale id.
    pub const REGISTER: Limit = Limit::per_minute(30);
    /// `/authorize` and the login callback: one per browser login.
    pub const LOGIN: Limit = Limit::per_minute(60);

    pub const fn per_minute(per_window: u64) -> Limit {
        Limit {
            per_window,
            window: Duration::from_secs(60),
        }
    }
}

/// Over the limit: answer 429 with `Retry-After: retry_after_s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("too many requests; retry after {retry_after_s} s")]
pub struct Limited {
    /// Seconds until the current window ends; at least 1.
    pub retry_after_s: u64,
}

/// Counts one request of `client_ip` in `bucket` (e.g. `"token"`).
pub async fn check(
    store: &dyn Store,
    bucket: &str,
    client_ip: IpAddr,
    limit: Limit,
) -> Result<(), Limited> {
    check_at(store, bucket, client_ip, limit, unix_now()).await
}

/// [`check`] with the clock given (Unix seconds).
pub async fn check_at(
    store: &dyn Store,
    bucket: &str,
    client_ip: IpAddr,
    limit: Limit,
    now: u64,
) -> Result<(), Limited> {
    let window = limit.window.as_secs().max(1);
    let number = now / window;
    let key = format!("rl:{bucket}:{}:{number}", client_key(client_ip));
    match store.incr(&key, Duration::from_secs(window)).await {
        Ok(count) if count > limit.per_window => Err(Limited {
            retry_after_s: ((number + 1) * window - now).max(1),
        }),
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::debug!(bucket, error = %e, "rate limit not counted");
            Ok(())
        }
    }
}

/// The address a client is counted under: IPv4 (also when mapped into
/// IPv6) as is; IPv6 by its /64, since one host is routinely given a
/// whole /64 and could otherwise step around the limit.
fn client_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemoryStore, RedisStore};

    const NOW: u64 = 1_800_000_000; // a multiple of 60
    const FIVE: Limit = Limit {
        per_window: 5,
        window: Duration::from_secs(60),
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[tokio::test]
    async fn fixed_windows_per_address() {
        let store = MemoryStore::new();
        let a = ip("192.0.2.1");
        for _ in 0..5 {
            assert_eq!(check_at(&store, "token", a, FIVE, NOW + 10).await, Ok(()));
        }
        let limited = check_at(&store, "token", a, FIVE, NOW + 10).await;
        assert_eq!(limited, Err(Limited { retry_after_s: 50 }));
        assert_eq!(
            check_at(&store, "token", a, FIVE, NOW + 59).await,
            Err(Limited { retry_after_s: 1 })
        );
        // Another address, another bucket, the next window: counted apart.
        assert!(
            check_at(&store, "token", ip("192.0.2.2"), FIVE, NOW + 10)
                .await
                .is_ok()
        );
        assert!(
            check_at(&store, "register", a, FIVE, NOW + 10)
                .await
                .is_ok()
        );
        assert!(check_at(&store, "token", a, FIVE, NOW + 60).await.is_ok());
    }

    #[tokio::test]
    async fn ipv6_counts_by_64() {
        let store = MemoryStore::new();
        let one = Limit::per_minute(1);
        assert!(
            check_at(&store, "t", ip("2001:db8:1:2::1"), one, NOW)
                .await
                .is_ok()
        );
        let same_64 = check_at(&store, "t", ip("2001:db8:1:2:ffff::9"), one, NOW).await;
        assert!(same_64.is_err());
        assert!(
            check_at(&store, "t", ip("2001:db8:1:3::1"), one, NOW)
                .await
                .is_ok()
        );
        assert!(
            check_at(&store, "t", ip("::ffff:192.0.2.7"), one, NOW)
                .await
                .is_ok()
        );
        assert!(
            check_at(&store, "t", ip("192.0.2.7"), one, NOW)
                .await
                .is_err(),
            "mapped = v4"
        );
    }

    #[tokio::test]
    async fn a_store_that_cannot_count_lets_requests_pass() {
        let down = RedisStore::connect(&format!(
            "redis://127.0.0.1:{}",
            postern_harness::free_port()
        ))
        .expect("url");
        let zero = Limit::per_minute(0);
        assert_eq!(check(&down, "token", ip("192.0.2.1"), zero).await, Ok(()));
        let full = MemoryStore::with_capacity(0);
        assert_eq!(check(&full, "token", ip("192.0.2.1"), zero).await, Ok(()));
        assert!(
            check(&MemoryStore::new(), "token", ip("192.0.2.1"), zero)
                .await
                .is_err()
        );
    }
}
