//! The `postern` binary as a process: `postern standalone` on a manifests
//! folder or `postern dataplane` against an operator, every listener on
//! port 0 and the real addresses read back from `--addr-file`.

mod admin;

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub use admin::{SnapshotView, field, metric_value};

use crate::dirs::binary;
use crate::manifests::Manifests;
use crate::process::{Launch, Proc};

/// Every listener flag of `postern`; each gets `127.0.0.1:0`.
pub const LISTENERS: [&str; 6] = [
    "--admin-addr",
    "--proxy-addr",
    "--socks-addr",
    "--http-addr",
    "--https-addr",
    "--tunnel-addr",
];

/// How to start `postern`; see [`Postern::standalone`] and [`Postern::dataplane`].
#[derive(Debug)]
pub struct PosternBuilder {
    launch: Launch,
    id: String,
    manifests: Option<Manifests>,
    /// Listener flag → address, `127.0.0.1:0` unless [`PosternBuilder::listen`] says.
    listen: Vec<(&'static str, String)>,
}

/// A running `postern`, killed on drop.
#[derive(Debug)]
pub struct Postern {
    proc: Proc,
    pub id: String,
    pub admin: SocketAddr,
    /// The forward proxy's `--proxy-addr` and `--socks-addr`, as bound.
    pub proxy: SocketAddr,
    pub socks: SocketAddr,
    /// The reverse proxy's `--http-addr` and `--https-addr`, as bound.
    pub http: SocketAddr,
    pub https: SocketAddr,
    /// The agents' listener, once this build serves it.
    pub tunnel: Option<SocketAddr>,
    manifests: Option<Manifests>,
}

impl Postern {
    /// `postern standalone --manifests DIR`. Started, it has served the
    /// folder's first snapshot (see [`Postern::serving`]).
    pub fn standalone(manifests: impl AsRef<Path>) -> PosternBuilder {
        let dir = manifests.as_ref().to_path_buf();
        let launch = Postern::launch("postern standalone")
            .arg("standalone")
            .arg("--manifests")
            .arg(&dir);
        PosternBuilder::new(launch, "standalone", Some(Manifests::at(dir)))
    }

    /// [`Postern::standalone`] on a new folder holding `files`.
    pub fn standalone_with(label: &str, files: &[(&str, String)]) -> PosternBuilder {
        Postern::standalone(Manifests::new(label).with_all(files))
    }

    /// `postern dataplane --operator ADDR`. Started, it has bound its
    /// listeners; it serves once the operator sends a snapshot.
    pub fn dataplane(operator: SocketAddr) -> PosternBuilder {
        let launch = Postern::launch("postern dataplane")
            .arg("dataplane")
            .arg("--operator")
            .arg(operator.to_string());
        PosternBuilder::new(launch, "dataplane", None)
    }

    fn launch(name: &str) -> Launch {
        let read_token = crate::http::harness_read_token_file();
        Launch::new(name, binary("postern"))
            .env("RUST_LOG", "info")
            .env(
                "POSTERN_ADMIN_READ_TOKEN_FILE",
                read_token.display().to_string(),
            )
            .env_remove("POSTERN_SYNC_TOKEN")
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// Where its log is written (kept after it stops).
    pub fn log_path(&self) -> &std::path::Path {
        self.proc.log_path()
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Its scratch folder (the log, the address file, the files builders wrote).
    pub fn scratch_dir(&self) -> &Path {
        let log = self.proc.log_path();
        log.parent().unwrap_or(log)
    }

    /// SIGKILL: no drain, no goodbye to agents or clients.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// The process alone, for a caller that keeps its own addresses.
    pub fn into_proc(self) -> Proc {
        self.proc
    }

    /// Waits (blocking) for it to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        self.proc.wait_exit(limit)
    }

    /// The manifests folder of a standalone postern.
    pub fn manifests(&self) -> &Path {
        self.manifests_dir().path()
    }

    /// Replaces one manifest file (atomically, as the watcher expects).
    pub fn write(&self, file: &str, yaml: &str) {
        self.manifests_dir().write(file, yaml);
    }

    pub fn remove(&self, file: &str) {
        self.manifests_dir().remove(file);
    }

    fn manifests_dir(&self) -> &Manifests {
        let manifests = self.manifests.as_ref();
        manifests.unwrap_or_else(|| panic!("{} has no manifests folder", self.id))
    }

    /// `http://user:pw@PROXY`, for curl's `-x`.
    pub fn proxy_url(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@{}", self.proxy)
    }

    /// `user:pw@SOCKS`, for curl's `--socks5-hostname`.
    pub fn socks_url(&self, user: &str, password: &str) -> String {
        format!("{user}:{password}@{}", self.socks)
    }
}

impl PosternBuilder {
    fn new(launch: Launch, id: &str, manifests: Option<Manifests>) -> PosternBuilder {
        PosternBuilder {
            launch: launch.addr_file(),
            id: id.into(),
            manifests,
            listen: LISTENERS
                .iter()
                .map(|f| (*f, "127.0.0.1:0".into()))
                .collect(),
        }
    }

    /// `FLAG ADDR` instead of port 0 for one of [`LISTENERS`] (a restarted
    /// process back on the port its clients know).
    pub fn listen(mut self, flag: &str, addr: std::net::SocketAddr) -> PosternBuilder {
        for (f, a) in &mut self.listen {
            if *f == flag {
                *a = addr.to_string();
            }
        }
        self
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> PosternBuilder {
        self.launch = self.launch.arg(arg);
        self
    }

    pub fn args<I, S>(self, args: I) -> PosternBuilder
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        args.into_iter().fold(self, PosternBuilder::arg)
    }

    pub fn env(mut self, key: &str, value: &str) -> PosternBuilder {
        self.launch = self.launch.env(key, value);
        self
    }

    /// Another binary than `target/<profile>/postern`.
    pub fn bin(mut self, path: impl Into<PathBuf>) -> PosternBuilder {
        self.launch = self.launch.program(path);
        self
    }

    /// Starts it with the open-file limit (soft and hard) at `limit`.
    pub fn open_file_limit(mut self, limit: u64) -> PosternBuilder {
        self.launch = self.launch.wrapped([
            "prlimit".to_string(),
            format!("--nofile={limit}:{limit}"),
            "--".into(),
        ]);
        self
    }

    /// `--log-format json`, for [`Postern::log_lines`].
    pub fn json_logs(self) -> PosternBuilder {
        self.args(["--log-format", "json"])
    }

    /// `--dataplane-id ID`; also its name in messages.
    pub fn id(mut self, id: &str) -> PosternBuilder {
        self.id = id.into();
        self.launch = self.launch.named(&format!("postern {id}"));
        self.args(["--dataplane-id", id])
    }

    /// `--sync-sa-token-file` holding a ServiceAccount `token` (which wins
    /// over a shared token).
    pub fn sync_sa_token(self, token: &str) -> PosternBuilder {
        let file = self.launch.write("sa-token", token);
        self.arg("--sync-sa-token-file").arg(file)
    }

    /// `--sync-token-file` holding `token`.
    pub fn sync_token(self, token: &str) -> PosternBuilder {
        let file = self.launch.write("token", token);
        self.arg("--sync-token-file").arg(file)
    }

    /// `--tunnel-cert` and `--tunnel-key` from `leaf`, and tcp tunnels'
    /// ports on loopback.
    pub fn tunnel_tls(self, leaf: &crate::pki::Leaf) -> PosternBuilder {
        let files = leaf.write(self.launch.dir());
        self.arg("--tunnel-cert")
            .arg(files.cert)
            .arg("--tunnel-key")
            .arg(files.key)
            .args(["--tunnel-tcp-host", "127.0.0.1"])
    }

    /// `--sync-ca FILE`: the sync stream is TLS, verified against it.
    pub fn sync_ca(self, ca: &Path) -> PosternBuilder {
        self.arg("--sync-ca").arg(ca)
    }

    /// Starts it and waits until it listens (and, standalone, serves).
    pub async fn start(self) -> Postern {
        let standalone = self.manifests.is_some();
        let launch = self
            .listen
            .iter()
            .fold(self.launch, |l, (flag, addr)| l.arg(flag).arg(addr));
        let (proc, addrs) = launch.start().await;
        let postern = Postern {
            id: self.id,
            admin: addrs.get("admin"),
            proxy: addrs.get("proxy"),
            socks: addrs.get("socks"),
            http: addrs.get("http"),
            https: addrs.get("https"),
            tunnel: addrs.try_get("tunnel"),
            manifests: self.manifests,
            proc,
        };
        if standalone {
            postern.serving(None).await;
        }
        postern
    }
}

/// Runs `postern <args>` to completion: exit code and stderr.
pub fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(binary("postern"))
        .args(args)
        .env_remove("POSTERN_SYNC_TOKEN")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running postern: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), stderr)
}
