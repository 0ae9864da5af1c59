//! Types several resources share: references, backends, auth and status.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A reference to an object in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LocalRef {
    /// Name of the object, in the referring object's namespace.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
}

/// A key of a Secret in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SecretKeyRef {
    /// Name of the Secret, in the referring object's namespace.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
    /// Key within the Secret's data. Each field that takes a SecretKeyRef says
    /// which key it reads when this is left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: Option<String>,
}

impl SecretKeyRef {
    pub fn key_or<'a>(&'a self, default: &'a str) -> &'a str {
        self.key.as_deref().unwrap_or(default)
    }
}

/// A Service in the same namespace and one of its ports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ServiceBackend {
    /// Name of the Service.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Port number of the Service (not the target port of its pods).
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
}

/// Where requests go: a Service in the cluster or a URL. Exactly one is set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.service) != has(self.url)", "message": "exactly one of service or url must be set"},
    {"rule": "!has(self.tls) || (has(self.url) && self.url.startsWith('https://'))", "message": "tls applies only to an https:// url"}
]))]
pub struct Backend {
    /// A Service in the same namespace, reached through its cluster DNS name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceBackend>,
    /// An http:// or https:// URL with a host and optional port, and no path,
    /// query or credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = r"^https?://[^/?#@\s]+/?$"))]
    pub url: Option<String>,
    /// The HTTP version spoken to the backend: `http1` (the default) or
    /// `http2` (h2c with prior knowledge over http://, ALPN h2 over https://;
    /// needed for gRPC). WebSocket upgrades need http1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<BackendProtocol>,
    /// Verification of an https:// backend. Absent: the system's roots and
    /// the URL's host as the server name. Verification is never turned off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<BackendTls>,
    /// Send a PROXY protocol header (`v1` or `v2`) naming the client on each
    /// backend connection. Such connections serve one client each, so they
    /// are not pooled. Absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocolVersion>,
}

impl Backend {
    /// Neither a Service nor a URL: the target serves no backend.
    pub fn is_unset(&self) -> bool {
        self.service.is_none() && self.url.is_none()
    }
}

/// The HTTP version spoken to a backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BackendProtocol {
    /// HTTP/1.1 with keep-alive.
    #[default]
    Http1,
    /// HTTP/2 only: h2c over http://, ALPN h2 over https://.
    Http2,
}

/// A PROXY protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocolVersion {
    /// The text header (`PROXY TCP4 ...`).
    V1,
    /// The binary header.
    V2,
}

/// How an https:// backend's certificate is verified.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendTls {
    /// A Secret holding the PEM CA certificate(s) to trust instead of the
    /// system's roots (key `ca.crt` unless `key` says otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// The name sent as SNI and checked against the certificate, when it is
    /// not the URL's host (for example a backend reached by IP address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub server_name: Option<String>,
}

/// How a host or route authenticates requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuthType {
    /// No authentication.
    #[default]
    None,
    /// A static bearer token from a Secret.
    Bearer,
    /// Postern's OAuth 2.1 authorization server.
    Oauth,
}

/// Authentication policy of a ProxyTarget, or a Route's override of it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.type != 'bearer' || has(self.tokensSecretRef)", "message": "auth type bearer needs tokensSecretRef"},
    {"rule": "self.type == 'oauth' || (!has(self.allowedUsers) && !has(self.allowedOrgs) && !has(self.allowedEmails) && !has(self.scopes) && !has(self.server) && !has(self.identityHeaders))", "message": "server, allowedUsers, allowedOrgs, allowedEmails, scopes and identityHeaders apply only to auth type oauth"}
]))]
pub struct AuthPolicy {
    /// none, bearer or oauth.
    #[serde(rename = "type")]
    pub kind: AuthType,
    /// For bearer: a Secret whose every value is one accepted token (any key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_secret_ref: Option<LocalRef>,
    /// For oauth: the ProxyTarget (same namespace) whose
    /// `authorizationServer` issues the tokens. A Route's oauth override
    /// without one uses its target's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<crate::ServerRef>,
    /// For oauth: users allowed on this host (login names of the identity
    /// provider). A user passes when any allowlist names them; with no
    /// allowlist at all, every user who logs in passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1000), inner(length(min = 1, max = 256)))]
    pub allowed_users: Option<Vec<String>>,
    /// For oauth: organisations (GitHub orgs, OIDC `groups`) whose members
    /// are allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1000), inner(length(min = 1, max = 256)))]
    pub allowed_orgs: Option<Vec<String>>,
    /// For oauth: verified e-mail addresses allowed, exact
    /// (`ada@example.com`) or a whole domain (`*@example.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 1000),
        inner(length(min = 3, max = 320), regex(pattern = r"^[^@\s]+@[^@\s]+$"))
    )]
    pub allowed_emails: Option<Vec<String>>,
    /// For oauth: the headers that carry the user's identity to the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_headers: Option<crate::IdentityHeaders>,
    /// For oauth: scopes an access token must carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 100),
        inner(
            length(min = 1, max = 128),
            regex(pattern = r"^[\x21\x23-\x5b\x5d-\x7e]+$")
        )
    )]
    pub scopes: Option<Vec<String>>,
}

/// True, False or Unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// The shape of Kubernetes' metav1.Condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Accepted, Programmed, CertificateReady or AgentConnected.
    #[serde(rename = "type")]
    pub kind: String,
    pub status: ConditionStatus,
    /// A CamelCase word for machines.
    pub reason: String,
    /// A sentence for people.
    #[serde(default)]
    pub message: String,
    /// The generation the condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the status last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

/// The status every Postern resource reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    /// The generation the operator last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Accepted, Programmed and, where they apply, CertificateReady and AgentConnected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The ACME certificate a ProxyTarget serves, once issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateStatus>,
    /// Names this object claimed while an object of another namespace held
    /// them. Kept for as long as the object claims them, so the claim stays
    /// refused after the holder goes away unless the operator's name policy
    /// allows takeover; deleting and recreating the object clears it.
    #[serde(default, skip_serializing_if = "LostClaims::is_empty")]
    pub lost_claims: LostClaims,
}

/// Hostnames and proxy user names an object lost to another namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LostClaims {
    /// Lowercased hostnames (ProxyTargets and Tunnels).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// Proxy user names (UserUpstreams).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
}

impl LostClaims {
    pub fn is_empty(&self) -> bool {
        self.hostnames.is_empty() && self.users.is_empty()
    }
}

/// What `kubectl get` shows of an ACME certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateStatus {
    /// The issuer's name from the operator's configuration.
    pub issuer: String,
    /// RFC 3339.
    pub not_after: String,
    /// When renewal starts (RFC 3339).
    pub renew_after: String,
}
