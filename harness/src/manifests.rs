//! A manifests folder for `postern standalone`, and the YAML the tests put
//! in it (users, TLS Secrets).

use std::path::{Path, PathBuf};

use crate::dirs::{repo_root, tmp_dir};

/// `<scratch>/manifests`, a folder `postern standalone --manifests` reads.
#[derive(Clone, Debug)]
pub struct Manifests {
    dir: PathBuf,
}

impl AsRef<Path> for Manifests {
    fn as_ref(&self) -> &Path {
        &self.dir
    }
}

impl Manifests {
    /// An empty folder.
    pub fn new(label: &str) -> Manifests {
        let dir = tmp_dir(label).join("manifests");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        Manifests { dir }
    }

    /// The folder postern was started on.
    pub fn at(dir: impl Into<PathBuf>) -> Manifests {
        Manifests { dir: dir.into() }
    }

    /// A copy of the repository's `examples/standalone`, which a test may edit.
    pub fn example(label: &str) -> Manifests {
        let manifests = Manifests::new(label);
        let src = repo_root().join("examples/standalone");
        for entry in std::fs::read_dir(&src).expect("examples/standalone exists") {
            let path = entry.expect("entry").path();
            let name = path.file_name().expect("name");
            std::fs::copy(&path, manifests.dir.join(name)).expect("copy");
        }
        manifests
    }

    /// With `file` written.
    pub fn with(self, file: &str, yaml: &str) -> Manifests {
        self.write(file, yaml);
        self
    }

    /// With every `(file, yaml)` written.
    pub fn with_all(self, files: &[(&str, String)]) -> Manifests {
        files
            .iter()
            .fold(self, |m, (file, yaml)| m.with(file, yaml))
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The scratch folder around it, for a test's other files.
    pub fn work_dir(&self) -> &Path {
        self.dir.parent().unwrap_or(&self.dir)
    }

    /// Replaces `file` atomically (via a temporary name the watcher ignores).
    pub fn write(&self, file: &str, yaml: &str) {
        let tmp = self.dir.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, yaml).expect("write manifest");
        std::fs::rename(&tmp, self.dir.join(file)).expect("rename manifest");
    }

    pub fn remove(&self, file: &str) {
        std::fs::remove_file(self.dir.join(file)).expect("remove manifest");
    }
}

/// A `spec_extra` for [`user_yaml`]: the user may reach loopback (the
/// tests' targets and peers listen there), which every user is denied by
/// default. The gateway's own ports stay denied.
pub const LOOPBACK_ALLOWED: &str = "  allowInternalNetworks: [\"127.0.0.0/8\", \"::1\"]\n";

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

/// A ProxyTarget in `default` for `hosts`, proxying to `backend`; `extra`
/// is appended to the spec (two-space indented YAML lines).
pub fn target_yaml(name: &str, hosts: &[&str], backend: &str, extra: &str) -> String {
    format!(
        "apiVersion: postern.io/v1alpha1\nkind: ProxyTarget\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  hostnames: [{}]\n  backend: {{url: \"{backend}\"}}\n{extra}",
        hosts.join(", ")
    )
}

/// A Route in `default` on `target` for paths starting with `prefix`;
/// `extra` is appended to the spec.
pub fn prefix_route_yaml(name: &str, target: &str, prefix: &str, extra: &str) -> String {
    format!(
        "apiVersion: postern.io/v1alpha1\nkind: Route\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  targetRef: {{name: {target}}}\n  match: {{path: {{type: Prefix, value: {prefix}}}}}\n{extra}"
    )
}

/// YAML documents joined with `---`.
pub fn documents(docs: &[String]) -> String {
    docs.join("\n---\n")
}

/// A `kubernetes.io/tls` Secret in `default` as YAML.
pub fn tls_secret(name: &str, cert: &str, key: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}\n  tls.key: |\n{}\n",
        indent(cert, 4),
        indent(key, 4)
    )
}

/// `text` with every line indented by `n` spaces (a YAML block scalar).
pub fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines()
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
