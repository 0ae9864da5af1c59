//! `postern agent` as a process, and what a tunnel test needs around it:
//! keys and tokens made by the real `postern tunnel` commands, the Tunnel
//! and key Secret manifests, and waits on the agent's status line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::dirs::{binary, tmp_dir};
use crate::manifests::indent;
use crate::process::{Launch, Proc};
use crate::wait::wait_for;

/// A running agent, killed on drop.
#[derive(Debug)]
pub struct Agent {
    pub proc: Proc,
}

/// How to start one: `postern agent --server ADDR --ca CA --token-file T`.
#[derive(Debug)]
pub struct AgentBuilder {
    launch: Launch,
}

impl Agent {
    /// An agent for `server` (whose certificate carries `server_name`,
    /// signed by the CA in `ca`), with `token`, serving `to` (`--to` values).
    pub fn builder(
        server: SocketAddr,
        server_name: &str,
        ca: &Path,
        token: &str,
        to: &[&str],
    ) -> AgentBuilder {
        Agent::builder_for(&server.to_string(), server_name, ca, token, to)
    }

    /// [`Agent::builder`] with `--server` as given (a `wss://` URL).
    pub fn builder_for(
        server: &str,
        server_name: &str,
        ca: &Path,
        token: &str,
        to: &[&str],
    ) -> AgentBuilder {
        let launch = Launch::new("postern agent", binary("postern")).env("RUST_LOG", "info");
        let token_file = launch.write("token", token);
        let mut launch = launch
            .arg("agent")
            .arg("--server")
            .arg(server)
            .arg("--server-name")
            .arg(server_name)
            .arg("--ca")
            .arg(ca)
            .arg("--token-file")
            .arg(token_file);
        for t in to {
            launch = launch.arg("--to").arg(t);
        }
        AgentBuilder { launch }
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// How many status lines starting with `postern agent: WORD` it printed.
    pub fn status_count(&self, word: &str) -> usize {
        let prefix = format!("postern agent: {word}");
        self.log()
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .count()
    }

    /// Waits until it has printed `n` status lines starting with `word`.
    pub async fn wait_status(&self, word: &str, n: usize, limit: Duration) {
        let what = format!("{} to say {word:?} {n} time(s)", self.proc.name());
        wait_for(&what, limit, || async {
            (self.status_count(word) >= n).then_some(())
        })
        .await;
    }

    /// SIGTERM: the agent drains and exits.
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
    }
}

impl AgentBuilder {
    pub fn arg(mut self, arg: &str) -> AgentBuilder {
        self.launch = self.launch.arg(arg);
        self
    }

    /// Runs it through `wrapper` (`ip netns exec NS`, say).
    pub fn wrapped<I, S>(mut self, wrapper: I) -> AgentBuilder
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.launch = self.launch.wrapped(wrapper);
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> AgentBuilder {
        self.launch = self.launch.env(key, value);
        self
    }

    /// Another binary than `target/<profile>/postern`.
    pub fn program(mut self, program: impl Into<PathBuf>) -> AgentBuilder {
        self.launch = self.launch.program(program);
        self
    }

    pub fn named(mut self, name: &str) -> AgentBuilder {
        self.launch = self.launch.named(name);
        self
    }

    pub fn spawn(self) -> Agent {
        Agent {
            proc: self.launch.spawn(),
        }
    }
}

/// Runs `postern <args>`: stdout on success, panics otherwise.
pub fn postern_stdout(args: &[&str]) -> String {
    let out = Command::new(binary("postern"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running postern: {e}"));
    assert!(
        out.status.success(),
        "postern {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A key made by `postern tunnel keygen`: the agent's private file and
/// what the Tunnel's Secret holds.
pub struct TunnelKey {
    pub private: PathBuf,
    pub public: String,
}

impl TunnelKey {
    /// `alg`: `ed25519`, `es256` or `hs256`.
    pub fn generate(alg: &str) -> TunnelKey {
        let prefix = tmp_dir("tunnel-key").join("agent");
        let prefix_text = prefix.to_str().expect("utf-8 path");
        postern_stdout(&["tunnel", "keygen", "--alg", alg, "--out", prefix_text]);
        let private = prefix.with_extension("key");
        let public = if alg == "hs256" {
            private.clone()
        } else {
            prefix.with_extension("pub")
        };
        let public = std::fs::read_to_string(&public).expect("public key");
        TunnelKey { private, public }
    }

    /// `postern tunnel token --tunnel T... --key FILE --ttl TTL`.
    pub fn token(&self, tunnels: &[&str], ttl: &str) -> String {
        let key = self.private.to_str().expect("utf-8 path");
        let mut args = vec!["tunnel", "token", "--key", key, "--ttl", ttl];
        for t in tunnels {
            args.extend(["--tunnel", t]);
        }
        postern_stdout(&args).trim().to_string()
    }

    /// The Secret `name` in `default` holding the key as `key`.
    pub fn secret_yaml(&self, name: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\nstringData:\n  key: |\n{}\n",
            indent(&self.public, 4)
        )
    }
}

/// A Tunnel in `default` whose key is the Secret `key_secret`; `spec` is
/// two-space indented YAML lines (mode, hostnames, pathPrefix, tcpPort...).
pub fn tunnel_yaml(name: &str, key_secret: &str, spec: &str) -> String {
    format!(
        "apiVersion: postern.io/v1alpha1\nkind: Tunnel\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  agentKeySecretRef: {{name: {key_secret}}}\n{spec}"
    )
}
