//! The status writer: patches objects whose desired status differs from
//! what they show, while this replica leads.
//!
//! It runs on its own task and only reads the published snapshot and the
//! fleet, so a slow API server delays status, never snapshots.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::events::{Recorder, Reporter};
use postern_api::{Kind, ObjectKey, ResourceStatus};
use postern_crds::{OAuthClient, ProxyTarget, Route, Tunnel, UserUpstream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{conditions, events};
use crate::fleet::{Coverage, FleetView};
use crate::index::{Index, format_time};
use crate::metrics::Metrics;
use crate::publish::{Latest, Published, lock};

/// Patches in flight at once.
const CONCURRENCY: usize = 8;
/// Changes arriving this close together are handled in one pass.
const SETTLE: Duration = Duration::from_millis(50);
/// A pass also runs this often, to retry failed patches.
const RESYNC: Duration = Duration::from_secs(30);

/// What was last written to one object.
#[derive(Debug)]
struct Written {
    uid: Option<String>,
    status: ResourceStatus,
}

/// One patch to make.
struct Work {
    kind: Kind,
    key: ObjectKey,
    uid: Option<String>,
    status: ResourceStatus,
    /// What the status said before: the Events are the difference.
    previous: Option<ResourceStatus>,
}

pub struct StatusWriter {
    pub client: Client,
    pub index: Arc<Mutex<Index>>,
    pub latest: Latest,
    /// The whole fleet, from the data planes' leases.
    pub fleet: Arc<FleetView>,
    pub leader: watch::Receiver<bool>,
    pub metrics: Arc<Metrics>,
    /// CertificateReady and `status.certificate` of ACME targets.
    pub board: Arc<crate::acme::Board>,
    /// Who writes the Events of each status transition. Each object
    /// written gets a fresh `Recorder`: kube's keeps every Event it wrote
    /// for six minutes to count repeats and scans them all on each write,
    /// 20,000 of them after a first sync of 10,000 objects, while a
    /// transition here yields one Event (see `events`) and repeats none.
    pub reporter: Reporter,
}

impl StatusWriter {
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut fleet_changes = self.fleet.subscribe();
        let mut board_changes = self.board.subscribe();
        // Kept between passes so an unchanged status is never re-patched,
        // even before the watch shows our own write.
        let mut written: HashMap<(Kind, ObjectKey), Written> = HashMap::new();
        loop {
            let elected = tokio::select! {
                _ = shutdown.cancelled() => return,
                elected = self.leader.wait_for(|leader| *leader) => elected.is_ok(),
            };
            if !elected {
                return;
            }
            // Newly elected: another replica may have written since we last led.
            written.clear();
            while *self.leader.borrow_and_update() {
                self.pass(&mut written).await;
                let open = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    changed = self.latest.changed() => changed.is_ok(),
                    changed = fleet_changes.changed() => changed.is_ok(),
                    changed = board_changes.changed() => changed.is_ok(),
                    changed = self.leader.changed() => changed.is_ok(),
                    _ = tokio::time::sleep(RESYNC) => true,
                };
                if !open {
                    return;
                }
                tokio::time::sleep(SETTLE).await;
            }
        }
    }

    async fn pass(&mut self, written: &mut HashMap<(Kind, ObjectKey), Written>) {
        let Some(published) = self.latest.borrow_and_update().clone() else {
            return;
        };
        let planning = std::time::Instant::now();
        let work = self.plan(&published, written);
        let plan_ms = planning.elapsed().as_secs_f64() * 1000.0;
        if work.is_empty() {
            tracing::debug!(plan_ms, "status up to date");
            return;
        }
        tracing::debug!(patches = work.len(), plan_ms, "writing status");
        let leader = self.leader.clone();
        let results: Vec<(Work, Outcome)> = futures::stream::iter(work)
            .map(|work| {
                let client = self.client.clone();
                let leader = leader.clone();
                let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
                let metrics = self.metrics.clone();
                async move {
                    // Leadership can be lost mid-pass; stop writing at once.
                    let leading = *leader.borrow();
                    let outcome = if leading {
                        patch(client, &work).await
                    } else {
                        Outcome::Skipped
                    };
                    // Counted as each patch lands, not when the pass ends:
                    // a pass over thousands of objects takes a while, and
                    // the counters are how one sees it is still writing.
                    match outcome {
                        Outcome::Written => {
                            metrics.status_patches.inc();
                        }
                        Outcome::Failed => {
                            metrics.status_patch_errors.inc();
                        }
                        Outcome::Gone | Outcome::Skipped => {}
                    }
                    if matches!(outcome, Outcome::Written) {
                        let notes = events::transitions(work.previous.as_ref(), &work.status);
                        events::publish(&recorder, &reference(&work), notes).await;
                    }
                    (work, outcome)
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for (work, outcome) in results {
            match outcome {
                Outcome::Written => {
                    let entry = Written {
                        uid: work.uid,
                        status: work.status,
                    };
                    written.insert((work.kind, work.key), entry);
                }
                Outcome::Failed | Outcome::Gone | Outcome::Skipped => {
                    written.remove(&(work.kind, work.key));
                }
            }
        }
        let live: std::collections::HashSet<_> = published
            .verdicts
            .iter()
            .map(|v| (v.kind, v.key.clone()))
            .collect();
        written.retain(|k, _| live.contains(k));
    }

    /// The patches the current verdicts and acks call for.
    fn plan(
        &self,
        published: &Published,
        written: &HashMap<(Kind, ObjectKey), Written>,
    ) -> Vec<Work> {
        let verdicts = &published.verdicts;
        let mut dataplanes = self.fleet.dataplanes();
        for dp in &mut dataplanes {
            if let Some(acked) = &dp.acked {
                dp.acked = Some(Coverage::completed(acked, &published.coverage));
            }
        }
        let now = format_time(&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ));
        let index = lock(&self.index);
        let mut work = Vec::new();
        for verdict in verdicts {
            let Some(observed) = index.observed(verdict.kind, &verdict.key) else {
                continue; // deleted since the compile
            };
            if observed.generation != verdict.generation {
                continue; // changed since the compile; the next one covers it
            }
            let previous = written
                .get(&(verdict.kind, verdict.key.clone()))
                .filter(|w| w.uid == observed.uid)
                .map(|w| &w.status)
                .or(observed.status.as_ref());
            let status = conditions::desired(verdict, &dataplanes, previous, &now);
            let report = self.board.get(verdict.kind, &verdict.key);
            let status = conditions::with_certificate(status, report.as_ref(), previous, &now);
            if previous != Some(&status) {
                work.push(Work {
                    kind: verdict.kind,
                    key: verdict.key.clone(),
                    uid: observed.uid,
                    status,
                    previous: previous.cloned(),
                });
            }
        }
        work
    }
}

enum Outcome {
    Written,
    /// Deleted since: not a failure worth counting.
    Gone,
    /// Retried on a later pass.
    Failed,
    /// No longer the leader.
    Skipped,
}

/// Merge-patches the status subresource. A merge patch replaces the whole
/// conditions list, which is why `desired` carries the conditions it does
/// not own.
async fn patch(client: Client, work: &Work) -> Outcome {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client, &work.key.namespace, &api_resource(work.kind));
    let mut body = serde_json::json!({ "status": work.status });
    if work.status.lost_claims.is_empty() {
        // Absent from a merge patch would keep the old record: null removes it.
        body["status"]["lostClaims"] = serde_json::Value::Null;
    }
    match api
        .patch_status(
            &work.key.name,
            &PatchParams::default(),
            &Patch::Merge(&body),
        )
        .await
    {
        Ok(_) => Outcome::Written,
        Err(kube::Error::Api(status)) if status.is_not_found() => Outcome::Gone,
        Err(error) => {
            tracing::warn!(kind = %work.kind, key = %work.key, %error, "status patch failed");
            Outcome::Failed
        }
    }
}

/// The object an Event is about.
fn reference(work: &Work) -> ObjectReference {
    let resource = api_resource(work.kind);
    ObjectReference {
        api_version: Some(resource.api_version),
        kind: Some(resource.kind),
        name: Some(work.key.name.clone()),
        namespace: Some(work.key.namespace.clone()),
        uid: work.uid.clone(),
        ..ObjectReference::default()
    }
}

fn api_resource(kind: Kind) -> ApiResource {
    match kind {
        Kind::ProxyTarget => ApiResource::erase::<ProxyTarget>(&()),
        Kind::Route => ApiResource::erase::<Route>(&()),
        Kind::UserUpstream => ApiResource::erase::<UserUpstream>(&()),
        Kind::Tunnel => ApiResource::erase::<Tunnel>(&()),
        Kind::OAuthClient => ApiResource::erase::<OAuthClient>(&()),
    }
}
