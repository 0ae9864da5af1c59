//! The admin dashboard in headless Chromium (`e2e/dashboard/dashboard.py`,
//! over the DevTools protocol) against `postern standalone` with an admin
//! and a read-only token: sign in, every page (screenshots in
//! `target/dashboard/`), a site added to the manifests folder shows up
//! within a poll of the API listing it, the request log filtered by host
//! and status, a request arriving in the live tail, a user's connection and
//! a tunnel's agent cut with Disconnect, CSRF, the admin token rotated in its file, the
//! read-only role refused actions, logout, and every documented API
//! operation answering 401 without credentials.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postern_harness::oauth::{Need, Tools};
use postern_harness::{
    Agent, Backend, Ca, LOOPBACK_ALLOWED, Manifests, Postern, TunnelKey, closed_port, documents,
    echo_target, harness_read_token_file, repo_root, target_yaml, tls_secret, tmp_dir, tunnel_yaml,
    user_yaml,
};
use serde_json::Value;

/// The site page may trail the API by one poll (1 s) plus fetch and render;
/// the script enforces its own bound, this one keeps the report honest.
const PAGE_AFTER_API_MS: u64 = 1500;
/// The name on the agent listener's certificate.
const TUNNEL_SERVER: &str = "tunnel.postern.test";

/// A self-signed certificate for `host` that expires in `days` days.
fn expiring(host: &str, days: u64) -> (String, String) {
    let mut params = rcgen::CertificateParams::new(vec![host.to_string()]).expect("params");
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + since_epoch - Duration::from_secs(86_400);
    // Half a day on top, so that "days left" is not on a boundary.
    params.not_after = epoch + since_epoch + Duration::from_secs(days * 86_400 + 43_200);
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("certificate");
    (cert.pem(), key.serialize_pem())
}

fn tls_site(name: &str, host: &str, backend: &str, days: u64) -> String {
    let (cert, key) = expiring(host, days);
    let tls = format!("  tls: {{secretRef: {{name: {name}-tls}}}}\n");
    documents(&[
        target_yaml(name, &[host], backend, &tls),
        tls_secret(&format!("{name}-tls"), &cert, &key),
    ])
}

fn manifests(backend: &Backend, key: &TunnelKey) -> Manifests {
    let down = closed_port();
    let web = documents(&[
        target_yaml(
            "web",
            &["web.localhost"],
            &backend.url(),
            "  auth: {type: none}\n",
        ),
        // A route whose backend refuses connections: the 5xx rows of the log.
        format!(
            "apiVersion: postern.io/v1alpha1\nkind: Route\nmetadata: {{name: web-down, namespace: default}}\nspec:\n  targetRef: {{name: web}}\n  match: {{path: {{type: Prefix, value: /down/}}}}\n  priority: 10\n  backend: {{url: \"http://{down}\"}}\n"
        ),
    ]);
    let certs = documents(&[
        tls_site("red", "red.localhost", &backend.url(), 3),
        tls_site("amber", "amber.localhost", &backend.url(), 14),
    ]);
    let users = user_yaml("alice", "alice-pw", "direct://", None, LOOPBACK_ALLOWED);
    let tunnel = documents(&[
        key.secret_yaml("agent-key"),
        tunnel_yaml(
            "laptop",
            "agent-key",
            "  mode: http\n  hostnames: [laptop.localhost]\n",
        ),
    ]);
    Manifests::new("dashboard")
        .with("web.yaml", &web)
        .with("tunnel.yaml", &tunnel)
        .with("certs.yaml", &certs)
        .with("users.yaml", &users)
}

fn arg(path: &Path) -> String {
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_works_in_a_browser() {
    let Some(tools) = Tools::find(&[Need::Chromium]) else {
        return;
    };
    let backend = Backend::start("web");
    let echo = echo_target().await;
    let key = TunnelKey::generate("hs256");
    let manifests = manifests(&backend, &key);
    let ca = Ca::new("dashboard CA");
    let secrets = tmp_dir("dashboard-tokens");
    let admin_token = secrets.join("admin");
    std::fs::write(&admin_token, "dashboard-admin-token-0123456789").expect("write token");
    // The harness reads the admin API with its own read-only token; giving
    // the same file here keeps that working while the flag is exercised.
    let read_token = harness_read_token_file();
    let p = Postern::standalone(manifests.path())
        .arg("--admin-token-file")
        .arg(&admin_token)
        .arg("--admin-read-token-file")
        .arg(read_token)
        .tunnel_tls(&ca.leaf(&[TUNNEL_SERVER]))
        .start()
        .await;
    let agent = Agent::builder(
        p.tunnel.expect("the data plane serves --tunnel-addr"),
        TUNNEL_SERVER,
        &ca.write(&secrets),
        &key.token(&["default/laptop"], "1h"),
        &[&format!("default/laptop={}", backend.url())],
    )
    .spawn();
    agent
        .wait_status("connected", 1, Duration::from_secs(20))
        .await;
    let out_dir = repo_root().join("target/dashboard");
    let args = [
        "--admin".into(),
        format!("http://{}", p.admin),
        "--token-file".into(),
        arg(&admin_token),
        "--read-token-file".into(),
        arg(read_token),
        "--manifests".into(),
        arg(p.manifests()),
        "--site".into(),
        format!("http://web.localhost:{}/", p.http.port()),
        "--backend".into(),
        backend.url(),
        "--error-path".into(),
        "/down/".into(),
        "--proxy".into(),
        format!("http://{}", p.proxy),
        "--proxy-user".into(),
        "alice:alice-pw".into(),
        "--proxy-target".into(),
        echo.to_string(),
        "--tunnel".into(),
        "default/laptop".into(),
        "--expect-expiry".into(),
        "red.localhost=red,amber.localhost=amber".into(),
        "--out".into(),
        arg(&out_dir),
    ];
    let script = repo_root().join("e2e/dashboard/dashboard.py");
    let postern_harness::oauth::Report {
        ok,
        json: report,
        stderr,
    } = tools.run_file(&script, &args, 240).await;
    let pretty = serde_json::to_string_pretty(&report).unwrap_or_default();
    assert!(
        ok && report["ok"] == true,
        "dashboard.py failed: {pretty}\nstderr:\n{stderr}\npostern log:\n{}",
        p.log()
    );
    eprintln!("{pretty}");

    assert_eq!(report["role"], "admin");
    assert_eq!(report["cookie"]["httpOnly"], true, "{pretty}");
    assert_eq!(report["cookie"]["sameSite"], "Strict", "{pretty}");
    // A data plane serves every page but the operator's data-plane list.
    let pages: Vec<&str> = report["pages"]
        .as_array()
        .expect("pages")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for page in [
        "overview",
        "sites",
        "users",
        "tunnels",
        "certificates",
        "requests",
    ] {
        assert!(pages.contains(&page), "{page} missing: {pages:?}");
        let shot = out_dir.join(format!("{page}.png"));
        let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("{}: {e}", shot.display()));
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 5_000,
            "{}",
            shot.display()
        );
    }
    assert_eq!(report["hidden_pages"], serde_json::json!(["dataplanes"]));

    let site = &report["new_site"];
    let lag = site["page_ms_after_api"].as_u64();
    assert!(lag.is_some_and(|ms| ms <= PAGE_AFTER_API_MS), "{site}");
    assert_eq!(
        report["certificates"]["red.localhost"][0], "red",
        "{pretty}"
    );
    assert_eq!(
        report["certificates"]["amber.localhost"][0], "amber",
        "{pretty}"
    );

    let refusals = &report["refusals"];
    assert!(refusals["rejected"].as_str().is_some(), "{pretty}");
    assert!(refusals["refused"].as_str().is_some(), "{pretty}");

    let filters = &report["filters"];
    assert!(filters["200"]["rows"].as_u64() >= Some(3), "{filters}");
    assert!(filters["5xx"]["rows"].as_u64() >= Some(2), "{filters}");
    assert!(
        filters["bad_status_message"]
            .as_str()
            .is_some_and(|m| m.starts_with("400")),
        "{filters}"
    );
    assert_eq!(report["live"]["status"], 200);
    assert_eq!(report["live"]["first_row_path"], report["live"]["path"]);
    assert_eq!(report["disconnect"]["connection_closed"], true);
    // The agent's session was cut: it dialled again.
    let tunnel = &report["tunnel_disconnect"];
    assert!(tunnel["toast"].as_str().is_some(), "{pretty}");
    agent
        .wait_status("connected", 2, Duration::from_secs(20))
        .await;

    assert_eq!(
        report["csrf"],
        serde_json::json!({"missing": 403, "wrong": 403, "right": 200, "session_via": "cookie"})
    );
    // Rotation without restart: the open page is signed out, the new token works.
    assert_eq!(report["rotation"]["old_token_status"], 401, "{pretty}");
    assert_eq!(report["rotation"]["role"], "admin", "{pretty}");
    assert_eq!(report["logout"]["overview_status"], 401);
    let read = &report["read_only"];
    assert_eq!(read["role"], "read");
    assert_eq!(read["disconnect_buttons"], 0);
    assert_eq!(read["cookie_post"], 403);
    for action in [
        "/api/v1/users/nobody/disconnect",
        "/api/v1/tunnels/default/nobody/disconnect",
    ] {
        assert_eq!(read[action]["status"], 403, "{read}");
    }

    let sweep = &report["sweep"];
    assert_eq!(sweep["wrong"], serde_json::json!([]), "{sweep}");
    assert!(sweep["protected"].as_u64() >= Some(10), "{sweep}");
}
