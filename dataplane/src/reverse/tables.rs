//! The reverse proxy's live state: routing tables and the certificate
//! store, rebuilt once per snapshot (off the async threads) and swapped in
//! whole. A connection or request loads them once and keeps that `Arc`
//! until it ends, so a swap never changes what a request in flight sees.
//! The https listener's certificate resolver reads them here too.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use postern_snapshot::Snapshot;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::backend::{BackendClient, PoolKey, Pools};
use super::certs::CertStore;
use super::phases::TlsHook;
use super::router::Router;

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
    pools: Mutex<std::collections::HashMap<PoolKey, Arc<BackendClient>>>,
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

/// rustls' view of the live store: each handshake asks the TLS hooks
/// (ACME TLS-ALPN-01), then reads the store in service when it starts.
pub struct LiveResolver {
    pub live: Arc<Live>,
    pub hooks: Vec<Arc<dyn TlsHook>>,
}

impl std::fmt::Debug for LiveResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiveResolver")
    }
}

impl ResolvesServerCert for LiveResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(key) = self.hooks.iter().find_map(|h| h.resolve(&hello)) {
            return Some(key);
        }
        self.live.load().certs.resolve(hello.server_name())
    }
}
