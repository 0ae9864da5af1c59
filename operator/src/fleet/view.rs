//! The whole fleet, from the data planes' leases: what status and ACME
//! count, on every replica alike.
//!
//! Every replica watches the leases, so a replica that becomes leader has
//! already been timing them. A lease counts while this replica has seen it
//! change within its duration; one that stops changing (its data plane or
//! its replica is gone) drops out of the fleet after that duration, and the
//! leader deletes it after a second one.
//!
//! While the watch cannot reach the API server no renewal can be seen, so
//! nothing expires then: the last known fleet stands until a relist has
//! succeeded, and every lease's clock restarts at that relist (an outage
//! of the API server alone must not flip Programmed and back).

use std::collections::{BTreeMap, HashSet};
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Dataplane;
use super::record::{Record, SELECTOR, duration_of, live};

/// How often expiry is checked.
const TICK: Duration = Duration::from_secs(1);

/// One lease as this replica saw it.
#[derive(Debug)]
struct Entry {
    dataplane: Dataplane,
    duration: Duration,
    resource_version: Option<String>,
    /// When this replica last saw the lease change.
    since: Instant,
}

/// Every data plane whose lease is live, by lease name.
#[derive(Debug)]
pub struct FleetView {
    entries: Mutex<BTreeMap<String, Entry>>,
    /// The watch failed and has not relisted since: no expiry is judged.
    blind: std::sync::atomic::AtomicBool,
    /// Bumped when the live set or a live record changes.
    changed: watch::Sender<u64>,
}

impl Default for FleetView {
    fn default() -> Self {
        FleetView {
            entries: Mutex::default(),
            blind: std::sync::atomic::AtomicBool::new(false),
            changed: watch::Sender::new(0),
        }
    }
}

impl FleetView {
    /// The data planes whose leases are live now.
    pub fn dataplanes(&self) -> Vec<Dataplane> {
        let blind = self.is_blind();
        self.lock()
            .values()
            .filter(|e| blind || live(e.since.elapsed(), e.duration))
            .map(|e| e.dataplane.clone())
            .collect()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Records a lease as listed or watched; its clock restarts only when
    /// its resourceVersion moved.
    pub fn apply(&self, lease: &Lease, fallback: Duration) {
        let Some(name) = lease.metadata.name.clone() else {
            return;
        };
        let Some(dataplane) = Record::decode(lease) else {
            return;
        };
        let resource_version = lease.metadata.resource_version.clone();
        let duration = duration_of(lease, fallback);
        let mut entries = self.lock();
        let since = match entries.get(&name) {
            Some(e) if e.resource_version == resource_version => e.since,
            _ => Instant::now(),
        };
        entries.insert(
            name,
            Entry {
                dataplane,
                duration,
                resource_version,
                since,
            },
        );
        drop(entries);
        self.bump();
    }

    pub fn remove(&self, name: &str) {
        if self.lock().remove(name).is_some() {
            self.bump();
        }
    }

    /// Drops the leases a relist did not return.
    fn retain(&self, names: &HashSet<String>) {
        let dropped = {
            let mut entries = self.lock();
            let before = entries.len();
            entries.retain(|name, _| names.contains(name));
            entries.len() != before
        };
        if dropped {
            self.bump();
        }
    }

    /// Names of the live leases (to notice expiries).
    fn live_names(&self) -> Vec<String> {
        let blind = self.is_blind();
        self.lock()
            .iter()
            .filter(|(_, e)| blind || live(e.since.elapsed(), e.duration))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Leases unchanged for two durations, with the version to delete.
    fn abandoned(&self) -> Vec<(String, Option<String>)> {
        if self.is_blind() {
            return Vec::new();
        }
        self.lock()
            .iter()
            .filter(|(_, e)| !live(e.since.elapsed(), e.duration * 2))
            .map(|(name, e)| (name.clone(), e.resource_version.clone()))
            .collect()
    }

    fn is_blind(&self) -> bool {
        self.blind.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The watch failed: renewals cannot be seen until it relists.
    fn go_blind(&self) {
        self.blind.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// A relist succeeded: after an outage every clock restarts now.
    fn see_again(&self) {
        if self.blind.swap(false, std::sync::atomic::Ordering::Relaxed) {
            let now = Instant::now();
            for entry in self.lock().values_mut() {
                entry.since = now;
            }
            self.bump();
        }
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Feeds a [`FleetView`] from a watch on the data-plane leases.
pub struct ViewWatcher {
    pub api: Api<Lease>,
    pub view: Arc<FleetView>,
    pub leader: watch::Receiver<bool>,
    /// For a lease that states no duration.
    pub duration: Duration,
}

impl ViewWatcher {
    pub async fn run(self, shutdown: CancellationToken) {
        let config = watcher::Config::default().labels(SELECTOR);
        let mut stream = pin!(watcher::watcher(self.api.clone(), config).default_backoff());
        let mut relisted: Option<HashSet<String>> = None;
        let mut live = Vec::new();
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                event = stream.next() => match event {
                    Some(Ok(event)) => self.handle(event, &mut relisted),
                    Some(Err(error)) => {
                        tracing::warn!(%error, "watching data-plane leases");
                        self.view.go_blind();
                    }
                    None => return,
                },
                _ = tick.tick() => {
                    let now_live = self.view.live_names();
                    if now_live != live {
                        live = now_live;
                        self.view.bump();
                    }
                    if *self.leader.borrow() {
                        self.collect().await;
                    }
                }
            }
        }
    }

    fn handle(&self, event: Event<Lease>, relisted: &mut Option<HashSet<String>>) {
        match event {
            Event::Apply(lease) => self.view.apply(&lease, self.duration),
            Event::Delete(lease) => {
                if let Some(name) = &lease.metadata.name {
                    self.view.remove(name);
                }
            }
            Event::Init => *relisted = Some(HashSet::new()),
            Event::InitApply(lease) => {
                if let (Some(names), Some(name)) = (relisted.as_mut(), &lease.metadata.name) {
                    names.insert(name.clone());
                }
                self.view.apply(&lease, self.duration);
            }
            Event::InitDone => {
                if let Some(names) = relisted.take() {
                    self.view.retain(&names);
                }
                self.view.see_again();
            }
        }
    }

    /// Deletes leases nobody renewed for two durations; the precondition
    /// spares one renewed meanwhile.
    async fn collect(&self) {
        for (name, resource_version) in self.view.abandoned() {
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    resource_version,
                    uid: None,
                }),
                ..DeleteParams::default()
            };
            match self.api.delete(&name, &params).await {
                Ok(_) => {
                    tracing::info!(lease = %name, "deleted the lease of a data plane gone for good");
                    self.view.remove(&name);
                }
                Err(kube::Error::Api(status)) if status.is_not_found() => self.view.remove(&name),
                Err(error) => {
                    tracing::debug!(lease = %name, %error, "cannot delete an abandoned lease")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::record::{Draft, lease_name};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use k8s_openapi::jiff::Timestamp;

    fn lease(id: &str, version: &str) -> Lease {
        let dp = Dataplane {
            id: id.into(),
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
            conn: 1,
            acked: None,
            nack: None,
            agents: Vec::new(),
            capabilities: Vec::new(),
        };
        let now = MicroTime(Timestamp::now());
        Draft {
            name: &lease_name(id),
            replica: "op-1",
            body: &Record::encode(&dp),
            duration: Duration::from_secs(15),
            acquired: &now,
            renewed: now.clone(),
            resource_version: Some(version.into()),
        }
        .lease()
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_that_stops_changing_leaves_the_fleet_after_its_duration() {
        let view = FleetView::default();
        let changes = view.subscribe();
        view.apply(&lease("a", "1"), Duration::ZERO);
        view.apply(&lease("b", "1"), Duration::ZERO);
        assert!(changes.has_changed().expect("open"));
        tokio::time::advance(Duration::from_secs(10)).await;
        view.apply(&lease("a", "2"), Duration::ZERO); // renewed
        view.apply(&lease("b", "1"), Duration::ZERO); // relisted, unchanged
        tokio::time::advance(Duration::from_secs(6)).await;
        let ids: Vec<String> = view.dataplanes().into_iter().map(|d| d.id).collect();
        assert_eq!(ids, ["a"], "b was not renewed within 15 s");
        assert!(view.abandoned().is_empty());
        tokio::time::advance(Duration::from_secs(15)).await;
        let abandoned: Vec<String> = view.abandoned().into_iter().map(|(n, _)| n).collect();
        assert_eq!(abandoned, [lease_name("b")]);
    }

    #[test]
    fn a_relist_drops_leases_deleted_meanwhile() {
        let view = FleetView::default();
        view.apply(&lease("a", "1"), Duration::ZERO);
        view.apply(&lease("b", "1"), Duration::ZERO);
        view.retain(&[lease_name("a")].into());
        assert_eq!(view.dataplanes().len(), 1);
        view.remove(&lease_name("a"));
        assert!(view.dataplanes().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_expires_while_the_watch_is_blind_and_clocks_restart_at_the_relist() {
        let view = FleetView::default();
        view.apply(&lease("a", "1"), Duration::ZERO);
        view.go_blind();
        tokio::time::advance(Duration::from_secs(40)).await;
        assert_eq!(
            view.dataplanes().len(),
            1,
            "an API server outage is not a dead data plane"
        );
        assert!(view.abandoned().is_empty());
        view.see_again();
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(
            view.dataplanes().len(),
            1,
            "its clock restarted at the relist"
        );
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(view.dataplanes().is_empty(), "then it expires as usual");
    }
}
