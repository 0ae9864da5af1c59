//! The e2e/oauth tools as processes: servers that print `listening on
//! 127.0.0.1:PORT` once they accept connections, and clients that print
//! one JSON report and exit 0 only when every step passed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::dirs::{free_port, in_ci, loopback, repo_root, tmp_dir};
use crate::peers::peer;
use crate::process::{Launch, Proc};
use crate::wait::{PATIENCE, wait_port};

/// What a test needs besides the venv's python (which every test needs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Node and the npm packages, for the OIDC provider.
    Node,
    /// Chromium and certutil, for the browser.
    Chromium,
}

/// Where the tools are, from the environment or `target/oauth/env`.
#[derive(Clone, Debug)]
pub struct Tools {
    /// `OAUTH_PYTHON`: the venv with the mcp SDK.
    pub python: PathBuf,
    /// `OAUTH_SCRIPTS` (default `e2e/oauth`).
    pub scripts: PathBuf,
    env: Vec<(String, String)>,
}

/// A server started from the tools, killed on drop.
#[derive(Debug)]
pub struct Served {
    pub proc: Proc,
    pub port: u16,
}

impl Served {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// A client's report: its exit status, its JSON and its stderr.
#[derive(Debug)]
pub struct Report {
    pub ok: bool,
    pub json: Value,
    pub stderr: String,
}

impl Report {
    /// The JSON, after checking the client said every step passed.
    pub fn expect_ok(&self, what: &str) -> &Value {
        assert!(
            self.ok && self.json["ok"] == true,
            "{what} failed: {}\nstderr:\n{}",
            pretty(&self.json),
            tail(&self.stderr)
        );
        &self.json
    }
}

pub fn pretty(json: &Value) -> String {
    serde_json::to_string_pretty(json).unwrap_or_default()
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

impl Tools {
    /// The tools, or `None` after saying what is missing (a failure under
    /// `CI=true`): run `e2e/oauth/setup` first.
    pub fn find(needs: &[Need]) -> Option<Tools> {
        let file = repo_root().join("target/oauth/env");
        let from_file = std::fs::read_to_string(&file).unwrap_or_default();
        let get = |key: &str| {
            std::env::var(key)
                .ok()
                .filter(|v| !v.is_empty())
                .or_else(|| {
                    from_file.lines().find_map(|l| {
                        let (k, v) = l.split_once('=')?;
                        (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
                    })
                })
        };
        let mut keys = vec!["OAUTH_PYTHON"];
        if needs.contains(&Need::Node) {
            keys.extend(["NODE", "OAUTH_NODE_MODULES"]);
        }
        if needs.contains(&Need::Chromium) {
            keys.extend(["CHROMIUM", "CERTUTIL"]);
        }
        let mut env = Vec::new();
        for key in keys {
            match get(key).filter(|v| Path::new(v).exists()) {
                Some(v) => env.push((key.to_string(), v)),
                None => {
                    missing(&format!(
                        "{key} is not set or does not exist (run e2e/oauth/setup; it writes {})",
                        file.display()
                    ));
                    return None;
                }
            }
        }
        let scripts = get("OAUTH_SCRIPTS")
            .map(PathBuf::from)
            .filter(|p| p.join("mcp_client.py").is_file())
            .unwrap_or_else(|| repo_root().join("e2e/oauth"));
        let python = PathBuf::from(&env[0].1);
        Some(Tools {
            python,
            scripts,
            env,
        })
    }

    fn var(&self, key: &str) -> &str {
        let found = self.env.iter().find(|(k, _)| k == key);
        found.map_or_else(|| panic!("{key} was not asked for"), |(_, v)| v)
    }

    fn script(&self, name: &str) -> PathBuf {
        self.scripts.join(name)
    }

    fn launch(&self, name: &str, program: impl Into<PathBuf>) -> Launch {
        self.env
            .iter()
            .fold(Launch::new(name, program), |l, (k, v)| l.env(k, v))
    }

    /// The GitHub stand-in with `config` (JSON, see [`super::STANDIN_USERS`]).
    pub async fn github_standin(&self, config: &str) -> Served {
        let launch = self.launch("github-standin", &self.python);
        let file = launch.write("standin.json", config);
        let launch = launch.arg(self.script("github_standin.py")).arg("--config");
        serve(launch.arg(file).args(["--port", "0"])).await
    }

    /// The MCP backend (`mcp_server.py`, streamable HTTP at `/mcp`).
    pub async fn mcp_server(&self) -> Served {
        let launch = self.launch("mcp-server", &self.python);
        serve(
            launch
                .arg(self.script("mcp_server.py"))
                .args(["--port", "0"]),
        )
        .await
    }

    /// The OIDC provider (oauth2-mock-server) with the users and clients of
    /// `config`; its issuer is [`Served::url`]. It logs events to
    /// `oidc-events.jsonl` beside its log.
    pub async fn oidc_provider(&self, config: &str) -> Served {
        let launch = self.launch("oidc-provider", self.var("NODE"));
        let file = launch.write("users.json", config);
        let events = launch.dir().join("oidc-events.jsonl");
        let launch = launch
            .arg(self.script("oidc_provider.mjs"))
            .args(["--port", "0", "--config"])
            .arg(file)
            .arg("--log")
            .arg(events)
            .arg("--modules")
            .arg(self.var("OAUTH_NODE_MODULES"));
        serve(launch).await
    }

    /// Runs `mcp_client.py ARGS` (at most three minutes).
    pub async fn mcp_client(&self, args: &[&str]) -> Report {
        self.run("mcp_client.py", args).await
    }

    /// Runs `browser.py ARGS` (at most three minutes).
    pub async fn browser(&self, args: &[&str]) -> Report {
        self.run("browser.py", args).await
    }

    async fn run(&self, script: &str, args: &[&str]) -> Report {
        self.run_file(&self.script(script), args, 180).await
    }

    /// Runs a Python script of the repository (any folder) in the venv,
    /// with the tools' environment, for at most `seconds`; it must print
    /// one JSON object.
    pub async fn run_file<S: AsRef<std::ffi::OsStr>>(
        &self,
        script: &Path,
        args: &[S],
        seconds: u32,
    ) -> Report {
        let mut command = tokio::process::Command::new("timeout");
        command
            .arg(seconds.to_string())
            .arg(&self.python)
            .arg(script)
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        for (k, v) in &self.env {
            command.env(k, v);
        }
        let out = command
            .output()
            .await
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let json = serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!(
                "{} printed no JSON ({e}): {stdout}\nstderr:\n{stderr}",
                script.display()
            )
        });
        Report {
            ok: out.status.success(),
            json,
            stderr,
        }
    }
}

fn missing(what: &str) {
    assert!(
        !in_ci(),
        "{what} (CI=true: the OAuth tests need the e2e/oauth tools)"
    );
    eprintln!("SKIPPED: {what}");
}

/// Spawns `launch` and waits for its `listening on 127.0.0.1:PORT` line.
async fn serve(launch: Launch) -> Served {
    let mut proc = launch.spawn();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let log = proc.log();
        let port = log.lines().find_map(|l| {
            let rest = l.trim().strip_prefix("listening on 127.0.0.1:")?;
            rest.parse::<u16>().ok()
        });
        if let Some(port) = port {
            return Served { proc, port };
        }
        if let Some(status) = proc.exited() {
            panic!("{} exited ({status}) before listening:\n{log}", proc.name());
        }
        assert!(
            Instant::now() < deadline,
            "{} did not listen within {PATIENCE:?}:\n{log}",
            proc.name()
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// A private redis-server on a free port (no persistence), or `None` as
/// [`peer`] says.
pub async fn redis_server() -> Option<Served> {
    let port = free_port();
    let dir = tmp_dir("redis-data");
    let proc = Launch::new("redis-server", peer("redis-server")?)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(dir)
        .spawn();
    wait_port(loopback(port)).await;
    Some(Served { proc, port })
}
