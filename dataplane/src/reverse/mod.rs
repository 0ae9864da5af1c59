//! The reverse proxy: ProxyTargets and Routes served on `--http-addr` and
//! `--https-addr`.
//!
//! For each snapshot, [`tables`] compiles the router, the certificate store
//! and the backend clients once and swaps them in whole; a request loads
//! them once. The request path is the list of phases in [`handler`], and
//! [`phases`] holds the hooks other capabilities fill in (ACME, OAuth,
//! tunnels) without editing it; the modules each own one job: [`listener`] (accept, PROXY header, TLS,
//! hyper), [`certs`] (SNI), [`router`], [`backend`] and [`connector`]
//! (pools, TLS to backends), [`headers`], [`upgrade`], [`auth`], and
//! [`errors`] (who is at fault, in one place). Nothing here claims a path
//! on a proxied host.

pub(crate) mod auth;
mod backend;
mod body;
mod certs;
mod connector;
pub(crate) mod errors;
mod handler;
mod headers;
mod idle;
mod inline;
mod listener;
mod logged;
pub mod metrics;
mod parked;
pub(crate) mod phases;
pub(crate) mod proxy_protocol;
pub(crate) mod router;
#[cfg(test)]
mod router_props;
pub(crate) mod tables;
mod upgrade;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use ipnet::IpNet;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use body::{ProxyBody, boxed_response};
pub(crate) use certs::{certified_key, unchecked_key};
pub(crate) use connector::{Connector, TlsSetup};
pub use errors::ProxyError;
pub use metrics::ReverseMetrics;
pub(crate) use phases::{Backend, ChooseUpstream};
pub(crate) use proxy_protocol::outbound as proxy_header;
pub(crate) use router::{SiteTable, Target};

use futures::future::BoxFuture;
use postern_snapshot::Snapshot;

use crate::feature::Feature;
use crate::listeners::{Listener, Listeners};
use crate::net::admission::{Admission, Permit};
use crate::net::{Caps, Connections, Cores};
pub(crate) use phases::Hooks;
pub(crate) use phases::{Answer, AuthContext, Authenticate, EarlyRequest, TlsHook};
use proxy_protocol::Trusted;
pub(crate) use router::normalise_host;
use tables::Live;

/// Flags of the reverse proxy listeners.
#[derive(Debug, Clone, Args)]
pub struct ReverseArgs {
    /// A PEM certificate chain served to TLS clients whose SNI no site
    /// serves (and to clients sending no SNI). Without it they get a
    /// handshake failure, never another site's certificate.
    #[arg(
        long,
        env = "POSTERN_DEFAULT_CERT",
        value_name = "PATH",
        requires = "default_key"
    )]
    pub default_cert: Option<PathBuf>,
    /// The private key (PEM) of `--default-cert`.
    #[arg(
        long,
        env = "POSTERN_DEFAULT_KEY",
        value_name = "PATH",
        requires = "default_cert"
    )]
    pub default_key: Option<PathBuf>,
    /// Peers (CIDRs or addresses, comma-separated) whose connections start
    /// with a PROXY protocol v1/v2 header naming the real client. Headers
    /// from anyone else are never believed.
    #[arg(long, env = "POSTERN_PROXY_PROTOCOL_TRUSTED", value_name = "CIDR", value_delimiter = ',', value_parser = parse_net)]
    pub proxy_protocol_trusted: Vec<IpNet>,
    /// Which listeners expect the PROXY header from trusted peers.
    #[arg(
        long,
        env = "POSTERN_PROXY_PROTOCOL_LISTENERS",
        value_name = "LISTENER",
        value_delimiter = ',',
        default_value = "http,https"
    )]
    pub proxy_protocol_listeners: Vec<ReverseListener>,
    /// The port `redirectHttp` sends clients to (the public HTTPS port,
    /// which may differ from `--https-addr` behind a Service).
    #[arg(
        long,
        env = "POSTERN_HTTPS_REDIRECT_PORT",
        default_value_t = 443,
        value_name = "PORT"
    )]
    pub https_redirect_port: u16,
    /// A TLS handshake that takes longer is dropped.
    #[arg(long, env = "POSTERN_TLS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = crate::cli::parse_duration, value_name = "DURATION")]
    pub tls_handshake_timeout: Duration,
    /// A client must send a whole request head within this, from the
    /// connection's start (or the end of the previous request); slower
    /// ones are closed (slowloris).
    #[arg(long, env = "POSTERN_REQUEST_HEADER_TIMEOUT", default_value = "30s", value_parser = crate::cli::parse_duration, value_name = "DURATION")]
    pub request_header_timeout: Duration,
    /// A connection with no request in flight for this long is closed
    /// (HTTP/1.1 keep-alive and HTTP/2 alike; HTTP/2 gets a GOAWAY).
    #[arg(long, env = "POSTERN_CLIENT_IDLE_TIMEOUT", default_value = "60s", value_parser = crate::cli::parse_duration, value_name = "DURATION")]
    pub client_idle_timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReverseListener {
    Http,
    Https,
}

/// `10.0.0.0/8` or a bare address (a /32 or /128).
fn parse_net(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text}: expected a CIDR such as 10.0.0.0/8 or an IP address"))
}

/// Why the reverse proxy cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("default certificate: {0}")]
    DefaultCert(#[from] certs::CertError),
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
}

/// One client connection, as requests see it.
pub struct ConnInfo {
    /// The real client: the PROXY header's source when trusted, else the peer.
    pub client: SocketAddr,
    /// The address the client connected to.
    pub server: SocketAddr,
    pub tls: bool,
    /// The server name the TLS client asked for, if any.
    pub sni: Option<String>,
    /// The connection's place under the caps, shared with an upgraded
    /// connection that outlives the HTTP one.
    pub(crate) permit: Option<Arc<Permit>>,
}

/// What every connection and request of the reverse proxy shares.
pub struct Shared {
    live: Arc<Live>,
    trusted: Trusted,
    redirect_port: u16,
    metrics: ReverseMetrics,
    hooks: Hooks,
    timeouts: listener::Timeouts,
}

/// The reverse proxy, configured and ready to serve.
pub struct Reverse {
    shared: Arc<Shared>,
    args: ReverseArgs,
    admission: [Admission; 2],
}

impl Reverse {
    /// Reads the default certificate, if any, and takes the capabilities'
    /// phase hooks. Fails on unreadable files.
    pub(crate) fn new(
        args: &ReverseArgs,
        hooks: Hooks,
        connections: &Arc<Connections>,
        caps: Caps,
    ) -> Result<Reverse, ConfigError> {
        let default_cert = match (&args.default_cert, &args.default_key) {
            (Some(cert), Some(key)) => {
                let read = |path: &PathBuf| {
                    std::fs::read(path).map_err(|source| ConfigError::Read {
                        path: path.clone(),
                        source,
                    })
                };
                Some(Arc::new(certs::certified_key(&read(cert)?, &read(key)?)?))
            }
            _ => None,
        };
        let shared = Shared {
            live: Arc::new(Live::new(default_cert)),
            trusted: Trusted(args.proxy_protocol_trusted.clone()),
            redirect_port: args.https_redirect_port,
            metrics: ReverseMetrics::default(),
            hooks,
            timeouts: listener::Timeouts {
                handshake: args.tls_handshake_timeout,
                header: args.request_header_timeout,
                idle: args.client_idle_timeout,
            },
        };
        Ok(Reverse {
            shared: Arc::new(shared),
            args: args.clone(),
            admission: [
                connections.listener("http", caps, true),
                connections.listener("https", caps, true),
            ],
        })
    }

    pub fn metrics(&self) -> &ReverseMetrics {
        &self.shared.metrics
    }

    fn proxied(&self, listener: ReverseListener) -> bool {
        !self.args.proxy_protocol_trusted.is_empty()
            && self.args.proxy_protocol_listeners.contains(&listener)
    }

    /// Serves both listeners on `cores` until `shutdown`.
    async fn serve_both(
        &self,
        http: TcpListener,
        https: TcpListener,
        cores: &Arc<Cores>,
        shutdown: CancellationToken,
    ) -> crate::Result<()> {
        let acceptor = listener::tls_acceptor(&self.shared).map_err(ConfigError::from)?;
        let [http_admission, https_admission] = self.admission.clone();
        let plain = listener::ListenerSpec {
            name: "http",
            tls: None,
            proxy_protocol: self.proxied(ReverseListener::Http),
            admission: http_admission,
        };
        let secure = listener::ListenerSpec {
            name: "https",
            tls: Some(acceptor),
            proxy_protocol: self.proxied(ReverseListener::Https),
            admission: https_admission,
        };
        let (http, https) = tokio::join!(
            listener::run(http, plain, self.shared.clone(), shutdown.clone(), cores),
            listener::run(https, secure, self.shared.clone(), shutdown, cores),
        );
        let failed = |name| move |source| crate::Error::Serve { name, source };
        http.map_err(failed("http"))?;
        https.map_err(failed("https"))
    }
}

impl Feature for Reverse {
    fn name(&self) -> &'static str {
        "reverse"
    }

    fn listeners(&self) -> &'static [Listener] {
        &[Listener::Http, Listener::Https]
    }

    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.shared.metrics.register(registry);
    }

    /// Compiles the routing tables and certificate store, then swaps them in.
    fn apply(&self, snapshot: &Snapshot) {
        self.shared.live.rebuild(snapshot);
    }

    fn serve(
        self: Arc<Self>,
        mut listeners: Listeners,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, crate::Result<()>> {
        Box::pin(async move {
            let http = listeners.take(Listener::Http)?;
            let https = listeners.take(Listener::Https)?;
            let cores = listeners.cores().clone();
            self.serve_both(http, https, &cores, shutdown).await
        })
    }
}
