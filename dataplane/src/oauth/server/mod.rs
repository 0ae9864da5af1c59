//! The authorization server's endpoints on its own hostnames. The issuer
//! is `https://<host>[:port]` exactly as the client addressed it (lowercase,
//! no default port, no trailing slash), so the metadata, the `iss` of the
//! tokens and the `authorization_servers` of protected hosts agree byte for
//! byte. Plain HTTP is redirected to https; unknown paths get 404.

mod authorize;
mod clients;
pub mod grants;
mod metadata;
mod pending;
mod register;
mod token;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use postern_oauth::ratelimit::{self, Limit};

use super::Oauth;
use super::tables::{Server, Tables};
use super::web::{self, https_origin, port_of};
use crate::reverse::{ConnInfo, ProxyBody};

/// Everything a request to the authorization server knows.
pub struct Ctx {
    pub oauth: Arc<Oauth>,
    pub tables: Arc<Tables>,
    pub server: Arc<Server>,
    /// As the client wrote it: `host[:port]`.
    pub raw_host: String,
    /// Lowercase, no port.
    pub host: String,
    pub conn: Arc<ConnInfo>,
}

impl Ctx {
    /// This request's issuer.
    pub fn issuer(&self) -> String {
        https_origin(&self.host, self.port())
    }

    pub fn port(&self) -> Option<u16> {
        port_of(&self.raw_host)
    }

    /// Every issuer this server answers as, at this request's port.
    pub fn issuers(&self) -> Vec<String> {
        self.server
            .hosts
            .iter()
            .map(|h| https_origin(h, self.port()))
            .collect()
    }

    /// The origin of the one exact host this server protects, when there
    /// is exactly one: the resource a request that names none means.
    pub fn only_resource(&self) -> Option<String> {
        let mut hosts = self
            .server
            .config
            .resources
            .iter()
            .filter(|h| !h.starts_with("*."));
        match (hosts.next(), hosts.next()) {
            (Some(only), None) => Some(https_origin(only, self.port())),
            _ => None,
        }
    }

    pub fn client_ip(&self) -> IpAddr {
        self.conn.client.ip()
    }

    /// Fixed-window rate limit per client address; 429 with Retry-After.
    pub async fn limit(&self, bucket: &str, per_minute: u64) -> Result<(), Response<ProxyBody>> {
        let limit = Limit {
            per_window: per_minute,
            window: Duration::from_secs(60),
        };
        match ratelimit::check(self.oauth.store.as_ref(), bucket, self.client_ip(), limit).await {
            Ok(()) => Ok(()),
            Err(limited) => {
                self.oauth.metrics.rate_limited.inc();
                let mut r = web::oauth_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "slow_down",
                    "too many requests from this address; try again later",
                );
                if let Ok(v) = http::HeaderValue::from_str(&limited.retry_after_s.to_string()) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                Err(r)
            }
        }
    }
}

/// Requests per minute per client address.
const TOKEN_PER_MINUTE: u64 = 120;
const REGISTER_PER_MINUTE: u64 = 20;
const LOGIN_PER_MINUTE: u64 = 60;

pub async fn serve(ctx: Ctx, req: Request<Incoming>) -> Response<ProxyBody> {
    if !ctx.conn.tls {
        return to_https(&ctx, &req);
    }
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let (endpoint, response) = route(&ctx, &path, &method, req).await;
    ctx.oauth.metrics.request(endpoint, response.status());
    response
}

async fn route(
    ctx: &Ctx,
    path: &str,
    method: &Method,
    req: Request<Incoming>,
) -> (&'static str, Response<ProxyBody>) {
    let cors_preflight = *method == Method::OPTIONS;
    let response = match path {
        "/.well-known/oauth-authorization-server" | "/.well-known/openid-configuration" => {
            if cors_preflight {
                web::preflight()
            } else {
                metadata::document(ctx, path.ends_with("openid-configuration"))
            }
        }
        "/jwks" => {
            if cors_preflight {
                web::preflight()
            } else {
                metadata::jwks(ctx)
            }
        }
        _ => {
            return (endpoint_of(path), dispatch(ctx, path, method, req).await);
        }
    };
    (endpoint_of(path), response)
}

async fn dispatch(
    ctx: &Ctx,
    path: &str,
    method: &Method,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    if *method == Method::OPTIONS && cors_endpoint(path) {
        return web::preflight();
    }
    match (path, method) {
        ("/authorize", &Method::GET) | ("/authorize", &Method::POST) => {
            if let Err(r) = ctx.limit("login", LOGIN_PER_MINUTE).await {
                return r;
            }
            authorize::authorize(ctx, req).await
        }
        ("/login", &Method::GET) => authorize::choose(ctx, req).await,
        ("/login/callback", &Method::GET) => {
            if let Err(r) = ctx.limit("login", LOGIN_PER_MINUTE).await {
                return r;
            }
            authorize::callback(ctx, req).await
        }
        ("/consent", &Method::GET) => authorize::consent_page(ctx, req).await,
        ("/consent", &Method::POST) => authorize::consent(ctx, req).await,
        ("/logout", &Method::GET) | ("/logout", &Method::POST) => authorize::logout(ctx, &req),
        ("/token", &Method::POST) => {
            if let Err(r) = ctx.limit("token", TOKEN_PER_MINUTE).await {
                return web::with_cors(r);
            }
            web::with_cors(token::token(ctx, req).await)
        }
        ("/revoke", &Method::POST) => web::with_cors(token::revoke(ctx, req).await),
        ("/introspect", &Method::POST) => token::introspect(ctx, req).await,
        ("/userinfo", &Method::GET) | ("/userinfo", &Method::POST) => {
            web::with_cors(token::userinfo(ctx, &req))
        }
        ("/verify", _) => token::verify(ctx, &req),
        ("/register", &Method::POST) => {
            if let Err(r) = ctx.limit("register", REGISTER_PER_MINUTE).await {
                return web::with_cors(r);
            }
            web::with_cors(register::register(ctx, req).await)
        }
        (p, m) if p.starts_with("/register/") => {
            let id = p.trim_start_matches("/register/").to_string();
            web::with_cors(register::manage(ctx, &id, m.clone(), req).await)
        }
        ("/", &Method::GET) => web::page(
            StatusCode::OK,
            "Postern authorization server",
            &format!(
                "<p>Issuer <code>{}</code>. Metadata: <code>/.well-known/oauth-authorization-server</code>.</p>",
                web::escape(&ctx.issuer())
            ),
        ),
        (p, _) if known(p) => web::oauth_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            "method not allowed",
        ),
        _ => web::oauth_error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
    }
}

fn cors_endpoint(path: &str) -> bool {
    matches!(path, "/token" | "/register" | "/revoke" | "/userinfo")
        || path.starts_with("/register/")
}

fn known(path: &str) -> bool {
    matches!(
        path,
        "/authorize"
            | "/login"
            | "/login/callback"
            | "/consent"
            | "/logout"
            | "/token"
            | "/revoke"
            | "/introspect"
            | "/userinfo"
            | "/register"
    )
}

fn endpoint_of(path: &str) -> &'static str {
    match path {
        "/.well-known/oauth-authorization-server" | "/.well-known/openid-configuration" => {
            "metadata"
        }
        "/jwks" => "jwks",
        "/authorize" => "authorize",
        "/login" | "/login/callback" => "login",
        "/consent" => "consent",
        "/logout" => "logout",
        "/token" => "token",
        "/revoke" => "revoke",
        "/introspect" => "introspect",
        "/userinfo" => "userinfo",
        "/verify" => "verify",
        p if p == "/register" || p.starts_with("/register/") => "register",
        _ => "other",
    }
}

/// The issuer is https only: plain HTTP is sent there (308 keeps POSTs).
fn to_https(ctx: &Ctx, req: &Request<Incoming>) -> Response<ProxyBody> {
    let port = match ctx.oauth.https_port {
        443 => None,
        p => Some(p),
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut r = web::redirect(&format!("{}{path}", https_origin(&ctx.host, port)));
    *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
    r
}
