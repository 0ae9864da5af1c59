//! The agent protocol, shared by both ends.
//!
//! The agent dials the data plane's `--tunnel-addr` over TLS (ALPN
//! [`ALPN`]) and sends one [`Hello`] frame (a 4-byte big-endian length, then
//! JSON); the data plane answers one [`Welcome`] frame. When at least one
//! tunnel was accepted, the same TLS connection then carries HTTP/2 with the
//! roles reversed: the data plane is the h2 *client* and opens one stream
//! per public request or TCP connection, the agent is the h2 *server*.
//!
//! Streams carry the `postern-*` headers below. A plain request is an h2
//! request; a raw byte stream (a tcp tunnel's connection, or an HTTP
//! Upgrade such as WebSocket) is an h2 `CONNECT` whose 200 means the agent
//! reached its local service. One long-lived stream, [`CONTROL_PATH`], lets
//! the agent say it is draining. Nothing here does IO beyond the frames.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The TLS ALPN protocol of the agent listener.
pub const ALPN: &[u8] = b"postern-tunnel/1";
/// The version in [`Hello::protocol`].
pub const VERSION: u32 = 1;
/// The largest hello or welcome frame.
pub const MAX_FRAME: usize = 64 * 1024;

/// Which tunnel a stream is for (`namespace/name`).
pub const H_TUNNEL: &str = "postern-tunnel";
/// The public client's address (`ip:port`), PROXY-protocol aware.
pub const H_CLIENT: &str = "postern-client";
/// The address the public client connected to.
pub const H_SERVER: &str = "postern-server";
/// On a `CONNECT`: `tcp` (a tcp tunnel) or `upgrade` (an HTTP Upgrade).
pub const H_STREAM: &str = "postern-stream";
/// The agent's own error text on a 502 it answers itself.
pub const H_ERROR: &str = "postern-error";
/// The path of the control stream the data plane opens first.
pub const CONTROL_PATH: &str = "/.well-known/postern/control";
/// What the agent writes on the control stream when it starts draining.
pub const DRAINING: &[u8] = b"draining\n";

/// The agent's first frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hello {
    pub protocol: u32,
    pub agent_version: String,
    /// The JWT; never logged.
    pub token: String,
    /// The tunnels (`namespace/name`) the agent wants to serve; empty: all
    /// that the token names.
    #[serde(default)]
    pub tunnels: Vec<String>,
}

/// The data plane's answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Welcome {
    /// The session's id in the data plane's logs.
    pub session: String,
    pub accepted: Vec<Accepted>,
    pub refused: Vec<Refused>,
}

/// A tunnel the agent now serves (or stands by for).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    pub tunnel: String,
    /// `http` or `tcp`.
    pub mode: String,
    /// Whether this agent is the active one (else a standby).
    pub active: bool,
}

/// A tunnel the agent may not serve, and why (a fixed word: see
/// `AuthError::reason`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    pub tunnel: String,
    pub reason: String,
}

/// Why a frame could not be exchanged.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes is larger than {MAX_FRAME}")]
    TooLarge(usize),
    #[error("malformed frame: {0}")]
    Json(#[from] serde_json::Error),
    #[error("protocol version {0} is not {VERSION}")]
    Version(u32),
}

/// Writes one length-prefixed JSON frame.
pub async fn write_frame<T: Serialize, W: AsyncWrite + Unpin>(
    io: &mut W,
    value: &T,
) -> Result<(), ProtocolError> {
    let body = serde_json::to_vec(value)?;
    if body.len() > MAX_FRAME {
        return Err(ProtocolError::TooLarge(body.len()));
    }
    let len = u32::try_from(body.len()).map_err(|_| ProtocolError::TooLarge(body.len()))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(&body).await?;
    io.flush().await?;
    Ok(())
}

/// Reads one length-prefixed JSON frame, refusing large ones before
/// reading them.
pub async fn read_frame<T: for<'de> Deserialize<'de>, R: AsyncRead + Unpin>(
    io: &mut R,
) -> Result<T, ProtocolError> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(ProtocolError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await?;
    Ok(serde_json::from_slice(&body)?)
}

/// Reads the agent's hello and checks its version.
pub async fn read_hello<R: AsyncRead + Unpin>(io: &mut R) -> Result<Hello, ProtocolError> {
    let hello: Hello = read_frame(io).await?;
    if hello.protocol != VERSION {
        return Err(ProtocolError::Version(hello.protocol));
    }
    Ok(hello)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip() {
        let hello = Hello {
            protocol: VERSION,
            agent_version: "0.1.0".into(),
            token: "t".into(),
            tunnels: vec!["default/laptop".into()],
        };
        let mut buf = Vec::new();
        write_frame(&mut buf, &hello).await.expect("write");
        let back = read_hello(&mut buf.as_slice()).await.expect("read");
        assert_eq!(back, hello);
    }

    #[tokio::test]
    async fn large_and_foreign_frames_are_refused() {
        let mut big = (MAX_FRAME as u32 + 1).to_be_bytes().to_vec();
        big.extend([b'x'; 8]);
        let err = read_frame::<Hello, _>(&mut big.as_slice()).await;
        assert!(matches!(err, Err(ProtocolError::TooLarge(_))));
        let mut buf = Vec::new();
        let mut hello = Hello {
            protocol: 9,
            agent_version: String::new(),
            token: String::new(),
            tunnels: vec![],
        };
        write_frame(&mut buf, &hello).await.expect("write");
        let err = read_hello(&mut buf.as_slice()).await;
        assert!(matches!(err, Err(ProtocolError::Version(9))));
        hello.protocol = VERSION;
        let mut junk = 3u32.to_be_bytes().to_vec();
        junk.extend(b"{x}");
        let err = read_frame::<Hello, _>(&mut junk.as_slice()).await;
        assert!(matches!(err, Err(ProtocolError::Json(_))));
    }
}
