//! The forward proxy: HTTP CONNECT and absolute-form HTTP on `--proxy-addr`,
//! SOCKS5 on `--socks-addr`, each user authenticated and sent through the
//! upstream its UserUpstream names.
//!
//! The request path, in order, for both inbounds (SOCKS5 authenticates
//! before its client names the destination):
//! 1. parse the destination ([`target`]) — 400 when it is not one;
//! 2. authenticate ([`auth`]) — 407; one SHA-256 per connection;
//! 3. judge the destination against the user's rules ([`rules`]) and the
//!    gateway's [`guard`] (loopback, link-local, the gateway itself) — 403;
//! 4. admit into the per-user [`registry`] — 429 at `maxConnections`;
//! 5. open the stream through the upstream ([`upstream`]), every address
//!    judged again as it is dialled — 403/502/504;
//! 6. relay bytes until done, cut, idle or shutdown ([`relay`]), then
//!    log one line and settle the metrics.
//!
//! Errors map to statuses, SOCKS replies and metric labels in [`errors`]
//! only. Snapshots arrive through [`Forward::apply`] (the [`Feature`] seam); a change of a user's
//! revision cuts that user's tunnels at once. The UpstreamGate-compatible
//! user API of the admin port is [`crate::upstreamgate`]. This module reads the runtime
//! and never writes it, and never logs a password.

pub mod auth;
pub mod errors;
pub mod guard;
pub(crate) mod inbound_http;
pub(crate) mod inbound_socks;
pub mod metrics;
mod plain;
pub mod registry;
pub mod relay;
mod reply;
pub mod rules;
pub mod table;
pub mod target;
pub mod upstream;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use postern_snapshot::{Snapshot, Upstream};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use futures::future::BoxFuture;

use crate::feature::Feature;
use crate::listeners::{Listener, Listeners};
use crate::net::admission::{Admission, Permit, Slot};
use crate::net::{Acceptor, Caps, Connections, Cores};
use crate::reqlog::{Ended, Kind, RequestLog};
use auth::Presented;
use errors::{ConfigError, ForwardError};
use metrics::ForwardMetrics;
use registry::{Lease, OpenError, Registry};
use relay::Record;
use rules::NameVerdict;
use table::{Table, UserEntry};
use target::Target;

/// Timeouts and limits of the forward proxy (command-line flags).
#[derive(Clone, Debug)]
pub struct ForwardConfig {
    /// Establishing a tunnel: resolution, TCP, TLS and the upstream handshake.
    pub connect_timeout: Duration,
    /// A tunnel with no byte either way for this long is closed; also the
    /// longest wait for the response head of a plain-HTTP request (504).
    pub idle_timeout: Duration,
    /// A client must finish its request head or SOCKS handshake within this.
    pub handshake_timeout: Duration,
    /// The largest request head accepted (431 beyond); at least 8 KiB.
    pub max_header_bytes: usize,
    /// Extra CA certificates (PEM) trusted for `https://` upstreams.
    pub upstream_ca_files: Vec<PathBuf>,
    /// Networks no user reaches unless its `allowInternalNetworks` says so,
    /// besides loopback, unspecified and link-local ([`guard`]).
    pub deny_cidrs: Vec<ipnet::IpNet>,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        ForwardConfig {
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            handshake_timeout: Duration::from_secs(30),
            max_header_bytes: 32 * 1024,
            upstream_ca_files: Vec::new(),
            deny_cidrs: Vec::new(),
        }
    }
}

/// The forward proxy's shared state: one per process.
pub struct Forward {
    config: ForwardConfig,
    registry: Registry,
    dialer: upstream::Dialer,
    metrics: ForwardMetrics,
    shutdown: CancellationToken,
    /// Admission of `--proxy-addr` and `--socks-addr`.
    admission: [Admission; 2],
    connections: Arc<Connections>,
    request_log: Arc<RequestLog>,
}

/// A connection let in: its user, the rules' verdict and its registry lease.
pub(crate) struct Admitted {
    pub user: Arc<UserEntry>,
    pub verdict: NameVerdict,
    pub lease: Lease,
    /// The upstream socket's descriptor, drawn from the process's budget.
    pub _descriptor: Slot,
}

impl Forward {
    /// Builds the proxy; `shutdown` stops its listeners and closes its
    /// tunnels. Its listeners draw on `connections`' budget, within `caps`.
    pub fn new(
        mut config: ForwardConfig,
        shutdown: CancellationToken,
        connections: &Arc<Connections>,
        caps: Caps,
        request_log: Arc<RequestLog>,
    ) -> Result<Arc<Forward>, ConfigError> {
        config.max_header_bytes = config.max_header_bytes.max(8192);
        Ok(Arc::new(Forward {
            dialer: upstream::Dialer::new(&config)?,
            config,
            registry: Registry::default(),
            metrics: ForwardMetrics::default(),
            shutdown,
            admission: [
                connections.listener("proxy", caps, true),
                connections.listener("socks", caps, true),
            ],
            connections: connections.clone(),
            request_log,
        }))
    }

    pub fn metrics(&self) -> &ForwardMetrics {
        &self.metrics
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Cuts every open connection of `user` (admin API); returns how many.
    pub fn cut_user(&self, user: &str) -> u32 {
        let cut = self.registry.cut_user(user);
        if cut > 0 {
            self.metrics
                .cuts
                .get_or_create(&ForwardMetrics::user(user))
                .inc_by(u64::from(cut));
            self.metrics
                .registry_users
                .set(self.registry.slot_count() as i64);
            tracing::info!(%user, connections = cut, "connections cut by the admin API");
        }
        cut
    }

    /// Takes a new snapshot: swaps the user table and cuts the tunnels of
    /// users whose revision changed or who are gone.
    pub fn apply(&self, snapshot: &Snapshot) {
        let cut = self.registry.apply(Table::build(snapshot));
        self.metrics
            .registry_users
            .set(self.registry.slot_count() as i64);
        for user in cut {
            tracing::info!(%user, version = %snapshot.version, "user changed or removed: cutting its tunnels");
        }
    }

    /// Serves `listener` on every serving thread until shutdown, each
    /// connection it accepts with `serve` (HTTP CONNECT and absolute-form
    /// HTTP, or SOCKS5).
    async fn serve_listener<F>(
        self: Arc<Self>,
        listener: TcpListener,
        admission: Admission,
        cores: &Arc<Cores>,
        serve: impl Fn(Arc<Forward>, tokio::net::TcpStream, std::net::SocketAddr, Permit) -> F
        + Copy
        + Send
        + Sync
        + 'static,
    ) -> std::io::Result<()>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        cores
            .accept_on_each(listener, move |listener, cores| {
                self.clone()
                    .accept_loop(listener, admission.clone(), cores, serve)
            })
            .await
    }

    async fn accept_loop<F>(
        self: Arc<Self>,
        listener: TcpListener,
        admission: Admission,
        cores: Arc<Cores>,
        serve: impl Fn(Arc<Forward>, tokio::net::TcpStream, std::net::SocketAddr, Permit) -> F
        + Copy
        + Send
        + 'static,
    ) where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut acceptor = Acceptor::new(listener, admission);
        while let Some(accepted) = acceptor.next(&self.shutdown).await {
            let _ = accepted.stream.set_nodelay(true);
            // The permit goes with the connection, and on into a tunnel
            // that outlives the HTTP exchange that opened it.
            let (forward, peer, permit) = (self.clone(), accepted.peer, accepted.permit);
            cores.serve(accepted.stream, move |stream| {
                serve(forward, stream, peer, permit)
            });
        }
    }

    /// Checks credentials against the table in service.
    pub(crate) fn authenticate(
        &self,
        presented: &Presented,
    ) -> Result<Arc<UserEntry>, ForwardError> {
        auth::authenticate(&self.registry.table(), presented)
    }

    /// Judges the destination and takes a registry lease. When the user
    /// changed since `user` was authenticated, authenticates again.
    pub(crate) fn admit(
        &self,
        mut user: Arc<UserEntry>,
        presented: &Presented,
        target: &Target,
    ) -> Result<Admitted, ForwardError> {
        for _ in 0..3 {
            let direct = matches!(user.upstream, Upstream::Direct);
            let verdict = user.rules.check(target, direct)?;
            self.dialer
                .guard()
                .judge_named(target, &user.internal_allow, direct)
                .map_err(|reason| ForwardError::guarded(target, None, reason))?;
            let active = self
                .metrics
                .active
                .get_or_create(&ForwardMetrics::user(&user.user))
                .clone();
            match self.registry.open(&user, active) {
                Ok(lease) => {
                    let Some(descriptor) = self.connections.extra("proxy") else {
                        return Err(ForwardError::Capacity);
                    };
                    self.metrics
                        .registry_users
                        .set(self.registry.slot_count() as i64);
                    return Ok(Admitted {
                        user,
                        verdict,
                        lease,
                        _descriptor: descriptor,
                    });
                }
                Err(OpenError::Limit(n)) => return Err(ForwardError::Limit(n)),
                Err(OpenError::Stale) => user = self.authenticate(presented)?,
            }
        }
        Err(ForwardError::Auth(
            "the user is being reconfigured; try again",
        ))
    }

    /// Opens the stream to `target` through the admitted user's upstream.
    pub(crate) async fn dial(
        &self,
        admitted: &Admitted,
        target: &Target,
    ) -> Result<upstream::Stream, ForwardError> {
        self.dialer
            .tunnel(&admitted.user, target, admitted.verdict)
            .await
    }

    /// Counts and logs a refused or failed request. `user` is empty before
    /// authentication succeeded (and for every authentication failure).
    pub(crate) fn refused(
        &self,
        inbound: &'static str,
        client: std::net::SocketAddr,
        user: &str,
        destination: &str,
        err: &ForwardError,
    ) {
        let user = if matches!(err, ForwardError::Auth(_)) {
            ""
        } else {
            user
        };
        self.metrics.error(user, err.metric_label());
        if !user.is_empty() {
            // Like the log line: refusals of unknown clients stay out, so a
            // scanner cannot push real records out of the request log.
            self.request_log.ended(&Ended {
                kind: Kind::Connect,
                client,
                host: host_of(destination),
                // An absolute-form request's method is not kept this far.
                method: (inbound != "http").then_some("CONNECT"),
                path: None,
                status: Some(err.status().as_u16()),
                bytes: (0, 0),
                took: Duration::ZERO,
                upstream: None,
                user: Some(user),
                outcome: err.metric_label(),
            });
        }
        // Failures before authentication are counted, and logged at debug
        // only: a scanner must not be able to flood the log.
        if user.is_empty() {
            tracing::debug!(
                target: "postern::forward::relay",
                inbound,
                destination,
                outcome = err.metric_label(),
                error = %err.log_detail(),
                "tunnel refused"
            );
        } else {
            tracing::info!(
                target: "postern::forward::relay",
                inbound,
                user,
                destination,
                outcome = err.metric_label(),
                error = %err.log_detail(),
                "tunnel refused"
            );
        }
    }

    /// A tunnel's log record, its opening counted. `destination` is the
    /// target as the caller already formatted it (once per connection).
    pub(crate) fn record(
        &self,
        inbound: &'static str,
        client: std::net::SocketAddr,
        admitted: &Admitted,
        destination: &str,
    ) -> Record {
        self.metrics
            .relays
            .get_or_create(&ForwardMetrics::user(&admitted.user.user))
            .inc();
        Record {
            inbound,
            client,
            user: admitted.user.user.clone(),
            destination: destination.to_string(),
            upstream: admitted.user.upstream_label(),
            started: Instant::now(),
            request: None,
            // A tunnel's client got its 200 (or SOCKS success) by now.
            status: Arc::new(std::sync::atomic::AtomicU16::new(200)),
        }
    }

    /// Settles a finished tunnel: its log line, metrics and lease.
    pub(crate) fn finish(
        &self,
        record: &Record,
        outcome: &relay::Outcome,
        bytes: &relay::Bytes,
        lease: Lease,
    ) {
        relay::finish(record, outcome, bytes, &self.metrics);
        self.log_request(record, outcome, bytes);
        drop(lease);
        self.metrics
            .registry_users
            .set(self.registry.slot_count() as i64);
    }

    /// A finished connection's request-log record.
    fn log_request(&self, record: &Record, outcome: &relay::Outcome, bytes: &relay::Bytes) {
        use std::sync::atomic::Ordering::Relaxed;
        let status = record.status.load(Relaxed);
        let (method, path) = match &record.request {
            Some((method, path)) => (method.as_str(), Some(path.as_str())),
            None => ("CONNECT", None),
        };
        self.request_log.ended(&Ended {
            kind: Kind::Connect,
            client: record.client,
            host: host_of(&record.destination),
            method: Some(method),
            path,
            status: (status != 0).then_some(status),
            bytes: (bytes.up.load(Relaxed), bytes.down.load(Relaxed)),
            took: record.started.elapsed(),
            upstream: Some(&record.upstream),
            user: Some(&record.user),
            outcome: match outcome {
                relay::Outcome::Closed => "ok",
                other => other.as_str(),
            },
        });
    }

    pub(crate) fn config(&self) -> &ForwardConfig {
        &self.config
    }

    pub(crate) fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    pub(crate) fn dialer(&self) -> &upstream::Dialer {
        &self.dialer
    }
}

/// The host of `host:port` or `[v6]:port`, as the request log files it.
fn host_of(destination: &str) -> &str {
    let host = destination.rsplit_once(':').map_or(destination, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

impl Feature for Forward {
    fn name(&self) -> &'static str {
        "forward"
    }

    fn listeners(&self) -> &'static [Listener] {
        &[Listener::Proxy, Listener::Socks]
    }

    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.metrics.register(registry);
    }

    fn apply(&self, snapshot: &Snapshot) {
        Forward::apply(self, snapshot);
    }

    fn serve(
        self: Arc<Self>,
        mut listeners: Listeners,
        _shutdown: CancellationToken,
    ) -> BoxFuture<'static, crate::Result<()>> {
        Box::pin(async move {
            self.dialer
                .guard()
                .set_listeners(listeners.every_bound().to_vec());
            let proxy = listeners.take(Listener::Proxy)?;
            let socks = listeners.take(Listener::Socks)?;
            // Both loops end on the token given to `Forward::new`, which
            // also closes the open tunnels.
            let cores = listeners.cores().clone();
            let (http, socks) = tokio::join!(
                self.clone().serve_listener(
                    proxy,
                    self.admission[0].clone(),
                    &cores,
                    inbound_http::serve
                ),
                self.clone().serve_listener(
                    socks,
                    self.admission[1].clone(),
                    &cores,
                    inbound_socks::serve
                )
            );
            let failed = |name| move |source| crate::Error::Serve { name, source };
            http.map_err(failed("proxy"))?;
            socks.map_err(failed("socks"))
        })
    }
}
