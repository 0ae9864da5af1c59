//! A private CA made with rcgen for one test, the leaf certificates it
//! signs (PEM for Secrets and files, DER to compare with what a server
//! presented), rustls configurations built from them, and the files that
//! curl, the operator and the data plane load.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsConnector;

use crate::dirs::tmp_dir;

/// The one crypto provider the workspace uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A CA whose name keeps it apart from other tests' CAs in verification.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    /// The CA certificate, PEM.
    pub pem: String,
}

/// A leaf certificate and its key.
#[derive(Clone, Debug)]
pub struct Leaf {
    /// PEM, for a `kubernetes.io/tls` Secret or a file.
    pub cert: String,
    pub key: String,
    /// DER, to compare with the certificate a server presented.
    pub der: Vec<u8>,
}

/// A certificate and key written to files (`--sync-tls-cert`, `--default-cert`, ...).
#[derive(Clone, Debug)]
pub struct PemFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new())
            .unwrap_or_else(|e| panic!("CA params: {e}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("CA key: {e}"));
        let cert = params
            .self_signed(&key)
            .unwrap_or_else(|e| panic!("CA certificate: {e}"));
        let pem = cert.pem();
        Ca { cert, key, pem }
    }

    /// A leaf for `names` (DNS names or IP addresses).
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = CertificateParams::new(names).unwrap_or_else(|e| panic!("params: {e}"));
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("key: {e}"));
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .unwrap_or_else(|e| panic!("leaf certificate: {e}"));
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// The CA certificate, DER.
    pub fn der(&self) -> Vec<u8> {
        self.cert.der().to_vec()
    }

    /// Writes the CA PEM to `dir/ca.pem` (curl's `--cacert`).
    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("ca.pem");
        write(&path, &self.pem);
        path
    }

    /// The CA PEM in a file of its own (`postern dataplane --sync-ca`).
    pub fn file(&self) -> PathBuf {
        self.write(&tmp_dir("ca"))
    }

    /// A client trusting only this CA, offering `alpn`, without session
    /// resumption: a resumed session reports the first handshake's
    /// certificate, which would hide a rotation.
    pub fn connector(&self, alpn: &[&[u8]]) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.der()))
            .unwrap_or_else(|e| panic!("CA root: {e}"));
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|e| panic!("TLS versions: {e}"))
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.resumption = rustls::client::Resumption::disabled();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsConnector::from(Arc::new(config))
    }
}

impl Leaf {
    /// A rustls server presenting this leaf, offering `alpn`.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        let chain = CertificateDer::pem_slice_iter(self.cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap_or_else(|e| panic!("certificate PEM: {e}"));
        let key = PrivateKeyDer::from_pem_slice(self.key.as_bytes())
            .unwrap_or_else(|e| panic!("key PEM: {e}"));
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|e| panic!("TLS versions: {e}"))
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap_or_else(|e| panic!("server config: {e}"));
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// Writes `dir/tls.crt` and `dir/tls.key`.
    pub fn write(&self, dir: &Path) -> PemFiles {
        let files = PemFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        };
        write(&files.cert, &self.cert);
        write(&files.key, &self.key);
        files
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}
