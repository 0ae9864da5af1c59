//! Refresh tokens for public clients: rotated at every use, grouped in
//! families (one per login) revocable as a unit, with reuse detection
//! (OAuth 2.1 §4.3.1) softened by a grace window so that two refreshes a
//! client starts at once do not log its user out.
//!
//! Tokens are 256 random bits; the store keeps their SHA-256 only. The
//! successor of a token is derived from it and a seed stored at its first
//! use, so a second presentation within the grace window gets the same
//! successor back without the store ever holding it.
//!
//! Keys: `rf:<family>` is the family's liveness (deleted to revoke);
//! `rt:<hash>` the grant a token carries; `rt-used:<hash>` when and with
//! which seed a token was first rotated. All live as long as the family.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde::{Deserialize, Serialize};

use crate::identity::Identity;
use crate::pkce::{digest, random_secret};
use crate::store::{Store, StoreError};

/// The grace window the token endpoint is expected to pass: long enough
/// for a client's concurrent refreshes and a retry after a lost answer,
/// short enough that a stolen token is soon useless.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// What a refresh token grants, the same for every token of its family.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshGrant {
    pub family: String,
    pub client_id: String,
    pub scope: String,
    /// The normalised resource the family was issued for.
    pub resource: String,
    pub identity: Identity,
    /// Unix seconds; rotation never extends it.
    pub family_expires_at: u64,
}

impl RefreshGrant {
    /// A grant for a new family (a fresh random family id); the expiry is
    /// set by [`issue_family`].
    pub fn new(client_id: &str, scope: &str, resource: &str, identity: Identity) -> RefreshGrant {
        RefreshGrant {
            family: random_secret(),
            client_id: client_id.into(),
            scope: scope.into(),
            resource: resource.into(),
            identity,
            family_expires_at: 0,
        }
    }
}

/// Why a refresh token is refused; all but `Store` are `invalid_grant`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefreshError {
    /// Unknown, expired, or of a revoked family.
    #[error("unknown, expired or revoked refresh token")]
    Invalid,
    /// Used before, outside the grace window: its family is now revoked.
    #[error("refresh token reused; its family is revoked")]
    Reused,
    #[error("refresh token was issued to another client")]
    ClientMismatch,
    #[error("stored refresh token is unreadable")]
    Corrupt,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The first rotation of a token.
#[derive(Serialize, Deserialize)]
struct Used {
    at: u64,
    seed: String,
}

fn family_key(family: &str) -> String {
    format!("rf:{family}")
}

fn token_key(hash: &str) -> String {
    format!("rt:{hash}")
}

fn used_key(hash: &str) -> String {
    format!("rt-used:{hash}")
}

/// Seconds since the Unix epoch by the system clock.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, RefreshError> {
    serde_json::to_vec(value).map_err(|_| RefreshError::Corrupt)
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, RefreshError> {
    serde_json::from_slice(bytes).map_err(|_| RefreshError::Corrupt)
}

/// The successor of `token` under `seed`: HMAC-SHA256, in base64url.
fn successor(seed: &str, token: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, seed.as_bytes());
    URL_SAFE_NO_PAD.encode(hmac::sign(&key, token.as_bytes()))
}

/// Starts a family living `family_ttl` from now and returns its first
/// token. The family id is `grant.family` (see [`RefreshGrant::new`]).
pub async fn issue_family(
    store: &dyn Store,
    grant: RefreshGrant,
    family_ttl: Duration,
) -> Result<String, RefreshError> {
    issue_family_at(store, grant, family_ttl, unix_now()).await
}

/// [`issue_family`] with the clock given.
pub async fn issue_family_at(
    store: &dyn Store,
    mut grant: RefreshGrant,
    family_ttl: Duration,
    now: u64,
) -> Result<String, RefreshError> {
    if grant.family.is_empty() {
        grant.family = random_secret();
    }
    grant.family_expires_at = now.saturating_add(family_ttl.as_secs());
    store
        .put(&family_key(&grant.family), b"1".to_vec(), family_ttl)
        .await?;
    let token = random_secret();
    store
        .put(&token_key(&digest(&token)), encode(&grant)?, family_ttl)
        .await?;
    Ok(token)
}

/// The grant of a live token of a live family, or `Invalid`.
async fn live_grant(store: &dyn Store, hash: &str, now: u64) -> Result<RefreshGrant, RefreshError> {
    let bytes = store
        .get(&token_key(hash))
        .await?
        .ok_or(RefreshError::Invalid)?;
    let grant: RefreshGrant = decode(&bytes)?;
    if grant.family_expires_at <= now || store.get(&family_key(&grant.family)).await?.is_none() {
        return Err(RefreshError::Invalid);
    }
    Ok(grant)
}

/// Exchanges `token` for its successor. The first use claims the token
/// (`put_new`, atomic across replicas); a later use within `grace` of the
/// first gets the same successor; any use after that is reuse and revokes
/// the family. `now` is Unix seconds.
pub async fn rotate(
    store: &dyn Store,
    token: &str,
    client_id: &str,
    now: u64,
    grace: Duration,
) -> Result<(RefreshGrant, String), RefreshError> {
    let hash = digest(token);
    let grant = live_grant(store, &hash, now).await?;
    if grant.client_id != client_id {
        return Err(RefreshError::ClientMismatch);
    }
    let remaining = Duration::from_secs(grant.family_expires_at - now);
    let first = Used {
        at: now,
        seed: random_secret(),
    };
    let used = if store
        .put_new(&used_key(&hash), encode(&first)?, remaining)
        .await?
    {
        first
    } else {
        let bytes = store
            .get(&used_key(&hash))
            .await?
            .ok_or(RefreshError::Invalid)?;
        let used: Used = decode(&bytes)?;
        // Once the successor was itself rotated, this token is a replay
        // of an older generation, however recent: the grace window only
        // covers presentations racing the first rotation.
        let moved_on = store
            .get(&used_key(&digest(&successor(&used.seed, token))))
            .await?
            .is_some();
        // A replica whose clock is behind may see `now` before `at`:
        // that is within the window too.
        if moved_on || now > used.at.saturating_add(grace.as_secs()) {
            revoke_family(store, &grant.family).await?;
            return Err(RefreshError::Reused);
        }
        used
    };
    let next = successor(&used.seed, token);
    // Within the grace window the first rotation may still be writing
    // this; the value is the same either way.
    store
        .put(&token_key(&digest(&next)), encode(&grant)?, remaining)
        .await?;
    Ok((grant, next))
}

/// The grant of `token` if it is live and not yet rotated: what RFC 7662
/// introspection reports as active, and what revocation checks the
/// client against.
pub async fn lookup(
    store: &dyn Store,
    token: &str,
    now: u64,
) -> Result<Option<RefreshGrant>, RefreshError> {
    let hash = digest(token);
    match live_grant(store, &hash, now).await {
        Ok(grant) if store.get(&used_key(&hash)).await?.is_none() => Ok(Some(grant)),
        Ok(_) | Err(RefreshError::Invalid) => Ok(None),
        Err(e) => Err(e),
    }
}

/// RFC 7009: revokes the family of `token` (every token of that login).
/// An unknown token is not an error.
pub async fn revoke_token(store: &dyn Store, token: &str) -> Result<(), RefreshError> {
    if let Some(bytes) = store.get(&token_key(&digest(token))).await? {
        let grant: RefreshGrant = decode(&bytes)?;
        revoke_family(store, &grant.family).await?;
    }
    Ok(())
}

/// Revokes every token of `family`, at once and on every replica.
pub async fn revoke_family(store: &dyn Store, family: &str) -> Result<(), StoreError> {
    store.delete(&family_key(family)).await
}

#[cfg(test)]
#[path = "refresh_tests.rs"]
mod tests;
