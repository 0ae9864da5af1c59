//! The accept loops of `--http-addr` and `--https-addr`, one per serving
//! thread ([`Cores`]): per connection,
//! admission (connection caps), the PROXY protocol header when the peer is
//! trusted, the TLS handshake (certificate by SNI, ALPN h2 and http/1.1),
//! then HTTP/1.1 or HTTP/2 ([`parked`]). Every state has a
//! deadline ([`Timeouts`]). On shutdown, connections finish their requests
//! (bounded by [`GRACE`]) and close.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::tables::LiveResolver;
use super::{ConnInfo, Shared, parked, proxy_protocol};
use crate::net::admission::{Admission, Permit};
use crate::net::{Acceptor, Cores, Prefixed};

/// How long open connections get to finish after shutdown starts.
pub const GRACE: Duration = Duration::from_secs(10);

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

/// Accepts on every serving thread until `shutdown`.
pub async fn run(
    listener: TcpListener,
    spec: ListenerSpec,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    cores: &Arc<Cores>,
) -> std::io::Result<()> {
    cores
        .accept_on_each(listener, move |listener, cores| {
            accept(
                listener,
                spec.clone(),
                shared.clone(),
                shutdown.clone(),
                cores,
            )
        })
        .await
}

/// One serving thread's accept loop.
async fn accept(
    listener: TcpListener,
    spec: ListenerSpec,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    cores: Arc<Cores>,
) {
    let trusted = shared.clone();
    let proxied = spec.proxy_protocol;
    let mut acceptor = Acceptor::new(listener, spec.admission.clone())
        .exempting(move |peer| proxied && trusted.trusted.contains(peer.ip()));
    while let Some(accepted) = acceptor.next(&shutdown).await {
        shared.metrics.accepted(spec.name);
        let (spec, shared, shutdown) = (spec.clone(), shared.clone(), shutdown.clone());
        let permit = Arc::new(accepted.permit);
        let peer = accepted.peer;
        cores.serve(accepted.stream, move |stream| {
            connection(stream, peer, permit, spec, shared, shutdown)
        });
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
    // Boxed: only the first moments of a connection need it, and the task
    // holds room for its largest state for as long as the connection lives.
    let unwrapped = Box::pin(tokio::time::timeout(
        timeouts.header,
        unwrap_proxy_header(stream, peer, local, &spec, &shared),
    ))
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
        None => parked::serve(io, info(false, None), shared, shutdown).await,
        // Boxed: a TLS connection's state is far larger than a plain one's,
        // and every plain connection's task would otherwise make room for it.
        Some(acceptor) => {
            Box::pin(tls_connection(
                acceptor, io, client, info, &spec, shared, shutdown,
            ))
            .await
        }
    }
}

async fn tls_connection(
    acceptor: &TlsAcceptor,
    io: Prefixed<TcpStream>,
    client: SocketAddr,
    info: impl Fn(bool, Option<&str>) -> Arc<ConnInfo>,
    spec: &ListenerSpec,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    // Both boxed: rustls's connection is 1.2 KiB inline, and every async
    // frame it passes through keeps a copy-sized slot for it for the
    // connection's whole life (9.6 KiB per idle TLS connection unboxed).
    let handshake = Box::pin(tokio::time::timeout(
        shared.timeouts.handshake,
        acceptor.accept(io),
    ));
    match handshake.await {
        Ok(Ok(tls)) => {
            let conn = info(true, tls.get_ref().1.server_name());
            parked::serve(Box::new(tls), conn, shared, shutdown).await
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
