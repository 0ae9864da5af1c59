//! The forward proxy's metrics, per user. Labels are user names from the
//! snapshot, never what an unauthenticated client typed: failures before
//! authentication are counted under `user=""`, so a scanner cannot grow the
//! label set.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UserLabels {
    pub user: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub user: String,
    pub kind: String,
}

/// Every forward-proxy metric. Cloning shares the underlying values.
#[derive(Clone, Default)]
pub struct ForwardMetrics {
    /// Open relays (CONNECT / SOCKS5 tunnels and plain-HTTP exchanges) per user.
    pub active: Family<UserLabels, Gauge>,
    /// Relays opened per user.
    pub relays: Family<UserLabels, Counter>,
    /// Bytes from the client towards the destination.
    pub bytes_up: Family<UserLabels, Counter>,
    /// Bytes from the destination back to the client.
    pub bytes_down: Family<UserLabels, Counter>,
    /// Refused or failed requests, by user and kind (`errors::ForwardError::metric_label`).
    pub errors: Family<ErrorLabels, Counter>,
    /// Tunnels cut because their user changed or went away.
    pub cuts: Family<UserLabels, Counter>,
    /// Users with open connections in the registry (a leak would show here).
    pub registry_users: Gauge,
}

impl ForwardMetrics {
    /// Registers every metric under `proxy_` in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("proxy");
        r.register(
            "active_relays",
            "Open forward-proxy relays (CONNECT / SOCKS5 tunnels and plain-HTTP exchanges)",
            self.active.clone(),
        );
        r.register("relays", "Forward-proxy relays opened", self.relays.clone());
        r.register(
            "bytes_up",
            "Bytes from clients towards destinations",
            self.bytes_up.clone(),
        );
        r.register(
            "bytes_down",
            "Bytes from destinations back to clients",
            self.bytes_down.clone(),
        );
        r.register(
            "errors",
            "Forward-proxy requests refused or failed, by kind",
            self.errors.clone(),
        );
        r.register(
            "cut_relays",
            "Relays cut because their user changed",
            self.cuts.clone(),
        );
        r.register(
            "registry_users",
            "Users with open connections in the registry",
            self.registry_users.clone(),
        );
    }

    pub fn user(user: &str) -> UserLabels {
        UserLabels {
            user: user.to_string(),
        }
    }

    pub fn error(&self, user: &str, kind: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                user: user.to_string(),
                kind: kind.to_string(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable() {
        let m = ForwardMetrics::default();
        let mut reg = Registry::with_prefix("postern");
        m.register(&mut reg);
        m.relays.get_or_create(&ForwardMetrics::user("alice")).inc();
        m.error("", "auth");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).expect("encode");
        for name in [
            "postern_proxy_relays_total{user=\"alice\"} 1",
            "postern_proxy_errors_total{user=\"\",kind=\"auth\"} 1",
            "postern_proxy_registry_users 0",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}
