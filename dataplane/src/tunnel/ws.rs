//! The WebSocket transport, for networks that let only HTTPS out: the
//! agent opens `wss://HOST/.well-known/postern/tunnel` ([`PATH`]) on the
//! data plane's HTTPS listener (any host it serves), and the WebSocket's
//! binary messages carry exactly the bytes the TLS transport carries (the
//! hello, the welcome, then HTTP/2), so everything after the upgrade is the
//! same session code.
//!
//! On the data plane the path is claimed in the reverse proxy's phase 4
//! like a tunnel's path prefix; the [`Backend`] answers the upgrade from an
//! in-process WebSocket endpoint over a pipe, and the reverse proxy's own
//! upgrade splice joins the client to it. The reverse request path needs
//! nothing new.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures::future::BoxFuture;
use futures::{Sink, Stream};
use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, Uri, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::session::State;
use crate::reverse::{Backend, ProxyBody, ProxyError, boxed_response};

/// Where agents open the WebSocket transport, on every host.
pub const PATH: &str = "/.well-known/postern/tunnel";
/// The largest message either side accepts (writes are cut to [`CHUNK`]).
const MAX_MESSAGE: usize = 1024 * 1024;
/// The most bytes one write sends as one message.
const CHUNK: usize = 64 * 1024;
/// The in-process pipe between the reverse proxy's splice and the endpoint.
const PIPE: usize = 256 * 1024;

/// The WebSocket settings of both ends.
pub fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// A WebSocket as a byte stream: each write is one binary message, reads
/// run across messages. Pings are answered by tungstenite; a close or the
/// end of the socket reads as the end of the stream.
pub struct WsStream<S> {
    ws: WebSocketStream<S>,
    pending: Bytes,
}

impl<S> WsStream<S> {
    pub fn new(ws: WebSocketStream<S>) -> WsStream<S> {
        WsStream {
            ws,
            pending: Bytes::new(),
        }
    }
}

fn broken(e: tokio_tungstenite::tungstenite::Error) -> io::Error {
    io::Error::other(e)
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.pending.is_empty() {
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => self.pending = data,
                Some(Ok(Message::Close(_))) | None => return Poll::Ready(Ok(())),
                // Pings, pongs: tungstenite answers; text has no meaning here.
                Some(Ok(_)) => {}
                Some(Err(e)) => return Poll::Ready(Err(broken(e))),
            }
        }
        let n = self.pending.len().min(buf.remaining());
        buf.put_slice(&self.pending[..n]);
        self.pending.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(broken)?;
        let n = buf.len().min(CHUNK);
        let message = Message::Binary(Bytes::copy_from_slice(&buf[..n]));
        Pin::new(&mut self.ws).start_send(message).map_err(broken)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(broken)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_close(cx).map_err(broken)
    }
}

/// The reverse proxy's backend for [`PATH`].
pub struct WsEntry {
    pub state: Arc<State>,
    pub authority: Authority,
}

impl Backend for WsEntry {
    fn speaks_h2(&self) -> bool {
        false
    }

    fn authority(&self) -> &Authority {
        &self.authority
    }

    fn uri(&self, path: Option<&PathAndQuery>) -> Uri {
        let path = path.map_or(PATH, |p| p.as_str());
        path.parse().unwrap_or_else(|_| Uri::from_static(PATH))
    }

    fn broken(&self) -> Option<&str> {
        None
    }

    fn exchange(
        &self,
        mut request: Request<ProxyBody>,
        (client, _server): (SocketAddr, SocketAddr),
        _client_broke: Arc<AtomicBool>,
    ) -> BoxFuture<'_, Result<Response<ProxyBody>, ProxyError>> {
        Box::pin(async move {
            let exchanged: Result<Response<Incoming>, ProxyError> = async move {
                if !request.headers().contains_key(header::UPGRADE) {
                    return Err(ProxyError::BadRequest(
                        "the tunnel endpoint takes WebSocket upgrades only",
                    ));
                }
                // The token rides in the hello: never over plain HTTP.
                let https = request
                    .headers()
                    .get("x-forwarded-proto")
                    .is_some_and(|v| v.as_bytes() == b"https");
                if !https {
                    return Err(ProxyError::BadRequest(
                        "the tunnel endpoint is served over HTTPS only",
                    ));
                }
                let (near, far) = tokio::io::duplex(PIPE);
                let state = self.state.clone();
                tokio::spawn(async move {
                    match tokio_tungstenite::accept_async_with_config(far, Some(config())).await {
                        Ok(ws) => super::session::serve_ws(WsStream::new(ws), client, state).await,
                        Err(e) => {
                            tracing::info!(remote = %client, error = %e, "tunnel WebSocket refused")
                        }
                    }
                });
                let failed =
                    |e: hyper::Error| ProxyError::BackendFailed(format!("tunnel endpoint: {e}"));
                let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
                    .handshake::<_, ProxyBody>(TokioIo::new(near))
                    .await
                    .map_err(failed)?;
                tokio::spawn(async move {
                    if let Err(e) = conn.with_upgrades().await {
                        tracing::debug!(error = %e, "tunnel WebSocket pipe ended");
                    }
                });
                *request.version_mut() = http::Version::HTTP_11;
                *request.uri_mut() = Uri::from_static(PATH);
                if !request.headers().contains_key(header::HOST) {
                    request
                        .headers_mut()
                        .insert(header::HOST, http::HeaderValue::from_static("postern"));
                }
                sender.send_request(request).await.map_err(failed)
            }
            .await;
            exchanged.map(boxed_response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::protocol::Role;

    #[tokio::test]
    async fn bytes_cross_a_websocket_whole_and_in_order() {
        let (a, b) = tokio::io::duplex(4096);
        let mut a =
            WsStream::new(WebSocketStream::from_raw_socket(a, Role::Client, Some(config())).await);
        let mut b =
            WsStream::new(WebSocketStream::from_raw_socket(b, Role::Server, Some(config())).await);
        let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let expected = sent.clone();
        let writer = tokio::spawn(async move {
            a.write_all(&sent).await.expect("write");
            a.flush().await.expect("flush");
            a.shutdown().await.expect("close");
        });
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.expect("read");
        writer.await.expect("writer");
        assert_eq!(got, expected);
    }
}
