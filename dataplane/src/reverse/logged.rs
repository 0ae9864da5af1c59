//! Phase 7, the log: the access log line and the log hooks run once the
//! response body has ended or was dropped, because only then are the
//! bytes sent and the whole duration known. [`Logged`] wraps the response
//! body, counts what passes and emits the record exactly once: at the end
//! of the stream, on a body error, or when hyper drops the body (an empty
//! body it never polls, a client that went away).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{Method, StatusCode};
use hyper::body::{Body, Frame, SizeHint};

use super::Shared;
use super::body::{BoxError, ProxyBody};
use super::phases::LogRecord;

/// A request's record, owned, waiting for its body to end.
pub struct Pending {
    /// Whether the `postern::access` line is written.
    pub access: bool,
    pub client: SocketAddr,
    pub method: Method,
    pub host: Option<String>,
    pub path: String,
    pub status: StatusCode,
    pub outcome: &'static str,
    pub site: Option<String>,
    pub route: Option<String>,
    pub upstream: Option<String>,
    pub user: Option<String>,
    pub request_id: String,
    pub received: Option<Arc<AtomicU64>>,
    pub started: Instant,
    pub shared: Arc<Shared>,
}

impl Pending {
    fn emit(self, bytes_out: u64, outcome: &'static str) {
        let record = LogRecord {
            client: self.client,
            method: &self.method,
            host: self.host.as_deref(),
            path: &self.path,
            status: self.status,
            outcome,
            site: self.site.as_deref(),
            route: self.route.as_deref(),
            upstream: self.upstream.as_deref(),
            user: self.user.as_deref(),
            request_id: &self.request_id,
            bytes_in: self
                .received
                .as_ref()
                .map_or(0, |r| r.load(Ordering::Relaxed)),
            bytes_out,
            millis: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        if self.access {
            access_log(&record);
        }
        self.shared.hooks.log(&record);
    }
}

/// The built-in log phase: one line per request on `postern::access`.
fn access_log(r: &LogRecord<'_>) {
    tracing::info!(
        target: "postern::access",
        client = %r.client.ip(),
        method = %r.method,
        host = r.host.unwrap_or("-"),
        path = r.path,
        status = r.status.as_u16(),
        outcome = r.outcome,
        site = r.site.unwrap_or("-"),
        route = r.route.unwrap_or("-"),
        upstream = r.upstream.unwrap_or("-"),
        user = r.user.unwrap_or("-"),
        request_id = r.request_id,
        bytes_in = r.bytes_in,
        bytes_out = r.bytes_out,
        ms = r.millis,
    );
}

/// A response body that logs its request when it is done.
pub struct Logged {
    inner: ProxyBody,
    sent: u64,
    pending: Option<Box<Pending>>,
}

impl Logged {
    pub fn new(inner: ProxyBody, pending: Pending) -> Logged {
        Logged {
            inner,
            sent: 0,
            pending: Some(Box::new(pending)),
        }
    }

    fn finish(&mut self, failed: Option<&'static str>) {
        if let Some(pending) = self.pending.take() {
            let outcome = match failed {
                Some(why) if pending.outcome == "ok" => why,
                _ => pending.outcome,
            };
            pending.emit(self.sent, outcome);
        }
    }
}

impl Body for Logged {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.sent += data.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.finish(None);
                }
            }
            Poll::Ready(Some(Err(_))) => this.finish(Some("body_failed")),
            Poll::Ready(None) => this.finish(None),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let gone = (!self.inner.is_end_stream()).then_some("client_gone");
        self.finish(gone);
    }
}
