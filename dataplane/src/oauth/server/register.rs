//! Dynamic client registration (RFC 7591) and its management (RFC 7592).
//! MCP clients depend on it, so it is on by default. Unknown metadata is
//! kept and echoed; a client that names no `token_endpoint_auth_method`
//! is registered as a public client (`none`, PKCE only), since that is
//! what the SDKs that omit it can use.

use std::time::Duration;

use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use postern_oauth::{pkce, redirect};
use postern_snapshot::sha256_hex;
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

use super::Ctx;
use super::clients::{self, AuthMethod, Registered};
use crate::oauth::web;
use crate::reverse::ProxyBody;
use crate::reverse::auth::bearer_token;

const GRANTS: [&str; 3] = ["authorization_code", "refresh_token", "client_credentials"];

fn bad(description: &str) -> Response<ProxyBody> {
    web::oauth_error(
        StatusCode::BAD_REQUEST,
        "invalid_client_metadata",
        description,
    )
}

/// Checks metadata and fills in defaults; `Err` is the 400 answer.
#[allow(clippy::result_large_err)]
fn checked(
    ctx: &Ctx,
    mut metadata: Map<String, Value>,
) -> Result<(Map<String, Value>, AuthMethod), Response<ProxyBody>> {
    let strings = |v: Option<&Value>| -> Option<Vec<String>> {
        v?.as_array()?
            .iter()
            .map(|s| s.as_str().map(String::from))
            .collect()
    };
    let method = match metadata.get("token_endpoint_auth_method") {
        None => AuthMethod::None,
        Some(Value::String(m)) => AuthMethod::parse(m).ok_or_else(|| bad("token_endpoint_auth_method must be none, client_secret_post or client_secret_basic"))?,
        Some(_) => return Err(bad("token_endpoint_auth_method must be a string")),
    };
    let grants = match metadata.get("grant_types") {
        None => vec![
            "authorization_code".to_string(),
            "refresh_token".to_string(),
        ],
        Some(v) => strings(Some(v)).ok_or_else(|| bad("grant_types must be strings"))?,
    };
    if let Some(g) = grants.iter().find(|g| !GRANTS.contains(&g.as_str())) {
        return Err(bad(&format!("grant type {g} is not supported")));
    }
    if grants.iter().any(|g| g == "client_credentials") && method == AuthMethod::None {
        return Err(bad("client_credentials needs a confidential client"));
    }
    let redirect_uris = strings(metadata.get("redirect_uris")).unwrap_or_default();
    if grants.iter().any(|g| g == "authorization_code") && redirect_uris.is_empty() {
        return Err(web::oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_redirect_uri",
            "redirect_uris is required",
        ));
    }
    for uri in &redirect_uris {
        if let Err(e) = redirect::validate_registered(uri) {
            return Err(web::oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_redirect_uri",
                &format!("{uri}: {e}"),
            ));
        }
    }
    if let Some(types) = metadata.get("response_types") {
        let types = strings(Some(types)).ok_or_else(|| bad("response_types must be strings"))?;
        if types.iter().any(|t| t != "code") {
            return Err(bad("only the code response type is supported"));
        }
    }
    if let Some(scope) = metadata.get("scope") {
        let scope = scope
            .as_str()
            .ok_or_else(|| bad("scope must be a string"))?;
        let offered = &ctx.server.config.scopes;
        if let Some(s) = scope
            .split_ascii_whitespace()
            .find(|s| !offered.iter().any(|o| o == s))
        {
            return Err(bad(&format!("scope {s} is not offered by this server")));
        }
    }
    if let Some(name) = metadata.get("client_name")
        && name.as_str().is_none_or(|n| n.len() > 200)
    {
        return Err(bad("client_name must be a string of at most 200 bytes"));
    }
    metadata.insert("token_endpoint_auth_method".into(), method.as_str().into());
    metadata.insert("grant_types".into(), grants.into());
    metadata.insert("response_types".into(), vec!["code"].into());
    metadata.insert("redirect_uris".into(), redirect_uris.into());
    for private in [
        "client_id",
        "client_secret",
        "registration_access_token",
        "client_id_issued_at",
        "client_secret_expires_at",
        "registration_client_uri",
    ] {
        metadata.remove(private);
    }
    Ok((metadata, method))
}

async fn json_object(
    req: Request<Incoming>,
) -> Result<(HeaderMap, Map<String, Value>), Response<ProxyBody>> {
    let headers = req.headers().clone();
    let Some(body) = web::read_body(req.into_body()).await else {
        return Err(bad("request too large"));
    };
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(map)) => Ok((headers, map)),
        _ => Err(bad("the body must be a JSON object")),
    }
}

fn lifetime(ctx: &Ctx) -> Duration {
    Duration::from_secs(ctx.server.config.refresh_token_ttl_s.max(86_400))
}

fn registered_from(
    ctx: &Ctx,
    client_id: String,
    metadata: Map<String, Value>,
    method: AuthMethod,
    secret: Option<&str>,
    token: &str,
    issued_at: u64,
) -> Registered {
    let strings = |key: &str| -> Vec<String> {
        metadata
            .get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let _ = ctx;
    Registered {
        client_id,
        client_id_issued_at: issued_at,
        secret_sha256: secret.map(|s| sha256_hex(s.as_bytes())),
        registration_token_sha256: sha256_hex(token.as_bytes()),
        redirect_uris: strings("redirect_uris"),
        grant_types: strings("grant_types"),
        token_endpoint_auth_method: method,
        client_name: metadata
            .get("client_name")
            .and_then(Value::as_str)
            .map(String::from),
        scope: metadata
            .get("scope")
            .and_then(Value::as_str)
            .map(String::from),
        metadata,
    }
}

/// The registration response: the metadata plus what was issued.
fn answer(
    ctx: &Ctx,
    status: StatusCode,
    r: &Registered,
    secret: Option<&str>,
    token: Option<&str>,
) -> Response<ProxyBody> {
    let mut body = r.metadata.clone();
    body.insert("client_id".into(), r.client_id.clone().into());
    body.insert("client_id_issued_at".into(), r.client_id_issued_at.into());
    if let Some(s) = secret {
        body.insert("client_secret".into(), s.into());
        body.insert("client_secret_expires_at".into(), 0.into());
    }
    if let Some(t) = token {
        body.insert("registration_access_token".into(), t.into());
    }
    body.insert(
        "registration_client_uri".into(),
        format!("{}/register/{}", ctx.issuer(), r.client_id).into(),
    );
    web::json(status, &Value::Object(body))
}

pub async fn register(ctx: &Ctx, req: Request<Incoming>) -> Response<ProxyBody> {
    if !ctx.server.config.dynamic_registration {
        return web::oauth_error(
            StatusCode::FORBIDDEN,
            "access_denied",
            "dynamic registration is turned off on this server",
        );
    }
    let (_, metadata) = match json_object(req).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let (metadata, method) = match checked(ctx, metadata) {
        Ok(checked) => checked,
        Err(r) => return r,
    };
    let client_id = format!("dcr-{}", pkce::random_verifier());
    let secret = (method != AuthMethod::None).then(pkce::random_verifier);
    let token = pkce::random_verifier();
    let record = registered_from(
        ctx,
        client_id.clone(),
        metadata,
        method,
        secret.as_deref(),
        &token,
        web::now(),
    );
    let bytes = serde_json::to_vec(&record).unwrap_or_default();
    if ctx
        .oauth
        .store
        .put(&clients::store_key(ctx, &client_id), bytes, lifetime(ctx))
        .await
        .is_err()
    {
        return web::unavailable("register");
    }
    tracing::info!(server = %ctx.server.id, client_id, client_name = record.client_name.as_deref().unwrap_or("-"), "client registered");
    answer(
        ctx,
        StatusCode::CREATED,
        &record,
        secret.as_deref(),
        Some(&token),
    )
}

/// RFC 7592: read, update or delete a registration with its access token.
pub async fn manage(
    ctx: &Ctx,
    client_id: &str,
    method: Method,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let record = match clients::registered(ctx, client_id).await {
        Ok(Some(r)) => r,
        Ok(None) => return unauthorized(),
        Err(_) => return web::unavailable("register"),
    };
    let presented = bearer_token(req.headers())
        .map(|t| sha256_hex(t.as_bytes()))
        .unwrap_or_default();
    if !bool::from(
        presented
            .as_bytes()
            .ct_eq(record.registration_token_sha256.as_bytes()),
    ) {
        return unauthorized();
    }
    let key = clients::store_key(ctx, client_id);
    match method {
        Method::GET => answer(ctx, StatusCode::OK, &record, None, None),
        Method::DELETE => match ctx.oauth.store.delete(&key).await {
            Ok(()) => web::respond(StatusCode::NO_CONTENT, "text/plain", ""),
            Err(_) => web::unavailable("register"),
        },
        Method::PUT => {
            let (_, metadata) = match json_object(req).await {
                Ok(m) => m,
                Err(r) => return r,
            };
            let (metadata, auth) = match checked(ctx, metadata) {
                Ok(c) => c,
                Err(r) => return r,
            };
            if auth != record.token_endpoint_auth_method {
                return bad("token_endpoint_auth_method cannot change");
            }
            let mut updated = registered_from(
                ctx,
                record.client_id.clone(),
                metadata,
                auth,
                None,
                "",
                record.client_id_issued_at,
            );
            updated.secret_sha256 = record.secret_sha256.clone();
            updated.registration_token_sha256 = record.registration_token_sha256.clone();
            let bytes = serde_json::to_vec(&updated).unwrap_or_default();
            match ctx.oauth.store.put(&key, bytes, lifetime(ctx)).await {
                Ok(()) => answer(ctx, StatusCode::OK, &updated, None, None),
                Err(_) => web::unavailable("register"),
            }
        }
        _ => web::oauth_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            "use GET, PUT or DELETE",
        ),
    }
}

/// The same answer for an unknown client and a wrong token (RFC 7592 §3).
fn unauthorized() -> Response<ProxyBody> {
    let mut r = web::oauth_error(
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        "unknown client or wrong registration access token",
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer"),
    );
    r
}
