//! A private kube-apiserver that a test may kill and restart: the rig's
//! binary, flags and certificates, on a port of its own and on the rig's
//! etcd under a key prefix of its own.
//!
//! Restarting the rig's own API server would break every test running
//! beside it (`cargo test` runs a binary's tests in parallel, and others
//! share the rig), so a test that needs an API server outage gets its own.
//! It is a separate cluster (objects under another etcd prefix), so it
//! needs the CRDs installed and has no controller manager: namespaces it
//! deletes stay `Terminating`, which no test here minds. The prefix is
//! removed from etcd on drop.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::ByteString;
use postern_harness::{Launch, Proc, curl, curl_blocking, eventually, free_port, tmp_dir};

use crate::Rig;

/// A loaded two-core machine may take this long to start an API server.
const START: Duration = Duration::from_secs(120);

pub struct Apiserver {
    pub port: u16,
    rig: Rig,
    args: Vec<String>,
    proc: Option<Proc>,
    pki: PathBuf,
    etcd: String,
    prefix: String,
    starts: u32,
}

impl Apiserver {
    /// Starts one and waits until `/readyz` answers 200.
    pub async fn start(rig: &Rig, label: &str) -> Apiserver {
        let need = |key: &str| {
            rig.get(key)
                .unwrap_or_else(|| panic!("{key} missing in the rig's env"))
                .to_string()
        };
        let (rig_dir, etcd) = (PathBuf::from(need("RIG_DIR")), need("ETCD_ENDPOINTS"));
        let pki = rig_dir.join("pki");
        let port = free_port();
        let dir = tmp_dir(&format!("{label}-apiserver"));
        let prefix = format!(
            "/postern-tests/{}",
            dir.file_name().unwrap_or_default().display()
        );
        let url = format!("https://127.0.0.1:{port}");
        let kubeconfig = dir.join("kubeconfig");
        let rig_kubeconfig = std::fs::read_to_string(rig.kubeconfig())
            .unwrap_or_else(|e| panic!("reading the rig's kubeconfig: {e}"));
        let ours = rig_kubeconfig.replace(&need("KUBE_APISERVER"), &url);
        std::fs::write(&kubeconfig, ours)
            .unwrap_or_else(|e| panic!("writing {}: {e}", kubeconfig.display()));
        let mut args = vec![
            format!("--etcd-servers={etcd}"),
            format!("--etcd-prefix={prefix}"),
            format!("--secure-port={port}"),
            format!("--cert-dir={}", dir.join("certs").display()),
        ];
        args.extend(rig_flags(&pki));
        let mut apiserver = Apiserver {
            port,
            rig: rig.with_kubeconfig(kubeconfig),
            args,
            proc: None,
            pki,
            etcd,
            prefix,
            starts: 0,
        };
        apiserver.restart().await;
        apiserver
    }

    /// The rig with this API server in place of its own.
    pub fn rig(&self) -> Rig {
        self.rig.clone()
    }

    /// SIGKILL: watches and requests in flight break off.
    pub fn kill(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill();
        }
    }

    /// Starts it (again) on the same port and waits until it is ready.
    pub async fn restart(&mut self) {
        self.kill();
        self.starts += 1;
        let bin = PathBuf::from(self.rig.get("RIG_BIN").unwrap_or_default());
        let name = format!("kube-apiserver :{} #{}", self.port, self.starts);
        let launch = Launch::new(&name, bin.join("kube-apiserver")).args(&self.args);
        self.proc = Some(launch.spawn());
        eventually(&format!("{name} to be ready"), START, || async {
            match self.get("/readyz").await {
                (200, _) => Ok(()),
                other => Err(other),
            }
        })
        .await;
    }

    /// `GET path` as the rig's admin (`system:masters`): status (0 when it
    /// does not answer) and body, or curl's error.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let url = format!("https://127.0.0.1:{}{path}", self.port);
        let (ca, cert, key) = (
            self.pem("ca.crt"),
            self.pem("admin.crt"),
            self.pem("admin.key"),
        );
        let out = curl(&["--cacert", &ca, "--cert", &cert, "--key", &key, &url]).await;
        let body = if out.exit == 0 { out.body } else { out.stderr };
        (out.status, body)
    }

    fn pem(&self, name: &str) -> String {
        self.pki.join(name).display().to_string()
    }
}

/// The flags `e2e/rig` starts its API server with, but for the ports,
/// etcd and the certificate folder.
fn rig_flags(pki: &Path) -> Vec<String> {
    let p = |name: &str| pki.join(name).display().to_string();
    vec![
        "--bind-address=127.0.0.1".into(),
        "--advertise-address=127.0.0.1".into(),
        format!("--tls-cert-file={}", p("kube-apiserver.crt")),
        format!("--tls-private-key-file={}", p("kube-apiserver.key")),
        format!("--client-ca-file={}", p("ca.crt")),
        "--authorization-mode=RBAC".into(),
        "--service-account-issuer=https://kubernetes.default.svc".into(),
        format!(
            "--service-account-signing-key-file={}",
            p("service-account.key")
        ),
        format!("--service-account-key-file={}", p("service-account.pub")),
        "--service-cluster-ip-range=10.0.0.0/24".into(),
        "--disable-admission-plugins=ServiceAccount".into(),
        "--allow-privileged=true".into(),
        "--endpoint-reconciler-type=none".into(),
    ]
}

impl Drop for Apiserver {
    /// Stops it, then deletes its keys from the rig's etcd (best effort):
    /// every key from `PREFIX/` up to `PREFIX0` (`'0'` follows `'/'`).
    fn drop(&mut self) {
        self.kill();
        // ByteString serialises as a base64 JSON string, as etcd's gateway wants.
        let b64 = |key: String| serde_json::to_string(&ByteString(key.into_bytes()));
        let (Ok(key), Ok(end)) = (
            b64(format!("{}/", self.prefix)),
            b64(format!("{}0", self.prefix)),
        ) else {
            return;
        };
        let body = format!(r#"{{"key":{key},"range_end":{end}}}"#);
        let url = format!("{}/v3/kv/deleterange", self.etcd);
        curl_blocking(&["-X", "POST", "--data", &body, &url]);
    }
}
