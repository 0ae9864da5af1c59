//! The auth seam in front of a site or route: a [`Guard`] compiled once
//! per snapshot and checked per request, before anything reaches a backend.
//!
//! `none` and `bearer` are checked here. `oauth` is claimed by the oauth
//! capability's authenticate hook (`crate::oauth`); a build or a process
//! without it answers 501 rather than let anyone through. The guard never
//! claims `/token`, `/register` and friends on a protected host: those
//! paths belong to the backend, and the authorization server has hosts of
//! its own.

use http::{HeaderMap, header};
use postern_snapshot::{AuthRule, OauthPolicy};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::errors::ProxyError;

/// Who may pass, compiled from an [`AuthRule`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guard {
    Open,
    /// SHA-256 digests of the accepted tokens.
    Bearer(Vec<[u8; 32]>),
    /// An access token or browser session from an authorization server:
    /// checked by the oauth capability's authenticate hook.
    Oauth(Box<OauthPolicy>),
}

impl Guard {
    pub fn compile(rule: &AuthRule) -> Guard {
        match rule {
            AuthRule::None => Guard::Open,
            AuthRule::Bearer { token_sha256 } => {
                Guard::Bearer(token_sha256.iter().filter_map(|h| hex32(h)).collect())
            }
            AuthRule::Oauth(policy) => Guard::Oauth(Box::new(policy.clone())),
        }
    }

    /// Lets the request through or says why not.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ProxyError> {
        match self {
            Guard::Open => Ok(()),
            Guard::Bearer(digests) => {
                let Some(token) = bearer_token(headers) else {
                    return Err(ProxyError::Unauthorized { presented: false });
                };
                let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
                // Compare against every digest so timing does not tell which matched.
                let matched = digests
                    .iter()
                    .fold(subtle::Choice::from(0), |acc, d| acc | d.ct_eq(&presented));
                if bool::from(matched) {
                    Ok(())
                } else {
                    Err(ProxyError::Unauthorized { presented: true })
                }
            }
            Guard::Oauth(_) => Err(ProxyError::AuthUnavailable),
        }
    }
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive).
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn hex32(text: &str) -> Option<[u8; 32]> {
    let bytes = hex_decode(text)?;
    bytes.try_into().ok()
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use postern_snapshot::sha256_hex;

    fn with_auth(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(value).expect("value"),
        );
        h
    }

    #[test]
    fn bearer_accepts_only_listed_tokens() {
        let guard = Guard::compile(&AuthRule::Bearer {
            token_sha256: vec![sha256_hex(b"one"), sha256_hex(b"two")],
        });
        assert_eq!(guard.check(&with_auth("Bearer two")), Ok(()));
        assert_eq!(guard.check(&with_auth("bearer one")), Ok(()));
        assert_eq!(
            guard.check(&with_auth("Bearer three")),
            Err(ProxyError::Unauthorized { presented: true })
        );
        assert_eq!(
            guard.check(&with_auth("Basic b25lOg==")),
            Err(ProxyError::Unauthorized { presented: false })
        );
        assert_eq!(
            guard.check(&HeaderMap::new()),
            Err(ProxyError::Unauthorized { presented: false })
        );
    }

    #[test]
    fn open_passes_and_unclaimed_oauth_is_unavailable() {
        assert_eq!(
            Guard::compile(&AuthRule::None).check(&HeaderMap::new()),
            Ok(())
        );
        let oauth = Guard::compile(&AuthRule::Oauth(OauthPolicy::default()));
        assert_eq!(
            oauth.check(&with_auth("Bearer x")),
            Err(ProxyError::AuthUnavailable)
        );
    }
}
