//! What the OAuth capability needs from a snapshot: an authorization server
//! on a site (its login providers, signing keys and lifetimes), and the
//! policy of a site or route it protects ([`OauthPolicy`]).
//!
//! Secrets (client secrets of the providers, private signing keys) travel
//! here like TLS keys do; `Debug` never prints them.

use serde::{Deserialize, Serialize};

/// An authorization server served on a site's hostnames.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthorizationServer {
    /// Sorted by kid; the last one signs, all are published in JWKS.
    pub signing_keys: Vec<SigningKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github: Option<GithubProvider>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<OidcProvider>,
    /// Every scope this server grants: its own list and every scope a site
    /// it protects requires. Sorted, no duplicates.
    pub scopes: Vec<String>,
    pub access_token_ttl_s: u64,
    pub refresh_token_ttl_s: u64,
    pub session_ttl_s: u64,
    pub dynamic_registration: bool,
    pub client_id_metadata_documents: bool,
    /// Hostnames of the sites whose auth names this server (their
    /// canonical resources are `https://<hostname>`). Sorted.
    pub resources: Vec<String>,
}

impl std::fmt::Debug for AuthorizationServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorizationServer")
            .field(
                "kids",
                &self.signing_keys.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            )
            .field("github", &self.github)
            .field("oidc", &self.oidc)
            .field("scopes", &self.scopes)
            .field("resources", &self.resources)
            .finish_non_exhaustive()
    }
}

/// The signature algorithm of a key, decided by the key's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum SigningAlg {
    ES256,
    RS256,
}

/// A private signing key (PKCS#8 PEM) and its key id.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SigningKey {
    pub kid: String,
    pub alg: SigningAlg,
    pub private_key_pem: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// GitHub's OAuth web flow; the bases are configurable for GitHub
/// Enterprise Server. No trailing slash.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GithubProvider {
    pub client_id: String,
    pub client_secret: String,
    pub web_url: String,
    pub api_url: String,
}

impl std::fmt::Debug for GithubProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubProvider")
            .field("client_id", &self.client_id)
            .field("web_url", &self.web_url)
            .field("api_url", &self.api_url)
            .finish_non_exhaustive()
    }
}

/// An OpenID Connect provider, found through discovery at run time.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OidcProvider {
    /// No trailing slash unless the provider's issuer has one.
    pub issuer: String,
    pub client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcProvider")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// Who passes a site or route protected by an authorization server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OauthPolicy {
    /// The id (`namespace/name`) of the site serving the authorization
    /// server; its hostnames are the accepted issuers.
    pub server: String,
    /// The issuer hostnames, sorted; the first is the one advertised.
    pub issuer_hosts: Vec<String>,
    /// Allowlists, sorted; all empty means any user who logged in.
    pub allowed_users: Vec<String>,
    pub allowed_orgs: Vec<String>,
    /// Exact addresses, or `*@domain` for a whole domain; lowercase.
    pub allowed_emails: Vec<String>,
    /// Scopes a token must carry, sorted.
    pub scopes: Vec<String>,
    pub identity_headers: IdentityHeaderNames,
}

/// Lowercase header names carrying identity to the backend; empty: not sent.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IdentityHeaderNames {
    pub user: String,
    pub email: String,
    pub groups: String,
}

impl Default for IdentityHeaderNames {
    fn default() -> Self {
        IdentityHeaderNames {
            user: "x-forwarded-user".into(),
            email: "x-forwarded-email".into(),
            groups: "x-forwarded-groups".into(),
        }
    }
}
