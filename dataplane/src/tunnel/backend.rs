//! Tunnels in the reverse request path: the `ChooseUpstream` hook claims the
//! sites of http Tunnels' hostnames and, on every other site, the paths
//! under a Tunnel's `pathPrefix`; the [`Backend`] it returns sends the
//! request down a new h2 stream of the tunnel's active agent.
//!
//! A plain request is one h2 request (bodies and trailers stream both ways
//! under h2 flow control). An HTTP Upgrade (WebSocket) is a raw `CONNECT`
//! stream to the local service over which the request is spoken as
//! HTTP/1.1, so the reverse proxy's own upgrade splice works unchanged.
//! Either way the stream is counted ([`Relayed`]): an http request's body
//! frames both ways, an upgrade's every byte.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use futures::future::BoxFuture;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::protocol::{H_CLIENT, H_SERVER, H_STREAM, H_TUNNEL};
use super::relayed::{Counted, Relayed, Way};
use super::session::{Route, State};
use crate::net::Metered;
use crate::reverse::{
    Backend, ChooseUpstream, ProxyBody, ProxyError, SiteTable, Target, boxed_response,
};

/// The hook the reverse proxy asks in phase 4.
pub struct TunnelHook {
    pub state: Arc<State>,
}

impl ChooseUpstream for TunnelHook {
    fn choose_upstream(
        &self,
        site: &SiteTable,
        _target: &Target,
        _method: &Method,
        path: &str,
    ) -> Option<Result<Arc<dyn Backend>, ProxyError>> {
        if path == super::ws::PATH {
            return Some(Ok(Arc::new(super::ws::WsEntry {
                state: self.state.clone(),
                authority: Authority::from_static(AUTHORITY),
            })));
        }
        if let Some(id) = &site.tunnel {
            return Some(self.backend(id, None));
        }
        let table = self.state.table.load();
        let programmed = table.by_prefix(path)?;
        let strip = programmed
            .entry
            .strip_prefix
            .then(|| programmed.entry.path_prefix.clone())
            .flatten();
        Some(self.backend(&programmed.entry.id, strip))
    }
}

impl TunnelHook {
    fn backend(&self, id: &str, strip: Option<String>) -> Result<Arc<dyn Backend>, ProxyError> {
        let route = self.state.route(id)?;
        Ok(Arc::new(TunnelBackend {
            tunnel: id.to_string(),
            tunnel_header: HeaderValue::from_str(id).map_err(|_| ProxyError::NoAgent)?,
            route,
            strip,
            authority: Authority::from_static(AUTHORITY),
            state: self.state.clone(),
            relayed: OnceLock::new(),
        }))
    }
}

/// The authority of requests on tunnel streams (the agent ignores it).
const AUTHORITY: &str = "tunnel.invalid:1";

/// One request's way to an agent.
pub struct TunnelBackend {
    tunnel: String,
    tunnel_header: HeaderValue,
    /// This replica's agent, or the replica holding one.
    route: Route,
    /// The path prefix removed before the agent sees the path.
    strip: Option<String>,
    authority: Authority,
    state: Arc<State>,
    /// This request's stream, counted once it is sent.
    relayed: OnceLock<Arc<Relayed>>,
}

impl Backend for TunnelBackend {
    fn speaks_h2(&self) -> bool {
        true
    }

    fn authority(&self) -> &Authority {
        &self.authority
    }

    fn uri(&self, path: Option<&PathAndQuery>) -> Uri {
        let path = path.map_or("/", |p| p.as_str());
        let path = match &self.strip {
            Some(prefix) => strip(path, prefix),
            None => path.to_string(),
        };
        Uri::builder()
            .scheme("http")
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
            .unwrap_or_else(|_| Uri::from_static("http://tunnel.invalid:1/"))
    }

    fn broken(&self) -> Option<&str> {
        None
    }

    fn label(&self) -> std::borrow::Cow<'_, str> {
        std::borrow::Cow::Owned(format!("tunnel {}", self.tunnel))
    }

    fn exchange(
        &self,
        mut request: Request<ProxyBody>,
        (client, server): (SocketAddr, SocketAddr),
        client_broke: Arc<AtomicBool>,
    ) -> BoxFuture<'_, Result<Response<ProxyBody>, ProxyError>> {
        Box::pin(async move {
            let exchanged: Result<Response<Incoming>, ProxyError> = async move {
                let stream = [
                    (H_TUNNEL, self.tunnel_header.clone()),
                    (H_CLIENT, addr_value(client)),
                    (H_SERVER, addr_value(server)),
                ];
                for (name, value) in stream.iter().cloned() {
                    request.headers_mut().insert(name, value);
                }
                let upgrade = request.headers().contains_key(header::UPGRADE);
                let kind = if upgrade { "upgrade" } else { "http" };
                self.state.metrics.stream(&self.tunnel, kind);
                let relayed = self
                    .relayed
                    .get_or_init(|| Relayed::open(&self.state.metrics, &self.tunnel, kind))
                    .clone();
                let failed = |e: hyper::Error| {
                    if client_broke.load(Ordering::Relaxed) {
                        ProxyError::ClientGone
                    } else {
                        ProxyError::BackendFailed(format!("tunnel stream: {e}"))
                    }
                };
                let mut sender = self
                    .route
                    .clone()
                    .sender(&self.state.metrics, &self.tunnel)
                    .await?;
                sender.ready().await.map_err(|_| ProxyError::NoAgent)?;
                if !upgrade {
                    let request = request.map(|b| Counted::wrap(b, relayed, Way::ToAgent));
                    return sender.send_request(request).await.map_err(failed);
                }
                let mut connect = Request::new(Empty::new().map_err(|e| match e {}).boxed_unsync());
                *connect.method_mut() = Method::CONNECT;
                *connect.uri_mut() = Uri::from_static("tunnel.invalid:1");
                *connect.version_mut() = Version::HTTP_2;
                for (name, value) in stream {
                    connect.headers_mut().insert(name, value);
                }
                connect
                    .headers_mut()
                    .insert(H_STREAM, HeaderValue::from_static("upgrade"));
                let mut opened = sender.send_request(connect).await.map_err(failed)?;
                if opened.status() != StatusCode::OK {
                    return Ok(opened);
                }
                let raw = hyper::upgrade::on(&mut opened).await.map_err(failed)?;
                let raw = TokioIo::new(Metered::new(TokioIo::new(raw), relayed));
                let (mut http1, conn) = hyper::client::conn::http1::Builder::new()
                    .handshake::<_, ProxyBody>(raw)
                    .await
                    .map_err(failed)?;
                tokio::spawn(async move {
                    if let Err(e) = conn.with_upgrades().await {
                        tracing::debug!(error = %e, "tunnel upgrade connection ended");
                    }
                });
                as_http1(&mut request);
                http1.send_request(request).await.map_err(failed)
            }
            .await;
            exchanged.map(boxed_response)
        })
    }

    /// An http request's response body is counted; an upgrade's bytes are
    /// counted on its raw stream, so its body (a refusal's) is not again.
    fn response_body(&self, body: ProxyBody) -> ProxyBody {
        match self.relayed.get() {
            Some(relayed) if relayed.kind() == "http" => {
                Counted::wrap(body, relayed.clone(), Way::FromAgent)
            }
            _ => body,
        }
    }
}

/// The request as HTTP/1.1 in origin form, with a Host.
fn as_http1(request: &mut Request<ProxyBody>) {
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let authority = request.uri().authority().map(|a| a.to_string());
    *request.version_mut() = Version::HTTP_11;
    *request.uri_mut() = path.parse().unwrap_or_else(|_| Uri::from_static("/"));
    if !request.headers().contains_key(header::HOST)
        && let Some(host) = authority.and_then(|a| HeaderValue::from_str(&a).ok())
    {
        request.headers_mut().insert(header::HOST, host);
    }
}

fn addr_value(addr: SocketAddr) -> HeaderValue {
    HeaderValue::from_str(&addr.to_string()).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// `path` (with its query) without `prefix`: `/t/a/x?q` → `/x?q`,
/// `/t/a` → `/`, `/t/a?q` → `/?q`.
fn strip(path: &str, prefix: &str) -> String {
    match path.strip_prefix(prefix) {
        Some("") => "/".into(),
        Some(rest) if rest.starts_with('?') => format!("/{rest}"),
        Some(rest) if rest.starts_with('/') => rest.into(),
        _ => path.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::strip;

    #[test]
    fn the_prefix_goes_whole_segments_only() {
        assert_eq!(strip("/t/a/x?q=1", "/t/a"), "/x?q=1");
        assert_eq!(strip("/t/a", "/t/a"), "/");
        assert_eq!(strip("/t/a?q", "/t/a"), "/?q");
        assert_eq!(strip("/t/ab", "/t/a"), "/t/ab");
        assert_eq!(strip("/other", "/t/a"), "/other");
    }
}
