//! `docs/metrics.md` is the data plane's metrics as they are: a live
//! `postern standalone` fed hostile input (made-up hosts, paths, proxy
//! users, bearer tokens, tunnel names, TLS garbage) exports only documented
//! families, with documented types and labels, and no label carries what a
//! client sent; every family the source registers is on the page, and the
//! page lists none that is gone.

mod metrics_doc;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics_doc::{MetricsDoc, check_exposition};
use postern_harness::oauth::OauthSetup;
use postern_harness::{
    Agent, Backend, Ca, LOOPBACK_ALLOWED, TunnelKey, curl, eventually, target_yaml, tmp_dir,
    tunnel_yaml, user_yaml,
};
use tokio::io::AsyncWriteExt;

/// On every made-up value the test sends: found in a scrape, it leaked.
fn marker() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("zq{nanos}")
}

const TUNNEL_NAME: &str = "tunnel.metrics.test";

#[tokio::test]
async fn a_live_data_plane_exports_documented_families_with_bounded_labels() {
    let doc = MetricsDoc::load();
    assert_eq!(doc.problems(), Vec::<String>::new());
    let m = marker();
    let backend = Backend::start("metrics");
    let key = TunnelKey::generate("es256");
    let tunnel_ca = Ca::new("metrics tunnel CA");
    let tunnel_leaf = tunnel_ca.leaf(&[TUNNEL_NAME]);
    let tunnel_files = tunnel_leaf.write(&tmp_dir("metrics-tunnel-cert"));
    let tunnel_ca_file = tunnel_ca.write(&tmp_dir("metrics-tunnel-ca"));
    let rig = OauthSetup::new("metrics-documented")
        .github_server("auth", "auth.test", "http://127.0.0.1:9", "")
        .protect("mcp", "mcp.test", &backend.url(), "auth", "")
        .doc(target_yaml("plain", &["plain.test"], &backend.url(), ""))
        .doc(user_yaml(
            "alice",
            "alice-pw",
            "direct://",
            None,
            LOOPBACK_ALLOWED,
        ))
        .doc(key.secret_yaml("laptop-key"))
        .doc(tunnel_yaml(
            "laptop",
            "laptop-key",
            "  mode: http\n  hostnames: [laptop.test]\n",
        ))
        .args([
            "--tunnel-cert".to_string(),
            tunnel_files.cert.display().to_string(),
            "--tunnel-key".to_string(),
            tunnel_files.key.display().to_string(),
        ])
        .start()
        .await;
    let p = &rig.postern;
    let tunnel_addr = p.tunnel.expect("the tunnel listener is served");

    // Agents: one for the configured Tunnel, one naming a made-up one.
    let good = key.token(&["default/laptop"], "1h");
    let agent = Agent::builder(
        tunnel_addr,
        TUNNEL_NAME,
        &tunnel_ca_file,
        &good,
        &[&format!("default/laptop={}", backend.url())],
    )
    .spawn();
    let made_up_tunnel = format!("default/{m}t");
    let made_up = key.token(&[&made_up_tunnel], "1h");
    let to = format!("{made_up_tunnel}={}", backend.url());
    let stranger =
        Agent::builder(tunnel_addr, TUNNEL_NAME, &tunnel_ca_file, &made_up, &[&to]).spawn();
    agent
        .wait_status("connected", 1, Duration::from_secs(20))
        .await;
    stranger
        .wait_status("refused", 1, Duration::from_secs(20))
        .await;

    // The reverse proxy: unknown hosts and paths, a tunnel, the guard.
    let http = p.http;
    let host_header = format!("Host: {m}h.test");
    let unknown = format!("http://{http}/{m}p");
    curl(&["-H", &host_header, &unknown]).await;
    for host in ["plain.test", "laptop.test"] {
        let resolve = format!("{host}:{}:127.0.0.1", http.port());
        let url = format!("http://{host}:{}/{m}q?{m}=1", http.port());
        let r = curl(&["--resolve", &resolve, &url]).await;
        assert_eq!(r.status, 200, "{host}: {r:?}");
    }
    let https = |host: &str, path: &str| {
        let resolve = format!("{host}:{}:127.0.0.1", p.https.port());
        let url = format!("https://{host}:{}{path}", p.https.port());
        (resolve, url)
    };
    let ca = rig.ca_file.display().to_string();
    let bearer = format!("Authorization: Bearer {m}b");
    let (resolve, url) = https("mcp.test", &format!("/{m}r"));
    curl(&["--cacert", &ca, "--resolve", &resolve, &url]).await;
    let r = curl(&["--cacert", &ca, "--resolve", &resolve, "-H", &bearer, &url]).await;
    assert_eq!(r.status, 401, "a made-up bearer token: {r:?}");
    for path in [
        "/.well-known/oauth-authorization-server".to_string(),
        format!("/{m}o"),
    ] {
        let (resolve, url) = https("auth.test", &path);
        curl(&["--cacert", &ca, "--resolve", &resolve, &url]).await;
    }
    let (resolve, url) = https("auth.test", "/token");
    let form = format!("grant_type={m}g&client_id={m}c");
    curl(&["--cacert", &ca, "--resolve", &resolve, "-d", &form, &url]).await;
    // Not TLS on the TLS listener.
    if let Ok(mut s) = tokio::net::TcpStream::connect(p.https).await {
        let _ = s.write_all(format!("{m} hello\r\n\r\n").as_bytes()).await;
        let _ = s.shutdown().await;
    }

    // The forward proxy: a made-up user, then alice to the backend and to
    // a made-up destination.
    let target = backend.url();
    let stranger_proxy = p.proxy_url(&format!("{m}u"), &format!("{m}pw"));
    let r = curl(&["-x", &stranger_proxy, &target]).await;
    assert_eq!(r.status, 407, "{r:?}");
    let socks = p.socks_url(&format!("{m}s"), "pw");
    curl(&["--socks5-hostname", &socks, &target]).await;
    let alice = p.proxy_url("alice", "alice-pw");
    let r = curl(&["-x", &alice, &format!("{target}/{m}f")]).await;
    assert_eq!(r.status, 200, "{r:?}");
    let nowhere = format!("https://{m}d.invalid/");
    curl(&["-x", &alice, "--connect-timeout", "5", &nowhere]).await;

    // Every path exercised shows; then the whole scrape is checked.
    let want = [
        r#"postern_reverse_requests_total{outcome="unknown_host"}"#,
        r#"postern_proxy_errors_total{user="",kind="auth"}"#,
        r#"postern_proxy_relays_total{user="alice"}"#,
        r#"postern_tunnel_refusals_total{tunnel="-",reason="unknown_tunnel"}"#,
        r#"postern_tunnel_agents{tunnel="default/laptop"}"#,
        r#"postern_tunnel_streams_total{tunnel="default/laptop",kind="http"}"#,
        r#"postern_oauth_guard_decisions_total{result="invalid_token"}"#,
        r#"postern_oauth_requests_total{endpoint="metadata",class="2xx"}"#,
        r#"postern_reverse_dropped_connections_total{listener="https",reason="tls_handshake"}"#,
    ];
    let text = eventually(
        "every exercised family in /metrics",
        Duration::from_secs(10),
        || async {
            let text = p.metrics().await;
            let missing: Vec<&str> = want.iter().copied().filter(|w| !text.contains(w)).collect();
            if missing.is_empty() {
                Ok(text)
            } else {
                Err(missing)
            }
        },
    )
    .await;

    let users = BTreeSet::from(["alice", ""]);
    let tunnels = BTreeSet::from(["default/laptop", "-"]);
    let configured = |_: &str, label: &str, value: &str| match label {
        "user" => users.contains(value),
        "tunnel" => tunnels.contains(value),
        _ => false,
    };
    let derived = |_: &str, label: &str, value: &str| match label {
        "version" => value.len() == 32 && value.bytes().all(|b| b.is_ascii_hexdigit()),
        "schema" => !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()),
        _ => false,
    };
    let problems = check_exposition(&doc, &text, &configured, &derived);
    assert_eq!(problems, Vec::<String>::new(), "in\n{text}");
    assert!(
        !text.contains(&m),
        "a value a client sent ({m}...) reached /metrics:\n{text}"
    );
    drop(agent);
    drop(stranger);
}

/// The `"name"` literal of every `.register(` call in `src`, outside test
/// modules, with the `sub_registry_with_prefix` literals of the same file.
fn registrations(src: &str) -> (Vec<String>, Vec<String>) {
    let code = src.split("#[cfg(test)]").next().unwrap_or(src);
    let literal_after = |call: &str| -> Vec<String> {
        code.match_indices(call)
            .filter_map(|(i, _)| {
                let rest = code[i + call.len()..].trim_start();
                let rest = rest.strip_prefix('"')?;
                rest.split('"').next().map(str::to_string)
            })
            .collect()
    };
    (
        literal_after(".register("),
        literal_after(".sub_registry_with_prefix("),
    )
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The scrape above shows a labelled family only once it has a series, so
/// the source is read too: every family registered for the data plane is
/// documented, and every documented data-plane family is registered.
#[test]
fn every_family_the_source_registers_is_documented() {
    let doc = MetricsDoc::load();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in ["dataplane/src", "acme/src"] {
        rust_files(&root.join(dir), &mut files);
    }
    let mut registered = BTreeSet::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read source");
        assert!(
            !text.contains(".register_with_unit("),
            "{}: a unit suffix is not read here; extend this test",
            file.display()
        );
        let (names, prefixes) = registrations(&text);
        for name in names {
            // The data plane's registry is prefixed `postern`; a feature's
            // sub-registry adds its own word.
            let full = match prefixes.as_slice() {
                [] => format!("postern_{name}"),
                [prefix] => format!("postern_{prefix}_{name}"),
                more => panic!("{}: prefixes {more:?}", file.display()),
            };
            registered.insert(full);
        }
    }
    assert!(
        registered.len() > 30,
        "only {registered:?} found: the scan is broken"
    );
    doc.assert_lists(&registered, |n| !n.starts_with("postern_operator_"));
}
