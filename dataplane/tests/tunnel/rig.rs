//! What every tunnel test starts from: a private CA, a data plane whose
//! agent listener presents a certificate for [`SERVER_NAME`], an agent key
//! made by `postern tunnel keygen`, and the manifests around them.

use std::path::PathBuf;
use std::time::Duration;

use postern_harness::pki::Leaf;
use postern_harness::{
    Agent, Ca, Curl, Postern, TunnelKey, curl, documents, tls_secret, tmp_dir, tunnel_yaml,
};

/// The name on the agent listener's certificate.
pub const SERVER_NAME: &str = "tunnel.postern.test";
/// How long an agent may take to say it is connected.
pub const CONNECT: Duration = Duration::from_secs(20);

pub struct Rig {
    pub ca: Ca,
    pub ca_file: PathBuf,
    pub key: TunnelKey,
    pub postern: Postern,
    /// The manifests besides the key Secret, for [`Rig::rotate_key`].
    docs: Vec<String>,
    /// The `app-tls` Secret, among `docs`.
    app_tls: String,
    /// The agent listener's certificate, for [`Rig::restart`].
    tunnel_leaf: Leaf,
}

impl Rig {
    /// A data plane serving `docs` besides the key Secret `agent-key`, the
    /// TLS Secret `app-tls` (for `app.test`) and nothing else.
    pub async fn start(label: &str, alg: &str, docs: &[String]) -> Rig {
        Rig::start_with(label, alg, docs, &[]).await
    }

    /// [`Rig::start`] with more flags for the data plane.
    pub async fn start_with(label: &str, alg: &str, docs: &[String], args: &[String]) -> Rig {
        let ca = Ca::new(&format!("{label} CA"));
        let ca_file = ca.write(&tmp_dir(label));
        let key = TunnelKey::generate(alg);
        let app_leaf = ca.leaf(&["app.test", "ws.test"]);
        let app_tls = tls_secret("app-tls", &app_leaf.cert, &app_leaf.key);
        let mut docs = docs.to_vec();
        docs.push(app_tls.clone());
        let tunnel_leaf = ca.leaf(&[SERVER_NAME]);
        let postern = Postern::standalone_with(label, &[("all.yaml", manifest(&key, &docs))])
            .tunnel_tls(&tunnel_leaf)
            .args(args)
            .start()
            .await;
        Rig {
            ca,
            ca_file,
            key,
            postern,
            docs,
            app_tls,
            tunnel_leaf,
        }
    }

    /// Kills the data plane (SIGKILL) and starts a new one on the same
    /// manifests and the same tunnel port; returns once it serves.
    pub async fn restart(&mut self) {
        let addr = self.tunnel_addr();
        let dir = self.postern.manifests().to_path_buf();
        self.postern.kill();
        self.postern = Postern::standalone(dir)
            .tunnel_tls(&self.tunnel_leaf)
            .listen("--tunnel-addr", addr)
            .start()
            .await;
    }

    /// Another data plane on the same manifests (a second replica), with
    /// the same tunnel certificate, tcp tunnels on `tcp_host` and `args`.
    pub async fn replica(&self, tcp_host: &str, args: &[String]) -> Postern {
        let files = self.tunnel_leaf.write(&tmp_dir("tunnel-replica-cert"));
        Postern::standalone(self.postern.manifests())
            .arg("--tunnel-cert")
            .arg(files.cert)
            .arg("--tunnel-key")
            .arg(files.key)
            .args(["--tunnel-tcp-host", tcp_host])
            .args(args)
            .start()
            .await
    }

    /// Replaces the key Secret with a new key and waits until it serves.
    pub async fn rotate_key(&mut self, alg: &str) {
        self.key = TunnelKey::generate(alg);
        self.write(&manifest(&self.key, &self.docs)).await;
    }

    /// Serves `docs` besides `app-tls` and, when `key_secret`, the key
    /// Secret (so a document left out is deleted); waits until it serves.
    pub async fn serve(&mut self, docs: &[String], key_secret: bool) {
        self.docs = docs.to_vec();
        self.docs.push(self.app_tls.clone());
        let yaml = if key_secret {
            manifest(&self.key, &self.docs)
        } else {
            documents(&self.docs)
        };
        self.write(&yaml).await;
    }

    /// Replaces the manifests with `yaml` and waits until they serve.
    async fn write(&self, yaml: &str) {
        let before = self.postern.version().await;
        self.postern.write("all.yaml", yaml);
        self.postern.serving(before.as_deref()).await;
    }

    pub fn tunnel_addr(&self) -> std::net::SocketAddr {
        self.postern
            .tunnel
            .expect("the data plane serves --tunnel-addr")
    }

    /// An agent with `token`, serving `to`.
    pub fn agent(&self, token: &str, to: &[&str]) -> Agent {
        Agent::builder(self.tunnel_addr(), SERVER_NAME, &self.ca_file, token, to).spawn()
    }

    /// `curl https://HOST:PORT/PATH` on the https listener, trusting the CA.
    pub async fn https(&self, host: &str, path: &str, extra: &[&str]) -> Curl {
        self.https_on(&self.postern, host, path, extra).await
    }

    /// [`Rig::https`] on another data plane of this rig.
    pub async fn https_on(&self, on: &Postern, host: &str, path: &str, extra: &[&str]) -> Curl {
        let port = on.https.port();
        let resolve = format!("{host}:{port}:127.0.0.1");
        let url = format!("https://{host}:{port}{path}");
        let ca = self.ca_file.to_str().expect("utf-8");
        let mut args = vec!["--cacert", ca, "--resolve", &resolve];
        args.extend(extra);
        args.push(&url);
        curl(&args).await
    }

    /// `curl http://HOST/PATH` on the http listener.
    pub async fn http(&self, host: &str, path: &str, extra: &[&str]) -> Curl {
        Rig::http_on(&self.postern, host, path, extra).await
    }

    /// [`Rig::http`] on another data plane.
    pub async fn http_on(on: &Postern, host: &str, path: &str, extra: &[&str]) -> Curl {
        let port = on.http.port();
        let resolve = format!("{host}:{port}:127.0.0.1");
        let url = format!("http://{host}:{port}{path}");
        let mut args = vec!["--resolve", resolve.as_str()];
        args.extend(extra);
        args.push(&url);
        curl(&args).await
    }
}

fn manifest(key: &TunnelKey, docs: &[String]) -> String {
    let mut all = vec![key.secret_yaml("agent-key")];
    all.extend(docs.iter().cloned());
    documents(&all)
}

/// An http Tunnel `name` for `hosts`, with the `app-tls` certificate.
pub fn host_tunnel(name: &str, hosts: &[&str]) -> String {
    tunnel_yaml(
        name,
        "agent-key",
        &format!(
            "  mode: http\n  hostnames: [{}]\n  tls: {{secretRef: {{name: app-tls}}}}\n",
            hosts.join(", ")
        ),
    )
}

/// An http Tunnel `name` under `prefix` on the gateway's hosts.
pub fn prefix_tunnel(name: &str, prefix: &str) -> String {
    tunnel_yaml(
        name,
        "agent-key",
        &format!("  mode: http\n  pathPrefix: {prefix}\n"),
    )
}
