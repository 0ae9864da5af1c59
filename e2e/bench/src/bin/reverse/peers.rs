//! The processes of the run: the shared backend (nginx answering `ok`) and
//! the three reverse proxies in front of it, each on free loopback ports
//! with its own temporary configuration, stopped (the whole process tree)
//! when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use postern_harness::memory::tree;
use postern_harness::peers::nginx_conf;
use postern_harness::{Ca, Manifests, free_addr, tls_secret};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The Host every client sends and the name on the certificate.
pub const HOST: &str = "bench.example.test";

/// The certificate all three proxies serve: a leaf for [`HOST`] signed by a
/// CA made for this run (ECDSA P-256).
pub struct Certs {
    pub ca_der: Vec<u8>,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Certificate and key in one file, as haproxy wants them.
    pub combined: PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Certs {
    pub fn new(dir: &Path) -> Result<Certs> {
        let ca = Ca::new("postern bench CA");
        let leaf = ca.leaf(&[HOST]);
        let (cert_pem, key_pem) = (leaf.cert, leaf.key);
        let certs = Certs {
            ca_der: ca.der(),
            cert: dir.join("bench.crt"),
            key: dir.join("bench.key"),
            combined: dir.join("bench.pem"),
            cert_pem,
            key_pem,
        };
        std::fs::write(&certs.cert, &certs.cert_pem)?;
        std::fs::write(&certs.key, &certs.key_pem)?;
        std::fs::write(
            &certs.combined,
            format!("{}{}", certs.cert_pem, certs.key_pem),
        )?;
        Ok(certs)
    }
}

/// A proxy under test: where it listens and its process tree.
pub struct Proxy {
    pub name: &'static str,
    /// HTTP/1.1 plain.
    pub http: SocketAddr,
    /// TLS, ALPN h2 and http/1.1.
    pub https: SocketAddr,
    /// HTTP/2 with prior knowledge, no TLS.
    pub h2c: SocketAddr,
    process: Running,
}

impl Proxy {
    pub fn pid(&self) -> u32 {
        match &self.process {
            Running::Tree(process) => process.child.id(),
            Running::Postern(postern) => postern.pid(),
        }
    }
}

/// What keeps a proxy running: a peer's process tree, or postern as the
/// harness starts it.
enum Running {
    Tree(Process),
    Postern(Box<postern_harness::Postern>),
}

/// A child process whose tree gets SIGTERM, then SIGKILL, on drop.
pub struct Process {
    child: Child,
}

impl Process {
    fn spawn(cmd: &mut Command, log: &Path) -> Result<Process> {
        let out = std::fs::File::create(log)?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("spawn {cmd:?}"))?;
        Ok(Process { child })
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let tree = tree(self.child.id());
        signal("TERM", &tree[..1]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let alive: Vec<u32> = tree
            .into_iter()
            .filter(|pid| Path::new(&format!("/proc/{pid}")).exists())
            .collect();
        signal("KILL", &alive);
        let _ = self.child.wait();
    }
}

fn signal(name: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status();
}

/// The backend every proxy forwards to: one nginx worker answering `ok`.
pub async fn backend(dir: &Path) -> Result<(Process, SocketAddr)> {
    let dir = scratch(dir, "backend")?;
    let addr = free_addr();
    let server = format!(
        "  server {{ listen {addr} reuseport backlog=4096; keepalive_requests 1000000; keepalive_timeout 300s;\n    \
         location / {{ default_type text/plain; return 200 \"ok\"; }} }}\n"
    );
    let process = nginx(&dir, 1, &server)?;
    wait_ready(addr, None).await?;
    Ok((process, addr))
}

/// `postern standalone` (release build, or `$POSTERN_BIN`): one ProxyTarget
/// for [`HOST`] with the certificate from a `kubernetes.io/tls` Secret,
/// and the same certificate as `--default-cert` (wrk sends no usable SNI).
/// Which of Postern's logs are on: the access log line and the request
/// log (its default in-memory store) are off unless asked for, like the
/// peers' access logs.
#[derive(Clone, Copy, Default)]
pub struct Logs {
    pub access: bool,
    pub requests: bool,
}

pub async fn postern(backend: SocketAddr, certs: &Certs, logs: Logs) -> Result<Proxy> {
    let access_log = logs.access;
    let name = match (logs.access, logs.requests) {
        (false, false) => "postern",
        (true, false) => "postern (access log on)",
        (false, true) => "postern (request log on)",
        (true, true) => "postern (both logs on)",
    };
    let manifests = Manifests::new(&name.replace([' ', '(', ')'], "-"))
        .with("bench.yaml", &manifest(backend, certs));
    let mut postern = postern_harness::Postern::standalone(manifests)
        .arg("--default-cert")
        .arg(&certs.cert)
        .arg("--default-key")
        .arg(&certs.key)
        // The idle rows hold 10,000 connections from one address for longer
        // than the default idle deadline.
        .args([
            "--max-connections-per-client",
            "0",
            "--client-idle-timeout",
            "30m",
            "--request-log",
            if logs.requests { "memory" } else { "off" },
        ])
        .env(
            "RUST_LOG",
            if access_log {
                "info"
            } else {
                "info,postern::access=off"
            },
        );
    if let Some(bin) = std::env::var_os("POSTERN_BIN") {
        postern = postern.bin(PathBuf::from(bin));
    }
    let postern = postern.start().await;
    let (http, https) = (postern.http, postern.https);
    wait_ready(http, Some(HOST)).await?;
    Ok(Proxy {
        name,
        http,
        https,
        h2c: http,
        process: Running::Postern(Box::new(postern)),
    })
}

/// The configuration measured is a realistic one, not a minimal one: the
/// benchmarked site sets, adds and removes headers both ways, and 999 other
/// sites fill the routing table (the peers route one host).
fn manifest(backend: SocketAddr, certs: &Certs) -> String {
    let mut yaml = format!(
        "apiVersion: postern.io/v1alpha1\nkind: ProxyTarget\nmetadata: {{name: bench, namespace: default}}\n\
         spec:\n  hostnames: [{HOST}]\n  backend: {{url: \"http://{backend}\"}}\n  tls: {{secretRef: {{name: bench-tls}}}}\n  \
         requestHeaders: {{set: [{{name: X-Bench, value: \"1\"}}], remove: [X-Debug]}}\n  \
         responseHeaders: {{add: [{{name: X-Served-By, value: postern}}], remove: [Server]}}\n\
         ---\n{}",
        tls_secret("bench-tls", &certs.cert_pem, &certs.key_pem)
    );
    for i in 1..1000 {
        yaml.push_str(&format!(
            "---\napiVersion: postern.io/v1alpha1\nkind: ProxyTarget\nmetadata: {{name: other-{i}, namespace: default}}\n\
             spec:\n  hostnames: [site-{i}.bench.test]\n  backend: {{url: \"http://{backend}\"}}\n"
        ));
    }
    yaml
}

/// nginx, two workers, upstream keep-alive, forwarding headers set.
pub async fn nginx_proxy(dir: &Path, backend: SocketAddr, certs: &Certs) -> Result<Proxy> {
    let dir = scratch(dir, "nginx")?;
    let (http, https, h2c) = (free_addr(), free_addr(), free_addr());
    let location = "location / { proxy_pass http://backend; proxy_http_version 1.1; \
                    proxy_set_header Connection \"\"; \
                    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; \
                    proxy_set_header X-Forwarded-Proto $scheme; }";
    let server = format!(
        "  upstream backend {{ server {backend}; keepalive 1024; keepalive_requests 1000000; }}\n  \
         keepalive_requests 1000000; keepalive_timeout 300s;\n  \
         ssl_certificate {}; ssl_certificate_key {};\n  \
         server {{ listen {http} backlog=4096; listen {https} ssl http2 backlog=4096; {location} }}\n  \
         server {{ listen {h2c} http2 backlog=4096; {location} }}\n",
        certs.cert.display(),
        certs.key.display()
    );
    let process = nginx(&dir, 2, &server)?;
    wait_ready(http, Some(HOST)).await?;
    Ok(Proxy {
        name: "nginx",
        http,
        https,
        h2c,
        process: Running::Tree(process),
    })
}

fn nginx(dir: &Path, workers: u32, servers: &str) -> Result<Process> {
    std::fs::write(
        dir.join("nginx.conf"),
        nginx_conf(dir, workers, 16000, servers),
    )?;
    let mut cmd = Command::new("nginx");
    cmd.arg("-p").arg(dir).arg("-e").arg(dir.join("error.log"));
    cmd.arg("-c").arg(dir.join("nginx.conf"));
    Process::spawn(&mut cmd, &dir.join("nginx.out"))
}

/// haproxy, two threads, the same certificate, forwarding headers set.
pub async fn haproxy_proxy(dir: &Path, backend: SocketAddr, certs: &Certs) -> Result<Proxy> {
    let dir = scratch(dir, "haproxy")?;
    let (http, https, h2c) = (free_addr(), free_addr(), free_addr());
    let conf = format!(
        "global\n  nbthread 2\n  maxconn 10100\n  no strict-limits\n\
         defaults\n  mode http\n  option forwardfor\n  timeout connect 5s\n  timeout client 300s\n  \
         timeout server 30s\n  timeout http-keep-alive 300s\n  maxconn 10100\n\
         frontend bench\n  bind {http}\n  bind {https} ssl crt {} alpn h2,http/1.1\n  bind {h2c} proto h2\n  \
         http-request set-header X-Forwarded-Proto https if {{ ssl_fc }}\n  default_backend ok\n\
         backend ok\n  server ok {backend}\n",
        certs.combined.display()
    );
    std::fs::write(dir.join("haproxy.cfg"), conf)?;
    let mut cmd = Command::new("haproxy");
    cmd.arg("-db").arg("-f").arg(dir.join("haproxy.cfg"));
    let process = Process::spawn(&mut cmd, &dir.join("haproxy.log"))?;
    wait_ready(http, Some(HOST)).await?;
    Ok(Proxy {
        name: "haproxy",
        http,
        https,
        h2c,
        process: Running::Tree(process),
    })
}

/// Waits (at most 15 s) until `GET /` answers `200 ok`.
async fn wait_ready(addr: SocketAddr, host: Option<&str>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let host = host.unwrap_or("backend");
    loop {
        match probe(addr, host).await {
            Ok(true) => return Ok(()),
            _ if Instant::now() > deadline => bail!("{addr} never answered 200 ok"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn probe(addr: SocketAddr, host: &str) -> Result<bool> {
    let mut s = TcpStream::connect(addr).await?;
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await??;
    Ok(buf.starts_with(b"HTTP/1.1 200") && buf.ends_with(b"ok"))
}

fn scratch(parent: &Path, name: &str) -> Result<PathBuf> {
    let dir = parent.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
