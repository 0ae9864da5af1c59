//! The accept loops of `--http-addr` and `--https-addr`: per connection,
//! the PROXY protocol header when the peer is trusted, the TLS handshake
//! (certificate by SNI, ALPN h2 and http/1.1), then hyper serving HTTP/1.1
//! and HTTP/2 with upgrades. On shutdown, connections finish their
//! requests (bounded by [`GRACE`]) and close.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::proxy_protocol;
use super::tables::LiveResolver;
use super::{ConnInfo, Shared, handler};
use crate::net::Prefixed;

/// How long open connections get to finish after shutdown starts.
pub const GRACE: Duration = Duration::from_secs(10);
/// A TLS handshake that takes longer is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A request head that takes longer is dropped (slowloris).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// One listener's settings.
#[derive(Clone)]
pub struct ListenerSpec {
    pub name: &'static str,
    pub tls: Option<TlsAcceptor>,
    /// Whether trusted peers send a PROXY protocol header here.
    pub proxy_protocol: bool,
}

/// The TLS acceptor of the https listener: certificates from the live store.
pub fn tls_acceptor(shared: &Shared) -> Result<TlsAcceptor, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(LiveResolver {
            live: shared.live.clone(),
            hooks: shared.hooks.tls.clone(),
        }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    for hook in &shared.hooks.tls {
        config.alpn_protocols.extend(hook.alpn());
    }
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts until `shutdown`.
pub async fn run(
    listener: TcpListener,
    spec: ListenerSpec,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of descriptors or a reset before accept: pause, go on.
                    tracing::warn!(listener = spec.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => return,
        };
        shared.metrics.accepted(spec.name);
        tokio::spawn(connection(
            stream,
            peer,
            spec.clone(),
            shared.clone(),
            shutdown.clone(),
        ));
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    spec: ListenerSpec,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().unwrap_or(peer);
    let Some((client, server, io)) = unwrap_proxy_header(stream, peer, local, &spec, &shared).await
    else {
        return;
    };
    let info = |tls, sni: Option<&str>| {
        Arc::new(ConnInfo {
            client,
            server,
            tls,
            sni: sni.map(str::to_ascii_lowercase),
        })
    };
    match &spec.tls {
        None => serve(TokioIo::new(io), info(false, None), shared, shutdown).await,
        Some(acceptor) => {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
                Ok(Ok(tls)) => {
                    let conn = info(true, tls.get_ref().1.server_name());
                    serve(TokioIo::new(tls), conn, shared, shutdown).await
                }
                Ok(Err(e)) => {
                    shared.metrics.dropped(spec.name, "tls_handshake");
                    tracing::debug!(client = %client, error = %e, "TLS handshake failed");
                }
                Err(_) => {
                    shared.metrics.dropped(spec.name, "tls_handshake");
                    tracing::debug!(client = %client, "TLS handshake timed out");
                }
            }
        }
    }
}

/// The client and server addresses, from the PROXY header when the peer is
/// trusted, and the stream positioned after it.
async fn unwrap_proxy_header(
    mut stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    spec: &ListenerSpec,
    shared: &Shared,
) -> Option<(SocketAddr, SocketAddr, Prefixed<TcpStream>)> {
    if !spec.proxy_protocol || !shared.trusted.contains(peer.ip()) {
        return Some((peer, local, Prefixed::new(Vec::new(), stream)));
    }
    match proxy_protocol::read_header(&mut stream).await {
        Ok((announced, rest)) => {
            let (client, server) = announced.unwrap_or((peer, local));
            Some((client, server, Prefixed::new(rest, stream)))
        }
        Err(e) => {
            shared.metrics.dropped(spec.name, "proxy_header");
            tracing::info!(listener = spec.name, %peer, error = %e, "dropping a connection from a trusted peer");
            None
        }
    }
}

async fn serve<I>(
    io: TokioIo<I>,
    conn: Arc<ConnInfo>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| handler::handle(req, conn.clone(), shared.clone()));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "client connection ended with an error");
            }
        }
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(GRACE, connection.as_mut()).await;
        }
    }
}
