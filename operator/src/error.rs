//! The operator library's one error type.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything that can stop the operator. Per-connection and per-patch
/// failures are logged and counted where they happen; only what makes the
/// whole process unable to work reaches [`crate::run`]'s caller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("sync token: {0}")]
    Token(String),
    #[error("sync TLS: {0}")]
    Tls(String),
    #[error("admin token: {0}")]
    AdminToken(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("reading {path}: {source}")]
    ReadFile { path: PathBuf, source: io::Error },
    #[error("writing {path}: {source}")]
    WriteFile { path: PathBuf, source: io::Error },
    #[error("binding {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("kubernetes client: {0}")]
    Kube(#[from] kube::Error),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("signal handler: {0}")]
    Signal(io::Error),
    #[error("task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("io: {0}")]
    Io(#[from] io::Error),
    #[error("sync protocol: {0}")]
    Protocol(String),
    #[error("timed out {0}")]
    Timeout(&'static str),
}

impl Error {
    /// A short, fixed label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Token(_) => "token",
            Error::Tls(_) => "tls",
            Error::AdminToken(_) => "admin_token",
            Error::Config(_) => "config",
            Error::ReadFile { .. } => "read_file",
            Error::WriteFile { .. } => "write_file",
            Error::Bind { .. } => "bind",
            Error::Kube(_) => "kube",
            Error::Json(_) => "json",
            Error::Signal(_) => "signal",
            Error::Task(_) => "task",
            Error::Io(_) => "io",
            Error::Protocol(_) => "protocol",
            Error::Timeout(_) => "timeout",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
