//! `acme_orders_total{result}` and `acme_certificate_expiry_seconds{certificate}`,
//! under the caller's prefix (`postern_` in the data plane,
//! `postern_operator_` in the operator).

use std::sync::Arc;

use postern_compile::AcmeRequest;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::policy::Unix;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertLabel {
    certificate: String,
}

/// The manager's metrics; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    orders: Family<ResultLabel, Counter>,
    expiry: Family<CertLabel, Gauge>,
    expiry_at: Arc<std::sync::Mutex<std::collections::BTreeMap<String, Unix>>>,
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "acme_orders",
            "ACME orders by result (issued, failed, store_failed)",
            self.orders.clone(),
        );
        registry.register(
            "acme_certificate_expiry_seconds",
            "Seconds until each ACME certificate expires (as of the manager's last pass)",
            self.expiry.clone(),
        );
    }

    pub fn order(&self, result: &str) {
        self.orders
            .get_or_create(&ResultLabel {
                result: result.to_string(),
            })
            .inc();
    }

    pub(crate) fn expiry(&self, request: &AcmeRequest, not_after: Unix) {
        let id = format!("{}/{}", request.key.namespace, request.secret);
        if let Ok(mut at) = self.expiry_at.lock() {
            at.insert(id.clone(), not_after);
        }
        let left = not_after as i64 - crate::manager::now() as i64;
        self.expiry
            .get_or_create(&CertLabel { certificate: id })
            .set(left);
    }

    /// Drops the series of certificates no longer requested.
    pub(crate) fn retain(&self, requests: &[AcmeRequest]) {
        let keep: std::collections::BTreeSet<String> = requests
            .iter()
            .map(|r| format!("{}/{}", r.key.namespace, r.secret))
            .collect();
        let Ok(mut at) = self.expiry_at.lock() else {
            return;
        };
        let now = crate::manager::now() as i64;
        at.retain(|id, not_after| {
            let label = CertLabel {
                certificate: id.clone(),
            };
            if keep.contains(id) {
                self.expiry
                    .get_or_create(&label)
                    .set(*not_after as i64 - now);
                true
            } else {
                self.expiry.remove(&label);
                false
            }
        });
    }
}
