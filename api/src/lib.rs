//! Postern's resource types: the spec and status of every custom resource,
//! with their schema annotations, and nothing that talks to Kubernetes.
//!
//! Both sides use these types: the operator wraps them in kube's
//! `CustomResource` (crate `postern-crds`), and standalone mode reads the same
//! YAML into them directly. Keeping them free of kube and k8s-openapi is what
//! lets the data plane binary compile manifests without a cluster client.

mod authorization_server;
mod common;
mod duration;
mod meta;
mod oauth_client;
mod proxy_target;
mod route;
mod tunnel;
pub mod url;
pub mod user_name;
mod user_upstream;

pub use authorization_server::{
    AuthorizationServerSpec, GithubLogin, IdentityHeaders, OidcLogin, ServerRef,
};
pub use common::{
    AuthPolicy, AuthType, Backend, BackendProtocol, BackendTls, CertificateStatus, Condition,
    ConditionStatus, LocalRef, LostClaims, ProxyProtocolVersion, ResourceStatus, SecretKeyRef,
    ServiceBackend,
};
pub use duration::{Duration, DurationError};
pub use meta::{Kind, Object, ObjectKey, ObjectMeta};
pub use oauth_client::{GrantType, OAuthClientSpec};
pub use proxy_target::{
    AcmeChallengeType, AcmeTls, HeaderModifier, HeaderValue, PathForwarding, ProxyTargetSpec,
    TargetTimeouts, TlsConfig,
};
pub use route::{PathMatch, PathMatchType, RouteMatch, RouteSpec};
pub use tunnel::{TunnelMode, TunnelSpec};
pub use user_upstream::{Destinations, UserUpstreamSpec};

/// The API group of every Postern resource.
pub const GROUP: &str = "postern.io";
/// The only served version.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as it appears in manifests.
pub const API_VERSION: &str = "postern.io/v1alpha1";

/// A DNS hostname, optionally with one leading wildcard label.
pub const HOSTNAME_PATTERN: &str =
    r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A Kubernetes object name (DNS subdomain).
pub const NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
