//! Absolute-form HTTP (`GET http://host/path`) through the proxy: one
//! request per upstream connection, sent as is to the user's HTTP(S)
//! upstream proxy (with the upstream's credentials) or in origin form over
//! a stream to the destination (direct, SOCKS5). Hop-by-hop headers and the
//! client's `Proxy-Authorization` are never passed on. The upstream
//! connection is accounted like a tunnel: leased, cut with its user, and
//! logged once when it closes.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use postern_snapshot::{Credentials, Upstream};

use super::errors::ForwardError;
use super::relay::{Bytes as Counters, Outcome, counted};
use super::reply::{Body, refuse};
use super::target::Target;
use super::{Admitted, Forward};
use crate::net::strip_hop_by_hop;

/// Forwards one absolute-form request: to the user's HTTP(S) upstream proxy
/// as is (with the upstream's credentials), or in origin form over a
/// stream to the destination (direct, SOCKS5).
pub(super) async fn forward(
    fwd: &Arc<Forward>,
    req: Request<Incoming>,
    peer: std::net::SocketAddr,
    admitted: Admitted,
    target: Target,
) -> Response<Body> {
    let user = admitted.user.clone();
    let dest = target.to_string();
    let upstream_creds = match &user.upstream {
        Upstream::Http { credentials, .. } | Upstream::Https { credentials, .. } => {
            Some(credentials.as_ref())
        }
        _ => None,
    };
    let stream = match upstream_creds {
        Some(_) => fwd.dialer().proxy_timed(&user.upstream).await,
        None => fwd.dial(&admitted, &target).await,
    };
    let stream = match stream {
        Ok(s) => s,
        Err(e) => return refuse(fwd, ("http", peer), &user.user, &dest, e),
    };
    let request = (req.method().to_string(), req.uri().path().to_string());
    let req = prepare_request(req, upstream_creds);
    let bytes = Arc::new(Counters::default());
    let io = counted(stream, bytes.clone(), fwd.metrics(), &user.user);
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(io)).await {
        Ok(pair) => pair,
        Err(e) => {
            return refuse(
                fwd,
                ("http", peer),
                &user.user,
                &dest,
                ForwardError::unreachable(&dest, e),
            );
        }
    };
    let mut record = fwd.record("http", peer, &admitted, &dest);
    record.request = Some(request);
    record.status.store(0, std::sync::atomic::Ordering::Relaxed);
    let status = record.status.clone();
    let lease = admitted.lease;
    let task_fwd = fwd.clone();
    tokio::spawn(async move {
        let fwd = task_fwd;
        let outcome = tokio::select! {
            r = conn => r.map_or_else(|e| Outcome::Failed(e.to_string()), |()| Outcome::Closed),
            () = lease.cut().cancelled() => Outcome::Cut,
            () = fwd.shutdown_token().cancelled() => Outcome::Shutdown,
        };
        fwd.finish(&record, &outcome, &bytes, lease);
    });
    let resp = tokio::time::timeout(fwd.config().idle_timeout, sender.send_request(req)).await;
    let upstream_label = user.upstream_label();
    match resp {
        Ok(Ok(resp))
            if upstream_creds.is_some()
                && resp.status() == StatusCode::PROXY_AUTHENTICATION_REQUIRED =>
        {
            let e = ForwardError::Refused {
                upstream: upstream_label,
                status: "407 Proxy Authentication Required".into(),
            };
            refuse(fwd, ("http", peer), &user.user, &dest, e)
        }
        Ok(Ok(resp)) => {
            status.store(resp.status().as_u16(), std::sync::atomic::Ordering::Relaxed);
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers, false);
            Response::from_parts(parts, body.boxed())
        }
        Ok(Err(e)) => refuse(
            fwd,
            ("http", peer),
            &user.user,
            &dest,
            ForwardError::unreachable(&dest, e),
        ),
        Err(_) => refuse(
            fwd,
            ("http", peer),
            &user.user,
            &dest,
            ForwardError::Timeout(dest.clone()),
        ),
    }
}

/// Strips hop-by-hop headers and our client's credentials; keeps the
/// absolute URI for an upstream proxy (adding its credentials), else turns
/// it into origin form.
fn prepare_request(
    req: Request<Incoming>,
    upstream_proxy: Option<Option<&Credentials>>,
) -> Request<Incoming> {
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    if let Some(authority) = parts.uri.authority().cloned()
        && !parts.headers.contains_key(header::HOST)
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        parts.headers.insert(header::HOST, host);
    }
    match upstream_proxy {
        Some(creds) => {
            if let Some(value) =
                creds.and_then(|c| HeaderValue::from_str(&super::upstream::basic_auth(c)).ok())
            {
                parts.headers.insert(header::PROXY_AUTHORIZATION, value);
            }
        }
        None => {
            let origin = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
            parts.uri = origin
                .parse::<Uri>()
                .unwrap_or_else(|_| Uri::from_static("/"));
        }
    }
    parts.version = http::Version::HTTP_11;
    Request::from_parts(parts, body)
}
