//! Binding the data plane's sockets. The admin and forward-proxy listeners
//! serve; the others are parsed and logged as not serving until their
//! features exist (binding them would accept connections nobody answers).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use tokio::net::TcpListener;

use crate::cli::ListenerArgs;
use crate::{Error, Result};

/// The sockets bound at start-up and their real addresses.
pub struct Bound {
    pub admin: TcpListener,
    /// HTTP CONNECT / absolute-form forward proxy.
    pub proxy: TcpListener,
    /// SOCKS5 forward proxy.
    pub socks: TcpListener,
    /// Reverse proxy, plain HTTP.
    pub http: TcpListener,
    /// Reverse proxy, HTTPS.
    pub https: TcpListener,
    /// Listener name → bound address, for the address file.
    pub addrs: BTreeMap<&'static str, SocketAddr>,
}

/// Binds what serves and logs the rest. Fails on a busy port.
pub async fn bind(args: &ListenerArgs) -> Result<Bound> {
    let addr = args.tunnel_addr;
    tracing::info!(listener = "tunnel", %addr, "not serving yet: this build has no tunnel feature");
    let admin = bind_one("admin", args.admin_addr).await?;
    let proxy = bind_one("proxy", args.proxy_addr).await?;
    let socks = bind_one("socks", args.socks_addr).await?;
    let http = bind_one("http", args.http_addr).await?;
    let https = bind_one("https", args.https_addr).await?;
    let mut addrs = BTreeMap::new();
    for (name, listener) in [
        ("admin", &admin),
        ("proxy", &proxy),
        ("socks", &socks),
        ("http", &http),
        ("https", &https),
    ] {
        addrs.insert(name, listener.local_addr().map_err(Error::Admin)?);
    }
    Ok(Bound {
        admin,
        proxy,
        socks,
        http,
        https,
        addrs,
    })
}

/// The accept queue of every listener. `TcpListener::bind` would use 128,
/// which a burst of a few hundred new connections overflows (each dropped
/// SYN costs its client a one-second retransmit); the kernel caps this at
/// `net.core.somaxconn`.
const BACKLOG: u32 = 4096;

async fn bind_one(name: &'static str, addr: SocketAddr) -> Result<TcpListener> {
    let listener = listen(addr).map_err(|source| Error::Bind { name, addr, source })?;
    let local = listener.local_addr().map_err(Error::Admin)?;
    if addr.port() == 0 {
        tracing::info!(listener = name, addr = %local, "listening (port 0: picked {})", local.port());
    } else {
        tracing::info!(listener = name, addr = %local, "listening");
    }
    Ok(listener)
}

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As `TcpListener::bind` does: a restarted postern rebinds at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

impl Bound {
    /// Writes `{"admin":"127.0.0.1:PORT",...}` atomically (a temporary file
    /// renamed into place), with connectable addresses: a wildcard bind is
    /// written as loopback.
    pub fn write_addr_file(&self, path: &Path) -> Result<()> {
        let map: BTreeMap<&str, String> = self
            .addrs
            .iter()
            .map(|(name, addr)| (*name, connectable(*addr).to_string()))
            .collect();
        let json = serde_json::to_vec(&map).unwrap_or_default();
        let tmp = path.with_extension("tmp");
        let err = |source| Error::AddrFile {
            path: path.to_path_buf(),
            source,
        };
        std::fs::write(&tmp, json).map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }
}

/// The address a local client reaches a listener bound to `addr` on.
fn connectable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_binds_are_written_as_loopback() {
        let any: SocketAddr = "0.0.0.0:9000".parse().expect("addr");
        assert_eq!(connectable(any).to_string(), "127.0.0.1:9000");
        let any6: SocketAddr = "[::]:9000".parse().expect("addr");
        assert_eq!(connectable(any6).to_string(), "[::1]:9000");
        let some: SocketAddr = "10.1.2.3:9000".parse().expect("addr");
        assert_eq!(connectable(some), some);
    }
}
