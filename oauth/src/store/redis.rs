//! The store replicas share: Redis, every key under `postern:oauth:`.
//! Connected lazily through redis's `ConnectionManager` (one multiplexed
//! connection, reconnected after failures) with short timeouts, so that a
//! Redis that is down costs a request about a second and an error, never
//! a hang, and one that comes back is used again without a restart.

use std::sync::OnceLock;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, FromRedisValue, Pipeline, RedisError};

use super::{Store, StoreError, StoreFuture, ttl_ms};

/// The prefix of every key this store writes.
pub const KEY_PREFIX: &str = "postern:oauth:";

/// Bounds of one connection attempt and of one command's answer; a
/// command as a whole (a reconnect with one retry included) is also cut
/// at [`OP_LIMIT`].
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
const OP_LIMIT: Duration = Duration::from_millis(1500);

/// A [`Store`] in Redis.
pub struct RedisStore {
    client: redis::Client,
    /// Made on first use: the manager spawns tasks, so it needs the
    /// runtime, which [`RedisStore::connect`] does not.
    manager: OnceLock<ConnectionManager>,
    prefix: String,
}

impl RedisStore {
    /// A store on the Redis at `url` (`redis://[user:pass@]host:port[/db]`
    /// or `rediss://`). Only parses the URL: the connection is made on
    /// first use and remade after failures.
    pub fn connect(url: &str) -> Result<RedisStore, StoreError> {
        RedisStore::with_prefix(url, KEY_PREFIX)
    }

    /// [`RedisStore::connect`] with another key prefix (tests sharing one
    /// Redis keep apart with it).
    pub fn with_prefix(url: &str, prefix: &str) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::Unavailable(format!("invalid Redis URL: {e}")))?;
        Ok(RedisStore {
            client,
            manager: OnceLock::new(),
            prefix: prefix.to_string(),
        })
    }

    fn manager(&self) -> Result<ConnectionManager, StoreError> {
        if let Some(manager) = self.manager.get() {
            return Ok(manager.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1);
        let manager = ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            .map_err(unavailable)?;
        // Two first callers may race; the loser's manager is dropped unused.
        Ok(self.manager.get_or_init(|| manager).clone())
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    async fn query<T: FromRedisValue>(&self, cmd: Cmd) -> Result<T, StoreError> {
        let mut conn = self.manager()?;
        let answer = tokio::time::timeout(OP_LIMIT, cmd.query_async::<T>(&mut conn)).await;
        answer.map_err(|_| timed_out())?.map_err(classify)
    }

    async fn query_pipe<T: FromRedisValue>(&self, pipe: Pipeline) -> Result<T, StoreError> {
        let mut conn = self.manager()?;
        let answer = tokio::time::timeout(OP_LIMIT, pipe.query_async::<T>(&mut conn)).await;
        answer.map_err(|_| timed_out())?.map_err(classify)
    }

    fn set(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Cmd {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(key)).arg(value).arg("PX").arg(ttl_ms(ttl));
        cmd
    }
}

impl std::fmt::Debug for RedisStore {
    // The URL may hold a password: only the prefix is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn timed_out() -> StoreError {
    StoreError::Unavailable("Redis did not answer in time".into())
}

fn unavailable(e: RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// An error Redis answered is a refusal; anything else (refused or lost
/// connections, timeouts) is an outage.
fn classify(e: RedisError) -> StoreError {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        unavailable(e)
    } else if e.code().is_some() {
        StoreError::Refused(e.to_string())
    } else {
        unavailable(e)
    }
}

impl Store for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn put<'a>(&'a self, key: &'a str, value: Vec<u8>, ttl: Duration) -> StoreFuture<'a, ()> {
        Box::pin(self.query::<()>(self.set(key, value, ttl)))
    }

    fn put_new<'a>(&'a self, key: &'a str, value: Vec<u8>, ttl: Duration) -> StoreFuture<'a, bool> {
        let mut cmd = self.set(key, value, ttl);
        cmd.arg("NX");
        Box::pin(async move { Ok(self.query::<Option<String>>(cmd).await?.is_some()) })
    }

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.key(key));
        Box::pin(self.query(cmd))
    }

    fn take<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        // GETDEL (Redis 6.2+): one command, so of two redeemers one wins.
        let mut cmd = redis::cmd("GETDEL");
        cmd.arg(self.key(key));
        Box::pin(self.query(cmd))
    }

    fn delete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.key(key));
        Box::pin(async move { self.query::<u64>(cmd).await.map(|_| ()) })
    }

    fn incr<'a>(&'a self, key: &'a str, window: Duration) -> StoreFuture<'a, u64> {
        // One transaction: the counter is never left without its expiry,
        // whatever fails in between. INCR keeps the TTL SET NX gave it.
        let key = self.key(key);
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("SET")
            .arg(&key)
            .arg(0)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms(window))
            .ignore();
        pipe.cmd("INCR").arg(&key);
        Box::pin(async move { Ok(self.query_pipe::<(u64,)>(pipe).await?.0) })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Instant;

    use postern_harness::{Launch, Proc, free_port, peer, wait_port};

    use super::*;

    /// The Redis tests run against: `REDIS_URL` when set (the rig's), else
    /// a `redis-server` started here on a free port. `None` (after saying
    /// why) when there is neither; under `CI=true` that fails instead.
    pub(crate) async fn redis() -> Option<(String, Option<Proc>)> {
        if let Ok(url) = std::env::var("REDIS_URL") {
            return Some((url, None));
        }
        let server = peer("redis-server")?;
        let port = free_port();
        let proc = Launch::new("redis-server", server)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .spawn();
        wait_port(postern_harness::loopback(port)).await;
        Some((format!("redis://127.0.0.1:{port}"), Some(proc)))
    }

    /// A store on its own prefix, so tests sharing a Redis never collide.
    pub(crate) fn store(url: &str) -> RedisStore {
        replicas(url).0
    }

    /// Two stores on one prefix: what two gateway replicas see.
    pub(crate) fn replicas(url: &str) -> (RedisStore, RedisStore) {
        let prefix = format!("postern:oauth:test:{}:", crate::pkce::random_secret());
        let one = || RedisStore::with_prefix(url, &prefix).expect("url");
        (one(), one())
    }

    #[tokio::test]
    async fn conformance() {
        let Some((url, _server)) = redis().await else {
            return;
        };
        super::super::tests::conformance(&store(&url)).await;
    }

    #[tokio::test]
    async fn keys_live_under_the_prefix_with_their_ttl() {
        let Some((url, _server)) = redis().await else {
            return;
        };
        let store = RedisStore::connect(&url).expect("url");
        let key = format!("test:{}", crate::pkce::random_secret());
        store
            .put(&key, b"v".to_vec(), Duration::from_secs(30))
            .await
            .expect("put");
        store
            .incr(&format!("{key}:n"), Duration::from_secs(30))
            .await
            .expect("incr");
        let mut conn = store.manager().expect("manager");
        for stored in [format!("{KEY_PREFIX}{key}"), format!("{KEY_PREFIX}{key}:n")] {
            let ttl: i64 = redis::cmd("PTTL")
                .arg(&stored)
                .query_async(&mut conn)
                .await
                .expect("pttl");
            assert!((1..=30_000).contains(&ttl), "{stored}: {ttl}");
        }
        store.delete(&key).await.expect("delete");
        store.delete(&format!("{key}:n")).await.expect("delete");
    }

    #[tokio::test]
    async fn a_down_redis_is_an_error_within_two_seconds() {
        let store =
            RedisStore::connect(&format!("redis://127.0.0.1:{}", free_port())).expect("url");
        for _ in 0..2 {
            let started = Instant::now();
            let got = store.get("k").await;
            assert!(matches!(got, Err(StoreError::Unavailable(_))), "{got:?}");
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{:?}",
                started.elapsed()
            );
        }
        assert!(matches!(
            RedisStore::connect("not a url"),
            Err(StoreError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn a_restarted_redis_is_used_again() {
        let Some((url, Some(mut server))) = redis().await else {
            // With the rig's Redis this test cannot stop it.
            return;
        };
        let store = store(&url);
        store
            .put("k", b"v".to_vec(), Duration::from_secs(30))
            .await
            .expect("put");
        server.kill();
        assert!(matches!(
            store.get("k").await,
            Err(StoreError::Unavailable(_))
        ));
        let port = url.rsplit(':').next().expect("port").to_string();
        let bin = peer("redis-server").expect("redis-server");
        let _again = Launch::new("redis-server", bin)
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .spawn();
        wait_port(postern_harness::loopback(port.parse().expect("port"))).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match store.put("k", b"w".to_vec(), Duration::from_secs(30)).await {
                Ok(()) => break,
                Err(e) => assert!(Instant::now() < deadline, "still failing: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(store.get("k").await, Ok(Some(b"w".to_vec())));
    }
}
