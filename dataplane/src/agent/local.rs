//! The agent's side of each stream: the local service a `--to` names, and
//! the h2 service that forwards the data plane's streams to it. A plain
//! request goes through a pooled HTTP/1.1 client; a `CONNECT` (tcp tunnel,
//! or an HTTP Upgrade the data plane speaks itself) is a raw connection to
//! the service, relayed byte for byte.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::mpsc;
use tower_service::Service as _;

use crate::reverse::{Connector, TlsSetup};
use crate::tunnel::protocol::{CONTROL_PATH, H_CLIENT, H_ERROR, H_SERVER, H_STREAM, H_TUNNEL};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type AgentBody = BoxBody<Bytes, BoxError>;

/// One `--to`: an optional tunnel it is for, and the local service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// `namespace/name`; `None`: every tunnel without a mapping of its own.
    pub tunnel: Option<String>,
    pub url: Uri,
}

impl Mapping {
    /// `URL` or `NS/NAME=URL`, where URL is `http://`, `https://`, `h2c://`
    /// (HTTP/2 without TLS: gRPC) or `tcp://` with a host and port.
    pub fn parse(text: &str) -> Result<Mapping, String> {
        let (tunnel, url) = match text.split_once('=') {
            Some((t, url)) if !t.contains(':') => {
                (Some(crate::tunnel::keys::parse_tunnel_id(t)?), url)
            }
            _ => (None, text),
        };
        let url: Uri = url.parse().map_err(|e| format!("{url}: not a URL ({e})"))?;
        if !matches!(url.scheme_str(), Some("http" | "https" | "h2c" | "tcp")) {
            return Err(format!(
                "{url}: expected http://, https://, h2c:// or tcp://"
            ));
        }
        if url.host().is_none() || (url.scheme_str() == Some("tcp") && url.port().is_none()) {
            return Err(format!("{url}: needs a host (and a port for tcp://)"));
        }
        Ok(Mapping { tunnel, url })
    }
}

/// A local service, ready to take streams.
pub struct Local {
    scheme: Scheme,
    authority: Authority,
    /// For raw streams: plain TCP for `tcp://` and `http://`, TLS for `https://`.
    connector: Connector,
    client: Client<Connector, Incoming>,
    /// HTTP/2 for `h2c://`, else HTTP/1.1.
    version: Version,
}

impl Local {
    pub fn new(url: &Uri, ca_pem: Option<&str>) -> Result<Local, String> {
        let https = url.scheme_str() == Some("https");
        let tls = if https {
            Some(TlsSetup::new(ca_pem, None, false).map_err(|e| e.to_string())?)
        } else {
            None
        };
        let connector = Connector {
            connect_timeout: Duration::from_secs(10),
            tls,
            preamble: None,
        };
        let h2c = url.scheme_str() == Some("h2c");
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .http2_only(h2c)
            .build(connector.clone());
        let authority = url.authority().cloned().ok_or("no host")?;
        Ok(Local {
            scheme: if https { Scheme::HTTPS } else { Scheme::HTTP },
            authority,
            connector,
            client,
            version: if h2c {
                Version::HTTP_2
            } else {
                Version::HTTP_11
            },
        })
    }

    fn uri(&self, path: &str) -> Uri {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
            .unwrap_or_else(|_| Uri::from_static("http://invalid.invalid/"))
    }
}

/// What one connection's streams share.
pub struct Streams {
    pub locals: HashMap<String, Arc<Local>>,
    /// The control stream's body, taken by the data plane's first request.
    pub control: Mutex<Option<mpsc::Receiver<Bytes>>>,
    /// A PROXY header first on tcp tunnel connections (`--proxy-protocol`).
    pub proxy_protocol: Option<postern_snapshot::ProxyProtocol>,
}

/// Serves one stream.
pub async fn serve(
    req: Request<Incoming>,
    streams: Arc<Streams>,
) -> Result<Response<AgentBody>, Infallible> {
    if req.method() == Method::GET && req.uri().path() == CONTROL_PATH {
        return Ok(control(&streams));
    }
    let tunnel = req
        .headers()
        .get(H_TUNNEL)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let Some(local) = streams.locals.get(&tunnel).cloned() else {
        return Ok(failure(&format!("no --to for tunnel {tunnel}")));
    };
    let client = header_text(&req, H_CLIENT);
    if req.method() == Method::CONNECT {
        let kind = header_text(&req, H_STREAM);
        // One line per stream, when it ends; this one only when debugging.
        tracing::debug!(tunnel = %tunnel, client = %client, kind = %kind, "stream opened");
        let preamble = match streams.proxy_protocol {
            Some(version) if kind == "tcp" => proxy_preamble(&req, version),
            _ => None,
        };
        return Ok(raw(req, local, tunnel, client, preamble).await);
    }
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let started = std::time::Instant::now();
    let response = forward(req, &local).await;
    tracing::info!(
        tunnel = %tunnel, client = %client, method = %method, path = %path,
        status = response.status().as_u16(), ms = started.elapsed().as_millis() as u64,
        "request"
    );
    Ok(response)
}

fn header_text(req: &Request<Incoming>, name: &str) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string()
}

fn control(streams: &Streams) -> Response<AgentBody> {
    let rx = streams
        .control
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let Some(mut rx) = rx else {
        return failure("the control stream is already open");
    };
    let stream = futures::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|o| o.map(|b| Ok::<_, BoxError>(Frame::data(b))))
    });
    Response::new(BodyExt::boxed(StreamBody::new(stream)))
}

async fn forward(req: Request<Incoming>, local: &Local) -> Response<AgentBody> {
    let (mut parts, body) = req.into_parts();
    for name in [H_TUNNEL, H_CLIENT, H_SERVER, H_STREAM] {
        parts.headers.remove(name);
    }
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    parts.uri = local.uri(&path);
    parts.version = local.version;
    if !parts.headers.contains_key(header::HOST)
        && let Ok(host) = HeaderValue::from_str(local.authority.as_str())
    {
        parts.headers.insert(header::HOST, host);
    }
    match local.client.request(Request::from_parts(parts, body)).await {
        Ok(response) => response.map(|b| b.map_err(BoxError::from).boxed()),
        Err(e) => {
            tracing::warn!(service = %local.authority, error = %e, "local service failed");
            failure(&format!("local service {}: {e}", local.authority))
        }
    }
}

/// The PROXY header naming the stream's public client and the address it
/// connected to, from the stream's headers.
fn proxy_preamble(
    req: &Request<Incoming>,
    version: postern_snapshot::ProxyProtocol,
) -> Option<Arc<[u8]>> {
    let addr = |name| header_text(req, name).parse::<std::net::SocketAddr>().ok();
    let (client, server) = (addr(H_CLIENT)?, addr(H_SERVER)?);
    Some(crate::reverse::proxy_header(version, client, server).into())
}

/// Connects `local` for a CONNECT stream of `(tunnel, client)` and relays
/// the two once the stream is upgraded.
async fn raw(
    mut req: Request<Incoming>,
    local: Arc<Local>,
    tunnel: String,
    client: String,
    preamble: Option<Arc<[u8]>>,
) -> Response<AgentBody> {
    let uri = local.uri("/");
    let mut connector = local.connector.clone();
    connector.preamble = preamble;
    let stream = match connector.call(uri).await {
        Ok(s) => s.into_inner(),
        Err(e) => {
            tracing::warn!(service = %local.authority, error = %e, "local service refused a stream");
            return failure(&format!("local service {}: {e}", local.authority));
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "stream was not opened");
                return;
            }
        };
        let mut upgraded = TokioIo::new(upgraded);
        let mut stream = stream;
        let moved = crate::net::relay(&mut upgraded, &mut stream).await;
        tracing::info!(tunnel = %tunnel, client = %client, bytes_in = moved.a_to_b, bytes_out = moved.b_to_a, "stream ended");
    });
    Response::new(empty())
}

fn empty() -> AgentBody {
    Full::new(Bytes::new()).map_err(|e| match e {}).boxed()
}

/// A 502 the agent answers itself (the data plane passes it on).
fn failure(why: &str) -> Response<AgentBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(format!("{why}\n")))
            .map_err(|e| match e {})
            .boxed(),
    );
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    if let Ok(v) = HeaderValue::from_str(why) {
        response.headers_mut().insert(H_ERROR, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings() {
        let m = Mapping::parse("http://127.0.0.1:3000").expect("plain");
        assert_eq!(m.tunnel, None);
        let m = Mapping::parse("default/db=tcp://127.0.0.1:5432").expect("named");
        assert_eq!(m.tunnel.as_deref(), Some("default/db"));
        assert_eq!(m.url.port_u16(), Some(5432));
        assert!(Mapping::parse("https://localhost:8443").is_ok());
        for bad in ["127.0.0.1:3000", "ftp://x:1", "tcp://x", "a=http://x:1"] {
            assert!(Mapping::parse(bad).is_err(), "{bad}");
        }
    }
}
