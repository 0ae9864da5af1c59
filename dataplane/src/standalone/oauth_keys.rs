//! Signing keys for authorization servers that name no Secret of their
//! own, in standalone mode: generated once (ES256) and folded into every
//! compilation as the Secret `<target>-oauth-keys` the compiler looks for.
//! With `--state-dir` they are kept there (0600, written atomically), so
//! tokens survive a restart; without it they live as long as the process,
//! and the log says so.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use postern_api::ObjectKey;
use postern_compile::{Inputs, SecretData, signing_keys_secret_name};

#[derive(Default)]
pub struct OauthKeys {
    state_dir: Option<PathBuf>,
    /// Generated keys by target, when there is no state directory.
    generated: Mutex<BTreeMap<ObjectKey, String>>,
}

impl OauthKeys {
    pub fn new(state_dir: Option<PathBuf>) -> Self {
        OauthKeys {
            state_dir,
            generated: Mutex::default(),
        }
    }

    /// Adds the generated key Secret of every authorization server that
    /// needs one and has none in the manifests.
    pub fn augment(&self, inputs: &mut Inputs) {
        let wanting: Vec<ObjectKey> = inputs
            .proxy_targets
            .iter()
            .filter(|t| {
                t.spec
                    .authorization_server
                    .as_ref()
                    .is_some_and(|s| s.signing_keys_secret_ref.is_none())
            })
            .map(|t| ObjectKey::new(t.namespace(), signing_keys_secret_name(&t.meta.name)))
            .filter(|key| !inputs.secrets.contains_key(key))
            .collect();
        for key in wanting {
            let Some(pem) = self.key_for(&key) else {
                continue;
            };
            let data = BTreeMap::from([("generated.pem".to_string(), pem.into_bytes())]);
            inputs.secrets.insert(key, SecretData { kind: None, data });
        }
    }

    fn key_for(&self, key: &ObjectKey) -> Option<String> {
        let mut generated = self.generated.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pem) = generated.get(key) {
            return Some(pem.clone());
        }
        let file = self.state_dir.as_ref().map(|d| {
            d.join("oauth-keys")
                .join(format!("{}_{}.pem", key.namespace, key.name))
        });
        if let Some(pem) = file.as_ref().and_then(|f| std::fs::read_to_string(f).ok()) {
            generated.insert(key.clone(), pem.clone());
            return Some(pem);
        }
        let pem = match postern_oauth::keys::generate_es256_pem() {
            Ok(pem) => pem,
            Err(e) => {
                tracing::error!(secret = %key, error = %e, "cannot generate an OAuth signing key");
                return None;
            }
        };
        match &file {
            Some(file) => match write_key(file, &pem) {
                Ok(()) => {
                    tracing::info!(secret = %key, file = %file.display(), "generated an OAuth signing key")
                }
                Err(e) => {
                    tracing::warn!(secret = %key, file = %file.display(), error = %e, "generated an OAuth signing key but cannot keep it: tokens end with this process")
                }
            },
            None => {
                tracing::warn!(secret = %key, "generated an OAuth signing key in memory (no --state-dir): tokens and sessions end with this process")
            }
        }
        generated.insert(key.clone(), pem.clone());
        Some(pem)
    }
}

/// Writes the key file, its directory created first.
fn write_key(path: &std::path::Path, pem: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::files::write_private(path, pem.as_bytes())
}
