//! CONNECT tunnels through a forward proxy, held open by the test: open
//! one, send bytes through it, and see when the proxy cuts it.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An open CONNECT tunnel, past its `200`; `Err` holds the proxy's answer
/// head (or what went wrong).
pub async fn open_tunnel(
    proxy: SocketAddr,
    user: &str,
    password: &str,
    target: SocketAddr,
) -> Result<TcpStream, String> {
    let creds = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut s = TcpStream::connect(proxy).await.map_err(|e| e.to_string())?;
    let req = format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: Basic {creds}\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte))
            .await
            .map_err(|_| "no answer to CONNECT".to_string())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("closed after {:?}", String::from_utf8_lossy(&head)));
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    if head.starts_with("HTTP/1.1 200") {
        Ok(s)
    } else {
        Err(head)
    }
}

/// The status the proxy answers a CONNECT with; panics when there is none.
pub async fn connect_status(
    proxy: SocketAddr,
    user: &str,
    password: &str,
    target: SocketAddr,
) -> u16 {
    match open_tunnel(proxy, user, password, target).await {
        Ok(_) => 200,
        Err(head) => head
            .get(9..12)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {head}")),
    }
}

/// Sends `msg` through an echo tunnel and expects it back within 5 s.
pub async fn echo_roundtrip(s: &mut TcpStream, msg: &[u8]) -> bool {
    if s.write_all(msg).await.is_err() {
        return false;
    }
    let mut got = vec![0u8; msg.len()];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got)).await,
        Ok(Ok(_))
    ) && got == msg
}

/// Waits (at most `limit`) for the peer to close the stream: true when it did.
pub async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 64];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}
