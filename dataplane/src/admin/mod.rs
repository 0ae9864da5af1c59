//! The admin server: probes and the scrape (`/healthz`, `/readyz`,
//! `/metrics`, open), the admin API under `/api/v1/` (bearer token or
//! dashboard session; see [`postern_admin`]), the dashboard under `/ui/`,
//! and the UpstreamGate-compatible `/upstream` API (see
//! `crate::upstreamgate`). It reads the runtime and the features' live
//! state, and shows counts, names and versions, never secret material
//! (keys, passwords, tokens). Its two actions (cut a user's connections,
//! disconnect a tunnel's agents) need the admin role.

mod rfc3339;
mod view;
mod views;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use postern_admin::reply::{self, Body};
use postern_admin::{Gate, Role, openapi, ui};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use futures::future::BoxFuture;

use crate::Result;
use crate::feature::Feature;
use crate::forward::Forward;
use crate::listeners::{Listener, Listeners};
use crate::net::admission::Admission;
use crate::net::{Acceptor, Caps, Connections};
use crate::reqlog::RequestLog;
use crate::runtime::Runtime;
use crate::tunnel::Tunnels;
use crate::upstreamgate::UpstreamApi;

pub use view::SnapshotView;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the admin server reads and acts on.
pub struct AdminState {
    pub runtime: Arc<Runtime>,
    pub gate: Arc<Gate>,
    pub upstream_api: Arc<UpstreamApi>,
    pub forward: Arc<Forward>,
    pub tunnels: Arc<Tunnels>,
    pub requests: Arc<RequestLog>,
    /// `/metrics` asks for a token too (`--admin-protect-metrics`).
    pub protect_metrics: bool,
    pub started_at: SystemTime,
}

/// The admin server as a feature: it serves `--admin-addr` and takes no
/// snapshot of its own (it reads the runtime on every request).
pub struct Admin {
    state: Arc<AdminState>,
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
    pub fn new(state: AdminState, connections: &Arc<Connections>) -> Self {
        Admin {
            state: Arc::new(state),
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
                self.state.clone(),
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
    state: Arc<AdminState>,
    admission: Admission,
    shutdown: CancellationToken,
) -> Result<()> {
    let mut acceptor = Acceptor::new(listener, admission);
    while let Some(accepted) = acceptor.next(&shutdown).await {
        let (stream, peer, permit) = (accepted.stream, accepted.peer, accepted.permit);
        let state = state.clone();
        let stop = shutdown.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let (state, stop) = (state.clone(), stop.clone());
            async move { Ok::<_, Infallible>(respond(req, &state, stop).await) }
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

async fn respond(
    req: Request<Incoming>,
    state: &Arc<AdminState>,
    shutdown: CancellationToken,
) -> Response<Body> {
    let path = req.uri().path();
    // The UpstreamGate-compatible user API (crate::upstreamgate).
    if UpstreamApi::owns(path) {
        return reply::boxed(state.upstream_api.handle(req).await);
    }
    let req = match ui::serve(&state.gate, req).await {
        Ok(answered) => return answered,
        Err(req) => req,
    };
    // The parts alone (Sync) are kept across the awaits below.
    let (parts, _body) = req.into_parts();
    route(&parts, state, shutdown).await
}

/// Routes one request that is not the dashboard's or `/upstream`.
async fn route(
    req: &http::request::Parts,
    state: &Arc<AdminState>,
    shutdown: CancellationToken,
) -> Response<Body> {
    let (method, path) = (&req.method, req.uri.path());
    let action = method == Method::POST;
    if !action && method != Method::GET && method != Method::HEAD {
        return reply::method_not_allowed(allowed(path).unwrap_or("GET, HEAD"));
    }
    // Open: probes, the scrape (unless protected), the document, the way in.
    match path {
        "/healthz" if !action => return reply::text(StatusCode::OK, "ok\n"),
        "/readyz" if !action => return ready(&state.runtime),
        "/metrics" if !action && !state.protect_metrics => return metrics(&state.runtime),
        openapi::PATH if !action => return openapi::document(),
        _ => {}
    }
    let known = KNOWN.iter().any(|k| k.matches(method, path));
    if !known {
        // An unknown path under the API still asks for credentials first,
        // so its existence is not probed without them.
        if path.starts_with("/api/")
            && state
                .gate
                .require(method, &req.headers, Role::Read)
                .is_err()
        {
            return reply::unauthorized();
        }
        return match allowed(path) {
            Some(allow) => reply::method_not_allowed(allow),
            None => reply::not_found(),
        };
    }
    let role = if action { Role::Admin } else { Role::Read };
    let principal = match state.gate.require(method, &req.headers, role) {
        Ok(principal) => principal,
        Err(denied) => return denied.response(),
    };
    let snapshot = state.runtime.snapshot();
    let empty = postern_snapshot::Snapshot::default();
    let snap = snapshot.as_deref().unwrap_or(&empty);
    let query = req.uri.query();
    match path {
        "/metrics" => metrics(&state.runtime),
        "/api/v1/session" => reply::json(StatusCode::OK, &principal),
        "/api/v1/snapshot" => reply::json(StatusCode::OK, &SnapshotView::of(&state.runtime)),
        "/api/v1/overview" => reply::json(StatusCode::OK, &overview(state, snap).await),
        "/api/v1/sites" => reply::json(StatusCode::OK, &views::sites(snap)),
        "/api/v1/users" => reply::json(StatusCode::OK, &views::users(snap, &state.forward)),
        "/api/v1/tunnels" => reply::json(StatusCode::OK, &views::tunnels(snap, &state.tunnels)),
        "/api/v1/certificates" => reply::json(
            StatusCode::OK,
            &views::certificates(snap, SystemTime::now()),
        ),
        "/api/v1/requests" => {
            reply::boxed(crate::reqlog::http::query_response(&state.requests, query).await)
        }
        "/api/v1/requests/stream" => {
            crate::reqlog::http::stream_response(state.requests.clone(), query, shutdown)
        }
        _ => action_route(path, state),
    }
}

/// The admin role's actions (POST).
fn action_route(path: &str, state: &AdminState) -> Response<Body> {
    let rest = path.strip_prefix("/api/v1/").unwrap_or("");
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        ["users", name, "disconnect"] => {
            let cut = state.forward.cut_user(&decode(name));
            reply::json(StatusCode::OK, &serde_json::json!({ "cut": cut }))
        }
        ["tunnels", ns, name, "disconnect"] => {
            let id = format!("{}/{}", decode(ns), decode(name));
            let disconnected = state.tunnels.disconnect(&id);
            reply::json(
                StatusCode::OK,
                &serde_json::json!({ "disconnected": disconnected }),
            )
        }
        _ => reply::not_found(),
    }
}

/// A path segment, percent-decoded (user names may hold reserved bytes).
fn decode(segment: &str) -> String {
    url::form_urlencoded::parse(segment.replace('+', "%2B").as_bytes())
        .next()
        .map(|(k, _)| k.into_owned())
        .unwrap_or_default()
}

/// The paths behind the gate, with the method each takes.
struct Known {
    method: Method,
    /// `*` stands for one path segment.
    pattern: &'static str,
}

impl Known {
    fn matches(&self, method: &Method, path: &str) -> bool {
        let same_method =
            *method == self.method || (*method == Method::HEAD && self.method == Method::GET);
        if !same_method {
            return false;
        }
        let mut want = self.pattern.split('/');
        let mut have = path.split('/');
        loop {
            match (want.next(), have.next()) {
                (None, None) => return true,
                (Some("*"), Some(seg)) if !seg.is_empty() => {}
                (Some(w), Some(h)) if w == h => {}
                _ => return false,
            }
        }
    }
}

/// The methods `path` takes, when it exists with others than asked.
fn allowed(path: &str) -> Option<&'static str> {
    let open = ["/", "/healthz", "/readyz", "/metrics", openapi::PATH];
    if open.contains(&path) || KNOWN.iter().any(|k| k.matches(&Method::GET, path)) {
        return Some("GET, HEAD");
    }
    KNOWN
        .iter()
        .any(|k| k.matches(&Method::POST, path))
        .then_some("POST")
}

const fn get(pattern: &'static str) -> Known {
    Known {
        method: Method::GET,
        pattern,
    }
}

const fn post(pattern: &'static str) -> Known {
    Known {
        method: Method::POST,
        pattern,
    }
}

const KNOWN: &[Known] = &[
    get("/metrics"),
    get("/api/v1/session"),
    get("/api/v1/snapshot"),
    get("/api/v1/overview"),
    get("/api/v1/sites"),
    get("/api/v1/users"),
    get("/api/v1/tunnels"),
    get("/api/v1/certificates"),
    get("/api/v1/requests"),
    get("/api/v1/requests/stream"),
    post("/api/v1/users/*/disconnect"),
    post("/api/v1/tunnels/*/*/disconnect"),
];

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Overview {
    component: &'static str,
    version: &'static str,
    started_at: String,
    snapshot: OverviewSnapshot,
    counts: Counts,
    requests: PerMinute,
    last_refused: Option<crate::runtime::LastError>,
    rejected: Vec<crate::runtime::Rejected>,
    data_planes: Vec<serde_json::Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OverviewSnapshot {
    version: Option<String>,
    applied_at: Option<String>,
    source: Option<&'static str>,
}

#[derive(Serialize)]
struct Counts {
    sites: usize,
    routes: usize,
    users: usize,
    tunnels: usize,
    certificates: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PerMinute {
    per_minute: Vec<crate::reqlog::Minute>,
}

async fn overview(state: &AdminState, snap: &postern_snapshot::Snapshot) -> Overview {
    let current = state.runtime.current();
    let report = state.runtime.report();
    Overview {
        component: "dataplane",
        version: env!("CARGO_PKG_VERSION"),
        started_at: rfc3339::format(state.started_at),
        snapshot: OverviewSnapshot {
            version: current.as_ref().map(|a| a.snapshot.version.clone()),
            applied_at: current.as_ref().map(|a| rfc3339::format(a.applied_at)),
            source: current.as_ref().map(|_| state.runtime.source().as_str()),
        },
        counts: Counts {
            sites: snap.sites.len(),
            routes: snap.sites.iter().map(|s| s.routes.len()).sum(),
            users: snap.users.len(),
            tunnels: snap.tunnels.len(),
            certificates: snap.certificates.len(),
        },
        requests: PerMinute {
            per_minute: state.requests.per_minute().await,
        },
        last_refused: report.last_error,
        rejected: report.rejected,
        data_planes: Vec::new(),
    }
}

fn metrics(runtime: &Runtime) -> Response<Body> {
    reply::bytes(StatusCode::OK, OPENMETRICS, runtime.metrics().encode())
}

/// 200 either way: a degraded replica still serves what it can, and the
/// body says what it cannot.
fn ready(runtime: &Runtime) -> Response<Body> {
    if runtime.current().is_none() {
        return reply::text(StatusCode::SERVICE_UNAVAILABLE, "no snapshot applied yet\n");
    }
    let degraded = runtime.degraded();
    if degraded.is_empty() {
        return reply::text(StatusCode::OK, "ready\n");
    }
    let mut msg = String::from("ready, degraded\n");
    for (part, how) in degraded {
        msg.push_str(&format!("{part}: {how}\n"));
    }
    reply::text(StatusCode::OK, msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Source;
    use http_body_util::BodyExt;
    use postern_snapshot::Snapshot;

    async fn text_of(resp: Response<Body>) -> (StatusCode, String) {
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn readyz_waits_for_a_snapshot_and_names_degraded_parts_with_200() {
        let rt = Runtime::new(Source::Operator);
        assert_eq!(ready(&rt).status(), StatusCode::SERVICE_UNAVAILABLE);
        rt.apply(Snapshot::default().seal()).expect("valid");
        rt.set_degraded("tunnel registry", Some("Redis unreachable".into()));
        let (status, body) = text_of(ready(&rt)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            "ready, degraded\ntunnel registry: Redis unreachable\n"
        );
        rt.set_degraded("tunnel registry", None);
        assert_eq!(text_of(ready(&rt)).await.1, "ready\n");
    }

    #[test]
    fn known_paths_match_by_method_and_segment() {
        let found = |m: Method, p: &str| KNOWN.iter().any(|k| k.matches(&m, p));
        assert!(found(Method::GET, "/api/v1/sites"));
        assert!(found(Method::HEAD, "/api/v1/sites"));
        assert!(!found(Method::POST, "/api/v1/sites"));
        assert!(found(Method::POST, "/api/v1/users/alice/disconnect"));
        assert!(!found(Method::POST, "/api/v1/users//disconnect"));
        assert!(!found(Method::POST, "/api/v1/users/a/b/disconnect"));
        assert!(found(Method::POST, "/api/v1/tunnels/ns/t/disconnect"));
        assert!(!found(Method::GET, "/api/v1/tunnels/ns/t/disconnect"));
        assert!(!found(Method::GET, "/api/v1/sites/extra"));
    }

    #[test]
    fn a_path_asked_with_the_wrong_method_says_which_it_takes() {
        assert_eq!(allowed("/healthz"), Some("GET, HEAD"));
        assert_eq!(allowed("/api/v1/sites"), Some("GET, HEAD"));
        assert_eq!(allowed("/api/v1/users/a/disconnect"), Some("POST"));
        assert_eq!(allowed("/nope"), None);
    }

    #[test]
    fn path_segments_are_percent_decoded() {
        assert_eq!(decode("al%40ice"), "al@ice");
        assert_eq!(decode("a+b"), "a+b");
    }
}
