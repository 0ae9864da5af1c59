//! The peer port (`--tunnel-peer-addr`): other replicas, once they proved
//! the peer secret, send the streams of tunnels whose agent is connected
//! here. Each stream goes to this replica's own agent unchanged; nothing
//! received here is forwarded again, so a stale registry entry costs one
//! 503, never a loop.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::handshake::{self, PeerKey};
use crate::net::Acceptor;
use crate::net::admission::Admission;
use crate::reverse::ProxyBody;
use crate::tunnel::protocol::{H_ERROR, H_TUNNEL};
use crate::tunnel::session::{State, h2_server};

/// How long a peer has to prove the secret.
const HANDSHAKE: Duration = Duration::from_secs(5);

/// Serves peers until `shutdown`.
pub async fn run(
    listener: TcpListener,
    admission: Admission,
    key: PeerKey,
    state: Arc<State>,
    shutdown: CancellationToken,
) {
    let tasks = tokio_util::task::TaskTracker::new();
    let mut peers = Acceptor::new(listener, admission);
    while let Some(accepted) = peers.next(&shutdown).await {
        let (mut tcp, peer, permit) = (accepted.stream, accepted.peer, accepted.permit);
        let (key, state, shutdown) = (key.clone(), state.clone(), shutdown.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let _ = tcp.set_nodelay(true);
            match tokio::time::timeout(HANDSHAKE, handshake::accept(&mut tcp, &key)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(remote = %peer, error = %e, "peer port: connection refused");
                    return;
                }
                Err(_) => {
                    tracing::warn!(remote = %peer, "peer port: no handshake in time");
                    return;
                }
            }
            tracing::debug!(remote = %peer, "peer connection accepted");
            let service = hyper::service::service_fn(move |req| relay(req, state.clone()));
            let conn = h2_server().serve_connection(TokioIo::new(tcp), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(10), conn).await;
                }
            }
        });
    }
    tasks.close();
    tasks.wait().await;
}

/// One forwarded stream, sent on to the local agent.
async fn relay(
    mut req: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<ProxyBody>, Infallible> {
    let tunnel = req
        .headers()
        .get(H_TUNNEL)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let Some(mut sender) = state.local(&tunnel).and_then(|s| s.sender()) else {
        return Ok(refusal(&format!(
            "no agent for tunnel {tunnel} is connected to this replica any more"
        )));
    };
    state.metrics.peer_stream(&tunnel, "served");
    if sender.ready().await.is_err() {
        return Ok(refusal("the agent's connection closed"));
    }
    if req.method() != Method::CONNECT {
        let (parts, body) = req.into_parts();
        let request = Request::from_parts(parts, body.map_err(Into::into).boxed_unsync());
        return Ok(match sender.send_request(request).await {
            Ok(response) => response.map(|b| b.map_err(Into::into).boxed_unsync()),
            Err(e) => refusal(&format!("tunnel stream: {e}")),
        });
    }
    // A raw stream: open it to the agent, then splice the two upgrades.
    let on_upgrade = hyper::upgrade::on(&mut req);
    let mut connect = Request::new(empty());
    *connect.method_mut() = Method::CONNECT;
    *connect.uri_mut() = req.uri().clone();
    *connect.version_mut() = http::Version::HTTP_2;
    *connect.headers_mut() = req.headers().clone();
    let mut opened = match sender.send_request(connect).await {
        Ok(r) => r,
        Err(e) => return Ok(refusal(&format!("tunnel stream: {e}"))),
    };
    if opened.status() != StatusCode::OK {
        return Ok(opened.map(|b| b.map_err(Into::into).boxed_unsync()));
    }
    let to_agent = match hyper::upgrade::on(&mut opened).await {
        Ok(raw) => raw,
        Err(e) => return Ok(refusal(&format!("tunnel stream: {e}"))),
    };
    tokio::spawn(async move {
        let Ok(from_peer) = on_upgrade.await else {
            return;
        };
        let (mut a, mut b) = (TokioIo::new(from_peer), TokioIo::new(to_agent));
        crate::net::relay(&mut a, &mut b).await;
    });
    Ok(Response::new(empty()))
}

fn empty() -> ProxyBody {
    Full::new(Bytes::new())
        .map_err(|e| match e {})
        .boxed_unsync()
}

/// A 503 the forwarding replica passes on as it is.
fn refusal(why: &str) -> Response<ProxyBody> {
    tracing::info!(reason = %why, "peer stream refused");
    let mut response = Response::new(
        Full::new(Bytes::from(format!("{why}\n")))
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    if let Ok(v) = HeaderValue::from_str(why) {
        response.headers_mut().insert(H_ERROR, v);
    }
    response
}
