//! Keep-alive connections to HTTP/1.1 backends, seen from a backend that
//! counts its connections: requests from many clients share them, bodies of
//! every framing (length, chunked, none) hand them back, and a connection
//! the backend closed while it sat idle costs the next request nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use postern_harness::{Manifests, Postern, curl};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A raw HTTP/1.1 backend: answers by path, counts accepted connections,
/// and with `close_after` closes each connection that long after every
/// response, without saying so (as a backend's keep-alive timeout does).
struct RawBackend {
    url: String,
    accepted: Arc<AtomicUsize>,
}

impl RawBackend {
    async fn start(close_after: Option<Duration>) -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, close_after));
            }
        });
        RawBackend { url, accepted }
    }

    fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn serve(mut stream: TcpStream, close_after: Option<Duration>) {
    let mut buf = Vec::new();
    loop {
        let Some(end) = head_end(&buf) else {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        while buf.len() < end + length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = String::from_utf8_lossy(&buf[end..end + length]).to_string();
        buf.drain(..end + length);
        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
        let answer = match path.as_str() {
            "/chunked" => {
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
                    .to_string()
            }
            "/empty" => "HTTP/1.1 204 No Content\r\n\r\n".to_string(),
            _ if head.starts_with("HEAD ") => {
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n".to_string()
            }
            _ => {
                let text = format!("ok {body}");
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}",
                    text.len()
                )
            }
        };
        if stream.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
        if let Some(after) = close_after {
            tokio::time::sleep(after).await;
            return;
        }
    }
}

fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Postern in front of `backend`, with one serving thread: backend
/// connections are pooled per serving thread, so one thread makes "one
/// backend connection" exact.
async fn proxy_to(name: &str, backend: &RawBackend) -> Postern {
    let yaml = format!(
        "apiVersion: postern.io/v1alpha1\nkind: ProxyTarget\nmetadata: {{name: raw, namespace: default}}\nspec:\n  hostnames: [raw.test]\n  backend: {{url: \"{}\"}}\n",
        backend.url
    );
    let manifests = Manifests::new(name).with("site.yaml", &yaml);
    Postern::standalone(manifests)
        .arg("--serve-threads=1")
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_backend_connection_serves_request_after_request_of_every_framing() {
    let backend = RawBackend::start(None).await;
    let proxy = proxy_to("pool-reuse", &backend).await;
    let base = format!("http://{}", proxy.http);
    // Each curl is a new client connection; the backend connection stays.
    let cases: [(&str, &[&str], u16, &str); 6] = [
        ("/", &[], 200, "ok "),
        ("/", &["-d", "hello"], 200, "ok hello"),
        ("/", &["-I"], 200, ""),
        ("/empty", &[], 204, ""),
        ("/chunked", &[], 200, "abc"),
        ("/", &[], 200, "ok "),
    ];
    for (path, extra, status, body) in cases {
        let url = format!("{base}{path}");
        let mut args = vec!["-H", "Host: raw.test"];
        args.extend_from_slice(extra);
        args.push(&url);
        let r = curl(&args).await;
        assert_eq!(r.status, status, "{args:?}: {r:?}");
        if extra != ["-I"] {
            assert_eq!(r.body, body, "{args:?}");
        }
    }
    assert_eq!(
        backend.connections(),
        1,
        "every response, whatever its framing, hands the connection back for the next request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_backend_closed_while_idle_costs_the_next_request_nothing() {
    let backend = RawBackend::start(Some(Duration::from_millis(20))).await;
    let proxy = proxy_to("pool-stale", &backend).await;
    let url = format!("http://{}/", proxy.http);
    for round in 0..4 {
        // Well after the backend closed the connection the last one used.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let get = curl(&["-H", "Host: raw.test", &url]).await;
        assert_eq!((get.status, get.body.as_str()), (200, "ok "), "GET {round}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Not idempotent, with a body: it must not have been sent on the
        // dead connection either.
        let post = curl(&["-H", "Host: raw.test", "-d", "x", &url]).await;
        assert_eq!(
            (post.status, post.body.as_str()),
            (200, "ok x"),
            "POST {round}"
        );
    }
    assert_eq!(
        backend.connections(),
        8,
        "one connection per request: each was closed by the backend"
    );
}
