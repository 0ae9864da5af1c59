//! `postern-operator` as a process, on port 0, against the API server a
//! kubeconfig file names. Kube-free: the kubeconfig is only a path handed
//! to the process; the rig that provides it lives in `postern-tests`.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::dirs::binary;

use crate::pki::PemFiles;
use crate::process::{Launch, Proc};

/// How to start the operator; see [`Operator::builder`].
#[derive(Debug)]
pub struct OperatorBuilder {
    launch: Launch,
    id: String,
    sync_addr: SocketAddr,
}

/// A running `postern-operator`, killed on drop.
#[derive(Debug)]
pub struct Operator {
    proc: Proc,
    pub sync: SocketAddr,
    pub admin: SocketAddr,
    pub id: String,
}

impl Operator {
    /// The operator for one namespace (also its lease namespace), reading
    /// the API server from `kubeconfig`, its admin port on port 0.
    pub fn builder(kubeconfig: &Path, namespace: &str) -> OperatorBuilder {
        Operator::builder_watching(kubeconfig, Some(namespace), namespace)
    }

    /// The operator for every namespace, leasing in `lease_namespace`. It
    /// writes status on every object in the cluster: only for a test that
    /// needs several namespaces, and never two at once.
    pub fn builder_all_namespaces(kubeconfig: &Path, lease_namespace: &str) -> OperatorBuilder {
        Operator::builder_watching(kubeconfig, None, lease_namespace)
    }

    fn builder_watching(
        kubeconfig: &Path,
        namespace: Option<&str>,
        lease_namespace: &str,
    ) -> OperatorBuilder {
        let watch: Vec<&str> = namespace.map_or(Vec::new(), |ns| vec!["--namespace", ns]);
        let launch = Launch::new("postern-operator", binary("postern-operator"))
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            // As the chart deploys it (charts/postern/templates/operator.yaml).
            .env("MIMALLOC_PURGE_DELAY", "0")
            .env(
                "POSTERN_ADMIN_READ_TOKEN_FILE",
                crate::http::harness_read_token_file().display().to_string(),
            )
            .env_remove("POSTERN_SYNC_TOKEN")
            .arg("--admin-addr=127.0.0.1:0")
            .args(watch)
            .args(["--lease-namespace", lease_namespace])
            .addr_file();
        OperatorBuilder {
            launch,
            id: "operator".into(),
            sync_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }

    /// SIGKILL: no lease release, no goodbye to the data planes.
    pub fn kill(&mut self) {
        self.proc.kill();
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

    /// The operator's own view: `GET /api/v1/snapshot` on its admin port.
    pub async fn view(&self) -> Result<Value, String> {
        let response = crate::http::admin_get(self.admin, "/api/v1/snapshot").await?;
        if response.status != 200 {
            return Err(format!("status {}: {}", response.status, response.body));
        }
        response.json()
    }
}

impl OperatorBuilder {
    /// `--operator-id ID`; also its name in messages.
    pub fn id(mut self, id: &str) -> OperatorBuilder {
        self.id = id.into();
        self.launch = self
            .launch
            .named(&format!("operator {id}"))
            .args(["--operator-id", id]);
        self
    }

    /// `--sync-token-file` holding `token`.
    pub fn sync_token(mut self, token: &str) -> OperatorBuilder {
        let file = self.launch.write("token", token);
        self.launch = self.launch.arg("--sync-token-file").arg(file);
        self
    }

    /// A given sync address (default port 0): a restarted operator takes
    /// its predecessor's port, where data planes reconnect.
    pub fn sync_addr(mut self, addr: SocketAddr) -> OperatorBuilder {
        self.sync_addr = addr;
        self
    }

    /// The sync stream over TLS with this certificate and key.
    pub fn tls(mut self, pair: &PemFiles) -> OperatorBuilder {
        self.launch = self.launch.arg("--sync-tls-cert").arg(&pair.cert);
        self.launch = self.launch.arg("--sync-tls-key").arg(&pair.key);
        self
    }

    /// The admin port over TLS (HTTPS only) with this certificate and key.
    pub fn admin_tls(mut self, pair: &PemFiles) -> OperatorBuilder {
        self.launch = self.launch.arg("--admin-tls-cert").arg(&pair.cert);
        self.launch = self.launch.arg("--admin-tls-key").arg(&pair.key);
        self
    }

    /// Data planes authenticate with ServiceAccount tokens (TokenReview)
    /// of the `allowed` ServiceAccounts (`NS/NAME`), reviewed again every
    /// `review_secs`.
    pub fn serviceaccount_auth(self, allowed: &[&str], review_secs: u64) -> OperatorBuilder {
        let allowed = allowed
            .iter()
            .map(|sa| format!("--sync-allowed-serviceaccount={sa}"));
        self.arg("--sync-auth=serviceaccount")
            .args(allowed)
            .arg(format!("--sync-review-secs={review_secs}"))
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> OperatorBuilder {
        self.launch = self.launch.arg(arg);
        self
    }

    pub fn args<I, S>(self, args: I) -> OperatorBuilder
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        args.into_iter().fold(self, OperatorBuilder::arg)
    }

    pub fn env(mut self, key: &str, value: &str) -> OperatorBuilder {
        self.launch = self.launch.env(key, value);
        self
    }

    /// Another binary than `target/<profile>/postern-operator`.
    pub fn bin(mut self, path: impl Into<PathBuf>) -> OperatorBuilder {
        self.launch = self.launch.program(path);
        self
    }

    /// Starts it and waits until it listens.
    pub async fn start(self) -> Operator {
        let sync = format!("--sync-addr={}", self.sync_addr);
        let (proc, addrs) = self.launch.arg(sync).start().await;
        Operator {
            sync: addrs.get("sync"),
            admin: addrs.get("admin"),
            id: self.id,
            proc,
        }
    }
}
