//! The runtime state replicas share: authorization codes, refresh-token
//! families, sessions, registered clients and rate counters, as bytes
//! under string keys, each with a TTL. Redis when the gateway is given
//! one ([`RedisStore`]), else process memory ([`MemoryStore`], standalone
//! mode, lost on restart).
//!
//! The store never sees a secret: callers key codes and tokens by their
//! SHA-256. It holds no policy either: what a key means is the caller's.
//! Token verification on protected hosts never touches it, so a Redis
//! outage stops logins and token grants (503), not the guard.

mod memory;
mod redis;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

pub use self::memory::MemoryStore;
pub use self::redis::RedisStore;

/// What a store operation yields: a boxed future, so that the trait can
/// be used as `dyn Store` without an async-trait crate.
pub type StoreFuture<'a, T> = BoxFuture<'a, Result<T, StoreError>>;

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Redis could not be reached or did not answer in time.
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    /// Redis answered with an error (e.g. INCR on a value that is not a
    /// counter): a bug or a foreign writer, not an outage.
    #[error("state store refused the command: {0}")]
    Refused(String),
    /// The memory store reached its bound and has nothing expired to drop.
    #[error("state store is full")]
    Full,
}

/// Bytes under keys, with expiry. Every value has a TTL: nothing lives
/// forever, so a crashed flow leaves nothing behind.
pub trait Store: Send + Sync {
    /// `"redis"` or `"memory"`, for the start-up log and `/ready`.
    fn kind(&self) -> &'static str;

    /// Sets `key`, replacing any value and TTL.
    fn put<'a>(&'a self, key: &'a str, value: Vec<u8>, ttl: Duration) -> StoreFuture<'a, ()>;

    /// Sets `key` only if it does not exist (Redis `SET NX`); `true` when
    /// this call created it. The one primitive for "first one wins".
    fn put_new<'a>(&'a self, key: &'a str, value: Vec<u8>, ttl: Duration) -> StoreFuture<'a, bool>;

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>>;

    /// Gets and deletes `key` atomically (Redis `GETDEL`): of concurrent
    /// callers, one gets the value. For single-use codes.
    fn take<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>>;

    fn delete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()>;

    /// Adds one to the counter at `key` and returns the new count; the
    /// increment that creates the counter gives it `window` as its TTL,
    /// later ones leave the TTL alone (a fixed window).
    fn incr<'a>(&'a self, key: &'a str, window: Duration) -> StoreFuture<'a, u64>;
}

/// The store for a gateway: Redis at `redis_url` (connected lazily, so a
/// Redis that is down at start-up only makes the endpoints that need it
/// answer 503 until it is back), or memory when no URL is given.
pub fn open(redis_url: Option<&str>) -> Result<Arc<dyn Store>, StoreError> {
    match redis_url {
        Some(url) => Ok(Arc::new(RedisStore::connect(url)?)),
        None => Ok(Arc::new(MemoryStore::new())),
    }
}

/// The millisecond TTL both stores use: never zero, since a zero TTL
/// means "no expiry" to some of Redis's commands and "gone" to others.
fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// What every store must do alike; each store's tests run it.
#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) use super::redis::tests::{redis, replicas as redis_replicas};

    const TTL: Duration = Duration::from_secs(30);

    pub(crate) async fn conformance(store: &dyn Store) {
        assert_eq!(store.get("missing").await, Ok(None));
        store.put("a", b"1".to_vec(), TTL).await.expect("put");
        assert_eq!(store.get("a").await, Ok(Some(b"1".to_vec())));
        store.put("a", b"2".to_vec(), TTL).await.expect("replace");
        assert_eq!(store.get("a").await, Ok(Some(b"2".to_vec())));

        assert_eq!(store.put_new("a", b"3".to_vec(), TTL).await, Ok(false));
        assert_eq!(store.get("a").await, Ok(Some(b"2".to_vec())));
        assert_eq!(store.put_new("b", vec![0, 255], TTL).await, Ok(true));
        assert_eq!(
            store.get("b").await,
            Ok(Some(vec![0, 255])),
            "binary values"
        );

        assert_eq!(store.take("b").await, Ok(Some(vec![0, 255])));
        assert_eq!(store.take("b").await, Ok(None), "take is single use");
        store.delete("a").await.expect("delete");
        store.delete("a").await.expect("deleting nothing is fine");
        assert_eq!(store.get("a").await, Ok(None));

        for want in 1..=3 {
            assert_eq!(store.incr("n", TTL).await, Ok(want));
        }
        store.put("text", b"x".to_vec(), TTL).await.expect("put");
        assert!(matches!(
            store.incr("text", TTL).await,
            Err(StoreError::Refused(_))
        ));
        for key in ["n", "text"] {
            store.delete(key).await.expect("cleanup");
        }
    }

    #[tokio::test]
    async fn open_picks_by_url() {
        assert_eq!(open(None).expect("memory").kind(), "memory");
        let redis = open(Some("redis://127.0.0.1:1")).expect("lazy");
        assert_eq!(redis.kind(), "redis");
        assert!(open(Some("http://nope")).is_err());
    }
}
