//! Where the `/upstream` API reads and writes: UserUpstreams and Secrets on
//! the API server. It never compiles or pushes anything itself: the
//! operator's watches see the objects like any others.
//!
//! Writes are server-side applies under [`FIELD_MANAGER`], so a repeated
//! POST is idempotent and drops fields an earlier POST set (an upstream
//! that lost its inline credentials loses its credentials reference).
//! Objects without this API's label are never changed or deleted.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::{Client, Resource, ResourceExt};
use postern_crds::UserUpstream;
use postern_upstreamgate::{ListedUser, UserObjects, credentials_name, object_name};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::objects::{self, Claims, FIELD_MANAGER, is_managed};

/// Why a write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another object defines the user or holds the name (409).
    #[error("{0}")]
    Conflict(String),
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// What a DELETE found.
#[derive(Debug, PartialEq, Eq)]
pub enum Deleted {
    Done,
    NotFound,
}

/// The API server, seen from the `/upstream` API.
#[derive(Clone)]
pub struct Store {
    pub client: Client,
    /// Where POST writes.
    pub namespace: String,
    /// What GET lists and conflicts are checked against: the operator's
    /// watch scope (`None`: every namespace).
    pub scope: Option<String>,
}

impl Store {
    /// Every UserUpstream in scope, this API's and others', sorted by user.
    pub async fn list(&self) -> Result<Vec<ListedUser>, StoreError> {
        let mut users: Vec<ListedUser> = self.all().await?.iter().map(objects::listed).collect();
        users.sort_by(|a, b| (&a.user, &a.id).cmp(&(&b.user, &b.id)));
        Ok(users)
    }

    /// Writes the Secrets, then the UserUpstream that references them (so
    /// it never compiles against a missing Secret).
    pub async fn post(&self, objects: &UserObjects) -> Result<(), StoreError> {
        let claims = self.claims(&objects.spec.user).await?;
        if let Some(other) = claims.others.first() {
            return Err(StoreError::Conflict(format!(
                "user {} is defined by UserUpstream {other}, not by this API",
                objects.spec.user
            )));
        }
        let password = objects::password_secret(objects, &self.namespace);
        let credentials = objects::credentials_secret(objects, &self.namespace);
        for secret in std::iter::once(&password).chain(credentials.as_ref()) {
            self.refuse_foreign_secret(&secret.name_any()).await?;
        }
        for secret in std::iter::once(&password).chain(credentials.as_ref()) {
            self.apply(self.secrets(), secret).await?;
        }
        let user_upstream = objects::user_upstream(objects, &self.namespace);
        self.apply(self.user_upstreams(), &user_upstream).await?;
        if credentials.is_none() {
            self.delete_managed_secret(&objects.credentials_name())
                .await?;
        }
        Ok(())
    }

    /// Removes this API's UserUpstream for `user`, then its Secrets.
    pub async fn delete(&self, user: &str) -> Result<Deleted, StoreError> {
        let claims = self.claims(user).await?;
        let name = object_name(user);
        let found = match (&claims.ours, claims.others.first()) {
            (Some(ours), _) => delete_exactly(&self.user_upstreams(), ours).await?,
            (None, Some(other)) => {
                return Err(StoreError::Conflict(format!(
                    "user {user} is defined by UserUpstream {other}, not by this API"
                )));
            }
            (None, None) => false,
        };
        // Also what a POST that failed half-way left behind.
        let password = self.delete_managed_secret(&name).await?;
        let credentials = self.delete_managed_secret(&credentials_name(&name)).await?;
        Ok(if found || password || credentials {
            Deleted::Done
        } else {
            Deleted::NotFound
        })
    }

    async fn all(&self) -> Result<Vec<UserUpstream>, StoreError> {
        let api: Api<UserUpstream> = match &self.scope {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        Ok(api.list(&ListParams::default()).await?.items)
    }

    async fn claims(&self, user: &str) -> Result<Claims, StoreError> {
        let all = self.all().await?;
        Ok(objects::claims(
            all,
            user,
            &self.namespace,
            &object_name(user),
        ))
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn user_upstreams(&self) -> Api<UserUpstream> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    async fn apply<K>(&self, api: Api<K>, object: &K) -> Result<(), StoreError>
    where
        K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
    {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        api.patch(&object.name_any(), &params, &Patch::Apply(object))
            .await?;
        Ok(())
    }

    async fn refuse_foreign_secret(&self, name: &str) -> Result<(), StoreError> {
        match self.secrets().get_opt(name).await? {
            Some(secret) if !is_managed(&secret.metadata) => Err(StoreError::Conflict(format!(
                "Secret {}/{name} exists and was not written by this API",
                self.namespace
            ))),
            _ => Ok(()),
        }
    }

    /// Deletes the Secret if this API wrote it; true when it did.
    async fn delete_managed_secret(&self, name: &str) -> Result<bool, StoreError> {
        let api = self.secrets();
        match api.get_opt(name).await? {
            Some(secret) if is_managed(&secret.metadata) => delete_exactly(&api, &secret).await,
            _ => Ok(false),
        }
    }
}

/// Deletes the very object that was read (same uid), so one deleted and
/// recreated in between is left alone. The resource version is not pinned:
/// the status writer changes it at any time. True when it was deleted;
/// false when it had gone or been replaced.
async fn delete_exactly<K>(api: &Api<K>, object: &K) -> Result<bool, StoreError>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: object.meta().uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&object.name_any(), &params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(false),
        Err(error) => Err(error.into()),
    }
}
