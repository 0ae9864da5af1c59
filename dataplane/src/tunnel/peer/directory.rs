//! The tunnel registry the data-plane replicas share, in Redis: which
//! replica holds a live agent for which tunnel. Each replica writes its
//! own entries and reads everyone's once per [`REFRESH`] (and at once when
//! its own agents change), in one pipelined round trip; requests only
//! read the last [`View`], never Redis.
//!
//! Per tunnel, one hash `postern:tunnel:{namespace/name}`: field = the
//! holder's `--tunnel-peer-advertise` address, value = `"{since} {until}"`
//! (unix milliseconds: when its oldest live agent connected, and when the
//! entry lapses unless refreshed). A replica that dies leaves entries that
//! lapse after [`TTL`]; one whose agent leaves deletes its field at once.
//!
//! When Redis cannot be reached, the view is empty and marked unhealthy:
//! the replica serves only the tunnels it holds, `/readyz` says so and
//! `postern_tunnel_registry_up` is 0.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio_util::sync::CancellationToken;

use super::unix_ms;
use crate::runtime::Runtime;
use crate::tunnel::session::State;

/// How often entries are refreshed and the view re-read.
pub const REFRESH: Duration = Duration::from_secs(1);
/// How long an entry outlives its last refresh.
pub const TTL: Duration = Duration::from_secs(10);
/// One round trip's bound: a hung Redis counts as down.
const OP_TIMEOUT: Duration = Duration::from_millis(800);
/// Its part name in `/readyz`.
const PART: &str = "tunnel registry";

/// One replica holding an agent for a tunnel.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Holder {
    /// When its oldest live agent connected (unix ms): the oldest holder
    /// owns a standby-mode tunnel.
    pub since: u64,
    pub addr: String,
}

/// The registry as last read.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct View {
    pub healthy: bool,
    /// Live holders per tunnel, oldest first (this replica included).
    pub holders: HashMap<String, Vec<Holder>>,
}

pub struct Directory {
    client: redis::Client,
    /// This replica's address in the registry.
    pub me: String,
    pub view: ArcSwap<View>,
}

fn key(tunnel: &str) -> String {
    format!("postern:tunnel:{tunnel}")
}

/// `"{since} {until}"` → `(since, until)`.
fn parse_entry(value: &str) -> Option<(u64, u64)> {
    let (since, until) = value.split_once(' ')?;
    Some((since.parse().ok()?, until.parse().ok()?))
}

/// The live holders in one hash, oldest first.
pub fn holders(fields: &HashMap<String, String>, now: u64) -> Vec<Holder> {
    let mut list: Vec<Holder> = fields
        .iter()
        .filter_map(|(addr, value)| {
            let (since, until) = parse_entry(value)?;
            (until > now).then(|| Holder {
                since,
                addr: addr.clone(),
            })
        })
        .collect();
    list.sort();
    list
}

impl Directory {
    /// Fails only on a malformed URL; Redis itself is dialled later.
    pub fn new(url: &str, me: String) -> Result<Directory, redis::RedisError> {
        Ok(Directory {
            client: redis::Client::open(url)?,
            me,
            view: ArcSwap::from_pointee(View::default()),
        })
    }

    /// Writes and reads the registry until `shutdown`, then removes this
    /// replica's entries (best effort: they lapse anyway).
    pub async fn run(
        self: Arc<Self>,
        state: Arc<State>,
        runtime: Arc<Runtime>,
        shutdown: CancellationToken,
    ) {
        let mut conn: Option<ConnectionManager> = None;
        let mut held = BTreeSet::new();
        let mut changes = state.registry.subscribe();
        let mut last_error = String::new();
        loop {
            let round = self.round(&mut conn, &state, &mut held);
            let view = match tokio::time::timeout(OP_TIMEOUT, round).await {
                Ok(Ok(view)) => {
                    if !last_error.is_empty() {
                        tracing::info!("tunnel registry (Redis) reachable again");
                        last_error.clear();
                    }
                    runtime.set_degraded(PART, None);
                    view
                }
                failed => {
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("no answer within {OP_TIMEOUT:?}"),
                    };
                    if why != last_error {
                        tracing::warn!(error = %why, "tunnel registry (Redis) unreachable: serving only the tunnels whose agents are connected here");
                        last_error = why.clone();
                    }
                    runtime.set_degraded(
                        PART,
                        Some(format!(
                            "Redis unreachable ({why}): only tunnels whose agents are connected to this replica are served"
                        )),
                    );
                    View::default()
                }
            };
            state.metrics.registry_up.set(i64::from(view.healthy));
            let moved = **self.view.load() != view;
            self.view.store(Arc::new(view));
            if moved {
                // The tcp listeners re-check whether their tunnel is live.
                state.registry.notify();
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(REFRESH) => {}
                _ = changes.changed() => {}
            }
        }
        if let Some(conn) = conn.as_mut() {
            let mut pipe = redis::pipe();
            for tunnel in &held {
                pipe.hdel(key(tunnel), &self.me).ignore();
            }
            let _ = tokio::time::timeout(OP_TIMEOUT, pipe.query_async::<()>(conn)).await;
        }
    }

    /// One refresh: this replica's entries written (or removed), every
    /// programmed tunnel's holders read.
    async fn round(
        &self,
        conn: &mut Option<ConnectionManager>,
        state: &State,
        held: &mut BTreeSet<String>,
    ) -> Result<View, redis::RedisError> {
        if conn.is_none() {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(OP_TIMEOUT))
                .set_response_timeout(Some(OP_TIMEOUT))
                .set_number_of_retries(1);
            *conn = Some(ConnectionManager::new_with_config(self.client.clone(), config).await?);
        }
        let Some(conn) = conn.as_mut() else {
            return Ok(View::default());
        };
        let now = unix_ms(SystemTime::now());
        let until = now + TTL.as_millis() as u64;
        let table = state.table.load();
        let ids: Vec<String> = table.ids().map(String::from).collect();
        let mut pipe = redis::pipe();
        // Never an empty pipeline (Redis refuses it as "empty command",
        // which read as Redis down on a replica with no tunnels), and a
        // real round trip even then: the health is Redis's, not the table's.
        pipe.cmd("PING").ignore();
        let mut holding = BTreeSet::new();
        for id in &ids {
            if let Some(since) = state.registry.since(id) {
                let value = format!("{} {until}", unix_ms(since));
                pipe.hset(key(id), &self.me, value).ignore();
                pipe.pexpire(key(id), (2 * TTL).as_millis() as i64).ignore();
                holding.insert(id.clone());
            }
        }
        for gone in held.difference(&holding) {
            pipe.hdel(key(gone), &self.me).ignore();
        }
        for id in &ids {
            pipe.hgetall(key(id));
        }
        let read: Vec<HashMap<String, String>> = pipe.query_async(conn).await?;
        *held = holding;
        let holders = ids
            .into_iter()
            .zip(read)
            .map(|(id, fields)| (id, holders(&fields, now)))
            .filter(|(_, list)| !list.is_empty())
            .collect();
        Ok(View {
            healthy: true,
            holders,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lapsed_and_malformed_entries_are_not_holders() {
        let fields: HashMap<String, String> = [
            ("10.0.0.2:9444", "200 5000"),
            ("10.0.0.1:9444", "100 5000"),
            ("10.0.0.3:9444", "50 900"),
            ("10.0.0.4:9444", "junk"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let list = holders(&fields, 1000);
        let addrs: Vec<&str> = list.iter().map(|h| h.addr.as_str()).collect();
        assert_eq!(addrs, ["10.0.0.1:9444", "10.0.0.2:9444"]);
    }
}
