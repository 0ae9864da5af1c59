//! Start-up behaviour of the binary: clear errors and exit codes.

use std::time::Duration;

use postern_harness::{Manifests, Postern, run_to_exit, tmp_dir};

#[test]
fn agent_needs_a_server_token_and_service() {
    let (code, stderr) = run_to_exit(&["agent"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--server"), "{stderr}");
    let (code, stderr) = run_to_exit(&[
        "agent",
        "--server",
        "127.0.0.1:9443",
        "--token-file",
        "/nonexistent/token",
        "--to",
        "http://127.0.0.1:3000",
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("/nonexistent/token"), "{stderr}");
}

#[test]
fn dataplane_without_a_token_fails() {
    let (code, stderr) = run_to_exit(&["dataplane", "--operator", "127.0.0.1:1"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("POSTERN_SYNC_TOKEN"), "{stderr}");
}

#[test]
fn missing_manifests_folder_fails() {
    let dir = tmp_dir("missing").join("nope");
    let dir = dir.to_str().expect("utf-8");
    let (code, stderr) = run_to_exit(&["standalone", "--manifests", dir]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot read the manifests directory"),
        "{stderr}"
    );
}

#[test]
fn a_busy_admin_port_fails_clearly() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = busy.local_addr().expect("addr").to_string();
    let manifests = Manifests::example("busy");
    let dir = manifests.path().to_str().expect("utf-8");
    let (code, stderr) = run_to_exit(&["standalone", "--manifests", dir, "--admin-addr", &addr]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot bind the admin listener"),
        "{stderr}"
    );
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods() {
    let p = Postern::standalone(Manifests::example("paths"))
        .start()
        .await;
    assert_eq!(p.get("/api/v1/nothing").await.0, 404);
    let mut s = tokio::net::TcpStream::connect(p.admin)
        .await
        .expect("connect");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(
        b"POST /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("write");
    let mut buf = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut buf))
        .await
        .expect("in time")
        .expect("read");
    assert!(buf.starts_with("HTTP/1.1 405"), "{buf}");
    assert!(
        buf.to_ascii_lowercase().contains("allow: get, head"),
        "{buf}"
    );
}
