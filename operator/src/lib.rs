//! The Postern operator: watches resources, compiles them into versioned
//! snapshots, pushes every snapshot to the data planes, and writes each
//! object's `Accepted` and `Programmed` conditions.
//!
//! ```text
//! watch ──► index ──► publish (compile) ──► sync_server ──► data planes
//!                         │                     │ acks / nacks
//!                         └──► status ◄── fleet ◄┘      (leader only, via lease)
//! ```
//!
//! # How the push stream is protected and authenticated, and why
//!
//! Data planes connect to the operator (`--sync-addr`), never the reverse,
//! so the operator needs no knowledge of where data planes run. Snapshots
//! carry TLS private keys, proxy credential hashes and tunnel verification
//! keys, so anyone who can read the stream, or pose as the operator, can
//! impersonate sites. Two mechanisms guard it, each against a different
//! attacker:
//!
//! - **TLS protects the stream and authenticates the operator.** With
//!   `--sync-tls-cert` and `--sync-tls-key` (PEM) every sync connection is
//!   a TLS 1.2/1.3 session (rustls, ring) before any frame is exchanged, so
//!   neither the token nor the snapshots cross the network in the clear.
//!   Data planes are given the CA to trust (`postern dataplane --sync-ca`)
//!   and verify the operator's certificate against it alone, so a rogue
//!   service cannot feed them a snapshot or collect their token. The files
//!   are re-read when they change (checked on each accept), so a rotated
//!   Secret applies to new connections without a restart; a pair that does
//!   not load is logged and the previous one keeps serving. Without the
//!   flags the stream is plain TCP, fit only for loopback or a trusted
//!   network, and the operator warns at start-up.
//! - **The token authenticates the data plane.** TLS here is server-side
//!   only: it says nothing about who connects. The first frame a data
//!   plane sends is a `Hello` carrying a shared token; the operator compares
//!   it with its own in constant time (both sides hashed with SHA-256, then
//!   compared with `subtle`, so neither the token's bytes nor its length
//!   leak through timing) and answers `Refused` and closes, or `Welcome` and
//!   the current snapshot. The token comes from one Secret mounted into both
//!   Deployments (`--sync-token-file`), so rotating it is a Secret update and
//!   a rollout. This is the fallback for standalone clusters and older data
//!   planes (`--sync-auth token`, the default outside the chart).
//! - **Or each data plane proves itself with its own ServiceAccount token**
//!   (`--sync-auth serviceaccount`, the chart's default): a projected token
//!   for the audience `postern-sync` that kubelet refreshes and the data
//!   plane re-reads on every connection, carried in the same hello field.
//!   The operator verifies it with a `TokenReview`, requires the
//!   ServiceAccount to be one of `--sync-allowed-serviceaccount`, and takes
//!   the data plane's id from the token (its pod, else the object it is
//!   bound to), refusing a hello that claims another. Each connection is
//!   reviewed again every `--sync-review-secs` and cut when the review
//!   fails, so deleting one pod (or the Secret its token is bound to)
//!   revokes that data plane alone. Positive reviews are cached for ten
//!   seconds to bound the API server's load across reconnects. Mutual TLS
//!   with per-pod certificates would need a CA issuing to pods; the API
//!   server already issues and revokes these tokens.
//!
//! Certificates: the Helm chart generates a CA and a serving certificate
//! for the operator's Service names (kept across upgrades in one Secret),
//! or takes an existing Secret with `tls.crt`, `tls.key` and `ca.crt`; the
//! operator mounts the pair, the data planes only `ca.crt`. With
//! `--admin-tls-cert` and `--admin-tls-key` the admin port serves HTTPS
//! (the chart uses the same pair); a NetworkPolicy on the sync port remains
//! good practice.
//!
//! Every replica compiles and serves snapshots, so data planes may connect
//! to any of them; only the replica holding the Lease writes status. It
//! counts every data plane in the fleet, not only its own: each replica
//! writes a Lease per data plane connected to it with what that data plane
//! acked, and every replica watches them ([`fleet`]).

pub mod acme;
mod admin;
pub mod changes;
mod compat;
mod config;
mod error;
pub mod fleet;
pub mod index;
pub mod lease;
pub mod metrics;
mod oauth_keys;
pub mod publish;
pub mod status;
pub mod sync_server;
pub mod sync_tls;
#[cfg(test)]
mod test_pki;
mod token;
mod watch;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use tokio::net::TcpListener;
use tokio::sync::watch as channel;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::{Args, Config, LeaseTiming, SyncAuth};
pub use error::{Error, Result};
pub use sync_tls::SyncTlsFiles;
pub use token::SyncToken;

use crate::admin::Admin;
use crate::compat::UpstreamApi;
use crate::fleet::{Fleet, FleetView, LeaseWriter, ViewWatcher};
use crate::index::Index;
use crate::lease::Elector;
use crate::metrics::Metrics;
use crate::status::StatusWriter;
use crate::sync_server::SyncServer;
use crate::sync_tls::SyncTls;
use crate::watch::Watches;

/// How long shutdown waits for tasks (the lease release among them).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Runs the operator with the usual kube client configuration (in-cluster,
/// or `KUBECONFIG`) until SIGTERM or ctrl-c.
pub async fn run(config: Config) -> Result<()> {
    let client = Client::try_default().await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(on_signal(shutdown.clone()));
    run_with(config, client, shutdown).await
}

/// Runs the operator with a given client until `shutdown` is cancelled.
pub async fn run_with(config: Config, client: Client, shutdown: CancellationToken) -> Result<()> {
    let sync_tls = match &config.sync_tls {
        Some(files) => Some(Arc::new(SyncTls::load(files.clone())?)),
        None => None,
    };
    let admin_tls = match &config.admin_tls {
        Some(files) => Some(Arc::new(SyncTls::load(files.clone())?)),
        None => None,
    };
    let sync_listener = bind(config.sync_addr).await?;
    let admin_listener = bind(config.admin_addr).await?;
    let sync_addr = sync_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    tracing::info!(%sync_addr, %admin_addr, id = %config.operator_id, namespace = ?config.namespace, tls = sync_tls.is_some(), admin_tls = admin_tls.is_some(), "operator listening");
    if sync_tls.is_none() {
        tracing::warn!(%sync_addr, "the sync stream is unencrypted: snapshots (with TLS keys and credentials) cross the network in the clear; give --sync-tls-cert and --sync-tls-key");
    }
    if let Some(path) = &config.addr_file {
        write_addr_file(path, sync_addr, admin_addr)?;
    }

    let metrics = Arc::new(Metrics::default());
    if config.name_policy.is_none() {
        tracing::warn!(
            "no --name-policy: any namespace may claim any hostname and proxy user name (first come, first served; lost claims are never taken over)"
        );
    }
    let options = postern_compile::Options {
        cluster_domain: config.cluster_domain.clone(),
        acme_issuers: config.acme.names(),
        name_policy: config.name_policy.clone().unwrap_or_default(),
    };
    let index = Arc::new(Mutex::new(Index::new(options)));
    let changed = Arc::new(changes::Changes::default());
    let (published_tx, latest) = channel::channel(None);
    let fleet = Arc::new(Fleet::default());
    let view = Arc::new(FleetView::default());
    let (elector, leader) = Elector::new(
        client.clone(),
        &config.lease_namespace,
        config.operator_id.clone(),
        config.lease,
        metrics.clone(),
    );

    let mut tasks = JoinSet::new();
    Watches {
        client: client.clone(),
        namespace: config.namespace.clone(),
        index: index.clone(),
        changed: changed.clone(),
        shutdown: shutdown.clone(),
    }
    .spawn(&mut tasks);
    tasks.spawn(publish::rebuild_loop(
        index.clone(),
        changed,
        config.debounce,
        published_tx,
        metrics.clone(),
        shutdown.clone(),
    ));
    let auth = sync_server::auth::Authenticator::new(
        config.sync_auth.token.clone(),
        config.sync_auth.serviceaccounts.clone(),
        client.clone(),
    );
    let sync = SyncServer {
        auth: Arc::new(auth),
        operator_id: config.operator_id.clone(),
        latest: latest.clone(),
        fleet: fleet.clone(),
        metrics: metrics.clone(),
        tls: sync_tls,
    };
    tasks.spawn(sync.serve(sync_listener, shutdown.clone()));
    let gate = Arc::new(
        postern_admin::Gate::new(config.admin_tokens.clone()).with_sso(config.admin_sso.clone()),
    );
    let upstream_api = UpstreamApi::new(
        gate.clone(),
        client.clone(),
        config.upstream_api_namespace.clone(),
        config.namespace.clone(),
        index.clone(),
    );
    let admin = Admin {
        metrics: metrics.clone(),
        latest: latest.clone(),
        fleet: fleet.clone(),
        leader: leader.clone(),
        upstream_api: Arc::new(upstream_api),
        gate,
        protect_metrics: config.admin_protect_metrics,
        started_at: std::time::SystemTime::now(),
        tls: admin_tls,
    };
    tasks.spawn(admin.serve(admin_listener, shutdown.clone()));
    tasks.spawn(elector.run(shutdown.clone()));
    let leases: Api<Lease> = Api::namespaced(client.clone(), &config.lease_namespace);
    let lease_writer = LeaseWriter {
        api: leases.clone(),
        fleet: fleet.clone(),
        replica: config.operator_id.clone(),
        timing: config.lease,
    };
    tasks.spawn(lease_writer.run(shutdown.clone()));
    let view_watcher = ViewWatcher {
        api: leases,
        view: view.clone(),
        leader: leader.clone(),
        duration: config.lease.duration,
    };
    tasks.spawn(view_watcher.run(shutdown.clone()));
    let board = Arc::new(acme::Board::default());
    let ordering = acme::Acme {
        client: client.clone(),
        config: config.acme.clone(),
        lease_namespace: config.lease_namespace.clone(),
        index: index.clone(),
        latest: latest.clone(),
        fleet: view.clone(),
        leader: leader.clone(),
        board: board.clone(),
        metrics: metrics.acme.clone(),
        operator_id: config.operator_id.clone(),
    };
    tasks.spawn(ordering.run(shutdown.clone()));
    let keys = oauth_keys::OauthKeys {
        client: client.clone(),
        index: index.clone(),
        leader: leader.clone(),
    };
    tasks.spawn(keys.run(shutdown.clone()));
    let writer = StatusWriter {
        reporter: kube::runtime::events::Reporter {
            controller: "postern-operator".into(),
            instance: Some(config.operator_id.clone()),
        },
        client,
        index,
        latest,
        fleet: view,
        leader,
        metrics,
        board,
    };
    tasks.spawn(writer.run(shutdown.clone()));

    shutdown.cancelled().await;
    tracing::info!("shutting down");
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while let Some(joined) = tasks.join_next().await {
            if let Err(error) = joined {
                tracing::warn!(%error, "task ended badly");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("some tasks did not stop in time");
    }
    Ok(())
}

async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

/// Written whole and renamed into place, so a reader never sees half a
/// file; a wildcard bind is written as loopback, an address one can dial.
fn write_addr_file(path: &Path, sync: SocketAddr, admin: SocketAddr) -> Result<()> {
    let body = serde_json::json!({
        "sync": connectable(sync).to_string(),
        "admin": connectable(admin).to_string(),
    });
    let tmp = path.with_extension("tmp");
    let write_err = |source| Error::WriteFile {
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(&tmp, body.to_string()).map_err(write_err)?;
    std::fs::rename(&tmp, path).map_err(write_err)
}

fn connectable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

async fn on_signal(shutdown: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "no SIGTERM handler");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    shutdown.cancel();
}
