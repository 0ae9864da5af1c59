//! Tiny in-process TCP targets on port 0, run on the test's runtime: an
//! HTTP answer naming the caller's address, an echo, a blackhole, and a
//! TLS front for any of them.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn bind(what: &str) -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind {what}: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{what} address: {e}"));
    (listener, addr)
}

/// Answers every request with `hello from <peer ip>`, so a test sees which
/// address (which upstream) reached it.
pub async fn http_target() -> SocketAddr {
    text_target(|peer| format!("hello from {}", peer.ip())).await
}

/// Answers every HTTP/1.1 request with `body(peer)` and closes.
pub async fn text_target(
    body: impl Fn(SocketAddr) -> String + Send + Sync + 'static,
) -> SocketAddr {
    let (listener, addr) = bind("target").await;
    let body = Arc::new(body);
    tokio::spawn(async move {
        while let Ok((mut s, peer)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let text = body(peer);
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

/// Echoes every byte back (for tunnels held open).
pub async fn echo_target() -> SocketAddr {
    let (listener, addr) = bind("echo").await;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Accepts and never answers: handshakes with it time out.
pub async fn blackhole() -> SocketAddr {
    let (listener, addr) = bind("blackhole").await;
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    addr
}

/// A TLS terminator forwarding plain bytes to `backend` (an `https://`
/// upstream proxy made of tinyproxy behind TLS).
pub async fn tls_front(config: Arc<rustls::ServerConfig>, backend: SocketAddr) -> SocketAddr {
    let (listener, addr) = bind("TLS front").await;
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let Ok(mut back) = TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut back).await;
            });
        }
    });
    addr
}

/// A TLS target answering `hello over tls`.
pub async fn tls_target(config: Arc<rustls::ServerConfig>) -> SocketAddr {
    let plain = text_target(|_| "hello over tls".to_string()).await;
    tls_front(config, plain).await
}
