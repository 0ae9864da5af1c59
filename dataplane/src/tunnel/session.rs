//! The agent listener: TLS, the hello, authentication per tunnel, then one
//! HTTP/2 connection (the data plane as h2 client) registered for the
//! accepted tunnels until it ends, is cut, or the data plane stops.
//!
//! Flow control is HTTP/2's: each stream may have [`STREAM_WINDOW`] bytes in
//! flight and the connection [`CONN_WINDOW`], which bounds what a slow
//! reader makes either side buffer. PINGs every [`HEARTBEAT`] that go
//! unanswered for [`HEARTBEAT_TIMEOUT`] close a dead connection (both ends
//! do this), so a vanished peer is noticed within 15 s.

use crate::net::admission::Admission;
use crate::net::{Acceptor, Cores};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::{Method, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use postern_snapshot::sync::TunnelAgents;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::auth::{AuthError, peek};
use super::limiter::FailureLimiter;
use super::metrics::TunnelMetrics;
use super::peer::{Decision, Peers};
use super::protocol::{self, Accepted, CONTROL_PATH, DRAINING, Hello, Refused, Welcome};
use super::registry::{Registry, Session};
use super::table::Table;
use crate::net::{Kill, Killable};
use crate::reverse::{ProxyBody, ProxyError};
use hyper::client::conn::http2::SendRequest;

/// How long an agent has for TLS and its hello.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// One stream's window, sized for the bandwidth-delay product of a long
/// link: a stream carries at most window ÷ RTT (16 MiB: 1.3 Gbit/s at
/// 100 ms; 2 MiB capped one stream at 335 Mbit/s over 50 ms, below a
/// direct connection there). Measured with `target/release/tunnel 10 1000
/// link`, whose delay line is noisy: 16 MiB beat 2 MiB in every paired run.
/// Credit, not a buffer: an idle stream costs nothing, and only a reader
/// that stops reading makes its peer buffer that much.
pub const STREAM_WINDOW: u32 = 16 * 1024 * 1024;
/// The whole connection's window: what all stalled readers together can
/// make a side buffer, and four streams' worth, so one stalled reader
/// cannot hold up the others. hyper's adaptive (BDP) window was measured
/// too (0.93× up, 0.70× down) and rejected: it sets the connection window
/// to one stream's, so a single stalled stream would stall every stream.
pub const CONN_WINDOW: u32 = 64 * 1024 * 1024;
pub const FRAME: u32 = 64 * 1024;
/// Streams open at once on one agent connection: every public connection
/// of its tunnels is one. hyper's default of 200 made the 201st wait for
/// a free slot, which is no limit to keep for a gateway; the connection
/// budget of the data plane is what caps them.
pub const MAX_STREAMS: u32 = 65_536;
pub const HEARTBEAT: Duration = Duration::from_secs(5);
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most token ids remembered for counting reconnects.
const SEEN: usize = 10_000;
/// The most tunnels one agent connection may ask for.
const MAX_TUNNELS: usize = 16;
/// How long in-flight streams of a closing session may take.
const DRAIN: Duration = Duration::from_secs(10);

/// The h2 client side of every tunnel connection (to an agent, or to
/// another replica's peer port): the windows and heartbeats above.
pub fn h2_client() -> hyper::client::conn::http2::Builder<TokioExecutor> {
    let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONN_WINDOW)
        .max_frame_size(FRAME)
        .keep_alive_interval(HEARTBEAT)
        .keep_alive_timeout(HEARTBEAT_TIMEOUT)
        .keep_alive_while_idle(true);
    builder
}

/// The h2 server side of the same connections (the agent, the peer port).
pub fn h2_server() -> hyper::server::conn::http2::Builder<TokioExecutor> {
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONN_WINDOW)
        .max_concurrent_streams(MAX_STREAMS)
        .max_frame_size(FRAME)
        .keep_alive_interval(HEARTBEAT)
        .keep_alive_timeout(HEARTBEAT_TIMEOUT);
    builder
}

/// What the listener, the hooks and the tcp listeners share.
pub struct State {
    pub table: ArcSwap<Table>,
    pub registry: Registry,
    pub limiter: FailureLimiter,
    pub metrics: TunnelMetrics,
    next: AtomicU64,
    /// The last refusal reason per programmed tunnel.
    refusals: Mutex<HashMap<String, &'static str>>,
    /// Every programmed tunnel's agents, for the operator (`AgentConnected`).
    reports: watch::Sender<Vec<TunnelAgents>>,
    /// The caps of the public connections to tcp tunnels.
    pub tcp_admission: Admission,
    /// The other replicas, when there are (`--redis-url`).
    pub peers: Option<Arc<Peers>>,
    /// The token ids of the sessions so far (bounded), to count reconnects.
    seen: Mutex<std::collections::HashSet<String>>,
    /// Cancelled when the data plane stops (for sessions that no listener
    /// of this feature accepted: the WebSocket transport).
    pub stopping: CancellationToken,
    /// True once a snapshot was applied: before that every tunnel is
    /// unknown, and an agent refused then would back off for seconds.
    pub applied: watch::Sender<bool>,
}

/// Where the next stream of a tunnel goes.
#[derive(Clone)]
pub enum Route {
    Local(Arc<Session>),
    /// The replica at this peer address holds the agent.
    Peer(Arc<Peers>, String),
}

impl State {
    pub fn new(
        reports: watch::Sender<Vec<TunnelAgents>>,
        tcp_admission: Admission,
        peers: Option<Arc<Peers>>,
    ) -> State {
        State {
            table: ArcSwap::from_pointee(Table::default()),
            registry: Registry::default(),
            limiter: FailureLimiter::default(),
            metrics: TunnelMetrics::default(),
            next: AtomicU64::new(1),
            refusals: Mutex::new(HashMap::new()),
            reports,
            tcp_admission,
            peers,
            stopping: CancellationToken::new(),
            seen: Mutex::default(),
            applied: watch::Sender::new(false),
        }
    }

    /// Whether a session with token id `jti` connected before (the agent
    /// reconnects with the same token file). Forgets all past [`SEEN`].
    fn seen_before(&self, jti: &str) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= SEEN {
            seen.clear();
        }
        !seen.insert(jti.to_string())
    }

    fn pool(&self, tunnel: &str) -> bool {
        self.table.load().get(tunnel).is_some_and(|t| t.entry.pool)
    }

    /// The local session for the next stream of `tunnel`, if any.
    pub fn local(&self, tunnel: &str) -> Option<Arc<Session>> {
        self.registry.pick(tunnel, self.pool(tunnel))
    }

    /// Where the next stream of `tunnel` goes: here, another replica, or
    /// nowhere (and why).
    pub fn route(&self, tunnel: &str) -> Result<Route, ProxyError> {
        let pool = self.pool(tunnel);
        let local = self.registry.pick(tunnel, pool);
        let Some(peers) = &self.peers else {
            return local.map(Route::Local).ok_or(ProxyError::NoAgent);
        };
        match peers.decide(tunnel, self.registry.since(tunnel), pool) {
            Decision::Local => local.map(Route::Local).ok_or(ProxyError::NoAgent),
            Decision::Peer(addr) => Ok(Route::Peer(peers.clone(), addr)),
            Decision::NoAgent => Err(ProxyError::NoAgent),
            Decision::RegistryDown => Err(ProxyError::TunnelRegistryDown),
        }
    }

    /// A handle to open the next stream of `tunnel` on.
    pub async fn open(&self, tunnel: &str) -> Result<SendRequest<ProxyBody>, ProxyError> {
        Route::sender(self.route(tunnel)?, &self.metrics, tunnel).await
    }

    pub fn refresh_agents(&self, tunnels: &[String]) {
        for t in tunnels {
            self.metrics.set_agents(t, self.registry.count(t));
        }
        self.publish();
    }

    /// Records why an agent was refused for a programmed tunnel.
    pub fn refused(&self, tunnel: &str, reason: &'static str) {
        self.metrics.refused(tunnel, reason);
        if self.table.load().get(tunnel).is_some() {
            let mut refusals = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
            refusals.insert(tunnel.to_string(), reason);
        }
        self.publish();
    }

    /// Rebuilds the report of every programmed tunnel; sent on only when
    /// it changed.
    pub fn publish(&self) {
        let table = self.table.load();
        let refusals = self
            .refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let report: Vec<TunnelAgents> = table
            .ids()
            .map(|id| {
                let active = self.registry.active(id);
                TunnelAgents {
                    tunnel: id.to_string(),
                    agents: u32::try_from(self.registry.count(id)).unwrap_or(u32::MAX),
                    remote: active.as_ref().map(|s| s.remote.to_string()),
                    agent_version: active.as_ref().map(|s| s.agent_version.clone()),
                    last_refusal: refusals.get(id).map(|r| r.to_string()),
                }
            })
            .collect();
        self.reports.send_if_modified(|current| {
            let changed = *current != report;
            if changed {
                *current = report;
            }
            changed
        });
    }
}

impl Route {
    /// The connection the stream goes on: the agent's, or the holder's
    /// peer connection (dialled when there is none).
    pub async fn sender(
        self,
        metrics: &TunnelMetrics,
        tunnel: &str,
    ) -> Result<SendRequest<ProxyBody>, ProxyError> {
        match self {
            Route::Local(session) => session.sender().ok_or(ProxyError::NoAgent),
            Route::Peer(peers, addr) => {
                metrics.peer_stream(tunnel, "forwarded");
                peers.clients.sender(&addr).await.map_err(|e| {
                    tracing::warn!(tunnel = %tunnel, error = %e, "the replica holding the agent cannot be reached");
                    ProxyError::PeerUnreachable(e)
                })
            }
        }
    }
}

/// Accepts agents until `shutdown`, within `admission`'s caps.
pub async fn run(
    listener: TcpListener,
    admission: Admission,
    acceptor: TlsAcceptor,
    state: Arc<State>,
    shutdown: CancellationToken,
    cores: Arc<Cores>,
) {
    let tasks = tokio_util::task::TaskTracker::new();
    let mut agents = Acceptor::new(listener, admission);
    while let Some(accepted) = agents.next(&shutdown).await {
        let (peer, permit) = (accepted.peer, accepted.permit);
        let (acceptor, state, shutdown) = (acceptor.clone(), state.clone(), shutdown.clone());
        let tracker = tasks.clone();
        // On a serving thread, like every connection: the agent connection
        // and the streams it carries then wake no other thread. Measured
        // with `target/release/tunnel 5 1000 rates`: one stream's upload
        // ran 8.2–8.5 Gbit/s with the tunnel work on one thread against
        // 6.8–7.5 on the two-worker runtime.
        cores.serve(accepted.stream, move |tcp| {
            tracker.track_future(async move {
                let _permit = permit;
                if let Err(e) = handle(tcp, peer, acceptor, state, shutdown).await {
                    tracing::debug!(remote = %peer, error = %e, "agent connection ended");
                }
            })
        });
    }
    tasks.close();
    tasks.wait().await;
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("TLS or hello took longer than {HANDSHAKE:?}")]
    Timeout,
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error(transparent)]
    Protocol(#[from] protocol::ProtocolError),
    #[error("HTTP/2: {0}")]
    H2(#[from] hyper::Error),
}

async fn handle(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    state: Arc<State>,
    shutdown: CancellationToken,
) -> Result<(), SessionError> {
    let tcp = crate::net::carrier::carrier(tcp);
    let greet = async {
        let mut tls = acceptor.accept(tcp).await.map_err(SessionError::Tls)?;
        let hello = protocol::read_hello(&mut tls).await?;
        Ok::<_, SessionError>((tls, hello))
    };
    let (tls, hello) = tokio::time::timeout(HANDSHAKE, greet)
        .await
        .map_err(|_| SessionError::Timeout)??;
    serve(tls, hello, peer, state, shutdown, "tls").await
}

/// An agent on the WebSocket transport (`tunnel::ws`), until it ends or
/// the data plane stops.
pub async fn serve_ws<S>(mut io: S, peer: SocketAddr, state: Arc<State>)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let hello = tokio::time::timeout(HANDSHAKE, protocol::read_hello(&mut io)).await;
    let result = match hello {
        Ok(Ok(hello)) => {
            serve(
                io,
                hello,
                peer,
                state.clone(),
                state.stopping.clone(),
                "websocket",
            )
            .await
        }
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(SessionError::Timeout),
    };
    if let Err(e) = result {
        tracing::debug!(remote = %peer, error = %e, "agent connection ended");
    }
}

/// One agent's session after its hello, on either transport.
async fn serve<S>(
    mut tls: S,
    hello: Hello,
    peer: SocketAddr,
    state: Arc<State>,
    shutdown: CancellationToken,
    transport: &'static str,
) -> Result<(), SessionError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let id = format!("s{}", state.next.fetch_add(1, Ordering::Relaxed));
    // A restarted data plane listens before its first snapshot is in: an
    // agent that reconnects at once waits for it rather than being refused
    // (and backing off) for tunnels that are about to exist. Past the
    // handshake deadline it is judged against what there is.
    let mut applied = state.applied.subscribe();
    let _ = tokio::time::timeout(HANDSHAKE, applied.wait_for(|a| *a)).await;
    let (welcome, jti) = authenticate(&state, &hello, peer, &id);
    let kill = Arc::new(Kill::default());
    protocol::write_frame(&mut tls, &welcome).await?;
    if welcome.accepted.is_empty() {
        let _ = tls.shutdown().await;
        return Ok(());
    }
    let (sender, conn) = h2_client()
        .handshake::<_, ProxyBody>(TokioIo::new(Killable::new(tls, kill.clone())))
        .await?;
    let mut conn = tokio::spawn(conn);
    let tunnels: Vec<String> = welcome.accepted.iter().map(|a| a.tunnel.clone()).collect();
    let session = Arc::new(Session::new(
        id.clone(),
        peer,
        hello.agent_version.clone(),
        (hello.token, jti.clone()),
        sender,
    ));
    let active = state.registry.attach(&session, &tunnels);
    let again = state.seen_before(&jti);
    for t in &tunnels {
        state.metrics.sessions.get_or_create(&label(t)).inc();
        if again {
            state.metrics.reconnects.get_or_create(&label(t)).inc();
        }
    }
    state.refresh_agents(&tunnels);
    tracing::info!(
        session = %id, remote = %peer, agent_version = %hello.agent_version, jti = %jti,
        tunnels = ?tunnels, active = ?active, transport, reconnect = again,
        "agent session started"
    );
    tokio::spawn(watch_control(session.clone(), state.clone()));
    let started = Instant::now();
    let why = tokio::select! {
        ended = &mut conn => match ended {
            Ok(Ok(())) => "closed by the agent".to_string(),
            Ok(Err(e)) => format!("connection failed: {e}"),
            Err(e) => format!("connection task failed: {e}"),
        },
        _ = session.cut.cancelled() => {
            session.close();
            kill.kill();
            "cut: its tunnel or key changed".to_string()
        }
        _ = shutdown.cancelled() => {
            // No new streams; those in flight get a bounded time.
            state.registry.detach(&session);
            session.close();
            let _ = tokio::time::timeout(DRAIN, &mut conn).await;
            kill.kill();
            "the data plane is shutting down".to_string()
        }
    };
    state.registry.detach(&session);
    state.refresh_agents(&session.tunnels());
    state.refresh_agents(&tunnels);
    tracing::info!(
        session = %id, remote = %peer, jti = %jti, secs = started.elapsed().as_secs(),
        reason = %why,
        "agent session ended"
    );
    Ok(())
}

fn label(t: &str) -> super::metrics::TunnelLabels {
    super::metrics::TunnelLabels {
        tunnel: t.to_string(),
    }
}

/// Checks the hello against the tunnels in service: which tunnels the
/// agent may serve, which it may not and why. Counts and logs failures
/// (never the token), and refuses an address over its failure limit.
fn authenticate(state: &State, hello: &Hello, peer: SocketAddr, id: &str) -> (Welcome, String) {
    let (named, jti) = peek(&hello.token).unwrap_or_default();
    let mut wanted = if hello.tunnels.is_empty() {
        named
    } else {
        hello.tunnels.clone()
    };
    // Each name costs a signature check: a hello cannot ask for thousands.
    wanted.truncate(MAX_TUNNELS);
    let mut welcome = Welcome {
        session: id.to_string(),
        ..Welcome::default()
    };
    let now = Instant::now();
    let refuse_all = |welcome: &mut Welcome, e: AuthError| {
        let list = if wanted.is_empty() {
            vec!["-".to_string()]
        } else {
            wanted.clone()
        };
        for tunnel in list {
            welcome.refused.push(Refused {
                tunnel,
                reason: e.reason().into(),
            });
        }
    };
    if !state.limiter.allowed(peer.ip(), now) {
        refuse_all(&mut welcome, AuthError::RateLimited);
        state.refused("-", AuthError::RateLimited.reason());
        tracing::warn!(remote = %peer, "agent refused: too many failed attempts from this address");
        return (welcome, jti);
    }
    if wanted.is_empty() {
        refuse_all(&mut welcome, AuthError::Malformed("names no tunnel".into()));
    }
    let table = state.table.load();
    for tunnel in &wanted {
        match table.verify(&hello.token, tunnel) {
            Ok(_) => {
                let mode = match table.get(tunnel).map(|t| t.entry.mode) {
                    Some(postern_snapshot::TunnelMode::Tcp) => "tcp",
                    _ => "http",
                };
                let pool = table.get(tunnel).is_some_and(|t| t.entry.pool);
                let active = pool || state.registry.active(tunnel).is_none();
                welcome.accepted.push(Accepted {
                    tunnel: tunnel.clone(),
                    mode: mode.into(),
                    active,
                });
            }
            Err(e) => {
                let known = table.get(tunnel).is_some();
                state.refused(if known { tunnel } else { "-" }, e.reason());
                tracing::warn!(remote = %peer, tunnel = %tunnel, jti = %jti, reason = e.reason(), error = %e, "agent refused");
                welcome.refused.push(Refused {
                    tunnel: tunnel.clone(),
                    reason: e.reason().into(),
                });
            }
        }
    }
    if !welcome.refused.is_empty() {
        state.limiter.failed(peer.ip(), now);
    }
    (welcome, jti)
}

/// Opens the control stream and marks the session draining when the agent
/// says so; its end means nothing more (the connection's end detaches).
async fn watch_control(session: Arc<Session>, state: Arc<State>) {
    let request = Request::builder()
        .method(Method::GET)
        .uri(format!("http://agent{CONTROL_PATH}"))
        .version(http::Version::HTTP_2)
        .body(Empty::new().map_err(|e| match e {}).boxed_unsync());
    let Ok(request) = request else { return };
    let Some(mut sender) = session.sender() else {
        return;
    };
    if sender.ready().await.is_err() {
        return;
    }
    let Ok(response) = sender.send_request(request).await else {
        return;
    };
    drop(sender);
    let mut body = response.into_body();
    let mut seen = Vec::new();
    loop {
        let frame = tokio::select! {
            _ = session.closing.cancelled() => return,
            frame = body.frame() => frame,
        };
        let Some(Ok(frame)) = frame else { return };
        if let Some(data) = frame.data_ref() {
            seen.extend_from_slice(data);
            if seen.windows(DRAINING.len()).any(|w| w == DRAINING) {
                state.registry.drain(&session);
                state.refresh_agents(&session.tunnels());
                tracing::info!(session = %session.id, "agent draining: new streams go to a standby");
                return;
            }
            if seen.len() > 1024 {
                seen.drain(..seen.len() - DRAINING.len());
            }
        }
    }
}
