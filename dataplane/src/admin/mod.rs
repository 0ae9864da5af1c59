//! The admin server: `/healthz`, `/readyz`, `/metrics`,
//! `GET /api/v1/snapshot`, and the UpstreamGate-compatible `/upstream` API
//! (bearer token; see `crate::upstreamgate`). It only reads the runtime, and shows counts and
//! versions, never secret material (keys, passwords, tokens).

mod rfc3339;
mod view;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use futures::future::BoxFuture;

use crate::Result;
use crate::feature::Feature;
use crate::listeners::{Listener, Listeners};
use crate::net::admission::Admission;
use crate::net::{Acceptor, Caps, Connections};
use crate::runtime::Runtime;
use crate::upstreamgate::UpstreamApi;

pub use view::SnapshotView;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The admin server as a feature: it serves `--admin-addr` and takes no
/// snapshot of its own (it reads the runtime on every request).
pub struct Admin {
    runtime: Arc<Runtime>,
    upstream_api: Arc<UpstreamApi>,
    admission: Admission,
}

/// The admin listener's own caps, outside the traffic budget: probes and
/// scrapes keep answering when the traffic listeners are full.
const ADMIN_CAPS: Caps = Caps {
    per_listener: 256,
    per_client: 64,
};
/// A request head, or the next one on a kept-alive connection, must arrive
/// within this: idle admin connections cannot hold the listener's places.
const ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

impl Admin {
    pub fn new(
        runtime: Arc<Runtime>,
        upstream_api: Arc<UpstreamApi>,
        connections: &Arc<Connections>,
    ) -> Self {
        Admin {
            runtime,
            upstream_api,
            admission: connections.listener("admin", ADMIN_CAPS, false),
        }
    }
}

impl Feature for Admin {
    fn name(&self) -> &'static str {
        "admin"
    }

    fn listeners(&self) -> &'static [Listener] {
        &[Listener::Admin]
    }

    fn serve(
        self: Arc<Self>,
        mut listeners: Listeners,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            let listener = listeners.take(Listener::Admin)?;
            serve(
                listener,
                self.runtime.clone(),
                self.upstream_api.clone(),
                self.admission.clone(),
                shutdown,
            )
            .await
        })
    }
}

/// Serves the admin API on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    runtime: Arc<Runtime>,
    upstream_api: Arc<UpstreamApi>,
    admission: Admission,
    shutdown: CancellationToken,
) -> Result<()> {
    let mut acceptor = Acceptor::new(listener, admission);
    while let Some(accepted) = acceptor.next(&shutdown).await {
        let (stream, peer, permit) = (accepted.stream, accepted.peer, accepted.permit);
        let (runtime, api) = (runtime.clone(), upstream_api.clone());
        let service = service_fn(move |req: Request<Incoming>| {
            let (runtime, api) = (runtime.clone(), api.clone());
            async move {
                // The UpstreamGate-compatible user API (crate::upstreamgate).
                if UpstreamApi::owns(req.uri().path()) {
                    return Ok::<_, Infallible>(api.handle(req).await);
                }
                Ok(handle(&req, &runtime))
            }
        });
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(ADMIN_HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "admin connection ended");
            }
            drop(permit);
        });
    }
    Ok(())
}

/// Routes one admin request.
pub fn handle(req: &Request<Incoming>, runtime: &Runtime) -> Response<Full<Bytes>> {
    route(req.method(), req.uri().path(), runtime)
}

fn route(method: &Method, path: &str, runtime: &Runtime) -> Response<Full<Bytes>> {
    let known = ["/healthz", "/readyz", "/metrics", "/api/v1/snapshot"];
    if !known.contains(&path) {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if method != Method::GET && method != Method::HEAD {
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        resp.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    match path {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if runtime.current().is_some() => ready(runtime),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "no snapshot applied yet\n"),
        "/metrics" => body(
            StatusCode::OK,
            OPENMETRICS,
            runtime.metrics().encode().into(),
        ),
        _ => json(&SnapshotView::of(runtime)),
    }
}

/// 200 either way: a degraded replica still serves what it can, and the
/// body says what it cannot.
fn ready(runtime: &Runtime) -> Response<Full<Bytes>> {
    let degraded = runtime.degraded();
    if degraded.is_empty() {
        return text(StatusCode::OK, "ready\n");
    }
    let mut msg = String::from("ready, degraded\n");
    for (part, how) in degraded {
        msg.push_str(&format!("{part}: {how}\n"));
    }
    body(StatusCode::OK, "text/plain; charset=utf-8", msg.into())
}

fn text(status: StatusCode, msg: &'static str) -> Response<Full<Bytes>> {
    body(
        status,
        "text/plain; charset=utf-8",
        Bytes::from_static(msg.as_bytes()),
    )
}

fn json(view: &SnapshotView) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(view) {
        Ok(bytes) => body(StatusCode::OK, "application/json", bytes.into()),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode\n"),
    }
}

fn body(status: StatusCode, content_type: &'static str, bytes: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Source;
    use http_body_util::BodyExt;
    use postern_snapshot::Snapshot;

    fn status(method: Method, path: &str, rt: &Runtime) -> StatusCode {
        route(&method, path, rt).status()
    }

    #[test]
    fn routes_and_methods() {
        let rt = Runtime::new(Source::Operator);
        assert_eq!(status(Method::GET, "/healthz", &rt), StatusCode::OK);
        assert_eq!(
            status(Method::GET, "/readyz", &rt),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(status(Method::GET, "/metrics", &rt), StatusCode::OK);
        assert_eq!(status(Method::GET, "/api/v1/snapshot", &rt), StatusCode::OK);
        assert_eq!(status(Method::GET, "/nope", &rt), StatusCode::NOT_FOUND);
        assert_eq!(
            status(Method::POST, "/healthz", &rt),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            status(Method::DELETE, "/api/v1/snapshot", &rt),
            StatusCode::METHOD_NOT_ALLOWED
        );
        rt.apply(Snapshot::default().seal()).expect("valid");
        assert_eq!(status(Method::GET, "/readyz", &rt), StatusCode::OK);
    }

    #[tokio::test]
    async fn a_degraded_part_is_named_while_readyz_stays_200() {
        let rt = Runtime::new(Source::Operator);
        rt.apply(Snapshot::default().seal()).expect("valid");
        rt.set_degraded("tunnel registry", Some("Redis unreachable".into()));
        let response = route(&Method::GET, "/readyz", &rt);
        assert_eq!(response.status(), StatusCode::OK);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(
            &body[..],
            b"ready, degraded\ntunnel registry: Redis unreachable\n"
        );
        rt.set_degraded("tunnel registry", None);
        let body = route(&Method::GET, "/readyz", &rt)
            .into_body()
            .collect()
            .await;
        assert_eq!(&body.expect("body").to_bytes()[..], b"ready\n");
    }
}
