//! The peer port's mutual authentication: both replicas prove they hold
//! the cluster's peer secret (`--tunnel-peer-secret-file`) without sending
//! it. The listener sends a random nonce, the dialer answers its own nonce
//! and an HMAC-SHA256 over both, the listener answers its own HMAC; each
//! side checks the other's in constant time (ring). Agents, tenants and
//! anything else that reaches the port without the secret get nothing
//! past this exchange.
//!
//! The exchange authenticates, it does not encrypt: the peer port is for
//! the cluster's pod network, like the reverse proxy's own upstream hops.

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const NONCE: usize = 32;
const MAC: usize = 32;
/// What the first bytes say, so a stray client fails early and clearly.
const MAGIC: &[u8; 8] = b"PSTPEER1";

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("peer connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a postern peer port")]
    NotAPeer,
    #[error("the peer does not hold the peer secret")]
    BadProof,
    #[error("no randomness")]
    Random,
}

/// The shared secret, as an HMAC key.
#[derive(Clone)]
pub struct PeerKey(hmac::Key);

impl std::fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerKey(..)")
    }
}

impl PeerKey {
    pub fn new(secret: &[u8]) -> PeerKey {
        PeerKey(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    fn proof(&self, role: &[u8], ours: &[u8], theirs: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.0);
        for part in [MAGIC.as_slice(), role, ours, theirs] {
            ctx.update(part);
        }
        ctx.sign()
    }

    fn check(&self, role: &[u8], a: &[u8], b: &[u8], tag: &[u8]) -> Result<(), HandshakeError> {
        let mut msg = Vec::with_capacity(MAGIC.len() + role.len() + a.len() + b.len());
        for part in [MAGIC.as_slice(), role, a, b] {
            msg.extend_from_slice(part);
        }
        hmac::verify(&self.0, &msg, tag).map_err(|_| HandshakeError::BadProof)
    }
}

fn nonce() -> Result<[u8; NONCE], HandshakeError> {
    let mut n = [0u8; NONCE];
    SystemRandom::new()
        .fill(&mut n)
        .map_err(|_| HandshakeError::Random)?;
    Ok(n)
}

/// The listener's half; Ok once the dialer proved the secret.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    key: &PeerKey,
) -> Result<(), HandshakeError> {
    let server = nonce()?;
    io.write_all(MAGIC).await?;
    io.write_all(&server).await?;
    io.flush().await?;
    let mut answer = [0u8; MAGIC.len() + NONCE + MAC];
    io.read_exact(&mut answer).await?;
    if &answer[..MAGIC.len()] != MAGIC {
        return Err(HandshakeError::NotAPeer);
    }
    let client = &answer[MAGIC.len()..MAGIC.len() + NONCE];
    key.check(b"dialer", &server, client, &answer[MAGIC.len() + NONCE..])?;
    io.write_all(key.proof(b"listener", &server, client).as_ref())
        .await?;
    io.flush().await?;
    Ok(())
}

/// The dialer's half; Ok once the listener proved the secret too (so a
/// forged registry entry cannot collect public requests).
pub async fn dial<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    key: &PeerKey,
) -> Result<(), HandshakeError> {
    let mut hello = [0u8; MAGIC.len() + NONCE];
    io.read_exact(&mut hello).await?;
    if &hello[..MAGIC.len()] != MAGIC {
        return Err(HandshakeError::NotAPeer);
    }
    let server = &hello[MAGIC.len()..];
    let client = nonce()?;
    io.write_all(MAGIC).await?;
    io.write_all(&client).await?;
    io.write_all(key.proof(b"dialer", server, &client).as_ref())
        .await?;
    io.flush().await?;
    let mut tag = [0u8; MAC];
    io.read_exact(&mut tag).await?;
    key.check(b"listener", server, &client, &tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair(a: &[u8], b: &[u8]) -> (Result<(), HandshakeError>, Result<(), HandshakeError>) {
        let (mut x, mut y) = tokio::io::duplex(1024);
        let (ka, kb) = (PeerKey::new(a), PeerKey::new(b));
        let listener = async move { accept(&mut x, &ka).await };
        let dialer = async move { dial(&mut y, &kb).await };
        tokio::join!(listener, dialer)
    }

    #[tokio::test]
    async fn the_same_secret_passes_both_ways() {
        let (l, d) = pair(b"s3cret-s3cret", b"s3cret-s3cret").await;
        assert!(l.is_ok() && d.is_ok(), "{l:?} {d:?}");
    }

    #[tokio::test]
    async fn another_secret_is_refused() {
        let (l, d) = pair(b"s3cret-s3cret", b"guess").await;
        assert!(matches!(l, Err(HandshakeError::BadProof)), "{l:?}");
        assert!(d.is_err());
    }

    #[tokio::test]
    async fn a_client_speaking_something_else_is_not_a_peer() {
        let (mut x, mut y) = tokio::io::duplex(1024);
        let key = PeerKey::new(b"k");
        let listener = async move { accept(&mut x, &key).await };
        let client = async move {
            let mut hello = [0u8; 40];
            y.read_exact(&mut hello).await.expect("hello");
            y.write_all(&[b'G'; 72]).await.expect("write");
            y
        };
        let (l, _y) = tokio::join!(listener, client);
        assert!(matches!(l, Err(HandshakeError::NotAPeer)), "{l:?}");
    }
}
