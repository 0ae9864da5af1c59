//! Test harness: the real `postern` binary on port 0, a tiny HTTP client for
//! its admin API, and bounded polling instead of sleeps.

#![allow(dead_code)] // each test binary uses a different part

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A fresh, empty folder under the target directory.
pub fn tmp_dir(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// The repository's `examples/standalone`, copied so a test may edit it.
pub fn example_copy(name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/standalone");
    let dir = tmp_dir(name).join("manifests");
    std::fs::create_dir_all(&dir).expect("mkdir");
    for entry in std::fs::read_dir(&src).expect("examples/standalone exists") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, dir.join(path.file_name().expect("name"))).expect("copy");
    }
    dir
}

/// A running `postern` process, killed on drop.
pub struct Postern {
    child: Child,
    pub admin: SocketAddr,
    pub log: PathBuf,
}

impl Postern {
    /// Starts `postern <args>` with every listener on port 0 and waits for
    /// its address file.
    pub async fn start(args: &[&str], envs: &[(&str, &str)]) -> Postern {
        let dir = tmp_dir("postern-run");
        let addr_file = dir.join("addrs.json");
        let log = dir.join("postern.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_postern"));
        cmd.args(args)
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
            .env("RUST_LOG", "info")
            .env_remove("POSTERN_SYNC_TOKEN")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        let child = cmd.spawn().expect("spawn postern");
        let mut p = Postern {
            child,
            admin: "0.0.0.0:0".parse().expect("addr"),
            log,
        };
        let admin = wait_for("the address file", Duration::from_secs(10), || {
            let text = std::fs::read_to_string(&addr_file).ok();
            async move {
                let map: serde_json::Value = serde_json::from_str(&text?).ok()?;
                map["admin"].as_str()?.parse::<SocketAddr>().ok()
            }
        })
        .await;
        p.admin = admin;
        p
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET on the admin port: status and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n--- postern log ---\n{}", self.log_text()))
    }

    /// GET /api/v1/snapshot as JSON.
    pub async fn snapshot(&self) -> serde_json::Value {
        let (status, body) = self.get("/api/v1/snapshot").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("snapshot JSON")
    }

    /// Polls the snapshot view until `f` accepts it.
    pub async fn snapshot_until<T>(
        &self,
        what: &str,
        limit: Duration,
        f: impl Fn(&serde_json::Value) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + limit;
        loop {
            let view = self.snapshot().await;
            if let Some(t) = f(&view) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for {what}; last view: {view:#}\n--- postern log ---\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "postern did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Postern {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `postern <args>` to completion: exit code and stderr.
pub fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(args)
        .env_remove("POSTERN_SYNC_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("run postern");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A one-shot HTTP/1.1 GET: status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr).await?;
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
        .ok_or_else(|| std::io::Error::other(format!("bad response: {head}")))?;
    Ok((status, body.to_string()))
}

/// Polls `f` every 20 ms until it returns `Some`, failing after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
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
