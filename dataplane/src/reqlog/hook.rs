//! Where records come from: the reverse proxy's log phase (a [`Log`]
//! hook), and the builders the forward proxy and tcp tunnels call when a
//! connection or stream ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::{Kind, Record, RequestLog, now_ms};
use crate::reverse::phases::{Log, LogRecord};

/// The request log as the reverse proxy's phase-7 hook.
pub struct LogHook(pub Arc<RequestLog>);

impl Log for LogHook {
    fn log(&self, r: &LogRecord<'_>) {
        self.0.record(Record {
            time: now_ms(),
            kind: Kind::Http,
            request_id: r.request_id.to_string(),
            client: r.client.ip(),
            host: r.host.unwrap_or_default().to_string(),
            method: Some(r.method.as_str().to_string()),
            path: Some(r.path.to_string()),
            status: Some(r.status.as_u16()),
            bytes_in: r.bytes_in,
            bytes_out: r.bytes_out,
            duration_ms: r.millis,
            site: r.site.map(String::from),
            route: r.route.map(String::from),
            upstream: r.upstream.map(String::from),
            user: r.user.map(String::from),
            outcome: r.outcome.to_string(),
        });
    }
}

/// A connection or stream that ended, as the forward proxy and tcp
/// tunnels describe it.
pub struct Ended<'a> {
    pub kind: Kind,
    pub client: SocketAddr,
    /// The destination host (forward proxy) or the tunnel's id.
    pub host: &'a str,
    pub method: Option<&'a str>,
    pub path: Option<&'a str>,
    pub status: Option<u16>,
    pub bytes: (u64, u64),
    pub took: Duration,
    pub upstream: Option<&'a str>,
    pub user: Option<&'a str>,
    pub outcome: &'a str,
}

impl RequestLog {
    /// Records a connection or stream (a fresh request id).
    pub fn ended(&self, e: &Ended<'_>) {
        if !self.enabled() {
            return;
        }
        self.record(Record {
            time: now_ms(),
            kind: e.kind,
            request_id: super::new_id_string(),
            client: e.client.ip(),
            host: e.host.to_string(),
            method: e.method.map(String::from),
            path: e.path.map(String::from),
            status: e.status,
            bytes_in: e.bytes.0,
            bytes_out: e.bytes.1,
            duration_ms: u64::try_from(e.took.as_millis()).unwrap_or(u64::MAX),
            site: None,
            route: None,
            upstream: e.upstream.map(String::from),
            user: e.user.map(String::from),
            outcome: e.outcome.to_string(),
        });
    }
}
