//! The tunnel feature's metrics, per Tunnel. The tunnel label is an id of
//! the snapshot (or `-` for a refusal naming none that exists), so agents
//! cannot grow the label set with names they make up.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TunnelLabels {
    pub tunnel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabels {
    pub tunnel: String,
    /// `http`, `upgrade` or `tcp`.
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BytesLabels {
    pub tunnel: String,
    /// `in` (client to agent) or `out` (agent to client).
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub tunnel: String,
    /// An `AuthError::reason`.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub tunnel: String,
    /// `forwarded` (sent to the replica holding the agent) or `served`
    /// (received from another replica for an agent connected here).
    pub role: &'static str,
}

/// Cloning shares the values.
#[derive(Clone, Default)]
pub struct TunnelMetrics {
    pub agents: Family<TunnelLabels, Gauge>,
    pub sessions: Family<TunnelLabels, Counter>,
    pub reconnects: Family<TunnelLabels, Counter>,
    pub streams: Family<StreamLabels, Counter>,
    pub open: Family<StreamLabels, Gauge>,
    pub bytes: Family<BytesLabels, Counter>,
    pub refusals: Family<RefusalLabels, Counter>,
    pub peer_streams: Family<PeerLabels, Counter>,
    /// 1 while the shared registry (Redis) answers; 0 when down or unused.
    pub registry_up: Gauge,
}

impl TunnelMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("tunnel");
        r.register(
            "agents",
            "Agents connected per Tunnel (active and standby)",
            self.agents.clone(),
        );
        r.register(
            "sessions",
            "Agent sessions accepted per Tunnel (reconnects included)",
            self.sessions.clone(),
        );
        r.register(
            "reconnects",
            "Agent sessions accepted per Tunnel with a token that had connected before",
            self.reconnects.clone(),
        );
        r.register(
            "streams",
            "Streams opened to agents, by kind",
            self.streams.clone(),
        );
        r.register(
            "streams_open",
            "Streams to agents open now, by kind (an http request until both its bodies end)",
            self.open.clone(),
        );
        r.register(
            "bytes",
            "Bytes relayed to (in) and from (out) agents: http bodies, upgraded and tcp streams",
            self.bytes.clone(),
        );
        r.register(
            "refusals",
            "Agent authentications refused, by reason",
            self.refusals.clone(),
        );
        r.register(
            "peer_streams",
            "Streams between data plane replicas, by role",
            self.peer_streams.clone(),
        );
        r.register(
            "registry_up",
            "Whether the tunnel registry shared by the replicas (Redis) answers",
            self.registry_up.clone(),
        );
    }

    pub fn peer_stream(&self, tunnel: &str, role: &'static str) {
        let labels = PeerLabels {
            tunnel: tunnel.to_string(),
            role,
        };
        self.peer_streams.get_or_create(&labels).inc();
    }

    pub fn refused(&self, tunnel: &str, reason: &'static str) {
        let labels = RefusalLabels {
            tunnel: tunnel.to_string(),
            reason,
        };
        self.refusals.get_or_create(&labels).inc();
    }

    pub fn stream(&self, tunnel: &str, kind: &'static str) {
        let labels = StreamLabels {
            tunnel: tunnel.to_string(),
            kind,
        };
        self.streams.get_or_create(&labels).inc();
    }

    pub fn set_agents(&self, tunnel: &str, n: usize) {
        let labels = TunnelLabels {
            tunnel: tunnel.to_string(),
        };
        self.agents.get_or_create(&labels).set(n as i64);
    }
}
