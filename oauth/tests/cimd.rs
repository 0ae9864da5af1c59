//! Client ID Metadata Documents over real HTTPS: a tiny server (tokio +
//! rustls, a leaf for `cimd.test` from a harness CA) on loopback, which
//! the tests reach through a resolver of their own. The production
//! resolver is shown to refuse the same server.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use futures::future::{BoxFuture, join_all};
use postern_harness::pki::Ca;
use postern_oauth::cimd::{
    self, CimdError, ClientDocument, PublicHttp, PublicOnly, Resolve, ResolveError,
};
use postern_oauth::store::MemoryStore;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const NAME: &str = "cimd.test";

/// Every name is this machine: what lets the happy path reach loopback.
struct Loopback;

impl Resolve for Loopback {
    fn resolve(&self, _: &str) -> BoxFuture<'static, Result<Vec<IpAddr>, ResolveError>> {
        Box::pin(async { Ok(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]) })
    }
}

#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn json(body: serde_json::Value, cache_control: &str) -> Reply {
        Reply {
            status: 200,
            headers: vec![
                ("content-type", "application/json".into()),
                ("cache-control", cache_control.into()),
            ],
            body: body.to_string().into_bytes(),
        }
    }

    fn raw(status: u16, content_type: &str, body: Vec<u8>) -> Reply {
        Reply {
            status,
            headers: vec![("content-type", content_type.into())],
            body,
        }
    }
}

/// An HTTPS server answering each path with its [`Reply`] and counting
/// the requests per path.
struct DocServer {
    addr: SocketAddr,
    ca: Ca,
    routes: Arc<Mutex<HashMap<String, Reply>>>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl DocServer {
    async fn start() -> DocServer {
        let ca = Ca::new("cimd test CA");
        let acceptor = TlsAcceptor::from(ca.leaf(&[NAME]).server_config(&[b"http/1.1"]));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let routes = Arc::new(Mutex::new(HashMap::<String, Reply>::new()));
        let hits = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
        let (r, h) = (routes.clone(), hits.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, r, h) = (acceptor.clone(), r.clone(), h.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        answer(tls, &r, &h).await;
                    }
                });
            }
        });
        DocServer {
            addr,
            ca,
            routes,
            hits,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://{NAME}:{}{path}", self.addr.port())
    }

    fn route(&self, path: &str, reply: Reply) -> String {
        self.routes
            .lock()
            .expect("routes")
            .insert(path.to_owned(), reply);
        self.url(path)
    }

    fn hits(&self, path: &str) -> usize {
        self.hits
            .lock()
            .expect("hits")
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    fn client(&self) -> PublicHttp {
        PublicHttp::with_resolver(Arc::new(Loopback), Some(self.ca.pem.as_bytes())).expect("client")
    }
}

async fn answer<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    routes: &Mutex<HashMap<String, Reply>>,
    hits: &Mutex<HashMap<String, usize>>,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
    *hits.lock().expect("hits").entry(path.clone()).or_default() += 1;
    let reply = routes.lock().expect("routes").get(&path).cloned();
    let reply = reply.unwrap_or_else(|| Reply::raw(404, "text/plain", b"no".to_vec()));
    let mut out = format!(
        "HTTP/1.1 {} X\r\ncontent-length: {}\r\nconnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    for (name, value) in &reply.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let _ = stream.write_all(out.as_bytes()).await;
    let _ = stream.write_all(&reply.body).await;
    let _ = stream.shutdown().await;
}

fn document(client_id: &str) -> serde_json::Value {
    json!({
        "client_id": client_id,
        "client_name": "Example MCP client",
        "client_uri": "https://app.example.com",
        "redirect_uris": ["http://127.0.0.1/callback", "https://app.example.com/cb"],
        "token_endpoint_auth_method": "none",
        "scope": "mcp",
    })
}

/// Serves a valid document for its own URL at `path`.
fn serve_valid(server: &DocServer, path: &str) -> String {
    let url = server.url(path);
    server.route(path, Reply::json(document(&url), "public, max-age=600"))
}

#[tokio::test]
async fn cimd_fetched_once_then_served_from_the_store() {
    let server = DocServer::start().await;
    let (http, store) = (server.client(), MemoryStore::new());
    let url = serve_valid(&server, "/client.json");

    let doc = cimd::fetch(&http, &store, &url).await.expect("document");
    assert_eq!(
        doc,
        ClientDocument {
            client_id: url.clone(),
            client_name: Some("Example MCP client".into()),
            redirect_uris: vec![
                "http://127.0.0.1/callback".into(),
                "https://app.example.com/cb".into()
            ],
            grant_types: vec!["authorization_code".into(), "refresh_token".into()],
            scope: Some("mcp".into()),
        }
    );
    let again = cimd::fetch(&http, &store, &url).await.expect("cached");
    assert_eq!(again, doc);
    // Another replica (its own client) sharing the store.
    let other = server.client();
    assert_eq!(cimd::fetch(&other, &store, &url).await, Ok(doc));
    assert_eq!(
        server.hits("/client.json"),
        1,
        "one fetch for three lookups"
    );
}

#[tokio::test]
async fn cimd_a_burst_of_logins_fetches_once() {
    let server = DocServer::start().await;
    let (http, store) = (server.client(), MemoryStore::new());
    let url = serve_valid(&server, "/burst.json");
    let burst = (0..8).map(|_| cimd::fetch(&http, &store, &url));
    for outcome in join_all(burst).await {
        assert_eq!(outcome.map(|d| d.client_id), Ok(url.clone()));
    }
    assert_eq!(server.hits("/burst.json"), 1);
}

#[tokio::test]
async fn cimd_a_document_for_another_client_id_is_refused_and_the_refusal_cached() {
    let server = DocServer::start().await;
    let (http, store) = (server.client(), MemoryStore::new());
    let other = server.url("/other.json");
    let url = server.route(
        "/impostor.json",
        Reply::json(document(&other), "max-age=600"),
    );
    assert_eq!(
        cimd::fetch(&http, &store, &url).await,
        Err(CimdError::ClientIdMismatch)
    );
    assert!(matches!(
        cimd::fetch(&http, &store, &url).await,
        Err(CimdError::Cached(reason)) if reason.contains("client_id")
    ));
    assert_eq!(server.hits("/impostor.json"), 1);
}

#[tokio::test]
async fn cimd_answers_that_are_not_a_json_document_are_refused() {
    let server = DocServer::start().await;
    let (http, store) = (server.client(), MemoryStore::new());
    let html = server.route("/page", Reply::raw(200, "text/html", b"<html>".to_vec()));
    let garbage = server.route(
        "/garbage.json",
        Reply::raw(200, "application/json", b"{nope".to_vec()),
    );
    let mut padded = document(&server.url("/big.json"));
    padded["padding"] = json!("x".repeat(cimd::MAX_DOCUMENT));
    let big = server.route("/big.json", Reply::json(padded, "max-age=600"));
    let missing = server.url("/missing.json");
    let mut redirect = Reply::raw(302, "text/plain", Vec::new());
    redirect
        .headers
        .push(("location", serve_valid(&server, "/target.json")));
    let moved = server.route("/moved.json", redirect);

    let cases = [
        (html, CimdError::ContentType),
        (garbage, CimdError::NotJson { line: 1, column: 2 }),
        (big, CimdError::TooLarge),
        (missing, CimdError::Status(404)),
        (moved, CimdError::Redirect(302)),
    ];
    for (url, want) in cases {
        assert_eq!(cimd::fetch(&http, &store, &url).await, Err(want), "{url}");
    }
    assert_eq!(server.hits("/target.json"), 0, "redirects are not followed");
}

#[tokio::test]
async fn cimd_tls_is_verified_for_the_name_in_the_url() {
    let server = DocServer::start().await;
    let (http, store) = (server.client(), MemoryStore::new());
    serve_valid(&server, "/client.json");
    let wrong_name = format!("https://other.test:{}/client.json", server.addr.port());
    let refused = cimd::fetch(&http, &store, &wrong_name).await;
    assert!(
        matches!(&refused, Err(CimdError::Transport(e)) if e.contains("certificate")),
        "{refused:?}"
    );
    assert_eq!(server.hits("/client.json"), 0);
}

#[tokio::test]
async fn cimd_the_production_resolver_refuses_loopback() {
    let server = DocServer::start().await;
    let store = MemoryStore::new();
    let url = serve_valid(&server, "/client.json");

    // The production filter over a name that resolves to 127.0.0.1.
    let filtered = PublicHttp::with_resolver(
        Arc::new(PublicOnly(Loopback)),
        Some(server.ca.pem.as_bytes()),
    )
    .expect("client");
    assert!(matches!(
        cimd::fetch(&filtered, &store, &url).await,
        Err(CimdError::Resolve(ResolveError::Forbidden { ip, range: "loopback", .. }))
            if ip == IpAddr::V4(Ipv4Addr::LOCALHOST)
    ));

    // The production client itself, on the system's resolver.
    let production = PublicHttp::new().expect("client");
    let localhost = url::Url::parse(&format!(
        "https://localhost:{}/client.json",
        server.addr.port()
    ))
    .expect("url");
    assert!(matches!(
        production.get(&localhost).await,
        Err(CimdError::Resolve(ResolveError::Forbidden {
            range: "loopback",
            ..
        }))
    ));
    assert_eq!(server.hits("/client.json"), 0, "nothing reached the server");
}
