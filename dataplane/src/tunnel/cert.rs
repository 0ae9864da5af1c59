//! The agent listener's certificate, read from `--tunnel-cert` and
//! `--tunnel-key` and read again when either file changes (a mounted
//! Secret is replaced in place), checked at most once per [`CHECK`]. A
//! pair that no longer parses is logged and the last good one kept.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::ConfigError;
use crate::reverse::certified_key;

const CHECK: Duration = Duration::from_secs(1);

pub struct FileCert {
    cert: PathBuf,
    key: PathBuf,
    state: Mutex<Loaded>,
}

struct Loaded {
    key: Arc<CertifiedKey>,
    stamps: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
}

impl std::fmt::Debug for FileCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileCert")
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

fn modified(path: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl FileCert {
    /// Reads the pair once; fails when it does not parse.
    pub fn load(cert: PathBuf, key: PathBuf) -> Result<FileCert, ConfigError> {
        let stamps = (modified(&cert), modified(&key));
        let loaded = read(&cert, &key)?;
        Ok(FileCert {
            cert,
            key,
            state: Mutex::new(Loaded {
                key: Arc::new(loaded),
                stamps,
                checked: Instant::now(),
            }),
        })
    }

    fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.checked.elapsed() >= CHECK {
            state.checked = Instant::now();
            let stamps = (modified(&self.cert), modified(&self.key));
            if stamps != state.stamps {
                match read(&self.cert, &self.key) {
                    Ok(key) => {
                        tracing::info!(cert = %self.cert.display(), "tunnel certificate reloaded");
                        state.key = Arc::new(key);
                        state.stamps = stamps;
                    }
                    // A half-written pair: keep the old one and look again.
                    Err(e) => tracing::warn!(error = %e, "tunnel certificate not reloaded"),
                }
            }
        }
        state.key.clone()
    }
}

fn read(cert: &PathBuf, key: &PathBuf) -> Result<CertifiedKey, ConfigError> {
    let bytes = |path: &PathBuf| {
        std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })
    };
    certified_key(&bytes(cert)?, &bytes(key)?).map_err(|e| ConfigError::Pem(e.to_string()))
}

impl ResolvesServerCert for FileCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}
