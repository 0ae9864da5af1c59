//! Shared helpers of the forward-proxy tests: the real `postern standalone`
//! on port 0, real peers from Debian (microsocks, tinyproxy) started on free
//! loopback ports with their own temporary configuration, tiny in-process
//! targets (HTTP, TLS, echo, a blackhole), and real curl as the client.
//!
//! Under `CI=true` a missing peer binary fails the test, naming it; outside
//! CI the test is skipped with a printed reason. Every wait is bounded.

#![allow(dead_code)] // each test binary uses a different part

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A fresh, empty folder under the target directory.
pub fn tmp_dir(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("fwd-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// The path of a peer binary; `None` (skip) outside CI, a failure under `CI=true`.
pub fn require(bin: &str) -> Option<PathBuf> {
    for dir in [
        "/usr/bin",
        "/usr/sbin",
        "/usr/local/bin",
        "/usr/local/sbin",
        "/bin",
        "/sbin",
    ] {
        let path = Path::new(dir).join(bin);
        if path.is_file() {
            return Some(path);
        }
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "the test peer `{bin}` is not installed (CI=true: e2e/rig installs it from Debian's packages)"
        );
    }
    eprintln!("SKIPPED: `{bin}` is not installed (run e2e/rig up, or apt-get install it)");
    None
}

/// A free loopback port (bound once and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind port 0")
        .port()
}

/// Waits until `addr` accepts connections.
pub async fn wait_port(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {addr}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `f` every 20 ms until it returns `Some`, failing after `limit`.
pub async fn wait_for<T, Fut>(what: &str, limit: Duration, mut f: impl FnMut() -> Fut) -> T
where
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(t) = f().await {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A child process killed on drop, with its output in a log file.
pub struct Proc {
    child: std::process::Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(cmd: &mut std::process::Command, log: PathBuf) -> Proc {
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Proc { child, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `postern standalone` with its manifests folder.
pub struct Postern {
    pub proc: Proc,
    pub proxy: SocketAddr,
    pub socks: SocketAddr,
    pub admin: SocketAddr,
    pub manifests: PathBuf,
}

impl Postern {
    /// Starts on port 0 with JSON logs, writes `files` first, and waits
    /// until a snapshot is applied.
    pub async fn start(name: &str, files: &[(&str, String)], extra: &[&str]) -> Postern {
        let dir = tmp_dir(name);
        let manifests = dir.join("manifests");
        std::fs::create_dir_all(&manifests).expect("mkdir");
        for (file, yaml) in files {
            write_manifest(&manifests, file, yaml);
        }
        Postern::start_on(name, manifests, extra).await
    }

    /// Starts on an existing manifests folder (a restart keeps it).
    pub async fn start_on(name: &str, manifests: PathBuf, extra: &[&str]) -> Postern {
        let dir = tmp_dir(&format!("{name}-run"));
        let addr_file = dir.join("addrs.json");
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_postern"));
        cmd.args(["--log-format", "json", "standalone", "--manifests"])
            .arg(&manifests)
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
            .env("RUST_LOG", "info");
        let proc = Proc::spawn(&mut cmd, dir.join("postern.log"));
        let addrs = wait_for("the address file", Duration::from_secs(10), || {
            let text = std::fs::read_to_string(&addr_file).ok();
            async move { serde_json::from_str::<serde_json::Value>(&text?).ok() }
        })
        .await;
        let addr = |k: &str| -> SocketAddr {
            addrs[k]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("no {k} in {addrs}"))
        };
        let p = Postern {
            proxy: addr("proxy"),
            socks: addr("socks"),
            admin: addr("admin"),
            proc,
            manifests,
        };
        wait_for(
            "a snapshot to be applied",
            Duration::from_secs(10),
            || async { (p.admin_get("/readyz").await.0 == 200).then_some(()) },
        )
        .await;
        p
    }

    /// A `http://user:pw@127.0.0.1:PORT` proxy URL.
    pub fn proxy_url(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@{}", self.proxy)
    }

    pub fn socks_url(&self, user: &str, password: &str) -> String {
        format!("{user}:{password}@{}", self.socks)
    }

    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path)
            .await
            .unwrap_or((0, String::new()))
    }

    pub async fn metrics(&self) -> String {
        self.admin_get("/metrics").await.1
    }

    /// The value of one sample in `/metrics` (0 when absent).
    pub async fn metric(&self, sample: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }

    /// The JSON log lines so far.
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        self.proc
            .log_text()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits for a log line that `f` accepts.
    pub async fn wait_log(
        &self,
        what: &str,
        limit: Duration,
        f: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(line) = self.log_lines().into_iter().find(|l| f(l)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for log: {what}\n--- postern log ---\n{}",
                self.proc.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Replaces one manifest file (atomically, as the watcher expects).
    pub fn write(&self, file: &str, yaml: &str) {
        write_manifest(&self.manifests, file, yaml);
    }

    pub fn remove(&self, file: &str) {
        std::fs::remove_file(self.manifests.join(file)).expect("remove manifest");
    }
}

/// A log line's field (`fields.NAME` in tracing's JSON).
pub fn field<'a>(line: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    &line["fields"][name]
}

/// Writes `yaml` as DIR/FILE via a temporary name the watcher ignores.
pub fn write_manifest(dir: &Path, file: &str, yaml: &str) {
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, yaml).expect("write manifest");
    std::fs::rename(&tmp, dir.join(file)).expect("rename manifest");
}

/// A Secret with the user's password and a UserUpstream. `spec_extra` is
/// appended to the spec (two-space indented YAML lines).
pub fn user_yaml(
    user: &str,
    password: &str,
    upstream: &str,
    creds: Option<(&str, &str)>,
    spec_extra: &str,
) -> String {
    let mut yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {user}-pw}}\nstringData: {{password: \"{password}\"}}\n---\n"
    );
    if let Some((u, p)) = creds {
        yaml.push_str(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {user}-up}}\nstringData: {{username: \"{u}\", password: \"{p}\"}}\n---\n"
        ));
    }
    yaml.push_str(&format!(
        "apiVersion: postern.io/v1alpha1\nkind: UserUpstream\nmetadata: {{name: {user}}}\nspec:\n  user: {user}\n  passwordSecretRef: {{name: {user}-pw}}\n  upstream: \"{upstream}\"\n"
    ));
    if creds.is_some() {
        yaml.push_str(&format!(
            "  upstreamCredentialsSecretRef: {{name: {user}-up}}\n"
        ));
    }
    yaml.push_str(spec_extra);
    yaml
}

/// A tiny HTTP target answering every request with `hello from <peer ip>`,
/// so a test sees which address (which upstream) reached it.
pub async fn http_target() -> SocketAddr {
    serve_target("127.0.0.1:0", |peer| format!("hello from {}", peer.ip())).await
}

async fn serve_target(
    bind: &str,
    body: impl Fn(SocketAddr) -> String + Send + Sync + 'static,
) -> SocketAddr {
    let listener = TcpListener::bind(bind).await.expect("bind target");
    let addr = listener.local_addr().expect("addr");
    let body = Arc::new(body);
    tokio::spawn(async move {
        while let Ok((mut s, peer)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let text = body(peer);
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

/// A target that echoes every byte back (for tunnels held open).
pub async fn echo_target() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// A listener that accepts and never answers: handshakes with it time out.
pub async fn blackhole() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind blackhole");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    addr
}

/// A port with nothing listening on it.
pub fn closed_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// `microsocks` on a free port, optionally with auth and an outgoing bind address.
pub async fn microsocks(
    auth: Option<(&str, &str)>,
    bind: Option<&str>,
) -> Option<(Proc, SocketAddr)> {
    let bin = require("microsocks")?;
    let port = free_port();
    let mut cmd = std::process::Command::new(bin);
    cmd.args(["-i", "127.0.0.1", "-p", &port.to_string()]);
    if let Some((u, p)) = auth {
        cmd.args(["-u", u, "-P", p]);
    }
    if let Some(b) = bind {
        cmd.args(["-b", b]);
    }
    let proc = Proc::spawn(&mut cmd, tmp_dir("microsocks").join("microsocks.log"));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_port(addr, "microsocks").await;
    Some((proc, addr))
}

/// `tinyproxy` on a free port with Basic auth, connecting out from `bind`.
pub async fn tinyproxy(
    auth: Option<(&str, &str)>,
    bind: Option<&str>,
) -> Option<(Proc, SocketAddr)> {
    let bin = require("tinyproxy")?;
    let port = free_port();
    let dir = tmp_dir("tinyproxy");
    let log = dir.join("tinyproxy.log");
    let mut conf = format!(
        "Port {port}\nListen 127.0.0.1\nTimeout 60\nLogFile \"{}\"\nLogLevel Connect\nMaxClients 100\nAllow 127.0.0.1\n",
        log.display()
    );
    if let Some((u, p)) = auth {
        conf.push_str(&format!("BasicAuth {u} {p}\n"));
    }
    if let Some(b) = bind {
        conf.push_str(&format!("Bind {b}\n"));
    }
    let conf_path = dir.join("tinyproxy.conf");
    std::fs::write(&conf_path, conf).expect("write tinyproxy.conf");
    let mut cmd = std::process::Command::new(bin);
    cmd.arg("-d").arg("-c").arg(&conf_path);
    let proc = Proc::spawn(&mut cmd, log);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_port(addr, "tinyproxy").await;
    Some((proc, addr))
}

/// Dante (`danted`) on a free port without auth (its username method
/// checks system accounts), connecting out from `external`.
pub async fn dante(external: &str) -> Option<(Proc, SocketAddr)> {
    let bin = require("danted")?;
    let port = free_port();
    let dir = tmp_dir("dante");
    let log = dir.join("dante.log");
    let conf = format!(
        "logoutput: {}\ninternal: 127.0.0.1 port = {port}\nexternal: {external}\n\
         clientmethod: none\nsocksmethod: none\nuser.privileged: root\nuser.unprivileged: nobody\n\
         client pass {{\n  from: 127.0.0.0/8 to: 0.0.0.0/0\n  log: connect\n}}\n\
         socks pass {{\n  from: 127.0.0.0/8 to: 0.0.0.0/0\n  command: connect\n  log: connect\n}}\n",
        log.display()
    );
    let conf_path = dir.join("danted.conf");
    std::fs::write(&conf_path, conf).expect("write danted.conf");
    let mut cmd = std::process::Command::new(bin);
    cmd.arg("-f")
        .arg(&conf_path)
        .arg("-p")
        .arg(dir.join("danted.pid"))
        .args(["-N", "1"]);
    let proc = Proc::spawn(&mut cmd, log);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_port(addr, "danted").await;
    Some((proc, addr))
}

/// What curl did.
#[derive(Debug)]
pub struct Curl {
    /// The final HTTP status (0 when none).
    pub code: u16,
    /// The status of the proxy's answer to CONNECT (0 when none).
    pub connect_code: u16,
    pub body: String,
    pub stderr: String,
    pub exit: i32,
}

/// Runs `curl -sS <args>` (bounded to 20 s).
pub async fn curl(args: &[&str]) -> Curl {
    let require_curl = require("curl").expect("curl is required");
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(require_curl)
            .args([
                "-sS",
                "--max-time",
                "15",
                "-o",
                "-",
                "-w",
                "\n%{http_code} %{http_connect}",
            ])
            .args(args)
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("curl finished")
    .expect("run curl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, codes) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let mut codes = codes.split(' ').map(|c| c.parse().unwrap_or(0));
    Curl {
        code: codes.next().unwrap_or(0),
        connect_code: codes.next().unwrap_or(0),
        body: body.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        exit: out.status.code().unwrap_or(-1),
    }
}

/// A one-shot HTTP/1.1 GET: status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let (status, text) = raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    Ok((
        status,
        text.split_once("\r\n\r\n")
            .map_or(String::new(), |(_, b)| b.to_string()),
    ))
}

/// Sends raw bytes and reads the response until close (or 5 s): status and text.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(request).await?;
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut chunk = [0u8; 8192];
    while !response_complete(&buf) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, text))
}

/// A response head and its `Content-Length` body have arrived.
fn response_complete(buf: &[u8]) -> bool {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let length = head.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    length.is_some_and(|n| buf.len() >= end + 4 + n)
}

/// An open CONNECT tunnel through the proxy, past its `200`.
pub async fn open_tunnel(
    proxy: SocketAddr,
    user: &str,
    password: &str,
    target: SocketAddr,
) -> Result<TcpStream, String> {
    use base64::Engine as _;
    let creds = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut s = TcpStream::connect(proxy).await.map_err(|e| e.to_string())?;
    let req = format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: Basic {creds}\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte))
            .await
            .map_err(|_| "no answer to CONNECT".to_string())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("closed after {:?}", String::from_utf8_lossy(&head)));
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    if head.starts_with("HTTP/1.1 200") {
        Ok(s)
    } else {
        Err(head)
    }
}

/// Sends a line through an echo tunnel and expects it back.
pub async fn echo_roundtrip(s: &mut TcpStream, msg: &[u8]) -> bool {
    if s.write_all(msg).await.is_err() {
        return false;
    }
    let mut got = vec![0u8; msg.len()];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got)).await,
        Ok(Ok(_))
    ) && got == msg
}

/// Waits (bounded) for the peer to close the stream: true when it did.
pub async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 64];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// A self-signed CA and a leaf for `127.0.0.1` and `localhost`, as PEM files
/// in `dir`; returns (ca path, rustls server config).
pub fn tls_identity(dir: &Path) -> (PathBuf, Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "postern test CA");
    let ca = ca_params.self_signed(&ca_key).expect("ca cert");
    let key = KeyPair::generate().expect("leaf key");
    let params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("leaf params");
    let leaf = params.signed_by(&key, &ca, &ca_key).expect("leaf cert");
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).expect("write ca");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key der"),
        )
        .expect("server config");
    (ca_path, Arc::new(config))
}

/// A TLS terminator on a free port forwarding plain bytes to `backend`
/// (an `https://` upstream proxy made of tinyproxy behind TLS).
pub async fn tls_front(config: Arc<rustls::ServerConfig>, backend: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind tls front");
    let addr = listener.local_addr().expect("addr");
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let Ok(mut back) = TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut back).await;
            });
        }
    });
    addr
}

/// A TLS target answering `hello over tls`.
pub async fn tls_target(config: Arc<rustls::ServerConfig>) -> SocketAddr {
    let plain = serve_target("127.0.0.1:0", |_| "hello over tls".to_string()).await;
    tls_front(config, plain).await
}
