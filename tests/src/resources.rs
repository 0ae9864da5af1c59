//! Creating, changing and reading Postern objects and Secrets in a test
//! namespace, from JSON manifests shaped like the YAML users write.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams,
};
use postern_api::{Condition, ResourceStatus};
use postern_crds::{OAuthClient, ProxyTarget, Route, Tunnel, UserUpstream};
use serde_json::Value;

/// The API resource of one of the five kinds.
pub fn api_resource(kind: &str) -> ApiResource {
    match kind {
        "ProxyTarget" => ApiResource::erase::<ProxyTarget>(&()),
        "Route" => ApiResource::erase::<Route>(&()),
        "UserUpstream" => ApiResource::erase::<UserUpstream>(&()),
        "Tunnel" => ApiResource::erase::<Tunnel>(&()),
        "OAuthClient" => ApiResource::erase::<OAuthClient>(&()),
        other => panic!("not a Postern kind: {other}"),
    }
}

fn api(client: &Client, ns: &str, kind: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &api_resource(kind))
}

/// Creates `{"kind": K, "metadata": {"name": N}, "spec": {...}}` in `ns`
/// (apiVersion is filled in). The API server's refusal comes back as `Err`.
pub async fn create(
    client: &Client,
    ns: &str,
    mut manifest: Value,
) -> Result<DynamicObject, kube::Error> {
    let kind = manifest["kind"].as_str().unwrap_or_default().to_string();
    manifest["apiVersion"] = Value::from(postern_api::API_VERSION);
    let object: DynamicObject =
        serde_json::from_value(manifest).unwrap_or_else(|e| panic!("manifest: {e}"));
    api(client, ns, &kind)
        .create(&PostParams::default(), &object)
        .await
}

/// Merge-patches the spec: the way `kubectl patch --type merge` changes it.
pub async fn patch_spec(
    client: &Client,
    ns: &str,
    kind: &str,
    name: &str,
    spec: Value,
) -> DynamicObject {
    let body = serde_json::json!({ "spec": spec });
    api(client, ns, kind)
        .patch(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .unwrap_or_else(|e| panic!("patching {kind} {ns}/{name}: {e}"))
}

pub async fn delete(client: &Client, ns: &str, kind: &str, name: &str) {
    api(client, ns, kind)
        .delete(name, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("deleting {kind} {ns}/{name}: {e}"));
}

pub async fn get(client: &Client, ns: &str, kind: &str, name: &str) -> Option<DynamicObject> {
    api(client, ns, kind)
        .get_opt(name)
        .await
        .unwrap_or_else(|e| panic!("reading {kind} {ns}/{name}: {e}"))
}

/// Creates or replaces an Opaque Secret with these string values.
pub async fn apply_secret(client: &Client, ns: &str, name: &str, data: &[(&str, &str)]) {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        string_data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Secret::default()
    };
    Api::<Secret>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::apply("postern-tests").force(),
            &Patch::Apply(&secret),
        )
        .await
        .unwrap_or_else(|e| panic!("applying Secret {ns}/{name}: {e}"));
}

/// An object's generation and status as the API server has them.
#[derive(Clone, Debug)]
pub struct Observed {
    pub generation: i64,
    pub status: ResourceStatus,
}

impl Observed {
    pub fn condition(&self, kind: &str) -> Option<&Condition> {
        self.status.conditions.iter().find(|c| c.kind == kind)
    }
}

/// Reads an object's generation and status; `Err` describes why not.
pub async fn observe(
    client: &Client,
    ns: &str,
    kind: &str,
    name: &str,
) -> Result<Observed, String> {
    let object = api(client, ns, kind)
        .get_opt(name)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{kind} {ns}/{name} not found"))?;
    let generation = object.metadata.generation.unwrap_or(0);
    let status = match object.data.get("status") {
        Some(status) => serde_json::from_value(status.clone()).map_err(|e| e.to_string())?,
        None => ResourceStatus::default(),
    };
    Ok(Observed { generation, status })
}

/// The API server's message for a refused object.
pub fn rejection_message(result: Result<DynamicObject, kube::Error>) -> String {
    match result {
        Ok(object) => panic!("the API server accepted an invalid object: {object:?}"),
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "expected 422 Invalid: {status:?}");
            status.message
        }
        Err(other) => panic!("expected a 422 from the API server, got {other}"),
    }
}
