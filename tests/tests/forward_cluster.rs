//! The forward proxy in cluster mode: UserUpstreams and their password
//! Secrets applied to the rig's API server, compiled by a real operator and
//! served by a real data plane on its `--proxy-addr` and `--socks-addr`.
//! A password rotation (a new revision) cuts that user's open tunnel and no
//! one else's; deleting a user cuts its tunnels. Clients are curl and raw
//! CONNECTs; targets are small servers on loopback.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use postern_tests::resources::{apply_secret, create, delete};
use postern_tests::spine::{Spine, WAIT};
use postern_tests::{eventually, rig_or_skip};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_served_and_a_rotation_cuts_only_that_users_tunnels() {
    let spine = Spine::start(rig_or_skip!(), "fwd").await;
    let ns = spine.ns();
    for (user, password) in [("alice", "pw1"), ("bob", "pw2")] {
        apply_secret(
            &spine.client,
            ns,
            &format!("{user}-pw"),
            &[("password", password)],
        )
        .await;
        spine
            .create(
                json!({"kind": "UserUpstream", "metadata": {"name": user}, "spec": {
                    "user": user,
                    "passwordSecretRef": {"name": format!("{user}-pw"), "key": "password"},
                    "upstream": "direct://",
                }}),
            )
            .await;
        spine.programmed("UserUpstream", user, 1, WAIT).await;
    }
    // The schema's CEL rule: an upstream CA only for https:// upstreams.
    let refused = create(
        &spine.client,
        ns,
        json!({"kind": "UserUpstream", "metadata": {"name": "carol"}, "spec": {
            "user": "carol",
            "passwordSecretRef": {"name": "alice-pw"},
            "upstream": "http://proxy.internal:3128",
            "upstreamCaSecretRef": {"name": "carol-ca"},
        }}),
    )
    .await;
    let err = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        err.contains("upstreamCaSecretRef applies only to https://"),
        "{err}"
    );

    let dp = spine.dataplane();
    let target = http_target().await;
    let echo = echo_target().await;
    let url = format!("http://{target}/");

    assert_eq!(
        curl(&["-x", &format!("http://alice:pw1@{}", dp.proxy), &url]).await,
        (200, "hello".into())
    );
    assert_eq!(
        curl(&["-p", "-x", &format!("http://bob:pw2@{}", dp.proxy), &url]).await,
        (200, "hello".into())
    );
    assert_eq!(
        curl(&["--socks5-hostname", &format!("bob:pw2@{}", dp.socks), &url]).await,
        (200, "hello".into())
    );
    assert_eq!(
        curl(&["-x", &format!("http://alice:wrong@{}", dp.proxy), &url])
            .await
            .0,
        407
    );

    let mut alice = open_tunnel(dp.proxy, "alice", "pw1", echo).await;
    let mut bob = open_tunnel(dp.proxy, "bob", "pw2", echo).await;
    assert!(roundtrip(&mut alice, b"a1").await && roundtrip(&mut bob, b"b1").await);

    // Rotating alice's password cuts alice's tunnel, not bob's.
    apply_secret(
        &spine.client,
        ns,
        "alice-pw",
        &[("password", "pw1-rotated")],
    )
    .await;
    assert!(
        closed_within(&mut alice, WAIT).await,
        "alice's tunnel outlived the rotation"
    );
    assert!(
        roundtrip(&mut bob, b"b2").await,
        "bob's tunnel must survive"
    );
    let rotated = format!("http://alice:pw1-rotated@{}", dp.proxy);
    eventually("the rotated password", WAIT, || async {
        let got = curl(&["-x", &rotated, &url]).await;
        if got.0 == 200 { Ok(()) } else { Err(got) }
    })
    .await;
    assert_eq!(
        curl(&["-x", &format!("http://alice:pw1@{}", dp.proxy), &url])
            .await
            .0,
        407
    );

    // Deleting bob cuts bob's tunnel.
    delete(&spine.client, ns, "UserUpstream", "bob").await;
    assert!(
        closed_within(&mut bob, WAIT).await,
        "bob's tunnel outlived bob"
    );
    assert_eq!(
        curl(&["-x", &format!("http://bob:pw2@{}", dp.proxy), &url])
            .await
            .0,
        407
    );
}

/// `curl -sS <args>`: the status and body (status 0 when none).
async fn curl(args: &[&str]) -> (u16, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new("curl")
            .args(["-sS", "--max-time", "15", "-o", "-", "-w", "\n%{http_code}"])
            .args(args)
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("curl finished")
    .expect("curl runs (e2e/rig installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

async fn http_target() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
                    )
                    .await;
            });
        }
    });
    addr
}

async fn echo_target() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

async fn open_tunnel(
    proxy: SocketAddr,
    user: &str,
    password: &str,
    target: SocketAddr,
) -> TcpStream {
    let creds = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut s = TcpStream::connect(proxy)
        .await
        .expect("connect to the proxy");
    let req = format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: Basic {creds}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("CONNECT");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte))
            .await
            .expect("an answer to CONNECT")
            .expect("read");
        assert!(
            n > 0,
            "closed during CONNECT: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

async fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> bool {
    if s.write_all(msg).await.is_err() {
        return false;
    }
    let mut got = vec![0u8; msg.len()];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got)).await,
        Ok(Ok(_))
    ) && got == msg
}

async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 64];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}
