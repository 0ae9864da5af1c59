//! What compilation reads.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use postern_api::{
    Kind, LostClaims, OAuthClientSpec, Object, ObjectKey, ProxyTargetSpec, RouteSpec, TunnelSpec,
    UserUpstreamSpec,
};

use crate::NamePolicy;

/// Everything `compile` reads. Order within the vectors does not matter.
///
/// Objects are shared (`Arc`): the operator hands compile the objects its
/// index holds without copying 10,000 of them per change.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    pub proxy_targets: Vec<Arc<Object<ProxyTargetSpec>>>,
    pub routes: Vec<Arc<Object<RouteSpec>>>,
    pub user_upstreams: Vec<Arc<Object<UserUpstreamSpec>>>,
    pub tunnels: Vec<Arc<Object<TunnelSpec>>>,
    pub oauth_clients: Vec<Arc<Object<OAuthClientSpec>>>,
    /// Secrets by namespace/name.
    pub secrets: BTreeMap<ObjectKey, SecretData>,
    /// Services by namespace/name. `None`: Service backends are not checked
    /// against known Services (nothing to check against).
    pub services: Option<BTreeMap<ObjectKey, ServiceInfo>>,
    pub options: Options,
    /// ACME challenges being validated (fed back by the certificate
    /// manager); only those for hostnames of accepted ACME sites are kept.
    pub acme_challenges: Vec<postern_snapshot::AcmeChallenge>,
    /// The names each object lost to another namespace, as its status
    /// records them (`status.lostClaims`, written from earlier verdicts):
    /// such a claim stays refused after the holder goes away unless the
    /// name policy allows takeover.
    pub lost_claims: BTreeMap<(Kind, ObjectKey), LostClaims>,
}

/// A Secret's type and decoded data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretData {
    /// `type` of the Secret, e.g. `kubernetes.io/tls`.
    pub kind: Option<String>,
    pub data: BTreeMap<String, Vec<u8>>,
}

/// What compilation needs to know of a Service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceInfo {
    pub ports: Vec<u16>,
}

/// Settings of the environment compilation runs for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Suffix of Service DNS names: `<svc>.<ns>.svc.<cluster_domain>`.
    pub cluster_domain: String,
    /// The ACME issuers configuration names; a target naming another is
    /// refused with UnknownIssuer.
    pub acme_issuers: BTreeSet<String>,
    /// Which namespaces may claim which hostnames and user names.
    pub name_policy: NamePolicy,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cluster_domain: "cluster.local".to_string(),
            acme_issuers: ["production", "staging"].map(String::from).into(),
            name_policy: NamePolicy::default(),
        }
    }
}
