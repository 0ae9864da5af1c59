//! The slice of Kubernetes object metadata that compilation needs, and a
//! kube-free envelope for any resource.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The five resource kinds Postern compiles, plus the core kinds they reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    ProxyTarget,
    Route,
    UserUpstream,
    Tunnel,
    OAuthClient,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::ProxyTarget,
        Kind::Route,
        Kind::UserUpstream,
        Kind::Tunnel,
        Kind::OAuthClient,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ProxyTarget => "ProxyTarget",
            Kind::Route => "Route",
            Kind::UserUpstream => "UserUpstream",
            Kind::Tunnel => "Tunnel",
            Kind::OAuthClient => "OAuthClient",
        }
    }

    pub fn parse(kind: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == kind)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Namespace and name: how objects refer to each other.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What compilation reads of an object's metadata.
///
/// `creation_timestamp` decides conflicts (the older object wins), so it is
/// kept as the RFC 3339 text the API server wrote: such strings in UTC sort
/// in time order, and the name breaks ties between equal timestamps.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub generation: Option<i64>,
    #[serde(default)]
    pub creation_timestamp: Option<String>,
    #[serde(default)]
    pub uid: Option<String>,
}

/// One resource of any kind, as compilation sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Object<S> {
    pub meta: ObjectMeta,
    pub spec: S,
}

impl<S> Object<S> {
    pub fn new(namespace: &str, name: &str, spec: S) -> Self {
        Object {
            meta: ObjectMeta {
                name: name.to_string(),
                namespace: Some(namespace.to_string()),
                generation: Some(1),
                creation_timestamp: None,
                uid: None,
            },
            spec,
        }
    }

    pub fn key(&self) -> ObjectKey {
        ObjectKey::new(self.namespace(), self.meta.name.clone())
    }

    /// Objects read without a namespace belong to `default`, as kubectl does.
    pub fn namespace(&self) -> &str {
        self.meta.namespace.as_deref().unwrap_or("default")
    }

    pub fn generation(&self) -> i64 {
        self.meta.generation.unwrap_or(0)
    }

    /// Sort key for "the older wins": creation time, then namespace/name.
    pub fn age_key(&self) -> (&str, &str, &str) {
        (
            self.meta.creation_timestamp.as_deref().unwrap_or(""),
            self.namespace(),
            &self.meta.name,
        )
    }
}
