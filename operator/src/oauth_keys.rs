//! Signing keys for authorization servers that name no Secret: the leader
//! creates `<target>-oauth-keys` (one ES256 key, `generated.pem`) owned by
//! the ProxyTarget, so garbage collection removes it with the target.
//! Created, never overwritten: an existing Secret of that name (a user's,
//! or one made by an earlier leader) is left as it is. Until it exists the
//! target is refused with SecretNotFound, which the next compile clears.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Client;
use kube::api::{Api, PostParams};
use postern_api::ObjectKey;
use postern_compile::signing_keys_secret_name;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::index::Index;

/// How often the leader looks for servers that need a key.
const EVERY: Duration = Duration::from_secs(2);

pub struct OauthKeys {
    pub client: Client,
    pub index: Arc<Mutex<Index>>,
    pub leader: watch::Receiver<bool>,
}

/// A target that needs its key Secret: where, and the owner's uid.
struct Wanted {
    secret: ObjectKey,
    target: String,
    uid: String,
}

impl OauthKeys {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if !*self.leader.borrow() {
                continue;
            }
            for wanted in self.wanted() {
                self.create(&wanted).await;
            }
        }
    }

    fn wanted(&self) -> Vec<Wanted> {
        let index = crate::publish::lock(&self.index);
        if !index.synced() {
            return Vec::new();
        }
        index
            .proxy_targets
            .values()
            .filter(|e| {
                e.object
                    .spec
                    .authorization_server
                    .as_ref()
                    .is_some_and(|s| s.signing_keys_secret_ref.is_none())
            })
            .filter_map(|e| {
                let secret = ObjectKey::new(
                    e.object.namespace(),
                    signing_keys_secret_name(&e.object.meta.name),
                );
                if index.secrets.get(&secret).is_some() {
                    return None;
                }
                Some(Wanted {
                    secret,
                    target: e.object.meta.name.clone(),
                    uid: e.object.meta.uid.clone()?,
                })
            })
            .collect()
    }

    async fn create(&self, wanted: &Wanted) {
        let pem = match postern_oauth::keys::generate_es256_pem() {
            Ok(pem) => pem,
            Err(e) => {
                tracing::error!(secret = %wanted.secret, error = %e, "cannot generate an OAuth signing key");
                return;
            }
        };
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(wanted.secret.name.clone()),
                namespace: Some(wanted.secret.namespace.clone()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_string(),
                    "postern".to_string(),
                )])),
                owner_references: Some(vec![OwnerReference {
                    api_version: "postern.io/v1alpha1".into(),
                    kind: "ProxyTarget".into(),
                    name: wanted.target.clone(),
                    uid: wanted.uid.clone(),
                    controller: Some(true),
                    block_owner_deletion: None,
                }]),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".into()),
            data: Some(BTreeMap::from([(
                "generated.pem".to_string(),
                ByteString(pem.into_bytes()),
            )])),
            ..Secret::default()
        };
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &wanted.secret.namespace);
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => tracing::info!(secret = %wanted.secret, "created an OAuth signing key"),
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => {
                tracing::warn!(secret = %wanted.secret, error = %e, "cannot create the OAuth signing key Secret; will retry")
            }
        }
    }
}
