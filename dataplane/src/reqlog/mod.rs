//! The request log: one [`Record`] per HTTP request through the reverse
//! proxy, per forward-proxy connection and per tcp tunnel stream, kept in
//! a queryable store (Redis when `--redis-url` is set, shared by the
//! replicas; else a bounded ring in memory) and tailed live.
//!
//! The request path only ever calls [`RequestLog::record`], which hands
//! the record to a bounded queue with `try_send`: a full queue drops it
//! (counted in `postern_request_log_dropped_total{reason="queue_full"}`),
//! it never waits. One writer task ([`Feature::serve`]) drains the queue in
//! batches, counts the minute, feeds the live tail and writes the store. A
//! store that fails (Redis down) drops the batch
//! (`reason="store_unavailable"`), is left alone for a second, and is
//! tried again; the log says so at most once a minute.
//!
//! The live tail ([`RequestLog::subscribe`]) carries the records written by
//! this process only, with Redis too: a tail is per replica.
//! This module owns no listener; the admin API serves it through [`http`].

mod filter;
mod hook;
pub mod http;
mod memory;
mod record;
mod redis;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use futures::FutureExt;
use futures::future::BoxFuture;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

pub use filter::{DEFAULT_LIMIT, Filter, MAX_LIMIT, Status};
pub use hook::{Ended, LogHook};
pub use record::{Kind, Record, new_id, new_id_string, now_ms, rfc3339};

use crate::feature::Feature;
use crate::listeners::{Listener, Listeners};
use memory::{Minutes, Ring};
use redis::RedisStore;

/// Records waiting for the writer at most; beyond, new ones are dropped.
const QUEUE: usize = 16 * 1024;
/// Records the writer takes from the queue at once (one Redis batch).
const BATCH: usize = 512;
/// Live-tail records a subscriber may fall behind before it skips.
const TAIL: usize = 1024;
/// How long a failed store is left alone before it is tried again.
const STORE_BACKOFF: Duration = Duration::from_secs(1);
/// The least time between two warnings about the store.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// How long records gather in the queue between two batches.
const GATHER: Duration = Duration::from_millis(50);
/// How long the writer may take to flush the queue at shutdown.
const FLUSH: Duration = Duration::from_secs(2);

/// Why a request-log call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A query parameter that is unknown or does not parse: a 400.
    #[error("{0}")]
    BadQuery(String),
    /// The store cannot answer (Redis down or slow).
    #[error("request log store: {0}")]
    Store(String),
    #[error("{0}")]
    Config(String),
    #[error("the request log is off (--request-log off)")]
    Off,
}

/// One minute of the dashboard's overview.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Minute {
    /// Its start, Unix milliseconds; RFC 3339 in JSON.
    #[serde(serialize_with = "minute_time")]
    pub minute: u64,
    pub total: u64,
    /// Status 500 and above, or the upstream refused.
    pub errors: u64,
}

fn minute_time<S: serde::Serializer>(ms: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*ms))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// A bounded ring in this process.
    Memory,
    /// The Redis of --redis-url, shared by the replicas.
    Redis,
    /// No request log (the access log line stays).
    Off,
}

/// Flags of the request log.
#[derive(Debug, Clone, Args)]
pub struct RequestLogArgs {
    /// Where request records are kept for the admin API's queries and live
    /// tail (default: redis when --redis-url is set, else memory).
    #[arg(long, env = "POSTERN_REQUEST_LOG", value_name = "STORE")]
    pub request_log: Option<StoreKind>,
    /// Records the in-memory store keeps (the newest).
    #[arg(
        long,
        env = "POSTERN_REQUEST_LOG_CAPACITY",
        default_value_t = 10_000,
        value_name = "N"
    )]
    pub request_log_capacity: usize,
    /// How long records are kept (`30m`, `24h`, `7d`), in either store.
    #[arg(long, env = "POSTERN_REQUEST_LOG_RETENTION", default_value = "24h", value_parser = parse_retention, value_name = "DURATION")]
    pub request_log_retention: Duration,
    /// Records the Redis store keeps at most (the stream and each index).
    #[arg(
        long,
        env = "POSTERN_REQUEST_LOG_MAX_RECORDS",
        default_value_t = 200_000,
        value_name = "N"
    )]
    pub request_log_max_records: u64,
}

fn parse_retention(text: &str) -> Result<Duration, String> {
    filter::parse_ago(text)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{text}: expected a duration such as 30m, 24h or 7d"))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    /// `queue_full` or `store_unavailable`.
    reason: &'static str,
}

#[derive(Clone, Default)]
struct Metrics {
    records: Counter,
    dropped: Family<DropLabels, Counter>,
    queue_full: Counter,
}

impl Metrics {
    fn new() -> Metrics {
        let dropped = Family::<DropLabels, Counter>::default();
        let queue_full = dropped
            .get_or_create(&DropLabels {
                reason: "queue_full",
            })
            .clone();
        // Both reasons show from the start, at 0.
        let _ = dropped.get_or_create(&DropLabels {
            reason: "store_unavailable",
        });
        Metrics {
            records: Counter::default(),
            dropped,
            queue_full,
        }
    }
}

enum Store {
    Memory(Ring),
    Redis(RedisStore),
    Off,
}

/// The request log of this process: the queue, the store and the tail.
pub struct RequestLog {
    queue: Option<mpsc::Sender<Record>>,
    /// Taken by the writer when it starts.
    pending: Mutex<Option<mpsc::Receiver<Record>>>,
    store: Store,
    tail: broadcast::Sender<Arc<Record>>,
    minutes: Minutes,
    metrics: Metrics,
}

impl RequestLog {
    /// The log the flags ask for; `redis_url` is `--redis-url`.
    pub fn from_args(args: &RequestLogArgs, redis_url: Option<&str>) -> Result<RequestLog, Error> {
        let retention_ms =
            u64::try_from(args.request_log_retention.as_millis()).unwrap_or(u64::MAX);
        let kind = args.request_log.unwrap_or(if redis_url.is_some() {
            StoreKind::Redis
        } else {
            StoreKind::Memory
        });
        let store = match (kind, redis_url) {
            (StoreKind::Off, _) => Store::Off,
            (StoreKind::Memory, _) => {
                Store::Memory(Ring::new(args.request_log_capacity, retention_ms))
            }
            (StoreKind::Redis, Some(url)) => Store::Redis(RedisStore::new(
                url,
                args.request_log_max_records,
                retention_ms,
            )?),
            (StoreKind::Redis, None) => {
                return Err(Error::Config(
                    "--request-log redis needs --redis-url".into(),
                ));
            }
        };
        Ok(RequestLog::with_store(store))
    }

    /// No request log: records are not even made.
    pub fn off() -> RequestLog {
        RequestLog::with_store(Store::Off)
    }

    /// An in-memory log of `capacity` records kept for `retention`.
    pub fn memory(capacity: usize, retention: Duration) -> RequestLog {
        let ms = u64::try_from(retention.as_millis()).unwrap_or(u64::MAX);
        RequestLog::with_store(Store::Memory(Ring::new(capacity, ms)))
    }

    /// A log on the Redis at `url`.
    pub fn redis(url: &str, max_records: u64, retention: Duration) -> Result<RequestLog, Error> {
        let ms = u64::try_from(retention.as_millis()).unwrap_or(u64::MAX);
        Ok(RequestLog::with_store(Store::Redis(RedisStore::new(
            url,
            max_records,
            ms,
        )?)))
    }

    fn with_store(store: Store) -> RequestLog {
        let (queue, pending) = match store {
            Store::Off => (None, None),
            _ => {
                let (tx, rx) = mpsc::channel(QUEUE);
                (Some(tx), Some(rx))
            }
        };
        RequestLog {
            queue,
            pending: Mutex::new(pending),
            store,
            tail: broadcast::channel(TAIL).0,
            minutes: Minutes::default(),
            metrics: Metrics::new(),
        }
    }

    /// Whether records are kept at all (`--request-log off`: not).
    pub fn enabled(&self) -> bool {
        self.queue.is_some()
    }

    /// Hands a record to the writer; never waits. A full queue drops it.
    pub fn record(&self, record: Record) {
        if let Some(queue) = &self.queue
            && queue.try_send(record).is_err()
        {
            self.metrics.queue_full.inc();
        }
    }

    /// The newest records matching `filter` first, at most `filter.limit`.
    pub async fn query(&self, filter: &Filter) -> Result<Vec<Record>, Error> {
        let now = now_ms();
        match &self.store {
            Store::Memory(ring) => Ok(ring.query(filter, now)),
            Store::Redis(redis) => redis.query(filter, now).await,
            Store::Off => Err(Error::Off),
        }
    }

    /// Every record this process writes from now on, for a live tail. A
    /// subscriber that falls [`TAIL`] records behind gets `Lagged` and
    /// goes on with the newest.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Record>> {
        self.tail.subscribe()
    }

    /// Requests and errors in each of the last 60 minutes, oldest first:
    /// across the replicas with Redis (this process's own counts while
    /// Redis cannot answer).
    pub async fn per_minute(&self) -> Vec<Minute> {
        let now = now_ms();
        if let Store::Redis(redis) = &self.store
            && let Ok(minutes) = redis.per_minute(now).await
        {
            return minutes;
        }
        self.minutes.last_hour(now)
    }

    /// Distinct clients of `host` over the retention: exact in memory,
    /// approximate (HyperLogLog) in Redis.
    pub async fn visitors(&self, host: &str) -> Result<u64, Error> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let now = now_ms();
        match &self.store {
            Store::Memory(ring) => Ok(ring.visitors(&host, now)),
            Store::Redis(redis) => redis.visitors(&host, now).await,
            Store::Off => Err(Error::Off),
        }
    }

    /// Registers `postern_request_log_records_total` and
    /// `postern_request_log_dropped_total{reason}`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("request_log");
        r.register(
            "records",
            "Request-log records written to the store",
            self.metrics.records.clone(),
        );
        r.register(
            "dropped",
            "Request-log records dropped: queue_full (the writer is behind) or store_unavailable (Redis down or slow)",
            self.metrics.dropped.clone(),
        );
    }

    /// The writer: drains the queue until `shutdown`, then flushes what is
    /// queued within [`FLUSH`]. Runs once per log (the data plane runs it as
    /// a feature); a second call returns at once.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let queue = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(queue) = queue {
            self.write_until(queue, shutdown).await;
        }
    }

    async fn write_until(&self, mut queue: mpsc::Receiver<Record>, shutdown: CancellationToken) {
        let mut health = Health::default();
        let mut buf = Vec::with_capacity(BATCH);
        loop {
            let n = tokio::select! {
                n = queue.recv_many(&mut buf, BATCH) => n,
                () = shutdown.cancelled() => break,
            };
            if n == 0 {
                return;
            }
            self.write(&mut buf, &mut health).await;
            // Everything queued meanwhile, in batches.
            while queue.recv_many(&mut buf, BATCH).now_or_never().unwrap_or(0) > 0 {
                self.write(&mut buf, &mut health).await;
            }
            // Then let records gather: while the writer is not waiting on
            // the queue, `try_send` wakes no one, so under load the writer
            // runs a few times a second instead of once per request.
            tokio::select! {
                () = tokio::time::sleep(GATHER) => {}
                () = shutdown.cancelled() => break,
            }
        }
        queue.close();
        let flush = async {
            while queue.recv_many(&mut buf, BATCH).await > 0 {
                self.write(&mut buf, &mut health).await;
            }
        };
        let _ = tokio::time::timeout(FLUSH, flush).await;
    }

    /// One batch: counted, tailed, stored (or dropped and counted).
    async fn write(&self, buf: &mut Vec<Record>, health: &mut Health) {
        let batch: Vec<Arc<Record>> = buf.drain(..).map(Arc::new).collect();
        let live = self.tail.receiver_count() > 0;
        for record in &batch {
            self.minutes.count(record);
            if live {
                let _ = self.tail.send(record.clone());
            }
        }
        let n = batch.len() as u64;
        let stored = match &self.store {
            Store::Memory(ring) => {
                ring.push(&batch, now_ms());
                Ok(())
            }
            Store::Redis(_) if health.resting() => Err(None),
            Store::Redis(redis) => redis.write(&batch, now_ms()).await.map_err(Some),
            Store::Off => Ok(()),
        };
        match stored {
            Ok(()) => {
                self.metrics.records.inc_by(n);
                health.up();
            }
            Err(why) => {
                self.metrics
                    .dropped
                    .get_or_create(&DropLabels {
                        reason: "store_unavailable",
                    })
                    .inc_by(n);
                health.down(why, n);
            }
        }
    }
}

/// The store's health as the writer saw it, for backoff and bounded logs.
#[derive(Default)]
struct Health {
    /// Since when the store fails, and until when it is left alone.
    down: Option<(Instant, Instant)>,
    last_warning: Option<Instant>,
    dropped: u64,
}

impl Health {
    fn resting(&self) -> bool {
        self.down.is_some_and(|(_, until)| Instant::now() < until)
    }

    fn down(&mut self, why: Option<Error>, n: u64) {
        let now = Instant::now();
        self.dropped += n;
        let since = self.down.map_or(now, |(since, _)| since);
        if why.is_some() {
            self.down = Some((since, now + STORE_BACKOFF));
        }
        let Some(why) = why else { return };
        if self
            .last_warning
            .is_none_or(|t| now.duration_since(t) >= WARN_EVERY)
        {
            tracing::warn!(error = %why, dropped = self.dropped, "request log: the store cannot be written; records are dropped until it answers again");
            self.last_warning = Some(now);
        }
    }

    fn up(&mut self) {
        if let Some((since, _)) = self.down.take() {
            tracing::info!(
                down_for_s = since.elapsed().as_secs(),
                dropped = self.dropped,
                "request log: the store answers again"
            );
            self.dropped = 0;
            self.last_warning = None;
        }
    }
}

impl Feature for RequestLog {
    fn name(&self) -> &'static str {
        "request-log"
    }

    fn listeners(&self) -> &'static [Listener] {
        &[]
    }

    fn register_metrics(&self, registry: &mut Registry) {
        self.register(registry);
    }

    fn serve(
        self: Arc<Self>,
        _listeners: Listeners,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, crate::Result<()>> {
        Box::pin(async move {
            // With the log off there is nothing to write, but returning
            // before shutdown would stop the process.
            let off = !self.enabled();
            self.run(shutdown.clone()).await;
            if off {
                shutdown.cancelled().await;
            }
            Ok(())
        })
    }
}
