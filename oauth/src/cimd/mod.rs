//! Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document,
//! MCP 2025-11-25): a client whose client_id is an https URL is described
//! by the JSON document at that URL, fetched when the authorization server
//! first meets it, instead of being registered beforehand.
//!
//! [`fetch`] checks the URL ([`document::validate_client_id`]), fetches it
//! through [`PublicHttp`] (public addresses only, no redirects, 5 s, 64 KiB,
//! JSON), checks the document ([`document::parse_document`]) and caches the
//! outcome in the shared [`Store`] under a hash of the URL: a document for
//! its `Cache-Control: max-age` within [5 min, 24 h], a refusal for
//! [`REFUSAL_TTL`]. Replicas share the cache, and a burst of logins for
//! one client fetches once: the first caller takes a short lock in the
//! store, the others wait for what it caches.
//!
//! What it must not do: follow a redirect, connect to an address that did
//! not pass the filter, or put the document's content in an error.

mod addr;
pub mod document;
mod public_http;

use std::time::{Duration, Instant};

use postern_snapshot::sha256_hex;
use serde::{Deserialize, Serialize};

pub use self::addr::forbidden_range;
pub use self::document::ClientDocument;
pub use self::public_http::{
    FETCH_TIMEOUT, MAX_DOCUMENT, PublicHttp, PublicOnly, Resolve, ResolveError, SystemDns,
};
use crate::redirect::RedirectError;
use crate::store::{Store, StoreError};

/// How long a refused URL stays refused without being fetched again.
pub const REFUSAL_TTL: Duration = Duration::from_secs(30);
/// How long the first caller may hold the fetch lock (its fetch's deadline
/// and a margin); others wait at most this long before fetching themselves.
const LOCK_TTL: Duration = Duration::from_secs(6);
const POLL: Duration = Duration::from_millis(50);

/// Why a client_id URL gave no client. Messages name the rule broken and,
/// for network failures, the host; never the document's content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CimdError {
    #[error("client_id is not a URL")]
    Malformed,
    #[error("client_id is longer than {} bytes", document::MAX_URL)]
    UrlTooLong,
    #[error("client_id must be an https URL")]
    NotHttps,
    #[error("client_id has no host")]
    NoHost,
    #[error("client_id's host must be a DNS name, not an address")]
    IpLiteral,
    #[error("client_id's host must be a fully qualified name, not a single label")]
    SingleLabel,
    #[error("client_id must not carry user information")]
    UserInfo,
    #[error("client_id must not carry a fragment")]
    Fragment,
    #[error("client_id must have a path")]
    NoPath,
    #[error("client_id's path must not have . or .. segments")]
    DotSegment,
    #[error(
        "client_id is not in its canonical form (lowercase scheme and host, no default port, no escapes the URL parser would change)"
    )]
    NotCanonical,
    #[error("building the HTTPS client: {0}")]
    Client(String),
    #[error("{0}")]
    Resolve(ResolveError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("fetching the document: {0}")]
    Transport(String),
    #[error("the document URL answered with a redirect ({0}); redirects are not followed")]
    Redirect(u16),
    #[error("the document URL answered {0}")]
    Status(u16),
    #[error("the document is not served as application/json")]
    ContentType,
    #[error("the document is larger than {MAX_DOCUMENT} bytes")]
    TooLarge,
    #[error("the document is not JSON (line {line}, column {column})")]
    NotJson { line: usize, column: usize },
    #[error("the document is not a JSON object")]
    NotObject,
    #[error("the document's {0} has the wrong type")]
    WrongType(&'static str),
    #[error("the document's client_id is not the URL it was fetched from")]
    ClientIdMismatch,
    #[error("the document must not carry a client_secret")]
    ClientSecret,
    #[error("token_endpoint_auth_method must be none (absent) for a metadata-document client")]
    AuthMethod,
    #[error("the document has no redirect_uris")]
    NoRedirectUris,
    #[error("the document's redirect_uris: {0}")]
    RedirectUri(RedirectError),
    #[error("a metadata-document client is public and may not use client_credentials")]
    ClientCredentials,
    #[error("the document's grant_types name one this server does not support")]
    UnsupportedGrant,
    #[error("the document's grant_types lack authorization_code")]
    NoAuthorizationCode,
    /// The same URL was refused a moment ago; `0` says why.
    #[error("refused a moment ago: {0}")]
    Cached(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A fetch's outcome as the store keeps it.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Cached {
    Document(ClientDocument),
    Refused(String),
}

/// The client `client_id` names, from the cache or fetched (see the module
/// documentation). A [`CimdError::Store`] means the store failed; every
/// other error means this client_id names no usable client.
pub async fn fetch(
    http: &PublicHttp,
    store: &dyn Store,
    client_id: &str,
) -> Result<ClientDocument, CimdError> {
    let url = document::validate_client_id(client_id)?;
    let key = format!("cimd:{}", sha256_hex(client_id.as_bytes()));
    if let Some(hit) = cached(store, &key).await? {
        return hit;
    }
    let lock = format!("{key}:fetching");
    if store.put_new(&lock, vec![1], LOCK_TTL).await? {
        let outcome = fetch_and_cache(http, store, &url, &key).await;
        let _ = store.delete(&lock).await;
        return outcome;
    }
    let deadline = Instant::now() + LOCK_TTL;
    while Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
        if let Some(hit) = cached(store, &key).await? {
            return hit;
        }
        if store.get(&lock).await?.is_none() {
            break;
        }
    }
    // The first caller gave up without caching anything (or the store lost
    // its entry): fetch without waiting any longer.
    fetch_and_cache(http, store, &url, &key).await
}

async fn cached(
    store: &dyn Store,
    key: &str,
) -> Result<Option<Result<ClientDocument, CimdError>>, CimdError> {
    let Some(bytes) = store.get(key).await? else {
        return Ok(None);
    };
    Ok(match serde_json::from_slice(&bytes) {
        Ok(Cached::Document(doc)) => Some(Ok(doc)),
        Ok(Cached::Refused(reason)) => Some(Err(CimdError::Cached(reason))),
        Err(_) => None,
    })
}

/// Fetches and checks the document and caches the outcome. Failing to
/// write the cache does not fail the fetch.
async fn fetch_and_cache(
    http: &PublicHttp,
    store: &dyn Store,
    url: &url::Url,
    key: &str,
) -> Result<ClientDocument, CimdError> {
    let outcome = fetch_document(http, url).await;
    let (entry, ttl) = match &outcome {
        Ok((doc, ttl)) => (Cached::Document(doc.clone()), *ttl),
        Err(CimdError::Store(_)) => return outcome.map(|(doc, _)| doc),
        Err(e) => (Cached::Refused(e.to_string()), REFUSAL_TTL),
    };
    if let Ok(bytes) = serde_json::to_vec(&entry) {
        let _ = store.put(key, bytes, ttl).await;
    }
    outcome.map(|(doc, _)| doc)
}

async fn fetch_document(
    http: &PublicHttp,
    url: &url::Url,
) -> Result<(ClientDocument, Duration), CimdError> {
    let resp = http.get(url).await?;
    let status = resp.status.as_u16();
    if resp.status.is_redirection() {
        return Err(CimdError::Redirect(status));
    }
    if status != 200 {
        return Err(CimdError::Status(status));
    }
    if !document::is_json(&resp.headers) {
        return Err(CimdError::ContentType);
    }
    let doc = document::parse_document(url.as_str(), &resp.body)?;
    Ok((doc, document::cache_ttl(&resp.headers)))
}
