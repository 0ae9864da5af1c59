//! The data plane's one error type, for what stops a command. Failures the
//! data plane rides out (a lost operator, an invalid manifest) are logged and
//! reported on the admin API instead, never returned here.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why `postern` could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot bind the {name} listener on {addr}: {source} (is another postern running? pick another address with --{name}-addr)"
    )]
    Bind {
        name: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the serving threads (--serve-threads): {0}")]
    ServeThreads(std::io::Error),
    #[error("{name} listener: {source}")]
    Serve {
        name: &'static str,
        source: std::io::Error,
    },
    #[error("cannot write the address file {path}: {source}")]
    AddrFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the manifests directory {path}: {source}")]
    ManifestDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "no sync credential: set --sync-sa-token-file, --sync-token-file or the POSTERN_SYNC_TOKEN environment variable"
    )]
    NoSyncToken,
    #[error("{0}")]
    SyncTls(String),
    #[error("{0}")]
    NotImplemented(&'static str),
    #[error("admin API: {0}")]
    AdminToken(postern_admin::TokenError),
    #[error("forward proxy configuration: {0}")]
    Forward(#[from] crate::forward::errors::ConfigError),
    #[error("reverse proxy configuration: {0}")]
    Reverse(#[from] crate::reverse::ConfigError),
    #[error("tunnel configuration: {0}")]
    Tunnel(#[from] crate::tunnel::ConfigError),
    #[error("agent: {0}")]
    Agent(#[from] crate::agent::AgentError),
    #[error("{0}")]
    Usage(String),
    #[error("admin server failed: {0}")]
    Admin(std::io::Error),
    #[error("a task failed: {0}")]
    Task(tokio::task::JoinError),
    #[error("the {0} listener was not bound for this feature")]
    ListenerMissing(&'static str),
    #[error("the {listener} listener is claimed twice (again by {feature})")]
    ListenerTaken {
        listener: &'static str,
        feature: &'static str,
    },
    #[error("{0} stopped although nothing asked it to")]
    Stopped(&'static str),
    #[error("{part} failed: {source}")]
    Part {
        part: &'static str,
        source: Box<Error>,
    },
}

impl Error {
    /// A fixed word per kind, for the failure counter.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Bind { .. } => "bind",
            Error::ServeThreads(_) => "serve_threads",
            Error::Serve { .. } => "serve_io",
            Error::AddrFile { .. } => "addr_file",
            Error::ManifestDir { .. } => "manifest_dir",
            Error::NoSyncToken => "no_sync_token",
            Error::SyncTls(_) => "sync_tls",
            Error::NotImplemented(_) => "not_implemented",
            Error::AdminToken(_) => "admin_token",
            Error::Forward(_) => "forward_config",
            Error::Reverse(_) => "reverse_config",
            Error::Tunnel(_) => "tunnel_config",
            Error::Agent(_) => "agent_config",
            Error::Usage(_) => "usage",
            Error::Admin(_) => "admin_io",
            Error::Task(_) => "task_panicked",
            Error::ListenerMissing(_) | Error::ListenerTaken { .. } => "listener_wiring",
            Error::Stopped(_) => "stopped",
            Error::Part { source, .. } => source.metric_label(),
        }
    }

    /// The process exit code: 2 for what this build cannot do, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::NotImplemented(_) => 2,
            Error::Part { source, .. } => source.exit_code(),
            _ => 1,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
