//! ProxyTarget: one site, its hostnames, its backend, TLS and auth.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{AuthPolicy, Backend, Duration, LocalRef};

/// Hostnames served by one backend. Hostnames are unique across the cluster:
/// when two ProxyTargets claim one, the older keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.redirectHttp) || !self.redirectHttp || has(self.tls)", "message": "redirectHttp needs tls"},
    {"rule": "has(self.backend) != has(self.authorizationServer)", "message": "exactly one of backend or authorizationServer must be set"},
    {"rule": "!has(self.authorizationServer) || has(self.tls)", "message": "authorizationServer needs tls (its issuer is https)"},
    {"rule": "!has(self.authorizationServer) || !has(self.auth)", "message": "an authorization server takes no auth policy"}
]))]
pub struct ProxyTargetSpec {
    /// Hostnames this target serves: exact (`api.example.com`) or one-label
    /// wildcards (`*.example.com`). Lowercase; ports are not part of a hostname.
    #[schemars(
        length(min = 1, max = 100),
        inner(
            length(min = 1, max = 253),
            regex(
                pattern = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
            )
        )
    )]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub hostnames: Vec<String>,
    /// Where requests that no Route claims go. Exactly one of backend and
    /// authorizationServer is set.
    #[serde(default, skip_serializing_if = "Backend::is_unset")]
    pub backend: Backend,
    /// Serve Postern's OAuth 2.1 authorization server on these hostnames
    /// instead of proxying to a backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_server: Option<crate::AuthorizationServerSpec>,
    /// TLS termination. Absent: the target is served over plain HTTP only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Answer plain HTTP requests with a redirect to HTTPS (needs tls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_http: Option<bool>,
    /// Authentication in front of the backend. Absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthPolicy>,
    /// Timeouts towards the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<TargetTimeouts>,
    /// Send the client's Host header to the backend unchanged. Default
    /// false: the backend sees its own `host:port`, and the original host
    /// travels in X-Forwarded-Host and Forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preserve_host: Option<bool>,
    /// Which spelling of the path the backend gets. Routes always match
    /// (and auth is always decided) on the normalised path: percent-encoded
    /// unreserved characters decoded, `//` merged, `.` and `..` removed;
    /// an encoded `/` or `\`, NUL or non-UTF-8 is refused with 400.
    /// `Normalized` (default) forwards that path; `AsReceived` forwards the
    /// client's spelling for backends that need it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_forwarding: Option<PathForwarding>,
    /// Headers changed on requests before they reach the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers: Option<HeaderModifier>,
    /// Headers changed on responses before they reach the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_headers: Option<HeaderModifier>,
}

/// Header changes, applied in the order remove, set, add. Hop-by-hop
/// headers, Host, Content-Length and Transfer-Encoding cannot be changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HeaderModifier {
    /// Names of headers to drop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 64),
        inner(
            length(min = 1, max = 256),
            regex(pattern = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
        )
    )]
    pub remove: Option<Vec<String>>,
    /// Headers to set, replacing any value already there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub set: Option<Vec<HeaderValue>>,
    /// Headers to append, keeping any value already there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub add: Option<Vec<HeaderValue>>,
}

/// One header and its value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HeaderValue {
    /// The header name (case-insensitive).
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
    )]
    pub name: String,
    /// The value: printable text, no line breaks.
    #[schemars(length(max = 4096), regex(pattern = r"^[\t\x20-\x7e]*$"))]
    pub value: String,
}

/// Where the certificate comes from. Exactly one of secretRef and acme is set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.secretRef) != has(self.acme)", "message": "exactly one of secretRef or acme must be set"}
]))]
pub struct TlsConfig {
    /// A `kubernetes.io/tls` Secret with keys `tls.crt` and `tls.key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalRef>,
    /// A certificate ordered over ACME for every hostname of the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acme: Option<AcmeTls>,
}

/// The path a backend receives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PathForwarding {
    /// The normalised path that routing and auth saw.
    #[default]
    Normalized,
    /// The path exactly as the client sent it.
    AsReceived,
}

/// How the CA checks that this gateway serves the hostnames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AcmeChallengeType {
    /// A token over plain HTTP on port 80 (the `--http-addr` listener).
    #[default]
    #[serde(rename = "http-01")]
    Http01,
    /// A special certificate over TLS on port 443 (the `--https-addr`
    /// listener), for sites with no plain HTTP.
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

/// ACME settings of a target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AcmeTls {
    /// The name of an issuer the operator's configuration defines:
    /// `production` and `staging` (Let's Encrypt) are built in. An unknown
    /// name gets Accepted=False with reason UnknownIssuer.
    #[serde(default = "production")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9-]+$"))]
    pub issuer: String,
    /// http-01 (default) or tls-alpn-01.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<AcmeChallengeType>,
}

impl Default for AcmeTls {
    fn default() -> Self {
        AcmeTls {
            issuer: production(),
            challenge: None,
        }
    }
}

fn production() -> String {
    "production".to_string()
}

/// Timeouts towards the backend; each has a default when left out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetTimeouts {
    /// Establishing the TCP (and TLS) connection. Default 5s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<Duration>,
    /// From the request sent to the response headers. Default 60s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_headers: Option<Duration>,
    /// A connection with no traffic either way. Default 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<Duration>,
}
