//! Watches: one kube-runtime watcher per kind feeding the [`Index`].
//!
//! A change that matters to compilation wakes the rebuild loop; status-only
//! updates (including our own patches) only refresh the index.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use postern_crds::{OAuthClient, ProxyTarget, Route, Tunnel, UserUpstream};
use serde::de::DeserializeOwned;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::changes::Changes;
use crate::index::{Index, Indexed};
use crate::publish::lock;

/// What every watch task needs.
#[derive(Clone)]
pub struct Watches {
    pub client: Client,
    /// `None`: every namespace.
    pub namespace: Option<String>,
    pub index: Arc<Mutex<Index>>,
    pub changed: Arc<Changes>,
    pub shutdown: CancellationToken,
}

impl Watches {
    /// Starts a watch for each of the five kinds, Secrets and Services.
    pub fn spawn(&self, tasks: &mut JoinSet<()>) {
        tasks.spawn(
            self.clone()
                .watch::<ProxyTarget>(watcher::Config::default()),
        );
        tasks.spawn(self.clone().watch::<Route>(watcher::Config::default()));
        tasks.spawn(
            self.clone()
                .watch::<UserUpstream>(watcher::Config::default()),
        );
        tasks.spawn(self.clone().watch::<Tunnel>(watcher::Config::default()));
        tasks.spawn(
            self.clone()
                .watch::<OAuthClient>(watcher::Config::default()),
        );
        // Helm keeps whole releases in Secrets of this type; never ours, often large.
        let secrets = watcher::Config::default().fields("type!=helm.sh/release.v1");
        tasks.spawn(self.clone().watch::<Secret>(secrets));
        tasks.spawn(self.clone().watch::<Service>(watcher::Config::default()));
    }

    async fn watch<K>(self, config: watcher::Config)
    where
        K: Indexed
            + kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Debug
            + Send
            + 'static,
    {
        let api: Api<K> = match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        let stream = watcher(api, config).default_backoff();
        futures::pin_mut!(stream);
        loop {
            let event = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                event = stream.next() => event,
            };
            match event {
                None => return,
                Some(Ok(event)) => {
                    if lock(&self.index).handle(event) {
                        tracing::debug!(kind = K::NAME, "input changed");
                        self.changed.note();
                    }
                }
                // The watcher retries with backoff; a missing CRD or RBAC
                // rule shows up here and keeps /readyz false.
                Some(Err(error)) => tracing::warn!(kind = K::NAME, %error, "watch failed"),
            }
        }
    }
}
