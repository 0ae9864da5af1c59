//! The HTTP inbound: `CONNECT host:port` tunnels and absolute-form requests
//! (`GET http://host/path`), on a hyper 1 HTTP/1.1 server with upgrades.
//!
//! hyper rather than a hand parser: it already answers a malformed request
//! line with 400 and an oversize head with 431 (`max_buf_size`), enforces a
//! header read timeout, and hands a CONNECT's socket back whole (with any
//! bytes the client pipelined) through `upgrade::on` + `downcast`, so the
//! tunnel runs on the raw `TcpStream` with no HTTP layer left in it.
//!
//! Credentials are checked once per connection: keep-alive requests that
//! carry the same `Proxy-Authorization` reuse the result while the user's
//! revision is unchanged. Absolute-form requests are handed to [`super::plain`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use subtle::ConstantTimeEq;
use tokio::net::TcpStream;

use crate::net::admission::Permit;

use super::auth::{self, Presented};
use super::errors::ForwardError;
use super::relay::{self, Bytes as Counters, Outcome, Watch};
use super::reply::{Body, refuse};
use super::table::UserEntry;
use super::target::Target;
use super::upstream::{Prefixed, Stream};
use super::{Admitted, Forward};

/// The last credentials this connection proved, and whose they were.
type AuthCache = Arc<Mutex<Option<(HeaderValue, Arc<UserEntry>)>>>;

/// Serves one client connection until it closes or the proxy shuts down;
/// its `permit` is held as long, and by a tunnel it opens.
pub async fn serve(fwd: Arc<Forward>, tcp: TcpStream, peer: SocketAddr, permit: Permit) {
    let cache: AuthCache = Arc::default();
    let permit = Arc::new(permit);
    let service = {
        let fwd = fwd.clone();
        hyper::service::service_fn(move |req| {
            let (fwd, cache, permit) = (fwd.clone(), cache.clone(), permit.clone());
            async move { Ok::<_, Infallible>(handle(&fwd, req, peer, &cache, permit).await) }
        })
    };
    let conn = http1(fwd.config())
        .serve_connection(TokioIo::new(tcp), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = fwd.shutdown_token().cancelled() => {
            conn.as_mut().graceful_shutdown();
            tokio::time::timeout(std::time::Duration::from_secs(5), conn).await.unwrap_or(Ok(()))
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "proxy connection ended with an error");
    }
}

/// The HTTP/1 server of the proxy port: head timeout and size limit.
pub(crate) fn http1(config: &super::ForwardConfig) -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.handshake_timeout)
        .max_buf_size(config.max_header_bytes);
    builder
}

async fn handle(
    fwd: &Arc<Forward>,
    req: Request<Incoming>,
    peer: SocketAddr,
    cache: &AuthCache,
    permit: Arc<Permit>,
) -> Response<Body> {
    let inbound = if req.method() == Method::CONNECT {
        "connect"
    } else {
        "http"
    };
    let target = match request_target(&req) {
        Ok(t) => t,
        Err(e) => return refuse(fwd, (inbound, peer), "", "", e),
    };
    let dest = target.to_string();
    let (presented, user) = match authenticate(fwd, &req, cache) {
        Ok(found) => found,
        Err(e) => return refuse(fwd, (inbound, peer), "", &dest, e),
    };
    let admitted = match fwd.admit(user, &presented, &target) {
        Ok(a) => a,
        Err(e) => return refuse(fwd, (inbound, peer), &presented.user, &dest, e),
    };
    if let Some(value) = req.headers().get(header::PROXY_AUTHORIZATION) {
        *lock(cache) = Some((value.clone(), admitted.user.clone()));
    }
    if inbound == "connect" {
        open_tunnel(fwd, req, peer, admitted, (target, dest), permit).await
    } else {
        super::plain::forward(fwd, req, peer, admitted, target).await
    }
}

/// The CONNECT authority, or the host of an `http://` absolute-form URI.
pub(crate) fn request_target<B>(req: &Request<B>) -> Result<Target, ForwardError> {
    let uri = req.uri();
    let authority = uri.authority().map(|a| a.as_str());
    if req.method() == Method::CONNECT {
        let authority =
            authority.ok_or_else(|| ForwardError::BadRequest("CONNECT needs host:port".into()))?;
        return Target::parse(authority, None);
    }
    match (uri.scheme_str(), authority) {
        (Some("http"), Some(a)) => Target::parse(a, Some(80)),
        (Some("https"), _) => Err(ForwardError::BadRequest(
            "https:// URLs go through CONNECT".into(),
        )),
        (None, _) => Err(ForwardError::BadRequest(
            "not a proxy request: expected CONNECT or an absolute http:// URL".into(),
        )),
        _ => Err(ForwardError::BadRequest(format!("unsupported URL {uri}"))),
    }
}

/// The presented credentials and their user, from this connection's cache
/// when the header is unchanged and the user's revision still holds.
fn authenticate(
    fwd: &Forward,
    req: &Request<Incoming>,
    cache: &AuthCache,
) -> Result<(Presented, Arc<UserEntry>), ForwardError> {
    let value = req.headers().get(header::PROXY_AUTHORIZATION);
    let presented = auth::parse_basic(value.map(HeaderValue::as_bytes))?;
    if let (Some(value), Some((known, user))) = (value, lock(cache).as_ref()) {
        let same = bool::from(known.as_bytes().ct_eq(value.as_bytes()));
        let table = fwd.registry().table();
        if let Some(current) = table
            .get(&user.user)
            .filter(|c| same && c.revision == user.revision)
        {
            return Ok((presented, current.clone()));
        }
    }
    let user = fwd.authenticate(&presented)?;
    Ok((presented, user))
}

/// Answers a CONNECT once the upstream stream is open, then splices.
/// `dest` is `target` formatted.
async fn open_tunnel(
    fwd: &Arc<Forward>,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    admitted: Admitted,
    (target, dest): (Target, String),
    permit: Arc<Permit>,
) -> Response<Body> {
    let upstream = match fwd.dial(&admitted, &target).await {
        Ok(s) => s,
        Err(e) => return refuse(fwd, ("connect", peer), &admitted.user.user, &dest, e),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let record = fwd.record("connect", peer, &admitted, &dest);
    let fwd = fwd.clone();
    tokio::spawn(async move {
        // Named, so the block takes them whole: the tunnel holds the client's
        // place and its upstream descriptor until it ends.
        let _permit = permit;
        let Admitted {
            user,
            lease,
            _descriptor: descriptor,
            ..
        } = admitted;
        let bytes = Counters::default();
        let outcome = match on_upgrade.await {
            Ok(upgraded) => {
                let watch = Watch {
                    idle: fwd.config().idle_timeout,
                    cut: lease.cut(),
                    shutdown: fwd.shutdown_token(),
                };
                relay::relay(
                    client_stream(upgraded),
                    upstream,
                    watch,
                    &bytes,
                    fwd.metrics(),
                    &user.user,
                )
                .await
            }
            Err(e) => Outcome::Failed(format!("upgrade failed: {e}")),
        };
        fwd.finish(&record, &outcome, &bytes, lease);
        drop(descriptor);
    });
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::OK;
    resp
}

/// The client's socket back from hyper, with any bytes it pipelined.
fn client_stream(upgraded: hyper::upgrade::Upgraded) -> Stream {
    match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => Stream::Tcp(Prefixed::new(
            parts.read_buf.to_vec(),
            parts.io.into_inner(),
        )),
        Err(upgraded) => Stream::other(TokioIo::new(upgraded)),
    }
}

fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

fn lock(cache: &AuthCache) -> std::sync::MutexGuard<'_, Option<(HeaderValue, Arc<UserEntry>)>> {
    // Only ever replaced whole: a poisoned value is still a consistent one.
    cache.lock().unwrap_or_else(|p| p.into_inner())
}
