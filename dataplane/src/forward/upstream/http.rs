//! `http://` and `https://` upstreams: an HTTP/1.1 CONNECT to the proxy
//! (over TLS for `https`), with `Proxy-Authorization: Basic` when
//! credentials are configured. Hand-written on `httparse` rather than a
//! hyper client so the bytes the proxy sends after its response head (a
//! server that speaks first) are kept, in [`Prefixed`], and no HTTP state
//! lingers for the life of the tunnel.

use std::io;

use base64::Engine as _;
use postern_snapshot::Credentials;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::io_reason;
use crate::forward::errors::ForwardError;
use crate::forward::target::Target;

/// The most a proxy's response head may take.
const MAX_HEAD: usize = 16 * 1024;

/// Sends CONNECT over `proxy`; on a 2xx, the stream and the bytes the
/// proxy sent after its response head.
pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    mut proxy: S,
    target: &Target,
    credentials: Option<&Credentials>,
    label: &str,
) -> Result<(S, Vec<u8>), ForwardError> {
    let request = connect_request(target, credentials);
    let io_err = |e: io::Error| ForwardError::unreachable(label, io_reason(&e));
    proxy.write_all(request.as_bytes()).await.map_err(io_err)?;
    proxy.flush().await.map_err(io_err)?;
    let (status, rest) = read_head(&mut proxy, label).await?;
    if !status.starts_with('2') {
        return Err(ForwardError::Refused {
            upstream: label.to_string(),
            status,
        });
    }
    Ok((proxy, rest))
}

/// `Basic base64(user:password)` for an upstream.
pub fn basic(c: &Credentials) -> String {
    let raw = format!("{}:{}", c.username, c.password);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

fn connect_request(target: &Target, credentials: Option<&Credentials>) -> String {
    let authority = target.to_string();
    let mut req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(c) = credentials {
        req.push_str(&format!("Proxy-Authorization: {}\r\n", basic(c)));
    }
    req.push_str("\r\n");
    req
}

/// Reads the response head: `"200 Connection established"` and the bytes after it.
async fn read_head<S: AsyncRead + Unpin>(
    proxy: &mut S,
    label: &str,
) -> Result<(String, Vec<u8>), ForwardError> {
    let refused = |status: &str| ForwardError::Refused {
        upstream: label.to_string(),
        status: status.to_string(),
    };
    let mut buf = Vec::with_capacity(1024);
    loop {
        buf.reserve(1024);
        let n = proxy
            .read_buf(&mut buf)
            .await
            .map_err(|e| ForwardError::unreachable(label, io_reason(&e)))?;
        if n == 0 {
            return Err(ForwardError::unreachable(
                label,
                "closed the connection during CONNECT",
            ));
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let status = format!("{} {}", resp.code.unwrap_or(0), resp.reason.unwrap_or(""));
                return Ok((status.trim_end().to_string(), buf[len..].to_vec()));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => return Err(refused("oversize response to CONNECT")),
            Err(_) => return Err(refused("malformed response to CONNECT")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_request_carries_basic_auth_and_brackets() {
        let t = Target::parse("[::1]:443", None).expect("target");
        let c = Credentials {
            username: "u".into(),
            password: "p".into(),
        };
        let req = connect_request(&t, Some(&c));
        assert_eq!(
            req,
            "CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\nProxy-Authorization: Basic dTpw\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn leftover_bytes_come_first() {
        let (client, mut server) = tokio::io::duplex(1024);
        server
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\nSSH-2.0-banner")
            .await
            .expect("write");
        let t = Target::parse("a.example:22", None).expect("target");
        let (_s, rest) = connect(client, &t, None, "http://p:1")
            .await
            .expect("connects");
        assert_eq!(rest, b"SSH-2.0-banner");
    }

    #[tokio::test]
    async fn a_refusal_names_the_status() {
        let (client, mut server) = tokio::io::duplex(1024);
        server
            .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
            .await
            .expect("write");
        let t = Target::parse("a.example:443", None).expect("target");
        let err = connect(client, &t, None, "http://p:1").await.err();
        assert_eq!(
            err,
            Some(ForwardError::Refused {
                upstream: "http://p:1".into(),
                status: "407 Proxy Authentication Required".into()
            })
        );
    }
}
