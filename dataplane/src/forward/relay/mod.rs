//! Moving bytes both ways between a client and an upstream stream, until
//! both sides are done, the user is cut, the tunnel idles out or the
//! process shuts down; and the one log line and the metrics each tunnel
//! leaves behind.
//!
//! Two plain TCP sockets (the common case: a CONNECT or SOCKS5 client and a
//! direct, SOCKS5 or HTTP upstream) are joined with splice(2) on Linux
//! (`splice.rs`): the bytes never enter user space. Anything else (TLS to an
//! upstream) is copied through a buffer that starts small and grows under
//! load, so idle tunnels stay cheap either way.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::metrics::ForwardMetrics;
use super::upstream::Stream;
use crate::net::{Metered, Tally};

#[cfg(target_os = "linux")]
mod splice;

/// The first read buffer of each direction: small, so that idle tunnels
/// stay cheap; it doubles whenever a read fills it, up to [`MAX_CHUNK`].
const FIRST_CHUNK: usize = 2 * 1024;
const MAX_CHUNK: usize = 64 * 1024;

/// How a tunnel ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Both sides closed.
    Closed,
    /// The user's revision changed or the user was removed.
    Cut,
    /// No byte either way for the idle timeout.
    Idle,
    Shutdown,
    /// A read or write failed (often a reset by either side).
    Failed(String),
}

impl Outcome {
    pub fn as_str(&self) -> &str {
        match self {
            Outcome::Closed => "closed",
            Outcome::Cut => "cut",
            Outcome::Idle => "idle",
            Outcome::Shutdown => "shutdown",
            Outcome::Failed(_) => "failed",
        }
    }
}

/// Bytes counted on one tunnel, shared with the code that moves them.
#[derive(Default)]
pub struct Bytes {
    pub up: AtomicU64,
    pub down: AtomicU64,
}

/// Who a tunnel belongs to and where it goes: what its log line says.
pub struct Record {
    /// `connect`, `http` or `socks5`.
    pub inbound: &'static str,
    /// The client's address, for the request log.
    pub client: std::net::SocketAddr,
    pub user: String,
    pub destination: String,
    pub upstream: String,
    pub started: Instant,
    /// The absolute-form request's method and path (`http` only).
    pub request: Option<(String, String)>,
    /// The status the client got: 200 for a tunnel, the upstream's for an
    /// absolute-form request (0 until it answers).
    pub status: Arc<std::sync::atomic::AtomicU16>,
}

/// What a splice watches besides the two streams.
pub struct Watch<'a> {
    pub idle: Duration,
    pub cut: &'a CancellationToken,
    pub shutdown: &'a CancellationToken,
}

/// Moves bytes both ways until done; counts into `bytes` and the user's
/// counters. Two plain TCP sockets are spliced in the kernel (Linux); any
/// other pair is copied through a small, growing buffer.
pub async fn relay(
    client: Stream,
    upstream: Stream,
    watch: Watch<'_>,
    bytes: &Bytes,
    metrics: &ForwardMetrics,
    user: &str,
) -> Outcome {
    let labels = ForwardMetrics::user(user);
    let up_metric = metrics.bytes_up.get_or_create(&labels).clone();
    let down_metric = metrics.bytes_down.get_or_create(&labels).clone();
    match (client, upstream) {
        #[cfg(target_os = "linux")]
        (Stream::Tcp(client), Stream::Tcp(upstream)) => {
            let (client_early, client) = client.into_parts();
            let (upstream_early, upstream) = upstream.into_parts();
            let up = splice::pump(&client, &upstream, client_early, &bytes.up, &up_metric);
            let down = splice::pump(
                &upstream,
                &client,
                upstream_early,
                &bytes.down,
                &down_metric,
            );
            drive(up, down, watch, bytes).await
        }
        (client, upstream) => {
            let (cr, cw) = tokio::io::split(client);
            let (ur, uw) = tokio::io::split(upstream);
            let up = pump(cr, uw, &bytes.up, &up_metric);
            let down = pump(ur, cw, &bytes.down, &down_metric);
            drive(up, down, watch, bytes).await
        }
    }
}

/// Runs both directions until both are done, one fails, the user is cut,
/// the process shuts down or nothing moves for the idle timeout.
async fn drive(
    up: impl Future<Output = io::Result<()>>,
    down: impl Future<Output = io::Result<()>>,
    watch: Watch<'_>,
    bytes: &Bytes,
) -> Outcome {
    tokio::pin!(up, down);
    let (mut up_done, mut down_done) = (false, false);
    let mut tick = tokio::time::interval(
        (watch.idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(5)),
    );
    let (mut seen, mut last_activity) = (0u64, Instant::now());
    loop {
        tokio::select! {
            r = &mut up, if !up_done => match r {
                Ok(()) => up_done = true,
                Err(e) => return Outcome::Failed(super::upstream::io_reason(&e)),
            },
            r = &mut down, if !down_done => match r {
                Ok(()) => down_done = true,
                Err(e) => return Outcome::Failed(super::upstream::io_reason(&e)),
            },
            () = watch.cut.cancelled() => return Outcome::Cut,
            () = watch.shutdown.cancelled() => return Outcome::Shutdown,
            _ = tick.tick() => {
                let total = bytes.up.load(Relaxed) + bytes.down.load(Relaxed);
                if total != seen {
                    (seen, last_activity) = (total, Instant::now());
                } else if last_activity.elapsed() >= watch.idle {
                    return Outcome::Idle;
                }
            }
        }
        if up_done && down_done {
            return Outcome::Closed;
        }
    }
}

/// One direction: read, write, count; at end of stream, half-close the writer.
async fn pump<R, W>(mut r: R, mut w: W, count: &AtomicU64, metric: &Counter) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; FIRST_CHUNK];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            // The peer may already be gone; the other direction decides.
            let _ = w.shutdown().await;
            return Ok(());
        }
        w.write_all(&buf[..n]).await?;
        w.flush().await?;
        count.fetch_add(n as u64, Relaxed);
        metric.inc_by(n as u64);
        if n == buf.len() && buf.len() < MAX_CHUNK {
            // Bulk traffic: larger reads, fewer wake-ups.
            buf = vec![0u8; buf.len() * 2];
        }
    }
}

/// Logs the tunnel's one line and settles its metrics.
pub fn finish(record: &Record, outcome: &Outcome, bytes: &Bytes, metrics: &ForwardMetrics) {
    let (up, down) = (bytes.up.load(Relaxed), bytes.down.load(Relaxed));
    if *outcome == Outcome::Cut {
        metrics
            .cuts
            .get_or_create(&ForwardMetrics::user(&record.user))
            .inc();
    }
    let error = match outcome {
        Outcome::Failed(e) => e.as_str(),
        _ => "",
    };
    tracing::info!(
        target: "postern::forward::relay",
        inbound = record.inbound,
        user = %record.user,
        destination = %record.destination,
        upstream = %record.upstream,
        bytes_up = up,
        bytes_down = down,
        duration_ms = u64::try_from(record.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        outcome = outcome.as_str(),
        error,
        "tunnel closed"
    );
}

/// What a plain-HTTP exchange's stream reports (hyper owns the copying):
/// read is down, written is up, into the tunnel's and the user's counters.
pub struct UserTally {
    bytes: Arc<Bytes>,
    up: Counter,
    down: Counter,
}

/// `inner`, counting what passes into `bytes` and `user`'s byte counters.
pub fn counted<S>(
    inner: S,
    bytes: Arc<Bytes>,
    metrics: &ForwardMetrics,
    user: &str,
) -> Metered<S, UserTally> {
    let labels = ForwardMetrics::user(user);
    let tally = UserTally {
        bytes,
        up: metrics.bytes_up.get_or_create(&labels).clone(),
        down: metrics.bytes_down.get_or_create(&labels).clone(),
    };
    Metered::new(inner, tally)
}

impl Tally for UserTally {
    fn read(&self, n: u64) {
        self.bytes.down.fetch_add(n, Relaxed);
        self.down.inc_by(n);
    }

    fn wrote(&self, n: u64) {
        self.bytes.up.fetch_add(n, Relaxed);
        self.up.inc_by(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch<'a>(
        idle: Duration,
        cut: &'a CancellationToken,
        shutdown: &'a CancellationToken,
    ) -> Watch<'a> {
        Watch {
            idle,
            cut,
            shutdown,
        }
    }

    #[tokio::test]
    async fn copies_both_ways_and_counts() {
        let (client, mut client_peer) = tokio::io::duplex(64);
        let (upstream, mut upstream_peer) = tokio::io::duplex(64);
        let (cut, stop) = (CancellationToken::new(), CancellationToken::new());
        let bytes = Bytes::default();
        let metrics = ForwardMetrics::default();
        let peers = async {
            client_peer.write_all(b"hello").await.expect("write");
            let mut got = [0u8; 5];
            upstream_peer.read_exact(&mut got).await.expect("read");
            assert_eq!(&got, b"hello");
            upstream_peer.write_all(b"world!").await.expect("write");
            client_peer.read_exact(&mut [0u8; 6]).await.expect("read");
            drop(client_peer);
            drop(upstream_peer);
        };
        let (outcome, ()) = tokio::join!(
            relay(
                Stream::other(client),
                Stream::other(upstream),
                watch(Duration::from_secs(5), &cut, &stop),
                &bytes,
                &metrics,
                "alice"
            ),
            peers
        );
        assert!(
            matches!(outcome, Outcome::Closed | Outcome::Failed(_)),
            "{outcome:?}"
        );
        assert_eq!((bytes.up.load(Relaxed), bytes.down.load(Relaxed)), (5, 6));
        assert_eq!(
            metrics
                .bytes_up
                .get_or_create(&ForwardMetrics::user("alice"))
                .get(),
            5
        );
    }

    #[tokio::test]
    async fn a_cut_or_idleness_ends_it() {
        let (client, _c) = tokio::io::duplex(64);
        let (upstream, _u) = tokio::io::duplex(64);
        let (cut, stop) = (CancellationToken::new(), CancellationToken::new());
        cut.cancel();
        let m = ForwardMetrics::default();
        let outcome = relay(
            Stream::other(client),
            Stream::other(upstream),
            watch(Duration::from_secs(5), &cut, &stop),
            &Bytes::default(),
            &m,
            "a",
        )
        .await;
        assert_eq!(outcome, Outcome::Cut);

        let (client, _c) = tokio::io::duplex(64);
        let (upstream, _u) = tokio::io::duplex(64);
        let cut = CancellationToken::new();
        let started = Instant::now();
        let outcome = relay(
            Stream::other(client),
            Stream::other(upstream),
            watch(Duration::from_millis(200), &cut, &stop),
            &Bytes::default(),
            &m,
            "a",
        )
        .await;
        assert_eq!(outcome, Outcome::Idle);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    async fn tcp_pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (a, b) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        (a.expect("connect"), b.expect("accept").0)
    }

    #[tokio::test]
    async fn sockets_carry_early_bytes_bulk_and_half_closes() {
        use super::super::upstream::Prefixed;
        let (mut client_peer, client) = tcp_pair().await;
        let (upstream, mut upstream_peer) = tcp_pair().await;
        let client = Stream::Tcp(Prefixed::new(b"early".to_vec(), client));
        let upstream = Stream::Tcp(Prefixed::new(b"banner".to_vec(), upstream));
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let (cut, stop) = (CancellationToken::new(), CancellationToken::new());
        let bytes = Bytes::default();
        let metrics = ForwardMetrics::default();
        let client_side = async {
            let mut banner = [0u8; 6];
            client_peer.read_exact(&mut banner).await.expect("banner");
            assert_eq!(&banner, b"banner");
            client_peer.write_all(&payload).await.expect("payload");
            client_peer.shutdown().await.expect("half-close");
            let mut rest = Vec::new();
            client_peer
                .read_to_end(&mut rest)
                .await
                .expect("read to end");
            assert_eq!(rest, b"bye");
        };
        let upstream_side = async {
            let mut got = Vec::new();
            upstream_peer
                .read_to_end(&mut got)
                .await
                .expect("read until the half-close");
            assert_eq!(&got[..5], b"early");
            assert!(got[5..] == payload[..], "payload intact");
            upstream_peer.write_all(b"bye").await.expect("bye");
            drop(upstream_peer);
        };
        let (outcome, (), ()) = tokio::join!(
            relay(
                client,
                upstream,
                watch(Duration::from_secs(5), &cut, &stop),
                &bytes,
                &metrics,
                "a"
            ),
            client_side,
            upstream_side
        );
        assert_eq!(outcome, Outcome::Closed);
        assert_eq!(bytes.up.load(Relaxed), 5 + 300_000);
        assert_eq!(bytes.down.load(Relaxed), 6 + 3);
    }
}
