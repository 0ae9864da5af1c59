//! What Postern's tokens say and how a guard decides on them: access
//! tokens (RFC 9068 style, `typ: at+jwt`) and browser session cookies
//! (`typ: postern-session+jwt`), both JWTs any data plane verifies
//! locally with the snapshot's keys; the scope check; and the allowlists
//! of an [`OauthPolicy`].
//!
//! Issuers and audiences are compared byte for byte: build them with
//! [`crate::resource::origin`] on both sides.

use std::time::Duration;

use postern_snapshot::OauthPolicy;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::identity::Identity;
use crate::keys::{KeyError, KeySet};
use crate::pkce::random_secret;

/// The header `typ` of access tokens (RFC 9068).
pub const ACCESS_TYP: &str = "at+jwt";
/// The header `typ` of session cookies: a cookie is never an access token.
pub const SESSION_TYP: &str = "postern-session+jwt";
/// How far the verifier's clock may disagree with the issuer's. Every
/// issuer and verifier is a Postern replica on NTP-synchronised nodes, so
/// a few seconds suffice; more would only stretch every token's life.
pub const CLOCK_SKEW_S: u64 = 5;

/// Why a token is refused; each maps to `invalid_token` with
/// [`TokenError::description`] as its `error_description`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("token signed with an unknown key")]
    UnknownKey,
    #[error("bad token signature")]
    BadSignature,
    #[error("wrong token type")]
    WrongType,
    #[error("wrong token issuer")]
    WrongIssuer,
    #[error("wrong token audience")]
    WrongAudience,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
}

impl TokenError {
    /// A short, stable text for `error_description`; says nothing a
    /// client could use to forge a token.
    pub fn description(&self) -> &'static str {
        match self {
            TokenError::Malformed => "The access token is malformed",
            TokenError::UnknownKey => "The access token was signed by an unknown key",
            TokenError::BadSignature => "The access token signature is invalid",
            TokenError::WrongType => "The token is not an access token",
            TokenError::WrongIssuer => "The access token was issued by another server",
            TokenError::WrongAudience => "The access token is for another resource",
            TokenError::Expired => "The access token expired",
            TokenError::NotYetValid => "The access token is not valid yet",
        }
    }
}

/// The claims of an access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    /// `provider:subject`, stable across renames.
    pub sub: String,
    /// The origin of the protected resource.
    pub aud: String,
    pub exp: u64,
    pub iat: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    pub jti: String,
    pub client_id: String,
    /// Space-separated.
    #[serde(default)]
    pub scope: String,
    pub login: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The claims of a browser session cookie for one protected site.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClaims {
    pub iss: String,
    /// The origin of the protected site (`https://host`).
    pub aud: String,
    pub sub: String,
    pub exp: u64,
    pub iat: u64,
    pub jti: String,
    pub login: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl AccessClaims {
    /// Claims for `identity`, valid from `now` (Unix seconds) for `ttl`.
    pub fn new(
        identity: &Identity,
        issuer: &str,
        audience: &str,
        client_id: &str,
        scope: &str,
        now: u64,
        ttl: Duration,
    ) -> AccessClaims {
        AccessClaims {
            iss: issuer.into(),
            sub: subject(identity),
            aud: audience.into(),
            exp: now.saturating_add(ttl.as_secs()),
            iat: now,
            nbf: None,
            jti: random_secret(),
            client_id: client_id.into(),
            scope: scope.into(),
            login: identity.login.clone(),
            email: identity.email.clone(),
            groups: identity.groups.clone(),
            name: identity.name.clone(),
        }
    }

    pub fn sign(&self, keys: &KeySet) -> Result<String, KeyError> {
        keys.sign(ACCESS_TYP, self)
    }
}

impl SessionClaims {
    /// A session for `identity` on the site whose origin is `audience`.
    pub fn new(
        identity: &Identity,
        issuer: &str,
        audience: &str,
        now: u64,
        ttl: Duration,
    ) -> SessionClaims {
        SessionClaims {
            iss: issuer.into(),
            aud: audience.into(),
            sub: subject(identity),
            exp: now.saturating_add(ttl.as_secs()),
            iat: now,
            jti: random_secret(),
            login: identity.login.clone(),
            email: identity.email.clone(),
            groups: identity.groups.clone(),
            name: identity.name.clone(),
        }
    }

    pub fn sign(&self, keys: &KeySet) -> Result<String, KeyError> {
        keys.sign(SESSION_TYP, self)
    }
}

/// A provider's user id made unique across providers.
fn subject(identity: &Identity) -> String {
    format!("{}:{}", identity.provider, identity.subject)
}

/// Verifies an access token: signature by a known key, `typ` `at+jwt`,
/// `iss` one of `issuers` and `aud` equal to `audience` (both byte-exact;
/// `aud` may be a string or an array holding it), `exp` not passed and
/// `nbf`/`iat` not ahead, within [`CLOCK_SKEW_S`]. `now` is Unix seconds.
pub fn verify_access(
    keys: &KeySet,
    token: &str,
    issuers: &[String],
    audience: &str,
    now: u64,
) -> Result<AccessClaims, TokenError> {
    verify_as(keys, ACCESS_TYP, token, issuers, audience, now)
}

/// [`verify_access`] for session cookies (`typ` `postern-session+jwt`).
pub fn verify_session(
    keys: &KeySet,
    token: &str,
    issuers: &[String],
    audience: &str,
    now: u64,
) -> Result<SessionClaims, TokenError> {
    verify_as(keys, SESSION_TYP, token, issuers, audience, now)
}

/// The registered claims every verification checks, whatever the kind.
#[derive(Deserialize)]
struct Registered {
    iss: String,
    aud: Audience,
    exp: u64,
    #[serde(default)]
    nbf: Option<u64>,
    #[serde(default)]
    iat: Option<u64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

fn verify_as<T: DeserializeOwned>(
    keys: &KeySet,
    typ: &str,
    token: &str,
    issuers: &[String],
    audience: &str,
    now: u64,
) -> Result<T, TokenError> {
    let mut claims: Value = keys.verify(typ, token)?;
    let registered = Registered::deserialize(&claims).map_err(|_| TokenError::Malformed)?;
    if !issuers.contains(&registered.iss) {
        return Err(TokenError::WrongIssuer);
    }
    let for_us = match &registered.aud {
        Audience::One(aud) => aud == audience,
        Audience::Many(auds) => auds.iter().any(|a| a == audience),
    };
    if !for_us {
        return Err(TokenError::WrongAudience);
    }
    if now >= registered.exp.saturating_add(CLOCK_SKEW_S) {
        return Err(TokenError::Expired);
    }
    let ahead = |t: Option<u64>| t.is_some_and(|t| t > now.saturating_add(CLOCK_SKEW_S));
    if ahead(registered.nbf) || ahead(registered.iat) {
        return Err(TokenError::NotYetValid);
    }
    // The typed claims hold one audience: the one just checked.
    claims["aud"] = Value::String(audience.into());
    serde_json::from_value(claims).map_err(|_| TokenError::Malformed)
}

/// Whether the space-separated `granted` scopes include every `required`.
pub fn has_scopes(granted: &str, required: &[String]) -> bool {
    required
        .iter()
        .all(|r| granted.split_ascii_whitespace().any(|g| g == r))
}

/// Whether a user passes a policy's allowlists: any match passes, and
/// all three lists empty let everyone who logged in through. Logins and
/// organisations compare case-insensitively (as GitHub's do); e-mail
/// addresses lowercase, `*@domain` covering that domain but not its
/// subdomains.
pub fn allowed(policy: &OauthPolicy, login: &str, email: Option<&str>, groups: &[String]) -> bool {
    if policy.allowed_users.is_empty()
        && policy.allowed_orgs.is_empty()
        && policy.allowed_emails.is_empty()
    {
        return true;
    }
    let user = policy
        .allowed_users
        .iter()
        .any(|u| u.eq_ignore_ascii_case(login));
    let org = policy
        .allowed_orgs
        .iter()
        .any(|o| groups.iter().any(|g| g.eq_ignore_ascii_case(o)));
    user || org || email.is_some_and(|e| email_allowed(&policy.allowed_emails, e))
}

fn email_allowed(allowed: &[String], email: &str) -> bool {
    let email = email.to_ascii_lowercase();
    let domain = email.rsplit_once('@').map(|(_, d)| d);
    allowed.iter().any(|entry| {
        let entry = entry.to_ascii_lowercase();
        match entry.strip_prefix("*@") {
            Some(wanted) => domain == Some(wanted),
            None => entry == email,
        }
    })
}

#[cfg(test)]
#[path = "tokens_tests.rs"]
mod tests;
