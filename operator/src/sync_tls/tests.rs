//! Loading and reloading the sync port's certificate, with handshakes over
//! an in-memory pipe.

use tokio::io::duplex;

use super::{SyncTls, SyncTlsFiles};
use crate::Error;
use crate::test_pki::{TestCa, scratch_dir};

/// Whether a client trusting `ca` completes a handshake with `tls` as it is now.
async fn handshake(tls: &SyncTls, ca: &TestCa) -> Result<(), String> {
    let (client, server) = duplex(64 * 1024);
    let acceptor = tls.acceptor();
    let (client, server) = tokio::join!(ca.connect(client), acceptor.accept(server));
    client.map_err(|e| format!("client: {e}"))?;
    server.map_err(|e| format!("server: {e}"))?;
    Ok(())
}

#[tokio::test]
async fn a_client_trusting_the_ca_completes_the_handshake_and_others_fail() {
    let ca = TestCa::new("sync ca");
    let tls = SyncTls::load(ca.write_pair(&scratch_dir("tls-ok"))).expect("load");
    assert_eq!(handshake(&tls, &ca).await, Ok(()));

    let stranger = TestCa::new("another ca");
    let refused = handshake(&tls, &stranger).await.expect_err("untrusted");
    assert!(refused.contains("certificate"), "{refused}");
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_refused() {
    let ca = TestCa::new("sync ca");
    let dir = scratch_dir("tls-mismatch");
    let files = ca.write_pair(&dir);
    let (_, other_key) = ca.issue(&["localhost"]);
    std::fs::write(&files.key, other_key).expect("write key");
    assert!(matches!(SyncTls::load(files), Err(Error::Tls(_))));
}

#[test]
fn missing_or_empty_files_are_refused() {
    let dir = scratch_dir("tls-missing");
    let files = SyncTlsFiles {
        cert: dir.join("absent.crt"),
        key: dir.join("absent.key"),
    };
    assert!(matches!(
        SyncTls::load(files.clone()),
        Err(Error::ReadFile { .. })
    ));
    std::fs::write(&files.cert, "not a certificate").expect("write");
    std::fs::write(&files.key, "not a key").expect("write");
    assert!(matches!(SyncTls::load(files), Err(Error::Tls(_))));
}

#[tokio::test]
async fn a_rotated_pair_is_picked_up_and_a_broken_one_is_ignored() {
    let dir = scratch_dir("tls-rotate");
    let old_ca = TestCa::new("old ca");
    let tls = SyncTls::load(old_ca.write_pair(&dir)).expect("load");
    assert_eq!(handshake(&tls, &old_ca).await, Ok(()));

    let new_ca = TestCa::new("new ca");
    let files = new_ca.write_pair(&dir);
    assert_eq!(
        handshake(&tls, &new_ca).await,
        Ok(()),
        "the new pair serves"
    );
    assert!(
        handshake(&tls, &old_ca).await.is_err(),
        "the old one is gone"
    );

    // Half-rotated: a new certificate with the old key. The last good pair stays.
    let (cert, _) = new_ca.issue(&["localhost", "127.0.0.1"]);
    std::fs::write(&files.cert, cert).expect("write cert");
    assert_eq!(handshake(&tls, &new_ca).await, Ok(()));
    assert_eq!(handshake(&tls, &new_ca).await, Ok(()), "not retried");
}
