//! `postern agent`: publishes local services through a data plane's tunnel
//! listener. One TLS connection carries every stream (HTTP/2, the agent as
//! the h2 server); it is redialled with jittered exponential backoff, and a
//! one-line status on stderr says connected / reconnecting / refused.
//! SIGTERM drains: the data plane is told first (new streams go to a
//! standby), then GOAWAY, then in-flight streams get `--drain-timeout`.

mod local;
mod status;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

pub use local::Mapping;
use local::{Local, Streams};
use status::Status;

use crate::sync::Backoff;
use crate::tunnel::protocol::{self, DRAINING, Hello, Welcome};
use crate::tunnel::session::h2_server;

/// A session that lasted this long resets the backoff.
const HEALTHY: Duration = Duration::from_secs(60);
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Between telling the data plane "draining" and GOAWAY.
const DRAIN_NOTICE: Duration = Duration::from_millis(300);

/// What `postern agent` was told, checked.
pub struct AgentConfig {
    /// HOST:PORT to dial.
    pub server: String,
    /// The WebSocket URL when `--server` is `wss://...` (the transport
    /// through the HTTPS listener), else the TLS transport.
    pub ws_url: Option<String>,
    /// The Host of the WebSocket upgrade when `--server-name` is given.
    pub host_header: Option<String>,
    pub server_name: ServerName<'static>,
    pub tls: TlsConnector,
    pub token_file: PathBuf,
    pub mappings: Vec<Mapping>,
    pub local_ca: Option<String>,
    pub reconnect_max: Duration,
    pub drain_timeout: Duration,
    pub proxy_protocol: Option<postern_snapshot::ProxyProtocol>,
}

/// Why the agent cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Config(String),
}

impl AgentConfig {
    pub fn from_args(args: &crate::cli::AgentArgs) -> Result<AgentConfig, AgentError> {
        let bad = AgentError::Config;
        let (server, ws_url) = match ws_target(&args.server) {
            Some(dial) => (dial, Some(args.server.clone())),
            None => (args.server.clone(), None),
        };
        let host = server
            .rsplit_once(':')
            .map_or(server.as_str(), |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = args.server_name.as_deref().unwrap_or(host);
        let server_name = ServerName::try_from(name.to_string())
            .map_err(|e| bad(format!("server name {name:?}: {e}")))?;
        // The HTTPS listener speaks HTTP/1.1 for the upgrade, not the
        // tunnel listener's ALPN.
        let alpn = match ws_url {
            Some(_) => b"http/1.1".as_slice(),
            None => protocol::ALPN,
        };
        let tls = connector(args.ca.as_ref(), alpn).map_err(bad)?;
        let local_ca = match &args.to_ca {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| bad(format!("reading {}: {e}", path.display())))?,
            ),
            None => None,
        };
        let unnamed = args.to.iter().filter(|m| m.tunnel.is_none()).count();
        if unnamed > 1 {
            return Err(bad(
                "at most one --to without NS/NAME= (it serves every other tunnel)".into(),
            ));
        }
        let config = AgentConfig {
            host_header: ws_url.as_ref().and(args.server_name.clone()),
            server,
            ws_url,
            server_name,
            tls,
            token_file: args.token_file.clone(),
            mappings: args.to.clone(),
            local_ca,
            reconnect_max: args.reconnect_max,
            drain_timeout: args.drain_timeout,
            proxy_protocol: args.proxy_protocol.map(|v| match v {
                crate::cli::ProxyVersion::V1 => postern_snapshot::ProxyProtocol::V1,
                crate::cli::ProxyVersion::V2 => postern_snapshot::ProxyProtocol::V2,
            }),
        };
        config.token().map_err(bad)?;
        for m in &config.mappings {
            Local::new(&m.url, config.local_ca.as_deref()).map_err(bad)?;
        }
        Ok(config)
    }

    /// The token, re-read on every connection (rotation needs no restart).
    fn token(&self) -> Result<String, String> {
        let text = std::fs::read_to_string(&self.token_file)
            .map_err(|e| format!("reading {}: {e}", self.token_file.display()))?;
        let token = text.trim().to_string();
        if token.is_empty() {
            return Err(format!("{} is empty", self.token_file.display()));
        }
        Ok(token)
    }
}

/// The upgrade request for `url`; with `--server-name`, its Host is that
/// name (the URL may name an address, the data plane routes by Host).
fn ws_request(
    url: &str,
    host: Option<&str>,
) -> Result<tokio_tungstenite::tungstenite::handshake::client::Request, String> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url
        .into_client_request()
        .map_err(|e| format!("WebSocket {url}: {e}"))?;
    if let Some(host) = host {
        let value = http::HeaderValue::from_str(host).map_err(|e| format!("{host}: {e}"))?;
        request.headers_mut().insert(http::header::HOST, value);
    }
    Ok(request)
}

/// `HOST:PORT` to dial for a `wss://` server URL; None for `HOST:PORT`.
fn ws_target(server: &str) -> Option<String> {
    let uri: http::Uri = server.strip_prefix("wss://").and(server.parse().ok())?;
    let host = uri.host()?;
    Some(format!("{host}:{}", uri.port_u16().unwrap_or(443)))
}

fn connector(ca: Option<&PathBuf>, alpn: &[u8]) -> Result<TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let pem =
                std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        }
    }
    if roots.is_empty() {
        return Err("no CA certificate to verify the server with".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// How one connection ended.
/// The byte stream a session runs on: TLS, or a WebSocket over TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

enum Ended {
    /// It served, for this long, then broke.
    Served(Duration, String),
    /// The data plane accepted no tunnel.
    Refused(String),
    /// Dialling, TLS or the hello failed.
    Failed(String),
    /// SIGTERM: drained and done.
    Stopped,
}

/// Runs the agent until `shutdown` (then drains) or a start-up error.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    let status = Status::new(config.ws_url.as_deref().unwrap_or(&config.server));
    let mut dial = Backoff::new(Duration::from_millis(100), config.reconnect_max);
    let mut refusals = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    let mut attempt = 0u32;
    loop {
        let ended = once(&config, &status, &shutdown).await;
        let delay = match ended {
            Ended::Stopped => return Ok(()),
            Ended::Served(lasted, why) => {
                if lasted >= HEALTHY {
                    dial.reset();
                    refusals.reset();
                    attempt = 0;
                }
                tracing::info!(reason = %why, secs = lasted.as_secs(), "tunnel connection ended");
                attempt += 1;
                let delay = dial.next_delay(rand::random::<f64>());
                status.reconnecting(attempt, delay, &why);
                delay
            }
            Ended::Failed(why) => {
                attempt += 1;
                let delay = dial.next_delay(rand::random::<f64>());
                status.reconnecting(attempt, delay, &why);
                delay
            }
            Ended::Refused(why) => {
                attempt += 1;
                let delay = refusals.next_delay(0.5 + rand::random::<f64>() / 2.0);
                status.refused(&why, delay);
                delay
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

async fn once(config: &AgentConfig, status: &Status, shutdown: &CancellationToken) -> Ended {
    let token = match config.token() {
        Ok(t) => t,
        Err(e) => return Ended::Failed(e),
    };
    let greet = async {
        let tcp = TcpStream::connect(&config.server)
            .await
            .map_err(|e| format!("connect {}: {e}", config.server))?;
        let tcp = crate::net::carrier::carrier(tcp);
        let tls = config
            .tls
            .connect(config.server_name.clone(), tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let mut tls: Box<dyn Io> = match &config.ws_url {
            None => Box::new(tls),
            Some(url) => {
                let ws_config = Some(crate::tunnel::ws::config());
                let request = ws_request(url, config.host_header.as_deref())?;
                let (ws, _) = tokio_tungstenite::client_async_with_config(request, tls, ws_config)
                    .await
                    .map_err(|e| format!("WebSocket {url}: {e}"))?;
                Box::new(crate::tunnel::ws::WsStream::new(ws))
            }
        };
        let hello = Hello {
            protocol: protocol::VERSION,
            agent_version: env!("CARGO_PKG_VERSION").into(),
            token,
            tunnels: named(&config.mappings),
        };
        protocol::write_frame(&mut tls, &hello)
            .await
            .map_err(|e| e.to_string())?;
        let welcome: Welcome = protocol::read_frame(&mut tls)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((tls, welcome))
    };
    let (tls, welcome) = tokio::select! {
        _ = shutdown.cancelled() => return Ended::Stopped,
        greeted = tokio::time::timeout(DIAL_TIMEOUT, greet) => match greeted {
            Err(_) => return Ended::Failed("no answer within 10s".into()),
            Ok(Err(e)) => return Ended::Failed(e),
            Ok(Ok(pair)) => pair,
        },
    };
    let refused: Vec<String> = welcome
        .refused
        .iter()
        .map(|r| format!("{}: {}", r.tunnel, r.reason))
        .collect();
    if welcome.accepted.is_empty() {
        return Ended::Refused(refused.join(", "));
    }
    let streams = match streams(config, &welcome) {
        Ok(s) => s,
        Err(e) => return Ended::Failed(e),
    };
    status.connected(&welcome);
    let (control, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    *streams.control.lock().unwrap_or_else(|p| p.into_inner()) = Some(rx);
    let started = Instant::now();
    let service = service_fn(move |req| local::serve(req, streams.clone()));
    let conn = h2_server().serve_connection(TokioIo::new(tls), service);
    // The connection runs as a task on the worker threads, not in this
    // future (which `main` polls on its own thread): every stream's task
    // wakes the connection and is woken by it, and across threads each
    // of those wakes is a futex call and a context switch (about four per
    // stream opened, `perf trace -s` in the tunnel benchmark's rates).
    let graceful = CancellationToken::new();
    let drive = {
        let graceful = graceful.clone();
        // Once `graceful` is cancelled: no new streams, and the end when
        // the open ones have ended.
        async move {
            tokio::pin!(conn);
            tokio::select! {
                ended = conn.as_mut() => ended,
                _ = graceful.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            }
        }
    };
    let mut conn = AbortOnDropHandle::new(tokio::spawn(drive));
    tokio::select! {
        ended = &mut conn => {
            let why = match ended {
                Ok(Ok(())) => "closed by the data plane".to_string(),
                Ok(Err(e)) => format!("connection lost: {e}"),
                Err(e) => format!("connection task failed: {e}"),
            };
            Ended::Served(started.elapsed(), why)
        }
        _ = shutdown.cancelled() => {
            status.draining(config.drain_timeout);
            let _ = control.send(Bytes::from_static(DRAINING)).await;
            if tokio::time::timeout(DRAIN_NOTICE, &mut conn).await.is_ok() {
                return Ended::Stopped;
            }
            drop(control);
            graceful.cancel();
            if tokio::time::timeout(config.drain_timeout, &mut conn).await.is_err() {
                tracing::warn!("streams still open after the drain timeout; closing");
            }
            Ended::Stopped
        }
    }
}

/// The tunnels the hello asks for: those named by `--to`, unless one
/// `--to` is unnamed (then all the token names).
fn named(mappings: &[Mapping]) -> Vec<String> {
    if mappings.iter().any(|m| m.tunnel.is_none()) {
        return Vec::new();
    }
    mappings.iter().filter_map(|m| m.tunnel.clone()).collect()
}

fn streams(config: &AgentConfig, welcome: &Welcome) -> Result<Arc<Streams>, String> {
    let mut locals = HashMap::new();
    for accepted in &welcome.accepted {
        let mapping = config
            .mappings
            .iter()
            .find(|m| m.tunnel.as_deref() == Some(accepted.tunnel.as_str()))
            .or_else(|| config.mappings.iter().find(|m| m.tunnel.is_none()));
        let Some(mapping) = mapping else { continue };
        let local = Local::new(&mapping.url, config.local_ca.as_deref())?;
        locals.insert(accepted.tunnel.clone(), Arc::new(local));
    }
    Ok(Arc::new(Streams {
        locals,
        control: Mutex::new(None),
        proxy_protocol: config.proxy_protocol,
    }))
}

#[cfg(test)]
mod tests {
    use super::ws_target;

    #[test]
    fn a_wss_server_is_dialled_on_its_host_and_port() {
        let url = "wss://gw.example.com/.well-known/postern/tunnel";
        assert_eq!(ws_target(url).as_deref(), Some("gw.example.com:443"));
        let url = "wss://127.0.0.1:8443/.well-known/postern/tunnel";
        assert_eq!(ws_target(url).as_deref(), Some("127.0.0.1:8443"));
        assert_eq!(ws_target("gw.example.com:9443"), None);
    }
}
