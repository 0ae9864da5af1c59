//! The admin API on a real `postern standalone`: roles and their refusals,
//! token rotation without a restart, the read endpoints (sites in match
//! order, users with live connections, certificates with expiry), cutting a
//! user's open CONNECT tunnel, the request log's query API, and the OpenAPI
//! document checked against every answer (`e2e/admin/openapi_check.py`).

use std::time::Duration;

use postern_harness::oauth::Tools;
use postern_harness::{
    Ca, LOOPBACK_ALLOWED, PATIENCE, Postern, call, documents, http_target, prefix_route_yaml,
    target_yaml, tls_secret, tmp_dir, user_yaml, wait_for,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ADMIN: &str = "admin-token-one";
/// The harness's read token (every postern it starts trusts it, and its
/// waits use it).
const READ: &str = postern_harness::HARNESS_READ_TOKEN;

async fn json(p: &Postern, path: &str, token: &str) -> Value {
    let (status, body) = call(p.admin, "GET", path, Some(token), "").await;
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_answers_by_role_and_matches_its_document() {
    let dir = tmp_dir("admin-api");
    let admin_file = dir.join("admin");
    std::fs::write(&admin_file, format!("{ADMIN}\n")).expect("token");
    let read_file = postern_harness::harness_read_token_file();
    let target = http_target().await;
    let ca = Ca::new("admin api CA");
    let leaf = ca.leaf(&["web.test", "www.web.test"]);
    let docs = documents(&[
        tls_secret("web-tls", &leaf.cert, &leaf.key),
        target_yaml(
            "web",
            &["web.test"],
            &format!("http://{target}"),
            "  tls: {secretRef: {name: web-tls}}\n  redirectHttp: false\n",
        ),
        prefix_route_yaml("api", "web", "/api", "  priority: 5\n"),
        prefix_route_yaml("api-v2", "web", "/api/v2", "  priority: 5\n"),
        user_yaml("alice", "pw", "direct://", None, LOOPBACK_ALLOWED),
    ]);
    let p = Postern::standalone_with("admin-api", &[("all.yaml", docs)])
        .json_logs()
        .arg(format!("--admin-token-file={}", admin_file.display()))
        .start()
        .await;

    // Probes and the scrape are open; everything else asks first.
    assert_eq!(call(p.admin, "GET", "/healthz", None, "").await.0, 200);
    assert_eq!(call(p.admin, "GET", "/metrics", None, "").await.0, 200);
    assert_eq!(
        call(p.admin, "GET", "/api/v1/openapi.json", None, "")
            .await
            .0,
        200
    );
    for path in ["/api/v1/snapshot", "/api/v1/sites", "/api/v1/nothing-here"] {
        let (status, body) = call(p.admin, "GET", path, None, "").await;
        assert_eq!(status, 401, "{path}: {body}");
        assert_eq!(call(p.admin, "GET", path, Some("wrong"), "").await.0, 401);
    }
    assert_eq!(
        call(p.admin, "GET", "/api/v1/nothing-here", Some(READ), "")
            .await
            .0,
        404
    );

    // Sites and their routes in the order the router tries them: the
    // longer prefix first at equal priority, the target's default last.
    let sites = json(&p, "/api/v1/sites", READ).await;
    let web = &sites["items"][0];
    assert_eq!(web["id"], "default/web");
    assert_eq!(web["tls"], true);
    let order: Vec<&str> = web["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .filter_map(|r| r["path"]["value"].as_str())
        .collect();
    assert_eq!(order, ["/api/v2", "/api"], "{web}");

    // Certificates: names and expiry from the certificate itself.
    let certs = json(&p, "/api/v1/certificates", READ).await;
    let cert = &certs["items"][0];
    assert_eq!(
        cert["hostnames"],
        serde_json::json!(["web.test", "www.web.test"])
    );
    assert_eq!(cert["source"], "secret");
    assert!(cert["daysLeft"].as_i64().is_some_and(|d| d > 0), "{cert}");
    assert!(!certs.to_string().contains("PRIVATE KEY"));

    // A live CONNECT tunnel of alice's, then the admin cuts it.
    let mut tunnel = TcpStream::connect(p.proxy).await.expect("proxy");
    let auth = base64_basic("alice", "pw");
    let connect = format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: Basic {auth}\r\n\r\n"
    );
    tunnel.write_all(connect.as_bytes()).await.expect("connect");
    let mut head = [0u8; 64];
    let n = tunnel.read(&mut head).await.expect("reply");
    assert!(
        head[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&head[..n])
    );
    let users = json(&p, "/api/v1/users", READ).await;
    assert_eq!(users["items"][0]["name"], "alice");
    assert_eq!(users["items"][0]["connections"], 1, "{users}");
    assert_eq!(users["items"][0]["upstream"], "direct");

    let cut_path = "/api/v1/users/alice/disconnect";
    assert_eq!(call(p.admin, "POST", cut_path, Some(READ), "").await.0, 403);
    assert_eq!(call(p.admin, "POST", cut_path, None, "").await.0, 401);
    let (status, body) = call(p.admin, "POST", cut_path, Some(ADMIN), "").await;
    assert_eq!((status, body.as_str()), (200, "{\"cut\":1}"));
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(PATIENCE, tunnel.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(_)) | Ok(Err(_))),
        "the cut tunnel closes"
    );
    wait_for("alice has no connection left", PATIENCE, || async {
        let users = json(&p, "/api/v1/users", READ).await;
        (users["items"][0]["connections"] == 0).then_some(())
    })
    .await;

    // Requests through the site land in the request log, newest first.
    let url = format!("http://web.test:{}/api/v2/x", p.http.port());
    let resolve = format!("web.test:{}:127.0.0.1", p.http.port());
    for _ in 0..3 {
        let r = postern_harness::curl(&["--resolve", &resolve, &url]).await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    let log = wait_for("three requests in the log", PATIENCE, || async {
        let log = json(&p, "/api/v1/requests?host=web.test&status=2xx", READ).await;
        (log["items"].as_array().map_or(0, Vec::len) >= 3).then_some(log)
    })
    .await;
    let first = &log["items"][0];
    assert_eq!(first["path"], "/api/v2/x");
    assert_eq!(first["route"], "default/api-v2");
    assert_eq!(first["client"], "127.0.0.1");
    let none = json(&p, "/api/v1/requests?host=web.test&status=5xx", READ).await;
    assert_eq!(none["items"], serde_json::json!([]));
    let (status, body) = call(
        p.admin,
        "GET",
        "/api/v1/requests?status=abc",
        Some(READ),
        "",
    )
    .await;
    assert_eq!(status, 400, "{body}");

    // The document against every answer, when the OAuth venv (jsonschema) is here.
    if let Some(tools) = Tools::find(&[]) {
        let script = postern_harness::dirs::repo_root().join("e2e/admin/openapi_check.py");
        let args = [
            format!("--url=http://{}", p.admin),
            "--component=dataplane".into(),
            format!("--admin-token-file={}", admin_file.display()),
            format!("--read-token-file={}", read_file.display()),
        ];
        let report = tools.run_file(&script, &args, 180).await;
        let report = report.expect_ok("openapi check");
        assert!(
            report["checked"].as_u64().is_some_and(|n| n >= 15),
            "{report}"
        );
    }

    // Rotation without a restart: the new token works, the old one is refused.
    std::fs::write(&admin_file, "admin-token-two-longer\n").expect("rotate");
    wait_for(
        "the rotated admin token is in force",
        Duration::from_secs(10),
        || async {
            let (status, _) = call(
                p.admin,
                "GET",
                "/api/v1/session",
                Some("admin-token-two-longer"),
                "",
            )
            .await;
            (status == 200).then_some(())
        },
    )
    .await;
    assert_eq!(
        call(p.admin, "GET", "/api/v1/session", Some(ADMIN), "")
            .await
            .0,
        401
    );
    let session = json(&p, "/api/v1/session", READ).await;
    assert_eq!(session["role"], "read");
}

fn base64_basic(user: &str, password: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}
