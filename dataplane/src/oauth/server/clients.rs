//! The clients of an authorization server: OAuthClients from the snapshot,
//! clients registered at `/register` (in the store), and the guard's own
//! client that protected hosts use for browser logins. Client
//! authentication at the token endpoints: none, client_secret_post,
//! client_secret_basic.

use base64::Engine;
use http::{HeaderMap, header};
use postern_oauth::cimd::{self, CimdError};
use postern_oauth::redirect;
use postern_oauth::store::StoreError;
use postern_snapshot::{GrantType, salted_sha256, sha256_hex};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::Ctx;
use crate::oauth::guard::{CALLBACK_PATH, GUARD_CLIENT};
use crate::oauth::web::{self, https_origin};

/// How a client proves itself at the token endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    None,
    ClientSecretPost,
    ClientSecretBasic,
}

impl AuthMethod {
    pub fn parse(text: &str) -> Option<AuthMethod> {
        match text {
            "none" => Some(AuthMethod::None),
            "client_secret_post" => Some(AuthMethod::ClientSecretPost),
            "client_secret_basic" => Some(AuthMethod::ClientSecretBasic),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::None => "none",
            AuthMethod::ClientSecretPost => "client_secret_post",
            AuthMethod::ClientSecretBasic => "client_secret_basic",
        }
    }
}

/// A client registered at `/register`, as the store keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Registered {
    pub client_id: String,
    pub client_id_issued_at: u64,
    /// Hex SHA-256 of the secret, for confidential clients.
    #[serde(default)]
    pub secret_sha256: Option<String>,
    pub registration_token_sha256: String,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    pub token_endpoint_auth_method: AuthMethod,
    #[serde(default)]
    pub client_name: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
    /// Everything the client sent, unknown members included (RFC 7591 §2).
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

enum Secret {
    None,
    /// An OAuthClient's salted hash.
    Salted {
        salt: String,
        sha256: String,
    },
    /// A registered client's plain SHA-256 (its secret is 32 random bytes).
    Plain(String),
}

/// A client, whichever kind, as the endpoints need it.
pub struct Client {
    pub id: String,
    pub name: Option<String>,
    redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    /// Scopes it may ask for; `None`: any this server offers.
    pub scopes: Option<Vec<String>>,
    secret: Secret,
    pub guard: bool,
}

impl Client {
    pub fn confidential(&self) -> bool {
        !matches!(self.secret, Secret::None)
    }

    pub fn may(&self, grant: &str) -> bool {
        self.grant_types.iter().any(|g| g == grant)
    }

    /// Whether `uri` is one of its redirect URIs (loopback: any port). The
    /// guard's client may only return to a host this server protects, on
    /// the port of this request.
    pub fn redirect_allowed(&self, ctx: &Ctx, uri: &str) -> bool {
        if self.guard {
            return guard_redirect(ctx, uri);
        }
        self.redirect_uris.iter().any(|r| redirect::matches(r, uri))
    }

    fn secret_matches(&self, presented: &str) -> bool {
        let expected = match &self.secret {
            Secret::None => return false,
            Secret::Salted { salt, sha256 } => (salted_sha256(salt, presented.as_bytes()), sha256),
            Secret::Plain(sha256) => (sha256_hex(presented.as_bytes()), sha256),
        };
        bool::from(expected.0.as_bytes().ct_eq(expected.1.as_bytes()))
    }
}

fn guard_redirect(ctx: &Ctx, uri: &str) -> bool {
    let Ok(parsed) = url::Url::parse(uri) else {
        return false;
    };
    let Some(host) = parsed.host_str() else {
        return false;
    };
    parsed.scheme() == "https"
        && ctx.server.protects(host)
        && parsed.port() == ctx.port()
        && uri == format!("{}{CALLBACK_PATH}", https_origin(host, ctx.port()))
}

/// Finds a client by id; `Ok(None)` when there is none.
pub async fn find(ctx: &Ctx, client_id: &str) -> Result<Option<Client>, StoreError> {
    if client_id == GUARD_CLIENT {
        return Ok(Some(Client {
            id: GUARD_CLIENT.into(),
            name: Some("Sign-in to this site".into()),
            redirect_uris: Vec::new(),
            grant_types: vec!["authorization_code".into()],
            scopes: None,
            secret: Secret::None,
            guard: true,
        }));
    }
    if let Some(entry) = ctx.tables.clients.get(client_id) {
        return Ok(Some(Client {
            id: entry.client_id.clone(),
            name: entry.client_name.clone(),
            redirect_uris: entry.redirect_uris.clone(),
            grant_types: entry
                .grant_types
                .iter()
                .map(|g| grant_name(*g).to_string())
                .collect(),
            scopes: (!entry.scopes.is_empty()).then(|| entry.scopes.clone()),
            secret: match &entry.secret {
                Some(h) => Secret::Salted {
                    salt: h.salt.clone(),
                    sha256: h.sha256.clone(),
                },
                None => Secret::None,
            },
            guard: false,
        }));
    }
    // A registered client's `scope` is what it said it wanted, not a cap:
    // the client wrote it itself (it could register again with more), and
    // MCP clients register with the first challenge's scope, then step up
    // to more on `insufficient_scope` with the same registration.
    if let Some(client) = registered(ctx, client_id).await?.map(|r| Client {
        id: r.client_id,
        name: r.client_name,
        redirect_uris: r.redirect_uris,
        grant_types: r.grant_types,
        scopes: None,
        secret: match r.secret_sha256 {
            Some(h) => Secret::Plain(h),
            None => Secret::None,
        },
        guard: false,
    }) {
        return Ok(Some(client));
    }
    if ctx.server.config.client_id_metadata_documents && client_id.starts_with("https://") {
        return metadata_document(ctx, client_id).await;
    }
    Ok(None)
}

/// A client whose id is the https URL of its metadata document (Client ID
/// Metadata Documents, MCP 2025-11-25): public, with the document's name,
/// redirect URIs and grant types. A document that cannot be fetched or is
/// refused makes an unknown client; the reason is logged, the body never.
async fn metadata_document(ctx: &Ctx, client_id: &str) -> Result<Option<Client>, StoreError> {
    match cimd::fetch(&ctx.oauth.cimd, ctx.oauth.store.as_ref(), client_id).await {
        Ok(doc) => Ok(Some(Client {
            id: doc.client_id,
            name: doc.client_name,
            redirect_uris: doc.redirect_uris,
            grant_types: doc.grant_types,
            // The scope the document names is what the client wants, not a
            // cap: MCP clients step up on `insufficient_scope` with the
            // same client_id.
            scopes: None,
            secret: Secret::None,
            guard: false,
        })),
        Err(CimdError::Store(e)) => Err(e),
        Err(reason) => {
            let shown: String = client_id.chars().take(256).collect();
            tracing::info!(server = %ctx.server.id, client_id = ?shown, %reason, "client metadata document refused");
            Ok(None)
        }
    }
}

pub fn store_key(ctx: &Ctx, client_id: &str) -> String {
    format!("client:{}:{}", ctx.server.id, client_id)
}

pub async fn registered(ctx: &Ctx, client_id: &str) -> Result<Option<Registered>, StoreError> {
    let Some(bytes) = ctx.oauth.store.get(&store_key(ctx, client_id)).await? else {
        return Ok(None);
    };
    Ok(serde_json::from_slice(&bytes).ok())
}

fn grant_name(g: GrantType) -> &'static str {
    match g {
        GrantType::AuthorizationCode => "authorization_code",
        GrantType::ClientCredentials => "client_credentials",
        GrantType::RefreshToken => "refresh_token",
    }
}

/// Why client authentication failed (`invalid_client`, RFC 6749 §5.2).
pub enum AuthFailure {
    Invalid(&'static str),
    Store,
}

/// Authenticates the client of a token-endpoint request from the Basic
/// header or the form; a public client names itself with `client_id`.
pub async fn authenticate(
    ctx: &Ctx,
    headers: &HeaderMap,
    form: &[(String, String)],
) -> Result<Client, AuthFailure> {
    let basic = basic_credentials(headers);
    let posted = web::param(form, "client_secret");
    let (id, secret) = match (&basic, web::param(form, "client_id")) {
        (Some((id, secret)), form_id) => {
            if form_id.is_some_and(|f| f != id) || posted.is_some() {
                return Err(AuthFailure::Invalid("more than one client authentication"));
            }
            (id.clone(), Some(secret.clone()))
        }
        (None, Some(id)) => (id.to_string(), posted.map(String::from)),
        (None, None) => return Err(AuthFailure::Invalid("no client_id")),
    };
    let client = match find(ctx, &id).await {
        Ok(Some(c)) => c,
        Ok(None) => return Err(AuthFailure::Invalid("unknown client")),
        Err(_) => return Err(AuthFailure::Store),
    };
    match (&secret, client.confidential()) {
        (Some(s), true) if client.secret_matches(s) => Ok(client),
        (Some(_), true) => Err(AuthFailure::Invalid("wrong client secret")),
        (None, false) => Ok(client),
        (None, true) => Err(AuthFailure::Invalid("this client must authenticate")),
        (Some(_), false) => Err(AuthFailure::Invalid("a public client has no secret")),
    }
}

/// `Authorization: Basic` with URL-encoded id and secret (RFC 6749 §2.3.1).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    let unescape = |s: &str| {
        url::form_urlencoded::parse(format!("v={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    Some((unescape(id)?, unescape(secret)?))
}
