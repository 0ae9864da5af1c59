//! Serving one client connection: which protocol it speaks, then HTTP/1.1
//! in busy spells with the connection parked between them, or HTTP/2.
//!
//! A hyper HTTP/1.1 connection keeps its read and write buffers (8 KiB
//! each) and its request future's box for as long as it lives, so 10,000
//! idle keep-alive clients would hold hundreds of megabytes doing nothing.
//! Here a hyper connection lives only for a busy spell: once no request was
//! in flight for [`PARK_AFTER`], it is asked to stop between requests, its
//! stream (and any bytes it read past the last request) is taken back, and
//! the connection waits for the client's next byte holding no buffer at
//! all. The next byte starts the next spell. Clients that keep sending stay
//! in one spell, so busy connections pay nothing for this.
//!
//! hyper hands over an upgraded stream only when it owns the connection to
//! the end, which a spell does not; the 101 goes through
//! [`upgrade::Handoff`] instead.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::{Service, service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::sync::CancellationToken;

use super::idle::Activity;
use super::listener::{GRACE, Timeouts};
use super::upgrade::{ClientUpgrade, Handoff};
use super::{ConnInfo, ProxyBody, Shared, handler};
use crate::net::Prefixed;

/// How long an HTTP/1.1 connection stays in hyper's hands with nothing in
/// flight before it is parked: long enough that a client sending request
/// after request stays in one spell, short enough that a crowd of clients
/// arriving together is not all held at full size at once (the allocator
/// keeps that high-water mark). 10 ms rather than 50: a crowd opening
/// connections 200 at a time left 1.9–2.6 KiB per idle connection instead
/// of 3.6–3.9, and a client pausing 20 ms between requests, parked after
/// each one, cost no more CPU per request than one kept in its spell.
pub const PARK_AFTER: Duration = Duration::from_millis(10);
/// How an HTTP/2 client opens (RFC 9113 §3.4); anything else is HTTP/1.x.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The most a parked connection reads before hyper takes over: a typical
/// request head, so hyper rarely reads again for it.
const FIRST_READ: usize = 2048;
/// How long closing a connection may take to flush its last bytes.
const CLOSE_FLUSH: Duration = Duration::from_secs(5);
/// How often an HTTP/2 client is pinged while streams are open, and how
/// long its answer may take: a dead peer is noticed within both.
const H2_PING_EVERY: Duration = Duration::from_secs(20);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// A connection's first bytes: HTTP/2 is served here to its end (`None`);
/// HTTP/1.x comes back with what was read, for [`h1`]. `None` too when the
/// client sends nothing in time or the process is stopping.
pub async fn start<I>(
    mut io: Prefixed<I>,
    conn: &Arc<ConnInfo>,
    shared: &Arc<Shared>,
    shutdown: &CancellationToken,
) -> Option<Prefixed<I>>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let first = tokio::select! {
        read = first_bytes(&mut io) => read,
        () = tokio::time::sleep(shared.timeouts.header) => return None,
        () = shutdown.cancelled() => return None,
    };
    match first {
        Ok(first) if !first.is_empty() => io.refill(first),
        _ => return None,
    }
    if io.buffered().starts_with(PREFACE) {
        // Boxed: an HTTP/2 connection's state is large, and a parked
        // HTTP/1.1 connection's task should not carry room for it.
        Box::pin(serve_h2(io, conn.clone(), shared.clone(), shutdown.clone())).await;
        return None;
    }
    Some(io)
}

/// Reads the client's first bytes: as many as one read gives, and enough
/// to tell an HTTP/2 preface from HTTP/1.x. Empty at end of stream.
async fn first_bytes<I: AsyncRead + Unpin>(io: &mut I) -> io::Result<Vec<u8>> {
    let mut got = Vec::new();
    loop {
        let more = NextBytes { io: &mut *io }.await?;
        if more.is_empty() {
            return Ok(got);
        }
        got.extend_from_slice(&more);
        let n = got.len().min(PREFACE.len());
        if n == PREFACE.len() || got[..n] != PREFACE[..n] {
            return Ok(got);
        }
    }
}

/// One read of whatever the client sends next, into a buffer that exists
/// only while the read is being tried: a parked connection, whose reads
/// are pending, holds none.
struct NextBytes<'a, I> {
    io: &'a mut I,
}

impl<I: AsyncRead + Unpin> Future for NextBytes<'_, I> {
    type Output = io::Result<Vec<u8>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut buf = vec![0u8; FIRST_READ];
        let mut read = ReadBuf::new(&mut buf);
        match Pin::new(&mut *self.io).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) => {
                let n = read.filled().len();
                buf.truncate(n);
                buf.shrink_to_fit();
                Poll::Ready(Ok(buf))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Why a spell stopped while hyper still had the connection.
enum Stop {
    /// Nothing in flight for [`PARK_AFTER`]: take the stream back.
    Park,
    /// A deadline passed or the process is stopping: end the connection.
    Close,
}

/// Serves HTTP/1.1 on `io` (which starts with the bytes [`start`] read) in
/// spells, parked between them, until the client leaves, a deadline passes
/// or `shutdown`. This loop is all a parked connection's task holds.
///
/// An `async` block rather than an `async fn`: the block uses its captures
/// in place, where an `async fn` would keep each argument twice (the
/// argument and the local it becomes) for the connection's whole life.
#[allow(clippy::manual_async_fn)] // deliberately a block: see above
pub fn h1<I>(
    mut io: Prefixed<I>,
    conn: Arc<ConnInfo>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async move {
        loop {
            let idle = shared.timeouts.idle;
            let park_after = PARK_AFTER.min(idle);
            // Boxed: a spell's state exists only while it runs, so a parked
            // connection's task holds none of it.
            match Box::pin(spell(io, park_after, &conn, &shared, &shutdown)).await {
                Some(next) => io = next,
                None => return,
            }
            if !parked(&mut io, idle - park_after, &shutdown).await {
                let _ = tokio::time::timeout(CLOSE_FLUSH, io.shutdown()).await;
                return;
            }
        }
    }
}

/// Serves requests on `io` until nothing was in flight for `park_after`,
/// then gives the stream back (with any bytes hyper read past the last
/// request); `None` when the connection is over (closed, upgraded, or ended
/// by a deadline or shutdown).
async fn spell<I>(
    io: Prefixed<I>,
    park_after: Duration,
    conn: &Arc<ConnInfo>,
    shared: &Arc<Shared>,
    shutdown: &CancellationToken,
) -> Option<Prefixed<I>>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let timeouts = shared.timeouts;
    let activity = Arc::new(Activity::new());
    let handoff = Handoff::default();
    let service = service(&activity, &handoff, conn, shared);
    let mut spell = Box::new(h1_builder(timeouts).serve_connection(TokioIo::new(io), service));
    let stop = tokio::select! {
        ended = WithoutShutdown(&mut spell) => Err(ended),
        () = activity.idle(timeouts.header, park_after) => {
            // Never started: the head did not arrive in time.
            Ok(if activity.started() { Stop::Park } else { Stop::Close })
        }
        () = shutdown.cancelled() => Ok(Stop::Close),
    };
    let parking = matches!(stop, Ok(Stop::Park));
    let ended = match stop {
        // hyper ended it: the client closed or asked to, or upgraded.
        Err(ended) => ended,
        Ok(stop) => {
            // Between requests this stops at once; a response still being
            // flushed finishes first.
            Pin::new(&mut *spell).graceful_shutdown();
            let bound = match stop {
                Stop::Park => CLOSE_FLUSH,
                Stop::Close => GRACE,
            };
            match tokio::time::timeout(bound, WithoutShutdown(&mut spell)).await {
                Ok(ended) if matches!(stop, Stop::Park) => ended,
                _ => return None,
            }
        }
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "client connection ended with an error");
        return None;
    }
    // Taken apart in one statement: `read_buf` shares hyper's whole read
    // buffer and the service holds the spell's state, and neither may live
    // on while the connection is parked.
    let mut io = {
        let http1::Parts { io, read_buf, .. } = spell.into_parts();
        let (mut unread, stream) = io.into_inner().into_parts();
        unread.extend_from_slice(&read_buf);
        Prefixed::new(unread, stream)
    };
    if let Some(waiting) = handoff.pending() {
        let _ = waiting.send(Box::new(io));
        return None;
    }
    if !parking {
        // Not parked: close as hyper would have.
        let _ = tokio::time::timeout(CLOSE_FLUSH, io.shutdown()).await;
        return None;
    }
    Some(io)
}

/// Waits, holding no buffer, for the client's next request to start; false
/// when the connection should close instead (end of stream, an error, the
/// idle deadline or shutdown).
#[allow(clippy::manual_async_fn)] // deliberately a block: see [`h1`]
fn parked<'a, I: AsyncRead + Unpin>(
    io: &'a mut Prefixed<I>,
    idle: Duration,
    shutdown: &'a CancellationToken,
) -> impl Future<Output = bool> + 'a {
    // A block for the same reason as [`h1`]'s: it lives as long as the park.
    async move {
        if !io.buffered().is_empty() {
            return true;
        }
        let read = tokio::select! {
            read = NextBytes { io: &mut *io } => read,
            () = tokio::time::sleep(idle) => return false,
            () = shutdown.cancelled() => return false,
        };
        match read {
            Ok(next) if !next.is_empty() => {
                io.refill(next);
                true
            }
            _ => false,
        }
    }
}

/// What a spell's service answers with: boxed, so the service's future is
/// `Unpin` as taking a spell's stream back requires.
type Answer = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

/// The request service of one spell: its requests count as `activity`
/// until their response bodies end, and a request offered an upgrade
/// leaves its half of the handover with `handoff` when answered with 101.
fn service(
    activity: &Arc<Activity>,
    handoff: &Handoff,
    conn: &Arc<ConnInfo>,
    shared: &Arc<Shared>,
) -> impl Service<Request<Incoming>, Response = Response<ProxyBody>, Error = Infallible, Future = Answer>
+ Clone
+ Send
+ Unpin
+ 'static {
    let (activity, handoff, conn, shared) = (
        activity.clone(),
        handoff.clone(),
        conn.clone(),
        shared.clone(),
    );
    service_fn(move |mut req| {
        // In flight until the response body ends: a long download or an
        // event stream is never idle.
        let busy = activity.begin();
        let offered = ClientUpgrade::offer(&mut req);
        let handoff = handoff.clone();
        let answer = handler::handle(req, conn.clone(), shared.clone());
        Box::pin(async move {
            let response = answer.await?;
            if let Some(offered) = offered {
                handoff.answered(offered, &response);
            }
            Ok(response.map(|body| {
                body.map_frame(move |frame| {
                    let _ = &busy;
                    frame
                })
                .boxed_unsync()
            }))
        }) as Answer
    })
}

fn h1_builder(timeouts: Timeouts) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header);
    builder
}

async fn serve_h2<I>(
    io: Prefixed<I>,
    conn: Arc<ConnInfo>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let timeouts = shared.timeouts;
    let activity = Arc::new(Activity::new());
    let service = service(&activity, &Handoff::default(), &conn, &shared);
    let connection = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_PING_EVERY)
        .keep_alive_timeout(H2_PING_TIMEOUT)
        .serve_connection(TokioIo::new(io), service);
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
    connection.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(GRACE, connection.as_mut()).await;
}

/// Polls a spell to its end without shutting its stream, which the
/// connection takes back.
struct WithoutShutdown<'a, C>(&'a mut Box<C>);

impl<I, S, B> Future for WithoutShutdown<'_, http1::Connection<I, S>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<Incoming, ResBody = B> + Unpin,
    S::Future: Unpin,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Output = hyper::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.poll_without_shutdown(cx)
    }
}
