//! The proxies under test, each started on a free loopback port with its
//! own temporary configuration and killed when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::load::Proxy;

/// A running proxy process.
pub struct Peer {
    child: Child,
    addr: SocketAddr,
    auth: Option<String>,
}

impl Peer {
    pub fn proxy(&self) -> Proxy {
        Proxy {
            addr: self.addr,
            auth: self.auth.clone(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }
}

pub struct Postern;

impl Postern {
    /// The release `postern standalone` (or `$POSTERN_BIN`) with one direct user.
    pub async fn start() -> Result<Peer> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let bin = std::env::var_os("POSTERN_BIN")
            .map_or_else(|| root.join("target/release/postern"), PathBuf::from);
        if !bin.is_file() {
            bail!(
                "{} missing: cargo build --release -p postern",
                bin.display()
            );
        }
        let dir = scratch("postern")?;
        let manifests = dir.join("manifests");
        std::fs::create_dir_all(&manifests)?;
        std::fs::write(
            manifests.join("bench.yaml"),
            "apiVersion: v1\nkind: Secret\nmetadata: {name: bench-pw}\nstringData: {password: pw}\n---\n\
             apiVersion: postern.io/v1alpha1\nkind: UserUpstream\nmetadata: {name: bench}\n\
             spec: {user: bench, passwordSecretRef: {name: bench-pw}, upstream: \"direct://\"}\n",
        )?;
        let addr_file = dir.join("addrs.json");
        let mut cmd = Command::new(bin);
        cmd.args(["--log-format", "json", "standalone", "--manifests"])
            .arg(&manifests)
            .args([
                "--admin-addr",
                "127.0.0.1:0",
                "--proxy-addr",
                "127.0.0.1:0",
                "--socks-addr",
                "127.0.0.1:0",
            ])
            .args([
                "--http-addr",
                "127.0.0.1:0",
                "--https-addr",
                "127.0.0.1:0",
                "--tunnel-addr",
                "127.0.0.1:0",
            ])
            .arg("--addr-file")
            .arg(&addr_file);
        let child = spawn(&mut cmd, &dir.join("postern.log"))?;
        let addr = wait_addr_file(&addr_file).await?;
        // The snapshot applies within a second of start.
        let auth = base64::engine::general_purpose::STANDARD.encode("bench:pw");
        let peer = Peer {
            child,
            addr,
            auth: Some(auth),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while crate::load::dial(Some(&peer.proxy()), addr).await.is_err() {
            if Instant::now() > deadline {
                bail!("postern never accepted the bench user");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(peer)
    }
}

/// tinyproxy, no auth, CONNECT to any port.
pub async fn tinyproxy() -> Result<Peer> {
    let dir = scratch("tinyproxy")?;
    let port = free_port()?;
    let conf = format!(
        "Port {port}\nListen 127.0.0.1\nTimeout 600\nMaxClients 12000\nAllow 127.0.0.1\nLogLevel Error\nLogFile \"{}\"\n",
        dir.join("tinyproxy.log").display()
    );
    std::fs::write(dir.join("tinyproxy.conf"), conf)?;
    let mut cmd = Command::new("tinyproxy");
    cmd.arg("-d").arg("-c").arg(dir.join("tinyproxy.conf"));
    let child = spawn(&mut cmd, &dir.join("out.log"))?;
    peer(child, port).await
}

/// squid in one process (`-N`), no cache, CONNECT to any port.
pub async fn squid() -> Result<Peer> {
    let dir = scratch("squid")?;
    // squid drops to its own user: its files must be writable by it.
    std::process::Command::new("chmod")
        .arg("777")
        .arg(&dir)
        .status()?;
    let port = free_port()?;
    let d = dir.display();
    let conf = format!(
        "http_port 127.0.0.1:{port}\nacl localnet src 127.0.0.0/8\nhttp_access allow localnet\nhttp_access deny all\n\
         cache deny all\ncache_mem 8 MB\naccess_log none\ncache_log {d}/cache.log\npid_filename {d}/squid.pid\n\
         coredump_dir {d}\nmax_filedescriptors 20000\nshutdown_lifetime 0 seconds\n"
    );
    std::fs::write(dir.join("squid.conf"), conf)?;
    let mut cmd = Command::new("squid");
    cmd.arg("-N").arg("-f").arg(dir.join("squid.conf"));
    let child = spawn(&mut cmd, &dir.join("out.log"))?;
    peer(child, port).await
}

async fn peer(child: Child, port: u16) -> Result<Peer> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on {addr}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Peer {
        child,
        addr,
        auth: None,
    })
}

fn spawn(cmd: &mut Command, log: &Path) -> Result<Child> {
    let out = std::fs::File::create(log)?;
    let err = out.try_clone()?;
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawn {cmd:?}"))
}

async fn wait_addr_file(path: &Path) -> Result<SocketAddr> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(map) = serde_json::from_str::<serde_json::Value>(&text)
            && let Some(addr) = map["proxy"].as_str().and_then(|s| s.parse().ok())
        {
            return Ok(addr);
        }
        if Instant::now() > deadline {
            bail!("postern wrote no address file");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn scratch(name: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("postern-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
