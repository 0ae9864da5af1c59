//! The Redis store, shared by every replica on the same Redis.
//!
//! Keys (all under `postern:reqlog:`):
//! - `stream`: a stream, one entry per record (field `r`, the record's
//!   JSON), trimmed to `--request-log-max-records` (`MAXLEN ~`) and to the
//!   retention (`MINID ~`) on every write;
//! - `host:{host}`, `ip:{ip}`, `user:{user}`, `status:{404}`,
//!   `status:{4xx}`: sorted sets of stream ids scored by the record's time,
//!   trimmed by the same age and size, expiring with the retention when a
//!   host (or user...) goes quiet;
//! - `visitors:{host}:{hour}`: a HyperLogLog of client addresses per
//!   hour; a host's unique visitors are the union of the retention's hours;
//! - `minute:{unix minute}`: a hash of `total` and `errors`, for two hours.
//!
//! A batch is two round trips: the entries first (their ids are Redis's),
//! then the indexes. An index may name an entry trimmed since; queries
//! skip it. Every call has a deadline: a Redis that hangs is down.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Mutex;

use super::filter::Filter;
use super::memory::hour_of;
use super::record::Record;
use super::{Error, Minute};

/// One round trip's bound.
const OP_TIMEOUT: Duration = Duration::from_millis(1000);
/// Ids read per index page, entries per stream page, while querying.
const PAGE: usize = 200;
/// A query reads at most this many pages before it answers what it has.
const MAX_PAGES: usize = 50;
const PREFIX: &str = "postern:reqlog:";

pub struct RedisStore {
    client: redis::Client,
    conn: Mutex<Option<ConnectionManager>>,
    max_records: u64,
    retention_ms: u64,
}

fn key(rest: &str) -> String {
    format!("{PREFIX}{rest}")
}

/// The index keys a record is filed under.
fn index_keys(r: &Record) -> Vec<String> {
    let mut keys = vec![
        key(&format!("host:{}", r.host)),
        key(&format!("ip:{}", r.client)),
    ];
    if let Some(user) = &r.user {
        keys.push(key(&format!("user:{user}")));
    }
    if let Some(status) = r.status {
        keys.push(key(&format!("status:{status}")));
        keys.push(key(&format!("status:{}xx", status / 100)));
    }
    keys
}

/// The index keys a filter names, if any.
fn filter_keys(f: &Filter) -> Vec<String> {
    let mut keys = Vec::new();
    if let Some(host) = &f.host {
        keys.push(key(&format!("host:{host}")));
    }
    if let Some(ip) = f.ip {
        keys.push(key(&format!("ip:{ip}")));
    }
    if let Some(user) = &f.user {
        keys.push(key(&format!("user:{user}")));
    }
    if let Some(status) = f.status {
        keys.push(key(&format!("status:{}", status.key())));
    }
    keys
}

fn visitors_key(host: &str, hour: u64) -> String {
    key(&format!("visitors:{host}:{hour}"))
}

type Entry = (String, Vec<String>);

/// The record of a stream entry (`[id, ["r", json]]`), if it parses.
fn decode(entry: &Entry) -> Option<Record> {
    let json = entry
        .1
        .chunks(2)
        .find(|kv| kv[0] == "r")
        .and_then(|kv| kv.get(1))?;
    serde_json::from_str(json).ok()
}

impl RedisStore {
    /// Fails only on a malformed URL; Redis itself is dialled when needed.
    pub fn new(url: &str, max_records: u64, retention_ms: u64) -> Result<RedisStore, Error> {
        Ok(RedisStore {
            client: redis::Client::open(url)
                .map_err(|e| Error::Config(format!("--redis-url: {e}")))?,
            conn: Mutex::new(None),
            max_records: max_records.max(1),
            retention_ms,
        })
    }

    /// A connection (the manager redials by itself once made).
    async fn conn(&self) -> Result<ConnectionManager, Error> {
        let mut held = self.conn.lock().await;
        if let Some(conn) = held.as_ref() {
            return Ok(conn.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(OP_TIMEOUT))
            .set_response_timeout(Some(OP_TIMEOUT))
            .set_number_of_retries(1);
        let made = ConnectionManager::new_with_config(self.client.clone(), config);
        let conn = timed(made).await?;
        *held = Some(conn.clone());
        Ok(conn)
    }

    /// Writes a batch: entries, indexes, visitors, minute counts, trims.
    pub async fn write(&self, batch: &[Arc<Record>], now_ms: u64) -> Result<(), Error> {
        let mut conn = self.conn().await?;
        let stream = key("stream");
        let cutoff = now_ms.saturating_sub(self.retention_ms);
        let mut pipe = redis::pipe();
        for record in batch {
            let json = serde_json::to_string(&**record).map_err(|e| Error::Store(e.to_string()))?;
            pipe.cmd("XADD")
                .arg(&stream)
                .arg("MAXLEN")
                .arg("~")
                .arg(self.max_records)
                .arg("*")
                .arg("r")
                .arg(json);
        }
        pipe.cmd("XTRIM")
            .arg(&stream)
            .arg("MINID")
            .arg("~")
            .arg(cutoff)
            .ignore();
        let ids: Vec<String> = timed(pipe.query_async(&mut conn)).await?;
        let mut pipe = redis::pipe();
        let mut touched = HashSet::new();
        let ttl = self.retention_ms.max(1000);
        for (record, id) in batch.iter().zip(&ids) {
            for index in index_keys(record) {
                pipe.zadd(&index, id, record.time).ignore();
                touched.insert(index);
            }
            let hour = record.time / 3_600_000;
            let visitors = visitors_key(&record.host, hour);
            pipe.cmd("PFADD")
                .arg(&visitors)
                .arg(record.client.to_string())
                .ignore();
            pipe.pexpire(&visitors, (ttl + 3_600_000) as i64).ignore();
            let minute = key(&format!("minute:{}", record.time / 60_000));
            pipe.hincr(&minute, "total", 1).ignore();
            if record.is_error() {
                pipe.hincr(&minute, "errors", 1).ignore();
            }
            pipe.pexpire(&minute, 2 * 3_600_000).ignore();
        }
        let keep = -1 - self.max_records as i64;
        for index in &touched {
            pipe.cmd("ZREMRANGEBYSCORE")
                .arg(index)
                .arg("-inf")
                .arg(format!("({cutoff}"))
                .ignore();
            pipe.cmd("ZREMRANGEBYRANK")
                .arg(index)
                .arg(0)
                .arg(keep)
                .ignore();
            pipe.pexpire(index, ttl as i64).ignore();
        }
        timed(pipe.query_async::<()>(&mut conn)).await
    }

    /// The newest matching records first: through the most selective
    /// index the filter names, else down the stream.
    pub async fn query(&self, filter: &Filter, now_ms: u64) -> Result<Vec<Record>, Error> {
        let mut conn = self.conn().await?;
        let since = filter
            .since
            .unwrap_or(0)
            .max(now_ms.saturating_sub(self.retention_ms));
        let mut filter = filter.clone();
        filter.since = Some(since);
        let keys = filter_keys(&filter);
        if keys.is_empty() {
            return self.scan_stream(&mut conn, &filter).await;
        }
        let mut pipe = redis::pipe();
        for k in &keys {
            pipe.zcount(k, since, "+inf");
        }
        let counts: Vec<u64> = timed(pipe.query_async(&mut conn)).await?;
        let Some((best, _)) = keys.iter().zip(counts).min_by_key(|(_, n)| *n) else {
            return Ok(Vec::new());
        };
        self.scan_index(&mut conn, best, &filter).await
    }

    async fn scan_stream(
        &self,
        conn: &mut ConnectionManager,
        filter: &Filter,
    ) -> Result<Vec<Record>, Error> {
        let stream = key("stream");
        let mut found = Vec::new();
        let mut end = "+".to_string();
        let start = filter.since.unwrap_or(0).to_string();
        for _ in 0..MAX_PAGES {
            let page: Vec<Entry> = timed(
                redis::cmd("XREVRANGE")
                    .arg(&stream)
                    .arg(&end)
                    .arg(&start)
                    .arg("COUNT")
                    .arg(PAGE)
                    .query_async(conn),
            )
            .await?;
            let done = page.len() < PAGE;
            if let Some((last, _)) = page.last() {
                end = format!("({last}");
            }
            found.extend(page.iter().filter_map(decode).filter(|r| filter.matches(r)));
            if done || found.len() >= filter.limit {
                break;
            }
        }
        found.truncate(filter.limit);
        Ok(found)
    }

    async fn scan_index(
        &self,
        conn: &mut ConnectionManager,
        index: &str,
        filter: &Filter,
    ) -> Result<Vec<Record>, Error> {
        let stream = key("stream");
        let since = filter.since.unwrap_or(0);
        let mut found = Vec::new();
        for page_no in 0..MAX_PAGES {
            let ids: Vec<String> = timed(
                redis::cmd("ZREVRANGEBYSCORE")
                    .arg(index)
                    .arg("+inf")
                    .arg(since)
                    .arg("LIMIT")
                    .arg(page_no * PAGE)
                    .arg(PAGE)
                    .query_async(conn),
            )
            .await?;
            if ids.is_empty() {
                break;
            }
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.cmd("XRANGE").arg(&stream).arg(id).arg(id);
            }
            let entries: Vec<Vec<Entry>> = timed(pipe.query_async(conn)).await?;
            found.extend(
                entries
                    .iter()
                    .flatten()
                    .filter_map(decode)
                    .filter(|r| filter.matches(r)),
            );
            if ids.len() < PAGE || found.len() >= filter.limit {
                break;
            }
        }
        found.truncate(filter.limit);
        Ok(found)
    }

    /// Approximate distinct client addresses of `host` over the retention.
    pub async fn visitors(&self, host: &str, now_ms: u64) -> Result<u64, Error> {
        let mut conn = self.conn().await?;
        let last = now_ms / 3_600_000;
        let first = now_ms.saturating_sub(self.retention_ms) / 3_600_000;
        let keys: Vec<String> = (first..=last).map(|h| visitors_key(host, h)).collect();
        timed(redis::cmd("PFCOUNT").arg(keys).query_async(&mut conn)).await
    }

    /// Requests and errors per minute across replicas, oldest first.
    pub async fn per_minute(&self, now_ms: u64) -> Result<Vec<Minute>, Error> {
        let mut conn = self.conn().await?;
        let current = now_ms / 60_000;
        let mut pipe = redis::pipe();
        for minute in current.saturating_sub(59)..=current {
            pipe.hgetall(key(&format!("minute:{minute}")));
        }
        let read: Vec<HashMap<String, u64>> = timed(pipe.query_async(&mut conn)).await?;
        let first = current.saturating_sub(59);
        Ok(hour_of(now_ms, |minute| {
            let counts = usize::try_from(minute - first)
                .ok()
                .and_then(|i| read.get(i));
            let get = |f: &str| counts.and_then(|c| c.get(f)).copied().unwrap_or(0);
            (get("total"), get("errors"))
        }))
    }
}

/// A Redis call within [`OP_TIMEOUT`].
async fn timed<T>(call: impl Future<Output = redis::RedisResult<T>>) -> Result<T, Error> {
    match tokio::time::timeout(OP_TIMEOUT, call).await {
        Ok(result) => result.map_err(|e| Error::Store(e.to_string())),
        Err(_) => Err(Error::Store(format!("no answer within {OP_TIMEOUT:?}"))),
    }
}
