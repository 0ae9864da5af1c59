//! ACME in `postern standalone`: the one process is the only orderer. The
//! account keys and certificates live under `--state-dir` (each file
//! written whole to a temporary name, mode 0600, then renamed, so a crash
//! never leaves half a key), and the manifest watcher folds the stored
//! certificates and the pending challenges into each compilation, exactly
//! as the operator feeds Secrets and challenges to the same compiler.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use postern_acme::{CertState, Presenter, Problem, Report, Reporter, Store};
use postern_api::ObjectKey;
use postern_compile::{AcmeRequest, Inputs, SecretData};
use postern_snapshot::AcmeChallenge;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::runtime::Runtime;

/// What the watcher and the manager share.
pub struct Local {
    issuers: BTreeSet<String>,
    state_dir: Option<PathBuf>,
    runtime: Arc<Runtime>,
    challenges: Mutex<BTreeMap<String, Vec<AcmeChallenge>>>,
    /// Bumped when the certificates or challenges change: the watcher
    /// recompiles when it differs from what it last compiled with.
    revision: watch::Sender<u64>,
    requests: watch::Sender<Vec<AcmeRequest>>,
}

/// One stored certificate: a single file so cert, key and state change together.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    #[serde(default)]
    cert_pem: String,
    #[serde(default)]
    key_pem: String,
    state: CertState,
}

/// How long a challenge may take to reach the live snapshot.
const PRESENT_TIMEOUT: Duration = Duration::from_secs(30);

impl Local {
    pub fn new(
        issuers: BTreeSet<String>,
        state_dir: Option<PathBuf>,
        runtime: Arc<Runtime>,
    ) -> Arc<Self> {
        Arc::new(Local {
            issuers,
            state_dir,
            runtime,
            challenges: Mutex::new(BTreeMap::new()),
            revision: watch::Sender::new(0),
            requests: watch::Sender::new(Vec::new()),
        })
    }

    /// The requests of the last compilation, for the manager.
    pub fn requests(&self) -> watch::Receiver<Vec<AcmeRequest>> {
        self.requests.subscribe()
    }

    pub(crate) fn revision(&self) -> u64 {
        *self.revision.borrow()
    }

    /// Adds the issuer names, stored certificates (as the Secrets the
    /// compiler looks for) and pending challenges; returns the revision
    /// they are from.
    pub(crate) fn augment(&self, inputs: &mut Inputs) -> u64 {
        let revision = self.revision();
        inputs.options.acme_issuers = self.issuers.clone();
        if let Some(dir) = &self.state_dir {
            for (key, stored) in read_all(dir) {
                if stored.cert_pem.is_empty() {
                    continue;
                }
                let data = BTreeMap::from([
                    ("tls.crt".to_string(), stored.cert_pem.into_bytes()),
                    ("tls.key".to_string(), stored.key_pem.into_bytes()),
                ]);
                inputs.secrets.entry(key).or_insert(SecretData {
                    kind: Some("kubernetes.io/tls".into()),
                    data,
                });
            }
        }
        let challenges = self.challenges.lock().unwrap_or_else(|p| p.into_inner());
        inputs.acme_challenges = challenges.values().flatten().cloned().collect();
        revision
    }

    /// Publishes what the last compilation asks for.
    pub(crate) fn compiled(&self, requests: Vec<AcmeRequest>) {
        if self.state_dir.is_none() && !requests.is_empty() {
            tracing::warn!(
                targets = requests.len(),
                "targets ask for ACME certificates but no --state-dir is set: nothing is ordered"
            );
        }
        self.requests.send_if_modified(|current| {
            let changed = *current != requests;
            *current = requests;
            changed
        });
    }

    fn bump(&self) {
        self.revision.send_modify(|r| *r += 1);
    }

    fn set_challenges(&self, request: &AcmeRequest, challenges: Option<Vec<AcmeChallenge>>) {
        let id = request_id(request);
        let mut all = self.challenges.lock().unwrap_or_else(|p| p.into_inner());
        match challenges {
            Some(c) => all.insert(id, c),
            None => all.remove(&id),
        };
        drop(all);
        self.bump();
    }

    fn live_has(&self, wanted: &[AcmeChallenge]) -> bool {
        self.runtime
            .snapshot()
            .is_some_and(|s| wanted.iter().all(|c| s.acme_challenges.contains(c)))
    }
}

fn request_id(request: &AcmeRequest) -> String {
    format!("{}/{}", request.kind, request.key)
}

impl Presenter for Local {
    fn present<'a>(
        &'a self,
        request: &'a AcmeRequest,
        challenges: Vec<AcmeChallenge>,
    ) -> BoxFuture<'a, Result<(), Problem>> {
        async move {
            self.set_challenges(request, Some(challenges.clone()));
            let deadline = tokio::time::Instant::now() + PRESENT_TIMEOUT;
            while !self.live_has(&challenges) {
                if tokio::time::Instant::now() > deadline {
                    return Err(Problem {
                        kind: "postern:notPresented".into(),
                        detail: "the challenges did not reach the live snapshot".into(),
                    });
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(())
        }
        .boxed()
    }

    fn withdraw<'a>(&'a self, request: &'a AcmeRequest) -> BoxFuture<'a, ()> {
        async move { self.set_challenges(request, None) }.boxed()
    }
}

/// Logs each status change: standalone has no status to write.
pub struct LogReporter;

impl Reporter for LogReporter {
    fn report<'a>(&'a self, request: &'a AcmeRequest, report: Report) -> BoxFuture<'a, ()> {
        match &report {
            Report::Ready { not_after, .. } => tracing::info!(
                target = %request.key, not_after = %postern_acme::rfc3339(*not_after), "certificate ready"
            ),
            Report::Pending(what) => {
                tracing::info!(target = %request.key, %what, "certificate pending")
            }
            Report::Failed { problem, retry_at } => tracing::warn!(
                target = %request.key, %problem, retry_at = %postern_acme::rfc3339(*retry_at), "certificate failed"
            ),
            Report::Dns01Required(names) => tracing::warn!(
                target = %request.key, wildcards = ?names, "wildcard hostnames need DNS-01, which is not offered; no certificate ordered"
            ),
        }
        futures::future::ready(()).boxed()
    }
}

/// The `--state-dir` store.
pub struct FileStore {
    dir: PathBuf,
    /// The watcher recompiles when a certificate lands.
    local: Arc<Local>,
}

impl FileStore {
    pub fn new(dir: PathBuf, local: Arc<Local>) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir.join("accounts"))?;
        std::fs::create_dir_all(dir.join("certificates"))?;
        Ok(FileStore { dir, local })
    }

    fn cert_path(&self, request: &AcmeRequest) -> PathBuf {
        cert_file(
            &self.dir,
            &ObjectKey::new(&request.key.namespace, &request.secret),
        )
    }
}

fn cert_file(dir: &Path, key: &ObjectKey) -> PathBuf {
    dir.join("certificates")
        .join(format!("{}_{}.json", key.namespace, key.name))
}

/// Every stored certificate, by the Secret key it stands for.
fn read_all(dir: &Path) -> Vec<(ObjectKey, Stored)> {
    let Ok(entries) = std::fs::read_dir(dir.join("certificates")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.strip_suffix(".json")?.to_string();
            let (ns, secret) = name.split_once('_')?;
            let stored: Stored = serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
            Some((ObjectKey::new(ns, secret), stored))
        })
        .collect()
}

fn read_stored(path: &Path) -> Result<Option<Stored>, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn write_stored(path: &Path, stored: &Stored) -> Result<(), String> {
    let json = serde_json::to_vec_pretty(stored).map_err(|e| e.to_string())?;
    crate::files::write_private(path, &json).map_err(|e| format!("{}: {e}", path.display()))
}

impl Store for FileStore {
    fn account<'a>(&'a self, issuer: &'a str) -> BoxFuture<'a, Result<Option<String>, String>> {
        let path = self.dir.join("accounts").join(format!("{issuer}.json"));
        let out = match std::fs::read_to_string(&path) {
            Ok(json) => Ok(Some(json)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        };
        futures::future::ready(out).boxed()
    }

    fn save_account<'a>(
        &'a self,
        issuer: &'a str,
        json: String,
    ) -> BoxFuture<'a, Result<(), String>> {
        let path = self.dir.join("accounts").join(format!("{issuer}.json"));
        let out = crate::files::write_private(&path, json.as_bytes())
            .map_err(|e| format!("{}: {e}", path.display()));
        futures::future::ready(out).boxed()
    }

    fn state<'a>(
        &'a self,
        request: &'a AcmeRequest,
    ) -> BoxFuture<'a, Result<Option<CertState>, String>> {
        let out = read_stored(&self.cert_path(request)).map(|s| s.map(|s| s.state));
        futures::future::ready(out).boxed()
    }

    fn save_issued<'a>(
        &'a self,
        request: &'a AcmeRequest,
        cert_pem: String,
        key_pem: String,
        state: CertState,
    ) -> BoxFuture<'a, Result<(), String>> {
        let stored = Stored {
            cert_pem,
            key_pem,
            state,
        };
        let out = write_stored(&self.cert_path(request), &stored);
        self.local.bump();
        futures::future::ready(out).boxed()
    }

    fn save_state<'a>(
        &'a self,
        request: &'a AcmeRequest,
        state: CertState,
    ) -> BoxFuture<'a, Result<(), String>> {
        let path = self.cert_path(request);
        let out = read_stored(&path).and_then(|old| {
            let stored = match old {
                Some(old) => Stored { state, ..old },
                None => Stored {
                    cert_pem: String::new(),
                    key_pem: String::new(),
                    state,
                },
            };
            write_stored(&path, &stored)
        });
        futures::future::ready(out).boxed()
    }
}
