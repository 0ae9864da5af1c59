//! The reverse proxy's metrics. Labels are fixed words (outcomes,
//! listener names), never hosts or paths a client typed, so a scanner
//! cannot grow the label set.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `ok` or a `ProxyError::metric_label`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    pub listener: &'static str,
    /// `proxy_header` or `tls_handshake`.
    pub reason: &'static str,
}

/// Every reverse-proxy metric. Cloning shares the values.
#[derive(Clone)]
pub struct ReverseMetrics {
    pub requests: Family<OutcomeLabels, Counter>,
    pub connections: Family<ListenerLabels, Counter>,
    pub dropped: Family<DropLabels, Counter>,
    pub upgraded: Gauge,
    /// The `ok` outcome's and each listener's counters, looked up once: the
    /// family's lock and hash stay off the path of every request.
    ok: Counter,
    accepted: [Counter; 2],
}

impl Default for ReverseMetrics {
    fn default() -> Self {
        let requests = Family::<OutcomeLabels, Counter>::default();
        let connections = Family::<ListenerLabels, Counter>::default();
        let ok = requests
            .get_or_create(&OutcomeLabels { outcome: "ok" })
            .clone();
        let accepted = ["http", "https"].map(|listener| {
            connections
                .get_or_create(&ListenerLabels { listener })
                .clone()
        });
        ReverseMetrics {
            requests,
            connections,
            dropped: Family::default(),
            upgraded: Gauge::default(),
            ok,
            accepted,
        }
    }
}

impl ReverseMetrics {
    /// Registers every metric under `reverse_`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("reverse");
        r.register(
            "requests",
            "Reverse-proxy requests by outcome (ok, or who was at fault)",
            self.requests.clone(),
        );
        r.register(
            "connections",
            "Client connections accepted, by listener",
            self.connections.clone(),
        );
        r.register(
            "dropped_connections",
            "Client connections dropped before HTTP (bad PROXY header, TLS handshake)",
            self.dropped.clone(),
        );
        r.register(
            "upgraded_connections",
            "Open upgraded (WebSocket) connections",
            self.upgraded.clone(),
        );
    }

    pub fn request(&self, outcome: &'static str) {
        if outcome == "ok" {
            self.ok.inc();
        } else {
            self.requests
                .get_or_create(&OutcomeLabels { outcome })
                .inc();
        }
    }

    /// A connection accepted on `listener`.
    pub fn accepted(&self, listener: &'static str) {
        match listener {
            "http" => self.accepted[0].inc(),
            "https" => self.accepted[1].inc(),
            _ => self
                .connections
                .get_or_create(&ListenerLabels { listener })
                .inc(),
        };
    }

    pub fn dropped(&self, listener: &'static str, reason: &'static str) {
        self.dropped
            .get_or_create(&DropLabels { listener, reason })
            .inc();
    }
}
