//! What a running `postern` says: its admin API (`/api/v1/snapshot`,
//! `/metrics`, `/readyz`) and its log, with bounded waits on both.

use std::time::Duration;

use serde_json::Value;

use super::Postern;
use crate::http::{HttpResponse, admin_get};
use crate::wait::{PATIENCE, eventually};

/// What `GET /api/v1/snapshot` says.
#[derive(Clone, Debug)]
pub struct SnapshotView {
    pub version: Option<String>,
    pub json: Value,
}

impl SnapshotView {
    /// A per-kind count (`proxyTargets`, `routes`, `userUpstreams`,
    /// `tunnels`, `oauthClients`, `hostnames`) from the summary.
    pub fn count(&self, key: &str) -> Option<u64> {
        self.json["summary"][key]
            .as_u64()
            .or_else(|| self.json[key].as_u64())
    }
}

/// The value of one sample (`name{labels}`) in a `/metrics` text.
pub fn metric_value(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// A JSON log line's field (`fields.NAME` in tracing's JSON).
pub fn field<'a>(line: &'a Value, name: &str) -> &'a Value {
    &line["fields"][name]
}

impl Postern {
    /// `GET path` on the admin port; panics when it does not answer.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = self.try_get(path).await;
        let HttpResponse { status, body } = response.unwrap_or_else(|e| panic!("{}: {e}", self.id));
        (status, body)
    }

    /// With the harness's read-only admin token.
    pub async fn try_get(&self, path: &str) -> Result<HttpResponse, String> {
        admin_get(self.admin, path).await
    }

    /// The status of `GET /readyz`.
    pub async fn readyz(&self) -> Result<u16, String> {
        Ok(self.try_get("/readyz").await?.status)
    }

    /// `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.1
    }

    /// The value of one sample in `/metrics`; panics when it is absent, so
    /// that a renamed metric cannot pass for a zero.
    pub async fn metric(&self, sample: &str) -> f64 {
        let text = self.metrics().await;
        metric_value(&text, sample).unwrap_or_else(|| panic!("no {sample} in /metrics:\n{text}"))
    }

    /// `GET /api/v1/snapshot`.
    pub async fn view(&self) -> Result<SnapshotView, String> {
        let response = self.try_get("/api/v1/snapshot").await?;
        if response.status != 200 {
            return Err(format!("status {}: {}", response.status, response.body));
        }
        let json = response.json()?;
        let version = json["version"].as_str().map(str::to_string);
        Ok(SnapshotView { version, json })
    }

    /// `GET /api/v1/snapshot` as JSON; panics unless it answers 200.
    pub async fn snapshot(&self) -> Value {
        let view = self.view().await;
        view.unwrap_or_else(|e| panic!("{} snapshot: {e}", self.id))
            .json
    }

    /// The snapshot version in service.
    pub async fn version(&self) -> Option<String> {
        self.view().await.ok()?.version
    }

    /// Polls the snapshot view until `f` accepts it.
    pub async fn snapshot_until<T>(
        &self,
        what: &str,
        limit: Duration,
        f: impl Fn(&Value) -> Option<T>,
    ) -> T {
        eventually(what, limit, || async {
            let view = self.view().await?;
            f(&view.json).ok_or(view.json)
        })
        .await
    }

    /// Waits until a version other than `old` serves and the reverse
    /// proxy's tables are built from it (it logs that once done).
    pub async fn serving(&self, old: Option<&str>) -> String {
        eventually("a new snapshot to serve", PATIENCE, || async {
            let version = self.version().await.filter(|v| Some(v.as_str()) != old);
            let built = version.filter(|v| {
                let log = self.log();
                log.lines()
                    .any(|l| l.contains("tables rebuilt") && l.contains(v.as_str()))
            });
            built.ok_or(old)
        })
        .await
    }

    /// The JSON log lines so far (with [`super::PosternBuilder::json_logs`]).
    pub fn log_lines(&self) -> Vec<Value> {
        let log = self.log();
        log.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits for a JSON log line that `f` accepts.
    pub async fn wait_log(&self, what: &str, limit: Duration, f: impl Fn(&Value) -> bool) -> Value {
        let what = format!("log: {what}");
        eventually(&what, limit, || async {
            self.log_lines().into_iter().find(|l| f(l)).ok_or(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_matched_whole() {
        let text = "a_total{user=\"x\"} 3\na_total_other 9\nb 1.5\n";
        assert_eq!(metric_value(text, "a_total{user=\"x\"}"), Some(3.0));
        assert_eq!(metric_value(text, "b"), Some(1.5));
        assert_eq!(metric_value(text, "a_total"), None);
    }
}
