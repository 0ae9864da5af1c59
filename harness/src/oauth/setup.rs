//! Manifests for `postern standalone` with OAuth: authorization servers
//! (GitHub stand-in or OIDC login), protected sites and their routes, one
//! TLS leaf for every hostname (Secret `tls`) and one explicit ES256
//! signing key (Secret `signing-keys`, kid `k1`), so that replicas started
//! on the same files sign and verify alike.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use crate::manifests::{documents, indent, prefix_route_yaml, target_yaml, tls_secret};
use crate::pki::Ca;
use crate::postern::Postern;

use super::flow::Flow;

/// The OAuth App the authorization servers use at the GitHub stand-in
/// (and the client they are at the OIDC provider).
pub const CLIENT_ID: &str = "postern-test";
pub const CLIENT_SECRET: &str = "postern-test-secret";

/// Users of the GitHub stand-in and the OIDC provider: alice (orgs acme
/// and widgets), bob (no org), carol (widgets only).
pub const STANDIN_USERS: &str = r#"{
  "default_user": "alice",
  "users": [
    {"login": "alice", "id": 1001, "name": "Alice Example",
     "emails": [{"email": "alice@example.com", "primary": true, "verified": true, "visibility": "public"},
                {"email": "alice-old@example.net", "primary": false, "verified": false, "visibility": null}],
     "orgs": ["acme", "widgets"]},
    {"login": "bob", "id": 1002, "name": "Bob Example", "emails": ["bob@example.org"], "orgs": []},
    {"login": "carol", "id": 1003, "name": "Carol Example", "emails": ["carol@example.net"], "orgs": ["widgets"]}
  ],
  "clients": {"postern-test": "postern-test-secret"},
  "require_pkce": true,
  "require_user_agent": true,
  "code_ttl": 600
}"#;

/// The kid of the signing key every server of an [`OauthSetup`] uses.
pub const KID: &str = "k1";

/// Manifests under construction; see [`OauthSetup::start`].
pub struct OauthSetup {
    label: String,
    docs: Vec<String>,
    hosts: Vec<String>,
    args: Vec<String>,
}

/// A running `postern standalone` built by [`OauthSetup`].
pub struct OauthRig {
    pub postern: Postern,
    pub ca: Ca,
    /// The CA PEM (curl's `--cacert`, the clients' `--ca`).
    pub ca_file: PathBuf,
    /// PKCS#8 PEM of the signing key (kid [`KID`]), to mint tokens with.
    pub signing_key: String,
    pub hosts: Vec<String>,
    label: String,
    files: Vec<(&'static str, String)>,
    args: Vec<String>,
}

impl OauthSetup {
    pub fn new(label: &str) -> OauthSetup {
        let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("signing key: {e}"));
        let keys = format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: signing-keys, namespace: default}}\nstringData:\n  {KID}.pem: |\n{}\n",
            indent(&key.serialize_pem(), 4)
        );
        let gh = format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: gh, namespace: default}}\nstringData: {{clientSecret: {CLIENT_SECRET}}}\n"
        );
        OauthSetup {
            label: label.into(),
            docs: vec![keys, gh],
            hosts: Vec::new(),
            args: Vec::new(),
        }
    }

    /// An authorization server `name` on `host` logging in through the
    /// GitHub stand-in at `standin` (`http://127.0.0.1:PORT`), offering the
    /// scopes `mcp` and `admin`. `extra` goes under `authorizationServer`
    /// (YAML lines, e.g. `accessTokenTtl: 2s`).
    pub fn github_server(self, name: &str, host: &str, standin: &str, extra: &str) -> Self {
        let login = format!(
            "github: {{clientId: {CLIENT_ID}, clientSecretRef: {{name: gh}}, webUrl: \"{standin}\", apiUrl: \"{standin}/api/v3\"}}"
        );
        self.server(name, host, &login, extra)
    }

    /// An authorization server `name` on `host` logging in through the
    /// OIDC provider whose issuer is `issuer`.
    pub fn oidc_server(self, name: &str, host: &str, issuer: &str, extra: &str) -> Self {
        let login = format!(
            "oidc: {{issuerUrl: \"{issuer}\", clientId: {CLIENT_ID}, clientSecretRef: {{name: gh}}}}"
        );
        self.server(name, host, &login, extra)
    }

    fn server(mut self, name: &str, host: &str, login: &str, extra: &str) -> Self {
        let mut spec = format!(
            "{login}\nsigningKeysSecretRef: {{name: signing-keys}}\nscopes: [mcp, admin]\n"
        );
        if !extra.is_empty() {
            spec.push_str(extra);
            spec.push('\n');
        }
        self.docs.push(format!(
            "apiVersion: postern.io/v1alpha1\nkind: ProxyTarget\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  hostnames: [{host}]\n  tls: {{secretRef: {{name: tls}}}}\n  authorizationServer:\n{}\n",
            indent(spec.trim_end(), 4)
        ));
        self.hosts.push(host.into());
        self
    }

    /// A site `name` on `host` proxying to `backend`, guarded by `server`
    /// with `policy` (flow-mapping members such as `scopes: [mcp],
    /// allowedOrgs: [acme]`; empty for any signed-in user).
    pub fn protect(
        mut self,
        name: &str,
        host: &str,
        backend: &str,
        server: &str,
        policy: &str,
    ) -> Self {
        let extra = format!(
            "  tls: {{secretRef: {{name: tls}}}}\n  auth: {}\n",
            oauth_auth(server, policy)
        );
        self.docs.push(target_yaml(name, &[host], backend, &extra));
        self.hosts.push(host.into());
        self
    }

    /// Any other document (a Route, see [`oauth_route`]).
    pub fn doc(mut self, yaml: String) -> Self {
        self.docs.push(yaml);
        self
    }

    /// Extra `postern standalone` flags (`--redis-url ...`).
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Writes the manifests and starts `postern standalone` on them.
    pub async fn start(self) -> OauthRig {
        let ca = Ca::new(&format!("{} CA", self.label));
        let hosts: Vec<&str> = self.hosts.iter().map(String::as_str).collect();
        let leaf = ca.leaf(&hosts);
        let mut docs = self.docs;
        docs.push(tls_secret("tls", &leaf.cert, &leaf.key));
        let files = vec![("oauth.yaml", documents(&docs))];
        let signing_key = key_of(&docs[0]);
        let postern = Postern::standalone_with(&self.label, &files)
            .args(&self.args)
            .start()
            .await;
        let ca_file = ca.write(postern.scratch_dir());
        OauthRig {
            postern,
            ca,
            ca_file,
            signing_key,
            hosts: self.hosts,
            label: self.label,
            files,
            args: self.args,
        }
    }
}

/// The PEM inside the signing-keys Secret's YAML.
fn key_of(secret_yaml: &str) -> String {
    let pem: Vec<&str> = secret_yaml
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .collect();
    format!("{}\n", pem.join("\n").trim_end())
}

/// `{type: oauth, server: {name: SERVER}, POLICY}`.
fn oauth_auth(server: &str, policy: &str) -> String {
    let mut auth = format!("{{type: oauth, server: {{name: {server}}}");
    if !policy.is_empty() {
        auth.push_str(", ");
        auth.push_str(policy);
    }
    auth.push('}');
    auth
}

/// A Route `name` on `target` for paths under `prefix`, guarded by
/// `server` with `policy` (see [`OauthSetup::protect`]).
pub fn oauth_route(name: &str, target: &str, prefix: &str, server: &str, policy: &str) -> String {
    let extra = format!("  auth: {}\n", oauth_auth(server, policy));
    prefix_route_yaml(name, target, prefix, &extra)
}

impl OauthRig {
    /// The port every host is served on (HTTPS).
    pub fn port(&self) -> u16 {
        self.postern.https.port()
    }

    /// `https://HOST:PORT`: an issuer or an audience.
    pub fn origin(&self, host: &str) -> String {
        format!("https://{host}:{}", self.port())
    }

    /// A fresh client (no cookies) reaching every host on this postern.
    pub fn flow(&self) -> Flow {
        self.flow_via("127.0.0.1")
    }

    /// A fresh client that reaches every host at `ip` (a replica).
    pub fn flow_via(&self, ip: &str) -> Flow {
        Flow::new(&self.ca_file, ip, self.port(), &self.hosts)
    }

    /// Another `postern standalone` on the same manifests (same keys) with
    /// its HTTPS listener on `ip` at this one's port, as a second replica
    /// behind one address would be; `args` replace the setup's flags.
    pub async fn replica(&self, ip: &str, args: &[String]) -> Postern {
        let ip: IpAddr = ip.parse().unwrap_or_else(|e| panic!("{ip}: {e}"));
        Postern::standalone_with(&format!("{}-replica", self.label), &self.files)
            .listen("--https-addr", SocketAddr::new(ip, self.port()))
            .args(args)
            .start()
            .await
    }

    /// The flags the setup started postern with.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// Replaces a manifest file (`oauth.yaml` holds the setup's documents)
    /// and waits until postern serves the result.
    pub async fn write(&self, file: &str, yaml: &str) {
        let old = self.postern.version().await;
        self.postern.write(file, yaml);
        self.postern.serving(old.as_deref()).await;
    }
}
