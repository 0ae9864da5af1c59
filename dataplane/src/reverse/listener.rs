//! The accept loops of `--http-addr` and `--https-addr`, one per serving
//! thread ([`Cores`]): per connection,
//! admission (connection caps), the PROXY protocol header when the peer is
//! trusted, the TLS handshake (certificate by SNI, ALPN h2 and http/1.1),
//! then HTTP/1.1 or HTTP/2 ([`parked`]). Every state has a
//! deadline ([`Timeouts`]). On shutdown, connections finish their requests
//! (bounded by [`GRACE`]) and close.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::Either;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
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
            let arrival = Arrival {
                stream,
                peer,
                permit,
                spec,
            };
            connection(arrival, shared, shutdown)
        });
    }
}

/// A connection: its setup (the PROXY header, the TLS handshake, the first
/// bytes, and the whole of an HTTP/2 connection) in a box of its own, then
/// HTTP/1.1 spells ([`parked::h1`]).
///
/// Not an `async fn`: a task holds room for its future's largest state for
/// as long as it lives, and an `async fn` also keeps its arguments beside
/// whatever they were moved into. Chained, the setup's state is freed when
/// it finishes and a parked HTTP/1.1 connection's task holds only the loop.
fn connection(
    arrival: Arrival,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    let setup = Box::pin(setup(arrival, shared.clone(), shutdown.clone()));
    setup.then(move |settled| match settled {
        Settled::Plain(io, conn) => Either::Left(parked::h1(io, conn, shared, shutdown)),
        Settled::Tls(io, conn) => {
            Either::Right(Either::Left(parked::h1(io, conn, shared, shutdown)))
        }
        Settled::Over => Either::Right(Either::Right(std::future::ready(()))),
    })
}

/// Where a connection's setup left it.
enum Settled {
    /// HTTP/1.1 in the clear, with the bytes read to tell.
    Plain(Prefixed<TcpStream>, Arc<ConnInfo>),
    /// HTTP/1.1 over TLS. Boxed: rustls's connection is 1.2 KiB inline.
    Tls(Prefixed<Box<TlsStream<Prefixed<TcpStream>>>>, Arc<ConnInfo>),
    /// Closed, refused, or served to the end (HTTP/2).
    Over,
}

/// A connection as accepted, on the thread that serves it.
struct Arrival {
    stream: TcpStream,
    peer: SocketAddr,
    permit: Arc<Permit>,
    spec: ListenerSpec,
}

async fn setup(arrival: Arrival, shared: Arc<Shared>, shutdown: CancellationToken) -> Settled {
    let Arrival {
        stream,
        peer,
        permit,
        spec,
    } = arrival;
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
            return Settled::Over;
        }
    }) else {
        return Settled::Over;
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
    let Some(acceptor) = &spec.tls else {
        let conn = info(false, None);
        return match parked::start(io, &conn, &shared, &shutdown).await {
            Some(io) => Settled::Plain(io, conn),
            None => Settled::Over,
        };
    };
    match tokio::time::timeout(timeouts.handshake, acceptor.accept(io)).await {
        Ok(Ok(tls)) => {
            let conn = info(true, tls.get_ref().1.server_name());
            match parked::start(
                Prefixed::new(Vec::new(), Box::new(tls)),
                &conn,
                &shared,
                &shutdown,
            )
            .await
            {
                Some(io) => Settled::Tls(io, conn),
                None => Settled::Over,
            }
        }
        Ok(Err(e)) => {
            shared.metrics.dropped(spec.name, "tls_handshake");
            tracing::debug!(client = %client, error = %e, "TLS handshake failed");
            Settled::Over
        }
        Err(_) => {
            shared.metrics.dropped(spec.name, "tls_handshake");
            tracing::debug!(client = %client, "TLS handshake timed out");
            Settled::Over
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
