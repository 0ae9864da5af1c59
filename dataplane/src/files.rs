//! Files the data plane keeps for itself (certificates, signing keys, the
//! last snapshot) hold secrets and must never be seen half-written.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` whole: a 0600 temporary file, synced, renamed.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
