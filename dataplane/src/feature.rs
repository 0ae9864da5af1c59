//! The one seam every data-plane capability plugs into.
//!
//! A capability (forward proxy, reverse proxy, admin; ACME, OAuth and
//! tunnels next) is a [`Feature`]: it names the listeners it serves,
//! registers its metrics, takes each new snapshot, and serves until
//! shutdown. The [`supervisor`](crate::supervisor) binds the listeners the
//! features ask for, feeds every feature each snapshot the runtime swaps
//! in, runs them side by side, and stops the process when one fails.
//! Adding a capability is one new implementation and one line where the
//! features are listed ([`crate::features`]); nothing else changes.

use std::sync::Arc;

use futures::future::BoxFuture;
use postern_snapshot::Snapshot;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::Result;
use crate::listeners::{Listener, Listeners};

/// A data-plane capability.
pub trait Feature: Send + Sync + 'static {
    /// Its name in logs, errors and the failure counter.
    fn name(&self) -> &'static str;

    /// The listeners it serves; each is bound once, for one feature.
    fn listeners(&self) -> &'static [Listener];

    /// Adds its metrics to the process's registry, once, before serving.
    fn register_metrics(&self, _registry: &mut Registry) {}

    /// Takes a snapshot the runtime just swapped in. Runs on a blocking
    /// thread, so it may build tables (regexes, keys) before its own swap;
    /// requests in flight keep what they loaded.
    fn apply(&self, _snapshot: &Snapshot) {}

    /// Serves on `listeners` (exactly those it named) until `shutdown`,
    /// then finishes in-flight work within its own bound and returns. An
    /// error, or a return before shutdown, stops the process.
    fn serve(
        self: Arc<Self>,
        listeners: Listeners,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<()>>;
}
