//! The paths the oauth capability owns on a protected host: its RFC 9728
//! metadata (root and path-suffixed, unauthenticated, CORS-enabled), and
//! the browser session's callback and logout. Everything else on the host
//! belongs to the backend.

use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use postern_oauth::tokens::SessionClaims;

use super::Oauth;
use super::guard::{CALLBACK_PATH, GUARD_CLIENT, LOGIN_COOKIE, SESSION_COOKIE};
use super::server::grants;
use super::tables::Protected;
use super::web::{self, https_origin, port_of};
use crate::reverse::ProxyBody;

const METADATA: &str = "/.well-known/oauth-protected-resource";
const LOGOUT_PATH: &str = "/_postern/logout";

pub struct Ctx {
    pub oauth: Arc<Oauth>,
    pub site: Arc<Protected>,
    pub raw_host: String,
    pub host: String,
    pub tls: bool,
}

/// Whether `path` is one of the paths served here rather than proxied.
pub fn owns(path: &str) -> bool {
    path == CALLBACK_PATH || path == LOGOUT_PATH || metadata_suffix(path).is_some()
}

fn metadata_suffix(path: &str) -> Option<&str> {
    let rest = path.strip_prefix(METADATA)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

pub async fn serve(ctx: Ctx, req: Request<Incoming>) -> Response<ProxyBody> {
    let path = req.uri().path().to_string();
    if let Some(suffix) = metadata_suffix(&path) {
        return match *req.method() {
            Method::OPTIONS => web::preflight(),
            Method::GET | Method::HEAD => metadata(&ctx, suffix),
            _ => web::with_cors(web::oauth_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request",
                "use GET",
            )),
        };
    }
    if !ctx.tls {
        return web::error_page(StatusCode::BAD_REQUEST, "sign-in works over https only");
    }
    if path == CALLBACK_PATH {
        return callback(&ctx, &req).await;
    }
    logout(&ctx)
}

/// RFC 9728 metadata; `resource` is the URL it was asked about, exactly.
fn metadata(ctx: &Ctx, suffix: &str) -> Response<ProxyBody> {
    let port = port_of(&ctx.raw_host);
    let origin = https_origin(&ctx.host, port);
    let resource = format!("{origin}{suffix}");
    let issuers: Vec<String> = ctx
        .site
        .server
        .hosts
        .iter()
        .take(1)
        .map(|h| https_origin(h, port))
        .collect();
    let body = serde_json::json!({
        "resource": resource,
        "authorization_servers": issuers,
        "scopes_supported": ctx.site.scopes,
        "bearer_methods_supported": ["header"],
        "resource_name": ctx.host,
    });
    let mut r = web::with_cors(web::json(StatusCode::OK, &body));
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}

/// Back from the authorization server: the code is redeemed here, in
/// process, with the verifier this host kept in its login cookie.
async fn callback(ctx: &Ctx, req: &Request<Incoming>) -> Response<ProxyBody> {
    let Ok(query) = web::query_pairs(req.uri()) else {
        return web::error_page(StatusCode::BAD_REQUEST, "malformed callback");
    };
    let pending = web::cookie(req.headers(), LOGIN_COOKIE).and_then(|c| {
        let mut parts = c.splitn(3, '.');
        Some((parts.next()?, parts.next()?, parts.next()?))
    });
    let Some((state, verifier, back_b64)) = pending else {
        return web::error_page(
            StatusCode::BAD_REQUEST,
            "this sign-in was not started here (or took longer than 10 minutes); open the page again",
        );
    };
    if web::param(&query, "state") != Some(state) {
        return web::error_page(StatusCode::BAD_REQUEST, "the sign-in state does not match");
    }
    if let Some(error) = web::param(&query, "error") {
        return web::error_page(StatusCode::FORBIDDEN, &format!("sign-in refused: {error}"));
    }
    let port = port_of(&ctx.raw_host);
    let audience = https_origin(&ctx.host, port);
    let server = &ctx.site.server;
    let issuers: Vec<String> = server.hosts.iter().map(|h| https_origin(h, port)).collect();
    if let Some(iss) = web::param(&query, "iss")
        && !issuers.iter().any(|i| i == iss)
    {
        return web::error_page(
            StatusCode::BAD_REQUEST,
            "the answer came from another issuer",
        );
    }
    let Some(code) = web::param(&query, "code") else {
        return web::error_page(StatusCode::BAD_REQUEST, "no code in the callback");
    };
    let redirect_uri = format!("{audience}{CALLBACK_PATH}");
    let grant =
        match grants::redeem_code(&ctx.oauth, code, GUARD_CLIENT, &redirect_uri, verifier).await {
            Ok(grant) => grant,
            Err(answer) => return answer,
        };
    if let Some(policy) = &ctx.site.policy
        && !postern_oauth::tokens::allowed(
            policy,
            &grant.identity.login,
            grant.identity.email.as_deref(),
            &grant.identity.groups,
        )
    {
        return web::error_page(
            StatusCode::FORBIDDEN,
            &format!("{} is not allowed on {}", grant.identity.login, ctx.host),
        );
    }
    let Some(issuer) = issuers.first() else {
        return web::error_page(StatusCode::SERVICE_UNAVAILABLE, "no issuer");
    };
    let now = web::now();
    let ttl = server.config.session_ttl_s;
    let claims = SessionClaims::new(
        &grant.identity,
        issuer,
        &audience,
        now,
        std::time::Duration::from_secs(ttl),
    );
    let Ok(session) = claims.sign(&server.keys) else {
        return web::error_page(StatusCode::INTERNAL_SERVER_ERROR, "cannot sign the session");
    };
    let back = decode_back(back_b64);
    let mut r = web::redirect(&back);
    let h = r.headers_mut();
    if let Some(c) = web::set_cookie(SESSION_COOKIE, &session, ttl) {
        h.append(header::SET_COOKIE, c);
    }
    if let Some(c) = web::clear_cookie(LOGIN_COOKIE) {
        h.append(header::SET_COOKIE, c);
    }
    r
}

/// The page to come back to: a path on this host, never another origin.
fn decode_back(b64: &str) -> String {
    use base64::Engine;
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(b64)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_default();
    if decoded.starts_with('/') && !decoded.starts_with("//") && !decoded.contains('\\') {
        decoded
    } else {
        "/".into()
    }
}

/// Ends the session here and at the authorization server, then comes back.
fn logout(ctx: &Ctx) -> Response<ProxyBody> {
    let port = port_of(&ctx.raw_host);
    let audience = https_origin(&ctx.host, port);
    let target = match ctx.site.server.hosts.first() {
        Some(h) => web::with_query(
            &format!("{}/logout", https_origin(h, port)),
            &[("return", &format!("{audience}/"))],
        ),
        None => "/".into(),
    };
    let mut r = web::redirect(&target);
    if let Some(c) = web::clear_cookie(SESSION_COOKIE) {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}
