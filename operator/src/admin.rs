//! The admin endpoint: `/healthz`, `/readyz`, `/metrics`,
//! `/api/v1/snapshot` (what is published and which data plane acked what;
//! counts and versions only, never secret material), and the
//! UpstreamGate-compatible `/upstream` API ([`crate::compat`]).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::compat::UpstreamApi;
use crate::fleet::Fleet;
use crate::metrics::Metrics;
use crate::publish::Latest;

#[derive(Clone)]
pub struct Admin {
    pub metrics: Arc<Metrics>,
    pub latest: Latest,
    pub fleet: Arc<Fleet>,
    pub leader: tokio::sync::watch::Receiver<bool>,
    pub upstream_api: Arc<UpstreamApi>,
}

impl Admin {
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) {
        loop {
            let stream = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        tracing::warn!(%error, "admin accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let admin = self.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.respond(req).await) }
                });
                let builder = auto::Builder::new(TokioExecutor::new());
                if let Err(error) = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(%error, "admin connection ended");
                }
            });
        }
    }

    async fn respond(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if UpstreamApi::owns(req.uri().path()) {
            return self.upstream_api.handle(req).await;
        }
        self.handle(&req)
    }

    fn handle(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
        }
        match req.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" if self.latest.borrow().is_some() => text(StatusCode::OK, "ok\n"),
            "/readyz" => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "no snapshot compiled yet\n",
            ),
            "/metrics" => {
                let mut resp = text(StatusCode::OK, &self.metrics.encode());
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                resp
            }
            "/api/v1/snapshot" => self.snapshot(),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    fn snapshot(&self) -> Response<Full<Bytes>> {
        let published = self.latest.borrow().clone();
        let dataplanes: Vec<_> = self
            .fleet
            .dataplanes()
            .into_iter()
            .map(|dp| {
                json!({
                    "id": dp.id,
                    "addr": dp.addr.to_string(),
                    "ackedVersion": dp.acked.as_ref().map(|p| p.version.clone()),
                    "nack": dp.nack.map(|n| json!({"version": n.version, "reason": n.reason})),
                })
            })
            .collect();
        let body = json!({
            "version": published.as_ref().map(|p| p.version.clone()),
            "summary": published.as_ref().map(|p| p.summary.clone()),
            "rejected": published.as_ref().map(|p| p.verdicts.iter().filter(|v| !v.accepted()).count()),
            "leader": *self.leader.borrow(),
            "dataplanes": dataplanes,
        });
        let mut resp = text(StatusCode::OK, &body.to_string());
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        resp
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp
}
