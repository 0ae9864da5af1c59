//! Real peers for the login tests: child processes that print `listening
//! on 127.0.0.1:PORT` once ready, killed when the handle drops, and the
//! rule for a peer that cannot run here (CI fails, elsewhere the test is
//! skipped with the reason printed).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use postern_oauth::login::HttpClient;
use sha2::{Digest, Sha256};

/// A running peer; the process is killed on drop.
pub struct Peer {
    child: Child,
    pub port: u16,
    /// The rest of the ready line after the address, if any.
    pub extra: String,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate lives in the workspace")
        .to_path_buf()
}

/// Reports a peer that cannot run: a failure under CI, a printed skip
/// elsewhere. Returns `None` so callers can `let Some(..) = .. else { return }`.
pub fn unavailable<T>(why: &str) -> Option<T> {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("a test peer is missing under CI: {why}");
    }
    eprintln!("SKIPPED (peer missing): {why}");
    None
}

/// Whether `program --version` runs.
pub fn runs(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts `cmd` and waits (20 s at most) for its `listening on HOST:PORT`
/// line on stdout.
pub fn spawn(mut cmd: Command) -> Peer {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("peer starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix("listening on ") {
                let _ = tx.send(rest.to_owned());
            }
        }
    });
    let Ok(rest) = rx.recv_timeout(Duration::from_secs(20)) else {
        let _ = child.kill();
        panic!("peer {cmd:?} did not say it was listening");
    };
    let (addr, extra) = rest.split_once(' ').unwrap_or((rest.as_str(), ""));
    let port = addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("listening on HOST:PORT");
    Peer {
        child,
        port,
        extra: extra.to_owned(),
    }
}

/// A PKCE verifier and its S256 challenge.
pub fn pkce() -> (String, String) {
    let verifier = B64.encode(rand::random::<[u8; 32]>());
    let challenge = B64.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

pub fn random_token() -> String {
    B64.encode(rand::random::<[u8; 16]>())
}

/// GETs an authorize URL as a browser that follows nothing and returns
/// the query parameters of the redirect it is sent to.
pub async fn redirect_params(http: &HttpClient, url: &str) -> Vec<(String, String)> {
    let resp = http.get(url, &[]).await.expect("authorize answers");
    assert!(
        resp.status.is_redirection(),
        "authorize answered {}: {}",
        resp.status,
        String::from_utf8_lossy(&resp.body)
    );
    let location = resp
        .header(&http::header::LOCATION)
        .expect("a Location header");
    let location = url::Url::parse(location).expect("an absolute Location");
    location.query_pairs().into_owned().collect()
}

pub fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}
