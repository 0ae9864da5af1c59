//! The HTTP forward proxy in standalone mode with a `direct://` user: curl
//! through CONNECT and absolute-form, and every refusal's status.

use postern_harness::{
    Ca, LOOPBACK_ALLOWED, PATIENCE, Postern, closed_port, curl, echo_roundtrip, echo_target, field,
    http_target, open_tunnel, raw, tls_target, tmp_dir, user_yaml, wait_for,
};

const LIMITS: &str = "  maxConnections: 1\n";

async fn start() -> Postern {
    let files = [
        (
            "alice.yaml",
            user_yaml("alice", "pw", "direct://", None, LOOPBACK_ALLOWED),
        ),
        (
            "carol.yaml",
            user_yaml(
                "carol",
                "pw3",
                "direct://",
                None,
                &(LOOPBACK_ALLOWED.to_string()
                    + &format!(
                        "{LIMITS}  destinations: {{deny: [\"*.denied.test:*\", \"127.0.0.2\"]}}\n"
                    )),
            ),
        ),
        (
            "dave.yaml",
            user_yaml(
                "dave",
                "pw4",
                "direct://",
                None,
                &(LOOPBACK_ALLOWED.to_string()
                    + "  destinations: {deny: [\"127.0.0.0/8\", \"::1\"]}\n"),
            ),
        ),
    ];
    Postern::standalone_with("http", &files)
        .json_logs()
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_connect_and_absolute_form() {
    let p = start().await;
    let target = http_target().await;
    let url = format!("http://{target}/x");
    let plain = curl(&["-x", &p.proxy_url("alice", "pw"), &url]).await;
    assert_eq!(
        (plain.status, plain.body.as_str()),
        (200, "hello from 127.0.0.1"),
        "{plain:?}"
    );
    let tunnel = curl(&["-p", "-x", &p.proxy_url("alice", "pw"), &url]).await;
    assert_eq!(
        (tunnel.connect_code, tunnel.status),
        (200, 200),
        "{tunnel:?}"
    );
    assert_eq!(tunnel.body, "hello from 127.0.0.1");
    // Keep-alive: two absolute-form requests on one connection.
    let two = curl(&["-x", &p.proxy_url("alice", "pw"), &url, &url]).await;
    assert_eq!(
        two.body.matches("hello from 127.0.0.1").count(),
        2,
        "{two:?}"
    );
    // One log line per tunnel, with bytes and no password.
    let line = p
        .wait_log("a connect tunnel line", PATIENCE, |l| {
            field(l, "message") == "tunnel closed" && field(l, "inbound") == "connect"
        })
        .await;
    assert_eq!(field(&line, "user"), "alice");
    assert_eq!(field(&line, "destination"), target.to_string().as_str());
    assert_eq!(field(&line, "upstream"), "direct");
    assert!(
        field(&line, "bytes_down").as_u64().unwrap_or(0) > 0,
        "{line}"
    );
    assert!(!p.log().contains("pw\""), "a password reached the log");
    assert!(p.metric("postern_proxy_relays_total{user=\"alice\"}").await >= 3.0);
    assert!(
        p.metric("postern_proxy_bytes_down_total{user=\"alice\"}")
            .await
            > 0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_connect_to_a_tls_target() {
    let p = start().await;
    let dir = tmp_dir("tls-target");
    let authority = Ca::new("postern test CA");
    let ca = authority.write(&dir);
    let config = authority
        .leaf(&["localhost", "127.0.0.1"])
        .server_config(&[]);
    let target = tls_target(config).await;
    let url = format!("https://localhost:{}/", target.port());
    let resolve = format!("localhost:{}:127.0.0.1", target.port());
    let out = curl(&[
        "-x",
        &p.proxy_url("alice", "pw"),
        "--cacert",
        ca.to_str().unwrap_or(""),
        "--resolve",
        &resolve,
        &url,
    ])
    .await;
    assert_eq!(
        (out.status, out.body.as_str()),
        (200, "hello over tls"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_get_407_with_a_challenge() {
    let p = start().await;
    let target = http_target().await;
    let url = format!("http://{target}/");
    let no_creds = format!("http://{}", p.proxy);
    for (proxy, what) in [
        (no_creds.as_str(), "no credentials"),
        (&p.proxy_url("alice", "wrong"), "wrong password"),
        (&p.proxy_url("mallory", "pw"), "unknown user"),
    ] {
        let out = curl(&["-x", proxy, &url]).await;
        assert_eq!(out.status, 407, "{what}: {out:?}");
        let out = curl(&["-p", "-x", proxy, &url]).await;
        assert_eq!(out.connect_code, 407, "{what} (CONNECT): {out:?}");
    }
    for header in ["Bearer abc", "Basic !!!notbase64", "Basic YWxpY2U="] {
        let req = format!(
            "GET {url} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: {header}\r\nConnection: close\r\n\r\n"
        );
        let (status, text) = raw(p.proxy, req.as_bytes()).await.expect("raw");
        assert_eq!(status, 407, "{header}: {text}");
        assert!(
            text.to_ascii_lowercase()
                .contains("proxy-authenticate: basic realm=\"postern\""),
            "{text}"
        );
    }
    assert!(
        p.metric("postern_proxy_errors_total{user=\"\",kind=\"auth\"}")
            .await
            >= 9.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversize_requests() {
    let p = start().await;
    let (status, text) = raw(p.proxy, b"THIS IS NOT HTTP\r\n\r\n")
        .await
        .expect("raw");
    assert_eq!(status, 400, "{text}");
    let (status, text) = raw(
        p.proxy,
        b"GET /origin-form HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("raw");
    assert_eq!(status, 400, "{text}");
    let (status, text) = raw(p.proxy, b"CONNECT nonsense HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("raw");
    assert_eq!(status, 400, "{text}");
    let big = format!(
        "GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let (status, text) = raw(p.proxy, big.as_bytes()).await.expect("raw");
    assert_eq!(status, 431, "{}", &text[..text.len().min(200)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_destinations_get_403() {
    let p = start().await;
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
    ] {
        let out = curl(&["-x", &p.proxy_url("alice", "pw"), url]).await;
        assert_eq!(out.status, 403, "{url}: {out:?}");
    }
    let out = curl(&[
        "-p",
        "-x",
        &p.proxy_url("carol", "pw3"),
        "http://www.denied.test/",
    ])
    .await;
    assert_eq!(out.connect_code, 403, "{out:?}");
    let out = curl(&["-x", &p.proxy_url("carol", "pw3"), "http://127.0.0.2:1/"]).await;
    assert_eq!(out.status, 403, "{out:?}");
    // A name that resolves into a denied network is judged by its address.
    let target = http_target().await;
    let by_name = format!("http://localhost:{}/", target.port());
    let out = curl(&["-x", &p.proxy_url("dave", "pw4"), &by_name]).await;
    assert_eq!(out.status, 403, "{out:?}");
    let out = curl(&["-x", &p.proxy_url("alice", "pw"), &by_name]).await;
    assert_eq!(
        (out.status, out.body.as_str()),
        (200, "hello from 127.0.0.1"),
        "{out:?}"
    );
    assert!(
        p.metric("postern_proxy_errors_total{user=\"carol\",kind=\"denied\"}")
            .await
            >= 2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_gives_429_until_a_tunnel_closes() {
    let p = start().await;
    let echo = echo_target().await;
    let mut held = open_tunnel(p.proxy, "carol", "pw3", echo)
        .await
        .expect("first tunnel");
    assert!(echo_roundtrip(&mut held, b"ping").await);
    let err = open_tunnel(p.proxy, "carol", "pw3", echo)
        .await
        .err()
        .unwrap_or_default();
    assert!(err.starts_with("HTTP/1.1 429"), "{err}");
    let out = curl(&[
        "-x",
        &p.proxy_url("carol", "pw3"),
        &format!("http://{echo}/"),
    ])
    .await;
    assert_eq!(out.status, 429, "{out:?}");
    drop(held);
    wait_for("the slot to free", PATIENCE, || async {
        open_tunnel(p.proxy, "carol", "pw3", echo).await.ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_destination_gets_502() {
    let p = start().await;
    let closed = closed_port();
    let out = curl(&[
        "-p",
        "-x",
        &p.proxy_url("alice", "pw"),
        &format!("http://{closed}/"),
    ])
    .await;
    assert_eq!(out.connect_code, 502, "{out:?}");
    let (status, text) = raw(
        p.proxy,
        format!("GET http://{closed}/ HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Basic YWxpY2U6cHc=\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("raw");
    assert_eq!(status, 502, "{text}");
    assert!(
        text.contains("connection refused"),
        "a short reason: {text}"
    );
}
