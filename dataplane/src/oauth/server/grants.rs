//! Turning grants into tokens, shared by the token endpoint and the
//! protected hosts' browser callback: redeeming a code (single use, bound
//! to client, redirect URI and PKCE verifier; a second use revokes what the
//! first issued) and minting access tokens.

use std::time::Duration;

use http::{Response, StatusCode};
use postern_oauth::codes::{self, CodeError, CodeGrant};
use postern_oauth::identity::Identity;
use postern_oauth::tokens::AccessClaims;
use postern_oauth::{pkce, refresh};

use crate::oauth::Oauth;
use crate::oauth::tables::Server;
use crate::oauth::web;
use crate::reverse::ProxyBody;

/// Why a grant cannot be redeemed.
#[derive(Debug)]
pub enum GrantError {
    /// `invalid_grant` and why.
    Invalid(&'static str),
    /// The state store is unreachable.
    Unavailable,
}

impl GrantError {
    /// The token endpoint's answer.
    pub fn json(&self) -> Response<ProxyBody> {
        match self {
            GrantError::Invalid(why) => {
                web::oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", why)
            }
            GrantError::Unavailable => web::unavailable("token"),
        }
    }

    /// A browser's answer.
    pub fn page(&self) -> Response<ProxyBody> {
        match self {
            GrantError::Invalid(why) => web::error_page(StatusCode::BAD_REQUEST, why),
            GrantError::Unavailable => web::unavailable("sign-in"),
        }
    }
}

/// Redeems `code` for `client_id`; the redirect URI must be the one of the
/// authorization request and the verifier must match its challenge.
pub async fn redeem(
    oauth: &Oauth,
    code: &str,
    client_id: &str,
    redirect_uri: &str,
    verifier: &str,
) -> Result<CodeGrant, GrantError> {
    let store = oauth.store.as_ref();
    let grant = match codes::redeem(store, code).await {
        Ok(redeemed) => redeemed.grant,
        Err(CodeError::Reused { family }) => {
            if let Some(family) = family {
                let _ = refresh::revoke_family(store, &family).await;
                tracing::warn!(
                    client_id,
                    "an authorization code was used twice: the tokens it issued are revoked"
                );
            }
            return Err(GrantError::Invalid(
                "the code was already used; what it issued is revoked",
            ));
        }
        Err(CodeError::Store(_)) => return Err(GrantError::Unavailable),
        Err(_) => return Err(GrantError::Invalid("unknown or expired code")),
    };
    if grant.client_id != client_id {
        return Err(GrantError::Invalid("the code was issued to another client"));
    }
    if grant.redirect_uri != redirect_uri {
        return Err(GrantError::Invalid(
            "redirect_uri differs from the authorization request",
        ));
    }
    if !pkce::valid_verifier(verifier) || !pkce::verify_s256(verifier, &grant.code_challenge) {
        return Err(GrantError::Invalid(
            "code_verifier does not match the code_challenge",
        ));
    }
    Ok(grant)
}

/// [`redeem`] for the protected hosts' callback, answering as a page.
pub async fn redeem_code(
    oauth: &Oauth,
    code: &str,
    client_id: &str,
    redirect_uri: &str,
    verifier: &str,
) -> Result<CodeGrant, Response<ProxyBody>> {
    redeem(oauth, code, client_id, redirect_uri, verifier)
        .await
        .map_err(|e| e.page())
}

/// A signed access token and its lifetime in seconds.
pub fn access_token(
    server: &Server,
    issuer: &str,
    audience: &str,
    identity: &Identity,
    client_id: &str,
    scope: &str,
) -> Option<(String, u64)> {
    let ttl = server.config.access_token_ttl_s;
    let claims = AccessClaims::new(
        identity,
        issuer,
        audience,
        client_id,
        scope,
        web::now(),
        Duration::from_secs(ttl),
    );
    claims.sign(&server.keys).ok().map(|t| (t, ttl))
}
