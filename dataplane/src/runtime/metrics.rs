//! Prometheus metrics of the data plane, encoded for `/metrics`. Labels
//! never carry secret material: versions are content hashes.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::UNIX_EPOCH;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{Applied, Source};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InfoLabels {
    pub version: String,
    pub schema: String,
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// The part that failed: a feature's name, `snapshots`, `sync`, ...
    pub part: String,
    /// The error's `metric_label()`.
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

/// Every metric the data plane exports.
pub struct Metrics {
    /// Locked only to add a feature's metrics at start-up and to encode.
    registry: Mutex<Registry>,
    /// Snapshots swapped in.
    pub applies: Counter,
    /// Snapshots refused (undecodable or invalid).
    pub nacks: Counter,
    /// 1 while a session with the operator is established.
    pub sync_connected: Gauge,
    /// Connection attempts to the operator after the first.
    pub sync_reconnects: Counter,
    /// Parts of the process that failed, by part and error kind.
    pub failures: Family<FailureLabels, Counter>,
    info: Family<InfoLabels, Gauge>,
    objects: Family<KindLabels, Gauge>,
    applied_at: Gauge<f64, AtomicU64>,
}

impl Metrics {
    pub fn new() -> Self {
        let m = Metrics {
            registry: Mutex::new(Registry::with_prefix("postern")),
            applies: Counter::default(),
            nacks: Counter::default(),
            sync_connected: Gauge::default(),
            sync_reconnects: Counter::default(),
            failures: Family::default(),
            info: Family::default(),
            objects: Family::default(),
            applied_at: Gauge::default(),
        };
        m.register()
    }

    fn register(mut self) -> Self {
        let r = self.registry.get_mut().unwrap_or_else(|p| p.into_inner());
        r.register(
            "snapshot_applies",
            "Snapshots swapped in",
            self.applies.clone(),
        );
        r.register("snapshot_nacks", "Snapshots refused", self.nacks.clone());
        r.register(
            "sync_connected",
            "1 while connected to the operator",
            self.sync_connected.clone(),
        );
        r.register(
            "sync_reconnects",
            "Reconnections to the operator",
            self.sync_reconnects.clone(),
        );
        r.register(
            "failures",
            "Parts of the data plane that failed, by part and error kind",
            self.failures.clone(),
        );
        r.register(
            "snapshot_info",
            "The snapshot in service (value 1)",
            self.info.clone(),
        );
        r.register(
            "snapshot_objects",
            "Objects in the snapshot in service, by kind",
            self.objects.clone(),
        );
        r.register(
            "snapshot_applied_timestamp_seconds",
            "When the snapshot in service was applied",
            self.applied_at.clone(),
        );
        self
    }

    pub(super) fn applied(&self, applied: &Applied, source: Source) {
        let snap = &applied.snapshot;
        self.applies.inc();
        self.info.clear();
        self.info
            .get_or_create(&InfoLabels {
                version: snap.version.clone(),
                schema: snap.schema.to_string(),
                source: source.as_str().to_string(),
            })
            .set(1);
        let summary = &applied.summary;
        for (kind, n) in [
            ("ProxyTarget", summary.proxy_targets),
            ("Route", summary.routes),
            ("UserUpstream", summary.user_upstreams),
            ("Tunnel", summary.tunnels),
            ("OAuthClient", summary.oauth_clients),
        ] {
            let labels = KindLabels { kind: kind.into() };
            self.objects
                .get_or_create(&labels)
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let secs = applied
            .applied_at
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.applied_at.set(secs);
    }

    /// Counts one failure of `part`, of kind `kind` (an error's metric label).
    pub fn failure(&self, part: &str, kind: &str) {
        self.failures
            .get_or_create(&FailureLabels {
                part: part.to_string(),
                kind: kind.to_string(),
            })
            .inc();
    }

    /// Lets a traffic feature (the forward proxy, ...) add its own metrics,
    /// under the same `postern_` prefix, once at start-up.
    pub fn register_with(&self, f: impl FnOnce(&mut Registry)) {
        f(&mut self.registry.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable() {
        let m = Metrics::new();
        m.nacks.inc();
        m.failure("reverse", "bind");
        let text = m.encode();
        for name in [
            "postern_snapshot_applies_total",
            "postern_snapshot_nacks_total 1",
            "postern_sync_connected",
            "postern_sync_reconnects_total",
            "postern_failures_total{part=\"reverse\",kind=\"bind\"} 1",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}
