//! The forward proxy in cluster mode: UserUpstreams and their password
//! Secrets applied to the rig's API server, compiled by a real operator and
//! served by a real data plane on its `--proxy-addr` and `--socks-addr`.
//! A password rotation (a new revision) cuts that user's open tunnel and no
//! one else's; deleting a user cuts its tunnels. Clients are curl and raw
//! CONNECTs; targets are small servers on loopback.

use std::net::SocketAddr;

use postern_harness::{closed_within, echo_roundtrip, echo_target, text_target};
use postern_tests::resources::{apply_secret, create, delete};
use postern_tests::spine::{Spine, WAIT};
use postern_tests::{eventually, rig_or_skip};
use serde_json::json;
use tokio::net::TcpStream;

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
                    // The targets are on loopback, which users are denied by default.
                    "allowInternalNetworks": ["127.0.0.0/8"],
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
    // The schema refuses what is no network at all.
    let refused = create(
        &spine.client,
        ns,
        json!({"kind": "UserUpstream", "metadata": {"name": "dave"}, "spec": {
            "user": "dave",
            "passwordSecretRef": {"name": "alice-pw"},
            "upstream": "direct://",
            "allowInternalNetworks": ["localhost"],
        }}),
    )
    .await;
    let err = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("allowInternalNetworks"), "{err}");

    let dp = spine.dataplane();
    let target = text_target(|_| "hello".to_string()).await;
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
    assert!(echo_roundtrip(&mut alice, b"a1").await && echo_roundtrip(&mut bob, b"b1").await);

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
        echo_roundtrip(&mut bob, b"b2").await,
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

/// curl's final status and body (status 0 when none).
async fn curl(args: &[&str]) -> (u16, String) {
    let out = postern_harness::curl(args).await;
    (out.status, out.body)
}

async fn open_tunnel(
    proxy: SocketAddr,
    user: &str,
    password: &str,
    target: SocketAddr,
) -> TcpStream {
    let tunnel = postern_harness::open_tunnel(proxy, user, password, target).await;
    tunnel.unwrap_or_else(|e| panic!("CONNECT as {user}: {e}"))
}
