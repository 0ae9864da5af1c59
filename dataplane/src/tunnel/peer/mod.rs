//! More than one data plane: an agent is connected to one replica, public
//! requests reach any. A replica that holds agents says so in the shared
//! registry ([`directory`], Redis); one that gets a request, or a tcp
//! connection, for a tunnel it does not hold sends the stream to the
//! holder's peer port ([`server`]) over an authenticated connection
//! ([`handshake`], [`client`]). Which replica a stream goes to is decided
//! in one place, [`decide`].
//!
//! Standalone mode and a single replica need none of it: without
//! `--redis-url` every tunnel is served by the agents connected here.

mod client;
pub mod directory;
pub mod handshake;
pub mod server;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use directory::{Directory, Holder, View};
use handshake::PeerKey;

pub use client::PeerClients;

/// The shortest peer secret accepted.
const MIN_SECRET: usize = 16;

/// Where a stream for a tunnel goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// An agent connected to this replica.
    Local,
    /// The replica at this peer address.
    Peer(String),
    /// Nowhere: no agent anywhere, as far as this replica knows.
    NoAgent,
    /// Nowhere: no agent here, and the registry cannot say where.
    RegistryDown,
}

/// The one routing rule. `local` is when this replica's oldest live agent
/// for the tunnel connected (None: none is); `holders` the registry's
/// live holders, oldest first. A standby-mode tunnel belongs to the oldest
/// holder anywhere (so one agent serves it across replicas and the others
/// stand by); a pool-mode tunnel is served here when it can be, else by
/// the holder `spread` picks.
pub fn decide(
    me: &str,
    view: &View,
    tunnel: &str,
    local: Option<u64>,
    pool: bool,
    spread: usize,
) -> Decision {
    if !view.healthy {
        return match local {
            Some(_) => Decision::Local,
            None => Decision::RegistryDown,
        };
    }
    let others: Vec<&Holder> = view
        .holders
        .get(tunnel)
        .map(|l| l.iter().filter(|h| h.addr != me).collect())
        .unwrap_or_default();
    match (local, others.first()) {
        (Some(_), None) => Decision::Local,
        (None, None) => Decision::NoAgent,
        (Some(_), Some(_)) if pool => Decision::Local,
        (None, Some(_)) if pool => Decision::Peer(others[spread % others.len()].addr.clone()),
        (Some(since), Some(oldest)) if (since, me) <= (oldest.since, oldest.addr.as_str()) => {
            Decision::Local
        }
        (_, Some(oldest)) => Decision::Peer(oldest.addr.clone()),
    }
}

/// Milliseconds since the epoch, as the registry stores them.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Why the peer setup cannot start.
#[derive(Debug, thiserror::Error)]
pub enum PeerConfigError {
    #[error("cannot read the peer secret {path}: {source}")]
    Secret {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the peer secret {0} is shorter than {MIN_SECRET} bytes")]
    ShortSecret(PathBuf),
    #[error("cannot bind --tunnel-peer-addr {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "--tunnel-peer-addr {0} is a wildcard: set --tunnel-peer-advertise to the address other replicas dial (the pod IP)"
    )]
    Advertise(SocketAddr),
    #[error("--redis-url: {0}")]
    Redis(#[from] redis::RedisError),
}

/// This replica's part in a group of data planes.
pub struct Peers {
    pub directory: std::sync::Arc<Directory>,
    pub clients: PeerClients,
    pub key: PeerKey,
    /// Bound at start-up (a busy port fails fast), served by `serve`.
    pub listener: Mutex<Option<TcpListener>>,
    spread: std::sync::atomic::AtomicUsize,
}

impl Peers {
    pub fn new(
        redis_url: &str,
        addr: SocketAddr,
        advertise: Option<&str>,
        secret_file: &std::path::Path,
    ) -> Result<Peers, PeerConfigError> {
        let secret = std::fs::read(secret_file).map_err(|source| PeerConfigError::Secret {
            path: secret_file.to_path_buf(),
            source,
        })?;
        let secret = secret.trim_ascii();
        if secret.len() < MIN_SECRET {
            return Err(PeerConfigError::ShortSecret(secret_file.to_path_buf()));
        }
        let listener =
            TcpListener::bind(addr).map_err(|source| PeerConfigError::Bind { addr, source })?;
        let bound = listener
            .local_addr()
            .and_then(|a| listener.set_nonblocking(true).map(|()| a))
            .map_err(|source| PeerConfigError::Bind { addr, source })?;
        let me = match advertise {
            Some(a) => a.to_string(),
            None if bound.ip().is_unspecified() => return Err(PeerConfigError::Advertise(bound)),
            None => bound.to_string(),
        };
        tracing::info!(listen = %bound, advertise = %me, "tunnel peer port bound");
        let key = PeerKey::new(secret);
        Ok(Peers {
            directory: std::sync::Arc::new(Directory::new(redis_url, me)?),
            clients: PeerClients::new(key.clone()),
            key,
            listener: Mutex::new(Some(listener)),
            spread: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Where a stream for `tunnel` goes (see [`decide`]).
    pub fn decide(&self, tunnel: &str, local: Option<SystemTime>, pool: bool) -> Decision {
        let spread = self
            .spread
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        decide(
            &self.directory.me,
            &self.directory.view.load(),
            tunnel,
            local.map(unix_ms),
            pool,
            spread,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(holders: &[(&str, u64)]) -> View {
        let list = holders
            .iter()
            .map(|(a, s)| Holder {
                since: *s,
                addr: a.to_string(),
            })
            .collect();
        View {
            healthy: true,
            holders: [("ns/t".to_string(), list)].into_iter().collect(),
        }
    }

    #[test]
    fn a_standby_tunnel_goes_to_its_oldest_holder() {
        let v = view(&[("a:1", 100), ("b:1", 200)]);
        assert_eq!(
            decide("b:1", &v, "ns/t", Some(200), false, 0),
            Decision::Peer("a:1".into())
        );
        assert_eq!(
            decide("a:1", &v, "ns/t", Some(100), false, 0),
            Decision::Local
        );
        assert_eq!(
            decide("c:1", &v, "ns/t", None, false, 0),
            Decision::Peer("a:1".into())
        );
        // Not written yet, but older than every holder: it is the owner.
        assert_eq!(
            decide("c:1", &v, "ns/t", Some(50), false, 0),
            Decision::Local
        );
        assert_eq!(
            decide("c:1", &v, "ns/other", None, false, 0),
            Decision::NoAgent
        );
    }

    #[test]
    fn a_pool_tunnel_stays_here_when_it_can_and_spreads_otherwise() {
        let v = view(&[("a:1", 100), ("b:1", 200)]);
        assert_eq!(
            decide("b:1", &v, "ns/t", Some(200), true, 0),
            Decision::Local
        );
        assert_eq!(
            decide("c:1", &v, "ns/t", None, true, 0),
            Decision::Peer("a:1".into())
        );
        assert_eq!(
            decide("c:1", &v, "ns/t", None, true, 1),
            Decision::Peer("b:1".into())
        );
    }

    #[test]
    fn without_the_registry_only_local_agents_serve() {
        let down = View::default();
        assert_eq!(
            decide("a:1", &down, "ns/t", Some(1), false, 0),
            Decision::Local
        );
        assert_eq!(
            decide("a:1", &down, "ns/t", None, false, 0),
            Decision::RegistryDown
        );
    }
}
