//! Helpers for the reverse-proxy tests: `postern standalone` on port 0 with
//! a manifests folder, an in-process backend (echo, SSE, slow, sink; plain
//! or TLS), certificates from a private CA, and real peers (curl, haproxy,
//! nginx, python) found on PATH. Under `CI=true` a missing peer fails the
//! test naming it; elsewhere the test prints why it skips.

#![allow(dead_code)] // each test binary uses a different part

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

pub const PATIENCE: Duration = Duration::from_secs(10);

/// A fresh, empty folder under the target directory.
pub fn tmp_dir(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("rev-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A peer binary on PATH (or in /usr/sbin), or `None` with a printed reason
/// outside CI. Under `CI=true`, a missing peer fails the test.
pub fn peer(name: &str) -> Option<PathBuf> {
    let dirs = std::env::var("PATH").unwrap_or_default();
    let found = dirs
        .split(':')
        .chain(["/usr/sbin", "/usr/bin", "/sbin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{name} is missing: the rig installs it (e2e/lib/packages.sh)"
        );
        eprintln!("SKIP: {name} not found on PATH (install it with e2e/rig up)");
    }
    found
}

/// Debian's python3 with a module importable, or `None` as [`peer`] says.
pub fn python_with(module: &str) -> Option<PathBuf> {
    let python = PathBuf::from("/usr/bin/python3");
    let ok = python.is_file()
        && Command::new(&python)
            .args(["-c", &format!("import {module}")])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "/usr/bin/python3 cannot import {module}: the rig installs it (e2e/lib/packages.sh)"
        );
        eprintln!("SKIP: /usr/bin/python3 cannot import {module}");
        return None;
    }
    Some(python)
}

/// A free loopback port (bound then released) for peers that cannot bind 0.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A running `postern standalone`, killed on drop.
pub struct Proxy {
    child: Child,
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    pub manifests: PathBuf,
    pub log: PathBuf,
}

impl Proxy {
    /// Starts postern on `manifests` (written by the caller) with `extra`
    /// flags, and waits until the folder's snapshot serves.
    pub async fn start(manifests: &Path, extra: &[&str]) -> Proxy {
        let dir = manifests.parent().expect("parent").to_path_buf();
        let addr_file = dir.join("addrs.json");
        let log = dir.join("postern.log");
        let child = Command::new(env!("CARGO_BIN_EXE_postern"))
            .arg("standalone")
            .arg("--manifests")
            .arg(manifests)
            .args(["--admin-addr", "127.0.0.1:0", "--proxy-addr", "127.0.0.1:0"])
            .args(["--socks-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .args([
                "--https-addr",
                "127.0.0.1:0",
                "--tunnel-addr",
                "127.0.0.1:0",
            ])
            .arg("--addr-file")
            .arg(&addr_file)
            .args(extra)
            .env("RUST_LOG", "info")
            .env_remove("POSTERN_SYNC_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn postern");
        let deadline = Instant::now() + PATIENCE;
        let addrs: BTreeMap<String, String> = loop {
            let parsed = std::fs::read_to_string(&addr_file)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok());
            if let Some(map) = parsed {
                break map;
            }
            assert!(
                Instant::now() < deadline,
                "postern wrote no address file: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let addr = |k: &str| -> SocketAddr {
            addrs
                .get(k)
                .unwrap_or_else(|| panic!("no {k} in {addrs:?}"))
                .parse()
                .expect("addr")
        };
        let proxy = Proxy {
            child,
            http: addr("http"),
            https: addr("https"),
            admin: addr("admin"),
            manifests: manifests.to_path_buf(),
            log,
        };
        proxy.wait_version_change(None).await;
        proxy
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The snapshot version in service.
    pub async fn version(&self) -> Option<String> {
        let (status, body) = admin_get(self.admin, "/api/v1/snapshot").await.ok()?;
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["version"].as_str().map(str::to_string)
    }

    /// Waits until a version other than `old` serves, and the tables built
    /// from it (logged once built).
    pub async fn wait_version_change(&self, old: Option<&str>) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(v) = self.version().await
                && Some(v.as_str()) != old
                && self
                    .log_text()
                    .contains(&format!("tables rebuilt version={v}"))
            {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "no new snapshot served\n--- postern log ---\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `/metrics` text.
    pub async fn metrics(&self) -> String {
        admin_get(self.admin, "/metrics")
            .await
            .map(|(_, b)| b)
            .unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- postern log ---\n{}", self.log_text());
        }
    }
}

async fn admin_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

/// A manifests folder inside a fresh temp dir.
pub fn manifests(name: &str, yaml: &str) -> PathBuf {
    let dir = tmp_dir(name).join("manifests");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("site.yaml"), yaml).expect("write manifests");
    dir
}

/// A `kubernetes.io/tls` Secret as YAML.
pub fn tls_secret(name: &str, cert: &str, key: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}\n  tls.key: |\n{}\n",
        indent(cert, 4),
        indent(key, 4)
    )
}

pub fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines()
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A private CA and leaf certificates it signs.
pub struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
    pub pem: String,
}

/// A leaf certificate and key, PEM.
pub struct Leaf {
    pub cert: String,
    pub key: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("self-signed");
        let pem = cert.pem();
        Ca { cert, key, pem }
    }

    pub fn leaf(&self, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = rcgen::CertificateParams::new(names).expect("params");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("sign");
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// Writes the CA PEM to `dir/ca.pem` for curl's `--cacert`.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("ca.pem");
        std::fs::write(&path, &self.pem).expect("write ca");
        path
    }
}

/// A test backend (HTTP/1.1 and h2c, optionally TLS), answering:
/// `/slow` after 3 s; `/sse` one event at once, the next after 2 s;
/// `/sink` with the number of body bytes read; anything else with JSON
/// describing the request (method, path, version, headers, body length).
/// It runs on a runtime of its own, so a test may block on curl meanwhile.
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
    pub fn start(name: &str) -> Backend {
        Backend::start_with(name, None)
    }

    /// With TLS when `tls` is given (certificate and key PEM).
    pub fn start_with(name: &str, tls: Option<&Leaf>) -> Backend {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind backend");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("addr");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("backend runtime");
        let acceptor = tls.map(|leaf| {
            use rustls::pki_types::pem::PemObject;
            let chain = rustls::pki_types::CertificateDer::pem_slice_iter(leaf.cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("chain");
            let key =
                rustls::pki_types::PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).expect("key");
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .expect("cert");
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
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
                    let service = service_fn(move |req| answer(req, name.clone()));
                    let builder = auto::Builder::new(TokioExecutor::new());
                    match acceptor {
                        None => {
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                .await;
                        }
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(stream).await {
                                let _ = builder
                                    .serve_connection_with_upgrades(TokioIo::new(tls), service)
                                    .await;
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

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

type TestBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn answer(req: Request<Incoming>, name: String) -> Result<Response<TestBody>, Infallible> {
    let path = req.uri().path().to_string();
    match path.as_str() {
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Ok(text(StatusCode::OK, "slow"))
        }
        "/sse" => Ok(sse()),
        "/sink" => {
            let mut body = req.into_body();
            let mut n: u64 = 0;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => n += f.data_ref().map_or(0, |d| d.len() as u64),
                    Err(_) => return Ok(text(StatusCode::BAD_REQUEST, "broken body")),
                }
            }
            Ok(text(StatusCode::OK, &n.to_string()))
        }
        _ => {
            let method = req.method().to_string();
            let version = format!("{:?}", req.version());
            let uri = req.uri().to_string();
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
            resp.headers_mut()
                .insert("content-type", "application/json".parse().expect("v"));
            resp.headers_mut()
                .insert("x-backend-secret", "internal".parse().expect("v"));
            Ok(resp)
        }
    }
}

fn text(status: StatusCode, body: &str) -> Response<TestBody> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *r.status_mut() = status;
    r
}

fn sse() -> Response<TestBody> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
    tokio::spawn(async move {
        let _ = tx
            .send(Ok(Frame::data(Bytes::from_static(b"data: first\n\n"))))
            .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let _ = tx
            .send(Ok(Frame::data(Bytes::from_static(b"data: second\n\n"))))
            .await;
    });
    let stream = tokio_stream_from(rx);
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut()
        .insert("content-type", "text/event-stream".parse().expect("v"));
    r
}

/// An mpsc receiver as a `Stream` (no tokio-stream dependency).
fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Runs curl with `args`: its output, after at most 30 s.
pub fn curl(args: &[&str]) -> Output {
    let curl = peer("curl").expect("curl is needed");
    Command::new(curl)
        .args(["-sS", "--max-time", "30"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run curl")
}

/// A curl exchange: status, headers (lowercase names) and body.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub version: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
}

/// curl with `-i`-style output parsed; fails on a transport error.
pub fn fetch(args: &[&str]) -> Reply {
    let out = curl(&[&["-D", "-", "-w", "\n%{http_version}"], args].concat());
    assert!(
        out.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // Skip interim 1xx heads.
    let mut rest = text.as_str();
    let (head, body) = loop {
        let (head, body) = rest.split_once("\r\n\r\n").expect("a response head");
        if head.split(' ').nth(1).is_some_and(|s| s.starts_with('1')) {
            rest = body;
            continue;
        }
        break (head, body);
    };
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let (body, version) = body.rsplit_once('\n').unwrap_or((body, ""));
    Reply {
        status,
        headers,
        body: body.to_string(),
        version: version.to_string(),
    }
}

/// Reads the peak resident memory (VmHWM, KiB) of a process.
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A child process killed on drop, its output in a file.
pub struct Peer {
    pub child: Child,
    pub log: PathBuf,
}

impl Peer {
    pub fn spawn(mut cmd: Command, log: PathBuf) -> Peer {
        let file = std::fs::File::create(&log).expect("peer log");
        let err = file.try_clone().expect("clone");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .expect("spawn peer");
        Peer { child, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until something accepts TCP connections on `port`.
pub async fn wait_port(port: u16) {
    let deadline = Instant::now() + PATIENCE;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
