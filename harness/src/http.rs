//! Small HTTP/1.1 clients for admin APIs (over hyper) and raw bytes for
//! the requests a real client would refuse to send.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every exchange is bounded by this.
const EXCHANGE: Duration = Duration::from_secs(20);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

impl HttpResponse {
    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_str(&self.body).map_err(|e| format!("{e}: {}", self.body))
    }
}

/// `GET http://addr/path`, one connection per request. `Err` describes what
/// went wrong (a refused connection is a normal state while polling).
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<HttpResponse, String> {
    request(addr, "GET", path, None, "").await
}

/// One request with an optional `Authorization: Bearer` token and a JSON
/// body: the admin APIs' shape.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: &str,
) -> Result<HttpResponse, String> {
    let what = format!("{method} {addr}{path}");
    let exchange = exchange(addr, method, path, bearer, body.to_string());
    tokio::time::timeout(EXCHANGE, exchange)
        .await
        .map_err(|_| format!("{what} timed out"))?
        .map_err(|e| format!("{what}: {e}"))
}

/// The read-only admin token every `postern` and operator the harness
/// starts trusts (through `POSTERN_ADMIN_READ_TOKEN_FILE`, so a test's own
/// `--admin-read-token-file` still wins), and the file that holds it.
pub const HARNESS_READ_TOKEN: &str = "harness-read-token";

pub fn harness_read_token_file() -> &'static std::path::Path {
    static FILE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let path = crate::dirs::tmp_dir("admin-read-token").join("token");
        std::fs::write(&path, HARNESS_READ_TOKEN).expect("write the harness's admin read token");
        path
    })
}

/// `GET path` on an admin port with the harness's read token.
pub async fn admin_get(addr: SocketAddr, path: &str) -> Result<HttpResponse, String> {
    request(addr, "GET", path, Some(HARNESS_READ_TOKEN), "").await
}

/// [`request`] that fails the test when there is no answer: status and body.
pub async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: &str,
) -> (u16, String) {
    let response = request(addr, method, path, bearer, body).await;
    let response = response.unwrap_or_else(|e| panic!("{e}"));
    (response.status, response.body)
}

async fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: String,
) -> Result<HttpResponse, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    let mut builder = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, addr.to_string())
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Some(token) = bearer {
        builder = builder.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = builder
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok(HttpResponse {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Reads one HTTP/1.1 response from a kept-alive connection: its head, then
/// the body its `Content-Length` says (none without one), each byte within
/// `limit`. Panics on a close mid-response: it is for tests.
pub async fn read_response<S: tokio::io::AsyncRead + Unpin>(
    conn: &mut S,
    limit: Duration,
) -> String {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(limit, conn.read(&mut byte))
            .await
            .expect("a response in time")
            .expect("read");
        assert!(n > 0, "closed mid-head: {}", String::from_utf8_lossy(&got));
        got.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&got).into_owned();
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    tokio::time::timeout(limit, conn.read_exact(&mut body))
        .await
        .expect("a body in time")
        .expect("body");
    head + &String::from_utf8_lossy(&body)
}

/// Sends raw bytes and reads the answer until it closes, its
/// `Content-Length` body is in, or 5 s pass: status (0 when none) and text.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(request).await?;
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut chunk = [0u8; 8192];
    while !response_complete(&buf) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, text))
}

/// A response head and its `Content-Length` body have arrived.
fn response_complete(buf: &[u8]) -> bool {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let length = head.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    length.is_some_and(|n| buf.len() >= end + 4 + n)
}

/// The body of a raw answer: what follows the head.
pub fn body_of(text: &str) -> &str {
    text.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}
