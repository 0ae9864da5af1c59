//! Where the harness finds the workspace's binaries and puts scratch files:
//! beside the build that runs it, under `target/`. Also free loopback ports
//! for the peers that cannot bind port 0 themselves.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Under `CI=true` a missing part fails the test instead of skipping it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The repository root (this crate lives in `<root>/harness`).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The profile directory of the running executable: `target/debug` for a
/// test (`target/debug/deps/x`), `target/release` for a benchmark.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let mut dir = exe
        .parent()
        .unwrap_or_else(|| panic!("no directory above {}", exe.display()));
    if dir
        .file_name()
        .is_some_and(|n| n == "deps" || n == "examples")
    {
        dir = dir.parent().unwrap_or(dir);
    }
    dir.to_path_buf()
}

/// A workspace binary in [`profile_dir`]; panics, saying how to build it,
/// when it is missing.
pub fn binary(name: &str) -> PathBuf {
    let path = profile_dir().join(name);
    assert!(
        path.is_file(),
        "{} not found: run `cargo build --bins` first",
        path.display()
    );
    path
}

/// A fresh, empty folder `target/postern-tests/<label>-<pid>-<n>`.
pub fn tmp_dir(label: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let safe: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let target = profile_dir().parent().map(Path::to_path_buf);
    let dir = target
        .unwrap_or_else(std::env::temp_dir)
        .join("postern-tests")
        .join(format!("{safe}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    dir
}

/// `127.0.0.1:port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A free loopback address (bound once and released), for peers that
/// cannot bind port 0 and report the port they got.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("bind 127.0.0.1:0: {e}"))
}

pub fn free_port() -> u16 {
    free_addr().port()
}

/// An address with nothing listening on it.
pub fn closed_port() -> SocketAddr {
    free_addr()
}
