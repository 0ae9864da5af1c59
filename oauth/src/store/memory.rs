//! The store of standalone mode: a map in process memory, lost on
//! restart, private to one process. Expiry follows tokio's clock (so
//! tests can pause it); size is bounded, since every flow that writes here
//! can be started by anyone on the network.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::{Store, StoreError, StoreFuture, ttl_ms};

/// Entries beyond which a write of a new key first drops the expired ones
/// and, if none are, fails with [`StoreError::Full`]. At a few hundred
/// bytes an entry, the default bounds the map to tens of megabytes.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// A [`Store`] in process memory.
pub struct MemoryStore {
    // A std mutex: no operation awaits while holding it.
    entries: Mutex<HashMap<String, Entry>>,
    capacity: usize,
}

struct Entry {
    value: Vec<u8>,
    expires: Instant,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::with_capacity(DEFAULT_CAPACITY)
    }

    pub fn with_capacity(capacity: usize) -> MemoryStore {
        MemoryStore {
            entries: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // A panic elsewhere cannot leave an entry half-written: every
        // mutation is a single map call.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live entry at `key`, dropping it if it has expired.
    fn live<'m>(map: &'m mut HashMap<String, Entry>, key: &str) -> Option<&'m mut Entry> {
        let now = Instant::now();
        if map.get(key).is_some_and(|e| e.expires <= now) {
            map.remove(key);
        }
        map.get_mut(key)
    }

    /// Inserts or replaces `key`, keeping the map within its bound.
    fn insert(
        &self,
        map: &mut HashMap<String, Entry>,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        if !map.contains_key(key) && map.len() >= self.capacity {
            let now = Instant::now();
            map.retain(|_, e| e.expires > now);
            if map.len() >= self.capacity {
                return Err(StoreError::Full);
            }
        }
        let expires = Instant::now() + Duration::from_millis(ttl_ms(ttl));
        map.insert(key.to_string(), Entry { value, expires });
        Ok(())
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.lock().len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

fn ready<'a, T: Send + 'a>(result: Result<T, StoreError>) -> StoreFuture<'a, T> {
    Box::pin(std::future::ready(result))
}

impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn put<'a>(&'a self, key: &'a str, value: Vec<u8>, ttl: Duration) -> StoreFuture<'a, ()> {
        let mut map = self.lock();
        ready(self.insert(&mut map, key, value, ttl))
    }

    fn put_new<'a>(&'a self, key: &'a str, value: Vec<u8>, ttl: Duration) -> StoreFuture<'a, bool> {
        let mut map = self.lock();
        if Self::live(&mut map, key).is_some() {
            return ready(Ok(false));
        }
        ready(self.insert(&mut map, key, value, ttl).map(|()| true))
    }

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        let mut map = self.lock();
        ready(Ok(Self::live(&mut map, key).map(|e| e.value.clone())))
    }

    fn take<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        let mut map = self.lock();
        let found = Self::live(&mut map, key).is_some();
        ready(Ok(found
            .then(|| map.remove(key))
            .flatten()
            .map(|e| e.value)))
    }

    fn delete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        self.lock().remove(key);
        ready(Ok(()))
    }

    fn incr<'a>(&'a self, key: &'a str, window: Duration) -> StoreFuture<'a, u64> {
        let mut map = self.lock();
        if let Some(entry) = Self::live(&mut map, key) {
            // Counters are decimal text, as in Redis, so that a value put
            // by anything else is refused the same way by both stores.
            let count = std::str::from_utf8(&entry.value)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .map(|n| n.saturating_add(1));
            let Some(count) = count else {
                return ready(Err(StoreError::Refused(format!("{key} is not a counter"))));
            };
            entry.value = count.to_string().into_bytes();
            return ready(Ok(count));
        }
        ready(
            self.insert(&mut map, key, b"1".to_vec(), window)
                .map(|()| 1),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conformance() {
        super::super::tests::conformance(&MemoryStore::new()).await;
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire() {
        let store = MemoryStore::new();
        store
            .put("k", b"v".to_vec(), Duration::from_secs(10))
            .await
            .expect("put");
        assert_eq!(store.incr("n", Duration::from_secs(10)).await, Ok(1));
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(store.get("k").await, Ok(Some(b"v".to_vec())));
        assert_eq!(store.incr("n", Duration::from_secs(10)).await, Ok(2));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(store.get("k").await, Ok(None));
        assert_eq!(store.take("k").await, Ok(None));
        assert_eq!(
            store.incr("n", Duration::from_secs(10)).await,
            Ok(1),
            "a new window"
        );
        assert!(
            store
                .put_new("k", b"w".to_vec(), Duration::from_secs(1))
                .await
                .expect("put_new")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn bounded() {
        let store = MemoryStore::with_capacity(2);
        let short = Duration::from_secs(1);
        store.put("a", vec![], short).await.expect("a");
        store
            .put("b", vec![], Duration::from_secs(60))
            .await
            .expect("b");
        assert_eq!(store.put("c", vec![], short).await, Err(StoreError::Full));
        assert_eq!(
            store.put_new("c", vec![], short).await,
            Err(StoreError::Full)
        );
        assert_eq!(store.incr("c", short).await, Err(StoreError::Full));
        // Replacing an existing key needs no room.
        store
            .put("b", b"2".to_vec(), Duration::from_secs(60))
            .await
            .expect("replace");
        tokio::time::advance(Duration::from_secs(2)).await;
        store
            .put("c", vec![], short)
            .await
            .expect("room after expiry");
    }
}
