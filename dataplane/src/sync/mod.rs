//! The sync client of `postern dataplane`: one long-lived connection to the
//! operator, reconnected with jittered exponential backoff for as long as the
//! process runs. While disconnected the data plane keeps serving its last
//! snapshot; it never clears the runtime.
//!
//! Snapshots carry TLS private keys and credentials, so the connection
//! should be TLS: with `--sync-ca` the client verifies the operator's
//! certificate against that CA bundle only ([`tls`]), under the name given
//! with `--sync-server-name` or else the host of `--operator` (the Helm
//! chart mounts the bundle from the Secret holding the operator's
//! certificate). TLS proves the operator to the data plane and hides the
//! stream; the credential in the hello proves the data plane to the
//! operator: its own ServiceAccount token (`--sync-sa-token-file`) or the
//! shared token. Both are needed. A failed verification is logged and retried
//! with the same backoff as any lost connection. Without `--sync-ca` the
//! stream is plain TCP and a warning says so at start-up.

pub mod backoff;
pub mod cache;
pub(crate) mod session;
pub mod tls;

use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use postern_snapshot::sync::TunnelAgents;
use tokio::sync::watch;

use crate::cli::DataplaneArgs;
use crate::runtime::Runtime;
use crate::{Error, Result};

pub use backoff::Backoff;
pub use session::SessionError;
pub use tls::SyncTls;

/// Where the data plane connects and how it introduces itself.
#[derive(Clone, Debug)]
pub struct SyncConfig {
    /// `HOST:PORT`, resolved on every attempt (a Service name may move).
    pub operator: String,
    pub dataplane_id: String,
    pub token: TokenSource,
    /// `None`: plain TCP.
    pub tls: Option<SyncTls>,
    /// The tunnel feature's agent reports, sent to the operator when they
    /// change (set by the caller; `None`: none are sent).
    pub agents: Option<watch::Receiver<Vec<TunnelAgents>>>,
    /// The resource kinds named in the hello: the operator reports
    /// `Programmed=False, Unsupported` for the others.
    pub capabilities: Vec<String>,
}

/// The credential presented in the hello: the shared sync token, or this
/// data plane's ServiceAccount token.
#[derive(Clone)]
pub enum TokenSource {
    Inline(String),
    /// Re-read on every connection, so a rotated Secret is picked up.
    File(PathBuf),
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::Inline(_) => f.write_str("Inline(..)"),
            TokenSource::File(p) => f.debug_tuple("File").field(p).finish(),
        }
    }
}

impl TokenSource {
    fn read(&self) -> Result<String, SessionError> {
        match self {
            TokenSource::Inline(t) => Ok(t.clone()),
            TokenSource::File(path) => std::fs::read_to_string(path)
                .map(|t| t.trim_end().to_string())
                .map_err(|source| SessionError::TokenFile {
                    path: path.clone(),
                    source,
                }),
        }
    }
}

impl SyncConfig {
    /// A ServiceAccount token file wins over the shared token's file,
    /// which wins over the environment variable.
    pub fn from_args(args: &DataplaneArgs) -> Result<Self> {
        let token = match (
            &args.sync_sa_token_file,
            &args.sync_token_file,
            &args.sync_token,
        ) {
            (Some(path), _, _) | (None, Some(path), _) => TokenSource::File(path.clone()),
            (None, None, Some(t)) if !t.is_empty() => TokenSource::Inline(t.clone()),
            _ => return Err(Error::NoSyncToken),
        };
        let dataplane_id = args
            .dataplane_id
            .clone()
            .filter(|id| !id.is_empty())
            .unwrap_or_else(hostname);
        let tls = args
            .sync_ca
            .clone()
            .map(|ca| SyncTls::new(ca, args.sync_server_name.as_deref(), &args.operator))
            .transpose()
            .map_err(|e| Error::SyncTls(e.to_string()))?;
        Ok(SyncConfig {
            operator: args.operator.clone(),
            dataplane_id,
            token,
            tls,
            agents: None,
            // Every data plane of this build runs all the features
            // (`crate::features`), so it implements every kind.
            capabilities: postern_snapshot::sync::CAPABILITIES
                .map(String::from)
                .to_vec(),
        })
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "postern".to_string())
}

/// Connects, syncs, and reconnects until `shutdown`.
pub async fn run(config: SyncConfig, runtime: Arc<Runtime>, shutdown: CancellationToken) {
    if config.tls.is_none() {
        tracing::warn!(operator = %config.operator, "the sync stream is unencrypted: snapshots (with TLS keys and credentials) and the token cross the network in the clear; give --sync-ca");
    }
    let mut backoff = Backoff::default();
    let mut attempts = 0u64;
    loop {
        if attempts > 0 {
            runtime.metrics().sync_reconnects.inc();
        }
        attempts += 1;
        let error = tokio::select! {
            e = session::run(&config, &runtime, &mut backoff) => e,
            () = shutdown.cancelled() => return,
        };
        runtime.metrics().sync_connected.set(0);
        let serving = runtime.version().unwrap_or_else(|| "none".into());
        if let SessionError::Refused(reason) = &error {
            tracing::error!(operator = %config.operator, %reason, "the operator refused this data plane; will retry");
        } else if let SessionError::Handshake { .. } | SessionError::TlsConfig(_) = &error {
            tracing::error!(operator = %config.operator, %error, %serving, "cannot establish TLS with the operator; will retry");
        } else {
            tracing::warn!(operator = %config.operator, %error, %serving, "not connected to the operator; serving the last snapshot");
        }
        let delay = backoff.next_delay(rand::random::<f64>());
        tracing::info!(operator = %config.operator, delay_ms = delay.as_millis() as u64, "reconnecting");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
