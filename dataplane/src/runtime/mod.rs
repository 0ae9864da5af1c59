//! The live snapshot: what every request reads, and how a new one replaces it.
//!
//! A snapshot is validated, then swapped in whole: readers take an `Arc` and
//! keep it for as long as their request lasts, so a swap never changes what
//! a request in flight sees. Features that must react to a change (cutting a
//! user's tunnels) [`subscribe`](Runtime::subscribe). The runtime also keeps
//! what the admin API reports: the last error and the objects compilation
//! refused. It never holds secret material outside the snapshot itself.

mod metrics;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use postern_snapshot::{Snapshot, SnapshotError, Summary};
use serde::Serialize;
use tokio::sync::watch;

pub use metrics::Metrics;

/// Where snapshots come from in this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Pushed by the operator (`postern dataplane`).
    Operator,
    /// Compiled from a folder (`postern standalone`).
    Manifests,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Operator => "operator",
            Source::Manifests => "manifests",
        }
    }
}

/// A snapshot in service and when it was applied.
#[derive(Debug)]
pub struct Applied {
    pub snapshot: Arc<Snapshot>,
    pub applied_at: SystemTime,
    /// Counted once at the swap: the admin API is polled far more often
    /// than snapshots change, and counting walks every object.
    pub summary: Summary,
}

/// The latest failure to take a new configuration; the previous one serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LastError {
    /// The manifest file at fault (standalone mode).
    pub file: Option<String>,
    /// The refused snapshot version (operator mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub message: String,
}

/// An object compilation left out of the snapshot, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rejected {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub reason: String,
    pub message: String,
}

/// What the admin API reports besides the snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub last_error: Option<LastError>,
    pub rejected: Vec<Rejected>,
}

/// What [`Runtime::apply`] did with a valid snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Swapped,
    /// The same version already serves; nothing changed.
    Unchanged,
}

/// The data plane's live state. One per process, shared behind an `Arc`.
pub struct Runtime {
    source: Source,
    /// The read path: lock-free loads for every request.
    live: ArcSwapOption<Applied>,
    /// The change path: features wait on this to react to a swap.
    changes: watch::Sender<Option<Arc<Applied>>>,
    /// Serialises writers; held only for a store and a send, never across an await.
    report: Mutex<Report>,
    metrics: Metrics,
    /// Parts that work only in part (the tunnel registry), and how: shown
    /// by `/readyz`, which stays 200 (the replica still serves).
    degraded: Mutex<std::collections::BTreeMap<&'static str, String>>,
}

impl Runtime {
    pub fn new(source: Source) -> Arc<Self> {
        Arc::new(Runtime {
            source,
            live: ArcSwapOption::empty(),
            changes: watch::Sender::new(None),
            report: Mutex::new(Report::default()),
            metrics: Metrics::new(),
            degraded: Mutex::default(),
        })
    }

    pub fn source(&self) -> Source {
        self.source
    }

    /// The snapshot in service, if any. Keep the `Arc` for a whole request.
    pub fn current(&self) -> Option<Arc<Applied>> {
        self.live.load_full()
    }

    /// Just the snapshot in service.
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.current().map(|a| a.snapshot.clone())
    }

    /// The version in service.
    pub fn version(&self) -> Option<String> {
        self.live
            .load()
            .as_ref()
            .map(|a| a.snapshot.version.clone())
    }

    /// A receiver that sees every swap (and the current value at once).
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Applied>>> {
        self.changes.subscribe()
    }

    /// Validates and, when valid, swaps `snapshot` in and clears the last
    /// error. When invalid, records the refusal and keeps the current one.
    pub fn apply(&self, snapshot: Snapshot) -> Result<Outcome, SnapshotError> {
        self.apply_checked(snapshot, Snapshot::validate)
    }

    /// [`apply`](Self::apply) for a snapshot that
    /// [`decode_snapshot`](postern_snapshot::sync::decode_snapshot) read,
    /// which checked its version against the bytes it came in.
    pub fn apply_decoded(&self, snapshot: Snapshot) -> Result<Outcome, SnapshotError> {
        self.apply_checked(snapshot, Snapshot::validate_content)
    }

    fn apply_checked(
        &self,
        snapshot: Snapshot,
        validate: fn(&Snapshot) -> Result<(), SnapshotError>,
    ) -> Result<Outcome, SnapshotError> {
        if let Err(e) = validate(&snapshot) {
            self.refuse(Some(snapshot.version.clone()), None, e.to_string());
            return Err(e);
        }
        let mut report = self.lock_report();
        report.last_error = None;
        if self.version().as_deref() == Some(snapshot.version.as_str()) {
            return Ok(Outcome::Unchanged);
        }
        let applied = Arc::new(Applied {
            summary: snapshot.summary(),
            snapshot: Arc::new(snapshot),
            applied_at: SystemTime::now(),
        });
        self.live.store(Some(applied.clone()));
        self.metrics.applied(&applied, self.source);
        self.changes.send_replace(Some(applied));
        Ok(Outcome::Swapped)
    }

    /// Records a snapshot that was refused (counted as a NACK).
    pub fn refuse(&self, version: Option<String>, file: Option<String>, message: String) {
        self.metrics.nacks.inc();
        self.set_error(Some(LastError {
            file,
            version,
            message,
        }));
    }

    /// Sets or clears the error shown on the admin API.
    pub fn set_error(&self, error: Option<LastError>) {
        self.lock_report().last_error = error;
    }

    /// Replaces the list of objects compilation refused.
    pub fn set_rejected(&self, rejected: Vec<Rejected>) {
        self.lock_report().rejected = rejected;
    }

    pub fn report(&self) -> Report {
        self.lock_report().clone()
    }

    /// Marks `part` degraded (with what it means), or well again.
    pub fn set_degraded(&self, part: &'static str, how: Option<String>) {
        let mut degraded = self.degraded.lock().unwrap_or_else(|p| p.into_inner());
        match how {
            Some(how) => degraded.insert(part, how),
            None => degraded.remove(part),
        };
    }

    /// Every degraded part and how, by name.
    pub fn degraded(&self) -> Vec<(&'static str, String)> {
        let degraded = self.degraded.lock().unwrap_or_else(|p| p.into_inner());
        degraded.iter().map(|(k, v)| (*k, v.clone())).collect()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn lock_report(&self) -> MutexGuard<'_, Report> {
        // A panic while holding this lock leaves a consistent Report behind.
        self.report.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_snapshot::Site;

    fn snapshot(host: &str) -> Snapshot {
        Snapshot {
            sites: vec![Site::new("default/a", &[host], "http://127.0.0.1:1")],
            ..Snapshot::default()
        }
        .seal()
    }

    #[test]
    fn apply_swaps_and_in_flight_readers_keep_their_snapshot() {
        let rt = Runtime::new(Source::Operator);
        assert!(rt.current().is_none());
        assert_eq!(rt.apply(snapshot("a.example.com")), Ok(Outcome::Swapped));
        let held = rt.snapshot().expect("applied");
        assert_eq!(rt.apply(snapshot("b.example.com")), Ok(Outcome::Swapped));
        assert_eq!(held.sites[0].hostnames, ["a.example.com"]);
        assert_eq!(
            rt.snapshot().expect("applied").sites[0].hostnames,
            ["b.example.com"]
        );
    }

    #[test]
    fn same_version_is_unchanged() {
        let rt = Runtime::new(Source::Operator);
        rt.apply(snapshot("a.example.com")).expect("valid");
        assert_eq!(rt.apply(snapshot("a.example.com")), Ok(Outcome::Unchanged));
    }

    #[test]
    fn invalid_snapshot_keeps_the_last_good_one_and_is_reported() {
        let rt = Runtime::new(Source::Operator);
        let good = snapshot("a.example.com");
        rt.apply(good.clone()).expect("valid");
        let mut bad = snapshot("b.example.com");
        bad.version = "0000".into();
        assert!(matches!(rt.apply(bad), Err(SnapshotError::Version { .. })));
        assert_eq!(rt.version(), Some(good.version.clone()));
        let err = rt.report().last_error.expect("error kept");
        assert_eq!(err.version.as_deref(), Some("0000"));
        rt.apply(snapshot("c.example.com")).expect("valid");
        assert_eq!(rt.report().last_error, None);
    }

    #[test]
    fn subscribers_see_swaps() {
        let rt = Runtime::new(Source::Manifests);
        let mut rx = rt.subscribe();
        rt.apply(snapshot("a.example.com")).expect("valid");
        assert!(rx.has_changed().expect("open"));
        let seen = rx.borrow_and_update().clone().expect("some");
        assert_eq!(Some(seen.snapshot.version.clone()), rt.version());
    }
}
