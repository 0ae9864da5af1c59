//! Upstream login: Postern as an OAuth client of the identity provider an
//! authorization server is configured with, GitHub's web flow
//! ([`github::Github`]) or generic OpenID Connect ([`oidc::Oidc`]). Each
//! builds the URL the browser is sent to and turns the code the callback
//! receives into an [`Identity`](crate::identity::Identity).
//!
//! What it must not do: keep or hand out the provider's tokens (they are
//! dropped once the identity is read), log secrets, or decide who may pass
//! (allowlists are the guard's). It serves no HTTP; the data plane owns the
//! `/authorize` and callback endpoints and the state, nonce and PKCE
//! verifier they carry.

pub mod github;
pub mod http;
pub mod oidc;

pub use github::Github;
pub use http::{HttpClient, HttpError};
pub use oidc::{Discovered, Oidc};

use ::http::StatusCode;

/// Why a login did not produce an identity, split by what the data plane
/// does about it: [`Denied`](Self::Denied) and [`Refused`](Self::Refused)
/// end on an error page for the user; [`BadAnswer`](Self::BadAnswer) and
/// [`Unavailable`](Self::Unavailable) are the provider's fault (502/503).
/// No message contains a secret, code or token.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The user declined at the provider (the callback carried `error=`).
    #[error("{provider}: the login was declined ({error})")]
    Denied {
        provider: &'static str,
        error: String,
    },
    /// The provider refused the grant (bad or reused code, wrong client
    /// credentials, a revoked token), or what it sent failed verification
    /// (ID token signature, issuer, audience, nonce, expiry).
    #[error("{provider} refused the login: {reason}")]
    Refused {
        provider: &'static str,
        reason: String,
    },
    /// The provider answered, but not in its protocol: malformed JSON,
    /// missing fields, a discovery document for another issuer, 4xx where
    /// none is expected. Usually a configuration mistake.
    #[error("{provider} answered unexpectedly: {reason}")]
    BadAnswer {
        provider: &'static str,
        reason: String,
    },
    /// The provider could not be reached, timed out, or answered 5xx/429.
    #[error("{provider} is unavailable: {reason}")]
    Unavailable {
        provider: &'static str,
        reason: String,
    },
}

impl LoginError {
    /// The error a callback carrying `error` (and maybe
    /// `error_description`) stands for: the user said no, or the provider
    /// refused the authorization request.
    pub fn from_callback(provider: &'static str, error: &str, description: Option<&str>) -> Self {
        let error = match description {
            Some(d) if !d.is_empty() => format!("{}: {}", clean(error), clean(d)),
            _ => clean(error),
        };
        LoginError::Denied { provider, error }
    }

    /// The status the data plane answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            LoginError::Denied { .. } | LoginError::Refused { .. } => StatusCode::FORBIDDEN,
            LoginError::BadAnswer { .. } => StatusCode::BAD_GATEWAY,
            LoginError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// True when the provider, not the user, is at fault.
    pub fn is_provider_failure(&self) -> bool {
        matches!(
            self,
            LoginError::BadAnswer { .. } | LoginError::Unavailable { .. }
        )
    }

    /// A fixed label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            LoginError::Denied { .. } => "denied",
            LoginError::Refused { .. } => "refused",
            LoginError::BadAnswer { .. } => "bad_answer",
            LoginError::Unavailable { .. } => "unavailable",
        }
    }

    pub(crate) fn refused(provider: &'static str, reason: impl Into<String>) -> Self {
        LoginError::Refused {
            provider,
            reason: reason.into(),
        }
    }

    pub(crate) fn bad_answer(provider: &'static str, reason: impl Into<String>) -> Self {
        LoginError::BadAnswer {
            provider,
            reason: reason.into(),
        }
    }

    /// A transport failure is the provider being unavailable; an answer that
    /// does not parse is a bad answer.
    pub(crate) fn from_http(provider: &'static str, e: HttpError) -> Self {
        match e {
            HttpError::Json(..)
            | HttpError::TooLarge(_)
            | HttpError::InvalidUrl(_)
            | HttpError::InvalidHeader(_) => Self::bad_answer(provider, e.to_string()),
            _ => LoginError::Unavailable {
                provider,
                reason: e.to_string(),
            },
        }
    }

    /// The error for an HTTP status no step of the protocol expects.
    pub(crate) fn from_status(provider: &'static str, resp: &http::HttpResponse) -> Self {
        let reason = format!("HTTP {} from {}", resp.status.as_u16(), resp.target);
        if resp.status.is_server_error() || resp.status == StatusCode::TOO_MANY_REQUESTS {
            LoginError::Unavailable { provider, reason }
        } else {
            Self::bad_answer(provider, reason)
        }
    }

    /// The error for an OAuth error answer (`error`, `error_description`).
    pub(crate) fn from_oauth_error(
        provider: &'static str,
        error: &str,
        description: Option<&str>,
    ) -> Self {
        let reason = match description {
            Some(d) if !d.is_empty() => format!("{}: {}", clean(error), clean(d)),
            _ => clean(error),
        };
        Self::refused(provider, reason)
    }
}

/// Provider-supplied text made safe for a log line or an error page:
/// printable, and short.
fn clean(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}

/// A provider's OAuth error answer (RFC 6749 §5.2, and GitHub's HTTP 200
/// variant).
#[derive(Debug, serde::Deserialize)]
pub(crate) struct OauthErrorBody {
    pub error: String,
    #[serde(default)]
    pub error_description: Option<String>,
}

/// The body as JSON, or a bad answer.
pub(crate) fn json<T: serde::de::DeserializeOwned>(
    provider: &'static str,
    resp: &http::HttpResponse,
) -> Result<T, LoginError> {
    resp.json().map_err(|e| LoginError::from_http(provider, e))
}

/// GETs a public document (discovery, JWKS) that must answer 200 with JSON.
pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
    provider: &'static str,
    client: &HttpClient,
    url: &str,
) -> Result<T, LoginError> {
    let resp = client
        .get(url, &[])
        .await
        .map_err(|e| LoginError::from_http(provider, e))?;
    if resp.status != StatusCode::OK {
        return Err(LoginError::from_status(provider, &resp));
    }
    json(provider, &resp)
}

/// Appends `params` to `base` as a query, after any query `base` has.
pub(crate) fn with_query(base: &str, params: &[(&str, &str)]) -> String {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}{query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_errors_are_denials_with_clean_text() {
        let e = LoginError::from_callback("github", "access_denied", Some("no\nthanks"));
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        assert!(!e.is_provider_failure());
        assert_eq!(
            e.to_string(),
            "github: the login was declined (access_denied: nothanks)"
        );
    }

    #[test]
    fn transport_errors_are_unavailable_and_json_errors_bad_answers() {
        let e = LoginError::from_http("oidc", HttpError::Transport("x".into(), "refused".into()));
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        let e = LoginError::from_http("oidc", HttpError::Json("x".into(), "eof".into()));
        assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
        assert!(e.is_provider_failure());
    }

    #[test]
    fn query_appends_after_an_existing_one() {
        assert_eq!(
            with_query("https://a/b", &[("x", "1 2")]),
            "https://a/b?x=1+2"
        );
        assert_eq!(
            with_query("https://a/b?p=q", &[("x", "y")]),
            "https://a/b?p=q&x=y"
        );
    }
}
