//! The admin endpoint: `/healthz`, `/readyz`, `/metrics`,
//! `/api/v1/snapshot` (what is published and which data plane acked what;
//! counts and versions only, never secret material), and the
//! UpstreamGate-compatible `/upstream` API ([`crate::compat`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use postern_admin::reply::{self, Body};
use postern_admin::{Gate, Role, openapi, ui};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::compat::UpstreamApi;
use crate::fleet::Fleet;
use crate::metrics::Metrics;
use crate::publish::Latest;
use crate::sync_tls::SyncTls;

/// How long a client has to finish the TLS handshake on the admin port.
const TLS_HANDSHAKE: std::time::Duration = std::time::Duration::from_secs(10);

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone)]
pub struct Admin {
    pub metrics: Arc<Metrics>,
    pub latest: Latest,
    pub fleet: Arc<Fleet>,
    pub leader: tokio::sync::watch::Receiver<bool>,
    pub upstream_api: Arc<UpstreamApi>,
    pub gate: Arc<Gate>,
    /// `/metrics` asks for a token too (`--admin-protect-metrics`).
    pub protect_metrics: bool,
    pub started_at: SystemTime,
    /// `Some`: the port serves HTTPS only (`--admin-tls-cert`).
    pub tls: Option<Arc<SyncTls>>,
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
            let admin_tls = self.tls.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.respond(req).await) }
                });
                let builder = auto::Builder::new(TokioExecutor::new());
                let served = match &admin_tls {
                    None => {
                        builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                    }
                    Some(tls) => {
                        let accept = tls.acceptor().accept(stream);
                        match tokio::time::timeout(TLS_HANDSHAKE, accept).await {
                            Ok(Ok(stream)) => {
                                builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await
                            }
                            Ok(Err(error)) => {
                                tracing::debug!(%error, "admin TLS handshake failed");
                                return;
                            }
                            Err(_) => return,
                        }
                    }
                };
                if let Err(error) = served {
                    tracing::debug!(%error, "admin connection ended");
                }
            });
        }
    }

    async fn respond(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path();
        if UpstreamApi::owns(path) {
            return reply::boxed(self.upstream_api.handle(req).await);
        }
        match ui::serve(&self.gate, req).await {
            Ok(answered) => answered,
            Err(req) => self.handle(&req),
        }
    }

    fn handle(&self, req: &Request<Incoming>) -> Response<Body> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return reply::method_not_allowed("GET, HEAD");
        }
        match req.uri().path() {
            "/healthz" => return reply::text(StatusCode::OK, "ok\n"),
            "/readyz" if self.latest.borrow().is_some() => {
                return reply::text(StatusCode::OK, "ok\n");
            }
            "/readyz" => {
                return reply::text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no snapshot compiled yet\n",
                );
            }
            "/metrics" if !self.protect_metrics => return self.scrape(),
            openapi::PATH => return openapi::document(),
            _ => {}
        }
        let principal = match self.gate.require(req.method(), req.headers(), Role::Read) {
            Ok(principal) => principal,
            Err(denied) => return denied.response(),
        };
        match req.uri().path() {
            "/metrics" => self.scrape(),
            "/api/v1/session" => reply::json(StatusCode::OK, &principal),
            "/api/v1/snapshot" => reply::json(StatusCode::OK, &self.snapshot()),
            "/api/v1/overview" => reply::json(StatusCode::OK, &self.overview()),
            "/api/v1/dataplanes" => {
                reply::json(StatusCode::OK, &json!({ "items": self.dataplanes() }))
            }
            _ => reply::not_found(),
        }
    }

    fn scrape(&self) -> Response<Body> {
        reply::bytes(
            StatusCode::OK,
            OPENMETRICS,
            Bytes::from(self.metrics.encode()),
        )
    }

    /// Every data plane connected to this replica and what it acked.
    fn dataplanes(&self) -> Vec<serde_json::Value> {
        self.fleet
            .dataplanes()
            .into_iter()
            .map(|dp| {
                json!({
                    "id": dp.id,
                    "addr": dp.addr.to_string(),
                    "ackedVersion": dp.acked.as_ref().map(|p| p.version.clone()),
                    "connected": true,
                    "nack": dp.nack.map(|n| json!({"version": n.version, "reason": n.reason})),
                })
            })
            .collect()
    }

    fn snapshot(&self) -> serde_json::Value {
        let published = self.latest.borrow().clone();
        json!({
            "version": published.as_ref().map(|p| p.version.clone()),
            "summary": published.as_ref().map(|p| p.summary.clone()),
            "rejected": published.as_ref().map(|p| p.verdicts.iter().filter(|v| !v.accepted()).count()),
            "leader": *self.leader.borrow(),
            "dataplanes": self.dataplanes(),
        })
    }

    /// The dashboard's first page, in the shape the data plane answers.
    fn overview(&self) -> serde_json::Value {
        let published = self.latest.borrow().clone();
        let summary = published.as_ref().map(|p| p.summary.clone());
        let count = |f: fn(&postern_snapshot::Summary) -> usize| summary.as_ref().map_or(0, f);
        let rejected: Vec<_> = published
            .as_ref()
            .map(|p| {
                p.verdicts
                    .iter()
                    .filter(|v| !v.accepted())
                    .map(|v| {
                        json!({
                            "kind": v.kind.as_str(),
                            "namespace": v.key.namespace,
                            "name": v.key.name,
                            "reason": v.reason.as_str(),
                            "message": v.message,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        json!({
            "component": "operator",
            "version": env!("CARGO_PKG_VERSION"),
            "startedAt": rfc3339(self.started_at),
            "snapshot": {
                "version": published.as_ref().map(|p| p.version.clone()),
                "appliedAt": null,
                "source": "operator",
            },
            "counts": {
                "sites": count(|s| s.proxy_targets),
                "routes": count(|s| s.routes),
                "users": count(|s| s.user_upstreams),
                "tunnels": count(|s| s.tunnels),
                "certificates": count(|s| s.certificates),
            },
            "requests": { "perMinute": [] },
            "lastRefused": null,
            "rejected": rejected,
            "dataPlanes": self.dataplanes(),
        })
    }
}

fn rfc3339(t: SystemTime) -> String {
    postern_acme::rfc3339(
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )
}
