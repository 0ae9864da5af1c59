//! A namespace per test, so tests run in parallel against one API server.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};

use crate::Rig;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A uniquely named namespace, deleted when dropped (best effort) or by
/// [`TestNamespace::cleanup`].
#[derive(Debug)]
pub struct TestNamespace {
    pub name: String,
    kubeconfig: PathBuf,
    deleted: bool,
}

impl TestNamespace {
    /// Creates `<prefix>-<unique suffix>`. The label lets a person find
    /// leftovers: `kubectl get ns -l postern.io/test`.
    pub async fn create(rig: &Rig, prefix: &str) -> TestNamespace {
        let name = unique_name(prefix);
        let client = rig.client().await;
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("postern.io/test".to_string(), prefix.to_string())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client)
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        TestNamespace {
            name,
            kubeconfig: rig.kubeconfig().to_path_buf(),
            deleted: false,
        }
    }

    /// Deletes the namespace now (without waiting for it to be gone).
    pub async fn cleanup(mut self, client: &Client) {
        delete(client.clone(), &self.name).await;
        self.deleted = true;
    }
}

impl Drop for TestNamespace {
    /// The test's own runtime may be shutting down (or be single-threaded
    /// and blocked right here), so the delete runs on a thread with its own
    /// runtime and client.
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        let name = self.name.clone();
        let kubeconfig = self.kubeconfig.clone();
        let thread = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let client = crate::rig::client_from(&kubeconfig).await;
                delete(client, &name).await;
            });
        });
        let _ = thread.join();
    }
}

async fn delete(client: Client, name: &str) {
    let api = Api::<Namespace>::all(client);
    if let Err(error) = api.delete(name, &DeleteParams::background()).await {
        eprintln!("could not delete namespace {name}: {error}");
    }
}

/// A DNS label: prefix, process id, a counter and the clock, at most 63 characters.
fn unique_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let suffix = format!("{}-{n}-{:x}", std::process::id(), nanos % 0xfffff);
    let room = 62 - suffix.len();
    let prefix: String = prefix
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(room)
        .collect();
    format!("{}-{suffix}", prefix.trim_matches('-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_dns_labels() {
        let a = unique_name("Spine_Test");
        let b = unique_name("Spine_Test");
        assert_ne!(a, b);
        for name in [&a, &b, &unique_name(&"x".repeat(100))] {
            assert!(name.len() <= 63, "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
        }
        assert!(a.starts_with("spine-test-"), "{a}");
    }
}
