//! What the fault tests ask of a data plane while something around it
//! fails: does a site answer, from which backend, on which snapshot.

use std::net::SocketAddr;
use std::time::Duration;

use postern_harness::{curl, http_get, metric_value};
use serde_json::{Value, json};

use crate::{Postern, eventually};

/// A ProxyTarget with no auth: `hostname` → `backend`.
pub fn site(name: &str, hostname: &str, backend: &str) -> Value {
    json!({"kind": "ProxyTarget", "metadata": {"name": name}, "spec": {
        "hostnames": [hostname],
        "backend": {"url": backend},
    }})
}

/// `GET http://host/path` at the reverse proxy on `http`: status and body.
pub async fn get(http: SocketAddr, host: &str, path: &str) -> (u16, String) {
    let url = format!("http://{http}{path}");
    let host = format!("Host: {host}");
    let out = curl(&["-H", &host, &url]).await;
    (out.status, out.body)
}

/// Waits until `GET host path` answers 200 with `want`.
pub async fn routed(http: SocketAddr, host: &str, path: &str, want: &str, limit: Duration) {
    let what = format!("http://{host}{path} at {http} to answer {want:?}");
    eventually(&what, limit, || async {
        match get(http, host, path).await {
            (200, body) if body == want => Ok(()),
            other => Err(other),
        }
    })
    .await;
}

/// For `period`, every request to `host` is answered `want`, the data
/// plane serves `version` and says it is ready. Returns how many requests
/// were answered.
pub async fn keeps_serving(
    dataplane: &Postern,
    host: &str,
    want: &str,
    version: &str,
    period: Duration,
) -> usize {
    let until = tokio::time::Instant::now() + period;
    let mut answered = 0;
    while tokio::time::Instant::now() < until {
        let got = get(dataplane.http, host, "/").await;
        assert_eq!(
            got,
            (200, want.to_string()),
            "{} must keep serving",
            dataplane.id
        );
        assert_eq!(dataplane.version().await.as_deref(), Some(version));
        assert_eq!(
            dataplane.readyz().await,
            Ok(200),
            "{} stays ready",
            dataplane.id
        );
        answered += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    answered
}

/// One sample of the `/metrics` page on `admin` (the operator's); panics
/// when it is absent, so that a renamed metric cannot pass for a zero.
pub async fn metric(admin: SocketAddr, sample: &str) -> f64 {
    let page = http_get(admin, "/metrics").await;
    let page = page.unwrap_or_else(|e| panic!("/metrics at {admin}: {e}"));
    metric_value(&page.body, sample)
        .unwrap_or_else(|| panic!("no {sample} in /metrics:\n{}", page.body))
}
