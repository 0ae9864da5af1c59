//! Postern's data plane: everything the `postern` binary runs.
//!
//! The flow is one-way: a [`Snapshot`](postern_snapshot::Snapshot) arrives,
//! either pushed by the operator ([`sync`], `postern dataplane`) or compiled
//! from a folder of manifests ([`standalone`], `postern standalone`), and is
//! swapped into the [`runtime`] whole. Each capability (`forward/`,
//! `reverse/`, [`admin`]; `acme/`, `oauth/`, `tunnel/` next) is a
//! [`Feature`](feature::Feature) that the [`supervisor`] binds, feeds every
//! snapshot and runs until shutdown; none of them writes the runtime.
//! Nothing here may depend on kube or k8s-openapi (`tests/no_kube.rs`
//! checks).

pub mod acme;
pub mod admin;
pub mod agent;
pub mod cli;
mod error;
pub mod feature;
mod files;
pub mod forward;
/// Parsers driven from memory, for `fuzz/` only: not an API.
#[doc(hidden)]
pub mod fuzzing;
pub mod listeners;
pub mod net;
pub mod oauth;
pub mod reqlog;
pub mod reverse;
pub mod runtime;
pub mod standalone;
pub mod supervisor;
pub mod sync;
pub mod tunnel;
pub mod upstreamgate;

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

pub use error::{Error, Result};

use crate::cli::{Command, ListenerArgs};
use crate::feature::Feature;
use crate::runtime::{Runtime, Source};
use crate::supervisor::Supervisor;

/// Runs a command until SIGINT or SIGTERM.
pub async fn run(command: Command) -> Result<()> {
    match net::limits::raise_fd_limit() {
        Some((before, after)) if after > before => {
            tracing::info!(
                before,
                after,
                "raised the open-file limit to the hard limit"
            );
        }
        Some((_, limit)) => tracing::debug!(limit, "open-file limit"),
        None => tracing::warn!("cannot read or raise the open-file limit"),
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    run_until(command, shutdown).await
}

/// Runs a command until `shutdown` is cancelled or it fails.
pub async fn run_until(command: Command, shutdown: CancellationToken) -> Result<()> {
    match command {
        Command::Dataplane(args) => {
            let mut config = sync::SyncConfig::from_args(&args)?;
            let (agents, reports) = tokio::sync::watch::channel(Vec::new());
            config.agents = Some(reports);
            let runtime = Runtime::new(Source::Operator);
            let cache = match &args.state_dir {
                Some(dir) => Some(Arc::new(sync::cache::SnapshotCache::new(dir).map_err(
                    |e| Error::Usage(format!("--state-dir {}: {e}", dir.display())),
                )?)),
                None => None,
            };
            let kept = runtime.clone();
            serve(
                &args.listeners,
                None,
                agents,
                runtime.clone(),
                shutdown.clone(),
                (
                    "sync",
                    Box::pin(async move {
                        let sync = sync::run(config, runtime, shutdown.clone());
                        match cache {
                            Some(cache) => {
                                let keeping = sync::cache::keep(cache, kept);
                                tokio::select! {
                                    () = sync => {}
                                    () = keeping => {}
                                }
                            }
                            None => sync.await,
                        }
                        Ok(())
                    }),
                ),
            )
            .await
        }
        Command::Standalone(args) => {
            let runtime = Runtime::new(Source::Manifests);
            let dir = standalone::check_dir(&args.manifests)?;
            let limits = args.limits();
            let (local, manager) = acme::standalone_manager(&args, &runtime)?;
            let manifests = standalone::run(
                dir.clone(),
                limits,
                runtime.clone(),
                Some(local),
                args.state_dir.clone(),
                shutdown.clone(),
            );
            let stop = shutdown.clone();
            serve(
                &args.listeners,
                Some(dir.clone()),
                tokio::sync::watch::channel(Vec::new()).0,
                runtime.clone(),
                shutdown.clone(),
                (
                    "manifests",
                    Box::pin(async move {
                        match manager {
                            Some((manager, requests)) => {
                                let ordering = manager.run(requests, stop.cancelled_owned());
                                futures::join!(manifests, ordering);
                            }
                            None => manifests.await,
                        }
                        Ok(())
                    }),
                ),
            )
            .await
        }
        Command::Agent(args) => {
            let config = agent::AgentConfig::from_args(&args)?;
            Ok(agent::run(config, shutdown).await?)
        }
        Command::Tunnel(command) => {
            let out = tunnel::keys::run(&command).map_err(Error::Usage)?;
            print!("{out}");
            Ok(())
        }
    }
}

/// Where the tunnel feature publishes its agents (the sync client reads them).
type AgentReports = tokio::sync::watch::Sender<Vec<postern_snapshot::sync::TunnelAgents>>;

/// Every capability of this build, on the one [`Feature`] seam. A new
/// capability is one more entry here; its request-path hooks go into the
/// reverse proxy's [`Hooks`](reverse::Hooks).
fn features(
    listeners: &ListenerArgs,
    manifests: Option<PathBuf>,
    agents: AgentReports,
    runtime: &Arc<Runtime>,
    shutdown: &CancellationToken,
) -> Result<Vec<Arc<dyn Feature>>> {
    let connections = connections(runtime);
    let caps = listeners.caps.caps();
    let request_log = Arc::new(
        reqlog::RequestLog::from_args(
            &listeners.request_log,
            listeners.tunnel.redis_url.as_deref(),
        )
        .map_err(|e| Error::Usage(e.to_string()))?,
    );
    let forward = forward::Forward::new(
        listeners.proxy.config(),
        shutdown.clone(),
        &connections,
        caps,
        request_log.clone(),
    )?;
    let mut tokens = listeners.proxy.admin_tokens().map_err(Error::AdminToken)?;
    if !tokens.configured() && manifests.is_some() {
        tokens = generated_admin_token()?;
    }
    let sso = listeners
        .proxy
        .admin_sso
        .build()
        .map_err(|e| Error::Usage(e.to_string()))?
        .map(Arc::new);
    let gate = Arc::new(postern_admin::Gate::new(tokens).with_sso(sso));
    let upstream_api = Arc::new(upstreamgate::UpstreamApi::new(
        gate.clone(),
        manifests,
        runtime.clone(),
    ));
    let tunnels = Arc::new(tunnel::Tunnels::new(
        &listeners.tunnel,
        agents,
        &connections,
        caps,
        runtime,
        request_log.clone(),
    )?);
    let oauth = oauth::Oauth::new(
        &listeners.oauth,
        listeners.tunnel.redis_url.as_deref(),
        listeners.reverse.https_redirect_port,
    )?;
    let mut hooks = reverse::Hooks::default();
    if request_log.enabled() {
        hooks
            .log
            .push(Arc::new(reqlog::LogHook(request_log.clone())));
    }
    hooks.upstream.push(tunnels.hook());
    let (endpoints, guard) = oauth.hooks();
    hooks.early.push(endpoints);
    hooks.authenticate.push(guard);
    let challenges = acme::Challenges::new(runtime.clone());
    hooks.early.push(challenges.clone());
    hooks.tls.push(challenges);
    let reverse = Arc::new(reverse::Reverse::new(
        &listeners.reverse,
        hooks,
        &connections,
        caps,
    )?);
    let admin = Arc::new(admin::Admin::new(
        admin::AdminState {
            runtime: runtime.clone(),
            gate,
            upstream_api,
            forward: forward.clone(),
            tunnels: tunnels.clone(),
            requests: request_log.clone(),
            protect_metrics: listeners.proxy.admin_protect_metrics,
            started_at: std::time::SystemTime::now(),
        },
        &connections,
    ));
    Ok(vec![admin, forward, reverse, tunnels, oauth, request_log])
}

/// Standalone without a token file: an admin token of its own, so the
/// dashboard works out of the box, kept in an owner-only file under the
/// temporary folder (reused while it exists, so a restart keeps it). The
/// log names the file, never the token.
fn generated_admin_token() -> Result<postern_admin::Tokens> {
    use std::os::unix::fs::MetadataExt;
    let path = std::env::temp_dir().join("postern-admin-token");
    let reusable = std::fs::metadata(&path).is_ok_and(|m| {
        m.is_file() && m.mode() & 0o077 == 0 && m.uid() == rustix::process::getuid().as_raw()
    });
    if !reusable {
        let mut bytes = [0u8; 24];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
        let token =
            base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes);
        files::write_private(&path, format!("{token}\n").as_bytes()).map_err(|e| {
            Error::AdminToken(postern_admin::TokenError::Read {
                path: path.clone(),
                source: e,
            })
        })?;
    }
    tracing::info!(
        file = %path.display(),
        "no --admin-token-file: the admin API and dashboard take the token in this file (admin role)"
    );
    postern_admin::Tokens::from_files(Some(&path), None).map_err(Error::AdminToken)
}

/// The process's connection budget, from the open-file limit (raised by
/// then), with its metrics registered once for every listener.
fn connections(runtime: &Runtime) -> Arc<net::Connections> {
    let limit = net::limits::fd_limit();
    let connections = net::Connections::new(limit.map_or(0, net::Connections::budget_for_fd_limit));
    tracing::info!(
        budget = connections.budget(),
        open_file_limit = limit,
        "client connections across the traffic listeners are capped"
    );
    runtime
        .metrics()
        .register_with(|registry| connections.register(registry));
    connections
}

/// Starts every feature under the supervisor, next to `source`, the task
/// that feeds the runtime snapshots.
async fn serve(
    listeners: &ListenerArgs,
    manifests: Option<PathBuf>,
    agents: AgentReports,
    runtime: Arc<Runtime>,
    shutdown: CancellationToken,
    source: (&'static str, BoxFuture<'static, Result<()>>),
) -> Result<()> {
    let features = features(listeners, manifests, agents, &runtime, &shutdown)?;
    Supervisor::new(features, listeners.addr_file.clone())
        .run(listeners, runtime, shutdown, source)
        .await
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops postern");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutting down");
    shutdown.cancel();
}
