//! TLS to `https://` upstream proxies (rustls, ring provider), always
//! verified: the system's roots, any CA files given with
//! `--upstream-ca-file`, and the upstream's own CA when its UserUpstream
//! names one (`upstreamCaSecretRef`). The server name is the upstream's
//! host (a DNS name or an IP address).
//!
//! A client configuration is built once per distinct upstream CA and
//! cached; the system roots are read once, at start-up.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use postern_snapshot::sha256_hex;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::io_reason;
use crate::forward::errors::{ConfigError, ForwardError};

/// More distinct upstream CAs than this and the cache starts over.
const MAX_CACHED: usize = 256;

pub struct Tls {
    provider: Arc<CryptoProvider>,
    /// The system roots and the `--upstream-ca-file` certificates.
    roots: RootCertStore,
    default: TlsConnector,
    /// Connectors for upstream-specific CAs, by the hash of the PEM.
    with_ca: Mutex<HashMap<String, TlsConnector>>,
}

impl Tls {
    pub fn new(ca_files: &[PathBuf]) -> Result<Tls, ConfigError> {
        let mut roots = RootCertStore::empty();
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
        let default = connector(&provider, roots.clone())?;
        Ok(Tls {
            provider,
            roots,
            default,
            with_ca: Mutex::default(),
        })
    }

    /// A verified TLS session with the upstream proxy at `host`.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        host: &str,
        ca_pem: Option<&str>,
        label: &str,
    ) -> Result<TlsStream<TcpStream>, ForwardError> {
        let connector = match ca_pem {
            None => self.default.clone(),
            Some(pem) => self.with_ca(pem).map_err(|e| {
                ForwardError::unreachable(label, format!("unusable upstream CA: {e}"))
            })?,
        };
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| ForwardError::unreachable(label, "invalid TLS server name"))?;
        connector.connect(name, tcp).await.map_err(|e| {
            ForwardError::unreachable(label, format!("TLS handshake failed: {}", io_reason(&e)))
        })
    }

    fn with_ca(&self, pem: &str) -> Result<TlsConnector, String> {
        let key = sha256_hex(pem.as_bytes());
        let mut cache = self.with_ca.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cache.get(&key) {
            return Ok(c.clone());
        }
        let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
            .filter_map(Result::ok)
            .collect();
        let mut roots = self.roots.clone();
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err("no certificate in the PEM".into());
        }
        let c = connector(&self.provider, roots).map_err(|e| e.to_string())?;
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(key, c.clone());
        Ok(c)
    }
}

fn connector(
    provider: &Arc<CryptoProvider>,
    roots: RootCertStore,
) -> Result<TlsConnector, rustls::Error> {
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}
