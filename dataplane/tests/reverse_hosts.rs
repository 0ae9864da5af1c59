//! Host and SNI rules: one Host, without userinfo (400 otherwise); over
//! HTTPS only the sites the connection's certificate serves (421
//! otherwise, and never a site without TLS); error bodies that never name
//! a backend's address.

use postern_harness::{
    Backend, Ca, Curl, Manifests, Postern, documents, fetch, raw, target_yaml, tls_secret,
};

struct Setup {
    proxy: Postern,
    ca_file: std::path::PathBuf,
    _backend: Backend,
}

async fn setup(name: &str) -> Setup {
    let ca = Ca::new("hosts CA");
    let one = ca.leaf(&["one.test", "also-one.test"]);
    let two = ca.leaf(&["two.test"]);
    let backend = Backend::start("main");
    let url = backend.url();
    let yaml = documents(&[
        target_yaml(
            "one",
            &["one.test", "also-one.test"],
            &url,
            "  tls: {secretRef: {name: one-tls}}\n",
        ),
        target_yaml(
            "two",
            &["two.test"],
            &url,
            "  tls: {secretRef: {name: two-tls}}\n",
        ),
        target_yaml("plain", &["plain.test"], &url, ""),
        target_yaml("dead", &["dead.test"], "http://127.0.0.1:1", ""),
        tls_secret("one-tls", &one.cert, &one.key),
        tls_secret("two-tls", &two.cert, &two.key),
    ]);
    let manifests = Manifests::new(name).with("site.yaml", &yaml);
    let ca_file = ca.write(manifests.work_dir());
    let proxy = Postern::standalone(manifests).start().await;
    Setup {
        proxy,
        ca_file,
        _backend: backend,
    }
}

impl Setup {
    /// An HTTPS request whose SNI is `sni` and whose Host is `host`.
    fn https(&self, sni: &str, host: &str, h2: bool) -> Curl {
        let port = self.proxy.https.port();
        let resolve = format!("{sni}:{port}:127.0.0.1");
        let url = format!("https://{sni}:{port}/x");
        let host = format!("Host: {host}");
        let ca = self.ca_file.to_string_lossy().into_owned();
        let version = if h2 { "--http2" } else { "--http1.1" };
        fetch(&[
            version,
            "--cacert",
            &ca,
            "--resolve",
            &resolve,
            "-H",
            &host,
            &url,
        ])
    }
}

#[tokio::test]
async fn a_request_names_one_host_without_userinfo() {
    let s = setup("hosts-one").await;
    let send = |head: &'static [u8]| raw(s.proxy.http, head);
    let (status, body) =
        send(b"GET / HTTP/1.1\r\nHost: plain.test\r\nHost: one.test\r\nConnection: close\r\n\r\n")
            .await
            .expect("two Host headers");
    assert_eq!(status, 400, "{body}");
    let (status, body) =
        send(b"GET / HTTP/1.1\r\nHost: evil@plain.test\r\nConnection: close\r\n\r\n")
            .await
            .expect("userinfo");
    assert_eq!(status, 400, "{body}");
    let (status, body) = send(b"GET / HTTP/1.1\r\nHost: plain.test\r\nConnection: close\r\n\r\n")
        .await
        .expect("one Host");
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn https_serves_only_what_the_certificate_covers() {
    let s = setup("hosts-sni").await;
    for h2 in [false, true] {
        let same = s.https("one.test", "one.test", h2);
        assert_eq!(same.status, 200, "h2={h2}: {}", same.body);
        // Another name on the same certificate may share the connection.
        let coalesced = s.https("one.test", "also-one.test", h2);
        assert_eq!(coalesced.status, 200, "h2={h2}: {}", coalesced.body);
        // Another site's certificate: misdirected.
        let other = s.https("one.test", "two.test", h2);
        assert_eq!(other.status, 421, "h2={h2}: {}", other.body);
        assert_eq!(other.json()["error"], "misdirected");
        // A site without TLS is never served on the HTTPS port.
        let plain = s.https("one.test", "plain.test", h2);
        assert_eq!(plain.status, 421, "h2={h2}: {}", plain.body);
    }
}

#[tokio::test]
async fn error_bodies_do_not_name_the_backend() {
    let s = setup("hosts-502").await;
    for accept in ["application/json", "text/html"] {
        let url = format!("http://{}/", s.proxy.http);
        let accept = format!("Accept: {accept}");
        let r = fetch(&["-H", "Host: dead.test", "-H", &accept, &url]);
        assert_eq!(r.status, 502, "{}", r.body);
        assert!(!r.body.contains("127.0.0.1"), "{}", r.body);
        assert!(!r.body.contains(":1"), "{}", r.body);
    }
}
