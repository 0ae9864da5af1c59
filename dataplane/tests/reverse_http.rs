//! The reverse proxy over plain HTTP, driven by curl against
//! `postern standalone`: routing, forwarding headers, header rules, auth,
//! errors, HTTP/2 cleartext, SSE streaming and a large streamed upload.

use std::time::{Duration, Instant};

use postern_harness::backend::{SLOW, SSE_GAP};
use postern_harness::memory::peak_rss_kib;
use postern_harness::{Backend, Manifests, Postern, fetch};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Two backends behind four sites covering routes, wildcards, header
/// rules, bearer auth and oauth.
fn yaml(main: &Backend, other: &Backend) -> String {
    let token_hash_secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: tokens, namespace: default}\nstringData:\n  a: s3cret-token\n";
    format!(
        r#"apiVersion: postern.io/v1alpha1
kind: ProxyTarget
metadata: {{name: api, namespace: default}}
spec:
  hostnames: [api.test, "*.wild.test"]
  backend: {{url: "{main}"}}
  requestHeaders:
    set: [{{name: X-Env, value: prod}}]
    add: [{{name: X-Tag, value: added}}]
    remove: [X-Debug]
  responseHeaders:
    remove: [X-Backend-Secret]
    set: [{{name: X-Served-By, value: postern}}]
---
apiVersion: postern.io/v1alpha1
kind: Route
metadata: {{name: v1, namespace: default}}
spec:
  targetRef: {{name: api}}
  match: {{path: {{type: Prefix, value: /v1}}}}
  priority: 10
  backend: {{url: "{other}"}}
---
apiVersion: postern.io/v1alpha1
kind: Route
metadata: {{name: exact, namespace: default}}
spec:
  targetRef: {{name: api}}
  match: {{path: {{type: Exact, value: /only}}, methods: [POST]}}
  backend: {{url: "{other}"}}
---
apiVersion: postern.io/v1alpha1
kind: Route
metadata: {{name: items, namespace: default}}
spec:
  targetRef: {{name: api}}
  match: {{path: {{type: RegularExpression, value: "/items/[0-9]+"}}}}
  backend: {{url: "{other}"}}
---
apiVersion: postern.io/v1alpha1
kind: ProxyTarget
metadata: {{name: keep-host, namespace: default}}
spec:
  hostnames: [keep.test]
  backend: {{url: "{main}"}}
  preserveHost: true
---
apiVersion: postern.io/v1alpha1
kind: ProxyTarget
metadata: {{name: guarded, namespace: default}}
spec:
  hostnames: [guarded.test]
  backend: {{url: "{main}"}}
  auth: {{type: bearer, tokensSecretRef: {{name: tokens}}}}
---
apiVersion: postern.io/v1alpha1
kind: Route
metadata: {{name: public, namespace: default}}
spec:
  targetRef: {{name: guarded}}
  match: {{path: {{type: Prefix, value: /public}}}}
  auth: {{type: none}}
---
apiVersion: postern.io/v1alpha1
kind: ProxyTarget
metadata: {{name: oauth, namespace: default}}
spec:
  hostnames: [oauth.test]
  backend: {{url: "{main}"}}
  auth: {{type: oauth, server: {{name: missing}}}}
---
apiVersion: postern.io/v1alpha1
kind: ProxyTarget
metadata: {{name: dead, namespace: default}}
spec:
  hostnames: [dead.test]
  backend: {{url: "http://127.0.0.1:1"}}
---
apiVersion: postern.io/v1alpha1
kind: ProxyTarget
metadata: {{name: slow, namespace: default}}
spec:
  hostnames: [slow.test]
  backend: {{url: "{main}"}}
  timeouts: {{responseHeaders: 500ms}}
---
{token_hash_secret}"#,
        main = main.url(),
        other = other.url(),
    )
}

async fn setup(name: &str) -> (Postern, Backend, Backend) {
    let main = Backend::start("main");
    let other = Backend::start("other");
    let manifests = Manifests::new(name).with("site.yaml", &yaml(&main, &other));
    let proxy = Postern::standalone(manifests).start().await;
    (proxy, main, other)
}

fn url(proxy: &Postern, path: &str) -> String {
    format!("http://{}{path}", proxy.http)
}

fn host(h: &str) -> String {
    format!("Host: {h}")
}

#[tokio::test]
async fn hosts_and_routes_pick_the_backend() {
    let (proxy, _main, _other) = setup("routing").await;
    let get = |h: &str, path: &str, extra: &[&str]| {
        let u = url(&proxy, path);
        fetch(&[&["-H", &host(h)], extra, &[u.as_str()]].concat())
    };
    let r = get("api.test", "/", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["backend"], "main");
    // Case-insensitive, port ignored, one-label wildcard.
    assert_eq!(get("API.Test:8080", "/x", &[]).json()["backend"], "main");
    assert_eq!(get("a.wild.test", "/", &[]).json()["backend"], "main");
    // Prefix is segment-aware.
    assert_eq!(get("api.test", "/v1", &[]).json()["backend"], "other");
    assert_eq!(
        get("api.test", "/v1/users?q=1", &[]).json()["backend"],
        "other"
    );
    assert_eq!(get("api.test", "/v10", &[]).json()["backend"], "main");
    // Exact with a method list.
    assert_eq!(
        get("api.test", "/only", &["-X", "POST"]).json()["backend"],
        "other"
    );
    assert_eq!(get("api.test", "/only", &[]).json()["backend"], "main");
    // Anchored regex.
    assert_eq!(get("api.test", "/items/42", &[]).json()["backend"], "other");
    assert_eq!(
        get("api.test", "/items/42/x", &[]).json()["backend"],
        "main"
    );
    // The path and query reach the backend untouched.
    assert_eq!(
        get("api.test", "/v1/users?q=1", &[]).json()["uri"],
        "/v1/users?q=1"
    );

    // Unknown hosts: 404, JSON for programs, HTML for browsers.
    let r = get("nope.test", "/", &[]);
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "unknown_host");
    let r = get("a.b.wild.test", "/", &["-H", "Accept: text/html"]);
    assert_eq!(r.status, 404);
    assert!(r.body.contains("<h1>404"), "{}", r.body);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/html"))
    );
}

#[tokio::test]
async fn forwarding_headers_request_ids_and_header_rules() {
    let (proxy, main, _other) = setup("headers").await;
    let u = url(&proxy, "/h");
    let r = fetch(&[
        "-H",
        "Host: api.test",
        "-H",
        "X-Forwarded-For: 192.0.2.1",
        "-H",
        "Connection: keep-alive, X-Hop",
        "-H",
        "X-Hop: must-go",
        "-H",
        "X-Debug: 1",
        "-H",
        "X-Tag: client",
        "-H",
        "Keep-Alive: timeout=5",
        &u,
    ]);
    let seen = r.json();
    let h = &seen["headers"];
    assert_eq!(h["x-forwarded-for"][0], "192.0.2.1, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"][0], "http");
    assert_eq!(h["x-forwarded-host"][0], "api.test");
    assert_eq!(h["forwarded"][0], "for=127.0.0.1;host=api.test;proto=http");
    assert_eq!(
        h["host"][0],
        main.addr.to_string(),
        "the backend sees its own host"
    );
    for gone in ["x-hop", "keep-alive", "x-debug"] {
        assert!(h.get(gone).is_none(), "{gone} reached the backend: {h}");
    }
    assert_eq!(h["x-env"][0], "prod");
    assert_eq!(h["x-tag"], serde_json::json!(["client", "added"]));
    // A request id is made, sent to the backend and returned.
    let id = h["x-request-id"][0]
        .as_str()
        .expect("request id")
        .to_string();
    assert_eq!(id.len(), 32);
    assert_eq!(r.header("x-request-id"), Some(id.as_str()));
    // Response rules.
    assert_eq!(r.header("x-backend-secret"), None);
    assert_eq!(r.header("x-served-by"), Some("postern"));

    // A client's request id is kept; preserveHost keeps the Host.
    let u = url(&proxy, "/");
    let r = fetch(&[
        "-H",
        "Host: keep.test:8080",
        "-H",
        "X-Request-Id: abc-123",
        &u,
    ]);
    assert_eq!(r.json()["headers"]["host"][0], "keep.test:8080");
    assert_eq!(r.json()["headers"]["x-request-id"][0], "abc-123");
    assert_eq!(r.header("x-request-id"), Some("abc-123"));
}

#[tokio::test]
async fn bearer_auth_per_target_and_route_and_the_oauth_seam() {
    let (proxy, _main, _other) = setup("auth").await;
    let u = url(&proxy, "/private");
    let r = fetch(&["-H", "Host: guarded.test", &u]);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"postern\"")
    );
    let r = fetch(&[
        "-H",
        "Host: guarded.test",
        "-H",
        "Authorization: Bearer wrong",
        &u,
    ]);
    assert_eq!(r.status, 401);
    assert!(
        r.header("www-authenticate")
            .is_some_and(|v| v.contains("invalid_token"))
    );
    let r = fetch(&[
        "-H",
        "Host: guarded.test",
        "-H",
        "Authorization: Bearer s3cret-token",
        &u,
    ]);
    assert_eq!(r.status, 200);
    // The route overrides the target's auth.
    let u = url(&proxy, "/public/page");
    assert_eq!(fetch(&["-H", "Host: guarded.test", &u]).status, 200);
    // A target protected by an authorization server that does not exist
    // is refused, so nobody gets past it; and no path of another host is
    // taken over by the OAuth capability.
    let u = url(&proxy, "/");
    let r = fetch(&["-H", "Host: oauth.test", &u]);
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "unknown_host");
    for path in [
        "/token",
        "/register",
        "/.well-known/oauth-authorization-server",
    ] {
        let u = url(&proxy, path);
        let r = fetch(&["-H", "Host: api.test", &u]);
        assert_eq!(r.json()["path"], path, "{path} must reach the backend");
    }
}

#[tokio::test]
async fn backend_faults_are_502_and_504_and_counted() {
    let (proxy, _main, _other) = setup("errors").await;
    let u = url(&proxy, "/");
    let r = fetch(&["-H", "Host: dead.test", &u]);
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"], "backend_refused");
    let u = url(&proxy, "/slow");
    let started = Instant::now();
    let r = fetch(&["-H", "Host: slow.test", &u]);
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["error"], "backend_timeout");
    assert!(
        started.elapsed() < SLOW,
        "the 500ms timeout applies before the backend's answer"
    );
    // A request without a Host at all (HTTP/1.0) is the client's fault.
    let mut s = tokio::net::TcpStream::connect(proxy.http)
        .await
        .expect("connect");
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(
        String::from_utf8_lossy(&buf).starts_with("HTTP/1.0 400"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    let metrics = proxy.metrics().await;
    for label in ["backend_refused", "backend_timeout", "bad_request"] {
        assert!(
            metrics.contains(&format!(
                "postern_reverse_requests_total{{outcome=\"{label}\"}} 1"
            )),
            "{label} in\n{metrics}"
        );
    }
}

#[tokio::test]
async fn http2_cleartext_and_sse_streams_as_it_arrives() {
    let (proxy, _main, _other) = setup("h2c-sse").await;
    let u = url(&proxy, "/");
    let r = fetch(&["--http2-prior-knowledge", "-H", "Host: api.test", &u]);
    assert_eq!(r.status, 200);
    assert_eq!(r.version, "2");

    // The first event must arrive while the backend holds the stream open
    // (the second comes SSE_GAP later).
    let mut s = tokio::net::TcpStream::connect(proxy.http)
        .await
        .expect("connect");
    s.write_all(b"GET /sse HTTP/1.1\r\nHost: api.test\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&seen).contains("data: first") {
        let n = tokio::time::timeout(SSE_GAP, s.read(&mut buf))
            .await
            .expect("the first event arrives before the second is sent")
            .expect("read");
        assert!(
            n > 0,
            "stream closed early: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(started.elapsed() < SSE_GAP);
    let text = String::from_utf8_lossy(&seen);
    assert!(text.contains("text/event-stream"), "{text}");
    assert!(
        !text.contains("data: second"),
        "buffered until the end: {text}"
    );
}

/// 1 GiB by default; `POSTERN_TEST_UPLOAD_MIB` changes it.
fn upload_size() -> u64 {
    let mib: u64 = std::env::var("POSTERN_TEST_UPLOAD_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    mib * 1024 * 1024
}

#[tokio::test]
async fn a_large_upload_streams_with_bounded_memory() {
    let (proxy, _main, _other) = setup("upload").await;
    let size = upload_size();
    let before = peak_rss_kib(proxy.pid()).expect("postern's peak RSS before");
    let mut s = tokio::net::TcpStream::connect(proxy.http)
        .await
        .expect("connect");
    let head = format!(
        "POST /sink HTTP/1.1\r\nHost: api.test\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.expect("head");
    let chunk = vec![7u8; 256 * 1024];
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < size {
        let n = chunk.len().min((size - sent) as usize);
        s.write_all(&chunk[..n]).await.expect("body");
        sent += n as u64;
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "upload too slow"
        );
    }
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut reply))
        .await
        .expect("reply in time")
        .expect("read");
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        reply.ends_with(&size.to_string()),
        "the backend read every byte: {reply}"
    );
    let peak = peak_rss_kib(proxy.pid()).expect("postern's peak RSS after");
    eprintln!(
        "uploaded {} MiB in {:?}; postern peak RSS {} MiB (before {} MiB)",
        size >> 20,
        started.elapsed(),
        peak >> 10,
        before >> 10
    );
    assert!(
        peak < 128 * 1024,
        "peak RSS {peak} KiB: the body was buffered"
    );
}
