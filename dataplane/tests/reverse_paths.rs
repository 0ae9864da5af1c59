//! Paths are normalised once, before routing and auth: no spelling of a
//! protected path (dot segments, doubled slashes, encoded letters) reaches
//! the backend past a Route's auth, over HTTP/1.1, h2c or h2 over TLS;
//! ambiguous paths get 400; the backend gets the normalised path unless
//! the target asks for the client's spelling.

use postern_harness::{
    Backend, Ca, Curl, Manifests, Postern, documents, fetch, prefix_route_yaml, target_yaml,
    tls_secret,
};

const TOKEN: &str = "route-token";

/// Spellings a backend normalises to `/admin/panel`.
const SPELLINGS: [&str; 8] = [
    "/admin/panel",
    "/x/../admin/panel",
    "/./admin/panel",
    "//admin//panel",
    "/%61dmin/panel",
    "/%61%64%6d%69%6e/panel",
    "/x/%2e%2e/admin/panel",
    "/admin/x/.%2E/panel",
];

struct Setup {
    proxy: Postern,
    ca_file: std::path::PathBuf,
    _backend: Backend,
}

async fn setup(name: &str) -> Setup {
    let ca = Ca::new("paths CA");
    let leaf = ca.leaf(&["paths.test", "raw.test"]);
    let backend = Backend::start("main");
    let url = backend.url();
    let bearer = "  auth: {type: bearer, tokensSecretRef: {name: tokens}}\n";
    let tls = "  tls: {secretRef: {name: paths-tls}}\n";
    let yaml = documents(&[
        target_yaml("paths", &["paths.test"], &url, tls),
        prefix_route_yaml("admin", "paths", "/admin", bearer),
        target_yaml(
            "raw",
            &["raw.test"],
            &url,
            &format!("{tls}  pathForwarding: AsReceived\n"),
        ),
        prefix_route_yaml("raw-admin", "raw", "/admin", bearer),
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: tokens, namespace: default}}\nstringData:\n  a: {TOKEN}\n"
        ),
        tls_secret("paths-tls", &leaf.cert, &leaf.key),
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

/// The three ways a client reaches the reverse proxy.
#[derive(Clone, Copy, Debug)]
enum Protocol {
    Http1,
    H2c,
    H2Tls,
}

const PROTOCOLS: [Protocol; 3] = [Protocol::Http1, Protocol::H2c, Protocol::H2Tls];

impl Setup {
    /// `path` sent exactly as written (`--path-as-is`) to `host`.
    fn get(&self, protocol: Protocol, host: &str, path: &str, token: Option<&str>) -> Curl {
        let auth = token.map(|t| format!("Authorization: Bearer {t}"));
        let host_header = format!("Host: {host}");
        let plain = format!("http://{}{path}", self.proxy.http);
        let https = format!("https://{host}:{}{path}", self.proxy.https.port());
        let resolve = format!("{host}:{}:127.0.0.1", self.proxy.https.port());
        let ca = self.ca_file.to_string_lossy().into_owned();
        let mut args: Vec<&str> = vec!["--path-as-is"];
        match protocol {
            Protocol::Http1 => args.extend(["--http1.1", "-H", &host_header, &plain]),
            Protocol::H2c => {
                args.extend(["--http2-prior-knowledge", "-H", &host_header, &plain]);
            }
            Protocol::H2Tls => {
                args.extend(["--http2", "--cacert", &ca, "--resolve", &resolve, &https]);
            }
        }
        if let Some(auth) = &auth {
            args.extend(["-H", auth.as_str()]);
        }
        fetch(&args)
    }
}

#[tokio::test]
async fn no_spelling_of_a_protected_path_gets_past_the_route_auth() {
    let s = setup("paths-auth").await;
    for protocol in PROTOCOLS {
        for path in SPELLINGS {
            let r = s.get(protocol, "paths.test", path, None);
            assert_eq!(r.status, 401, "{protocol:?} {path}: {}", r.body);
            let r = s.get(protocol, "paths.test", path, Some(TOKEN));
            assert_eq!(r.status, 200, "{protocol:?} {path}: {}", r.body);
            assert_eq!(r.json()["uri"], "/admin/panel", "{protocol:?} {path}");
        }
        // Matching is case-sensitive, as documented: another path, open.
        let r = s.get(protocol, "paths.test", "/Admin/panel", None);
        assert_eq!(r.status, 200, "{protocol:?}: {}", r.body);
        assert_eq!(r.json()["uri"], "/Admin/panel");
        // The query is kept as sent.
        let r = s.get(protocol, "paths.test", "/open/./a?x=%2F..", None);
        assert_eq!(r.json()["uri"], "/open/a?x=%2F..", "{protocol:?}");
    }
}

#[tokio::test]
async fn ambiguous_paths_are_refused_with_400() {
    let s = setup("paths-ambiguous").await;
    for protocol in PROTOCOLS {
        for path in [
            "/admin%2fpanel",
            "/x%2F..%2Fadmin/panel",
            "/x%5c../admin/panel",
            "/admin/%00",
            "/admin/%ff",
            "/admin/%zz",
        ] {
            let r = s.get(protocol, "paths.test", path, None);
            assert_eq!(r.status, 400, "{protocol:?} {path}: {}", r.body);
            assert_eq!(r.json()["error"], "bad_request", "{protocol:?} {path}");
        }
    }
}

#[tokio::test]
async fn a_target_may_forward_the_path_as_received() {
    let s = setup("paths-raw").await;
    for protocol in PROTOCOLS {
        let r = s.get(protocol, "raw.test", "/x/../admin/panel", None);
        assert_eq!(r.status, 401, "{protocol:?}: routing still normalises");
        let r = s.get(protocol, "raw.test", "/x/../admin/panel", Some(TOKEN));
        assert_eq!(r.status, 200, "{protocol:?}: {}", r.body);
        assert_eq!(r.json()["uri"], "/x/../admin/panel", "{protocol:?}");
    }
}
