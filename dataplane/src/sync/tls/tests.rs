//! The sync client's TLS against an in-test TLS server with rcgen
//! certificates.

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::{SyncTls, host_of};
use crate::sync::SessionError;

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("ca");
        Ca { cert, key }
    }

    /// Writes the CA's PEM to a fresh file.
    fn file(&self) -> PathBuf {
        let path = scratch().join("ca.crt");
        std::fs::write(&path, self.cert.pem()).expect("write ca");
        path
    }

    /// A TLS server for `names` on loopback that answers `ok` to one
    /// handshake, its handshake error otherwise.
    async fn serve(&self, names: &[&str]) -> std::net::SocketAddr {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(names)
            .expect("params")
            .signed_by(&key, &self.cert, &self.key)
            .expect("leaf");
        let chain = vec![CertificateDer::from_pem_slice(cert.pem().as_bytes()).expect("der")];
        let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).expect("key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            if let Ok(mut tls) = acceptor.accept(tcp).await {
                let _ = tls.write_all(b"ok").await;
                let _ = tls.shutdown().await;
            }
        });
        addr
    }
}

fn scratch() -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("postern-sync-tls-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

async fn dial(tls: &SyncTls, addr: std::net::SocketAddr) -> Result<String, SessionError> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let mut stream = tls.connect(tcp).await?;
    let mut said = String::new();
    stream
        .read_to_string(&mut said)
        .await
        .map_err(SessionError::Io)?;
    Ok(said)
}

#[tokio::test]
async fn sync_tls_connects_to_an_operator_signed_by_the_ca() {
    let ca = Ca::new("sync ca");
    let addr = ca.serve(&["localhost", "127.0.0.1"]).await;
    // The default name is the host of --operator: here an IP address.
    let tls = SyncTls::new(ca.file(), None, &addr.to_string()).expect("tls");
    assert_eq!(dial(&tls, addr).await.expect("handshake"), "ok");

    let addr = ca.serve(&["operator.postern.svc"]).await;
    let tls =
        SyncTls::new(ca.file(), Some("operator.postern.svc"), &addr.to_string()).expect("tls");
    assert_eq!(dial(&tls, addr).await.expect("handshake"), "ok");
}

#[tokio::test]
async fn sync_tls_refuses_another_ca_and_another_name() {
    let ca = Ca::new("sync ca");
    let addr = ca.serve(&["localhost"]).await;
    let stranger = Ca::new("another ca");
    let tls = SyncTls::new(stranger.file(), Some("localhost"), "op:1").expect("tls");
    match dial(&tls, addr).await {
        Err(e @ SessionError::Handshake { .. }) => {
            assert!(e.to_string().contains("UnknownIssuer"), "{e}")
        }
        other => panic!("expected a failed handshake, got {other:?}"),
    }

    let addr = ca.serve(&["localhost"]).await;
    let tls = SyncTls::new(ca.file(), Some("elsewhere.example"), "op:1").expect("tls");
    match dial(&tls, addr).await {
        Err(e @ SessionError::Handshake { .. }) => {
            assert!(e.to_string().contains("not valid for name"), "{e}")
        }
        other => panic!("expected a failed handshake, got {other:?}"),
    }
}

#[test]
fn sync_tls_needs_a_readable_bundle_and_a_valid_name() {
    let missing = scratch().join("absent.crt");
    assert!(matches!(
        SyncTls::new(missing, None, "op:1"),
        Err(SessionError::TlsConfig(_))
    ));
    let garbage = scratch().join("garbage.crt");
    std::fs::write(&garbage, "no certificates here").expect("write");
    assert!(matches!(
        SyncTls::new(garbage, None, "op:1"),
        Err(SessionError::TlsConfig(_))
    ));
    let ca = Ca::new("sync ca");
    assert!(matches!(
        SyncTls::new(ca.file(), Some("not a name!"), "op:1"),
        Err(SessionError::TlsConfig(_))
    ));
}

#[test]
fn sync_server_name_defaults_to_the_operator_host() {
    assert_eq!(
        host_of("postern-operator.postern.svc:9091"),
        "postern-operator.postern.svc"
    );
    assert_eq!(host_of("127.0.0.1:9091"), "127.0.0.1");
    assert_eq!(host_of("[::1]:9091"), "::1");
    let ca = Ca::new("sync ca");
    let tls = SyncTls::new(ca.file(), None, "[::1]:9091").expect("tls");
    assert!(matches!(tls.server_name, ServerName::IpAddress(_)));
}
