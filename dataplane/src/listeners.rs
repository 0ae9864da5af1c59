//! The data plane's sockets: a registry of the listeners the features asked
//! for, bound at start-up (failing fast on a busy port), each handed to the
//! one feature that serves it. A listener no feature serves is not bound
//! (it would accept connections nobody answers) and the log says so. The
//! traffic listeners are served on the [`Cores`], which every registry
//! split from the first shares.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::cli::ListenerArgs;
use crate::net::Cores;
use crate::{Error, Result};

/// Every listener a data plane can have, by its flag's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Listener {
    /// `--admin-addr`: admin API, metrics, probes.
    Admin,
    /// `--proxy-addr`: HTTP CONNECT / absolute-form forward proxy.
    Proxy,
    /// `--socks-addr`: SOCKS5 forward proxy.
    Socks,
    /// `--http-addr`: plain HTTP sites, redirects, ACME HTTP-01.
    Http,
    /// `--https-addr`: TLS sites.
    Https,
    /// `--tunnel-addr`: tunnel agents.
    Tunnel,
}

impl Listener {
    pub const ALL: [Listener; 6] = [
        Listener::Admin,
        Listener::Proxy,
        Listener::Socks,
        Listener::Http,
        Listener::Https,
        Listener::Tunnel,
    ];

    /// The name in logs, the address file and the `--NAME-addr` flag.
    pub fn name(self) -> &'static str {
        match self {
            Listener::Admin => "admin",
            Listener::Proxy => "proxy",
            Listener::Socks => "socks",
            Listener::Http => "http",
            Listener::Https => "https",
            Listener::Tunnel => "tunnel",
        }
    }

    fn addr(self, args: &ListenerArgs) -> SocketAddr {
        match self {
            Listener::Admin => args.admin_addr,
            Listener::Proxy => args.proxy_addr,
            Listener::Socks => args.socks_addr,
            Listener::Http => args.http_addr,
            Listener::Https => args.https_addr,
            Listener::Tunnel => args.tunnel_addr,
        }
    }
}

/// Bound sockets, taken out one by one by the features that serve them.
#[derive(Debug)]
pub struct Listeners {
    bound: BTreeMap<Listener, TcpListener>,
    /// The address of every socket the process bound, whoever serves it.
    every: Vec<SocketAddr>,
    cores: Arc<Cores>,
}

impl Listeners {
    /// Binds `wanted` (in [`Listener::ALL`] order) and logs the others as
    /// not serving, and starts the serving threads. Fails on a busy port.
    pub fn bind(args: &ListenerArgs, wanted: &[Listener]) -> Result<Listeners> {
        let mut bound = BTreeMap::new();
        for listener in Listener::ALL {
            let addr = listener.addr(args);
            if wanted.contains(&listener) {
                bound.insert(listener, bind_one(listener.name(), addr)?);
            } else {
                tracing::info!(listener = listener.name(), %addr, "not serving: no feature of this build uses it");
            }
        }
        let every = bound.values().filter_map(|s| s.local_addr().ok()).collect();
        let cores = Cores::start(args.serve_threads).map_err(Error::ServeThreads)?;
        tracing::debug!(threads = cores.len(), "serving threads started");
        Ok(Listeners {
            bound,
            every,
            cores,
        })
    }

    /// The sockets of `names`, moved into a registry of their own.
    pub fn split(&mut self, names: &[Listener]) -> Listeners {
        let bound = names
            .iter()
            .filter_map(|n| self.bound.remove_entry(n))
            .collect();
        Listeners {
            bound,
            every: self.every.clone(),
            cores: self.cores.clone(),
        }
    }

    /// The serving threads the traffic listeners accept on.
    pub fn cores(&self) -> &Arc<Cores> {
        &self.cores
    }

    /// The address of every listener the process bound, including those
    /// other features serve (the forward proxy refuses to tunnel into them).
    pub fn every_bound(&self) -> &[SocketAddr] {
        &self.every
    }

    /// The socket of `listener`; an error if it was not bound for the caller.
    pub fn take(&mut self, listener: Listener) -> Result<TcpListener> {
        self.bound
            .remove(&listener)
            .ok_or(Error::ListenerMissing(listener.name()))
    }

    /// Listener name → bound address.
    pub fn addrs(&self) -> Result<BTreeMap<&'static str, SocketAddr>> {
        self.bound
            .iter()
            .map(|(l, s)| Ok((l.name(), s.local_addr().map_err(Error::Admin)?)))
            .collect()
    }
}

/// Writes `{"admin":"127.0.0.1:PORT",...}` atomically (a temporary file
/// renamed into place), with connectable addresses: a wildcard bind is
/// written as loopback.
pub fn write_addr_file(path: &Path, addrs: &BTreeMap<&'static str, SocketAddr>) -> Result<()> {
    let map: BTreeMap<&str, String> = addrs
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

/// The accept queue of every listener. `TcpListener::bind` would use 128,
/// which a burst of a few hundred new connections overflows (each dropped
/// SYN costs its client a one-second retransmit); the kernel caps this at
/// `net.core.somaxconn`.
const BACKLOG: u32 = 4096;

fn bind_one(name: &'static str, addr: SocketAddr) -> Result<TcpListener> {
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

    #[test]
    fn names_are_the_flags() {
        let names: Vec<&str> = Listener::ALL.iter().map(|l| l.name()).collect();
        assert_eq!(
            names,
            ["admin", "proxy", "socks", "http", "https", "tunnel"]
        );
    }
}
