//! The test rig's environment: `target/rig/env`, written by `e2e/rig up`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// The running rig, as its env file describes it.
#[derive(Clone, Debug)]
pub struct Rig {
    env: BTreeMap<String, String>,
    kubeconfig: PathBuf,
}

/// Under `CI=true` a test must fail, not skip, when the rig is missing.
pub use postern_harness::{in_ci, repo_root};

impl Rig {
    /// Reads `target/rig/env`. When it or a part it names is missing:
    /// panics under `CI=true`, otherwise prints the skip reason and
    /// returns `None`.
    pub fn from_env() -> Option<Rig> {
        Rig::from_file(&repo_root().join("target/rig/env"), in_ci())
    }

    /// [`Rig::from_env`] with the env file and the CI flag given.
    pub fn from_file(env_file: &Path, ci: bool) -> Option<Rig> {
        match Rig::load(env_file) {
            Ok(rig) => Some(rig),
            Err(missing) => {
                let reason = format!("test rig not up: {missing}; run e2e/rig up");
                if ci {
                    panic!("{reason}");
                }
                eprintln!("skipping: {reason}");
                None
            }
        }
    }

    /// Parses the env file; `Err` names what is missing.
    pub fn load(env_file: &Path) -> Result<Rig, String> {
        let text = std::fs::read_to_string(env_file)
            .map_err(|_| format!("{} missing", env_file.display()))?;
        let env = parse_env(&text);
        let kubeconfig = env
            .get("KUBECONFIG")
            .map(PathBuf::from)
            .ok_or_else(|| format!("KUBECONFIG missing in {}", env_file.display()))?;
        if !kubeconfig.is_file() {
            return Err(format!("{} missing", kubeconfig.display()));
        }
        Ok(Rig { env, kubeconfig })
    }

    /// A value of the env file (`REDIS_URL`, `ACME_DIRECTORY`, ...).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.env.get(key).map(String::as_str)
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The same rig with another API server in place of its own (a
    /// private one a test runs on the rig's etcd, see [`crate::apiserver`]).
    pub fn with_kubeconfig(&self, kubeconfig: PathBuf) -> Rig {
        let mut env = self.env.clone();
        env.insert("KUBECONFIG".into(), kubeconfig.display().to_string());
        Rig { env, kubeconfig }
    }

    /// A client for the rig's API server. Built from the file, never from
    /// the process environment: tests run in parallel threads.
    pub async fn client(&self) -> Client {
        client_from(&self.kubeconfig).await
    }
}

/// A kube client from a kubeconfig file.
pub async fn client_from(kubeconfig: &Path) -> Client {
    let file = Kubeconfig::read_from(kubeconfig)
        .unwrap_or_else(|e| panic!("reading {}: {e}", kubeconfig.display()));
    let config = Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("kubeconfig {}: {e}", kubeconfig.display()));
    Client::try_from(config).unwrap_or_else(|e| panic!("kube client: {e}"))
}

/// `KEY=value` lines; `#` comments and blank lines ignored; optional quotes stripped.
fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.strip_prefix("export ").unwrap_or(line).split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let unquoted = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            (k.trim().to_string(), unquoted.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_lines_parse() {
        let env = parse_env("# c\nKUBECONFIG=/a/b\n\nexport REDIS_URL=\"redis://x\"\nEMPTY=\n");
        assert_eq!(env["KUBECONFIG"], "/a/b");
        assert_eq!(env["REDIS_URL"], "redis://x");
        assert_eq!(env["EMPTY"], "");
        assert_eq!(env.len(), 3);
    }

    #[test]
    #[should_panic(expected = "test rig not up: /nonexistent/rig/env missing; run e2e/rig up")]
    fn ci_fails_instead_of_skipping() {
        Rig::from_file(Path::new("/nonexistent/rig/env"), true);
    }

    #[test]
    fn outside_ci_a_missing_rig_skips() {
        assert!(Rig::from_file(Path::new("/nonexistent/rig/env"), false).is_none());
    }

    #[test]
    fn a_missing_env_file_is_named() {
        let err = Rig::load(Path::new("/nonexistent/rig/env")).expect_err("missing");
        assert!(err.contains("/nonexistent/rig/env missing"), "{err}");
    }
}
