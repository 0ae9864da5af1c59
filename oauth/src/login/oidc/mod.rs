//! Generic OpenID Connect login: discovery, the authorize URL (code flow,
//! PKCE S256, nonce), the token request, the ID token verified against the
//! provider's JWKS, and the identity read from its claims (plus userinfo
//! when the ID token carries no e-mail).
//!
//! Discovery and the JWKS are cached inside an [`Oidc`] and shared by its
//! clones; a failure that a stale document could explain (an unreachable
//! endpoint, a JWKS fetch that fails) drops the cache so the next login
//! discovers afresh. The provider's tokens never leave [`Oidc::finish`].

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ::http::StatusCode;
use ::http::header::AUTHORIZATION;
use base64::Engine;
use postern_snapshot::OidcProvider;
use serde::Deserialize;
use serde_json::Value;

mod identity;
mod idtoken;

use self::identity::{identity_from, merge_userinfo};
use self::idtoken::{Claims, Expected, Failure, KeySet};
use super::http::HttpClient;
use super::{LoginError, OauthErrorBody, get_json, json, with_query};
use crate::identity::Identity;

const PROVIDER: &str = "oidc";
const DISCOVERY_TTL: Duration = Duration::from_secs(300);
const JWKS_TTL: Duration = Duration::from_secs(3600);
/// A token with an unknown kid refetches the JWKS, but not more often than
/// this, whatever tokens arrive.
const JWKS_MIN_REFETCH: Duration = Duration::from_secs(10);

/// The parts of the provider's discovery document a login uses.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Discovered {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    /// Absent means `client_secret_basic` (OpenID Connect Discovery §3).
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
}

/// A configured OpenID Connect provider with its discovery and key caches.
#[derive(Clone)]
pub struct Oidc {
    issuer: String,
    client_id: String,
    client_secret: Option<String>,
    scope: String,
    cache: Arc<Mutex<Cache>>,
}

#[derive(Default)]
struct Cache {
    discovered: Option<(Instant, Arc<Discovered>)>,
    jwks: Option<(Instant, Arc<KeySet>)>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    id_token: Option<String>,
}

impl From<&OidcProvider> for Oidc {
    fn from(p: &OidcProvider) -> Self {
        // Without `openid` there is no ID token, and so no login.
        let mut scopes = vec!["openid"];
        scopes.extend(
            p.scopes
                .iter()
                .map(String::as_str)
                .filter(|s| *s != "openid"),
        );
        Oidc {
            issuer: p.issuer.clone(),
            client_id: p.client_id.clone(),
            client_secret: p.client_secret.clone().filter(|s| !s.is_empty()),
            scope: scopes.join(" "),
            cache: Arc::default(),
        }
    }
}

impl Oidc {
    /// The provider's discovery document, from the cache while fresh. Its
    /// `issuer` must equal the configured one byte for byte.
    pub async fn discover(&self, http: &HttpClient) -> Result<Arc<Discovered>, LoginError> {
        if let Some((at, doc)) = &self.lock().discovered
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(doc.clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        );
        let doc: Discovered = get_json(PROVIDER, http, &url).await?;
        if doc.issuer != self.issuer {
            return Err(LoginError::bad_answer(
                PROVIDER,
                format!(
                    "the discovery document is for issuer {:?}, not the configured {:?}",
                    doc.issuer, self.issuer
                ),
            ));
        }
        let doc = Arc::new(doc);
        self.lock().discovered = Some((Instant::now(), doc.clone()));
        Ok(doc)
    }

    /// Where to send the browser: the provider's authorization endpoint
    /// with the code flow, PKCE (S256), the nonce and the configured scopes.
    pub fn authorize_url(
        &self,
        discovered: &Discovered,
        redirect_uri: &str,
        state: &str,
        nonce: &str,
        code_challenge: &str,
    ) -> String {
        with_query(
            &discovered.authorization_endpoint,
            &[
                ("response_type", "code"),
                ("client_id", self.client_id.as_str()),
                ("redirect_uri", redirect_uri),
                ("scope", self.scope.as_str()),
                ("state", state),
                ("nonce", nonce),
                ("code_challenge", code_challenge),
                ("code_challenge_method", "S256"),
            ],
        )
    }

    /// Exchanges the callback's `code`, verifies the ID token (signature,
    /// issuer, audience, expiry, nonce) and reads who logged in.
    pub async fn finish(
        &self,
        http: &HttpClient,
        code: &str,
        redirect_uri: &str,
        code_verifier: &str,
        nonce: &str,
    ) -> Result<Identity, LoginError> {
        let discovered = self.discover(http).await?;
        let answer = self
            .exchange(http, &discovered, code, redirect_uri, code_verifier)
            .await
            .inspect_err(|e| self.forget_on(e))?;
        let id_token = answer
            .id_token
            .ok_or_else(|| LoginError::bad_answer(PROVIDER, "no id_token in the token answer"))?;
        let claims = self
            .verify(http, &discovered, &id_token, nonce)
            .await
            .inspect_err(|e| self.forget_on(e))?;
        let mut identity = identity_from(&claims);
        if identity.email.is_none()
            && let (Some(endpoint), Some(token)) =
                (&discovered.userinfo_endpoint, &answer.access_token)
        {
            merge_userinfo(http, endpoint, token, &mut identity).await;
        }
        Ok(identity)
    }

    async fn exchange(
        &self,
        http: &HttpClient,
        d: &Discovered,
        code: &str,
        redirect_uri: &str,
        code_verifier: &str,
    ) -> Result<TokenAnswer, LoginError> {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", code_verifier),
        ];
        // client_secret_basic when allowed, else the secret in the form;
        // a public client only names itself.
        let basic = match &self.client_secret {
            Some(secret) if supports_basic(d) => Some(basic_auth(&self.client_id, secret)),
            Some(secret) => {
                form.push(("client_id", self.client_id.as_str()));
                form.push(("client_secret", secret.as_str()));
                None
            }
            None => {
                form.push(("client_id", self.client_id.as_str()));
                None
            }
        };
        let headers: Vec<_> = basic.iter().map(|b| (AUTHORIZATION, b.as_str())).collect();
        let resp = http
            .post_form(&d.token_endpoint, &headers, &form)
            .await
            .map_err(|e| LoginError::from_http(PROVIDER, e))?;
        if resp.status == StatusCode::OK {
            return json(PROVIDER, &resp);
        }
        match resp.json::<OauthErrorBody>() {
            Ok(err) if resp.status.is_client_error() => Err(LoginError::from_oauth_error(
                PROVIDER,
                &err.error,
                err.error_description.as_deref(),
            )),
            _ => Err(LoginError::from_status(PROVIDER, &resp)),
        }
    }

    /// Verifies with the cached JWKS, fetching it again once when the token
    /// names a key the cache lacks (the provider rotated).
    async fn verify(
        &self,
        http: &HttpClient,
        d: &Discovered,
        token: &str,
        nonce: &str,
    ) -> Result<Claims, LoginError> {
        let expected = Expected {
            issuer: &self.issuer,
            client_id: &self.client_id,
            nonce,
            now: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        let keys = self.keys(http, d, false).await?;
        let outcome = match idtoken::verify(&keys, token, &expected) {
            Err(Failure::UnknownKey) => {
                let keys = self.keys(http, d, true).await?;
                idtoken::verify(&keys, token, &expected)
            }
            other => other,
        };
        outcome.map_err(|f| match f {
            Failure::UnknownKey => {
                LoginError::refused(PROVIDER, "the ID token's key is not in the JWKS")
            }
            Failure::Invalid(why) => LoginError::refused(PROVIDER, why),
        })
    }

    async fn keys(
        &self,
        http: &HttpClient,
        d: &Discovered,
        refetch: bool,
    ) -> Result<Arc<KeySet>, LoginError> {
        if let Some((at, keys)) = &self.lock().jwks {
            let age = at.elapsed();
            if age < JWKS_TTL && (!refetch || age < JWKS_MIN_REFETCH) {
                return Ok(keys.clone());
            }
        }
        let doc: Value = get_json(PROVIDER, http, &d.jwks_uri).await?;
        let keys = Arc::new(KeySet::parse(&doc).map_err(|e| LoginError::bad_answer(PROVIDER, e))?);
        self.lock().jwks = Some((Instant::now(), keys.clone()));
        Ok(keys)
    }

    /// Drops the cached documents after a failure they may explain.
    fn forget_on(&self, e: &LoginError) {
        if e.is_provider_failure() {
            *self.lock() = Cache::default();
        }
    }

    // The lock guards plain data and is never held across an await.
    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn supports_basic(d: &Discovered) -> bool {
    d.token_endpoint_auth_methods_supported
        .as_ref()
        .is_none_or(|m| m.iter().any(|m| m == "client_secret_basic"))
}

/// RFC 6749 §2.3.1: both parts form-encoded before base64.
fn basic_auth(id: &str, secret: &str) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = format!("{}:{}", enc(id), enc(secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oidc(secret: Option<&str>, scopes: &[&str]) -> Oidc {
        Oidc::from(&OidcProvider {
            issuer: "https://idp.example".into(),
            client_id: "postern".into(),
            client_secret: secret.map(str::to_owned),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        })
    }

    fn discovered(methods: Option<&[&str]>) -> Discovered {
        Discovered {
            issuer: "https://idp.example".into(),
            authorization_endpoint: "https://idp.example/auth?tenant=t".into(),
            token_endpoint: "https://idp.example/token".into(),
            jwks_uri: "https://idp.example/jwks".into(),
            userinfo_endpoint: None,
            token_endpoint_auth_methods_supported: methods
                .map(|m| m.iter().map(|s| (*s).to_owned()).collect()),
        }
    }

    #[test]
    fn authorize_url_always_asks_for_openid() {
        let url = oidc(None, &["email", "openid", "groups"]).authorize_url(
            &discovered(None),
            "https://a/cb",
            "s",
            "n",
            "c",
        );
        assert_eq!(
            url,
            "https://idp.example/auth?tenant=t&response_type=code&client_id=postern\
             &redirect_uri=https%3A%2F%2Fa%2Fcb&scope=openid+email+groups&state=s&nonce=n\
             &code_challenge=c&code_challenge_method=S256"
        );
    }

    #[test]
    fn basic_auth_when_offered_or_unsaid() {
        assert!(supports_basic(&discovered(None)));
        assert!(supports_basic(&discovered(Some(&["client_secret_basic"]))));
        assert!(!supports_basic(&discovered(Some(&[
            "client_secret_post",
            "none"
        ]))));
        // "a:b" and "p w" are encoded before base64, per RFC 6749.
        assert_eq!(basic_auth("a:b", "p w"), "Basic YSUzQWI6cCt3");
    }

    #[test]
    fn debug_hides_the_secret() {
        assert!(!format!("{:?}", oidc(Some("shh"), &[])).contains("shh"));
    }
}
