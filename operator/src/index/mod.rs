//! The pure index: what the watches have delivered, as compilation input.
//!
//! Watch events go in ([`Index::handle`]); [`Index::inputs`] comes out. No
//! IO here, so the tests drive it with hand-built objects and no API
//! server. The index also remembers each object's observed status, which
//! the status writer compares against before patching.

mod convert;
mod store;

use k8s_openapi::api::core::v1::{Secret, Service};
use kube::runtime::watcher::Event;
use postern_api::{
    Kind, LostClaims, OAuthClientSpec, ObjectKey, ProxyTargetSpec, ResourceStatus, RouteSpec,
    TunnelSpec, UserUpstreamSpec,
};
use postern_compile::{Inputs, Options, SecretData, ServiceInfo};
use postern_crds::{OAuthClient, ProxyTarget, Route, Tunnel, UserUpstream};

pub use convert::{Entry, format_time};
pub use store::{SameInput, Store};

/// Every object the operator watches, converted as it arrives.
#[derive(Debug, Default)]
pub struct Index {
    pub proxy_targets: Store<Entry<ProxyTargetSpec>>,
    pub routes: Store<Entry<RouteSpec>>,
    pub user_upstreams: Store<Entry<UserUpstreamSpec>>,
    pub tunnels: Store<Entry<TunnelSpec>>,
    pub oauth_clients: Store<Entry<OAuthClientSpec>>,
    pub secrets: Store<SecretData>,
    pub services: Store<ServiceInfo>,
    options: Options,
}

/// A watched kube type and where the index keeps it.
pub trait Indexed: kube::Resource + Sized {
    type Value: SameInput;
    /// Name in logs.
    const NAME: &'static str;
    fn store(index: &mut Index) -> &mut Store<Self::Value>;
    fn value(&self) -> Self::Value;
}

macro_rules! indexed_crd {
    ($kube:ty, $spec:ty, $field:ident) => {
        impl Indexed for $kube {
            type Value = Entry<$spec>;
            const NAME: &'static str = stringify!($kube);
            fn store(index: &mut Index) -> &mut Store<Self::Value> {
                &mut index.$field
            }
            fn value(&self) -> Self::Value {
                convert::entry(&self.metadata, &self.spec.0, self.status.as_ref())
            }
        }
    };
}

indexed_crd!(ProxyTarget, ProxyTargetSpec, proxy_targets);
indexed_crd!(Route, RouteSpec, routes);
indexed_crd!(UserUpstream, UserUpstreamSpec, user_upstreams);
indexed_crd!(Tunnel, TunnelSpec, tunnels);
indexed_crd!(OAuthClient, OAuthClientSpec, oauth_clients);

impl Indexed for Secret {
    type Value = SecretData;
    const NAME: &'static str = "Secret";
    fn store(index: &mut Index) -> &mut Store<SecretData> {
        &mut index.secrets
    }
    fn value(&self) -> SecretData {
        convert::secret_data(self)
    }
}

impl Indexed for Service {
    type Value = ServiceInfo;
    const NAME: &'static str = "Service";
    fn store(index: &mut Index) -> &mut Store<ServiceInfo> {
        &mut index.services
    }
    fn value(&self) -> ServiceInfo {
        convert::service_info(self)
    }
}

/// What the status writer needs to know of an object as the cluster has it.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub uid: Option<String>,
    pub generation: i64,
    pub status: Option<ResourceStatus>,
}

impl<S> From<&Entry<S>> for Observed {
    fn from(entry: &Entry<S>) -> Self {
        Observed {
            uid: entry.object.meta.uid.clone(),
            generation: entry.object.generation(),
            status: entry.status.clone(),
        }
    }
}

impl Index {
    pub fn new(options: Options) -> Self {
        Index {
            options,
            ..Index::default()
        }
    }

    /// Applies one watch event; true when compilation input changed.
    pub fn handle<K: Indexed>(&mut self, event: Event<K>) -> bool {
        let store = K::store(self);
        match event {
            Event::Apply(obj) => match convert::key_of(obj.meta()) {
                Some(key) => store.apply(key, obj.value()),
                None => false,
            },
            Event::Delete(obj) => convert::key_of(obj.meta()).is_some_and(|key| store.delete(&key)),
            Event::Init => {
                store.restart();
                false
            }
            Event::InitApply(obj) => {
                if let Some(key) = convert::key_of(obj.meta()) {
                    store.relisted(key, obj.value());
                }
                false
            }
            Event::InitDone => store.relist_done(),
        }
    }

    /// True once every watched kind has been listed completely: compiling
    /// before that would reject objects whose Secrets are merely not seen yet.
    pub fn synced(&self) -> bool {
        self.proxy_targets.synced()
            && self.routes.synced()
            && self.user_upstreams.synced()
            && self.tunnels.synced()
            && self.oauth_clients.synced()
            && self.secrets.synced()
            && self.services.synced()
    }

    /// Compilation input from the current contents.
    pub fn inputs(&self) -> Inputs {
        fn objects<S>(store: &Store<Entry<S>>) -> Vec<std::sync::Arc<postern_api::Object<S>>> {
            store.values().map(|e| e.object.clone()).collect()
        }
        Inputs {
            proxy_targets: objects(&self.proxy_targets),
            routes: objects(&self.routes),
            user_upstreams: objects(&self.user_upstreams),
            tunnels: objects(&self.tunnels),
            oauth_clients: objects(&self.oauth_clients),
            secrets: self
                .secrets
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            services: Some(
                self.services
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            options: self.options.clone(),
            // Challenges ride in the certificate Secrets (compile reads them there).
            acme_challenges: Vec::new(),
            lost_claims: self.lost_claims(),
        }
    }

    /// Each object's `status.lostClaims`: compile keeps those claims
    /// refused. Read at every compile, so a record written since the last
    /// one is seen as soon as anything else changes (a holder's deletion).
    fn lost_claims(&self) -> std::collections::BTreeMap<(Kind, ObjectKey), LostClaims> {
        fn of<S>(
            kind: Kind,
            store: &Store<Entry<S>>,
        ) -> impl Iterator<Item = ((Kind, ObjectKey), LostClaims)> + '_ {
            store.iter().filter_map(move |(key, entry)| {
                let lost = &entry.status.as_ref()?.lost_claims;
                (!lost.is_empty()).then(|| ((kind, key.clone()), lost.clone()))
            })
        }
        of(Kind::ProxyTarget, &self.proxy_targets)
            .chain(of(Kind::UserUpstream, &self.user_upstreams))
            .chain(of(Kind::Tunnel, &self.tunnels))
            .collect()
    }

    /// The object of `kind` at `key` as last watched.
    pub fn observed(&self, kind: Kind, key: &ObjectKey) -> Option<Observed> {
        match kind {
            Kind::ProxyTarget => self.proxy_targets.get(key).map(Observed::from),
            Kind::Route => self.routes.get(key).map(Observed::from),
            Kind::UserUpstream => self.user_upstreams.get(key).map(Observed::from),
            Kind::Tunnel => self.tunnels.get(key).map(Observed::from),
            Kind::OAuthClient => self.oauth_clients.get(key).map(Observed::from),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
