//! Test certificates: a CA made with rcgen, leaves it signs, the files the
//! sync port loads, and a client that trusts only that CA.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::sync_tls::SyncTlsFiles;

pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("ca key");
        let cert = params.self_signed(&key).expect("ca cert");
        TestCa { cert, key }
    }

    /// A leaf for `names` (DNS names or IP addresses): (cert PEM, key PEM).
    pub fn issue(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = CertificateParams::new(names).expect("leaf params");
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("leaf cert");
        (cert.pem(), key.serialize_pem())
    }

    /// Writes a leaf for `localhost` and 127.0.0.1 into `dir`.
    pub fn write_pair(&self, dir: &Path) -> SyncTlsFiles {
        let (cert, key) = self.issue(&["localhost", "127.0.0.1"]);
        let files = SyncTlsFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        };
        std::fs::write(&files.cert, cert).expect("write cert");
        std::fs::write(&files.key, key).expect("write key");
        files
    }

    /// A TLS client that trusts this CA and nothing else.
    pub fn client(&self) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        let der = CertificateDer::from_pem_slice(self.cert.pem().as_bytes()).expect("ca der");
        roots.add(der).expect("add ca");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }

    /// Connects over `io` to a server that should be `localhost`.
    pub async fn connect<S>(&self, io: S) -> std::io::Result<TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let name = ServerName::try_from("localhost").expect("name");
        self.client().connect(name, io).await
    }
}

/// A fresh directory under the system's temporary directory.
pub fn scratch_dir(label: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "postern-operator-{label}-{}-{n}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}
