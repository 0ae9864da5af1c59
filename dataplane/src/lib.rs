//! Postern's data plane: everything the `postern` binary runs.
//!
//! The flow is one-way: a [`Snapshot`](postern_snapshot::Snapshot) arrives,
//! either pushed by the operator ([`sync`], `postern dataplane`) or compiled
//! from a folder of manifests ([`standalone`], `postern standalone`), and is
//! swapped into the [`runtime`] whole. Traffic features (`forward/`,
//! `reverse/`, `tunnel/`, `oauth/`, to come) only read the runtime; the
//! [`admin`] server reports on it. Nothing here may depend on kube or
//! k8s-openapi (`tests/no_kube.rs` checks).

pub mod admin;
pub mod cli;
mod error;
pub mod forward;
pub mod listeners;
pub mod reverse;
pub mod runtime;
pub mod standalone;
pub mod sync;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

pub use error::{Error, Result};

use crate::cli::{Command, ListenerArgs};
use crate::runtime::{Runtime, Source};

/// Runs a command until SIGINT or SIGTERM.
pub async fn run(command: Command) -> Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    run_until(command, shutdown).await
}

/// Runs a command until `shutdown` is cancelled or it fails.
pub async fn run_until(command: Command, shutdown: CancellationToken) -> Result<()> {
    match command {
        Command::Dataplane(args) => {
            let config = sync::SyncConfig::from_args(&args)?;
            let runtime = Runtime::new(Source::Operator);
            serve(
                &args.listeners,
                None,
                runtime.clone(),
                shutdown.clone(),
                async move {
                    sync::run(config, runtime, shutdown).await;
                    Ok(())
                },
            )
            .await
        }
        Command::Standalone(args) => {
            let runtime = Runtime::new(Source::Manifests);
            let dir = standalone::check_dir(&args.manifests)?;
            serve(
                &args.listeners,
                Some(dir.clone()),
                runtime.clone(),
                shutdown.clone(),
                async move {
                    standalone::run(dir, runtime, shutdown).await;
                    Ok(())
                },
            )
            .await
        }
        Command::Agent(_) => Err(Error::NotImplemented(
            "`postern agent` (the tunnel client) is not implemented yet",
        )),
    }
}

/// Binds every listener (failing fast on a busy port), then runs the admin
/// server and the forward proxy next to `driver`, the task that feeds the
/// runtime snapshots.
async fn serve(
    listeners: &ListenerArgs,
    manifests: Option<std::path::PathBuf>,
    runtime: Arc<Runtime>,
    shutdown: CancellationToken,
    driver: impl Future<Output = Result<()>> + Send + 'static,
) -> Result<()> {
    let forward = forward::Forward::new(listeners.proxy.config(), shutdown.clone())?;
    let token = listeners.proxy.admin_token()?;
    let upstream_api = Arc::new(forward::compat::UpstreamApi::new(
        token,
        manifests,
        forward.clone(),
    ));
    runtime
        .metrics()
        .register_with(|r| forward.metrics().register(r));
    let reverse = reverse::Reverse::new(&listeners.reverse)?;
    runtime
        .metrics()
        .register_with(|r| reverse.metrics().register(r));
    let bound = listeners::bind(listeners).await?;
    if let Some(path) = &listeners.addr_file {
        bound.write_addr_file(path)?;
    }
    let follow = tokio::spawn(forward.clone().follow(runtime.subscribe()));
    let proxy = tokio::spawn(forward.clone().serve_http(bound.proxy));
    let socks = tokio::spawn(forward.serve_socks(bound.socks));
    let reverse =
        tokio::spawn(reverse.serve(bound.http, bound.https, runtime.clone(), shutdown.clone()));
    let admin = tokio::spawn(admin::serve(
        bound.admin,
        runtime,
        upstream_api,
        shutdown.clone(),
    ));
    let driver = tokio::spawn(driver);
    let (admin, driver, follow, proxy, socks, reverse) =
        tokio::join!(admin, driver, follow, proxy, socks, reverse);
    for task in [follow, proxy, socks] {
        task.map_err(Error::Task)?;
    }
    reverse.map_err(Error::Task)??;
    admin.map_err(Error::Task)??;
    driver.map_err(Error::Task)?
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
