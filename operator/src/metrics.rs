//! The operator's Prometheus metrics, registered once and shared.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Every metric the operator exports, under the prefix `postern_operator`.
#[derive(Debug)]
pub struct Metrics {
    pub snapshots_published: Counter,
    pub compile_seconds: Histogram,
    pub dataplanes_connected: Gauge,
    pub acks: Counter,
    pub nacks: Counter,
    pub status_patches: Counter,
    pub status_patch_errors: Counter,
    pub leader: Gauge,
    /// `acme_orders_total`, `acme_certificate_expiry_seconds`.
    pub acme: postern_acme::Metrics,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let metrics = (
            Counter::default(),
            Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            Gauge::default(),
            Counter::default(),
            Counter::default(),
            Counter::default(),
            Counter::default(),
            Gauge::default(),
        );
        let mut registry = Registry::with_prefix("postern_operator");
        let (published, compile, connected, acks, nacks, patches, patch_errors, leader) =
            metrics.clone();
        registry.register("snapshots_published", "Snapshots published", published);
        registry.register("compile_seconds", "Time to compile a snapshot", compile);
        registry.register("dataplanes_connected", "Data planes connected", connected);
        registry.register("acks", "Snapshot acks received", acks);
        registry.register("nacks", "Snapshot nacks received", nacks);
        registry.register("status_patches", "Status patches written", patches);
        registry.register(
            "status_patch_errors",
            "Status patches that failed",
            patch_errors,
        );
        registry.register("leader", "1 while this replica holds the lease", leader);
        let (published, compile, connected, acks, nacks, patches, patch_errors, leader) = metrics;
        let acme = postern_acme::Metrics::default();
        acme.register(&mut registry);
        Metrics {
            snapshots_published: published,
            compile_seconds: compile,
            dataplanes_connected: connected,
            acks,
            nacks,
            status_patches: patches,
            status_patch_errors: patch_errors,
            leader,
            acme,
            registry,
        }
    }
}

impl Metrics {
    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_every_metric() {
        let metrics = Metrics::default();
        metrics.acks.inc();
        metrics.leader.set(1);
        let text = metrics.encode();
        for name in [
            "postern_operator_snapshots_published_total",
            "postern_operator_compile_seconds_bucket",
            "postern_operator_dataplanes_connected",
            "postern_operator_acks_total 1",
            "postern_operator_nacks_total",
            "postern_operator_status_patches_total",
            "postern_operator_leader 1",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
    }
}
