//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! Every replica compiles and serves snapshots; only the leader writes
//! status. Expiry is judged the way client-go does: by how long *this*
//! replica has seen the lease record unchanged, on its own monotonic clock,
//! never by comparing another node's `renewTime` with ours (clocks skew).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Result;
use crate::config::LeaseTiming;
use crate::metrics::Metrics;

/// Name of the Lease all replicas compete for.
pub const LEASE_NAME: &str = "postern-operator";

/// What to do with the lease as it stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// We hold it: renew.
    Renew,
    /// Nobody holds it, or the holder stopped renewing: take it.
    TakeOver,
    /// Someone else holds it and renews.
    Wait,
}

/// The election rule. `unchanged_for` is how long this replica has seen the
/// same lease record.
pub fn decide(
    holder: Option<&str>,
    me: &str,
    unchanged_for: Duration,
    lease_duration: Duration,
) -> Decision {
    match holder {
        Some(holder) if holder == me => Decision::Renew,
        None => Decision::TakeOver,
        Some(_) if unchanged_for >= lease_duration => Decision::TakeOver,
        Some(_) => Decision::Wait,
    }
}

/// Runs the election; publishes "am I the leader" on a watch channel.
pub struct Elector {
    pub api: Api<Lease>,
    pub id: String,
    pub timing: LeaseTiming,
    pub leader: watch::Sender<bool>,
    pub metrics: Arc<Metrics>,
}

/// The record last seen and since when (by our clock).
struct Seen {
    resource_version: Option<String>,
    since: Instant,
}

impl Elector {
    pub fn new(
        client: Client,
        namespace: &str,
        id: String,
        timing: LeaseTiming,
        metrics: Arc<Metrics>,
    ) -> (Self, watch::Receiver<bool>) {
        let (leader, rx) = watch::channel(false);
        let elector = Elector {
            api: Api::namespaced(client, namespace),
            id,
            timing,
            leader,
            metrics,
        };
        (elector, rx)
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let mut seen: Option<Seen> = None;
        loop {
            let leading = match self.attempt(&mut seen).await {
                Ok(leading) => leading,
                Err(error) => {
                    // Step down at once: status written by two replicas that
                    // both think they lead is worse than a pause.
                    tracing::warn!(%error, "lease update failed");
                    false
                }
            };
            self.set_leader(leading);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(self.timing.renew) => {}
            }
        }
        if *self.leader.borrow() {
            self.set_leader(false);
            if let Err(error) = self.release().await {
                tracing::warn!(%error, "could not release the lease");
            }
        }
    }

    fn set_leader(&self, leading: bool) {
        self.metrics.leader.set(i64::from(leading));
        let was = self.leader.send_replace(leading);
        if was != leading {
            tracing::info!(id = %self.id, leading, "leadership changed");
        }
    }

    /// One round: create, renew or take over the lease. True when we hold it.
    async fn attempt(&self, seen: &mut Option<Seen>) -> Result<bool> {
        let Some(mut lease) = self.api.get_opt(LEASE_NAME).await? else {
            return self.write(None).await;
        };
        let resource_version = lease.metadata.resource_version.clone();
        if seen
            .as_ref()
            .is_none_or(|s| s.resource_version != resource_version)
        {
            *seen = Some(Seen {
                resource_version,
                since: Instant::now(),
            });
        }
        let unchanged_for = seen.as_ref().map(|s| s.since.elapsed()).unwrap_or_default();
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs)
            .unwrap_or(self.timing.duration);
        let now = MicroTime(Timestamp::now());
        match decide(holder, &self.id, unchanged_for, duration) {
            Decision::Wait => return Ok(false),
            Decision::Renew => spec.renew_time = Some(now),
            Decision::TakeOver => {
                if let Some(previous) = holder {
                    tracing::info!(%previous, "taking over an expired lease");
                }
                spec.holder_identity = Some(self.id.clone());
                spec.acquire_time = Some(now.clone());
                spec.renew_time = Some(now);
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
        }
        spec.lease_duration_seconds = Some(self.duration_secs());
        self.write(Some(lease)).await
    }

    /// Creates the lease (`None`) or replaces it; the resourceVersion makes
    /// the write fail if another replica wrote first, which is a lost race,
    /// not an error.
    async fn write(&self, lease: Option<Lease>) -> Result<bool> {
        let result = match lease {
            Some(lease) => {
                self.api
                    .replace(LEASE_NAME, &PostParams::default(), &lease)
                    .await
            }
            None => {
                let now = MicroTime(Timestamp::now());
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(LEASE_NAME.into()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.id.clone()),
                        lease_duration_seconds: Some(self.duration_secs()),
                        acquire_time: Some(now.clone()),
                        renew_time: Some(now),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
        };
        match result {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    /// On shutdown: clear the holder so a successor need not wait for expiry.
    async fn release(&self) -> Result<()> {
        let Some(mut lease) = self.api.get_opt(LEASE_NAME).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.id.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        self.api
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await?;
        tracing::info!(id = %self.id, "released the lease");
        Ok(())
    }

    fn duration_secs(&self) -> i32 {
        i32::try_from(self.timing.duration.as_secs()).unwrap_or(i32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(15);

    #[test]
    fn the_holder_renews() {
        assert_eq!(
            decide(Some("me"), "me", Duration::from_secs(60), LEASE),
            Decision::Renew
        );
    }

    #[test]
    fn an_empty_lease_is_taken() {
        assert_eq!(
            decide(None, "me", Duration::ZERO, LEASE),
            Decision::TakeOver
        );
    }

    #[test]
    fn a_live_holder_is_respected_until_it_stops_renewing() {
        assert_eq!(
            decide(Some("other"), "me", Duration::from_secs(14), LEASE),
            Decision::Wait
        );
        assert_eq!(
            decide(Some("other"), "me", LEASE, LEASE),
            Decision::TakeOver
        );
    }
}
