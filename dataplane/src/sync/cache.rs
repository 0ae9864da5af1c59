//! The last snapshot this data plane applied, kept on disk (`--state-dir`)
//! so that a data plane that starts while the operator is unreachable
//! serves what it served before instead of nothing.
//!
//! The file is written whole and renamed into place (a reader never sees
//! half of it), readable by the owner only (it holds TLS keys and
//! credentials), in a directory only the owner may enter. On load it must
//! parse, validate and hash to its own version; anything else is ignored
//! with a warning. A snapshot from the operator replaces it as soon as the
//! sync stream delivers one.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use postern_snapshot::Snapshot;

use crate::runtime::Runtime;

const FILE: &str = "last-snapshot.json";

pub struct SnapshotCache {
    path: PathBuf,
}

impl SnapshotCache {
    /// The cache in `dir`, created (mode 0700) if missing.
    pub fn new(dir: &Path) -> std::io::Result<SnapshotCache> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        Ok(SnapshotCache {
            path: dir.join(FILE),
        })
    }

    /// The kept snapshot, if there is one that checks out.
    pub fn load(&self) -> Option<Snapshot> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(file = %self.path.display(), error = %e, "cannot read the kept snapshot");
                return None;
            }
        };
        let snapshot: Snapshot = match serde_json::from_slice(&bytes) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(file = %self.path.display(), error = %e, "the kept snapshot does not parse; ignored");
                return None;
            }
        };
        if snapshot.version != snapshot.content_hash() {
            tracing::warn!(file = %self.path.display(), "the kept snapshot does not hash to its version (changed on disk?); ignored");
            return None;
        }
        if let Err(e) = snapshot.validate() {
            tracing::warn!(file = %self.path.display(), error = %e, "the kept snapshot is not valid for this build; ignored");
            return None;
        }
        Some(snapshot)
    }

    /// Keeps `snapshot`, replacing the previous one atomically.
    pub fn store(&self, snapshot: &Snapshot) -> std::io::Result<()> {
        let bytes = snapshot.to_json().map_err(std::io::Error::other)?;
        crate::files::write_private(&self.path, &bytes)
    }
}

/// Applies the kept snapshot (if any) to `runtime`, then keeps every
/// snapshot the runtime swaps in until the process ends.
pub async fn keep(cache: Arc<SnapshotCache>, runtime: Arc<Runtime>) {
    let mut applied = runtime.subscribe();
    if runtime.current().is_none()
        && let Some(snapshot) = cache.load()
    {
        let version = snapshot.version.clone();
        match runtime.apply(snapshot) {
            Ok(_) => {
                tracing::info!(%version, "serving the last snapshot kept on disk until the operator sends one")
            }
            Err(e) => tracing::warn!(%version, error = %e, "the kept snapshot was refused"),
        }
    }
    loop {
        let current = applied.borrow_and_update().clone();
        if let Some(current) = current {
            let cache = cache.clone();
            let snapshot = current.snapshot.clone();
            let stored = tokio::task::spawn_blocking(move || cache.store(&snapshot)).await;
            match stored {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot keep the snapshot on disk"),
                Err(e) => tracing::warn!(error = %e, "keeping the snapshot failed"),
            }
        }
        if applied.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_snapshot::Site;

    fn snapshot() -> Snapshot {
        Snapshot {
            sites: vec![Site::new(
                "default/web",
                &["web.example.com"],
                "http://127.0.0.1:8080",
            )],
            ..Snapshot::default()
        }
        .seal()
    }

    fn dir(label: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("postern-cache-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_kept_snapshot_comes_back_and_is_private() {
        let d = dir("round");
        let cache = SnapshotCache::new(&d).expect("cache");
        assert!(cache.load().is_none());
        let s = snapshot();
        cache.store(&s).expect("stored");
        assert_eq!(cache.load(), Some(s));
        let mode = |p: &Path| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
        };
        assert_eq!(mode(&d.join(FILE)), 0o600);
        assert_eq!(mode(&d), 0o700);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_changed_or_broken_file_is_ignored() {
        let d = dir("tamper");
        let cache = SnapshotCache::new(&d).expect("cache");
        let s = snapshot();
        cache.store(&s).expect("stored");
        let text = std::fs::read_to_string(d.join(FILE)).expect("read");
        let tampered = text.replace("127.0.0.1:8080", "127.0.0.1:9999");
        assert_ne!(text, tampered);
        std::fs::write(d.join(FILE), tampered).expect("write");
        assert!(
            cache.load().is_none(),
            "a snapshot changed on disk no longer hashes to its version"
        );
        std::fs::write(d.join(FILE), "{not json").expect("write");
        assert!(cache.load().is_none());
        let _ = std::fs::remove_dir_all(&d);
    }
}
