//! OAuth 2.1: the authorization server that ProxyTargets with
//! `authorizationServer` serve on their hostnames, and the guard of sites
//! and routes with `auth: {type: oauth}`.
//!
//! It plugs into the reverse proxy's phases and nothing else:
//! - an early-request hook ([`Endpoints`]) answers every request for an
//!   authorization server's hostnames (metadata, `/authorize`, `/token`,
//!   `/register`, ...; see [`server`]), and on protected hosts the RFC 9728
//!   metadata and the browser session's `/_postern/callback` and
//!   `/_postern/logout` ([`protected`]);
//! - an authenticate hook ([`guard::GuardHook`]) checks access tokens (JWTs,
//!   verified locally against the snapshot's keys: no Redis on this path)
//!   or the browser session cookie, and answers 401 / 403 / a login
//!   redirect.
//!
//! Runtime state (codes, pending logins, refresh-token families, registered
//! clients, rate counters) lives in the [`Store`]: Redis with `--redis-url`,
//! shared by every replica; in memory otherwise. Configuration comes only
//! from the snapshot.

mod guard;
mod metrics;
mod protected;
mod server;
mod tables;
pub(crate) mod web;

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use futures::future::BoxFuture;
use http::Request;
use hyper::body::Incoming;
use postern_oauth::cimd::PublicHttp;
use postern_oauth::login::http::HttpClient;
use postern_oauth::store::Store;
use postern_snapshot::Snapshot;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::feature::Feature;
use crate::listeners::{Listener, Listeners};
use crate::reverse::{Answer, ConnInfo, EarlyRequest};

pub use guard::GuardHook;
use metrics::OauthMetrics;
use tables::Tables;

/// The oauth flags of `postern dataplane` and `postern standalone`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct OauthArgs {
    /// Extra CA certificates (PEM) to trust when calling identity providers
    /// (GitHub Enterprise or an OIDC provider behind a private CA), on top
    /// of the system's roots.
    #[arg(long, env = "POSTERN_OAUTH_PROVIDER_CA", value_name = "FILE")]
    pub oauth_provider_ca: Option<PathBuf>,
}

/// What every oauth request shares.
pub struct Oauth {
    tables: ArcSwap<Tables>,
    /// Outbound calls to the identity providers.
    http: HttpClient,
    /// Fetches clients' metadata documents: public addresses only.
    cimd: PublicHttp,
    store: Arc<dyn Store>,
    metrics: OauthMetrics,
    /// The port browsers are sent to for https when a request came over
    /// plain HTTP (the reverse proxy's redirect port).
    https_port: u16,
}

impl Oauth {
    pub fn new(
        args: &OauthArgs,
        redis_url: Option<&str>,
        https_port: u16,
    ) -> crate::Result<Arc<Oauth>> {
        let ca = match &args.oauth_provider_ca {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                crate::Error::Usage(format!("--oauth-provider-ca {}: {e}", path.display()))
            })?),
            None => None,
        };
        let http = HttpClient::new(ca.as_deref())
            .map_err(|e| crate::Error::Usage(format!("--oauth-provider-ca: {e}")))?;
        let cimd = PublicHttp::new()
            .map_err(|e| crate::Error::Usage(format!("client metadata documents: {e}")))?;
        let store = postern_oauth::store::open(redis_url)
            .map_err(|e| crate::Error::Usage(format!("--redis-url: {e}")))?;
        Ok(Arc::new(Oauth {
            tables: ArcSwap::from_pointee(Tables::default()),
            http,
            cimd,
            store,
            metrics: OauthMetrics::default(),
            https_port,
        }))
    }

    /// The request-path hooks: the endpoints (phase 1) and the guard (phase 3).
    pub fn hooks(self: &Arc<Self>) -> (Arc<dyn EarlyRequest>, Arc<GuardHook>) {
        (
            Arc::new(Endpoints(self.clone())),
            Arc::new(GuardHook::new(self.clone())),
        )
    }
}

impl Feature for Oauth {
    fn name(&self) -> &'static str {
        "oauth"
    }

    fn listeners(&self) -> &'static [Listener] {
        &[]
    }

    fn register_metrics(&self, registry: &mut Registry) {
        self.metrics.register(registry);
    }

    fn apply(&self, snapshot: &Snapshot) {
        let tables = Tables::build(snapshot, &self.tables.load());
        if !tables.servers_by_id.is_empty() {
            tracing::info!(
                servers = tables.servers_by_id.len(),
                protected_hosts = tables.protected.len(),
                store = self.store.kind(),
                "oauth tables rebuilt"
            );
        }
        self.tables.store(Arc::new(tables));
    }

    fn serve(
        self: Arc<Self>,
        _listeners: Listeners,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, crate::Result<()>> {
        Box::pin(async move {
            if self.store.kind() == "memory" {
                tracing::info!(
                    "oauth state (codes, sessions, refresh tokens, registered clients) is kept in memory: give --redis-url to share it between replicas and keep it across restarts"
                );
            }
            shutdown.cancelled().await;
            Ok(())
        })
    }
}

/// Phase 1: the authorization server's hosts, and the few paths the
/// oauth capability owns on protected hosts.
struct Endpoints(Arc<Oauth>);

impl EarlyRequest for Endpoints {
    fn early_request(
        &self,
        req: Request<Incoming>,
        conn: &Arc<ConnInfo>,
    ) -> Result<Answer, Request<Incoming>> {
        let loaded = self.0.tables.load();
        // Most data planes serve no OAuth at all: cost them nothing here.
        if loaded.servers_by_host.is_empty() && loaded.protected.is_empty() {
            return Err(req);
        }
        let Some((host, raw_host)) = request_host(&req) else {
            return Err(req);
        };
        let tables = arc_swap::Guard::into_inner(loaded);
        if let Some(server) = tables.server_for_host(&host).cloned() {
            let ctx = server::Ctx {
                oauth: self.0.clone(),
                tables,
                server,
                raw_host,
                host,
                conn: conn.clone(),
            };
            return Ok(Box::pin(server::serve(ctx, req)));
        }
        if let Some(site) = tables.protected_host(&host).cloned()
            && protected::owns(req.uri().path())
        {
            let ctx = protected::Ctx {
                oauth: self.0.clone(),
                site,
                raw_host,
                host,
                tls: conn.tls,
            };
            return Ok(Box::pin(protected::serve(ctx, req)));
        }
        Err(req)
    }
}

/// The lowercase host without port, and the authority as written.
fn request_host<B>(req: &Request<B>) -> Option<(String, String)> {
    let raw = match req.uri().authority() {
        Some(a) => a.as_str().to_string(),
        None => req
            .headers()
            .get(http::header::HOST)?
            .to_str()
            .ok()?
            .to_string(),
    };
    let host = crate::reverse::normalise_host(&raw)?;
    Some((host, raw))
}
