//! The admin API's view of tunnels: the agent connected to a Tunnel is
//! listed (active, its address and version), and the admin's disconnect
//! cuts it; the agent reconnects on its own.

use postern_harness::{Backend, call, tmp_dir, wait_for};
use serde_json::Value;

use crate::rig::{CONNECT, Rig, host_tunnel};

#[tokio::test]
async fn the_admin_lists_and_disconnects_a_tunnels_agent() {
    let token_file = tmp_dir("tunnel-admin").join("admin");
    std::fs::write(&token_file, "tunnel-admin-token\n").expect("token");
    let local = Backend::start("laptop");
    let rig = Rig::start_with(
        "tunnel-admin",
        "ed25519",
        &[host_tunnel("app", &["app.test"])],
        &[format!("--admin-token-file={}", token_file.display())],
    )
    .await;
    let token = rig.key.token(&["default/app"], "1h");
    let agent = rig.agent(&token, &[local.url().as_str()]);
    agent.wait_status("connected", 1, CONNECT).await;

    let tunnels = wait_for("the agent is listed", CONNECT, || async {
        let (status, body) = rig.postern.get("/api/v1/tunnels").await;
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).expect("json");
        (v["items"][0]["agents"].as_array().map_or(0, Vec::len) == 1).then_some(v)
    })
    .await;
    let app = &tunnels["items"][0];
    assert_eq!(app["id"], "default/app");
    assert_eq!(app["mode"], "http");
    assert_eq!(app["agents"][0]["active"], true);
    assert!(
        app["agents"][0]["remote"]
            .as_str()
            .is_some_and(|r| r.starts_with("127.0.0.1:"))
    );

    let path = "/api/v1/tunnels/default/app/disconnect";
    let admin = rig.postern.admin;
    assert_eq!(
        call(
            admin,
            "POST",
            path,
            Some(postern_harness::HARNESS_READ_TOKEN),
            ""
        )
        .await
        .0,
        403
    );
    let (status, body) = call(admin, "POST", path, Some("tunnel-admin-token"), "").await;
    assert_eq!((status, body.as_str()), (200, "{\"disconnected\":1}"));
    // Cut, then back by itself.
    agent.wait_status("reconnecting", 1, CONNECT).await;
    agent.wait_status("connected", 2, CONNECT).await;
    let r = rig.https("app.test", "/", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
}
