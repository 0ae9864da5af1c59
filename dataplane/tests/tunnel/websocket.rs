//! The WebSocket transport: an agent that reaches the data plane only
//! through its HTTPS listener (`wss://.../.well-known/postern/tunnel`)
//! serves its tunnel like one on the tunnel port, big bodies included.

use postern_harness::{Agent, Backend, tmp_dir};

use crate::rig::{CONNECT, Rig, host_tunnel};

#[tokio::test]
async fn an_agent_on_wss_through_the_https_listener_serves_its_tunnel() {
    let local = Backend::start("laptop");
    let rig = Rig::start(
        "tunnel-wss",
        "ed25519",
        &[host_tunnel("app", &["app.test"])],
    )
    .await;
    let token = rig.key.token(&["default/app"], "1h");
    // The URL names the listener's address; --server-name gives the TLS
    // name and the Host the data plane routes the upgrade by.
    let url = format!(
        "wss://127.0.0.1:{}/.well-known/postern/tunnel",
        rig.postern.https.port()
    );
    let agent = Agent::builder_for(&url, "app.test", &rig.ca_file, &token, &[&local.url()]).spawn();
    agent.wait_status("connected", 1, CONNECT).await;
    assert!(
        rig.postern.log().contains("transport=\"websocket\"")
            || rig.postern.log().contains("transport=websocket"),
        "{}",
        rig.postern.log()
    );

    let r = rig.https("app.test", "/over-wss?x=1", &[]).await;
    assert_eq!(r.status, 200, "{r:?}\n{}", agent.log());
    assert_eq!(r.json()["uri"], "/over-wss?x=1");
    let body = tmp_dir("tunnel-wss-body").join("body");
    std::fs::write(&body, vec![b'w'; 8 * 1024 * 1024 + 1]).expect("body");
    let data = format!("@{}", body.display());
    let r = rig
        .https("app.test", "/sink", &["--data-binary", &data])
        .await;
    assert_eq!((r.status, r.body.as_str()), (200, "8388609"), "{r:?}");

    // Over plain HTTP the endpoint refuses (the token would travel in clear).
    let r = rig
        .http(
            "app.test",
            "/.well-known/postern/tunnel",
            &["-H", "Connection: Upgrade", "-H", "Upgrade: websocket"],
        )
        .await;
    assert_ne!(r.status, 101, "{r:?}");
}
