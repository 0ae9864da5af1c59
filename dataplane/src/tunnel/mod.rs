//! Reverse tunnels: agents (`postern agent`) dial `--tunnel-addr` over TLS
//! and serve the Tunnels their token opens; public requests for those
//! Tunnels' hostnames or path prefix, and connections to their tcp ports,
//! become streams on the agent's one multiplexed connection.
//!
//! The modules: [`protocol`] (the wire, shared with the agent), [`auth`]
//! and [`limiter`] (who may serve what), [`keys`] (`postern tunnel`),
//! [`table`] (one snapshot's tunnels), [`registry`] (live agents, one
//! active per tunnel), [`session`] (the agent listener), [`backend`] (the
//! reverse proxy's `ChooseUpstream` hook), [`tcp`] (tcp ports) and
//! [`relayed`] (what each stream carries, counted). This
//! feature never edits the reverse proxy's tables: http Tunnels' hostnames
//! reach it as sites the compiler marked with `Site::tunnel`.

pub mod auth;
mod backend;
mod cert;
pub mod keys;
mod limiter;
mod metrics;
pub mod peer;
pub mod protocol;
mod registry;
mod relayed;
pub mod session;
mod table;
mod tcp;
pub mod ws;

use crate::net::admission::Admission;
use crate::net::{Caps, Connections};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use futures::future::BoxFuture;
use postern_snapshot::Snapshot;
use postern_snapshot::sync::TunnelAgents;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::feature::Feature;
use crate::listeners::{Listener, Listeners};
use crate::reverse::ChooseUpstream;
use crate::runtime::Runtime;
use session::State;
use table::Table;

/// Flags of the agent listener.
#[derive(Debug, Clone, Args)]
pub struct TunnelArgs {
    /// The PEM certificate chain agents see on `--tunnel-addr` (read again
    /// when the file changes). Without it (and `--tunnel-key`) the agent
    /// listener is not served.
    #[arg(
        long,
        env = "POSTERN_TUNNEL_CERT",
        value_name = "FILE",
        requires = "tunnel_key"
    )]
    pub tunnel_cert: Option<PathBuf>,
    /// The private key (PEM) of `--tunnel-cert`.
    #[arg(
        long,
        env = "POSTERN_TUNNEL_KEY",
        value_name = "FILE",
        requires = "tunnel_cert"
    )]
    pub tunnel_key: Option<PathBuf>,
    /// The address tcp Tunnels' public ports are bound on.
    #[arg(
        long,
        env = "POSTERN_TUNNEL_TCP_HOST",
        default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        value_name = "IP"
    )]
    pub tunnel_tcp_host: IpAddr,
    /// The Redis that data-plane replicas share (`redis://HOST:PORT[/DB]`,
    /// `rediss://` for TLS): OAuth state (codes, sessions, refresh tokens,
    /// registered clients, rate counters) and, with --tunnel-peer-addr,
    /// which replica holds a tunnel's agent. Without it, OAuth state is
    /// kept in memory and only agents connected to this process serve.
    #[arg(long, env = "POSTERN_REDIS_URL", value_name = "URL")]
    pub redis_url: Option<String>,
    /// The internal port other replicas send streams to for the agents
    /// connected here. Only replicas holding --tunnel-peer-secret-file get
    /// past its handshake. Needs --redis-url.
    #[arg(
        long,
        env = "POSTERN_TUNNEL_PEER_ADDR",
        value_name = "HOST:PORT",
        requires_all = ["redis_url", "tunnel_peer_secret_file"]
    )]
    pub tunnel_peer_addr: Option<SocketAddr>,
    /// The address other replicas dial for --tunnel-peer-addr (in a pod:
    /// `$(POD_IP):PORT`); default: the bound address, unless a wildcard.
    #[arg(long, env = "POSTERN_TUNNEL_PEER_ADVERTISE", value_name = "HOST:PORT")]
    pub tunnel_peer_advertise: Option<String>,
    /// A file with the secret (at least 16 bytes) every replica shares and
    /// proves on the peer port (the chart mounts it from a Secret that
    /// tenants and agents never see). Read at start-up.
    #[arg(long, env = "POSTERN_TUNNEL_PEER_SECRET_FILE", value_name = "FILE")]
    pub tunnel_peer_secret_file: Option<PathBuf>,
}

/// Why the tunnel feature cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tunnel certificate: {0}")]
    Pem(String),
    #[error("tunnel TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    #[error(transparent)]
    Peer(#[from] peer::PeerConfigError),
}

/// One agent session as the admin API shows it.
pub struct AgentView {
    pub session: String,
    pub remote: std::net::SocketAddr,
    pub agent_version: String,
    pub since: std::time::SystemTime,
    pub active: bool,
}

/// The tunnel feature.
pub struct Tunnels {
    state: Arc<State>,
    /// The caps of `--tunnel-addr` (agents).
    admission: Admission,
    acceptor: Option<TlsAcceptor>,
    tcp_host: IpAddr,
    tcp_wanted: watch::Sender<Vec<(String, u16)>>,
    /// Where tcp streams are recorded when they end.
    request_log: Arc<crate::reqlog::RequestLog>,
    /// The caps of `--tunnel-peer-addr`.
    peer_admission: Admission,
    runtime: Arc<Runtime>,
}

impl Tunnels {
    /// `reports` receives every programmed tunnel's agents when they change
    /// (the sync client sends them to the operator).
    pub fn new(
        args: &TunnelArgs,
        reports: watch::Sender<Vec<TunnelAgents>>,
        connections: &Arc<Connections>,
        caps: Caps,
        runtime: &Arc<Runtime>,
        request_log: Arc<crate::reqlog::RequestLog>,
    ) -> Result<Tunnels, ConfigError> {
        let peers = match (
            &args.redis_url,
            args.tunnel_peer_addr,
            &args.tunnel_peer_secret_file,
        ) {
            (Some(url), Some(addr), Some(secret)) => Some(Arc::new(peer::Peers::new(
                url,
                addr,
                args.tunnel_peer_advertise.as_deref(),
                secret,
            )?)),
            _ => None,
        };
        let acceptor = match (&args.tunnel_cert, &args.tunnel_key) {
            (Some(cert), Some(key)) => Some(acceptor(cert, key)?),
            _ => {
                tracing::info!("no --tunnel-cert: tunnel agents cannot connect to this data plane");
                None
            }
        };
        Ok(Tunnels {
            state: Arc::new(State::new(
                reports,
                connections.listener("tunnel_tcp", caps, true),
                peers,
            )),
            peer_admission: connections.listener("tunnel_peer", caps, true),
            runtime: runtime.clone(),
            admission: connections.listener("tunnel", caps, true),
            acceptor,
            tcp_host: args.tunnel_tcp_host,
            tcp_wanted: watch::channel(Vec::new()).0,
            request_log,
        })
    }

    /// The agents of `tunnel` on this data plane, for the admin API:
    /// (session, remote address, agent version, connected at, active).
    pub fn agents(&self, tunnel: &str) -> Vec<AgentView> {
        self.state
            .registry
            .sessions(tunnel)
            .into_iter()
            .map(|(s, active)| AgentView {
                session: s.id.clone(),
                remote: s.remote,
                agent_version: s.agent_version.clone(),
                since: s.since,
                active,
            })
            .collect()
    }

    /// Cuts every agent session holding `tunnel` (admin API); the agents
    /// reconnect on their own. Returns how many were cut.
    pub fn disconnect(&self, tunnel: &str) -> usize {
        let sessions = self.state.registry.sessions(tunnel);
        for (session, _) in &sessions {
            tracing::info!(%tunnel, session = %session.id, "agent disconnected by the admin API");
            session.cut.cancel();
        }
        sessions.len()
    }

    /// The reverse proxy's phase-4 hook.
    pub fn hook(&self) -> Arc<dyn ChooseUpstream> {
        Arc::new(backend::TunnelHook {
            state: self.state.clone(),
        })
    }
}

impl Tunnels {
    /// The registry loop and the peer port, when this replica has peers.
    fn serve_peers(
        &self,
        shutdown: &CancellationToken,
    ) -> crate::Result<tokio::task::JoinHandle<()>> {
        let Some(peers) = self.state.peers.clone() else {
            return Ok(tokio::spawn(async {}));
        };
        let listener = peers
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .map(|l| {
                let addr = l
                    .local_addr()
                    .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
                tokio::net::TcpListener::from_std(l).map_err(|source| {
                    ConfigError::Peer(peer::PeerConfigError::Bind { addr, source })
                })
            })
            .transpose()?;
        let directory = peers.directory.clone();
        let registry =
            tokio::spawn(directory.run(self.state.clone(), self.runtime.clone(), shutdown.clone()));
        let (state, admission, stop) = (
            self.state.clone(),
            self.peer_admission.clone(),
            shutdown.clone(),
        );
        Ok(tokio::spawn(async move {
            if let Some(listener) = listener {
                peer::server::run(listener, admission, peers.key.clone(), state, stop).await;
            }
            let _ = registry.await;
        }))
    }
}

fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, ConfigError> {
    let resolver = cert::FileCert::load(cert.to_path_buf(), key.to_path_buf())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![protocol::ALPN.to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

impl Feature for Tunnels {
    fn name(&self) -> &'static str {
        "tunnel"
    }

    fn listeners(&self) -> &'static [Listener] {
        if self.acceptor.is_some() {
            &[Listener::Tunnel]
        } else {
            &[]
        }
    }

    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.state.metrics.register(registry);
    }

    /// Swaps the tunnel table, cuts agents whose token the new keys no
    /// longer accept (or whose Tunnel is gone), and reconciles tcp ports.
    fn apply(&self, snapshot: &Snapshot) {
        let table = Arc::new(Table::build(snapshot));
        self.state.table.store(table.clone());
        for (session, tunnel, reason) in self.state.registry.revalidate(&table) {
            tracing::info!(session = %session, tunnel = %tunnel, reason, "agent cut from its tunnel by the new snapshot");
            self.state.refused(&tunnel, reason);
            self.state.refresh_agents(std::slice::from_ref(&tunnel));
        }
        self.state.publish();
        self.tcp_wanted.send_replace(table.tcp.clone());
        self.state.applied.send_replace(true);
    }

    fn serve(
        self: Arc<Self>,
        mut listeners: Listeners,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, crate::Result<()>> {
        Box::pin(async move {
            let peers = self.serve_peers(&shutdown)?;
            let stopping = self.state.stopping.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move {
                stop.cancelled().await;
                stopping.cancel();
            });
            let mut wanted = self.tcp_wanted.subscribe();
            let cores = listeners.cores().clone();
            let mut ports =
                tcp::TcpPorts::new(self.tcp_host, self.request_log.clone(), cores.clone());
            let (state, stop) = (self.state.clone(), shutdown.clone());
            let tcp = tokio::spawn(async move {
                loop {
                    let list = wanted.borrow_and_update().clone();
                    ports.reconcile(&list, &state, &stop);
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        changed = wanted.changed() => if changed.is_err() { return },
                    }
                }
            });
            match &self.acceptor {
                Some(acceptor) => {
                    let listener = listeners.take(Listener::Tunnel)?;
                    session::run(
                        listener,
                        self.admission.clone(),
                        acceptor.clone(),
                        self.state.clone(),
                        shutdown,
                        cores,
                    )
                    .await;
                }
                None => shutdown.cancelled().await,
            }
            let _ = tcp.await;
            let _ = peers.await;
            Ok(())
        })
    }
}
