//! Per-user upstreams with real peers: microsocks (with and without
//! RFC 1929 auth), tinyproxy as an HTTP CONNECT upstream with Basic auth,
//! the same tinyproxy behind TLS as an `https://` upstream, and the 502/504
//! answers when an upstream is down, refuses or never answers. Each peer
//! connects out from its own loopback address, so the target's answer
//! (`hello from 127.0.0.N`) proves which way a request went.

use std::time::Duration;

use postern_harness::peers::{dante, microsocks, tinyproxy};
use postern_harness::{
    Ca, LOOPBACK_ALLOWED, PATIENCE, Postern, blackhole, closed_port, curl, field, http_target, raw,
    tls_front, tmp_dir, user_yaml,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks5_upstream_without_and_with_auth() {
    let Some((_open, open_addr)) = microsocks(None, Some("127.0.0.2")).await else {
        return;
    };
    let Some((_authed, authed_addr)) =
        microsocks(Some(("sockuser", "sockpw")), Some("127.0.0.3")).await
    else {
        return;
    };
    let files = [
        (
            "a.yaml",
            user_yaml(
                "alice",
                "pw",
                &format!("socks5://{open_addr}"),
                None,
                LOOPBACK_ALLOWED,
            ),
        ),
        (
            "b.yaml",
            user_yaml(
                "bob",
                "pw2",
                &format!("socks5://{authed_addr}"),
                Some(("sockuser", "sockpw")),
                LOOPBACK_ALLOWED,
            ),
        ),
        (
            "c.yaml",
            user_yaml(
                "carol",
                "pw3",
                &format!("socks5://{authed_addr}"),
                Some(("sockuser", "nope")),
                LOOPBACK_ALLOWED,
            ),
        ),
    ];
    let p = Postern::standalone_with("socks-up", &files)
        .json_logs()
        .start()
        .await;
    let target = http_target().await;
    // A name, resolved by the upstream.
    let url = format!("http://localhost:{}/", target.port());
    for (user, pw, via) in [("alice", "pw", "127.0.0.2"), ("bob", "pw2", "127.0.0.3")] {
        let plain = curl(&["-x", &p.proxy_url(user, pw), &url]).await;
        assert_eq!(
            (plain.status, plain.body.as_str()),
            (200, format!("hello from {via}").as_str()),
            "{user}: {plain:?}"
        );
        let tunnel = curl(&["-p", "-x", &p.proxy_url(user, pw), &url]).await;
        assert_eq!(
            tunnel.body,
            format!("hello from {via}"),
            "{user}: {tunnel:?}"
        );
    }
    let refused = curl(&["-p", "-x", &p.proxy_url("carol", "pw3"), &url]).await;
    assert_eq!(refused.connect_code, 502, "{refused:?}");
    let line = p
        .wait_log("carol's refusal", PATIENCE, |l| field(l, "user") == "carol")
        .await;
    assert_eq!(field(&line, "outcome"), "refused", "{line}");
    assert!(
        !p.log().contains("sockpw"),
        "upstream credentials reached the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dante_as_a_second_socks5_upstream() {
    let Some((dante, dante_addr)) = dante("127.0.0.7").await else {
        return;
    };
    let files = [(
        "a.yaml",
        user_yaml(
            "alice",
            "pw",
            &format!("socks5://{dante_addr}"),
            None,
            LOOPBACK_ALLOWED,
        ),
    )];
    let p = Postern::standalone_with("dante-up", &files)
        .json_logs()
        .start()
        .await;
    let target = http_target().await;
    let url = format!("http://localhost:{}/", target.port());
    let tunnel = curl(&["-p", "-x", &p.proxy_url("alice", "pw"), &url]).await;
    assert_eq!(
        (tunnel.status, tunnel.body.as_str()),
        (200, "hello from 127.0.0.7"),
        "{tunnel:?}"
    );
    let socks = curl(&["--socks5-hostname", &p.socks_url("alice", "pw"), &url]).await;
    assert_eq!(socks.body, "hello from 127.0.0.7", "{socks:?}");
    assert!(
        dante.log().contains("tcp/connect"),
        "dante logged it:\n{}",
        dante.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_connect_upstream_with_basic_auth() {
    let Some((tiny, tiny_addr)) = tinyproxy(Some(("tpuser", "tppw")), Some("127.0.0.4")).await
    else {
        return;
    };
    let files = [
        (
            "a.yaml",
            user_yaml(
                "alice",
                "pw",
                &format!("http://{tiny_addr}"),
                Some(("tpuser", "tppw")),
                LOOPBACK_ALLOWED,
            ),
        ),
        (
            "b.yaml",
            user_yaml(
                "bob",
                "pw2",
                &format!("http://{tiny_addr}"),
                Some(("tpuser", "wrong")),
                LOOPBACK_ALLOWED,
            ),
        ),
    ];
    let p = Postern::standalone_with("http-up", &files)
        .json_logs()
        .start()
        .await;
    let target = http_target().await;
    let url = format!("http://{target}/via-tinyproxy");
    let tunnel = curl(&["-p", "-x", &p.proxy_url("alice", "pw"), &url]).await;
    assert_eq!(
        (tunnel.status, tunnel.body.as_str()),
        (200, "hello from 127.0.0.4"),
        "{tunnel:?}"
    );
    let plain = curl(&["-x", &p.proxy_url("alice", "pw"), &url]).await;
    assert_eq!(
        (plain.status, plain.body.as_str()),
        (200, "hello from 127.0.0.4"),
        "{plain:?}"
    );
    let log = tiny.log();
    assert!(
        log.contains(&format!("CONNECT {target}")),
        "tinyproxy saw the CONNECT:\n{log}"
    );
    assert!(
        log.contains("GET http://"),
        "tinyproxy saw the absolute-form request:\n{log}"
    );
    // Wrong upstream credentials: 502 naming the upstream's status, never 407.
    let refused = curl(&["-p", "-x", &p.proxy_url("bob", "pw2"), &url]).await;
    assert_eq!(refused.connect_code, 502, "{refused:?}");
    let (status, text) = raw(
        p.proxy,
        format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: Basic Ym9iOnB3Mg==\r\n\r\n").as_bytes(),
    )
    .await
    .expect("raw");
    assert_eq!(status, 502);
    // tinyproxy 1.11 answers wrong credentials with 401 (missing ones with 407).
    assert!(
        text.contains("refused: 401"),
        "the reason names the upstream's status: {text}"
    );
    // An absolute-form request gets the upstream's answer; a 407 from it
    // would become a 502 so that clients never re-prompt for our password.
    let plain = curl(&["-x", &p.proxy_url("bob", "pw2"), &url]).await;
    // An answer (not curl giving up), refused, and never a 407.
    assert!(plain.status >= 400 && plain.status != 407, "{plain:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_is_verified_tls() {
    let Some((_tiny, tiny_addr)) = tinyproxy(Some(("tpuser", "tppw")), Some("127.0.0.5")).await
    else {
        return;
    };
    let dir = tmp_dir("https-up");
    let authority = Ca::new("postern test CA");
    let ca = authority.write(&dir);
    let config = authority
        .leaf(&["localhost", "127.0.0.1"])
        .server_config(&[]);
    let front = tls_front(config, tiny_addr).await;
    let files = [(
        "a.yaml",
        user_yaml(
            "alice",
            "pw",
            &format!("https://localhost:{}", front.port()),
            Some(("tpuser", "tppw")),
            LOOPBACK_ALLOWED,
        ),
    )];
    let target = http_target().await;
    let url = format!("http://{target}/");
    // Trusting the test CA: through.
    let ca_flag = format!("--upstream-ca-file={}", ca.display());
    let p = Postern::standalone_with("https-up", &files)
        .json_logs()
        .arg(&ca_flag)
        .start()
        .await;
    let tunnel = curl(&["-p", "-x", &p.proxy_url("alice", "pw"), &url]).await;
    assert_eq!(
        (tunnel.status, tunnel.body.as_str()),
        (200, "hello from 127.0.0.5"),
        "{tunnel:?}"
    );
    let plain = curl(&["-x", &p.proxy_url("alice", "pw"), &url]).await;
    assert_eq!(
        (plain.status, plain.body.as_str()),
        (200, "hello from 127.0.0.5"),
        "{plain:?}"
    );
    drop(p);
    // Without the flag, alice's verification fails: 502, never a plain-text
    // fallback; carol's UserUpstream names the CA in a Secret: through.
    let pem = std::fs::read_to_string(&ca).expect("ca pem");
    let carol = user_yaml(
        "carol",
        "pw3",
        &format!("https://localhost:{}", front.port()),
        Some(("tpuser", "tppw")),
        &(LOOPBACK_ALLOWED.to_string() + "  upstreamCaSecretRef: {name: carol-ca}\n"),
    );
    let carol_ca = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: carol-ca}}\nstringData:\n  ca.crt: {}\n",
        serde_json::to_string(&pem).expect("json")
    );
    let files = [files[0].clone(), ("c.yaml", carol), ("c-ca.yaml", carol_ca)];
    let p = Postern::standalone_with("https-up-per-user", &files)
        .json_logs()
        .start()
        .await;
    let (status, text) = raw(
        p.proxy,
        format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: Basic YWxpY2U6cHc=\r\n\r\n").as_bytes(),
    )
    .await
    .expect("raw");
    assert_eq!(status, 502, "{text}");
    assert!(text.contains("TLS"), "{text}");
    let tunnel = curl(&["-p", "-x", &p.proxy_url("carol", "pw3"), &url]).await;
    assert_eq!(
        (tunnel.status, tunnel.body.as_str()),
        (200, "hello from 127.0.0.5"),
        "{tunnel:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_and_silent_upstreams_give_502_and_504() {
    let hole = blackhole().await;
    let closed = closed_port();
    let files = [
        (
            "a.yaml",
            user_yaml(
                "silent-socks",
                "pw",
                &format!("socks5://{hole}"),
                None,
                LOOPBACK_ALLOWED,
            ),
        ),
        (
            "b.yaml",
            user_yaml(
                "silent-http",
                "pw",
                &format!("http://{hole}"),
                None,
                LOOPBACK_ALLOWED,
            ),
        ),
        (
            "c.yaml",
            user_yaml(
                "dead",
                "pw",
                &format!("socks5://{closed}"),
                None,
                LOOPBACK_ALLOWED,
            ),
        ),
    ];
    let p = Postern::standalone_with("dead-up", &files)
        .json_logs()
        .args(["--proxy-connect-timeout", "300ms"])
        .args(["--proxy-idle-timeout", "1s"])
        .start()
        .await;
    let url = "http://example.test/";
    for user in ["silent-socks", "silent-http"] {
        let started = std::time::Instant::now();
        let out = curl(&["-p", "-x", &p.proxy_url(user, "pw"), url]).await;
        assert_eq!(out.connect_code, 504, "{user}: {out:?}");
        // 300 ms, not curl's own 30 s limit; loaded machines take longer.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the connect timeout applies"
        );
    }
    let out = curl(&["-x", &p.proxy_url("silent-http", "pw"), url]).await;
    assert_eq!(out.status, 504, "{out:?}");
    let (status, text) = raw(
        p.proxy,
        b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\nProxy-Authorization: Basic ZGVhZDpwdw==\r\n\r\n",
    )
    .await
    .expect("raw");
    assert_eq!(status, 502, "{text}");
    assert!(
        text.contains(&format!("socks5://{closed}")) && text.contains("connection refused"),
        "{text}"
    );
    assert!(
        p.metric("postern_proxy_errors_total{user=\"silent-socks\",kind=\"timeout\"}")
            .await
            >= 1.0
    );
    assert!(
        p.metric("postern_proxy_errors_total{user=\"dead\",kind=\"unreachable\"}")
            .await
            >= 1.0
    );
}
