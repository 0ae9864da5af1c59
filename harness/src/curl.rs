//! Real curl as the client: one way to run it and read what it did (the
//! final status, the proxy's answer to CONNECT, the final response's
//! headers, the HTTP version, the body and curl's exit code).

use std::process::{Command, Stdio};

use crate::dirs::tmp_dir;
use crate::peers::peer;

/// What curl did.
#[derive(Debug)]
pub struct Curl {
    /// The final HTTP status (0 when none).
    pub status: u16,
    /// The status of the proxy's answer to CONNECT (0 when none).
    pub connect_code: u16,
    /// The final response's headers, names in lowercase.
    pub headers: Vec<(String, String)>,
    /// `1.1`, `2`, ... (`0` when none).
    pub version: String,
    pub body: String,
    pub stderr: String,
    pub exit: i32,
}

impl Curl {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
}

/// Runs `curl -sS <args>` (at most 30 s), blocking the thread: for tests
/// whose servers run on runtimes of their own.
pub fn curl_blocking(args: &[&str]) -> Curl {
    let bin = peer("curl").expect("curl is required");
    let heads = tmp_dir("curl").join("heads");
    let out = Command::new(bin)
        .args(["-sS", "--max-time", "30", "-o", "-", "-D"])
        .arg(&heads)
        .args(["-w", "\n%{http_code} %{http_connect} %{http_version}"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running curl: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, codes) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let mut codes = codes.split(' ');
    let mut code = || codes.next().and_then(|c| c.parse().ok()).unwrap_or(0);
    let (status, connect_code) = (code(), code());
    let version = codes.next().unwrap_or("0").to_string();
    let heads = std::fs::read_to_string(&heads).unwrap_or_default();
    Curl {
        status,
        connect_code,
        headers: last_head(&heads),
        version,
        body: body.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        exit: out.status.code().unwrap_or(-1),
    }
}

/// [`curl_blocking`] on a blocking thread, for async tests.
pub async fn curl(args: &[&str]) -> Curl {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        curl_blocking(&args)
    })
    .await
    .unwrap_or_else(|e| panic!("curl thread: {e}"))
}

/// [`curl_blocking`] that fails the test on a transport error.
pub fn fetch(args: &[&str]) -> Curl {
    let out = curl_blocking(args);
    assert_eq!(out.exit, 0, "curl {args:?} failed: {}", out.stderr);
    out
}

/// The headers of the last response head curl dumped (interim 1xx heads
/// and a proxy's CONNECT answer come before it).
fn last_head(dump: &str) -> Vec<(String, String)> {
    let head = dump
        .split("\r\n\r\n")
        .filter(|h| !h.trim().is_empty())
        .last()
        .unwrap_or("");
    head.lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_final_head_wins_over_connect_and_interim_ones() {
        let dump = "HTTP/1.1 200 Connection established\r\n\r\n\
                    HTTP/1.1 100 Continue\r\n\r\n\
                    HTTP/1.1 201 Created\r\nX-A: 1\r\nContent-Type: text/plain\r\n\r\n";
        let headers = last_head(dump);
        assert_eq!(
            headers,
            [
                ("x-a".to_string(), "1".to_string()),
                ("content-type".to_string(), "text/plain".to_string())
            ]
        );
    }
}
