//! Connections to other replicas' peer ports: one authenticated HTTP/2
//! connection per peer address, dialled on first use and kept while it
//! lives. Its streams are exactly the agent protocol's, so a forwarded
//! request is built the same way as one for a local agent.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::handshake::{self, PeerKey};
use crate::reverse::ProxyBody;
use crate::tunnel::session::h2_client;

/// Dialling, the handshake and h2's preface together.
const DIAL: Duration = Duration::from_secs(3);

pub struct PeerClients {
    key: PeerKey,
    conns: Mutex<HashMap<String, SendRequest<ProxyBody>>>,
}

impl PeerClients {
    pub fn new(key: PeerKey) -> PeerClients {
        PeerClients {
            key,
            conns: Mutex::new(HashMap::new()),
        }
    }

    /// A handle on the connection to `addr`, dialled when there is none.
    pub async fn sender(&self, addr: &str) -> Result<SendRequest<ProxyBody>, String> {
        let cached = {
            let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
            conns.get(addr).filter(|s| !s.is_closed()).cloned()
        };
        if let Some(sender) = cached {
            return Ok(sender);
        }
        let sender = tokio::time::timeout(DIAL, self.dial(addr))
            .await
            .map_err(|_| format!("peer {addr}: no answer within {DIAL:?}"))??;
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.insert(addr.to_string(), sender.clone());
        Ok(sender)
    }

    async fn dial(&self, addr: &str) -> Result<SendRequest<ProxyBody>, String> {
        let fail = |e: &dyn std::fmt::Display| format!("peer {addr}: {e}");
        let mut tcp = TcpStream::connect(addr).await.map_err(|e| fail(&e))?;
        let _ = tcp.set_nodelay(true);
        handshake::dial(&mut tcp, &self.key)
            .await
            .map_err(|e| fail(&e))?;
        let (sender, conn) = h2_client()
            .handshake::<_, ProxyBody>(TokioIo::new(tcp))
            .await
            .map_err(|e| fail(&e))?;
        let peer = addr.to_string();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(peer = %peer, error = %e, "peer connection ended");
            }
        });
        tracing::info!(peer = %addr, "peer connection opened");
        Ok(sender)
    }
}
