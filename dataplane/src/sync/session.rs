//! One session with the operator: hello, welcome, then snapshots acked or
//! nacked by version, pings both ways. Ends with the error that ended it;
//! the caller decides when to try again.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use postern_snapshot::sync::{
    AGENTS_PROTOCOL, DEAD_AFTER_SECS, MAX_FRAME, MIN_PROTOCOL, PING_SECS, ToDataplane, ToOperator,
    TunnelAgents, decode, decode_snapshot, encode,
};
use serde_json::value::RawValue;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, timeout};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use super::{Backoff, SyncConfig};
use crate::runtime::{Outcome, Runtime};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEAD_AFTER: Duration = Duration::from_secs(DEAD_AFTER_SECS);
const PING_EVERY: Duration = Duration::from_secs(PING_SECS);

/// The connection's bytes: plain TCP, or TLS over it.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

type Conn = Framed<Box<dyn Io>, LengthDelimitedCodec>;

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot read the sync token file {path}: {source}")]
    TokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("connecting timed out after {}s", CONNECT_TIMEOUT.as_secs())]
    ConnectTimeout,
    #[error("{0}")]
    TlsConfig(String),
    /// Most often the operator's certificate failing verification.
    #[error(
        "TLS handshake with the operator (expected name {server_name}) failed: {source}; check --sync-ca and --sync-server-name"
    )]
    Handshake {
        server_name: String,
        source: std::io::Error,
    },
    #[error("refused: {0}")]
    Refused(String),
    #[error("the operator closed the connection")]
    Closed,
    #[error("the operator was silent for {DEAD_AFTER_SECS}s")]
    Silent,
    #[error("connection error: {0}")]
    Io(std::io::Error),
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// Runs one session to its end.
pub(super) async fn run(
    config: &SyncConfig,
    runtime: &Arc<Runtime>,
    backoff: &mut Backoff,
) -> SessionError {
    match session(config, runtime, backoff).await {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

async fn session(
    config: &SyncConfig,
    runtime: &Arc<Runtime>,
    backoff: &mut Backoff,
) -> Result<Infallible, SessionError> {
    let token = config.token.read()?;
    let stream = timeout(CONNECT_TIMEOUT, TcpStream::connect(&config.operator))
        .await
        .map_err(|_| SessionError::ConnectTimeout)?
        .map_err(SessionError::Connect)?;
    // Small frames (acks, pings) should not wait for Nagle.
    let _ = stream.set_nodelay(true);
    let stream: Box<dyn Io> = match &config.tls {
        Some(tls) => Box::new(tls.connect(stream).await?),
        None => Box::new(stream),
    };
    let mut conn = Framed::new(stream, codec());
    let hello = ToOperator::Hello {
        protocol: MIN_PROTOCOL,
        protocols: postern_snapshot::sync::offered(),
        dataplane_id: config.dataplane_id.clone(),
        token,
        schemas: vec![postern_snapshot::SCHEMA],
        current_version: runtime.version(),
        capabilities: Some(config.capabilities.clone()),
    };
    send(&mut conn, &hello).await?;
    let (operator_id, protocol) = welcome(&mut conn)
        .await
        .map_err(|e| plain_to_tls_hint(e, config))?;
    tracing::info!(operator = %config.operator, %operator_id, protocol, tls = config.tls.is_some(), "connected to the operator");
    runtime.metrics().sync_connected.set(1);
    backoff.reset();
    let agents = match config.agents.clone() {
        Some(_) if protocol < AGENTS_PROTOCOL => {
            tracing::warn!(
                protocol,
                "the operator predates tunnel reports; Tunnels' AgentConnected stays unknown until it is upgraded"
            );
            None
        }
        agents => agents,
    };
    serve(&mut conn, runtime, agents).await
}

/// The sync stream's framing: a 4-byte length, then that many bytes.
pub(crate) fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

/// A plain client reading a TLS server's alert sees a nonsensical length
/// prefix; say what is likely wrong.
fn plain_to_tls_hint(error: SessionError, config: &SyncConfig) -> SessionError {
    match error {
        SessionError::Io(e)
            if config.tls.is_none() && e.kind() == std::io::ErrorKind::InvalidData =>
        {
            SessionError::Protocol(format!(
                "{e}: the operator's answer is not a sync frame; if it serves TLS, give --sync-ca"
            ))
        }
        other => other,
    }
}

/// The operator's id and the session's protocol.
async fn welcome(conn: &mut Conn) -> Result<(String, u32), SessionError> {
    let frame = timeout(DEAD_AFTER, conn.next())
        .await
        .map_err(|_| SessionError::Silent)?;
    match read(frame)? {
        ToDataplane::Welcome {
            operator_id,
            protocol,
        } => Ok((operator_id, protocol)),
        ToDataplane::Refused { reason } => Err(SessionError::Refused(reason)),
        _ => Err(SessionError::Protocol(
            "expected welcome or refused first".into(),
        )),
    }
}

async fn serve(
    conn: &mut Conn,
    runtime: &Arc<Runtime>,
    mut agents: Option<watch::Receiver<Vec<TunnelAgents>>>,
) -> Result<Infallible, SessionError> {
    let mut last_rx = Instant::now();
    let mut last_tx = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    if let Some(rx) = &mut agents {
        let tunnels = rx.borrow_and_update().clone();
        send(conn, &ToOperator::Agents { tunnels }).await?;
    }
    loop {
        let agents_changed = async {
            match &mut agents {
                Some(rx) => rx.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            open = agents_changed => {
                let Some(rx) = agents.as_mut().filter(|_| open) else {
                    agents = None;
                    continue;
                };
                let tunnels = rx.borrow_and_update().clone();
                send(conn, &ToOperator::Agents { tunnels }).await?;
                last_tx = Instant::now();
            }
            frame = conn.next() => {
                let msg = read(frame)?;
                last_rx = Instant::now();
                if let Some(reply) = handle(msg, runtime).await? {
                    send(conn, &reply).await?;
                    last_tx = Instant::now();
                }
            }
            _ = tick.tick() => {
                if last_rx.elapsed() > DEAD_AFTER {
                    return Err(SessionError::Silent);
                }
                if last_tx.elapsed() >= PING_EVERY {
                    send(conn, &ToOperator::Ping).await?;
                    last_tx = Instant::now();
                }
            }
        }
    }
}

/// The reply to one message, if any.
async fn handle(
    msg: ToDataplane,
    runtime: &Arc<Runtime>,
) -> Result<Option<ToOperator>, SessionError> {
    match msg {
        ToDataplane::Ping => Ok(Some(ToOperator::Pong)),
        ToDataplane::Pong | ToDataplane::Welcome { .. } => Ok(None),
        ToDataplane::Refused { reason } => Err(SessionError::Refused(reason)),
        ToDataplane::Snapshot {
            schema,
            version,
            body,
        } => {
            // Hashing and validating a large snapshot is CPU work: keep it
            // off the async workers.
            let rt = runtime.clone();
            let v = version.clone();
            let reply = tokio::task::spawn_blocking(move || apply_frame(&rt, schema, v, &body))
                .await
                .unwrap_or_else(|e| ToOperator::Nack {
                    version,
                    reason: format!("the data plane failed while applying: {e}"),
                });
            Ok(Some(reply))
        }
    }
}

/// Decodes, validates and applies one snapshot frame: an ack, or a nack
/// with the reason (the last good snapshot keeps serving).
pub(crate) fn apply_frame(
    runtime: &Runtime,
    schema: u32,
    version: String,
    body: &RawValue,
) -> ToOperator {
    let started = std::time::Instant::now();
    let snapshot = match decode_snapshot(schema, body) {
        Ok(s) if s.version == version => s,
        Ok(s) => {
            let reason = format!(
                "frame version {version} differs from the body's {}",
                s.version
            );
            return nack(runtime, version, reason, true);
        }
        Err(e) => return nack(runtime, version, e.to_string(), true),
    };
    let decoded = started.elapsed();
    let outcome = runtime.apply_decoded(snapshot);
    tracing::debug!(
        %version,
        decode_ms = decoded.as_secs_f64() * 1000.0,
        apply_ms = (started.elapsed() - decoded).as_secs_f64() * 1000.0,
        "snapshot frame handled"
    );
    match outcome {
        Ok(Outcome::Swapped) => {
            tracing::info!(%version, "applied snapshot");
            ToOperator::Ack { version }
        }
        Ok(Outcome::Unchanged) => {
            tracing::debug!(%version, "snapshot already in service");
            ToOperator::Ack { version }
        }
        // `apply` has recorded the refusal.
        Err(e) => nack(runtime, version, e.to_string(), false),
    }
}

fn nack(runtime: &Runtime, version: String, reason: String, record: bool) -> ToOperator {
    tracing::warn!(%version, %reason, serving = ?runtime.version(), "refused snapshot");
    if record {
        runtime.refuse(Some(version.clone()), None, reason.clone());
    }
    ToOperator::Nack { version, reason }
}

pub(crate) fn read(
    frame: Option<Result<bytes::BytesMut, std::io::Error>>,
) -> Result<ToDataplane, SessionError> {
    let frame = frame
        .ok_or(SessionError::Closed)?
        .map_err(SessionError::Io)?;
    decode(&frame).map_err(|e| SessionError::Protocol(format!("undecodable message: {e}")))
}

async fn send(conn: &mut Conn, msg: &ToOperator) -> Result<(), SessionError> {
    let bytes = encode(msg).map_err(|e| SessionError::Protocol(e.to_string()))?;
    conn.send(Bytes::from(bytes))
        .await
        .map_err(SessionError::Io)
}
