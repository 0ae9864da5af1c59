//! The OAuth 2.1 authorization server a ProxyTarget can serve instead of a
//! backend: who users log in with, which keys sign its tokens, how long
//! tokens and sessions live. Sites protected by it name it in their
//! `auth.server`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Duration, LocalRef, SecretKeyRef};

/// Postern's authorization server on the target's hostnames. Its issuer is
/// `https://<hostname>` (with the port the client used, when not 443).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.github) || has(self.oidc)", "message": "an authorization server needs github or oidc login"}
]))]
pub struct AuthorizationServerSpec {
    /// Log users in through GitHub (or GitHub Enterprise Server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github: Option<GithubLogin>,
    /// Log users in through an OpenID Connect provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<OidcLogin>,
    /// A Secret whose every key `<kid>.pem` is a PKCS#8 private key (EC
    /// P-256 for ES256, RSA for RS256). Every key is published in JWKS; the
    /// key whose name sorts last signs, so rotation is adding a key with a
    /// later name and removing the old one once its tokens expired.
    /// Absent: the operator (or standalone mode) generates an ES256 key and
    /// keeps it in the Secret `<target>-oauth-keys`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_keys_secret_ref: Option<LocalRef>,
    /// Scopes clients may ask for, besides the ones protected sites require.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 100),
        inner(
            length(min = 1, max = 128),
            regex(pattern = r"^[\x21\x23-\x5b\x5d-\x7e]+$")
        )
    )]
    pub scopes: Option<Vec<String>>,
    /// Lifetime of access tokens (JWTs). Default 1h, at most 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token_ttl: Option<Duration>,
    /// Lifetime of a refresh-token family since its login. Default 720h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token_ttl: Option<Duration>,
    /// Lifetime of a browser session (the login cookie). Default 12h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_ttl: Option<Duration>,
    /// Accept dynamic client registration (RFC 7591) at `/register`.
    /// Default true: MCP clients need it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamic_registration: Option<bool>,
    /// Advertise and accept Client ID Metadata Documents (an https URL as
    /// client_id). Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id_metadata_documents: Option<bool>,
}

/// GitHub's OAuth web flow. For GitHub Enterprise Server, `webUrl` is
/// `https://HOST` and `apiUrl` is `https://HOST/api/v3`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GithubLogin {
    /// The OAuth App's client id.
    #[schemars(length(min = 1, max = 256))]
    pub client_id: String,
    /// The OAuth App's client secret (default key `clientSecret`).
    pub client_secret_ref: SecretKeyRef,
    /// Default `https://github.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = r"^https?://[^\s?#@]+$"))]
    pub web_url: Option<String>,
    /// Default `https://api.github.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = r"^https?://[^\s?#@]+$"))]
    pub api_url: Option<String>,
}

/// A generic OpenID Connect provider, found through its discovery document.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OidcLogin {
    /// The issuer; `<issuerUrl>/.well-known/openid-configuration` must name
    /// exactly this issuer.
    #[schemars(length(max = 2048), regex(pattern = r"^https?://[^\s?#@]+$"))]
    pub issuer_url: String,
    /// The client id this authorization server was registered with at the
    /// OpenID provider.
    #[schemars(length(min = 1, max = 256))]
    pub client_id: String,
    /// The client secret (default key `clientSecret`). Absent: a public
    /// client (PKCE only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_ref: Option<SecretKeyRef>,
    /// Scopes asked of the provider. Default `openid email profile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 50),
        inner(
            length(min = 1, max = 128),
            regex(pattern = r"^[\x21\x23-\x5b\x5d-\x7e]+$")
        )
    )]
    pub scopes: Option<Vec<String>>,
}

/// The request headers that carry a logged-in user's identity to the
/// backend. Each defaults to the name shown; an empty string sends none.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdentityHeaders {
    /// Default `X-Forwarded-User`: the login name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256), regex(pattern = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]*$"))]
    pub user: Option<String>,
    /// Default `X-Forwarded-Email`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256), regex(pattern = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]*$"))]
    pub email: Option<String>,
    /// Default `X-Forwarded-Groups`: the organisations, comma-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256), regex(pattern = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]*$"))]
    pub groups: Option<String>,
}

/// The authorization server a protected site trusts: a ProxyTarget with
/// `authorizationServer`, in the same namespace.
pub type ServerRef = LocalRef;
