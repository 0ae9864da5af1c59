//! tcp Tunnels: the public port is bound only while the Tunnel is
//! programmed *and* an agent is live for it (a client gets connection
//! refused otherwise, never a socket that hangs), and each connection is a
//! raw `CONNECT` stream to the agent, relayed byte for byte.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Method, Request, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Empty};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::protocol::{H_CLIENT, H_SERVER, H_STREAM, H_TUNNEL};
use super::relayed::Relayed;
use super::session::State;
use crate::net::{Acceptor, Cores, Metered};
use crate::reqlog::{Ended, Kind, RequestLog};

/// Keeps one listener task per `(tunnel, port)` of the table in service.
pub struct TcpPorts {
    host: IpAddr,
    running: HashMap<(String, u16), CancellationToken>,
    log: Arc<RequestLog>,
    cores: Arc<Cores>,
}

impl TcpPorts {
    pub fn new(host: IpAddr, log: Arc<RequestLog>, cores: Arc<Cores>) -> TcpPorts {
        TcpPorts {
            host,
            running: HashMap::new(),
            log,
            cores,
        }
    }

    /// Starts the listeners `wanted` has and stops the others.
    pub fn reconcile(
        &mut self,
        wanted: &[(String, u16)],
        state: &Arc<State>,
        stop: &CancellationToken,
    ) {
        self.running.retain(|key, token| {
            let keep = wanted.contains(key);
            if !keep {
                token.cancel();
            }
            keep
        });
        for (id, port) in wanted {
            let key = (id.clone(), *port);
            if self.running.contains_key(&key) {
                continue;
            }
            let token = stop.child_token();
            let addr = SocketAddr::new(self.host, *port);
            let port = serve_port(
                id.clone(),
                addr,
                state.clone(),
                self.log.clone(),
                self.cores.clone(),
                token.clone(),
            );
            tokio::spawn(port);
            self.running.insert(key, token);
        }
    }
}

/// Binds `addr` while `tunnel` has a live agent, until `stop`.
async fn serve_port(
    tunnel: String,
    addr: SocketAddr,
    state: Arc<State>,
    log: Arc<RequestLog>,
    cores: Arc<Cores>,
    stop: CancellationToken,
) {
    let mut changes = state.registry.subscribe();
    loop {
        if !wait_live(&tunnel, &state, &mut changes, &stop).await {
            return;
        }
        let listener = match bind(addr) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(tunnel = %tunnel, %addr, error = %e, "cannot bind the tcp tunnel's port; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                }
            }
        };
        tracing::info!(tunnel = %tunnel, %addr, "tcp tunnel listening");
        let mut clients = Acceptor::new(listener, state.tcp_admission.clone());
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = changes.changed() => {
                    if changed.is_err() { return; }
                    if state.route(&tunnel).is_err() {
                        tracing::info!(tunnel = %tunnel, %addr, "tcp tunnel closed: no agent");
                        break;
                    }
                }
                accepted = clients.next(&stop) => {
                    let Some(accepted) = accepted else { return };
                    let (tunnel, peer, log) = (tunnel.clone(), accepted.peer, log.clone());
                    let permit = accepted.permit;
                    // Where the agent's connection runs, when it is here
                    // (in a pool, the first's: not a pick, which would turn
                    // the pool's round robin).
                    let home = state.registry.active(&tunnel).map_or(0, |s| s.home);
                    let state = state.clone();
                    cores.serve_on(home, accepted.stream, move |client| async move {
                        let started = Instant::now();
                        let (outcome, bytes) =
                            relay(tunnel.clone(), client, peer, addr, state).await;
                        drop(permit);
                        log.ended(&Ended {
                            kind: Kind::Tunnel,
                            client: peer,
                            host: &tunnel,
                            method: None,
                            path: None,
                            status: None,
                            bytes,
                            took: started.elapsed(),
                            upstream: Some(&tunnel),
                            user: None,
                            outcome,
                        });
                    });
                }
            }
        }
    }
}

/// Waits until `tunnel` has an agent; false when stopped first.
async fn wait_live(
    tunnel: &str,
    state: &State,
    changes: &mut watch::Receiver<u64>,
    stop: &CancellationToken,
) -> bool {
    loop {
        if state.route(tunnel).is_ok() {
            return true;
        }
        tokio::select! {
            _ = stop.cancelled() => return false,
            changed = changes.changed() => if changed.is_err() { return false; },
        }
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Relays one client of the port bound at `bound`; says how it ended
/// (`ok`, `refused`, `failed`) and the bytes (up, down).
async fn relay(
    tunnel: String,
    client: TcpStream,
    peer: SocketAddr,
    bound: SocketAddr,
    state: Arc<State>,
) -> (&'static str, (u64, u64)) {
    let _ = client.set_nodelay(true);
    // The address the client reached, for a PROXY header: the bound one,
    // unless that is a wildcard (asking the socket is a syscall per
    // connection).
    let local = if bound.ip().is_unspecified() {
        client.local_addr().unwrap_or(bound)
    } else {
        bound
    };
    // Boxed and gone once open: opening takes far more state (the request,
    // the response, hyper's futures) than relaying, and this task's
    // allocation is sized for its largest state for the stream's whole life.
    let raw = match Box::pin(open(&tunnel, peer, local, &state)).await {
        Ok(raw) => raw,
        Err(outcome) => return (outcome, (0, 0)),
    };
    let relayed = Relayed::open(&state.metrics, &tunnel, "tcp");
    let mut raw = Metered::new(TokioIo::new(raw), relayed);
    let mut client = client;
    let moved = crate::net::relay(&mut client, &mut raw).await;
    drop(raw);
    let (up, down) = (moved.a_to_b, moved.b_to_a);
    tracing::info!(tunnel = %tunnel, client = %peer, bytes_in = up, bytes_out = down, "tcp stream ended");
    let outcome = if moved.result.is_ok() { "ok" } else { "failed" };
    (outcome, (up, down))
}

/// Opens `peer`'s CONNECT stream to the agent; why not (`refused`,
/// `failed`) when it cannot.
async fn open(
    tunnel: &str,
    peer: SocketAddr,
    local: SocketAddr,
    state: &State,
) -> Result<Upgraded, &'static str> {
    let mut sender = match state.open(tunnel).await {
        Ok(sender) => sender,
        Err(e) => {
            tracing::info!(tunnel = %tunnel, client = %peer, error = %e, "tcp stream refused");
            return Err("refused");
        }
    };
    let mut connect = Request::new(Empty::new().map_err(|e| match e {}).boxed_unsync());
    *connect.method_mut() = Method::CONNECT;
    *connect.uri_mut() = Uri::from_static("tunnel.invalid:1");
    *connect.version_mut() = Version::HTTP_2;
    let headers = connect.headers_mut();
    let value = |s: String| HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static("-"));
    headers.insert(H_TUNNEL, value(tunnel.to_string()));
    headers.insert(H_CLIENT, value(peer.to_string()));
    headers.insert(H_SERVER, value(local.to_string()));
    headers.insert(H_STREAM, HeaderValue::from_static("tcp"));
    state.metrics.stream(tunnel, "tcp");
    let opened = async {
        sender.ready().await?;
        sender.send_request(connect).await
    };
    let mut response = match opened.await {
        Ok(r) if r.status() == StatusCode::OK => r,
        Ok(r) => {
            tracing::info!(tunnel = %tunnel, client = %peer, status = r.status().as_u16(), "tcp stream refused by the agent");
            return Err("refused");
        }
        Err(e) => {
            tracing::info!(tunnel = %tunnel, client = %peer, error = %e, "tcp stream failed");
            return Err("failed");
        }
    };
    hyper::upgrade::on(&mut response).await.map_err(|e| {
        tracing::info!(tunnel = %tunnel, client = %peer, error = %e, "tcp stream failed");
        "failed"
    })
}
