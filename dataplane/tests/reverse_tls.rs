//! TLS termination with certificates from Secrets, chosen by SNI (curl
//! with `--resolve`), HTTP/2 over ALPN, `redirectHttp`, the default
//! certificate, and https backends verified against a private CA.

use postern_harness::{
    Backend, Ca, Leaf, Manifests, Postern, curl_blocking, fetch, indent, tls_secret, tmp_dir,
};

struct Setup {
    proxy: Postern,
    ca_file: std::path::PathBuf,
    _backends: Vec<Backend>,
}

async fn setup(name: &str, extra: &[&str]) -> Setup {
    let ca = Ca::new("postern test CA");
    let a = ca.leaf(&["secure.test"]);
    let w = ca.leaf(&["*.wild.test"]);
    let backend_ca = Ca::new("backend CA");
    let backend_leaf = backend_ca.leaf(&["backend.internal"]);
    let plain = Backend::start("plain");
    let secure = Backend::start_with("tls-backend", Some(&backend_leaf));
    let yaml = format!(
        r#"apiVersion: postern.io/v1alpha1
kind: ProxyTarget
metadata: {{name: secure, namespace: default}}
spec:
  hostnames: [secure.test]
  backend: {{url: "{plain}"}}
  tls: {{secretRef: {{name: secure-tls}}}}
  redirectHttp: true
---
apiVersion: postern.io/v1alpha1
kind: ProxyTarget
metadata: {{name: wild, namespace: default}}
spec:
  hostnames: ["*.wild.test"]
  backend: {{url: "https://{secure_addr}", tls: {{caSecretRef: {{name: backend-ca}}, serverName: backend.internal}}}}
  tls: {{secretRef: {{name: wild-tls}}}}
---
apiVersion: postern.io/v1alpha1
kind: ProxyTarget
metadata: {{name: unverified, namespace: default}}
spec:
  hostnames: [unverified.test]
  backend: {{url: "https://{secure_addr}", tls: {{serverName: backend.internal}}}}
---
{secure_tls}
---
{wild_tls}
---
apiVersion: v1
kind: Secret
metadata: {{name: backend-ca, namespace: default}}
stringData:
  ca.crt: |
{backend_ca}
"#,
        plain = plain.url(),
        secure_addr = secure.addr,
        secure_tls = tls_secret("secure-tls", &a.cert, &a.key),
        wild_tls = tls_secret("wild-tls", &w.cert, &w.key),
        backend_ca = indent(&backend_ca.pem, 4),
    );
    let manifests = Manifests::new(name).with("site.yaml", &yaml);
    let ca_file = ca.write(manifests.work_dir());
    let proxy = Postern::standalone(manifests).args(extra).start().await;
    Setup {
        proxy,
        ca_file,
        _backends: vec![plain, secure],
    }
}

fn resolve(host: &str, proxy: &Postern) -> String {
    format!("{host}:{}:127.0.0.1", proxy.https.port())
}

#[tokio::test]
async fn certificates_are_chosen_by_sni_and_unknown_names_fail_the_handshake() {
    let s = setup("sni", &[]).await;
    let ca = s.ca_file.to_str().expect("path");
    let port = s.proxy.https.port();
    for (host, backend) in [("secure.test", "plain"), ("a.wild.test", "tls-backend")] {
        let r = fetch(&[
            "--cacert",
            ca,
            "--resolve",
            &resolve(host, &s.proxy),
            "--http2",
            &format!("https://{host}:{port}/x"),
        ]);
        assert_eq!(r.status, 200, "{host}: {}", r.body);
        assert_eq!(r.version, "2", "ALPN h2 for {host}");
        let seen = r.json();
        assert_eq!(seen["backend"], backend, "{host}");
        assert_eq!(seen["headers"]["x-forwarded-proto"][0], "https");
    }
    let r = fetch(&[
        "--cacert",
        ca,
        "--resolve",
        &resolve("secure.test", &s.proxy),
        "--http1.1",
        &format!("https://secure.test:{port}/"),
    ]);
    assert_eq!(r.version, "1.1");
    // A name no site serves: no certificate at all (curl 35 = handshake failure).
    let out = curl_blocking(&[
        "-k",
        "--resolve",
        &resolve("other.test", &s.proxy),
        &format!("https://other.test:{port}/"),
    ]);
    assert_eq!(out.exit, 35, "{}", out.stderr);
    let metrics = s.proxy.metrics().await;
    assert!(metrics.contains("reason=\"tls_handshake\""), "{metrics}");
}

#[tokio::test]
async fn plain_http_redirects_where_the_site_asks() {
    let s = setup("redirect", &["--https-redirect-port", "8443"]).await;
    let u = format!("http://{}/a/b?c=d", s.proxy.http);
    let r = fetch(&["-H", "Host: secure.test", &u]);
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some("https://secure.test:8443/a/b?c=d")
    );
    // A TLS site without redirectHttp still serves plain HTTP.
    let r = fetch(&["-H", "Host: x.wild.test", &u]);
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn a_default_certificate_answers_unknown_names_when_configured() {
    let ca = Ca::new("default CA");
    let leaf = ca.leaf(&["default.invalid"]);
    let dir = tmp_dir("default-cert");
    let pair = leaf.write(&dir);
    let s = setup(
        "default",
        &[
            "--default-cert",
            pair.cert.to_str().expect("p"),
            "--default-key",
            pair.key.to_str().expect("p"),
        ],
    )
    .await;
    let ca_file = ca.write(&dir);
    let port = s.proxy.https.port();
    // The default certificate is served (verified against its own CA), and
    // the unknown host then gets a 404 from the router.
    let r = fetch(&[
        "--cacert",
        ca_file.to_str().expect("p"),
        "--resolve",
        &resolve("default.invalid", &s.proxy),
        &format!("https://default.invalid:{port}/"),
    ]);
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "unknown_host");
}

#[tokio::test]
async fn https_backends_are_verified_against_their_ca() {
    let s = setup("backend-ca", &[]).await;
    // With the private CA and the SNI override: served (over the wildcard site).
    let u = format!("http://{}/", s.proxy.http);
    let r = fetch(&["-H", "Host: b.wild.test", &u]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["backend"], "tls-backend");
    // Without the CA, the system roots do not trust it: 502, never insecure.
    let r = fetch(&["-H", "Host: unverified.test", &u]);
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"], "backend_tls");
}

#[tokio::test]
async fn a_rotated_secret_swaps_the_certificate_without_dropping_connections() {
    let ca = Ca::new("rotation CA");
    let first = ca.leaf(&["rot.test"]);
    let backend = Backend::start("rot");
    let site = |leaf: &Leaf| {
        format!(
            "apiVersion: postern.io/v1alpha1\nkind: ProxyTarget\nmetadata: {{name: rot, namespace: default}}\nspec:\n  hostnames: [rot.test]\n  backend: {{url: \"{}\"}}\n  tls: {{secretRef: {{name: rot-tls}}}}\n---\n{}",
            backend.url(),
            tls_secret("rot-tls", &leaf.cert, &leaf.key)
        )
    };
    let manifests = Manifests::new("rotation").with("site.yaml", &site(&first));
    let proxy = Postern::standalone(&manifests).start().await;
    // An open keep-alive connection, made before the rotation.
    let connector = ca.connector(&[]);
    let handshake = || async {
        let tcp = tokio::net::TcpStream::connect(proxy.https)
            .await
            .expect("connect");
        let name = rustls::pki_types::ServerName::try_from("rot.test").expect("name");
        connector.connect(name, tcp).await.expect("handshake")
    };
    let served = |s: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>| {
        s.get_ref().1.peer_certificates().expect("certificates")[0].to_vec()
    };
    let mut open = handshake().await;
    let before = served(&open);
    assert!(ask(&mut open).await.starts_with("HTTP/1.1 200"));

    let old = proxy.version().await;
    let second = ca.leaf(&["rot.test"]);
    std::fs::write(manifests.path().join("site.yaml"), site(&second)).expect("rotate");
    proxy.serving(old.as_deref()).await;
    let after = served(&handshake().await);
    assert_ne!(before, after, "new handshakes get the new certificate");
    assert!(
        ask(&mut open).await.starts_with("HTTP/1.1 200"),
        "the connection opened before the rotation still serves"
    );
}

async fn ask(s: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET /still HTTP/1.1\r\nHost: rot.test\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 8192];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("answer in time")
        .expect("read");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}
