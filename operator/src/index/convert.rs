//! Kube objects → the kube-free values compilation reads.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta as KubeMeta, Time};
use postern_api::{Object, ObjectKey, ObjectMeta, ResourceStatus};
use postern_compile::{SecretData, ServiceInfo};

use super::store::SameInput;

/// One object of the five kinds: what compilation reads, and the status the
/// API server last showed (what the status writer compares against).
#[derive(Clone, Debug, PartialEq)]
pub struct Entry<S> {
    /// Shared with every compile's inputs, which take it without a copy.
    pub object: Arc<Object<S>>,
    pub status: Option<ResourceStatus>,
}

impl<S: PartialEq> SameInput for Entry<S> {
    fn same_input(&self, other: &Self) -> bool {
        self.object == other.object
    }
}

impl SameInput for SecretData {
    fn same_input(&self, other: &Self) -> bool {
        self == other
    }
}

impl SameInput for ServiceInfo {
    fn same_input(&self, other: &Self) -> bool {
        self == other
    }
}

/// Namespace/name of a kube object; `None` for one without a name (the API
/// server never sends such, but the type allows it).
pub fn key_of(meta: &KubeMeta) -> Option<ObjectKey> {
    let name = meta.name.clone()?;
    Some(ObjectKey::new(
        meta.namespace.clone().unwrap_or_else(|| "default".into()),
        name,
    ))
}

/// The RFC 3339 form the API server writes, so timestamps from the cluster
/// and from manifests compare the same way.
pub fn format_time(time: &Time) -> String {
    k8s_openapi::jiff::fmt::strtime::format("%Y-%m-%dT%H:%M:%SZ", time.0)
        .unwrap_or_else(|_| time.0.to_string())
}

pub fn object_meta(meta: &KubeMeta) -> ObjectMeta {
    ObjectMeta {
        name: meta.name.clone().unwrap_or_default(),
        namespace: meta.namespace.clone(),
        generation: meta.generation,
        creation_timestamp: meta.creation_timestamp.as_ref().map(format_time),
        uid: meta.uid.clone(),
    }
}

pub fn entry<S: Clone>(meta: &KubeMeta, spec: &S, status: Option<&ResourceStatus>) -> Entry<S> {
    Entry {
        object: Arc::new(Object {
            meta: object_meta(meta),
            spec: spec.clone(),
        }),
        status: status.cloned(),
    }
}

pub fn secret_data(secret: &Secret) -> SecretData {
    let mut data: std::collections::BTreeMap<String, Vec<u8>> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    // The API server folds stringData into data; a client-built object may not have.
    for (k, v) in secret.string_data.iter().flatten() {
        data.insert(k.clone(), v.clone().into_bytes());
    }
    SecretData {
        kind: secret.type_.clone(),
        data,
    }
}

pub fn service_info(service: &Service) -> ServiceInfo {
    let mut ports: Vec<u16> = service
        .spec
        .iter()
        .flat_map(|spec| spec.ports.iter().flatten())
        .filter_map(|port| u16::try_from(port.port).ok())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ServiceInfo { ports }
}
