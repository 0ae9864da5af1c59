//! The guard of protected sites and routes (phase 3). Everything here is
//! local: the access token or session cookie is a JWT checked against the
//! keys of the snapshot, so protected hosts keep working while Redis is
//! down.
//!
//! Order: a CORS preflight passes (it carries no credentials); a bearer
//! token is checked (401 `invalid_token`, 403 `insufficient_scope`, 403
//! for a user no allowlist names); else the session cookie; else a browser
//! is sent to log in and anything else gets 401 with the RFC 9728
//! `resource_metadata` pointer. On success the client's credentials are
//! taken off the request and the identity headers put on.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header};
use hyper::body::Incoming;
use postern_oauth::pkce;
use postern_oauth::tokens::{self, AccessClaims, SessionClaims};
use postern_snapshot::OauthPolicy;

use super::Oauth;
use super::web::{self, https_origin, port_of};
use crate::reverse::auth::{Guard, bearer_token};
use crate::reverse::errors::Refusal;
use crate::reverse::phases::AuthenticatedUser;
use crate::reverse::{AuthContext, Authenticate, ProxyError};

/// The browser session on a protected host.
pub const SESSION_COOKIE: &str = "__Host-postern-session";
/// The pending login of a browser on a protected host: state, PKCE
/// verifier and where to return.
pub const LOGIN_COOKIE: &str = "__Host-postern-login";
/// The client id protected hosts use towards their authorization server
/// for browser logins. Reserved: no OAuthClient or registration gets it.
pub const GUARD_CLIENT: &str = "postern-guard";
/// Where the authorization server sends a browser back on a protected host.
pub const CALLBACK_PATH: &str = "/_postern/callback";

pub struct GuardHook {
    oauth: Arc<Oauth>,
}

/// Who passed, for the identity headers.
struct Passed {
    login: String,
    email: Option<String>,
    groups: Vec<String>,
}

impl GuardHook {
    pub fn new(oauth: Arc<Oauth>) -> Self {
        GuardHook { oauth }
    }

    fn check(
        &self,
        policy: &OauthPolicy,
        req: &mut Request<Incoming>,
        ctx: &AuthContext<'_>,
    ) -> Result<(), ProxyError> {
        let metrics = &self.oauth.metrics;
        strip_identity(req.headers_mut(), policy);
        if req.method() == Method::OPTIONS
            && req
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            metrics.guard("preflight");
            return Ok(());
        }
        let tables = self.oauth.tables.load();
        let Some(server) = tables.servers_by_id.get(&policy.server) else {
            metrics.guard("unavailable");
            return Err(refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "auth_unavailable",
                "the authorization server of this host is not available".into(),
                Vec::new(),
            ));
        };
        let port = port_of(ctx.raw_host);
        let audience = https_origin(ctx.host, port);
        let issuers: Vec<String> = policy
            .issuer_hosts
            .iter()
            .map(|h| https_origin(h, port))
            .collect();
        let metadata = metadata_url(&audience, ctx.path);
        same_origin_off(req.headers_mut(), &audience);
        let now = web::now();
        if let Some(token) = bearer_token(req.headers()) {
            let claims = match tokens::verify_access(&server.keys, token, &issuers, &audience, now)
            {
                Ok(claims) => claims,
                Err(e) => {
                    metrics.guard("invalid_token");
                    return Err(challenge(
                        &metadata,
                        policy,
                        Some(("invalid_token", e.description())),
                    ));
                }
            };
            return self.pass_bearer(policy, req, claims, &metadata);
        }
        if let Some(cookie) = web::cookie(req.headers(), SESSION_COOKIE)
            && let Ok(session) =
                tokens::verify_session(&server.keys, cookie, &issuers, &audience, now)
        {
            return self.pass_session(policy, req, session);
        }
        if browser(req) {
            metrics.guard("login_redirect");
            return Err(login_redirect(policy, req, ctx, &audience, &issuers));
        }
        metrics.guard("challenge");
        Err(challenge(&metadata, policy, None))
    }

    fn pass_bearer(
        &self,
        policy: &OauthPolicy,
        req: &mut Request<Incoming>,
        claims: AccessClaims,
        metadata: &str,
    ) -> Result<(), ProxyError> {
        if !tokens::allowed(
            policy,
            &claims.login,
            claims.email.as_deref(),
            &claims.groups,
        ) {
            self.oauth.metrics.guard("forbidden");
            return Err(forbidden(&claims.login));
        }
        if !tokens::has_scopes(&claims.scope, &policy.scopes) {
            self.oauth.metrics.guard("insufficient_scope");
            let scope = policy.scopes.join(" ");
            let value = format!(
                "Bearer error=\"insufficient_scope\", scope=\"{scope}\", resource_metadata=\"{metadata}\", error_description=\"the token lacks a required scope\""
            );
            return Err(refusal(
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                format!("this resource needs the scopes {scope}"),
                www_authenticate(value),
            ));
        }
        req.headers_mut().remove(header::AUTHORIZATION);
        self.oauth.metrics.guard("bearer");
        req.extensions_mut()
            .insert(AuthenticatedUser(claims.login.clone()));
        identify(
            req.headers_mut(),
            policy,
            &Passed {
                login: claims.login,
                email: claims.email,
                groups: claims.groups,
            },
        );
        Ok(())
    }

    fn pass_session(
        &self,
        policy: &OauthPolicy,
        req: &mut Request<Incoming>,
        session: SessionClaims,
    ) -> Result<(), ProxyError> {
        if !tokens::allowed(
            policy,
            &session.login,
            session.email.as_deref(),
            &session.groups,
        ) {
            self.oauth.metrics.guard("forbidden");
            return Err(forbidden(&session.login));
        }
        web::drop_cookie(req.headers_mut(), SESSION_COOKIE);
        self.oauth.metrics.guard("session");
        req.extensions_mut()
            .insert(AuthenticatedUser(session.login.clone()));
        identify(
            req.headers_mut(),
            policy,
            &Passed {
                login: session.login,
                email: session.email,
                groups: session.groups,
            },
        );
        Ok(())
    }
}

impl Authenticate for GuardHook {
    fn authenticate(
        &self,
        guard: &Guard,
        req: &mut Request<Incoming>,
        ctx: &AuthContext<'_>,
    ) -> Option<Result<(), ProxyError>> {
        match guard {
            Guard::Oauth(policy) => Some(self.check(policy, req, ctx)),
            _ => None,
        }
    }
}

/// `https://host/.well-known/oauth-protected-resource<path>`: the metadata
/// of the resource the client asked for (RFC 9728 §3.1).
pub fn metadata_url(audience: &str, path: &str) -> String {
    let suffix = if path == "/" { "" } else { path };
    format!("{audience}/.well-known/oauth-protected-resource{suffix}")
}

/// 401 with `WWW-Authenticate: Bearer resource_metadata=...` (OAUTH-MCP 1):
/// `scope` names what this resource needs, never `offline_access`.
fn challenge(
    metadata: &str,
    policy: &OauthPolicy,
    error: Option<(&'static str, &str)>,
) -> ProxyError {
    let mut value = format!("Bearer resource_metadata=\"{metadata}\"");
    if !policy.scopes.is_empty() {
        value.push_str(&format!(", scope=\"{}\"", policy.scopes.join(" ")));
    }
    if let Some((code, description)) = error {
        value.push_str(&format!(
            ", error=\"{code}\", error_description=\"{description}\""
        ));
    }
    let (code, description) = error.unwrap_or(("unauthorized", "a bearer token is required"));
    refusal(
        StatusCode::UNAUTHORIZED,
        if code == "invalid_token" {
            "invalid_token"
        } else {
            "unauthorized"
        },
        description.to_string(),
        www_authenticate(value),
    )
}

fn forbidden(login: &str) -> ProxyError {
    refusal(
        StatusCode::FORBIDDEN,
        "access_denied",
        format!("user {login} is not allowed on this host"),
        Vec::new(),
    )
}

/// Sends a browser to the authorization server, remembering in a cookie of
/// this host the state, the PKCE verifier and the page to come back to.
fn login_redirect(
    policy: &OauthPolicy,
    req: &Request<Incoming>,
    ctx: &AuthContext<'_>,
    audience: &str,
    issuers: &[String],
) -> ProxyError {
    let Some(issuer) = issuers.first() else {
        return challenge(&metadata_url(audience, ctx.path), policy, None);
    };
    let state = pkce::random_verifier();
    let verifier = pkce::random_verifier();
    let back = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let back_b64 = base64_url(back.as_bytes());
    let location = web::with_query(
        &format!("{issuer}/authorize"),
        &[
            ("response_type", "code"),
            ("client_id", GUARD_CLIENT),
            ("redirect_uri", &format!("{audience}{CALLBACK_PATH}")),
            ("state", &state),
            ("code_challenge", &pkce::challenge_s256(&verifier)),
            ("code_challenge_method", "S256"),
            ("resource", audience),
            ("scope", &policy.scopes.join(" ")),
        ],
    );
    let mut headers = Vec::new();
    if let Ok(v) = HeaderValue::from_str(&location) {
        headers.push((header::LOCATION, v));
    }
    let pending = format!("{state}.{verifier}.{back_b64}");
    if let Some(cookie) = web::set_cookie(LOGIN_COOKIE, &pending, 600) {
        headers.push((header::SET_COOKIE, cookie));
    }
    refusal(
        StatusCode::FOUND,
        "login_redirect",
        "sign-in required".into(),
        headers,
    )
}

fn refusal(
    status: StatusCode,
    error: &'static str,
    description: String,
    mut headers: Vec<(HeaderName, HeaderValue)>,
) -> ProxyError {
    let mut cors = HeaderMap::new();
    web::cors(&mut cors);
    headers.extend(cors.into_iter().filter_map(|(k, v)| Some((k?, v))));
    ProxyError::Refused(Box::new(Refusal {
        status,
        error,
        description,
        headers,
    }))
}

fn www_authenticate(value: String) -> Vec<(HeaderName, HeaderValue)> {
    HeaderValue::from_str(&value)
        .ok()
        .map(|v| (header::WWW_AUTHENTICATE, v))
        .into_iter()
        .collect()
}

/// A page load: a browser gets a login, an API client a challenge.
fn browser(req: &Request<Incoming>) -> bool {
    (req.method() == Method::GET || req.method() == Method::HEAD) && web_accepts_html(req.headers())
}

fn web_accepts_html(headers: &HeaderMap) -> bool {
    crate::reverse::errors::wants_html(headers)
}

/// A browser's `Origin` naming this very host means nothing to the backend,
/// which sees its own `host:port` and (an MCP SDK server with DNS-rebinding
/// protection) refuses an Origin that is not its own (OAUTH-MCP 8).
/// Cross-origin requests keep theirs, for the backend's CORS decision.
fn same_origin_off(headers: &mut HeaderMap, audience: &str) {
    if headers
        .get(header::ORIGIN)
        .is_some_and(|o| o.as_bytes().eq_ignore_ascii_case(audience.as_bytes()))
    {
        headers.remove(header::ORIGIN);
    }
}

/// The client may not speak for the user: identity headers come only from here.
fn strip_identity(headers: &mut HeaderMap, policy: &OauthPolicy) {
    let names = &policy.identity_headers;
    for name in [&names.user, &names.email, &names.groups] {
        if !name.is_empty() {
            headers.remove(name.as_str());
        }
    }
}

fn identify(headers: &mut HeaderMap, policy: &OauthPolicy, who: &Passed) {
    let names = &policy.identity_headers;
    let mut put = |name: &str, value: &str| {
        if name.is_empty() || value.is_empty() {
            return;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(n, v);
        }
    };
    put(&names.user, &who.login);
    put(&names.email, who.email.as_deref().unwrap_or(""));
    put(&names.groups, &who.groups.join(","));
}

pub fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
