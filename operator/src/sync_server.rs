//! The push stream: data planes connect, authenticate, and receive every
//! snapshot; their acks and nacks go to the [`Fleet`].
//!
//! One task per connection. A connection never waits on another, and a data
//! plane that stops reading is dropped after `DEAD_AFTER_SECS` rather than
//! holding anything up. With [`SyncTls`] every connection is a TLS session
//! first (the handshake shares the hello's deadline); the framing and the
//! credential check are the same either way. A data plane authenticated by
//! a ServiceAccount token ([`auth`]) is reviewed again every
//! `review_every` and cut when the review fails, which is how one data
//! plane is revoked without touching the others.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use postern_snapshot::SCHEMA;
use postern_snapshot::sync::{
    BASE_CAPABILITIES, DEAD_AFTER_SECS, MAX_FRAME, MAX_HELLO_FRAME, MIN_PROTOCOL, PING_SECS,
    PROTOCOL, ToDataplane, ToOperator, decode, encode, negotiate,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout};
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

use crate::fleet::{Fleet, Nack};
use crate::metrics::Metrics;
use crate::publish::{Latest, Published};
use crate::sync_tls::SyncTls;
use crate::{Error, Result};

pub mod auth;

use auth::{Authenticator, Credential, Identity, Verdict};

/// How long a new connection has to say hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Snapshots sent but not yet acked that a connection remembers; older ones
/// can no longer be credited by a late ack (the next ack covers them).
const IN_FLIGHT: usize = 8;

/// A connection's bytes: plain TCP, or TLS over it.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

type Conn = Framed<Box<dyn Io>, LengthDelimitedCodec>;

/// What every connection shares.
#[derive(Clone)]
pub struct SyncServer {
    /// Checks hellos (the shared token, ServiceAccount tokens or both).
    pub auth: Arc<Authenticator>,
    pub operator_id: String,
    pub latest: Latest,
    pub fleet: Arc<Fleet>,
    pub metrics: Arc<Metrics>,
    /// `None`: plain TCP.
    pub tls: Option<Arc<SyncTls>>,
}

impl SyncServer {
    /// Accepts connections until `shutdown`.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) {
        loop {
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: back off, don't spin.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let server = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                match server.connection(stream, peer, shutdown).await {
                    Ok(()) => {}
                    Err(error @ (Error::Tls(_) | Error::Timeout("in the TLS handshake"))) => {
                        tracing::warn!(%peer, %error, "TLS handshake with a data plane failed");
                    }
                    Err(error) => tracing::info!(%peer, %error, "data plane connection closed"),
                }
            });
        }
    }

    async fn connection(
        self,
        stream: TcpStream,
        peer: SocketAddr,
        shutdown: CancellationToken,
    ) -> Result<()> {
        // Snapshots are small next to the frame limit; no Nagle delay for acks.
        stream.set_nodelay(true)?;
        let stream = self.secure(stream).await?;
        // Small until the token is checked; snapshots need the full size after.
        let codec = LengthDelimitedCodec::builder()
            .max_frame_length(MAX_HELLO_FRAME)
            .new_codec();
        let mut conn = Framed::new(stream, codec);
        let (identity, protocol, capabilities) = match self.hello(&mut conn).await {
            Ok(hello) => hello,
            Err(Error::Protocol(reason)) => {
                tracing::warn!(%peer, %reason, "refused a data plane");
                let refused = ToDataplane::Refused {
                    reason: reason.clone(),
                };
                let _ = timeout(HELLO_TIMEOUT, conn.send(message(&refused)?)).await;
                return Err(Error::Protocol(reason));
            }
            Err(other) => return Err(other),
        };
        conn.codec_mut().set_max_frame_length(MAX_FRAME);
        let welcome = ToDataplane::Welcome {
            operator_id: self.operator_id.clone(),
            protocol,
        };
        send(&mut conn, message(&welcome)?).await?;
        let Identity { id, credential } = identity;
        let conn_no = self.fleet.connect(&id, peer, capabilities);
        self.metrics
            .dataplanes_connected
            .set(gauge(self.fleet.len()));
        tracing::info!(dataplane = %id, %peer, protocol, "data plane connected");
        let result = Session::new(&self, &id, conn_no, credential)
            .run(&mut conn, shutdown)
            .await;
        self.fleet.disconnect(&id, conn_no);
        self.metrics
            .dataplanes_connected
            .set(gauge(self.fleet.len()));
        tracing::info!(dataplane = %id, %peer, "data plane disconnected");
        result
    }

    /// The TLS handshake when configured, with the certificate files as
    /// they are now (a rotated Secret applies from the next connection).
    async fn secure(&self, stream: TcpStream) -> Result<Box<dyn Io>> {
        let Some(tls) = &self.tls else {
            return Ok(Box::new(stream));
        };
        let tls_stream = timeout(HELLO_TIMEOUT, tls.acceptor().accept(stream))
            .await
            .map_err(|_| Error::Timeout("in the TLS handshake"))?
            .map_err(|e| Error::Tls(e.to_string()))?;
        Ok(Box::new(tls_stream))
    }

    /// Reads and checks the hello; returns who the data plane is, the
    /// protocol of the session and the kinds the data plane implements. A
    /// refusal is an `Error::Protocol` whose text goes back to the data plane.
    async fn hello(&self, conn: &mut Conn) -> Result<(Identity, u32, Vec<String>)> {
        let frame = timeout(HELLO_TIMEOUT, conn.next())
            .await
            .map_err(|_| Error::Timeout("waiting for hello"))?
            .ok_or_else(|| Error::Protocol("closed before hello".into()))??;
        let Ok(ToOperator::Hello {
            protocol,
            protocols,
            dataplane_id,
            token,
            schemas,
            capabilities,
            ..
        }) = decode(&frame)
        else {
            return Err(Error::Protocol("expected a hello".into()));
        };
        // The credential first: say nothing more about ourselves to a stranger.
        let identity = self
            .auth
            .authenticate(&token, &dataplane_id)
            .await
            .map_err(Error::Protocol)?;
        let Some(protocol) = negotiate(protocol, &protocols) else {
            return Err(Error::Protocol(format!(
                "no common protocol: data plane speaks {protocol} {protocols:?}, this operator {MIN_PROTOCOL} to {PROTOCOL}"
            )));
        };
        if !schemas.contains(&SCHEMA) {
            return Err(Error::Protocol(format!(
                "no common snapshot schema: data plane reads {schemas:?}, operator writes {SCHEMA}"
            )));
        }
        if dataplane_id.is_empty() || dataplane_id.len() > 253 {
            return Err(Error::Protocol(
                "dataplane id must be 1 to 253 characters".into(),
            ));
        }
        let capabilities =
            capabilities.unwrap_or_else(|| BASE_CAPABILITIES.map(String::from).to_vec());
        Ok((identity, protocol, capabilities))
    }
}

/// One authenticated connection's state.
struct Session<'a> {
    server: &'a SyncServer,
    id: &'a str,
    conn_no: u64,
    /// Sent and not yet acked, oldest first.
    in_flight: VecDeque<Arc<Published>>,
    /// Version of the last snapshot sent, acked or not.
    sent: Option<String>,
    last_heard: Instant,
    /// A ServiceAccount token, reviewed again while the connection lasts.
    credential: Option<Credential>,
}

impl<'a> Session<'a> {
    fn new(
        server: &'a SyncServer,
        id: &'a str,
        conn_no: u64,
        credential: Option<Credential>,
    ) -> Self {
        Session {
            server,
            id,
            conn_no,
            in_flight: VecDeque::new(),
            sent: None,
            last_heard: Instant::now(),
            credential,
        }
    }

    async fn run(&mut self, conn: &mut Conn, shutdown: CancellationToken) -> Result<()> {
        let mut latest = self.server.latest.clone();
        // The full current snapshot at once, even if the data plane says it
        // has this version: its ack is what proves it to the status writer.
        latest.mark_changed();
        let mut ping = tokio::time::interval(Duration::from_secs(PING_SECS));
        let dead_after = Duration::from_secs(DEAD_AFTER_SECS);
        // A shared-token session has nothing to review.
        let mut review = match (&self.credential, self.server.auth.review_every()) {
            (Some(_), Some(every)) => Some(tokio::time::interval_at(Instant::now() + every, every)),
            _ => None,
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                changed = latest.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    let current = latest.borrow_and_update().clone();
                    if let Some(published) = current {
                        self.offer(conn, published).await?;
                    }
                }
                frame = conn.next() => match frame {
                    None => return Ok(()),
                    Some(frame) => self.receive(conn, &frame?).await?,
                },
                _ = ping.tick() => {
                    if self.last_heard.elapsed() > dead_after {
                        return Err(Error::Timeout("waiting for the data plane"));
                    }
                    send(conn, message(&ToDataplane::Ping)?).await?;
                }
                () = tick(&mut review) => self.review(conn).await?,
            }
        }
    }

    /// Reviews the session's ServiceAccount token again; a denial ends the
    /// session with `Refused`. When the API server cannot answer, the
    /// session goes on and the next tick asks again: an API server outage
    /// must not disconnect the whole fleet.
    async fn review(&mut self, conn: &mut Conn) -> Result<()> {
        let Some(credential) = &self.credential else {
            return Ok(());
        };
        match self.server.auth.recheck(credential).await {
            Verdict::Valid(id) if id == self.id => Ok(()),
            Verdict::Valid(id) => {
                self.revoke(conn, format!("the credential now names {id:?}"))
                    .await
            }
            Verdict::Denied(reason) => self.revoke(conn, reason).await,
            Verdict::Unavailable(error) => {
                tracing::warn!(dataplane = self.id, %error, "cannot review the data plane's token; keeping the connection");
                Ok(())
            }
        }
    }

    async fn revoke(&mut self, conn: &mut Conn, reason: String) -> Result<()> {
        tracing::warn!(dataplane = self.id, %reason, "data plane's credential no longer valid; disconnecting it");
        let refused = ToDataplane::Refused {
            reason: reason.clone(),
        };
        let _ = timeout(HELLO_TIMEOUT, conn.send(message(&refused)?)).await;
        Err(Error::Protocol(reason))
    }

    /// Sends a snapshot unless it is the one last sent.
    async fn offer(&mut self, conn: &mut Conn, published: Arc<Published>) -> Result<()> {
        if self.sent.as_ref() == Some(&published.version) {
            return Ok(());
        }
        send_unbuffered(conn, &published.frame).await?;
        self.sent = Some(published.version.clone());
        tracing::debug!(dataplane = self.id, version = %published.version, "sent snapshot");
        if self.in_flight.len() == IN_FLIGHT {
            self.in_flight.pop_front();
        }
        self.in_flight.push_back(published);
        Ok(())
    }

    async fn receive(&mut self, conn: &mut Conn, frame: &[u8]) -> Result<()> {
        self.last_heard = Instant::now();
        let msg: ToOperator =
            decode(frame).map_err(|e| Error::Protocol(format!("unreadable message: {e}")))?;
        match msg {
            ToOperator::Ack { version } => self.ack(&version),
            ToOperator::Nack { version, reason } => self.nack(version, reason),
            ToOperator::Agents { tunnels } => {
                self.server.fleet.agents(self.id, self.conn_no, tunnels);
            }
            ToOperator::Ping => send(conn, message(&ToDataplane::Pong)?).await?,
            ToOperator::Pong => {}
            ToOperator::Hello { .. } => return Err(Error::Protocol("a second hello".into())),
        }
        Ok(())
    }

    fn ack(&mut self, version: &str) {
        self.server.metrics.acks.inc();
        match self.take(version) {
            Some(published) => {
                tracing::debug!(dataplane = self.id, %version, "ack");
                self.server.fleet.acked(self.id, self.conn_no, published);
            }
            None => {
                tracing::debug!(dataplane = self.id, %version, "ack of a snapshot not in flight")
            }
        }
    }

    fn nack(&mut self, version: String, reason: String) {
        self.server.metrics.nacks.inc();
        tracing::warn!(dataplane = self.id, %version, %reason, "data plane rejected a snapshot");
        let _ = self.take(&version);
        let nack = Nack { version, reason };
        self.server.fleet.nacked(self.id, self.conn_no, nack);
    }

    /// Removes `version` and everything sent before it from the in-flight
    /// queue (a data plane applies snapshots in order), returning it.
    fn take(&mut self, version: &str) -> Option<Arc<Published>> {
        let at = self.in_flight.iter().rposition(|p| p.version == version)?;
        let mut taken = self.in_flight.drain(..=at);
        taken.next_back()
    }
}

/// The next tick, or never without an interval.
async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

fn message(msg: &ToDataplane) -> Result<Bytes> {
    Ok(Bytes::from(encode(msg)?))
}

async fn send(conn: &mut Conn, frame: Bytes) -> Result<()> {
    in_time(conn.send(frame)).await
}

/// A send that a live data plane takes within [`DEAD_AFTER_SECS`].
async fn in_time<E>(sending: impl Future<Output = Result<(), E>>) -> Result<()>
where
    Error: From<E>,
{
    timeout(Duration::from_secs(DEAD_AFTER_SECS), sending)
        .await
        .map_err(|_| Error::Timeout("sending to the data plane"))??;
    Ok(())
}

/// Sends a frame as the codec would, but straight to the connection: the
/// codec copies every frame into the connection's write buffer, which then
/// keeps a snapshot-sized allocation per data plane for as long as the
/// connection lives (tens of MiB at 10,000 objects).
async fn send_unbuffered(conn: &mut Conn, frame: &[u8]) -> Result<()> {
    let len = u32::try_from(frame.len())
        .ok()
        .filter(|&n| n as usize <= conn.codec().max_frame_length())
        .ok_or(Error::Protocol(format!(
            "a frame of {} bytes is over the limit",
            frame.len()
        )))?;
    let write = async {
        // Whatever the codec still holds goes first, so frames stay in order.
        SinkExt::<Bytes>::flush(conn).await?;
        let io = conn.get_mut();
        io.write_all(&len.to_be_bytes()).await?;
        io.write_all(frame).await?;
        io.flush().await
    };
    in_time(write).await
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
