//! TLS to `https://` upstream proxies (rustls, ring provider), always
//! verified: the system's roots plus any CA files given with
//! `--upstream-ca-file`. The server name is the upstream's host (a DNS name
//! or an IP address).

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{Stream, io_reason};
use crate::forward::errors::{ConfigError, ForwardError};

pub struct Tls {
    connector: TlsConnector,
}

impl Tls {
    pub fn new(ca_files: &[PathBuf]) -> Result<Tls, ConfigError> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::debug!(error = %e, "skipping a system root certificate source");
        }
        roots.add_parsable_certificates(native.certs);
        for path in ca_files {
            let certs: Vec<_> = CertificateDer::pem_file_iter(path)
                .map_err(|e| ConfigError::CaFile {
                    path: path.clone(),
                    source: std::io::Error::other(e.to_string()),
                })?
                .filter_map(Result::ok)
                .collect();
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(ConfigError::CaEmpty(path.clone()));
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Tls {
            connector: TlsConnector::from(Arc::new(config)),
        })
    }

    pub async fn connect(
        &self,
        tcp: TcpStream,
        host: &str,
        label: &str,
    ) -> Result<Stream, ForwardError> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| ForwardError::unreachable(label, "invalid TLS server name"))?;
        let tls = self.connector.connect(name, tcp).await.map_err(|e| {
            ForwardError::unreachable(label, format!("TLS handshake failed: {}", io_reason(&e)))
        })?;
        Ok(Box::new(tls))
    }
}
