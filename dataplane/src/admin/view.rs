//! The JSON of `GET /api/v1/snapshot`: version, counts and errors only. The
//! snapshot's secret material (certificate keys, password hashes, upstream
//! credentials, agent keys) must never reach this view.

use postern_snapshot::Summary;
use serde::Serialize;

use super::rfc3339;
use crate::runtime::{LastError, Rejected, Runtime, Source};

/// What the admin API says about the snapshot in service.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotView {
    pub version: Option<String>,
    pub schema: Option<u32>,
    pub applied_at: Option<String>,
    pub summary: Option<Summary>,
    pub source: Source,
    pub last_error: Option<LastError>,
    pub rejected: Vec<Rejected>,
}

impl SnapshotView {
    pub fn of(runtime: &Runtime) -> Self {
        let current = runtime.current();
        let report = runtime.report();
        SnapshotView {
            version: current.as_ref().map(|a| a.snapshot.version.clone()),
            schema: current.as_ref().map(|a| a.snapshot.schema),
            applied_at: current.as_ref().map(|a| rfc3339::format(a.applied_at)),
            summary: current.as_ref().map(|a| a.summary.clone()),
            source: runtime.source(),
            last_error: report.last_error,
            rejected: report.rejected,
        }
    }
}
