//! Writes one Lease per data plane connected to this replica, and renews
//! it while the connection lives.
//!
//! The newest connection wins: a replica that sees a data plane connect
//! takes its lease whoever held it (the data plane left that replica), and
//! a replica that finds its lease taken stops writing it. When the
//! connection ends the lease is left to expire, not deleted: until then the
//! data plane, which keeps serving its last snapshot, still counts, and a
//! quick reconnect (here or to another replica) takes the same lease over.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Fleet;
use super::record::{Draft, Record, holder, lease_name};
use crate::Result;
use crate::config::LeaseTiming;

/// Changes arriving this close together (an ack and an agents report) are
/// written at once.
const SETTLE: Duration = Duration::from_millis(50);
/// How often renewals fall due at most.
const TICK: Duration = Duration::from_secs(1);

/// What this replica last wrote for one data plane.
struct Held {
    conn: u64,
    name: String,
    resource_version: Option<String>,
    acquired: MicroTime,
    body: String,
    written: Instant,
    /// Another replica took the lease: this connection is stale.
    lost: bool,
}

pub struct LeaseWriter {
    pub api: Api<Lease>,
    pub fleet: Arc<Fleet>,
    pub replica: String,
    pub timing: LeaseTiming,
}

impl LeaseWriter {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut changes = self.fleet.subscribe();
        let mut held: HashMap<String, Held> = HashMap::new();
        loop {
            self.round(&mut held).await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    tokio::time::sleep(SETTLE).await;
                }
                _ = tokio::time::sleep(TICK.min(self.timing.renew)) => {}
            }
        }
    }

    /// Writes what changed and what is due for renewal; a failed write is
    /// retried on the next round.
    async fn round(&self, held: &mut HashMap<String, Held>) {
        let dataplanes = self.fleet.dataplanes();
        held.retain(|id, _| dataplanes.iter().any(|dp| &dp.id == id));
        for dp in dataplanes {
            let body = Record::encode(&dp);
            let current = held.remove(&dp.id).filter(|h| h.conn == dp.conn);
            let result = match current {
                None => self.take(&dp.id, dp.conn, body).await,
                Some(h) if h.lost => Ok(h),
                Some(h) if h.body == body && h.written.elapsed() < self.timing.renew => Ok(h),
                Some(h) => self.renew(h, body).await,
            };
            match result {
                Ok(h) => {
                    held.insert(dp.id, h);
                }
                Err(error) => {
                    tracing::warn!(dataplane = %dp.id, %error, "cannot write the data plane's lease")
                }
            }
        }
    }

    /// A new connection: the lease becomes ours, whoever held it.
    async fn take(&self, id: &str, conn: u64, body: String) -> Result<Held> {
        let name = lease_name(id);
        let existing = self.api.get_opt(&name).await?;
        if let Some(previous) = existing.as_ref().and_then(holder)
            && previous != self.replica
        {
            tracing::info!(dataplane = %id, %previous, "data plane moved to this replica; taking its lease");
        }
        let now = MicroTime(Timestamp::now());
        let mut h = Held {
            conn,
            name,
            resource_version: existing.and_then(|l| l.metadata.resource_version),
            acquired: now,
            body,
            written: Instant::now(),
            lost: false,
        };
        h.resource_version = self.write(&h).await?;
        Ok(h)
    }

    /// Renews (and updates) a lease we hold. A conflict means someone else
    /// wrote it: if that was another replica, the data plane moved there.
    async fn renew(&self, mut h: Held, body: String) -> Result<Held> {
        h.body = body;
        match self.write(&h).await {
            Ok(version) => {
                h.resource_version = version;
                h.written = Instant::now();
                return Ok(h);
            }
            Err(crate::Error::Kube(kube::Error::Api(status))) if status.code == 409 => {}
            Err(crate::Error::Kube(kube::Error::Api(status))) if status.is_not_found() => {
                // Deleted as expired (we renewed too late): write it anew.
                h.resource_version = None;
                h.resource_version = self.write(&h).await?;
                h.written = Instant::now();
                return Ok(h);
            }
            Err(other) => return Err(other),
        }
        let current = self.api.get_opt(&h.name).await?;
        let ours = current.as_ref().and_then(holder) == Some(self.replica.as_str());
        if !ours {
            tracing::info!(lease = %h.name, "another replica took the data plane's lease; no longer renewing it");
            h.lost = true;
            return Ok(h);
        }
        h.resource_version = current.and_then(|l| l.metadata.resource_version);
        h.resource_version = self.write(&h).await?;
        h.written = Instant::now();
        Ok(h)
    }

    /// Creates or replaces (guarded by the resourceVersion); returns the
    /// new resourceVersion.
    async fn write(&self, h: &Held) -> Result<Option<String>> {
        let lease = Draft {
            name: &h.name,
            replica: &self.replica,
            body: &h.body,
            duration: self.timing.duration,
            acquired: &h.acquired,
            renewed: MicroTime(Timestamp::now()),
            resource_version: h.resource_version.clone(),
        }
        .lease();
        let written = match h.resource_version {
            Some(_) => {
                self.api
                    .replace(&h.name, &PostParams::default(), &lease)
                    .await?
            }
            None => self.api.create(&PostParams::default(), &lease).await?,
        };
        Ok(written.metadata.resource_version)
    }
}
