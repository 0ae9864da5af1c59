//! The reverse proxy's live state: routing tables and the certificate
//! store, rebuilt once per snapshot (off the async threads) and swapped in
//! whole. A connection or request loads them once and keeps that `Arc`
//! until it ends, so a swap never changes what a request in flight sees.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use postern_snapshot::Snapshot;
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

use super::backend::Pools;
use super::certs::CertStore;
use super::router::Router;
use crate::runtime::Runtime;

/// What one snapshot compiles to.
#[derive(Default)]
pub struct Tables {
    pub router: Router,
    pub certs: CertStore,
}

/// The tables in service and what the next build reuses.
pub struct Live {
    tables: ArcSwap<Tables>,
    /// Backend clients carried across builds; only the builder locks it.
    pools: Mutex<std::collections::HashMap<super::backend::PoolKey, Arc<super::backend::Upstream>>>,
    default_cert: Option<Arc<CertifiedKey>>,
}

impl Live {
    pub fn new(default_cert: Option<Arc<CertifiedKey>>) -> Self {
        let tables = Tables {
            certs: CertStore::build(
                &Snapshot::default(),
                default_cert.clone(),
                &CertStore::default(),
            ),
            ..Tables::default()
        };
        Live {
            tables: ArcSwap::from_pointee(tables),
            pools: Mutex::new(Default::default()),
            default_cert,
        }
    }

    /// The tables in service. Keep the `Arc` for the whole request.
    pub fn load(&self) -> Arc<Tables> {
        self.tables.load_full()
    }

    /// Compiles `snapshot` and swaps it in. Blocking work (regexes, keys).
    pub fn rebuild(&self, snapshot: &Snapshot) {
        let mut kept = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        let mut pools = Pools::begin(std::mem::take(&mut *kept));
        let router = Router::build(snapshot, &mut pools);
        let previous = self.tables.load();
        let certs = CertStore::build(snapshot, self.default_cert.clone(), &previous.certs);
        *kept = pools.finish();
        self.tables.store(Arc::new(Tables { router, certs }));
        tracing::info!(version = %snapshot.version, sites = snapshot.sites.len(), "reverse proxy tables rebuilt");
    }
}

/// Rebuilds the tables on every snapshot the runtime swaps in.
pub async fn follow(runtime: Arc<Runtime>, live: Arc<Live>, shutdown: CancellationToken) {
    let mut changes = runtime.subscribe();
    loop {
        let applied = changes.borrow_and_update().clone();
        if let Some(applied) = applied {
            let live = live.clone();
            let snapshot = applied.snapshot.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || live.rebuild(&snapshot)).await {
                tracing::error!(error = %e, "rebuilding the reverse proxy tables failed");
            }
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            () = shutdown.cancelled() => return,
        }
    }
}
