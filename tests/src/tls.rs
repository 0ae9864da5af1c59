//! Certificates for the sync stream: a CA made with rcgen for one test, the
//! serving pair it signs for the operator, and the CA file data planes
//! trust.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

use crate::process::work_dir;

/// The operator's `--sync-tls-cert` and `--sync-tls-key`.
#[derive(Clone, Debug)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A CA whose certificate is written to [`TestCa::file`].
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
    dir: PathBuf,
}

impl TestCa {
    /// A CA named `label` (distinct names keep CAs apart in verification).
    pub fn new(label: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new())
            .unwrap_or_else(|e| panic!("CA params: {e}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, label);
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("CA key: {e}"));
        let cert = params
            .self_signed(&key)
            .unwrap_or_else(|e| panic!("CA certificate: {e}"));
        let dir = work_dir(label);
        write(&dir.join("ca.crt"), &cert.pem());
        TestCa { cert, key, dir }
    }

    /// The CA certificate (PEM), for `postern dataplane --sync-ca`.
    pub fn file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// A serving pair for `localhost` and 127.0.0.1, where test operators listen.
    pub fn server(&self) -> ServerTls {
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let params = CertificateParams::new(names).unwrap_or_else(|e| panic!("params: {e}"));
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("key: {e}"));
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .unwrap_or_else(|e| panic!("certificate: {e}"));
        let tls = ServerTls {
            cert: self.dir.join("tls.crt"),
            key: self.dir.join("tls.key"),
        };
        write(&tls.cert, &cert.pem());
        write(&tls.key, &key.serialize_pem());
        tls
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}
