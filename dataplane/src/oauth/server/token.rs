//! `/token` (authorization_code, refresh_token with rotation,
//! client_credentials), `/revoke` (RFC 7009), `/introspect` (RFC 7662),
//! `/userinfo`, and `/verify` (forward auth for other proxies).

use std::time::Duration;

use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use postern_oauth::identity::Identity;
use postern_oauth::refresh::{self, RefreshError, RefreshGrant};
use postern_oauth::tokens::{self, AccessClaims};
use postern_oauth::{pkce, resource};

use super::Ctx;
use super::clients::{self, AuthFailure, Client};
use super::grants::{self, GrantError};
use crate::oauth::web;
use crate::reverse::ProxyBody;
use crate::reverse::auth::bearer_token;

/// How long a rotated refresh token still answers (with the same
/// successor) so that concurrent refreshes do not log the user out.
const REFRESH_GRACE: Duration = Duration::from_secs(30);

async fn form_of(
    req: Request<Incoming>,
) -> Result<(HeaderMap, Vec<(String, String)>), Response<ProxyBody>> {
    let headers = req.headers().clone();
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    if !form_type {
        return Err(web::oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "send application/x-www-form-urlencoded",
        ));
    }
    let Some(body) = web::read_body(req.into_body()).await else {
        return Err(web::oauth_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            "request too large",
        ));
    };
    let form = web::form(&body)
        .map_err(|why| web::oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &why))?;
    Ok((headers, form))
}

fn client_failure(failure: AuthFailure, headers: &HeaderMap) -> Response<ProxyBody> {
    match failure {
        AuthFailure::Store => web::unavailable("token"),
        AuthFailure::Invalid(why) => {
            let mut r = web::oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", why);
            if headers.contains_key(header::AUTHORIZATION) {
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"postern\""),
                );
            }
            r
        }
    }
}

pub async fn token(ctx: &Ctx, req: Request<Incoming>) -> Response<ProxyBody> {
    let (headers, form) = match form_of(req).await {
        Ok(parts) => parts,
        Err(r) => return r,
    };
    let client = match clients::authenticate(ctx, &headers, &form).await {
        Ok(c) => c,
        Err(f) => return client_failure(f, &headers),
    };
    match web::param(&form, "grant_type") {
        Some("authorization_code") => authorization_code(ctx, &client, &form).await,
        Some("refresh_token") => refresh_token(ctx, &client, &form).await,
        Some("client_credentials") => client_credentials(ctx, &client, &form),
        Some(_) => web::oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "unknown grant_type",
        ),
        None => web::oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "grant_type is missing",
        ),
    }
}

/// The token response (RFC 6749 §5.1), no-store.
fn issued(
    ctx: &Ctx,
    grant: &'static str,
    audience: &str,
    identity: &Identity,
    client: &Client,
    scope: &str,
    refresh_token: Option<String>,
) -> Response<ProxyBody> {
    let Some((access, ttl)) = grants::access_token(
        &ctx.server,
        &ctx.issuer(),
        audience,
        identity,
        &client.id,
        scope,
    ) else {
        return web::oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "cannot sign the token",
        );
    };
    ctx.oauth.metrics.token(grant);
    let mut body = serde_json::json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": ttl,
        "scope": scope,
    });
    if let Some(rt) = refresh_token {
        body["refresh_token"] = rt.into();
    }
    web::json(StatusCode::OK, &body)
}

/// The audience of a normalised resource: its origin.
fn audience_of(resource_uri: &str) -> Option<String> {
    resource::normalise(resource_uri).ok().map(|r| r.origin)
}

/// A `resource` sent with the token request must name the same resource
/// (origin) as the grant.
fn same_resource(form: &[(String, String)], granted_audience: &str) -> bool {
    match web::param(form, "resource") {
        None => true,
        Some(r) => resource::normalise(r).is_ok_and(|r| r.origin == granted_audience),
    }
}

async fn authorization_code(
    ctx: &Ctx,
    client: &Client,
    form: &[(String, String)],
) -> Response<ProxyBody> {
    let (Some(code), Some(redirect_uri), Some(verifier)) = (
        web::param(form, "code"),
        web::param(form, "redirect_uri"),
        web::param(form, "code_verifier"),
    ) else {
        return web::oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "code, redirect_uri and code_verifier are required",
        );
    };
    if !pkce::valid_verifier(verifier) {
        return web::oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "code_verifier is malformed",
        );
    }
    let grant = match grants::redeem(&ctx.oauth, code, &client.id, redirect_uri, verifier).await {
        Ok(g) => g,
        Err(e) => return e.json(),
    };
    let Some(audience) = audience_of(&grant.resource) else {
        return GrantError::Invalid("the code names no resource").json();
    };
    if !same_resource(form, &audience) {
        return web::oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_target",
            "resource differs from the authorization request",
        );
    }
    let mut refresh_token = None;
    if client.may("refresh_token") {
        let family = RefreshGrant {
            family: pkce::random_verifier(),
            client_id: client.id.clone(),
            scope: grant.scope.clone(),
            resource: grant.resource.clone(),
            identity: grant.identity.clone(),
            family_expires_at: web::now() + ctx.server.config.refresh_token_ttl_s,
        };
        let ttl = Duration::from_secs(ctx.server.config.refresh_token_ttl_s);
        let family_id = family.family.clone();
        match refresh::issue_family(ctx.oauth.store.as_ref(), family, ttl).await {
            Ok(rt) => refresh_token = Some(rt),
            Err(_) => return web::unavailable("token"),
        }
        let _ =
            postern_oauth::codes::record_issued(ctx.oauth.store.as_ref(), code, &family_id).await;
    }
    issued(
        ctx,
        "authorization_code",
        &audience,
        &grant.identity,
        client,
        &grant.scope,
        refresh_token,
    )
}

async fn refresh_token(
    ctx: &Ctx,
    client: &Client,
    form: &[(String, String)],
) -> Response<ProxyBody> {
    let Some(token) = web::param(form, "refresh_token") else {
        return web::oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "refresh_token is required",
        );
    };
    if !client.may("refresh_token") {
        return web::oauth_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "this client may not refresh",
        );
    }
    let now = web::now();
    let (grant, next) = match refresh::rotate(
        ctx.oauth.store.as_ref(),
        token,
        &client.id,
        now,
        REFRESH_GRACE,
    )
    .await
    {
        Ok(rotated) => rotated,
        Err(RefreshError::Reused) => {
            tracing::warn!(client_id = %client.id, "refresh token reused outside the grace window: its family is revoked");
            return GrantError::Invalid("refresh token reused; the session is revoked").json();
        }
        Err(RefreshError::Store(_)) => return web::unavailable("token"),
        Err(RefreshError::ClientMismatch) => {
            return GrantError::Invalid("the refresh token was issued to another client").json();
        }
        Err(_) => return GrantError::Invalid("unknown, expired or revoked refresh token").json(),
    };
    let Some(audience) = audience_of(&grant.resource) else {
        return GrantError::Invalid("the grant names no resource").json();
    };
    if !same_resource(form, &audience) {
        return web::oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_target",
            "resource differs from the grant",
        );
    }
    let scope = match web::param(form, "scope") {
        None => grant.scope.clone(),
        Some(asked) => {
            let granted: Vec<&str> = grant.scope.split_ascii_whitespace().collect();
            if asked
                .split_ascii_whitespace()
                .any(|s| !granted.contains(&s))
            {
                return web::oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    "a refresh cannot widen the scope",
                );
            }
            asked.to_string()
        }
    };
    issued(
        ctx,
        "refresh_token",
        &audience,
        &grant.identity,
        client,
        &scope,
        Some(next),
    )
}

fn client_credentials(
    ctx: &Ctx,
    client: &Client,
    form: &[(String, String)],
) -> Response<ProxyBody> {
    if !client.confidential() || !client.may("client_credentials") {
        return web::oauth_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "client_credentials is for confidential clients declared with that grant",
        );
    }
    let audience = match web::param(form, "resource") {
        Some(r) => match resource::normalise(r) {
            Ok(r) if protects_origin(ctx, &r.origin) => r.origin,
            _ => {
                return web::oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_target",
                    "not a resource of this server",
                );
            }
        },
        None => match ctx.only_resource() {
            Some(origin) => origin,
            None => {
                return web::oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_target",
                    "resource is required",
                );
            }
        },
    };
    let scope = web::param(form, "scope").unwrap_or_default().to_string();
    let offered = &ctx.server.config.scopes;
    let allowed = client.scopes.as_ref().unwrap_or(offered);
    if scope
        .split_ascii_whitespace()
        .any(|s| !allowed.iter().any(|a| a == s))
    {
        return web::oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "a scope is not allowed to this client",
        );
    }
    let identity = Identity {
        provider: "client".into(),
        subject: client.id.clone(),
        login: client.id.clone(),
        ..Identity::default()
    };
    issued(
        ctx,
        "client_credentials",
        &audience,
        &identity,
        client,
        &scope,
        None,
    )
}

fn protects_origin(ctx: &Ctx, origin: &str) -> bool {
    url::Url::parse(origin).is_ok_and(|u| {
        u.scheme() == "https"
            && u.host_str().is_some_and(|h| ctx.server.protects(h))
            && u.port() == ctx.port()
    })
}

/// An access token this server issued, for any of its resources.
fn own_access_token(ctx: &Ctx, token: &str) -> Option<AccessClaims> {
    let claims: AccessClaims = ctx.server.keys.verify(tokens::ACCESS_TYP, token).ok()?;
    let now = web::now();
    let fresh = claims.exp > now;
    let ours = ctx.issuers().contains(&claims.iss);
    let audience_ok = protects_origin(ctx, &claims.aud) || claims.aud == ctx.issuer();
    (fresh && ours && audience_ok).then_some(claims)
}

fn revoked_key(ctx: &Ctx, jti: &str) -> String {
    format!("revoked:{}:{jti}", ctx.server.id)
}

pub async fn revoke(ctx: &Ctx, req: Request<Incoming>) -> Response<ProxyBody> {
    let (headers, form) = match form_of(req).await {
        Ok(parts) => parts,
        Err(r) => return r,
    };
    if let Err(f) = clients::authenticate(ctx, &headers, &form).await {
        return client_failure(f, &headers);
    }
    let Some(token) = web::param(&form, "token") else {
        return web::oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "token is required",
        );
    };
    let store = ctx.oauth.store.as_ref();
    let outcome = if let Some(claims) = own_access_token(ctx, token) {
        let left = claims.exp.saturating_sub(web::now()).max(1);
        store
            .put(
                &revoked_key(ctx, &claims.jti),
                b"1".to_vec(),
                Duration::from_secs(left),
            )
            .await
            .is_ok()
    } else {
        refresh::revoke_token(store, token).await.is_ok()
    };
    if outcome {
        // RFC 7009 §2.2: 200 whether or not the token was known.
        web::json(StatusCode::OK, &serde_json::json!({}))
    } else {
        web::unavailable("revoke")
    }
}

pub async fn introspect(ctx: &Ctx, req: Request<Incoming>) -> Response<ProxyBody> {
    let (headers, form) = match form_of(req).await {
        Ok(parts) => parts,
        Err(r) => return r,
    };
    match clients::authenticate(ctx, &headers, &form).await {
        Ok(c) if c.confidential() => {}
        Ok(_) => {
            return client_failure(
                AuthFailure::Invalid("introspection needs a confidential client"),
                &headers,
            );
        }
        Err(f) => return client_failure(f, &headers),
    }
    let inactive = || web::json(StatusCode::OK, &serde_json::json!({"active": false}));
    let Some(claims) = web::param(&form, "token").and_then(|t| own_access_token(ctx, t)) else {
        return inactive();
    };
    match ctx.oauth.store.get(&revoked_key(ctx, &claims.jti)).await {
        Ok(Some(_)) => return inactive(),
        Ok(None) => {}
        Err(_) => return web::unavailable("introspect"),
    }
    web::json(
        StatusCode::OK,
        &serde_json::json!({
            "active": true,
            "scope": claims.scope,
            "client_id": claims.client_id,
            "username": claims.login,
            "token_type": "Bearer",
            "exp": claims.exp,
            "iat": claims.iat,
            "sub": claims.sub,
            "aud": claims.aud,
            "iss": claims.iss,
            "jti": claims.jti,
        }),
    )
}

fn bearer_challenge(ctx: &Ctx, error: Option<&str>) -> Response<ProxyBody> {
    let mut r = web::oauth_error(
        StatusCode::UNAUTHORIZED,
        error.unwrap_or("invalid_token"),
        "a valid access token is required",
    );
    let value = match error {
        Some(e) => format!("Bearer realm=\"{}\", error=\"{e}\"", ctx.issuer()),
        None => format!("Bearer realm=\"{}\"", ctx.issuer()),
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

pub fn userinfo(ctx: &Ctx, req: &Request<Incoming>) -> Response<ProxyBody> {
    let Some(token) = bearer_token(req.headers()) else {
        return bearer_challenge(ctx, None);
    };
    let Some(claims) = own_access_token(ctx, token) else {
        return bearer_challenge(ctx, Some("invalid_token"));
    };
    web::json(
        StatusCode::OK,
        &serde_json::json!({
            "sub": claims.sub,
            "preferred_username": claims.login,
            "email": claims.email,
            "email_verified": claims.email.is_some(),
            "name": claims.name,
            "groups": claims.groups,
        }),
    )
}

/// Forward auth: another proxy (nginx `auth_request`, Traefik ForwardAuth)
/// asks whether the request it holds may pass. The protected host comes
/// from `X-Forwarded-Host` and must be one of this server's resources; the
/// answer is 200 with the identity headers, or 401/403.
pub fn verify(ctx: &Ctx, req: &Request<Incoming>) -> Response<ProxyBody> {
    let headers = req.headers();
    let forwarded = headers
        .get("x-forwarded-host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Some(host) = crate::reverse::normalise_host(forwarded).filter(|h| ctx.server.protects(h))
    else {
        return web::oauth_error(
            StatusCode::FORBIDDEN,
            "invalid_target",
            "X-Forwarded-Host is not a resource of this server",
        );
    };
    let audience = web::https_origin(&host, web::port_of(forwarded));
    let now = web::now();
    let issuers = ctx.issuers();
    let who = if let Some(token) = bearer_token(headers) {
        tokens::verify_access(&ctx.server.keys, token, &issuers, &audience, now)
            .ok()
            .map(|c| (c.login, c.email, c.groups, Some(c.scope)))
    } else {
        web::cookie(headers, crate::oauth::guard::SESSION_COOKIE)
            .and_then(|c| {
                tokens::verify_session(&ctx.server.keys, c, &issuers, &audience, now).ok()
            })
            .map(|s| (s.login, s.email, s.groups, None))
    };
    let Some((login, email, groups, scope)) = who else {
        return bearer_challenge(ctx, None);
    };
    if let Some(policy) = ctx.server.policy_for(&host) {
        if !tokens::allowed(policy, &login, email.as_deref(), &groups) {
            return web::oauth_error(
                StatusCode::FORBIDDEN,
                "access_denied",
                "this user is not allowed on this host",
            );
        }
        if let Some(scope) = &scope
            && !tokens::has_scopes(scope, &policy.scopes)
        {
            return web::oauth_error(
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                "the token lacks a required scope",
            );
        }
    }
    let mut r = web::respond(StatusCode::OK, "text/plain; charset=utf-8", "");
    let h = r.headers_mut();
    for (name, value) in [
        ("x-forwarded-user", Some(login)),
        ("x-forwarded-email", email),
        ("x-forwarded-groups", Some(groups.join(","))),
    ] {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            h.insert(name, v);
        }
    }
    r
}
