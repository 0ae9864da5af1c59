//! Reads Kubernetes-style YAML manifests (what `kubectl apply -f` takes) into
//! compilation inputs, for standalone mode and tests.
//!
//! Understood: the five `postern.io/v1alpha1` kinds, v1 `Secret` (`data`
//! base64, `stringData` plain; `stringData` wins, as on the API server) and
//! v1 `Service` (its ports). Documents of any other apiVersion/kind are
//! skipped, so a GitOps folder may hold other manifests too; an unknown
//! postern.io kind or version is an error, as it would be for kubectl.

use std::collections::BTreeMap;

use base64::Engine;
use postern_api::{Kind, Object, ObjectKey, ObjectMeta};
use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;

use crate::{Inputs, SecretData, ServiceInfo};

/// The namespace of a manifest that names none, as `kubectl apply` reads it.
pub const DEFAULT_NAMESPACE: &str = "default";

/// One understood document.
// Parsed once per document and moved straight into `Inputs`: boxing the
// larger specs would buy nothing but an allocation each.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Resource {
    ProxyTarget(Object<postern_api::ProxyTargetSpec>),
    Route(Object<postern_api::RouteSpec>),
    UserUpstream(Object<postern_api::UserUpstreamSpec>),
    Tunnel(Object<postern_api::TunnelSpec>),
    OAuthClient(Object<postern_api::OAuthClientSpec>),
    Secret(ObjectKey, SecretData),
    Service(ObjectKey, ServiceInfo),
}

/// Why a manifest could not be read. `document` counts from 1.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("document {document}: not valid YAML: {message}")]
    Yaml { document: usize, message: String },
    #[error("document {document}: {what}: {message}")]
    Invalid {
        document: usize,
        what: String,
        message: String,
    },
}

/// Parses every document of a multi-document YAML text.
pub fn parse_documents(text: &str) -> Result<Vec<Resource>, ManifestError> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let document = i + 1;
        let value =
            <Value as serde::Deserialize>::deserialize(doc).map_err(|e| ManifestError::Yaml {
                document,
                message: e.to_string(),
            })?;
        if value.is_null() {
            continue;
        }
        if let Some(resource) =
            parse_value(&value).map_err(|(what, message)| ManifestError::Invalid {
                document,
                what,
                message,
            })?
        {
            out.push(resource);
        }
    }
    Ok(out)
}

type DocError = (String, String);

fn parse_value(value: &Value) -> Result<Option<Resource>, DocError> {
    let field = |name: &str| value.get(name).and_then(Value::as_str).unwrap_or_default();
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    if api_version.is_empty() || kind.is_empty() {
        return Err(("document".into(), "apiVersion and kind are required".into()));
    }
    let meta: ObjectMeta = part(value, "metadata", kind)?;
    if meta.name.is_empty() {
        return Err((kind.to_string(), "metadata.name is required".into()));
    }
    let what = format!("{kind} {}", meta.name);
    let key = ObjectKey::new(
        meta.namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.into()),
        meta.name.clone(),
    );
    match (api_version, kind) {
        ("v1", "Secret") => secret(value)
            .map(|s| Some(Resource::Secret(key, s)))
            .map_err(|m| (what, m)),
        ("v1", "Service") => Ok(Some(Resource::Service(key, service(value)))),
        (postern_api::API_VERSION, _) => {
            let kind = Kind::parse(kind)
                .ok_or_else(|| (what.clone(), format!("unknown kind in {api_version}")))?;
            let meta = ObjectMeta {
                generation: meta.generation.or(Some(1)),
                ..meta
            };
            postern(kind, meta, value, &what).map(Some)
        }
        (v, _) if v.starts_with("postern.io/") => Err((
            what,
            format!(
                "unsupported apiVersion {v} (use {})",
                postern_api::API_VERSION
            ),
        )),
        _ => Ok(None),
    }
}

fn postern(kind: Kind, meta: ObjectMeta, value: &Value, what: &str) -> Result<Resource, DocError> {
    fn obj<S: DeserializeOwned>(
        meta: ObjectMeta,
        value: &Value,
        what: &str,
    ) -> Result<Object<S>, DocError> {
        Ok(Object {
            meta,
            spec: part(value, "spec", what)?,
        })
    }
    Ok(match kind {
        Kind::ProxyTarget => Resource::ProxyTarget(obj(meta, value, what)?),
        Kind::Route => Resource::Route(obj(meta, value, what)?),
        Kind::UserUpstream => Resource::UserUpstream(obj(meta, value, what)?),
        Kind::Tunnel => Resource::Tunnel(obj(meta, value, what)?),
        Kind::OAuthClient => Resource::OAuthClient(obj(meta, value, what)?),
    })
}

fn part<T: DeserializeOwned>(value: &Value, name: &str, what: &str) -> Result<T, DocError> {
    let part = value
        .get(name)
        .cloned()
        .ok_or_else(|| (what.to_string(), format!("{name} is required")))?;
    serde_yaml_ng::from_value(part).map_err(|e| (what.to_string(), format!("{name}: {e}")))
}

fn secret(value: &Value) -> Result<SecretData, String> {
    let mut data = BTreeMap::new();
    let strings = |name: &str| -> Result<Vec<(String, String)>, String> {
        let Some(map) = value.get(name) else {
            return Ok(Vec::new());
        };
        let map: BTreeMap<String, String> =
            serde_yaml_ng::from_value(map.clone()).map_err(|e| format!("{name}: {e}"))?;
        Ok(map.into_iter().collect())
    };
    for (k, v) in strings("data")? {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(v.trim())
            .map_err(|e| format!("data.{k} is not base64: {e}"))?;
        data.insert(k, bytes);
    }
    for (k, v) in strings("stringData")? {
        data.insert(k, v.into_bytes());
    }
    Ok(SecretData {
        kind: value
            .get("type")
            .and_then(Value::as_str)
            .map(str::to_string),
        data,
    })
}

fn service(value: &Value) -> ServiceInfo {
    let ports = value
        .get("spec")
        .and_then(|s| s.get("ports"))
        .and_then(Value::as_sequence)
        .map(|ports| {
            ports
                .iter()
                .filter_map(|p| p.get("port").and_then(Value::as_u64))
                .filter_map(|p| u16::try_from(p).ok())
                .collect()
        })
        .unwrap_or_default();
    ServiceInfo { ports }
}

impl Inputs {
    /// Adds one parsed resource.
    pub fn push(&mut self, resource: Resource) {
        match resource {
            Resource::ProxyTarget(o) => self.proxy_targets.push(o.into()),
            Resource::Route(o) => self.routes.push(o.into()),
            Resource::UserUpstream(o) => self.user_upstreams.push(o.into()),
            Resource::Tunnel(o) => self.tunnels.push(o.into()),
            Resource::OAuthClient(o) => self.oauth_clients.push(o.into()),
            Resource::Secret(key, data) => {
                self.secrets.insert(key, data);
            }
            Resource::Service(key, info) => {
                self.services
                    .get_or_insert_with(BTreeMap::new)
                    .insert(key, info);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: alice-proxy, namespace: team}
stringData: {password: s3cret}
data: {other: aGVsbG8=}
---
apiVersion: postern.io/v1alpha1
kind: UserUpstream
metadata: {name: alice, namespace: team}
spec:
  user: alice
  passwordSecretRef: {name: alice-proxy, key: password}
  upstream: direct://
---
# a comment-only document is skipped
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ignored}
"#;

    #[test]
    fn reads_secrets_and_resources_and_skips_others() {
        let resources = parse_documents(TEXT).expect("parse");
        assert_eq!(resources.len(), 2);
        let Resource::Secret(key, secret) = &resources[0] else {
            panic!("first is the Secret");
        };
        assert_eq!(key, &ObjectKey::new("team", "alice-proxy"));
        assert_eq!(secret.data["password"], b"s3cret");
        assert_eq!(secret.data["other"], b"hello");
        let Resource::UserUpstream(user) = &resources[1] else {
            panic!("second is the UserUpstream");
        };
        assert_eq!(user.spec.user, "alice");
        assert_eq!(user.meta.generation, Some(1));
    }

    #[test]
    fn errors_name_the_document_and_object() {
        let err = parse_documents("apiVersion: postern.io/v1alpha1\nkind: Route\nmetadata: {name: r}\nspec: {priority: x}\n")
            .expect_err("bad spec");
        let text = err.to_string();
        assert!(text.starts_with("document 1: Route r: spec:"), "{text}");
        let err =
            parse_documents("apiVersion: postern.io/v1alpha1\nkind: Nope\nmetadata: {name: n}\n")
                .expect_err("bad kind");
        assert!(err.to_string().contains("unknown kind"), "{err}");
        assert!(matches!(
            parse_documents("a: [").expect_err("yaml"),
            ManifestError::Yaml { .. }
        ));
    }
}
