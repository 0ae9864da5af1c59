//! The operator and the data plane as real processes, on port 0, killed on
//! drop. Their logs go to files under `target/postern-tests/` and are
//! printed when a test fails while they run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::http::http_get;
use crate::rig::{Rig, repo_root};
use crate::tls::ServerTls;

/// Path of a workspace binary, next to the test executable's parent
/// (`target/debug/deps/x` → `target/debug/NAME`).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("no target dir above {}", exe.display()));
    let path = dir.join(name);
    if !path.is_file() {
        panic!(
            "{} not found: run `cargo build --bins` first",
            path.display()
        );
    }
    path
}

/// A scratch directory for one process (token, addr file, log) or one CA.
pub(crate) fn work_dir(label: &str) -> PathBuf {
    let dir = repo_root()
        .join("target/postern-tests")
        .join(format!("{label}-{}", unique()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    dir
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A child process, killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, mut command: Command, dir: &Path) -> Proc {
        let log = dir.join("log");
        let file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("log file: {e}"));
        let err = file.try_clone().unwrap_or_else(|e| panic!("log file: {e}"));
        command
            .env("RUST_LOG", "info,postern=debug,postern_operator=debug")
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Proc {
            name: name.into(),
            child: Some(child),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Reads `{"name": "HOST:PORT", ...}` once the process has written it.
    async fn addrs(&mut self, addr_file: &Path) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(addr_file)
                && let Ok(value) = serde_json::from_str::<Value>(&text)
            {
                return value;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(exit)) = child.try_wait()
            {
                panic!(
                    "{} exited ({exit}) before listening:\n{}",
                    self.name,
                    self.log()
                );
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("{} wrote no addr file in 30s:\n{}", self.name, self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            eprintln!(
                "---- last lines of {} ({}) ----",
                self.name,
                self.log.display()
            );
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

fn addr(value: &Value, key: &str) -> SocketAddr {
    value[key]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("addr file has no usable {key:?}: {value}"))
}

/// A running `postern-operator`.
#[derive(Debug)]
pub struct Operator {
    proc: Proc,
    pub sync: SocketAddr,
    pub admin: SocketAddr,
    pub id: String,
}

impl Operator {
    /// Starts the operator for one namespace (also its lease namespace),
    /// with `token` as the sync token, its listeners on port 0.
    pub async fn start(rig: &Rig, namespace: &str, id: &str, token: &str) -> Operator {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Operator::start_at(rig, namespace, id, token, any).await
    }

    /// Like [`Operator::start`], the sync stream served over TLS with `tls`.
    pub async fn start_tls(
        rig: &Rig,
        namespace: &str,
        id: &str,
        token: &str,
        tls: &ServerTls,
    ) -> Operator {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Operator::launch(rig, namespace, id, token, any, Some(tls), &[]).await
    }

    /// Like [`Operator::start`], with more flags (`--admin-token-file=..`).
    pub async fn start_with_args(
        rig: &Rig,
        namespace: &str,
        id: &str,
        token: &str,
        args: &[String],
    ) -> Operator {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Operator::launch(rig, namespace, id, token, any, None, args).await
    }

    /// Like [`Operator::start`] with a given sync address: a restarted
    /// operator takes its predecessor's port, where data planes reconnect.
    pub async fn start_at(
        rig: &Rig,
        namespace: &str,
        id: &str,
        token: &str,
        sync_addr: SocketAddr,
    ) -> Operator {
        Operator::launch(rig, namespace, id, token, sync_addr, None, &[]).await
    }

    async fn launch(
        rig: &Rig,
        namespace: &str,
        id: &str,
        token: &str,
        sync_addr: SocketAddr,
        tls: Option<&ServerTls>,
        args: &[String],
    ) -> Operator {
        let dir = work_dir(id);
        let token_file = dir.join("token");
        let addr_file = dir.join("addrs.json");
        std::fs::write(&token_file, token).unwrap_or_else(|e| panic!("token file: {e}"));
        let mut command = Command::new(binary("postern-operator"));
        command
            .env("KUBECONFIG", rig.kubeconfig())
            .env_remove("POSTERN_SYNC_TOKEN")
            .arg(format!("--sync-addr={sync_addr}"))
            .arg("--admin-addr=127.0.0.1:0")
            .arg("--sync-token-file")
            .arg(&token_file)
            .args(["--namespace", namespace, "--lease-namespace", namespace])
            .args(["--operator-id", id])
            .arg("--addr-file")
            .arg(&addr_file);
        if let Some(tls) = tls {
            command
                .arg("--sync-tls-cert")
                .arg(&tls.cert)
                .arg("--sync-tls-key")
                .arg(&tls.key);
        }
        command.args(args);
        let mut proc = Proc::spawn(&format!("operator {id}"), command, &dir);
        let addrs = proc.addrs(&addr_file).await;
        Operator {
            sync: addr(&addrs, "sync"),
            admin: addr(&addrs, "admin"),
            id: id.into(),
            proc,
        }
    }

    /// SIGKILL: no lease release, no goodbye to the data planes.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// The operator's own view: `GET /api/v1/snapshot` on its admin port.
    pub async fn view(&self) -> Result<Value, String> {
        let response = http_get(self.admin, "/api/v1/snapshot").await?;
        if response.status != 200 {
            return Err(format!("status {}: {}", response.status, response.body));
        }
        response.json()
    }
}

/// What a data plane's `GET /api/v1/snapshot` says.
#[derive(Clone, Debug)]
pub struct SnapshotView {
    pub version: Option<String>,
    pub json: Value,
}

impl SnapshotView {
    /// A per-kind count (`proxyTargets`, `routes`, `userUpstreams`,
    /// `tunnels`, `oauthClients`, `hostnames`) from the summary.
    pub fn count(&self, key: &str) -> Option<u64> {
        self.json["summary"][key]
            .as_u64()
            .or_else(|| self.json[key].as_u64())
    }
}

/// A running `postern dataplane`.
#[derive(Debug)]
pub struct Dataplane {
    proc: Proc,
    pub admin: SocketAddr,
    /// The reverse proxy's `--http-addr` and `--https-addr`, as bound.
    pub http: SocketAddr,
    pub https: SocketAddr,
    /// The forward proxy's `--proxy-addr` and `--socks-addr`, as bound.
    pub proxy: SocketAddr,
    pub socks: SocketAddr,
    pub id: String,
}

impl Dataplane {
    /// Starts a data plane connecting to `operator`, every listener on port 0.
    pub async fn start(operator: SocketAddr, id: &str, token: &str) -> Dataplane {
        Dataplane::launch(operator, id, token, None).await
    }

    /// Like [`Dataplane::start`], connecting with TLS and trusting only `ca`
    /// (the name checked is the host of `operator`, 127.0.0.1).
    pub async fn start_tls(operator: SocketAddr, id: &str, token: &str, ca: &Path) -> Dataplane {
        Dataplane::launch(operator, id, token, Some(ca)).await
    }

    async fn launch(operator: SocketAddr, id: &str, token: &str, ca: Option<&Path>) -> Dataplane {
        let dir = work_dir(id);
        let token_file = dir.join("token");
        let addr_file = dir.join("addrs.json");
        std::fs::write(&token_file, token).unwrap_or_else(|e| panic!("token file: {e}"));
        let mut command = Command::new(binary("postern"));
        command
            .env_remove("POSTERN_SYNC_TOKEN")
            .arg("dataplane")
            .arg("--operator")
            .arg(operator.to_string())
            .arg("--sync-token-file")
            .arg(&token_file)
            .args(["--dataplane-id", id]);
        if let Some(ca) = ca {
            command.arg("--sync-ca").arg(ca);
        }
        for flag in [
            "--admin-addr",
            "--proxy-addr",
            "--socks-addr",
            "--http-addr",
            "--https-addr",
            "--tunnel-addr",
        ] {
            command.arg(flag).arg("127.0.0.1:0");
        }
        command.arg("--addr-file").arg(&addr_file);
        let mut proc = Proc::spawn(&format!("dataplane {id}"), command, &dir);
        let addrs = proc.addrs(&addr_file).await;
        Dataplane {
            admin: addr(&addrs, "admin"),
            http: addr(&addrs, "http"),
            https: addr(&addrs, "https"),
            proxy: addr(&addrs, "proxy"),
            socks: addr(&addrs, "socks"),
            id: id.into(),
            proc,
        }
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// `GET /api/v1/snapshot`.
    pub async fn snapshot(&self) -> Result<SnapshotView, String> {
        let response = http_get(self.admin, "/api/v1/snapshot").await?;
        if response.status != 200 {
            return Err(format!("status {}: {}", response.status, response.body));
        }
        let json = response.json()?;
        let version = json["version"].as_str().map(str::to_string);
        Ok(SnapshotView { version, json })
    }

    /// The status code of `GET /readyz`.
    pub async fn readyz(&self) -> Result<u16, String> {
        Ok(http_get(self.admin, "/readyz").await?.status)
    }
}
