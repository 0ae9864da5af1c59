//! Dashboard login through an OpenID Connect provider (single sign-on), as
//! an alternative to pasting a token: the admin port is an OIDC client
//! (code flow, PKCE S256, nonce, the ID token checked against the
//! provider's JWKS; `postern_oauth::login::Oidc` does the protocol) and the
//! signed-in user gets the role an allowlist gives them. A user no list
//! names is refused; nothing is granted by default.
//!
//! Allowlist entries match the user's login (`preferred_username`), their
//! verified e-mail, any address of a domain (`*@example.com`) or a group
//! (`group:ops`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::{HeaderValue, Response, StatusCode, header};
use postern_oauth::identity::Identity;
use postern_oauth::login::{HttpClient, Oidc};
use postern_oauth::pkce;
use postern_snapshot::OidcProvider;

use crate::reply::{self, Body};
use crate::sessions::Sessions;
use crate::tokens::Role;

/// Where the dashboard starts and ends a single sign-on.
pub const LOGIN_PATH: &str = "/ui/sso/login";
pub const CALLBACK_PATH: &str = "/ui/sso/callback";
/// A login left unfinished longer than this is forgotten.
const PENDING_TTL: Duration = Duration::from_secs(600);
/// At most this many logins in flight (a flood cannot grow the map).
const MAX_PENDING: usize = 1024;

/// The flags that turn single sign-on on; shared by both binaries.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct SsoArgs {
    /// An OpenID Connect issuer the dashboard signs users in with (its
    /// discovery document must name exactly this issuer).
    #[arg(long, env = "POSTERN_ADMIN_OIDC_ISSUER", value_name = "URL")]
    pub admin_oidc_issuer: Option<String>,
    /// The dashboard's client id at that provider.
    #[arg(long, env = "POSTERN_ADMIN_OIDC_CLIENT_ID", value_name = "ID")]
    pub admin_oidc_client_id: Option<String>,
    /// A file holding the client secret (absent: a public client, PKCE only).
    #[arg(
        long,
        env = "POSTERN_ADMIN_OIDC_CLIENT_SECRET_FILE",
        value_name = "FILE"
    )]
    pub admin_oidc_client_secret_file: Option<PathBuf>,
    /// The redirect URI registered at the provider: this admin port's
    /// `/ui/sso/callback` as the browser reaches it (e.g.
    /// `http://127.0.0.1:9000/ui/sso/callback` behind `kubectl port-forward`).
    #[arg(long, env = "POSTERN_ADMIN_OIDC_REDIRECT_URI", value_name = "URL")]
    pub admin_oidc_redirect_uri: Option<String>,
    /// Extra CA certificates (PEM) that verify the provider.
    #[arg(long, env = "POSTERN_ADMIN_OIDC_CA_FILE", value_name = "FILE")]
    pub admin_oidc_ca_file: Option<PathBuf>,
    /// Who gets the admin role: logins, e-mails, `*@domain`, `group:NAME`.
    #[arg(
        long,
        env = "POSTERN_ADMIN_OIDC_ADMINS",
        value_delimiter = ',',
        value_name = "WHO"
    )]
    pub admin_oidc_admins: Vec<String>,
    /// Who gets the read role (same forms).
    #[arg(
        long,
        env = "POSTERN_ADMIN_OIDC_READERS",
        value_delimiter = ',',
        value_name = "WHO"
    )]
    pub admin_oidc_readers: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SsoError {
    #[error("--admin-oidc-issuer needs --admin-oidc-client-id and --admin-oidc-redirect-uri")]
    Incomplete,
    #[error(
        "--admin-oidc-issuer is set but neither --admin-oidc-admins nor --admin-oidc-readers names anyone"
    )]
    NobodyAllowed,
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the OIDC HTTP client: {0}")]
    Client(String),
}

impl SsoArgs {
    /// The configured sign-on, `None` when no issuer is given.
    pub fn build(&self) -> Result<Option<Sso>, SsoError> {
        let Some(issuer) = &self.admin_oidc_issuer else {
            return Ok(None);
        };
        let (Some(client_id), Some(redirect_uri)) =
            (&self.admin_oidc_client_id, &self.admin_oidc_redirect_uri)
        else {
            return Err(SsoError::Incomplete);
        };
        if self.admin_oidc_admins.is_empty() && self.admin_oidc_readers.is_empty() {
            return Err(SsoError::NobodyAllowed);
        }
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|source| SsoError::Read {
                path: path.clone(),
                source,
            })
        };
        let secret = match &self.admin_oidc_client_secret_file {
            Some(path) => Some(String::from_utf8_lossy(&read(path)?).trim().to_string()),
            None => None,
        };
        let ca = match &self.admin_oidc_ca_file {
            Some(path) => Some(read(path)?),
            None => None,
        };
        let http = HttpClient::new(ca.as_deref()).map_err(|e| SsoError::Client(e.to_string()))?;
        let provider = OidcProvider {
            issuer: issuer.clone(),
            client_id: client_id.clone(),
            client_secret: secret.filter(|s| !s.is_empty()),
            scopes: vec!["openid".into(), "profile".into(), "email".into()],
        };
        Ok(Some(Sso {
            oidc: Oidc::from(&provider),
            http,
            redirect_uri: redirect_uri.clone(),
            admins: self.admin_oidc_admins.clone(),
            readers: self.admin_oidc_readers.clone(),
            pending: Mutex::default(),
        }))
    }
}

struct Pending {
    verifier: String,
    nonce: String,
    started: Instant,
}

/// Single sign-on for the dashboard.
pub struct Sso {
    oidc: Oidc,
    http: HttpClient,
    redirect_uri: String,
    admins: Vec<String>,
    readers: Vec<String>,
    pending: Mutex<HashMap<String, Pending>>,
}

impl std::fmt::Debug for Sso {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sso")
            .field("oidc", &self.oidc)
            .field("redirect_uri", &self.redirect_uri)
            .finish_non_exhaustive()
    }
}

impl Sso {
    /// `GET /ui/sso/login`: to the provider, with a fresh state, PKCE
    /// verifier and nonce remembered here.
    pub async fn start(&self) -> Response<Body> {
        let discovered = match self.oidc.discover(&self.http).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "dashboard sign-on: the provider's discovery failed");
                return page(
                    StatusCode::BAD_GATEWAY,
                    "The sign-on provider cannot be reached.",
                );
            }
        };
        let (state, verifier, nonce) = (
            pkce::random_verifier(),
            pkce::random_verifier(),
            pkce::random_verifier(),
        );
        let url = self.oidc.authorize_url(
            &discovered,
            &self.redirect_uri,
            &state,
            &nonce,
            &pkce::challenge_s256(&verifier),
        );
        {
            let mut pending = lock(&self.pending);
            pending.retain(|_, p| p.started.elapsed() < PENDING_TTL);
            if pending.len() >= MAX_PENDING {
                return page(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many sign-ons in progress; try again shortly.",
                );
            }
            pending.insert(
                state,
                Pending {
                    verifier,
                    nonce,
                    started: Instant::now(),
                },
            );
        }
        redirect(&url)
    }

    /// `GET /ui/sso/callback?code=…&state=…`: finishes the login, checks
    /// the allowlists and opens a dashboard session.
    pub async fn callback(&self, query: Option<&str>, sessions: &Sessions) -> Response<Body> {
        let params: HashMap<String, String> =
            url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        let Some(pending) = params
            .get("state")
            .and_then(|s| lock(&self.pending).remove(s))
        else {
            return page(
                StatusCode::BAD_REQUEST,
                "This sign-on is unknown or expired; start again.",
            );
        };
        if pending.started.elapsed() >= PENDING_TTL {
            return page(
                StatusCode::BAD_REQUEST,
                "This sign-on expired; start again.",
            );
        }
        if let Some(error) = params.get("error") {
            tracing::info!(%error, "dashboard sign-on refused by the provider");
            return page(StatusCode::FORBIDDEN, "The provider refused the sign-on.");
        }
        let Some(code) = params.get("code") else {
            return page(StatusCode::BAD_REQUEST, "The provider sent no code.");
        };
        let identity = match self
            .oidc
            .finish(
                &self.http,
                code,
                &self.redirect_uri,
                &pending.verifier,
                &pending.nonce,
            )
            .await
        {
            Ok(identity) => identity,
            Err(e) => {
                tracing::warn!(error = %e, "dashboard sign-on failed");
                return page(e.status(), "The sign-on could not be completed.");
            }
        };
        let Some(role) = self.role_of(&identity) else {
            tracing::info!(login = %identity.login, "dashboard sign-on: not on any allowlist");
            return page(
                StatusCode::FORBIDDEN,
                "You are signed in, but not allowed to use this dashboard.",
            );
        };
        tracing::info!(login = %identity.login, role = role.as_str(), "dashboard sign-on");
        let (id, _csrf) = sessions.open_role(role, &identity.login);
        let mut resp = redirect(crate::ui::PREFIX);
        if let Ok(value) = HeaderValue::from_str(&crate::gate::session_cookie(&id)) {
            resp.headers_mut().insert(header::SET_COOKIE, value);
        }
        resp
    }

    /// The best role an allowlist gives `who`.
    pub fn role_of(&self, who: &Identity) -> Option<Role> {
        if self.admins.iter().any(|e| names(e, who)) {
            Some(Role::Admin)
        } else if self.readers.iter().any(|e| names(e, who)) {
            Some(Role::Read)
        } else {
            None
        }
    }
}

/// Whether allowlist entry `entry` names `who`.
fn names(entry: &str, who: &Identity) -> bool {
    let entry = entry.trim();
    if entry.is_empty() {
        return false;
    }
    if let Some(group) = entry.strip_prefix("group:") {
        return who.groups.iter().any(|g| g == group);
    }
    let email = who.email.as_deref().unwrap_or("");
    if let Some(domain) = entry.strip_prefix("*@") {
        return email
            .rsplit_once('@')
            .is_some_and(|(_, d)| d.eq_ignore_ascii_case(domain));
    }
    entry == who.login || (!email.is_empty() && entry.eq_ignore_ascii_case(email))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn redirect(location: &str) -> Response<Body> {
    let mut resp = Response::new(reply::full(""));
    *resp.status_mut() = StatusCode::FOUND;
    if let Ok(value) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, value);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A short page for a person in a browser, with a way back.
fn page(status: StatusCode, msg: &'static str) -> Response<Body> {
    let html = format!(
        "<!doctype html><meta charset=utf-8><title>Postern</title><p>{msg}</p><p><a href=\"/ui/\">Back to the dashboard</a></p>"
    );
    reply::bytes(status, "text/html; charset=utf-8", html)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(login: &str, email: Option<&str>, groups: &[&str]) -> Identity {
        Identity {
            provider: "oidc".into(),
            subject: login.into(),
            login: login.into(),
            email: email.map(String::from),
            name: None,
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn allowlist_entries_name_logins_emails_domains_and_groups() {
        let alice = who("alice", Some("alice@example.com"), &["ops"]);
        assert!(names("alice", &alice));
        assert!(names("Alice@Example.com", &alice));
        assert!(names("*@example.com", &alice));
        assert!(!names("*@example.org", &alice));
        assert!(names("group:ops", &alice));
        assert!(!names("group:dev", &alice));
        assert!(!names("bob", &alice));
        assert!(!names("", &alice));
        let nomail = who("carol", None, &[]);
        assert!(!names("*@example.com", &nomail));
        assert!(!names("", &nomail));
    }
}
