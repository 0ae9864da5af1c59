//! TLS for the sync port: the serving certificate and key, loaded from PEM
//! files and reloaded when they change, so a rotated Secret is picked up
//! without a restart. Owns no sockets; [`crate::sync_server`] asks it for an
//! acceptor per connection.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::{Error, Result};

/// Where the sync port's certificate chain and private key live (PEM).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What identifies one version of the files: modification time and length
/// of each. A Secret volume update swaps a symlink to new files, which
/// changes both stamps.
type Stamp = [Option<(SystemTime, u64)>; 2];

/// The live acceptor, and the files it came from.
pub struct SyncTls {
    files: SyncTlsFiles,
    state: Mutex<State>,
}

struct State {
    loaded: Stamp,
    acceptor: TlsAcceptor,
    /// Files that failed to load: not retried until they change again.
    failed: Option<Stamp>,
}

impl SyncTls {
    /// Loads the files; a missing or invalid pair stops the operator.
    pub fn load(files: SyncTlsFiles) -> Result<SyncTls> {
        let loaded = stamp(&files);
        let acceptor = acceptor(&files)?;
        Ok(SyncTls {
            files,
            state: Mutex::new(State {
                loaded,
                acceptor,
                failed: None,
            }),
        })
    }

    /// The acceptor for a new connection: reloaded first if the files
    /// changed. A pair that fails to load (say, the certificate rewritten
    /// before the key) is logged and the previous one keeps serving.
    pub fn acceptor(&self) -> TlsAcceptor {
        let now = stamp(&self.files);
        // Held only for file reads of a few kilobytes, never across an await.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if now == state.loaded || state.failed == Some(now) {
            return state.acceptor.clone();
        }
        match acceptor(&self.files) {
            Ok(fresh) => {
                tracing::info!(cert = %self.files.cert.display(), "reloaded the sync TLS certificate");
                state.loaded = now;
                state.acceptor = fresh;
                state.failed = None;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot reload the sync TLS certificate; keeping the previous one");
                state.failed = Some(now);
            }
        }
        state.acceptor.clone()
    }
}

fn stamp(files: &SyncTlsFiles) -> Stamp {
    let one = |path: &Path| {
        let meta = std::fs::metadata(path).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    };
    [one(&files.cert), one(&files.key)]
}

/// A TLS 1.2 and 1.3 server (ring provider) presenting the files' pair.
fn acceptor(files: &SyncTlsFiles) -> Result<TlsAcceptor> {
    let chain = certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key)?)
        .map_err(|e| Error::Tls(format!("{}: {e}", files.key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            Error::Tls(format!(
                "{} with {}: {e}",
                files.cert.display(),
                files.key.display()
            ))
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_slice_iter(&read(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls(format!("{}: {e}", path.display())))?;
    if chain.is_empty() {
        return Err(Error::Tls(format!(
            "{} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(chain)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::ReadFile {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests;
