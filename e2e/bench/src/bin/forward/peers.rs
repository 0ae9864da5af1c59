//! The proxies under test, each started on a free loopback port with its
//! own temporary configuration and killed when dropped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use base64::Engine as _;
use postern_harness::{Launch, Manifests, Proc, free_port, loopback, wait_port};

use crate::load::Proxy;

/// A running proxy process.
pub struct Peer {
    proc: Proc,
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
        self.proc.pid()
    }
}

/// The bench user: a direct upstream, allowed loopback (every peer listens there).
const USER: &str = "apiVersion: v1\nkind: Secret\nmetadata: {name: bench-pw}\nstringData: {password: pw}\n---\n\
     apiVersion: postern.io/v1alpha1\nkind: UserUpstream\nmetadata: {name: bench}\n\
     spec: {user: bench, passwordSecretRef: {name: bench-pw}, upstream: \"direct://\", \
     allowInternalNetworks: [\"127.0.0.0/8\"]}\n";

pub struct Postern;

impl Postern {
    /// The release `postern standalone` (or `$POSTERN_BIN`) with one direct
    /// user, ready once a tunnel to `probe` opens. The probe is a bench
    /// target, not the proxy itself: the guard refuses the gateway's own
    /// listeners.
    pub async fn start(probe: SocketAddr) -> Result<Peer> {
        // The idle rows hold 9,000 tunnels from one address.
        let mut postern = postern_harness::Postern::standalone(
            Manifests::new("bench-postern").with("bench.yaml", USER),
        )
        .args(["--max-connections-per-client", "0"]);
        if let Some(bin) = std::env::var_os("POSTERN_BIN") {
            postern = postern.bin(PathBuf::from(bin));
        }
        let postern = postern.start().await;
        let addr = postern.proxy;
        let auth = base64::engine::general_purpose::STANDARD.encode("bench:pw");
        let peer = Peer {
            proc: postern.into_proc(),
            addr,
            auth: Some(auth),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while crate::load::dial(Some(&peer.proxy()), probe).await.is_err() {
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
    let port = free_port();
    let launch = Launch::new("tinyproxy", "tinyproxy");
    let conf = format!(
        "Port {port}\nListen 127.0.0.1\nTimeout 600\nMaxClients 12000\nAllow 127.0.0.1\nLogLevel Error\nLogFile \"{}\"\n",
        launch.dir().join("tinyproxy.log").display()
    );
    let conf = launch.write("tinyproxy.conf", &conf);
    peer(launch.arg("-d").arg("-c").arg(conf).spawn(), port).await
}

/// squid in one process (`-N`), no cache, CONNECT to any port.
pub async fn squid() -> Result<Peer> {
    let port = free_port();
    let launch = Launch::new("squid", "squid");
    let dir = launch.dir().to_path_buf();
    // squid drops to its own user: its files must be writable by it.
    std::process::Command::new("chmod")
        .arg("777")
        .arg(&dir)
        .status()?;
    let d = dir.display();
    let conf = format!(
        "http_port 127.0.0.1:{port}\nacl localnet src 127.0.0.0/8\nhttp_access allow localnet\nhttp_access deny all\n\
         cache deny all\ncache_mem 8 MB\naccess_log none\ncache_log {d}/cache.log\npid_filename {d}/squid.pid\n\
         coredump_dir {d}\nmax_filedescriptors 20000\nshutdown_lifetime 0 seconds\n"
    );
    let conf = launch.write("squid.conf", &conf);
    peer(launch.arg("-N").arg("-f").arg(conf).spawn(), port).await
}

/// haproxy as a plain TCP relay to `target` with `option splice-auto`: not
/// a CONNECT proxy, but the reference for what splice(2) relaying costs on
/// this kernel over loopback (the bulk rows only).
pub async fn haproxy(target: SocketAddr) -> Result<Peer> {
    let port = free_port();
    let launch = Launch::new("haproxy", "haproxy");
    let conf = format!(
        "global\n  maxconn 1000\n\ndefaults\n  mode tcp\n  option splice-auto\n  timeout connect 5s\n  \
         timeout client 600s\n  timeout server 600s\n\nlisten relay\n  bind 127.0.0.1:{port}\n  server sink {target}\n"
    );
    let conf = launch.write("haproxy.cfg", &conf);
    peer(launch.arg("-db").arg("-f").arg(conf).spawn(), port).await
}

async fn peer(proc: Proc, port: u16) -> Result<Peer> {
    let addr = loopback(port);
    wait_port(addr).await;
    Ok(Peer {
        proc,
        addr,
        auth: None,
    })
}
