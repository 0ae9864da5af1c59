//! HTTP/1.1 backend connections driven by the task of the request that
//! uses them.
//!
//! hyper-util's pooled client gives every backend connection a task of its
//! own and talks to it over a channel: each request wakes that task, and its
//! response wakes the client's task again, two task wake-ups per request on
//! top of the socket's. Here the task serving the client polls the backend
//! connection itself, while it waits for the response head and then while
//! the response body streams ([`Driven`]); between requests a connection
//! waits in a list that nobody polls, and the next request that takes it
//! first asks it whether the backend closed it meanwhile. A connection is
//! reused only on the serving thread that made it ([`Cores`]).
//!
//! For HTTP/1.1 backends without a PROXY header, and requests that do not
//! ask for an upgrade: an HTTP/2 or upgraded connection outlives the request
//! that opened it, so those keep hyper-util's client.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use http::{Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tower_service::Service;

use super::ProxyBody;
use super::connector::{BackendStream, ConnectError, Connector};
use crate::net::Cores;

type Conn = http1::Connection<TokioIo<BackendStream>, ProxyBody>;
type Sender = http1::SendRequest<ProxyBody>;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be made: nothing reached the backend.
    #[error("connect: {0}")]
    Connect(ConnectError),
    /// The connection failed while the request or the response head was on it.
    #[error("{0}")]
    Http(hyper::Error),
}

/// Idle keep-alive connections to one backend.
pub struct InlinePool {
    connector: Connector,
    /// `scheme://authority` of the backend, what the connector dials.
    target: Uri,
    idle_for: Duration,
    /// Oldest first; requests take the newest (the warmest).
    idle: Mutex<Vec<Idle>>,
    /// Whether a sweeper task is watching `idle`.
    sweeping: AtomicBool,
}

struct Idle {
    send: Sender,
    conn: Conn,
    since: Instant,
    /// The serving thread whose poller the socket is registered with: used
    /// from another, its every wake-up would cross threads.
    home: usize,
}

impl InlinePool {
    pub fn new(connector: Connector, target: Uri, idle_for: Duration) -> Arc<InlinePool> {
        Arc::new(InlinePool {
            connector,
            target,
            idle_for,
            idle: Mutex::new(Vec::new()),
            sweeping: AtomicBool::new(false),
        })
    }

    /// Sends `request` on an idle connection or a new one. A pooled
    /// connection the backend closed while it waited gives the request
    /// back unsent, and the next one is tried; a failed connect is tried
    /// once more when `retry_connect` (the request may be sent twice).
    pub async fn send(
        self: &Arc<Self>,
        mut request: Request<ProxyBody>,
        retry_connect: bool,
    ) -> Result<Response<ProxyBody>, SendError> {
        origin_form(request.uri_mut());
        let mut connects = 0;
        loop {
            let (mut send, mut conn, reused) = match self.checkout().await {
                Some((send, conn)) => (send, conn, true),
                None => match self.connect().await {
                    Ok((send, conn)) => (send, conn, false),
                    Err(SendError::Connect(e)) if retry_connect && connects == 0 => {
                        connects += 1;
                        tracing::debug!(backend = %self.target, error = %e, "retrying once after a failed connect");
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            let mut sending = std::pin::pin!(send.try_send_request(request));
            // The connection writes the request and reads the head only
            // while polled: poll it here until the head is in.
            let head = poll_fn(|cx| {
                if let Poll::Ready(head) = sending.poll_unpin(cx) {
                    return Poll::Ready(Some(head));
                }
                if conn.poll_unpin(cx).is_ready() {
                    return Poll::Ready(None);
                }
                // Reading may have completed the head just now.
                sending.poll_unpin(cx).map(Some)
            })
            .await;
            let (head, conn) = match head {
                Some(head) => (head, Some(conn)),
                None => {
                    // The connection ended first: dropping it answers the
                    // request (with the response if one was read, else an
                    // error that may give the request back).
                    drop(conn);
                    (sending.as_mut().await, None)
                }
            };
            match head {
                Ok(response) => {
                    let lease = conn.map(|conn| Lease {
                        send,
                        conn,
                        pool: Arc::downgrade(self),
                    });
                    return Ok(response.map(|body| {
                        Driven {
                            body,
                            lease,
                            ended: false,
                        }
                        .map_err(Into::into)
                        .boxed_unsync()
                    }));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(SendError::Http(e.into_error())),
                },
            }
        }
    }

    async fn connect(&self) -> Result<(Sender, Conn), SendError> {
        let io = self
            .connector
            .clone()
            .call(self.target.clone())
            .await
            .map_err(SendError::Connect)?;
        http1::Builder::new()
            .handshake(io)
            .await
            .map_err(SendError::Http)
    }

    /// The newest idle connection made on this serving thread, still open
    /// and ready for a request.
    async fn checkout(&self) -> Option<(Sender, Conn)> {
        let home = Cores::home();
        loop {
            let Idle {
                mut send, mut conn, ..
            } = {
                let mut idle = self.lock();
                let newest = idle.iter().rposition(|i| i.home == home)?;
                if idle[newest].since.elapsed() >= self.idle_for {
                    // Everything older is past its time too.
                    idle.drain(..=newest);
                    return None;
                }
                idle.remove(newest)
            };
            // Polled here, so this task is the one woken from now on; it
            // notices a close the backend sent while nobody was polling.
            let usable = poll_fn(|cx| {
                if conn.poll_unpin(cx).is_ready() {
                    return Poll::Ready(false);
                }
                Poll::Ready(matches!(send.poll_ready(cx), Poll::Ready(Ok(()))))
            })
            .await;
            if usable {
                return Some((send, conn));
            }
        }
    }

    fn checkin(self: &Arc<Self>, send: Sender, conn: Conn) {
        let now = Instant::now();
        {
            let mut idle = self.lock();
            let expired = idle
                .iter()
                .take_while(|i| now.duration_since(i.since) >= self.idle_for)
                .count();
            idle.drain(..expired);
            idle.push(Idle {
                send,
                conn,
                since: now,
                home: Cores::home(),
            });
        }
        self.sweep_later();
    }

    /// Makes sure a task closes connections that stay idle past their
    /// time, or that the backend closes, when no request comes to notice.
    fn sweep_later(self: &Arc<Self>) {
        if self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        // A body dropped outside the runtime (its shutdown) has no one to
        // sweep for: the connections close with the pool.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.sweeping.store(false, Ordering::Release);
            return;
        };
        let every = (self.idle_for / 2).max(Duration::from_secs(1));
        runtime.spawn(sweeper(Arc::downgrade(self), every));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// HTTP/1.1 requests to a server carry the path alone (RFC 9112 §3.2.1);
/// the absolute form is for proxies. hyper's connection writes what it is
/// given.
fn origin_form(uri: &mut Uri) {
    let path = match uri.path_and_query() {
        Some(path) if uri.scheme().is_some() || uri.authority().is_some() => path.clone(),
        Some(_) => return,
        None => http::uri::PathAndQuery::from_static("/"),
    };
    *uri = Uri::from(path);
}

async fn sweeper(pool: Weak<InlinePool>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let now = Instant::now();
        // Polled with a waker that does nothing: only to learn whether the
        // backend closed it (a request polls it again with its own).
        let mut cx = Context::from_waker(Waker::noop());
        let mut idle = pool.lock();
        idle.retain_mut(|i| {
            now.duration_since(i.since) < pool.idle_for && i.conn.poll_unpin(&mut cx).is_pending()
        });
        if idle.is_empty() {
            // Set under the list's lock, so a checkin either sees it cleared
            // or put its connection in before this looked.
            pool.sweeping.store(false, Ordering::Release);
            return;
        }
    }
}

/// A connection lent to one response, returned when its body ends.
struct Lease {
    send: Sender,
    conn: Conn,
    pool: Weak<InlinePool>,
}

/// A response body that drives its connection: hyper's connection reads
/// the body off the socket only while polled, and nobody else polls it.
struct Driven {
    body: Incoming,
    lease: Option<Lease>,
    ended: bool,
}

impl Body for Driven {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(lease) = &mut this.lease
            && lease.conn.poll_unpin(cx).is_ready()
        {
            // Closed (as the response asked, or broken): what it read is
            // in the body's channel, the rest ends in an error there.
            this.lease = None;
        }
        let frame = ready!(Pin::new(&mut this.body).poll_frame(cx));
        match &frame {
            None => this.ended = true,
            Some(Err(_)) => this.lease = None,
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Driven {
    fn drop(&mut self) {
        // A body dropped before its end leaves the connection mid-response:
        // it closes with the lease. One that ended goes back to the pool
        // (the next request finishes the connection's bookkeeping).
        if !(self.ended || self.body.is_end_stream()) {
            return;
        }
        if let Some(Lease { send, conn, pool }) = self.lease.take()
            && let Some(pool) = pool.upgrade()
        {
            pool.checkin(send, conn);
        }
    }
}
