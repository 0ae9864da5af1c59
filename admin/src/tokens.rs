//! Bearer tokens and their roles, read from files.
//!
//! A token file is read at start-up (a missing or blank file is an error
//! then, so a typo does not leave the API open or shut) and again whenever
//! its modification time or length changes, so a rotated Secret (kubelet
//! swaps the mounted file) takes effect without a restart. A file that
//! becomes unreadable or blank later keeps its last good token and says so
//! in the log: an operator mid-rotation does not lock themselves out.
//!
//! Only SHA-256 digests are kept, compared in constant time, so neither the
//! token's bytes nor its length leak through timing.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a caller may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Every read endpoint.
    Read,
    /// Reads and actions (cut a user, disconnect an agent, the `/upstream` API).
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the token file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the token file {0} is empty")]
    Empty(PathBuf),
}

/// One token file and the digest of its last good content.
struct TokenFile {
    path: PathBuf,
    role: Role,
    state: Mutex<Loaded>,
}

/// A file's modification time and length: a change means "read again".
type Stamp = (SystemTime, u64);

#[derive(Clone)]
struct Loaded {
    digest: [u8; 32],
    stamp: Option<Stamp>,
}

/// The admin API's tokens. Without any file every authenticated call is
/// refused (the API is closed, never open).
#[derive(Default)]
pub struct Tokens {
    files: Vec<TokenFile>,
}

impl std::fmt::Debug for Tokens {
    /// Which files give which role; never a digest.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.files
                    .iter()
                    .map(|t| (t.role, t.path.display().to_string())),
            )
            .finish()
    }
}

impl Tokens {
    /// Reads `admin` (role admin) and `read` (role read) once; either may be absent.
    pub fn from_files(admin: Option<&Path>, read: Option<&Path>) -> Result<Self, TokenError> {
        let mut files = Vec::new();
        for (path, role) in [(admin, Role::Admin), (read, Role::Read)] {
            let Some(path) = path else { continue };
            let (digest, stamp) = load(path)?;
            files.push(TokenFile {
                path: path.to_path_buf(),
                role,
                state: Mutex::new(Loaded { digest, stamp }),
            });
        }
        Ok(Tokens { files })
    }

    /// Tokens given as strings (tests, and callers that read them elsewhere).
    pub fn fixed(admin: Option<&str>, read: Option<&str>) -> Self {
        let files = [(admin, Role::Admin), (read, Role::Read)]
            .into_iter()
            .filter_map(|(token, role)| {
                let token = token?.trim();
                (!token.is_empty()).then(|| TokenFile {
                    path: PathBuf::new(),
                    role,
                    state: Mutex::new(Loaded {
                        digest: digest(token.as_bytes()),
                        stamp: None,
                    }),
                })
            })
            .collect();
        Tokens { files }
    }

    /// Whether any token is configured.
    pub fn configured(&self) -> bool {
        !self.files.is_empty()
    }

    /// Whether a token of `role` is configured.
    pub fn has(&self, role: Role) -> bool {
        self.files.iter().any(|f| f.role == role)
    }

    /// The role `presented` grants, if any. Every file is compared, so the
    /// time taken does not say which one matched.
    pub fn role_of(&self, presented: &str) -> Option<Role> {
        let presented = presented.trim();
        if presented.is_empty() {
            return None;
        }
        let presented = digest(presented.as_bytes());
        let mut granted = None;
        for file in &self.files {
            let current = file.current();
            if bool::from(current.ct_eq(&presented)) {
                granted = granted.max(Some(file.role));
            }
        }
        granted
    }
}

impl TokenFile {
    /// The digest in force, re-read when the file changed.
    fn current(&self) -> [u8; 32] {
        let mut state = match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        if state.stamp.is_none() {
            return state.digest;
        }
        let now = stamp(&self.path);
        if now.is_some() && now != state.stamp {
            match load(&self.path) {
                Ok((digest, stamp)) => {
                    if digest != state.digest {
                        tracing::info!(path = %self.path.display(), role = self.role.as_str(), "admin token rotated");
                    }
                    *state = Loaded { digest, stamp };
                }
                Err(error) => {
                    tracing::warn!(%error, "admin token file changed but cannot be used; the previous token stays");
                    state.stamp = now;
                }
            }
        }
        state.digest
    }
}

fn load(path: &Path) -> Result<([u8; 32], Option<Stamp>), TokenError> {
    let stamp = stamp(path);
    let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(TokenError::Empty(path.to_path_buf()));
    }
    // A stamp of None would mean "never re-read"; a file whose metadata
    // cannot be read is re-checked on every call instead.
    Ok((
        digest(token.as_bytes()),
        Some(stamp.unwrap_or((SystemTime::UNIX_EPOCH, 0))),
    ))
}

fn stamp(path: &Path) -> Option<Stamp> {
    // Metadata follows symlinks: kubelet rotates a Secret volume by
    // swapping the `..data` link, which changes the target's stamp.
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_come_from_the_file_that_matches() {
        let tokens = Tokens::fixed(Some("adm"), Some("rd"));
        assert_eq!(tokens.role_of("adm"), Some(Role::Admin));
        assert_eq!(tokens.role_of(" rd\n"), Some(Role::Read));
        assert_eq!(tokens.role_of("nope"), None);
        assert_eq!(tokens.role_of(""), None);
        assert_eq!(Tokens::default().role_of("adm"), None);
    }

    #[test]
    fn a_rotated_file_takes_effect_and_a_blanked_one_keeps_the_last_token() {
        let dir = std::env::temp_dir().join(format!("postern-admin-tokens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("admin");
        std::fs::write(&path, "first\n").expect("write");
        let tokens = Tokens::from_files(Some(&path), None).expect("tokens");
        assert_eq!(tokens.role_of("first"), Some(Role::Admin));

        // A different length is a different stamp even within one mtime tick.
        std::fs::write(&path, "second-token\n").expect("write");
        assert_eq!(tokens.role_of("second-token"), Some(Role::Admin));
        assert_eq!(tokens.role_of("first"), None);

        std::fs::write(&path, "\n").expect("write");
        assert_eq!(tokens.role_of("second-token"), Some(Role::Admin));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_missing_or_blank_file_is_refused_at_start() {
        let missing = Path::new("/nonexistent/postern-token");
        assert!(matches!(
            Tokens::from_files(Some(missing), None),
            Err(TokenError::Read { .. })
        ));
        let dir = std::env::temp_dir().join(format!("postern-admin-blank-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("blank");
        std::fs::write(&path, "  \n").expect("write");
        assert!(matches!(
            Tokens::from_files(None, Some(&path)),
            Err(TokenError::Empty(_))
        ));
        std::fs::remove_dir_all(&dir).ok();
    }
}
