//! The accept loops of `--http-addr` and `--https-addr`: per connection,
//! admission (connection caps), the PROXY protocol header when the peer is
//! trusted, the TLS handshake (certificate by SNI, ALPN h2 and http/1.1),
//! then hyper serving HTTP/1.1 and HTTP/2 with upgrades. Every state has a
//! deadline ([`Timeouts`]). On shutdown, connections finish their requests
//! (bounded by [`GRACE`]) and close.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::idle::Activity;
use super::proxy_protocol;
use super::tables::LiveResolver;
use super::{ConnInfo, Shared, handler};
use crate::net::admission::{Admission, Permit};
use crate::net::{Acceptor, Prefixed};

/// How long open connections get to finish after shutdown starts.
pub const GRACE: Duration = Duration::from_secs(10);
/// How often an HTTP/2 client is pinged while streams are open, and how
/// long its answer may take: a dead peer is noticed within both.
const H2_PING_EVERY: Duration = Duration::from_secs(20);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// The deadline of each connection state.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// TLS handshake.
    pub handshake: Duration,
    /// The first byte and the whole request head (HTTP/1.1 enforces it per
    /// request too).
    pub header: Duration,
    /// No request in flight (keep-alive, HTTP/2 with no streams).
    pub idle: Duration,
}

/// One listener's settings.
#[derive(Clone)]
pub struct ListenerSpec {
    pub name: &'static str,
    pub tls: Option<TlsAcceptor>,
    /// Whether trusted peers send a PROXY protocol header here.
    pub proxy_protocol: bool,
    pub admission: Admission,
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
    let trusted = shared.clone();
    let proxied = spec.proxy_protocol;
    let mut acceptor = Acceptor::new(listener, spec.admission.clone())
        .exempting(move |peer| proxied && trusted.trusted.contains(peer.ip()));
    while let Some(accepted) = acceptor.next(&shutdown).await {
        shared.metrics.accepted(spec.name);
        let (spec, shared, shutdown) = (spec.clone(), shared.clone(), shutdown.clone());
        let permit = Arc::new(accepted.permit);
        tokio::spawn(connection(
            accepted.stream,
            accepted.peer,
            permit,
            spec,
            shared,
            shutdown,
        ));
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    permit: Arc<Permit>,
    spec: ListenerSpec,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().unwrap_or(peer);
    let timeouts = shared.timeouts;
    // The PROXY header is part of what must arrive before the deadline.
    let unwrapped = tokio::time::timeout(
        timeouts.header,
        unwrap_proxy_header(stream, peer, local, &spec, &shared),
    )
    .await;
    let Some((client, server, io)) = (match unwrapped {
        Ok(unwrapped) => unwrapped,
        Err(_) => {
            shared.metrics.dropped(spec.name, "proxy_header");
            return;
        }
    }) else {
        return;
    };
    let info = |tls, sni: Option<&str>| {
        Arc::new(ConnInfo {
            client,
            server,
            tls,
            sni: sni.map(str::to_ascii_lowercase),
            permit: Some(permit.clone()),
        })
    };
    match &spec.tls {
        None => serve(TokioIo::new(io), info(false, None), shared, shutdown).await,
        Some(acceptor) => {
            match tokio::time::timeout(timeouts.handshake, acceptor.accept(io)).await {
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
    let timeouts = shared.timeouts;
    let activity = Arc::new(Activity::default());
    let requests = activity.clone();
    let service = service_fn(move |req| {
        // In flight until the response body ends: a long download or an
        // event stream is never idle.
        let busy = requests.begin();
        let answer = handler::handle(req, conn.clone(), shared.clone());
        async move {
            let response = answer.await?;
            Ok::<_, std::convert::Infallible>(response.map(|body| {
                body.map_frame(move |frame| {
                    let _ = &busy;
                    frame
                })
                .boxed_unsync()
            }))
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_PING_EVERY)
        .keep_alive_timeout(H2_PING_TIMEOUT);
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    let stop = tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "client connection ended with an error");
            }
            return;
        }
        () = activity.idle(timeouts.header, timeouts.idle) => "idle",
        () = shutdown.cancelled() => "shutdown",
    };
    tracing::trace!(reason = stop, "closing a client connection");
    // HTTP/2 gets a GOAWAY, HTTP/1.1 closes between requests, a connection
    // still sniffing its protocol stops at once.
    connection.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(GRACE, connection.as_mut()).await;
}
