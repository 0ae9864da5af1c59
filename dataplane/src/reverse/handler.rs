//! The request path: the phases of [`super::phases`] in order. Each phase
//! either passes the request on or ends it with a [`ProxyError`], which is
//! turned into a response in one place ([`handle`]); the log phase sees
//! both.

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Instant;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;

use super::body::{ProxyBody, Watched};
use super::errors::{ProxyError, wants_html};
use super::headers::{self, Forwarding, X_REQUEST_ID};
use super::logged::{Logged, Pending};
use super::phases::{AuthContext, AuthenticatedUser, Backend};
use super::router::{SiteTable, normalise_host};
use super::tables::Tables;
use super::{ConnInfo, Shared, upgrade};
use crate::net::path::normalise;
use crate::net::strip_hop_by_hop;

/// What the log phase says about a request beyond the basics: site and
/// route borrowed from the tables the request was served with; the rest
/// filled only when something logs (`received` is then set).
#[derive(Default)]
struct Trace<'t> {
    site: Option<&'t str>,
    route: Option<&'t str>,
    host: Option<String>,
    user: Option<String>,
    upstream: Option<String>,
    /// Body bytes read from the client so far.
    received: Option<Arc<AtomicU64>>,
}

/// Serves one request: runs the phases, answers errors, logs, counts.
pub async fn handle(
    req: Request<Incoming>,
    conn: Arc<ConnInfo>,
    shared: Arc<Shared>,
) -> Result<Response<ProxyBody>, Infallible> {
    let started = Instant::now();
    let tables = shared.live.load();
    let html = wants_html(req.headers());
    let id = headers::request_id(req.headers());
    // Copied for the log phase only when something reads it.
    let access = tracing::enabled!(target: "postern::access", tracing::Level::INFO);
    let logged = (access || shared.hooks.logs())
        .then(|| (req.method().clone(), req.uri().path().to_string()));
    let mut trace = Trace {
        received: logged.as_ref().map(|_| Arc::default()),
        ..Trace::default()
    };
    let sent_body = req.version() < Version::HTTP_2 && has_body(req.headers());
    let result = proxy(req, &conn, &tables, &shared, &id, &mut trace).await;
    let (mut response, outcome) = match result {
        Ok(response) => (response, "ok"),
        Err(e) => {
            if e.status().is_server_error() {
                tracing::warn!(client = %conn.client.ip(), site = trace.site.unwrap_or("-"), request_id = ?id, error = %e, "proxy error");
            }
            (e.response(html), e.metric_label())
        }
    };
    response
        .headers_mut()
        .insert(X_REQUEST_ID.clone(), id.clone());
    // A refusal is answered before the request body is read, and HTTP/1.1
    // cannot reuse a connection with a body left on it: say so, or the
    // client sends its next request into a connection being closed.
    if sent_body && (outcome != "ok" || response.status().is_client_error()) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    shared.metrics.request(outcome);
    // 7. log, once the body is done (see `logged`).
    if let Some((method, path)) = logged {
        let pending = Pending {
            access,
            client: conn.client,
            method,
            host: trace.host,
            path,
            status: response.status(),
            outcome,
            site: trace.site.map(String::from),
            route: trace.route.map(String::from),
            upstream: trace.upstream,
            user: trace.user,
            request_id: id.to_str().unwrap_or("-").to_string(),
            received: trace.received,
            started,
            shared: shared.clone(),
        };
        response = response.map(|body| Logged::new(body, pending).boxed_unsync());
    }
    Ok(response)
}

/// Whether an HTTP/1.x request carries a body (RFC 9112 §6.3).
fn has_body(headers: &http::HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

async fn proxy<'t>(
    req: Request<Incoming>,
    conn: &Arc<ConnInfo>,
    tables: &'t Tables,
    shared: &Shared,
    id: &HeaderValue,
    trace: &mut Trace<'t>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let hooks = &shared.hooks;
    // 1. early request
    let mut req = match hooks.early_request(req, conn) {
        Ok(answer) => return Ok(answer.await),
        Err(req) => req,
    };
    // 2. route
    let raw_host = raw_host(&req)?;
    let host = normalise_host(&raw_host).ok_or(ProxyError::BadRequest("invalid Host header"))?;
    if trace.received.is_some() {
        trace.host = Some(host.clone());
    }
    let site = tables.router.site(&host).ok_or(ProxyError::UnknownHost)?;
    trace.site = Some(&site.id);
    if conn.tls {
        check_sni(site, &host, conn, tables)?;
    }
    if !conn.tls && site.redirect_http {
        return Ok(redirect(&host, req.uri(), shared.redirect_port));
    }
    // Once, before matching and auth: the path the backend will act on.
    let normalised = match normalise(req.uri().path()) {
        Ok(Cow::Borrowed(_)) => None,
        Ok(Cow::Owned(path)) => Some(path),
        Err(e) => return Err(ProxyError::BadRequest(e.as_str())),
    };
    // The auth phase may edit the request, so the path is read from a copy
    // of its URI (a reference count, not a copy of the bytes).
    let uri = req.uri().clone();
    let path = normalised.as_deref().unwrap_or(uri.path());
    let target = site.target(req.method(), path);
    trace.route = target.route.as_deref();
    // 3. authenticate
    let ctx = AuthContext {
        host: &host,
        raw_host: &raw_host,
        path,
    };
    hooks.authenticate(&target.guard, &mut req, &ctx)?;
    if trace.received.is_some() {
        trace.user = req
            .extensions_mut()
            .remove::<AuthenticatedUser>()
            .map(|u| u.0);
    }
    // 4. choose upstream
    let upstream = hooks.choose_upstream(site, target, req.method(), path)?;
    if trace.received.is_some() {
        trace.upstream = Some(upstream.label().into_owned());
    }
    // 5. upstream request
    let upgrading = upgrade::requested(&req);
    let on_client_upgrade = upgrading
        .then(|| upgrade::ClientUpgrade::take(&mut req))
        .flatten();
    let (mut parts, body) = req.into_parts();
    let forwarded = match &normalised {
        Some(path) if !site.forward_raw_path => forwarded_path(path, parts.uri.query()),
        // Canonical as received, or the target wants the client's spelling.
        _ => parts.uri.path_and_query().cloned(),
    };
    prepare_request(
        &mut parts,
        site,
        upstream.as_ref(),
        conn,
        &raw_host,
        id,
        upgrading,
    );
    parts.uri = upstream.uri(forwarded.as_ref());
    let client_broke = Arc::new(AtomicBool::new(false));
    let body = Watched::new(body, client_broke.clone(), trace.received.clone()).boxed_unsync();
    let request = Request::from_parts(parts, body);
    let sent = upstream.exchange(request, (conn.client, conn.server), client_broke);
    let mut response = match tokio::time::timeout(site.response_timeout, sent).await {
        Err(_) => return Err(ProxyError::BackendTimeout("response headers")),
        Ok(result) => result?,
    };
    // 6. response filter
    if let Some(on_client) = on_client_upgrade {
        upgrade::splice(
            on_client,
            &mut response,
            &shared.metrics,
            conn.permit.clone(),
        );
    }
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers, switching);
    site.response_headers.apply(&mut parts.headers);
    hooks.filter_response(site, &mut parts);
    parts.version = Version::HTTP_11;
    let body = if switching {
        Empty::<Bytes>::new().map_err(|e| match e {}).boxed_unsync()
    } else {
        upstream.response_body(body)
    };
    Ok(Response::from_parts(parts, body))
}

/// The host as the client wrote it: `:authority` (HTTP/2, absolute form),
/// else the Host header. Two Host headers, or userinfo in the host, are
/// refused (RFC 9112 §3.2, RFC 9110 §4.2.4): proxies and backends could
/// each pick another one.
fn raw_host<B>(req: &Request<B>) -> Result<String, ProxyError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    let host = match (req.uri().authority(), header) {
        (Some(authority), _) => authority.as_str(),
        (None, Some(value)) => value
            .to_str()
            .map_err(|_| ProxyError::BadRequest("invalid Host header"))?,
        (None, None) => return Err(ProxyError::BadRequest("no Host header")),
    };
    if host.contains('@') {
        return Err(ProxyError::BadRequest("userinfo in the Host"));
    }
    Ok(host.to_string())
}

/// Over TLS, the site must be one the connection's certificate serves: a
/// site without TLS never is, and a Host that another certificate than the
/// SNI's would serve is misdirected (HTTP/2 coalescing rules).
fn check_sni(
    site: &SiteTable,
    host: &str,
    conn: &ConnInfo,
    tables: &Tables,
) -> Result<(), ProxyError> {
    if !site.tls {
        return Err(ProxyError::Misdirected);
    }
    if conn.sni.as_deref() == Some(host) {
        return Ok(());
    }
    match (
        tables.certs.resolve(conn.sni.as_deref()),
        tables.certs.resolve(Some(host)),
    ) {
        // The same leaf certificate, even when parsed twice (a default
        // certificate that is also a site's).
        (Some(presented), Some(wanted)) if presented.cert.first() == wanted.cert.first() => Ok(()),
        _ => Err(ProxyError::Misdirected),
    }
}

fn prepare_request(
    parts: &mut http::request::Parts,
    site: &SiteTable,
    upstream: &dyn Backend,
    conn: &ConnInfo,
    raw_host: &str,
    id: &HeaderValue,
    upgrading: bool,
) {
    let h = &mut parts.headers;
    strip_hop_by_hop(h, upgrading);
    headers::add_forwarding(
        h,
        &Forwarding {
            client: conn.client.ip(),
            proto: if conn.tls { "https" } else { "http" },
            host: raw_host,
        },
    );
    h.insert(X_REQUEST_ID.clone(), id.clone());
    let host = if site.preserve_host {
        HeaderValue::from_str(raw_host).ok()
    } else if upstream.speaks_h2() {
        // HTTP/2 carries the backend's authority in the URI.
        None
    } else {
        HeaderValue::from_str(upstream.authority().as_str()).ok()
    };
    match host {
        Some(host) => {
            h.insert(header::HOST, host);
        }
        None => {
            h.remove(header::HOST);
        }
    }
    site.request_headers.apply(h);
    parts.version = if upstream.speaks_h2() {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
}

/// The normalised path with the client's query, as the backend gets it.
fn forwarded_path(path: &str, query: Option<&str>) -> Option<PathAndQuery> {
    let text = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    PathAndQuery::try_from(text).ok()
}

/// 308 to the same host and path over https.
fn redirect(host: &str, uri: &Uri, port: u16) -> Response<ProxyBody> {
    let authority = if port == 443 {
        host.to_string()
    } else {
        format!("{host}:{port}")
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let location = format!("https://{authority}{path}");
    let mut response = Response::new(Empty::<Bytes>::new().map_err(|e| match e {}).boxed_unsync());
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}
