//! Backends: one pooled keep-alive client per distinct backend setting,
//! kept across snapshots while a site still uses it (so a swap that does
//! not touch a backend keeps its warm connections), dropped when none does.
//!
//! HTTP/1.1 backends are driven inline by the request's task
//! ([`super::inline`]); HTTP/2, upgrades and PROXY-header connections go
//! through hyper-util's pooled client.
//!
//! Retries: only an idempotent request without a body, only when no
//! connection could be made, once. Anything else may have reached the
//! backend and is not replayed. (A pooled HTTP/1.1 connection that the
//! backend had closed gives the request back unsent; that one is sent on
//! another connection, whatever the request.)

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::Body as _;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use postern_snapshot::{BackendEndpoint, BackendProtocol, ProxyProtocol, Timeouts};

use super::connector::{Connector, TlsSetup};
use super::inline::{InlinePool, SendError};
use super::phases::Backend;
use super::proxy_protocol;
use super::{ProxyBody, ProxyError};

type Pooled = Client<Connector, ProxyBody>;

/// Everything that makes two backends share a pool.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    endpoint: BackendEndpoint,
    connect_ms: u64,
    idle_ms: u64,
}

/// A backend ready to take requests.
pub struct BackendClient {
    pub endpoint: BackendEndpoint,
    scheme: Scheme,
    authority: Authority,
    h2: bool,
    connector: Connector,
    client: Pooled,
    /// HTTP/1.1 backends: connections driven by the requests' own tasks.
    inline: Option<Arc<InlinePool>>,
    idle: Duration,
    /// Why this backend cannot be used (a CA that does not parse...).
    broken: Option<String>,
}

impl BackendClient {
    fn new(key: &PoolKey) -> BackendClient {
        let endpoint = &key.endpoint;
        let h2 = endpoint.protocol == BackendProtocol::Http2;
        let idle = Duration::from_millis(key.idle_ms);
        let mut broken = None;
        let uri: Uri = endpoint.url.parse().unwrap_or_else(|e| {
            broken = Some(format!("backend url {}: {e}", endpoint.url));
            Uri::from_static("http://invalid.invalid:1")
        });
        let scheme = uri.scheme().cloned().unwrap_or(Scheme::HTTP);
        let authority = uri
            .authority()
            .cloned()
            .unwrap_or_else(|| Authority::from_static("invalid.invalid:1"));
        let tls = if scheme == Scheme::HTTPS {
            let settings = endpoint.tls.clone().unwrap_or_default();
            TlsSetup::new(
                settings.ca_pem.as_deref(),
                settings.server_name.as_deref(),
                h2,
            )
            .map_err(|e| broken = Some(e.to_string()))
            .ok()
        } else {
            None
        };
        let connector = Connector {
            connect_timeout: Duration::from_millis(key.connect_ms),
            tls,
            preamble: None,
        };
        let client = build_client(connector.clone(), h2, idle, usize::MAX);
        let mut backend = BackendClient {
            endpoint: endpoint.clone(),
            scheme,
            authority,
            h2,
            connector,
            client,
            inline: None,
            idle,
            broken,
        };
        if !h2 && endpoint.proxy_protocol.is_none() {
            let pool = InlinePool::new(backend.connector.clone(), backend.uri(None), idle);
            backend.inline = Some(pool);
        }
        backend
    }

    pub fn is_h2(&self) -> bool {
        self.h2
    }

    /// `host:port` of the backend, the Host it sees unless preserved.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The absolute URI of a request path on this backend.
    pub fn uri(&self, path: Option<&PathAndQuery>) -> Uri {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(
            path.cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"))
    }

    /// Sends a prepared request. `addrs` (client, server) feed the PROXY
    /// protocol header when the backend wants one.
    pub async fn send(
        &self,
        request: Request<ProxyBody>,
        addrs: (SocketAddr, SocketAddr),
    ) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
        if let Some(version) = self.endpoint.proxy_protocol {
            return self.send_with_header(request, version, addrs).await;
        }
        let replay = Replay::of(&request);
        match self.client.request(request).await {
            Err(e) if e.is_connect() && replay.is_some() => {
                let Some(again) = replay.map(Replay::into_request) else {
                    return Err(e);
                };
                tracing::debug!(backend = %self.endpoint.url, error = %e, "retrying once after a failed connect");
                self.client.request(again).await
            }
            other => other,
        }
    }

    /// A connection of its own: the header names one client, so it cannot
    /// be pooled with others.
    async fn send_with_header(
        &self,
        request: Request<ProxyBody>,
        version: ProxyProtocol,
        (client, server): (SocketAddr, SocketAddr),
    ) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
        let mut connector = self.connector.clone();
        connector.preamble = Some(proxy_protocol::outbound(version, client, server).into());
        build_client(connector, self.h2, self.idle, 0)
            .request(request)
            .await
    }

    /// Set when the backend's settings are unusable.
    pub fn broken(&self) -> Option<&str> {
        self.broken.as_deref()
    }
}

impl Backend for BackendClient {
    fn speaks_h2(&self) -> bool {
        self.is_h2()
    }

    fn authority(&self) -> &Authority {
        BackendClient::authority(self)
    }

    fn uri(&self, path: Option<&PathAndQuery>) -> Uri {
        BackendClient::uri(self, path)
    }

    fn broken(&self) -> Option<&str> {
        BackendClient::broken(self)
    }

    fn label(&self) -> std::borrow::Cow<'_, str> {
        std::borrow::Cow::Borrowed(&self.endpoint.url)
    }

    fn exchange(
        &self,
        request: Request<ProxyBody>,
        addrs: (SocketAddr, SocketAddr),
        client_broke: Arc<AtomicBool>,
    ) -> BoxFuture<'_, Result<Response<ProxyBody>, ProxyError>> {
        Box::pin(async move {
            let gone = || client_broke.load(Ordering::Relaxed);
            if let Some(inline) = &self.inline
                && !request.headers().contains_key(http::header::UPGRADE)
            {
                let retry = replayable(&request);
                return inline.send(request, retry).await.map_err(|e| match e {
                    SendError::Connect(e) => ProxyError::from_connect(&e),
                    SendError::Http(e) => ProxyError::from_hyper(&e, gone()),
                });
            }
            self.send(request, addrs)
                .await
                .map(|response| response.map(|body| body.map_err(Into::into).boxed_unsync()))
                .map_err(|e| ProxyError::from_backend(&e, gone()))
        })
    }
}

fn build_client(connector: Connector, h2: bool, idle: Duration, max_idle: usize) -> Pooled {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(idle)
        .pool_max_idle_per_host(max_idle)
        .http2_only(h2);
    builder.build(connector)
}

/// The parts of a bodiless idempotent request, kept to send it again.
struct Replay {
    method: Method,
    uri: Uri,
    version: http::Version,
    headers: http::HeaderMap,
}

/// Whether a request may be sent twice: idempotent, no body, no upgrade.
fn replayable(request: &Request<ProxyBody>) -> bool {
    let idempotent = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    );
    let upgrade = request.headers().contains_key(http::header::UPGRADE);
    idempotent && !upgrade && request.body().is_end_stream()
}

impl Replay {
    fn of(request: &Request<ProxyBody>) -> Option<Replay> {
        replayable(request).then(|| Replay {
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            headers: request.headers().clone(),
        })
    }

    fn into_request(self) -> Request<ProxyBody> {
        let mut request = Request::new(Empty::new().map_err(|e| match e {}).boxed_unsync());
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers;
        request
    }
}

/// Upstreams by settings, carried from one snapshot to the next.
#[derive(Default)]
pub struct Pools {
    previous: HashMap<PoolKey, Arc<BackendClient>>,
    current: HashMap<PoolKey, Arc<BackendClient>>,
}

impl Pools {
    /// Starts a rebuild: what `finish` left becomes reusable.
    pub fn begin(map: HashMap<PoolKey, Arc<BackendClient>>) -> Pools {
        Pools {
            previous: map,
            current: HashMap::new(),
        }
    }

    /// The upstream for a backend, reused when the settings are unchanged.
    pub fn get(&mut self, endpoint: &BackendEndpoint, timeouts: &Timeouts) -> Arc<BackendClient> {
        let key = PoolKey {
            endpoint: endpoint.clone(),
            connect_ms: timeouts.connect_ms,
            idle_ms: timeouts.idle_ms,
        };
        if let Some(up) = self.current.get(&key) {
            return up.clone();
        }
        let up = self
            .previous
            .remove(&key)
            .unwrap_or_else(|| Arc::new(BackendClient::new(&key)));
        // An empty URL is a site with no backend (an authorization server,
        // answered before routing): nothing to warn about.
        if let Some(why) = up.broken()
            && !endpoint.url.is_empty()
        {
            tracing::warn!(backend = %endpoint.url, error = why, "backend unusable; its requests get 502");
        }
        self.current.insert(key, up.clone());
        up
    }

    /// The upstreams this snapshot uses; the others are dropped once their
    /// requests finish.
    pub fn finish(self) -> HashMap<PoolKey, Arc<BackendClient>> {
        self.current
    }
}
