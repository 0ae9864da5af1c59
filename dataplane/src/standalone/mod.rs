//! `postern standalone`: the snapshot compiled from a folder of manifests by
//! the same `compile` the operator runs, re-compiled within a second of any
//! change.
//!
//! Watching is polling, every 250 ms: a cheap stamp (names, mtimes, lengths)
//! that must be the same on two polls in a row (so a file caught between
//! truncation and write is not applied half-empty), then a hash of the
//! contents, compiled when it differs: a change applies within ~500 ms.
//! Polling rather than inotify
//! (`notify`) because it needs no extra dependency, behaves the same on
//! every platform and filesystem (bind mounts, network filesystems), and
//! sees a ConfigMap volume's atomic `..data` symlink swap, which inotify on
//! the folder reports only as events on the hidden link. An invalid file
//! never replaces the last good snapshot: it is logged and shown as
//! `lastError` until fixed.

pub(crate) mod load;
mod oauth_keys;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::acme::local::Local;
use crate::runtime::{LastError, Outcome, Rejected, Runtime};
use crate::{Error, Result};

pub use load::{FileError, Limits, ManifestFile};
pub(crate) use load::{inputs as file_inputs, read as read_files};

/// How often the folder is looked at.
pub const POLL: Duration = Duration::from_millis(250);

/// Fails early, with a clear message, when `dir` is not a readable folder.
pub fn check_dir(dir: &Path) -> Result<PathBuf> {
    let err = |source| Error::ManifestDir {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::read_dir(dir).map_err(err)?;
    Ok(dir.to_path_buf())
}

/// Loads `dir` and applies every change until `shutdown`; with `acme`,
/// also each change of its certificates and challenges.
pub async fn run(
    dir: PathBuf,
    limits: Limits,
    runtime: Arc<Runtime>,
    acme: Option<Arc<Local>>,
    state_dir: Option<PathBuf>,
    shutdown: CancellationToken,
) {
    tracing::info!(dir = %dir.display(), "watching manifests (polling every {}ms)", POLL.as_millis());
    let mut watcher = Watcher::new(dir, runtime, limits);
    watcher.acme = acme;
    watcher.oauth_keys = oauth_keys::OauthKeys::new(state_dir);
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        // Reading and compiling are blocking work.
        watcher = match tokio::task::spawn_blocking(move || {
            watcher.poll();
            watcher
        })
        .await
        {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "the manifest watcher failed; no further changes will apply");
                return;
            }
        }
    }
}

/// Remembers what was last seen so that unchanged folders cost one stat per file.
pub struct Watcher {
    dir: PathBuf,
    runtime: Arc<Runtime>,
    limits: Limits,
    /// The stamp of the files last read.
    stamp: Option<load::Stamp>,
    /// A new stamp seen once: read only when the next poll sees it again, so
    /// a file caught between truncation and write is not applied half-empty.
    pending: Option<load::Stamp>,
    hash: Option<[u8; 32]>,
    dir_failing: bool,
    /// Certificates and challenges folded into each compilation.
    acme: Option<Arc<Local>>,
    /// The files last compiled and the ACME revision they were compiled
    /// with: a new revision recompiles them.
    files: Option<Vec<ManifestFile>>,
    acme_revision: u64,
    /// Signing keys of authorization servers that name none.
    oauth_keys: oauth_keys::OauthKeys,
}

impl Watcher {
    pub fn new(dir: PathBuf, runtime: Arc<Runtime>, limits: Limits) -> Self {
        Watcher {
            dir,
            runtime,
            limits,
            stamp: None,
            pending: None,
            hash: None,
            dir_failing: false,
            acme: None,
            files: None,
            acme_revision: 0,
            oauth_keys: oauth_keys::OauthKeys::default(),
        }
    }

    /// Looks at the folder once and applies what changed and has settled.
    pub fn poll(&mut self) {
        let acme_changed = self
            .acme
            .as_ref()
            .is_some_and(|a| a.revision() != self.acme_revision);
        if acme_changed && let Some(files) = self.files.take() {
            self.reload(&files);
            self.files = Some(files);
        }
        let stamp = match load::stamp(&self.dir) {
            Ok(stamp) => stamp,
            Err(e) => return self.dir_failed(e),
        };
        self.dir_failing = false;
        if self.stamp.as_ref() == Some(&stamp) {
            return;
        }
        if self.pending.as_ref() != Some(&stamp) {
            self.pending = Some(stamp);
            return;
        }
        self.pending = None;
        self.stamp = Some(stamp);
        match load::read(&self.dir, self.limits) {
            Ok(files) => {
                let hash = load::content_hash(&files);
                if self.hash != Some(hash) {
                    self.hash = Some(hash);
                    self.reload(&files);
                    self.files = Some(files);
                }
            }
            Err(e) => self.fail(e),
        }
    }

    fn dir_failed(&mut self, e: std::io::Error) {
        self.stamp = None;
        self.pending = None;
        if !self.dir_failing {
            self.dir_failing = true;
            self.fail(FileError {
                file: self.dir.display().to_string(),
                message: e.to_string(),
            });
        }
    }

    fn reload(&mut self, files: &[ManifestFile]) {
        let mut inputs = match load::inputs(files, self.limits) {
            Ok(inputs) => inputs,
            Err(e) => return self.fail(e),
        };
        if let Some(acme) = &self.acme {
            self.acme_revision = acme.augment(&mut inputs);
        }
        self.oauth_keys.augment(&mut inputs);
        let output = postern_compile::compile(&inputs);
        if let Some(acme) = &self.acme {
            acme.compiled(output.acme.clone());
        }
        let rejected = rejected(&output.verdicts);
        self.runtime.set_rejected(rejected);
        let version = output.snapshot.version.clone();
        match self.runtime.apply(output.snapshot) {
            Ok(Outcome::Swapped) => {
                tracing::info!(%version, files = files.len(), "applied snapshot from manifests");
            }
            Ok(Outcome::Unchanged) => {
                tracing::info!(%version, "manifests changed; the snapshot did not");
            }
            // A compiler bug: the runtime has recorded it, the last good one serves.
            Err(e) => tracing::error!(%version, error = %e, "compiled snapshot is invalid"),
        }
    }

    fn fail(&mut self, e: FileError) {
        tracing::error!(file = %e.file, error = %e.message, serving = ?self.runtime.version(), "invalid manifests; keeping the last good snapshot");
        // Forget the hash: the same content must be looked at again once the
        // file is readable (a permission fix changes no content).
        self.hash = None;
        self.runtime.set_error(Some(LastError {
            file: Some(e.file),
            version: None,
            message: e.message,
        }));
    }
}

/// Logs and lists the objects compilation refused.
fn rejected(verdicts: &[postern_compile::Verdict]) -> Vec<Rejected> {
    verdicts
        .iter()
        .filter(|v| !v.accepted())
        .map(|v| {
            tracing::warn!(
                kind = %v.kind,
                namespace = %v.key.namespace,
                name = %v.key.name,
                reason = %v.reason,
                message = %v.message,
                "object rejected"
            );
            Rejected {
                kind: v.kind.to_string(),
                namespace: v.key.namespace.clone(),
                name: v.key.name.clone(),
                reason: v.reason.to_string(),
                message: v.message.clone(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Source;

    const OAUTH: &str = "apiVersion: postern.io/v1alpha1\nkind: OAuthClient\nmetadata: {name: c}\n\
                         spec: {redirectUris: [\"https://a.example.com/cb\"], grantTypes: [authorization_code]}\n";

    fn folder(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("postern-watch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        dir
    }

    #[test]
    fn a_change_applies_once_settled_and_errors_name_the_file() {
        let dir = folder("settle");
        std::fs::write(dir.join("a.yaml"), OAUTH).expect("write");
        let rt = Runtime::new(Source::Manifests);
        let mut w = Watcher::new(dir.clone(), rt.clone(), Limits::NONE);
        w.poll();
        assert_eq!(rt.version(), None, "first sight only marks the change");
        w.poll();
        let v1 = rt.version().expect("applied on the second poll");
        w.poll();
        assert_eq!(rt.metrics().applies.get(), 1, "no change, no work");

        std::fs::write(dir.join("b.yaml"), "kind: [").expect("write");
        w.poll();
        w.poll();
        let err = rt.report().last_error.expect("error");
        assert_eq!(err.file.as_deref(), Some("b.yaml"));
        assert_eq!(rt.version(), Some(v1.clone()));

        std::fs::remove_file(dir.join("b.yaml")).expect("rm");
        w.poll();
        w.poll();
        assert_eq!(rt.report().last_error, None);
        assert_eq!(rt.version(), Some(v1));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
