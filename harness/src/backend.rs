//! An in-process HTTP backend for the reverse proxy (HTTP/1.1 and h2c,
//! optionally TLS), on a runtime of its own so that a test may block on
//! curl meanwhile. Stopped on drop.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::pki::Leaf;

/// How long `/slow` takes to answer.
pub const SLOW: Duration = Duration::from_secs(3);
/// The gap between the two events of `/sse`.
pub const SSE_GAP: Duration = Duration::from_secs(5);

/// What the backend answers.
#[derive(Clone, Copy, Debug)]
enum Answers {
    /// `/slow` after [`SLOW`]; `/sse` one event at once, the next after
    /// [`SSE_GAP`]; `/sink` the number of body bytes read; `/bytes/N` N
    /// bytes streamed in 64 KiB chunks (never held whole); anything else
    /// JSON describing the request (method, path, uri, version, headers,
    /// body length).
    Describe,
    /// `NAME PATH` as plain text.
    NameAndPath,
}

pub struct Backend {
    pub addr: SocketAddr,
    pub name: String,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Backend {
    /// Answers as [`Answers::Describe`] says, over plain HTTP.
    pub fn start(name: &str) -> Backend {
        Backend::launch(name, None, Answers::Describe)
    }

    /// Like [`Backend::start`], over TLS with `leaf` when given.
    pub fn start_with(name: &str, tls: Option<&Leaf>) -> Backend {
        Backend::launch(name, tls, Answers::Describe)
    }

    /// Answers every request with `NAME PATH`.
    pub fn text(name: &str) -> Backend {
        Backend::launch(name, None, Answers::NameAndPath)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn launch(name: &str, tls: Option<&Leaf>, answers: Answers) -> Backend {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind backend");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("addr");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("backend runtime");
        let acceptor = tls.map(|leaf| TlsAcceptor::from(leaf.server_config(&[b"h2", b"http/1.1"])));
        let name_owned = name.to_string();
        runtime.spawn(async move {
            let listener = TcpListener::from_std(std_listener).expect("listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let name = name_owned.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| answer(req, name.clone(), answers));
                    let builder = auto::Builder::new(TokioExecutor::new());
                    match acceptor {
                        None => {
                            let io = TokioIo::new(stream);
                            let _ = builder.serve_connection_with_upgrades(io, service).await;
                        }
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(stream).await {
                                let io = TokioIo::new(tls);
                                let _ = builder.serve_connection_with_upgrades(io, service).await;
                            }
                        }
                    }
                });
            }
        });
        Backend {
            addr,
            name: name.to_string(),
            runtime: Some(runtime),
        }
    }
}

type TestBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn answer(
    req: Request<Incoming>,
    name: String,
    answers: Answers,
) -> Result<Response<TestBody>, Infallible> {
    let path = req.uri().path().to_string();
    if let Answers::NameAndPath = answers {
        return Ok(text(StatusCode::OK, &format!("{name} {path}")));
    }
    match path.as_str() {
        "/slow" => {
            tokio::time::sleep(SLOW).await;
            Ok(text(StatusCode::OK, "slow"))
        }
        "/sse" => Ok(sse()),
        "/sink" => Ok(sink(req.into_body()).await),
        p if p.starts_with("/bytes/") => Ok(bytes(p["/bytes/".len()..].parse().unwrap_or(0))),
        _ => Ok(describe(req, name).await),
    }
}

async fn sink(mut body: Incoming) -> Response<TestBody> {
    let mut n: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => n += f.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => return text(StatusCode::BAD_REQUEST, "broken body"),
        }
    }
    text(StatusCode::OK, &n.to_string())
}

async fn describe(req: Request<Incoming>, name: String) -> Response<TestBody> {
    let method = req.method().to_string();
    let version = format!("{:?}", req.version());
    let uri = req.uri().to_string();
    let path = req.uri().path().to_string();
    let mut headers = serde_json::Map::new();
    for (k, v) in req.headers() {
        let v = v.to_str().unwrap_or("").to_string();
        let entry = headers
            .entry(k.as_str().to_string())
            .or_insert_with(|| serde_json::Value::Array(vec![]));
        if let serde_json::Value::Array(list) = entry {
            list.push(v.into());
        }
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let json = serde_json::json!({
        "backend": name,
        "method": method,
        "path": path,
        "uri": uri,
        "version": version,
        "headers": headers,
        "bodyLen": body.len(),
    });
    let mut resp = text(StatusCode::OK, &json.to_string());
    let headers = resp.headers_mut();
    headers.insert("content-type", "application/json".parse().expect("v"));
    headers.insert("x-backend-secret", "internal".parse().expect("v"));
    resp
}

fn text(status: StatusCode, body: &str) -> Response<TestBody> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *r.status_mut() = status;
    r
}

fn bytes(total: u64) -> Response<TestBody> {
    const CHUNK: usize = 64 * 1024;
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let mut left = total;
    let stream = futures::stream::poll_fn(move |_| {
        if left == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = left.min(CHUNK as u64);
        left -= n;
        let data = chunk.slice(..n as usize);
        std::task::Poll::Ready(Some(Ok::<_, Infallible>(Frame::data(data))))
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut()
        .insert("content-length", total.to_string().parse().expect("length"));
    r
}

fn sse() -> Response<TestBody> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
    tokio::spawn(async move {
        let first = Frame::data(Bytes::from_static(b"data: first\n\n"));
        let _ = tx.send(Ok(first)).await;
        tokio::time::sleep(SSE_GAP).await;
        let second = Frame::data(Bytes::from_static(b"data: second\n\n"));
        let _ = tx.send(Ok(second)).await;
    });
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut()
        .insert("content-type", "text/event-stream".parse().expect("v"));
    r
}
