//! The rules of draft-ietf-oauth-client-id-metadata-document as pure
//! functions: which client_id URLs may be fetched, what a fetched
//! document must say, and how long its answer may be cached.
//!
//! Error messages name the rule broken, never the document's content:
//! both the URL's answer and the document are chosen by whoever sent the
//! client_id.

use std::time::Duration;

use http::HeaderMap;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use url::{Host, Url};

use super::CimdError;
use crate::redirect::validate_registered;

/// The longest client_id URL accepted.
pub const MAX_URL: usize = 2048;
/// How long a document is cached when its answer does not say.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
/// The shortest and longest caching, whatever `Cache-Control` says: a
/// login must not fetch the document on every request, and a changed
/// document must be seen within a day.
pub const MIN_TTL: Duration = Duration::from_secs(5 * 60);
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

const GRANTS: [&str; 2] = ["authorization_code", "refresh_token"];

/// A public client described by its metadata document: what the
/// authorization server needs of it, as cached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientDocument {
    /// The URL the document was fetched from, which is its client_id.
    pub client_id: String,
    pub client_name: Option<String>,
    /// Non-empty; each passed [`validate_registered`].
    pub redirect_uris: Vec<String>,
    /// `authorization_code` and/or `refresh_token`; both when the document
    /// names none.
    pub grant_types: Vec<String>,
    /// The scopes it may ask for, space-separated; `None`: any.
    pub scope: Option<String>,
}

/// Checks that `client_id` is a URL this server may fetch: `https`, a host
/// that is a fully qualified DNS name (an address literal or a single
/// label is refused), no user information, no fragment, a path other than
/// `/` without `.` or `..` segments, and written in its canonical form (so
/// that the bytes compared with the document's client_id are the bytes
/// fetched). A query is allowed (the draft only discourages it).
pub fn validate_client_id(client_id: &str) -> Result<Url, CimdError> {
    if client_id.len() > MAX_URL {
        return Err(CimdError::UrlTooLong);
    }
    if client_id
        .chars()
        .any(|c| c.is_ascii_whitespace() || c.is_control())
    {
        return Err(CimdError::Malformed);
    }
    let url = Url::parse(client_id).map_err(|_| CimdError::Malformed)?;
    if url.scheme() != "https" {
        return Err(CimdError::NotHttps);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(CimdError::UserInfo);
    }
    if url.fragment().is_some() {
        return Err(CimdError::Fragment);
    }
    match url.host() {
        Some(Host::Domain(name)) if name.trim_end_matches('.').contains('.') => {}
        Some(Host::Domain(_)) => return Err(CimdError::SingleLabel),
        Some(_) => return Err(CimdError::IpLiteral),
        None => return Err(CimdError::NoHost),
    }
    if has_dot_segment(client_id) {
        return Err(CimdError::DotSegment);
    }
    if url.path() == "/" {
        return Err(CimdError::NoPath);
    }
    if url.as_str() != client_id {
        return Err(CimdError::NotCanonical);
    }
    Ok(url)
}

/// Whether the path as written (before the parser resolves it) has a `.`
/// or `..` segment, percent-encoded or not.
fn has_dot_segment(client_id: &str) -> bool {
    let after_scheme = client_id.split_once("://").map_or("", |(_, rest)| rest);
    let path = after_scheme
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .split_once('/')
        .map_or("", |(_, path)| path);
    path.split('/').any(|segment| {
        let s = segment.to_ascii_lowercase().replace("%2e", ".");
        s == "." || s == ".."
    })
}

/// Whether a `Content-Type` is JSON (`application/json` or a `+json` type).
pub fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// How long to cache an answer: its `Cache-Control: max-age` (`no-store`
/// and `no-cache` count as 0), within [`MIN_TTL`, `MAX_TTL`];
/// [`DEFAULT_TTL`] when it says neither.
pub fn cache_ttl(headers: &HeaderMap) -> Duration {
    let mut ttl = None;
    for value in headers.get_all(CACHE_CONTROL) {
        let Ok(text) = value.to_str() else { continue };
        for directive in text.split(',') {
            let directive = directive.trim().to_ascii_lowercase();
            if directive == "no-store" || directive == "no-cache" {
                ttl = Some(0);
            } else if let Some(secs) = directive.strip_prefix("max-age=") {
                let secs = secs.trim_matches('"').parse::<u64>().unwrap_or(0);
                ttl = Some(ttl.map_or(secs, |t: u64| t.min(secs)));
            }
        }
    }
    ttl.map_or(DEFAULT_TTL, Duration::from_secs)
        .clamp(MIN_TTL, MAX_TTL)
}

/// Parses and checks a document fetched from `client_id`.
pub fn parse_document(client_id: &str, body: &[u8]) -> Result<ClientDocument, CimdError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| CimdError::NotJson {
        line: e.line(),
        column: e.column(),
    })?;
    let Value::Object(doc) = value else {
        return Err(CimdError::NotObject);
    };
    if string(&doc, "client_id")?.as_deref() != Some(client_id) {
        return Err(CimdError::ClientIdMismatch);
    }
    if doc.contains_key("client_secret") || doc.contains_key("client_secret_expires_at") {
        return Err(CimdError::ClientSecret);
    }
    match string(&doc, "token_endpoint_auth_method")?.as_deref() {
        None | Some("none") => {}
        Some(_) => return Err(CimdError::AuthMethod),
    }
    let redirect_uris = strings(&doc, "redirect_uris")?.unwrap_or_default();
    if redirect_uris.is_empty() {
        return Err(CimdError::NoRedirectUris);
    }
    for uri in &redirect_uris {
        validate_registered(uri).map_err(CimdError::RedirectUri)?;
    }
    Ok(ClientDocument {
        client_id: client_id.to_owned(),
        client_name: string(&doc, "client_name")?,
        redirect_uris,
        grant_types: grant_types(&doc)?,
        scope: string(&doc, "scope")?,
    })
}

fn grant_types(doc: &Map<String, Value>) -> Result<Vec<String>, CimdError> {
    let Some(grants) = strings(doc, "grant_types")? else {
        return Ok(GRANTS.map(String::from).to_vec());
    };
    if grants.iter().any(|g| g == "client_credentials") {
        return Err(CimdError::ClientCredentials);
    }
    if !grants.iter().all(|g| GRANTS.contains(&g.as_str())) {
        return Err(CimdError::UnsupportedGrant);
    }
    if !grants.iter().any(|g| g == "authorization_code") {
        return Err(CimdError::NoAuthorizationCode);
    }
    Ok(grants)
}

fn string(doc: &Map<String, Value>, member: &'static str) -> Result<Option<String>, CimdError> {
    match doc.get(member) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(CimdError::WrongType(member)),
    }
}

fn strings(
    doc: &Map<String, Value>,
    member: &'static str,
) -> Result<Option<Vec<String>>, CimdError> {
    match doc.get(member) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(String::from))
            .collect::<Option<Vec<_>>>()
            .map(Some)
            .ok_or(CimdError::WrongType(member)),
        Some(_) => Err(CimdError::WrongType(member)),
    }
}

#[cfg(test)]
#[path = "document_tests.rs"]
mod tests;
