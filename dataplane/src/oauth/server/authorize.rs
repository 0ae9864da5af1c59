//! The authorization code flow up to the code: `/authorize` checks the
//! request (client, redirect URI, PKCE S256, `resource`, scopes), the user
//! logs in upstream (`/login`, `/login/callback`) unless the server's own
//! session cookie says who they are, then consents (`/consent`), and the
//! client gets `code`, `state` and `iss` (RFC 9207) on its redirect URI.
//!
//! Until the client and its redirect URI are verified, errors are shown as
//! a page and never redirected (RFC 6749 §4.1.2.1).

use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use postern_oauth::identity::Identity;
use postern_oauth::resource;
use postern_oauth::tokens::{self, SessionClaims};
use postern_oauth::{codes, pkce};
use std::time::Duration;

use super::pending::{self, Pending};
use super::{Ctx, clients};
use crate::oauth::web::{self, escape};
use crate::reverse::ProxyBody;

/// The authorization server's own browser session (who logged in here).
pub const AS_COOKIE: &str = "__Host-postern-as";
const CODE_TTL: Duration = Duration::from_secs(300);

/// An error for the client, sent to its verified redirect URI.
fn to_client(p: &Pending, error: &str, description: &str) -> Response<ProxyBody> {
    let mut pairs = vec![("error", error), ("error_description", description)];
    if let Some(state) = &p.state {
        pairs.push(("state", state));
    }
    pairs.push(("iss", &p.issuer));
    web::redirect(&web::with_query(&p.redirect_uri, &pairs))
}

pub async fn authorize(ctx: &Ctx, req: Request<Incoming>) -> Response<ProxyBody> {
    let session = web::cookie(req.headers(), AS_COOKIE).map(String::from);
    let params = if req.method() == http::Method::POST {
        let Some(body) = web::read_body(req.into_body()).await else {
            return web::error_page(StatusCode::PAYLOAD_TOO_LARGE, "request too large");
        };
        web::form(&body)
    } else {
        web::query_pairs(req.uri())
    };
    let Ok(params) = params else {
        return web::error_page(
            StatusCode::BAD_REQUEST,
            "a parameter is repeated or malformed",
        );
    };
    authorize_with(ctx, &params, session.as_deref()).await
}

async fn authorize_with(
    ctx: &Ctx,
    params: &[(String, String)],
    session: Option<&str>,
) -> Response<ProxyBody> {
    let Some(client_id) = web::param(params, "client_id") else {
        return web::error_page(StatusCode::BAD_REQUEST, "client_id is missing");
    };
    let client = match clients::find(ctx, client_id).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return web::error_page(
                StatusCode::BAD_REQUEST,
                "unknown client: it may have been registered with another server or expired; register again",
            );
        }
        Err(_) => return web::unavailable("authorize"),
    };
    let redirect_uri = match web::param(params, "redirect_uri") {
        Some(uri) if client.redirect_allowed(ctx, uri) => uri.to_string(),
        Some(_) => {
            return web::error_page(
                StatusCode::BAD_REQUEST,
                "redirect_uri is not registered for this client",
            );
        }
        None => return web::error_page(StatusCode::BAD_REQUEST, "redirect_uri is missing"),
    };
    let mut p = Pending {
        client_id: client.id.clone(),
        client_name: client.name.clone(),
        redirect_uri,
        state: web::param(params, "state").map(String::from),
        code_challenge: String::new(),
        resource: String::new(),
        audience: String::new(),
        scope: String::new(),
        issuer: ctx.issuer(),
        csrf: pkce::random_verifier(),
        provider: None,
        upstream_verifier: pkce::random_verifier(),
        nonce: pkce::random_verifier(),
        identity: None,
    };
    if web::param(params, "response_type") != Some("code") {
        return to_client(
            &p,
            "unsupported_response_type",
            "only response_type=code is supported",
        );
    }
    if !client.may("authorization_code") {
        return to_client(
            &p,
            "unauthorized_client",
            "this client may not use the authorization code grant",
        );
    }
    match (
        web::param(params, "code_challenge"),
        web::param(params, "code_challenge_method"),
    ) {
        (Some(c), Some("S256")) if pkce::valid_challenge(c) => p.code_challenge = c.to_string(),
        (Some(_), Some("S256")) => {
            return to_client(&p, "invalid_request", "code_challenge is malformed");
        }
        (Some(_), _) => {
            return to_client(&p, "invalid_request", "code_challenge_method must be S256");
        }
        (None, _) => {
            return to_client(
                &p,
                "invalid_request",
                "PKCE is required: send code_challenge with method S256",
            );
        }
    }
    match target(ctx, web::param(params, "resource")) {
        Ok((resource, audience)) => (p.resource, p.audience) = (resource, audience),
        Err(why) => return to_client(&p, "invalid_target", &why),
    }
    match scopes(ctx, &client, web::param(params, "scope"), &p.audience) {
        Ok(scope) => p.scope = scope,
        Err(why) => return to_client(&p, "invalid_scope", &why),
    }
    let id = pkce::random_verifier();
    if let Some(identity) = session.and_then(|s| session_identity(ctx, s)) {
        return logged_in(ctx, &id, p, identity, false).await;
    }
    start_login(ctx, &id, p).await
}

/// The normalised resource and its audience (the origin), which must be a
/// host this server protects, at the port of this request.
fn target(ctx: &Ctx, requested: Option<&str>) -> Result<(String, String), String> {
    let Some(requested) = requested else {
        return ctx
            .only_resource()
            .map(|origin| (format!("{origin}/"), origin))
            .ok_or_else(|| "resource is required: this server protects more than one host".into());
    };
    let r = resource::normalise(requested).map_err(|e| e.to_string())?;
    let url = url::Url::parse(&r.uri).map_err(|e| e.to_string())?;
    let host = url.host_str().unwrap_or_default().to_string();
    if url.scheme() != "https" || !ctx.server.protects(&host) || url.port() != ctx.port() {
        return Err(format!(
            "{requested} is not a resource of this authorization server"
        ));
    }
    Ok((r.uri.clone(), r.origin))
}

/// The scopes to grant: those asked for (each offered by this server and
/// allowed to the client), else those the resource's host requires.
fn scopes(
    ctx: &Ctx,
    client: &clients::Client,
    asked: Option<&str>,
    audience: &str,
) -> Result<String, String> {
    let offered = &ctx.server.config.scopes;
    let Some(asked) = asked else {
        let host = audience.trim_start_matches("https://");
        let host = host.split(':').next().unwrap_or(host);
        return Ok(ctx
            .server
            .policy_for(host)
            .map(|p| p.scopes.join(" "))
            .unwrap_or_default());
    };
    let mut granted: Vec<&str> = Vec::new();
    for scope in asked.split_ascii_whitespace() {
        if !offered.iter().any(|o| o == scope) {
            return Err(format!("scope {scope} is not offered by this server"));
        }
        if let Some(allowed) = &client.scopes
            && !allowed.iter().any(|a| a == scope)
        {
            return Err(format!("this client may not ask for scope {scope}"));
        }
        if !granted.contains(&scope) {
            granted.push(scope);
        }
    }
    Ok(granted.join(" "))
}

fn session_identity(ctx: &Ctx, cookie: &str) -> Option<Identity> {
    let issuer = ctx.issuer();
    let claims: SessionClaims = tokens::verify_session(
        &ctx.server.keys,
        cookie,
        &ctx.issuers(),
        &issuer,
        web::now(),
    )
    .ok()?;
    let (provider, subject) = claims.sub.split_once(':')?;
    Some(Identity {
        provider: provider.into(),
        subject: subject.into(),
        login: claims.login,
        email: claims.email,
        name: claims.name,
        groups: claims.groups,
    })
}

/// Sends the user to the provider, or lets them choose when there are two.
async fn start_login(ctx: &Ctx, id: &str, mut p: Pending) -> Response<ProxyBody> {
    let provider = match (&ctx.server.github, &ctx.server.oidc) {
        (Some(_), None) => "github",
        (None, Some(_)) => "oidc",
        _ => {
            if pending::save(ctx, id, &p).await.is_err() {
                return web::unavailable("authorize");
            }
            return web::redirect(&web::with_query("/login", &[("id", id)]));
        }
    };
    p.provider = Some(provider.into());
    if pending::save(ctx, id, &p).await.is_err() {
        return web::unavailable("authorize");
    }
    provider_redirect(ctx, id, &p).await
}

async fn provider_redirect(ctx: &Ctx, id: &str, p: &Pending) -> Response<ProxyBody> {
    let callback = format!("{}/login/callback", ctx.issuer());
    let challenge = pkce::challenge_s256(&p.upstream_verifier);
    match p.provider.as_deref() {
        Some("github") => match &ctx.server.github {
            Some(g) => web::redirect(&g.authorize_url(&callback, id, &challenge)),
            None => web::error_page(StatusCode::BAD_REQUEST, "GitHub login is not configured"),
        },
        Some("oidc") => match &ctx.server.oidc {
            Some(o) => match o.discover(&ctx.oauth.http).await {
                Ok(discovered) => web::redirect(&o.authorize_url(
                    &discovered,
                    &callback,
                    id,
                    &p.nonce,
                    &challenge,
                )),
                Err(e) => {
                    tracing::warn!(server = %ctx.server.id, error = %e, "OIDC discovery failed");
                    web::error_page(
                        StatusCode::BAD_GATEWAY,
                        "the identity provider cannot be reached",
                    )
                }
            },
            None => web::error_page(StatusCode::BAD_REQUEST, "OIDC login is not configured"),
        },
        _ => web::error_page(StatusCode::BAD_REQUEST, "unknown identity provider"),
    }
}

/// `/login?id=..[&provider=..]`: the chooser when both providers are set.
pub async fn choose(ctx: &Ctx, req: Request<Incoming>) -> Response<ProxyBody> {
    let query = web::query_pairs(req.uri()).unwrap_or_default();
    let Some(id) = web::param(&query, "id") else {
        return web::error_page(StatusCode::BAD_REQUEST, "no sign-in in progress");
    };
    let mut p = match pending::load(ctx, id).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            return web::error_page(StatusCode::BAD_REQUEST, "this sign-in expired; start again");
        }
        Err(_) => return web::unavailable("login"),
    };
    if let Some(provider @ ("github" | "oidc")) = web::param(&query, "provider") {
        p.provider = Some(provider.into());
        if pending::save(ctx, id, &p).await.is_err() {
            return web::unavailable("login");
        }
        return provider_redirect(ctx, id, &p).await;
    }
    let link = |provider: &str, label: &str| {
        format!(
            "<p><a href=\"{}\">Sign in with {label}</a></p>",
            escape(&web::with_query(
                "/login",
                &[("id", id), ("provider", provider)]
            ))
        )
    };
    web::page(
        StatusCode::OK,
        "Sign in",
        &format!(
            "{}{}",
            link("github", "GitHub"),
            link("oidc", "your identity provider")
        ),
    )
}

/// `/login/callback`: the provider answered; who is this?
pub async fn callback(ctx: &Ctx, req: Request<Incoming>) -> Response<ProxyBody> {
    let query = web::query_pairs(req.uri()).unwrap_or_default();
    let Some(id) = web::param(&query, "state") else {
        return web::error_page(
            StatusCode::BAD_REQUEST,
            "the provider's answer has no state",
        );
    };
    let p = match pending::load(ctx, id).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            return web::error_page(
                StatusCode::BAD_REQUEST,
                "this sign-in expired or is unknown; start again",
            );
        }
        Err(_) => return web::unavailable("login"),
    };
    if let Some(error) = web::param(&query, "error") {
        return to_client(
            &p,
            "access_denied",
            &format!("the identity provider refused: {error}"),
        );
    }
    let Some(code) = web::param(&query, "code") else {
        return web::error_page(StatusCode::BAD_REQUEST, "the provider's answer has no code");
    };
    let callback = format!("{}/login/callback", ctx.issuer());
    let http = &ctx.oauth.http;
    let identity = match p.provider.as_deref() {
        Some("github") => match &ctx.server.github {
            Some(g) => g.finish(http, code, &callback, &p.upstream_verifier).await,
            None => {
                return web::error_page(StatusCode::BAD_REQUEST, "GitHub login is not configured");
            }
        },
        Some("oidc") => match &ctx.server.oidc {
            Some(o) => {
                o.finish(http, code, &callback, &p.upstream_verifier, &p.nonce)
                    .await
            }
            None => {
                return web::error_page(StatusCode::BAD_REQUEST, "OIDC login is not configured");
            }
        },
        _ => return web::error_page(StatusCode::BAD_REQUEST, "no identity provider chosen"),
    };
    match identity {
        Ok(identity) => logged_in(ctx, id, p, identity, true).await,
        Err(e) => {
            tracing::warn!(server = %ctx.server.id, error = %e, "upstream login failed");
            if e.is_provider_failure() {
                web::error_page(
                    StatusCode::BAD_GATEWAY,
                    "the identity provider cannot be reached; try again",
                )
            } else {
                to_client(
                    &p,
                    "access_denied",
                    "the identity provider did not confirm the sign-in",
                )
            }
        }
    }
}

/// The user is known: refuse those the resource's host does not allow,
/// else on to the consent page (setting this server's session cookie when
/// the login just happened).
async fn logged_in(
    ctx: &Ctx,
    id: &str,
    mut p: Pending,
    identity: Identity,
    fresh: bool,
) -> Response<ProxyBody> {
    let host = p
        .audience
        .trim_start_matches("https://")
        .split(':')
        .next()
        .unwrap_or_default()
        .to_string();
    if let Some(policy) = ctx.server.policy_for(&host)
        && !tokens::allowed(
            policy,
            &identity.login,
            identity.email.as_deref(),
            &identity.groups,
        )
    {
        tracing::info!(server = %ctx.server.id, user = %identity.login, host, "login refused: not in the host's allowlists");
        return to_client(
            &p,
            "access_denied",
            &format!("{} is not allowed on {host}", identity.login),
        );
    }
    p.identity = Some(identity.clone());
    if pending::save(ctx, id, &p).await.is_err() {
        return web::unavailable("login");
    }
    let mut r = web::redirect(&web::with_query("/consent", &[("id", id)]));
    if fresh {
        let issuer = ctx.issuer();
        let ttl = Duration::from_secs(ctx.server.config.session_ttl_s);
        let claims = SessionClaims::new(&identity, &issuer, &issuer, web::now(), ttl);
        if let Ok(session) = claims.sign(&ctx.server.keys)
            && let Some(c) = web::set_cookie(AS_COOKIE, &session, ttl.as_secs())
        {
            r.headers_mut().append(header::SET_COOKIE, c);
        }
    }
    r
}

pub async fn consent_page(ctx: &Ctx, req: Request<Incoming>) -> Response<ProxyBody> {
    let query = web::query_pairs(req.uri()).unwrap_or_default();
    let id = web::param(&query, "id").unwrap_or_default();
    let p = match pending::load(ctx, id).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            return web::error_page(StatusCode::BAD_REQUEST, "this sign-in expired; start again");
        }
        Err(_) => return web::unavailable("consent"),
    };
    let Some(identity) = same_user(ctx, req.headers(), &p) else {
        return web::error_page(StatusCode::FORBIDDEN, "sign in first");
    };
    let redirect_host = url::Url::parse(&p.redirect_uri)
        .ok()
        .and_then(|u| u.host_str().map(String::from))
        .unwrap_or_else(|| p.redirect_uri.clone());
    let client = p.client_name.clone().unwrap_or_else(|| p.client_id.clone());
    let scopes = if p.scope.is_empty() {
        "(none)".to_string()
    } else {
        p.scope.clone()
    };
    let inner = format!(
        "<p>Signed in as <strong>{user}</strong>.</p>\
         <p><strong>{client}</strong> (client <code>{client_id}</code>) asks to act for you on <code>{resource}</code>.</p>\
         <p>Scopes: <code>{scopes}</code><br>It will be sent back to <code>{redirect_host}</code>.</p>\
         <form method=\"post\" action=\"/consent\">\
         <input type=\"hidden\" name=\"id\" value=\"{id}\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <button type=\"submit\" name=\"decision\" value=\"approve\">Allow</button>\
         <button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></form>",
        user = escape(&identity.login),
        client = escape(&client),
        client_id = escape(&p.client_id),
        resource = escape(&p.resource),
        scopes = escape(&scopes),
        redirect_host = escape(&redirect_host),
        id = escape(id),
        csrf = escape(&p.csrf),
    );
    web::page(StatusCode::OK, "Allow access?", &inner)
}

/// The server's session cookie must name the user who logged in for this
/// request: a form posted by anyone else (CSRF) is refused.
fn same_user(ctx: &Ctx, headers: &http::HeaderMap, p: &Pending) -> Option<Identity> {
    let identity = p.identity.clone()?;
    let session = session_identity(ctx, web::cookie(headers, AS_COOKIE)?)?;
    (session.provider == identity.provider && session.subject == identity.subject)
        .then_some(identity)
}

pub async fn consent(ctx: &Ctx, req: Request<Incoming>) -> Response<ProxyBody> {
    let headers = req.headers().clone();
    let Some(body) = web::read_body(req.into_body()).await else {
        return web::error_page(StatusCode::PAYLOAD_TOO_LARGE, "request too large");
    };
    let form = web::form(&body).unwrap_or_default();
    let id = web::param(&form, "id").unwrap_or_default();
    let p = match pending::load(ctx, id).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            return web::error_page(StatusCode::BAD_REQUEST, "this sign-in expired; start again");
        }
        Err(_) => return web::unavailable("consent"),
    };
    let csrf_ok = web::param(&form, "csrf")
        .is_some_and(|c| subtle::ConstantTimeEq::ct_eq(c.as_bytes(), p.csrf.as_bytes()).into());
    let Some(identity) = same_user(ctx, &headers, &p).filter(|_| csrf_ok) else {
        return web::error_page(
            StatusCode::FORBIDDEN,
            "this form was not sent from the consent page",
        );
    };
    let p = match pending::take(ctx, id).await {
        Ok(Some(p)) => p,
        Ok(None) => return web::error_page(StatusCode::BAD_REQUEST, "already answered"),
        Err(_) => return web::unavailable("consent"),
    };
    if web::param(&form, "decision") != Some("approve") {
        return to_client(&p, "access_denied", "the user denied access");
    }
    let grant = codes::CodeGrant {
        client_id: p.client_id.clone(),
        redirect_uri: p.redirect_uri.clone(),
        code_challenge: p.code_challenge.clone(),
        resource: p.resource.clone(),
        scope: p.scope.clone(),
        identity,
        nonce: None,
        auth_time: web::now(),
    };
    let code = match codes::issue(ctx.oauth.store.as_ref(), &grant, CODE_TTL).await {
        Ok(code) => code,
        Err(_) => return web::unavailable("consent"),
    };
    let mut pairs = vec![("code", code.as_str())];
    if let Some(state) = &p.state {
        pairs.push(("state", state));
    }
    pairs.push(("iss", &p.issuer));
    web::redirect(&web::with_query(&p.redirect_uri, &pairs))
}

/// Ends this server's session; returns to a protected host if asked.
pub fn logout(ctx: &Ctx, req: &Request<Incoming>) -> Response<ProxyBody> {
    let query = web::query_pairs(req.uri()).unwrap_or_default();
    let back = web::param(&query, "return").filter(|r| {
        url::Url::parse(r).is_ok_and(|u| {
            u.scheme() == "https"
                && u.host_str().is_some_and(|h| ctx.server.protects(h))
                && u.port() == ctx.port()
        })
    });
    let mut r = match back {
        Some(back) => web::redirect(back),
        None => web::page(StatusCode::OK, "Signed out", "<p>You are signed out.</p>"),
    };
    if let Some(c) = web::clear_cookie(AS_COOKIE) {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}
