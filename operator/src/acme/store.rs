//! Accounts and certificates in Secrets. A certificate's Secret is
//! `kubernetes.io/tls`, in the target's namespace, owned by the target (so
//! garbage collection deletes it with the target), with the policy state
//! in annotations; it also carries the challenges being validated
//! ([`postern_compile::CHALLENGES_KEY`]). Each write sends the whole
//! Secret by server-side apply; the manager makes one change at a time, so
//! reading, changing and applying cannot interleave. Every write checks
//! leadership first: a deposed leader must not touch certificates.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use postern_acme::{CertState, Store, rfc3339};
use postern_compile::{AcmeRequest, CHALLENGES_KEY};
use tokio::sync::watch;

use crate::index::Index;

const MANAGER: &str = "postern-acme";
const STATE: &str = "postern.io/acme-state";
const ISSUER: &str = "postern.io/acme-issuer";
const NOT_AFTER: &str = "postern.io/acme-not-after";
const RENEW_AFTER: &str = "postern.io/acme-renew-after";
const CREDENTIALS: &str = "credentials.json";

#[derive(Clone)]
pub struct SecretStore {
    pub client: Client,
    pub lease_namespace: String,
    pub index: Arc<Mutex<Index>>,
    pub leader: watch::Receiver<bool>,
}

/// What one certificate Secret holds.
#[derive(Default)]
pub struct Content {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    pub state: Option<CertState>,
    pub challenges: Option<Vec<u8>>,
}

fn account_secret(issuer: &str) -> String {
    format!("postern-acme-account-{issuer}")
}

impl SecretStore {
    fn leading(&self) -> Result<(), String> {
        if *self.leader.borrow() {
            Ok(())
        } else {
            Err("no longer the leader".into())
        }
    }

    pub async fn read(&self, request: &AcmeRequest) -> Result<Content, String> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &request.key.namespace);
        let Some(secret) = api
            .get_opt(&request.secret)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(Content::default());
        };
        let data = secret.data.unwrap_or_default();
        let value = |k: &str| data.get(k).map(|b| b.0.clone());
        let state = secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(STATE))
            .and_then(|json| serde_json::from_str(json).ok());
        Ok(Content {
            cert: value("tls.crt").unwrap_or_default(),
            key: value("tls.key").unwrap_or_default(),
            state,
            challenges: value(CHALLENGES_KEY),
        })
    }

    pub async fn write(&self, request: &AcmeRequest, content: Content) -> Result<(), String> {
        self.leading()?;
        let uid = {
            let index = crate::publish::lock(&self.index);
            index
                .observed(request.kind, &request.key)
                .and_then(|o| o.uid)
        }
        .ok_or_else(|| format!("{} {} is gone", request.kind, request.key))?;
        let mut annotations = BTreeMap::new();
        if let Some(state) = &content.state {
            let json = serde_json::to_string(state).map_err(|e| e.to_string())?;
            annotations.insert(STATE.to_string(), json);
            annotations.insert(ISSUER.to_string(), state.issuer.clone());
            if state.not_after > 0 {
                annotations.insert(NOT_AFTER.to_string(), rfc3339(state.not_after));
                annotations.insert(RENEW_AFTER.to_string(), rfc3339(state.renew_after));
            }
        }
        let mut data = BTreeMap::from([
            ("tls.crt".to_string(), ByteString(content.cert)),
            ("tls.key".to_string(), ByteString(content.key)),
        ]);
        if let Some(challenges) = content.challenges {
            data.insert(CHALLENGES_KEY.to_string(), ByteString(challenges));
        }
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(request.secret.clone()),
                namespace: Some(request.key.namespace.clone()),
                annotations: Some(annotations),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_string(),
                    "postern".to_string(),
                )])),
                owner_references: Some(vec![OwnerReference {
                    api_version: "postern.io/v1alpha1".into(),
                    kind: request.kind.as_str().into(),
                    name: request.key.name.clone(),
                    uid,
                    controller: Some(true),
                    block_owner_deletion: None,
                }]),
                ..ObjectMeta::default()
            },
            type_: Some("kubernetes.io/tls".into()),
            data: Some(data),
            ..Secret::default()
        };
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &request.key.namespace);
        api.patch(
            &request.secret,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
    }
}

impl Store for SecretStore {
    fn account<'a>(&'a self, issuer: &'a str) -> BoxFuture<'a, Result<Option<String>, String>> {
        async move {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.lease_namespace);
            let secret = api
                .get_opt(&account_secret(issuer))
                .await
                .map_err(|e| e.to_string())?;
            Ok(secret
                .and_then(|s| s.data)
                .and_then(|d| d.get(CREDENTIALS).cloned())
                .map(|b| String::from_utf8_lossy(&b.0).into_owned()))
        }
        .boxed()
    }

    fn save_account<'a>(
        &'a self,
        issuer: &'a str,
        json: String,
    ) -> BoxFuture<'a, Result<(), String>> {
        async move {
            self.leading()?;
            let name = account_secret(issuer);
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(self.lease_namespace.clone()),
                    ..ObjectMeta::default()
                },
                type_: Some("Opaque".into()),
                data: Some(BTreeMap::from([(
                    CREDENTIALS.to_string(),
                    ByteString(json.into_bytes()),
                )])),
                ..Secret::default()
            };
            let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.lease_namespace);
            api.patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&secret),
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
        }
        .boxed()
    }

    fn state<'a>(
        &'a self,
        request: &'a AcmeRequest,
    ) -> BoxFuture<'a, Result<Option<CertState>, String>> {
        async move { Ok(self.read(request).await?.state) }.boxed()
    }

    fn save_issued<'a>(
        &'a self,
        request: &'a AcmeRequest,
        cert_pem: String,
        key_pem: String,
        state: CertState,
    ) -> BoxFuture<'a, Result<(), String>> {
        async move {
            let content = Content {
                cert: cert_pem.into_bytes(),
                key: key_pem.into_bytes(),
                state: Some(state),
                challenges: None,
            };
            self.write(request, content).await
        }
        .boxed()
    }

    fn save_state<'a>(
        &'a self,
        request: &'a AcmeRequest,
        state: CertState,
    ) -> BoxFuture<'a, Result<(), String>> {
        async move {
            let mut content = self.read(request).await?;
            content.state = Some(state);
            self.write(request, content).await
        }
        .boxed()
    }
}
