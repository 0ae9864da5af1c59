//! TLS towards the operator: the sync client verifies the operator's
//! certificate against the CA bundle given with `--sync-ca` and nothing
//! else (not the system's roots: a public certificate for the operator's
//! name proves nothing here). The bundle is re-read on every connection, so
//! a rotated CA Secret applies at the next reconnect.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::SessionError;

/// A handshake longer than this is abandoned (and retried with backoff).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How the sync client secures its connection.
#[derive(Clone, Debug)]
pub struct SyncTls {
    /// PEM bundle of the CAs that may sign the operator's certificate.
    pub ca_file: PathBuf,
    /// The name the certificate must carry (a DNS name or an IP address),
    /// also sent as SNI.
    pub server_name: ServerName<'static>,
}

impl SyncTls {
    /// `server_name` defaults to the host part of `operator` (`HOST:PORT`).
    /// Reads the bundle once, so a wrong path fails at start-up.
    pub fn new(
        ca_file: PathBuf,
        server_name: Option<&str>,
        operator: &str,
    ) -> Result<SyncTls, SessionError> {
        let name = server_name.unwrap_or_else(|| host_of(operator));
        let server_name = ServerName::try_from(name.to_string()).map_err(|e| {
            SessionError::TlsConfig(format!("sync server name {name:?} is invalid: {e}"))
        })?;
        let tls = SyncTls {
            ca_file,
            server_name,
        };
        tls.connector()?;
        Ok(tls)
    }

    /// The TLS session over `tcp`, the operator's certificate verified.
    pub async fn connect(&self, tcp: TcpStream) -> Result<TlsStream<TcpStream>, SessionError> {
        let connector = self.connector()?;
        let handshake = connector.connect(self.server_name.clone(), tcp);
        let result = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()));
        result.map_err(|source| SessionError::Handshake {
            server_name: self.server_name.to_str().into_owned(),
            source,
        })
    }

    /// A TLS 1.2/1.3 client (ring) trusting only the bundle as it is now.
    fn connector(&self) -> Result<TlsConnector, SessionError> {
        let roots = roots(&self.ca_file)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| SessionError::TlsConfig(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsConnector::from(Arc::new(config)))
    }
}

fn roots(path: &Path) -> Result<RootCertStore, SessionError> {
    let bad = |why: String| SessionError::TlsConfig(format!("sync CA {}: {why}", path.display()));
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("holds no PEM certificate".into()));
    }
    Ok(roots)
}

/// `host` of `host:port`, without the brackets of an IPv6 literal.
fn host_of(operator: &str) -> &str {
    let host = operator.rsplit_once(':').map_or(operator, |(host, _)| host);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

#[cfg(test)]
mod tests;
