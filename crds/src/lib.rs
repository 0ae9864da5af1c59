//! The five Postern custom resources as kube types.
//!
//! Each spec is a transparent wrapper around the kube-free type of
//! `postern-api`, so the schema, field names and validation live in one place
//! and the data plane never links kube. `Deref` makes `obj.spec.hostnames`
//! read as if the wrapper were not there.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResource;
use kube::core::CustomResourceExt;
use postern_api::ResourceStatus;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

macro_rules! spec_wrapper {
    ($wrapper:ident, $inner:ty) => {
        impl std::ops::Deref for $wrapper {
            type Target = $inner;
            fn deref(&self) -> &$inner {
                &self.0
            }
        }
        impl From<$inner> for $wrapper {
            fn from(inner: $inner) -> Self {
                $wrapper(inner)
            }
        }
    };
}

/// Hostnames → a backend, with TLS and auth.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
#[schemars(transparent)]
#[kube(
    group = "postern.io",
    version = "v1alpha1",
    kind = "ProxyTarget",
    doc = "A site: hostnames served by one backend, with TLS and auth.",
    namespaced,
    status = "ResourceStatus",
    shortname = "pt",
    category = "postern",
    printcolumn = r#"{"name":"Hostnames","type":"string","jsonPath":".spec.hostnames"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","description":"Why a condition is False (empty when all is well)","jsonPath":".status.conditions[?(@.status==\"False\")].reason"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"description":"What a False condition says","jsonPath":".status.conditions[?(@.status==\"False\")].message"}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.conditions[?(@.type==\"Programmed\")].status"}"#,
    printcolumn = r#"{"name":"Certificate","type":"string","jsonPath":".status.conditions[?(@.type==\"CertificateReady\")].status"}"#,
    printcolumn = r#"{"name":"Expires","type":"date","jsonPath":".status.certificate.notAfter"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
pub struct ProxyTargetSpec(pub postern_api::ProxyTargetSpec);
spec_wrapper!(ProxyTargetSpec, postern_api::ProxyTargetSpec);

/// A path rule within a ProxyTarget.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
#[schemars(transparent)]
#[kube(
    group = "postern.io",
    version = "v1alpha1",
    kind = "Route",
    doc = "A path (and method) rule within a ProxyTarget: another backend or auth for some requests.",
    namespaced,
    status = "ResourceStatus",
    shortname = "rt",
    category = "postern",
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.targetRef.name"}"#,
    printcolumn = r#"{"name":"Path","type":"string","jsonPath":".spec.match.path.value"}"#,
    printcolumn = r#"{"name":"Priority","type":"integer","jsonPath":".spec.priority"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","description":"Why a condition is False (empty when all is well)","jsonPath":".status.conditions[?(@.status==\"False\")].reason"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"description":"What a False condition says","jsonPath":".status.conditions[?(@.status==\"False\")].message"}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.conditions[?(@.type==\"Programmed\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
pub struct RouteSpec(pub postern_api::RouteSpec);
spec_wrapper!(RouteSpec, postern_api::RouteSpec);

/// A forward-proxy user and their upstream.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
#[schemars(transparent)]
#[kube(
    group = "postern.io",
    version = "v1alpha1",
    kind = "UserUpstream",
    doc = "A forward-proxy user and the upstream (direct, SOCKS5, HTTP or HTTPS proxy) their tunnels use.",
    namespaced,
    status = "ResourceStatus",
    shortname = "uu",
    category = "postern",
    printcolumn = r#"{"name":"User","type":"string","jsonPath":".spec.user"}"#,
    printcolumn = r#"{"name":"Upstream","type":"string","jsonPath":".spec.upstream"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","description":"Why a condition is False (empty when all is well)","jsonPath":".status.conditions[?(@.status==\"False\")].reason"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"description":"What a False condition says","jsonPath":".status.conditions[?(@.status==\"False\")].message"}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.conditions[?(@.type==\"Programmed\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
pub struct UserUpstreamSpec(pub postern_api::UserUpstreamSpec);
spec_wrapper!(UserUpstreamSpec, postern_api::UserUpstreamSpec);

/// What a reverse-tunnel agent may serve.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
#[schemars(transparent)]
#[kube(
    group = "postern.io",
    version = "v1alpha1",
    kind = "Tunnel",
    doc = "Hostnames, a path prefix or a TCP port served by a reverse-tunnel agent.",
    namespaced,
    status = "ResourceStatus",
    shortname = "tun",
    category = "postern",
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Hostnames","type":"string","jsonPath":".spec.hostnames"}"#,
    printcolumn = r#"{"name":"Path","type":"string","jsonPath":".spec.pathPrefix"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","description":"Why a condition is False (empty when all is well)","jsonPath":".status.conditions[?(@.status==\"False\")].reason"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"description":"What a False condition says","jsonPath":".status.conditions[?(@.status==\"False\")].message"}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.conditions[?(@.type==\"Programmed\")].status"}"#,
    printcolumn = r#"{"name":"Agent","type":"string","jsonPath":".status.conditions[?(@.type==\"AgentConnected\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
pub struct TunnelSpec(pub postern_api::TunnelSpec);
spec_wrapper!(TunnelSpec, postern_api::TunnelSpec);

/// A statically declared OAuth client.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
#[schemars(transparent)]
#[kube(
    group = "postern.io",
    version = "v1alpha1",
    kind = "OAuthClient",
    doc = "A statically declared client of Postern's OAuth 2.1 authorization server.",
    namespaced,
    status = "ResourceStatus",
    shortname = "oac",
    category = "postern",
    printcolumn = r#"{"name":"Grants","type":"string","jsonPath":".spec.grantTypes"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","description":"Why a condition is False (empty when all is well)","jsonPath":".status.conditions[?(@.status==\"False\")].reason"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"description":"What a False condition says","jsonPath":".status.conditions[?(@.status==\"False\")].message"}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.conditions[?(@.type==\"Programmed\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
pub struct OAuthClientSpec(pub postern_api::OAuthClientSpec);
spec_wrapper!(OAuthClientSpec, postern_api::OAuthClientSpec);

/// Every CRD, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        ProxyTarget::crd(),
        Route::crd(),
        UserUpstream::crd(),
        Tunnel::crd(),
        OAuthClient::crd(),
    ]
}

/// The committed YAML of one CRD: what `crdgen` writes and the drift test compares.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_yaml_ng::Error> {
    let yaml = serde_yaml_ng::to_string(crd)?;
    Ok(format!(
        "# Generated by `cargo run -p postern-crds --bin crdgen`; do not edit.\n{yaml}"
    ))
}

/// File name of a CRD's YAML: `<plural>.<group>.yaml`.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}
