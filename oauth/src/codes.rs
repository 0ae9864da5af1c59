//! Authorization codes: issued at the end of `/authorize`, redeemed once
//! at `/token`. A code is 256 random bits the store only knows by its
//! SHA-256; what it grants ([`CodeGrant`]) is bound to the client, the
//! redirect URI, the PKCE challenge and the resource, which the token
//! endpoint compares with what it is given.
//!
//! A second redemption is reuse, a sign the code leaked (OAuth 2.1
//! §4.1.3): a tombstone written at the first redemption remembers the
//! refresh-token family the code produced, so the reuse revokes it.
//! Access tokens already issued from it stay valid until they expire
//! (they are verified locally, never looked up).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::identity::Identity;
use crate::pkce::{digest, random_secret};
use crate::refresh;
use crate::store::{Store, StoreError};

/// The longest a code lives (OAuth 2.1 recommends 10 minutes at most);
/// also how long a tombstone outlives the first redemption, so it covers
/// the code's whole life.
pub const MAX_CODE_TTL: Duration = Duration::from_secs(600);

/// What `/authorize` decided, for `/token` to honour.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeGrant {
    pub client_id: String,
    pub redirect_uri: String,
    /// The S256 challenge; the verifier must hash to it.
    pub code_challenge: String,
    /// The normalised resource indicator (`resource::normalise`).
    pub resource: String,
    pub scope: String,
    pub identity: Identity,
    /// The OIDC `nonce` of the request, echoed in an ID token.
    #[serde(default)]
    pub nonce: Option<String>,
    /// When the user logged in, Unix seconds.
    pub auth_time: u64,
}

/// A code redeemed for the first time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redeemed {
    pub grant: CodeGrant,
}

/// Why a code cannot be redeemed; all but `Store` are `invalid_grant`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error("unknown or expired authorization code")]
    Invalid,
    /// Redeemed before. The refresh family issued from it, if any, is
    /// revoked already.
    #[error("authorization code already used")]
    Reused { family: Option<String> },
    #[error("stored authorization code is unreadable")]
    Corrupt,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the store keeps after the first redemption.
#[derive(Default, Serialize, Deserialize)]
struct Tombstone {
    #[serde(default)]
    family: Option<String>,
    /// Set by a second redemption, so that a family recorded after it
    /// (the first redemption still in flight) is revoked on arrival.
    #[serde(default)]
    reused: bool,
}

fn code_key(hash: &str) -> String {
    format!("code:{hash}")
}

fn tombstone_key(hash: &str) -> String {
    format!("code-used:{hash}")
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodeError> {
    serde_json::to_vec(value).map_err(|_| CodeError::Corrupt)
}

/// Stores `grant` under a fresh code and returns the code. `ttl` is
/// capped at [`MAX_CODE_TTL`].
pub async fn issue(
    store: &dyn Store,
    grant: &CodeGrant,
    ttl: Duration,
) -> Result<String, CodeError> {
    let code = random_secret();
    let ttl = ttl.min(MAX_CODE_TTL);
    store
        .put(&code_key(&digest(&code)), encode(grant)?, ttl)
        .await?;
    Ok(code)
}

/// Redeems `code` once. The tombstone is claimed first (`put_new`), so of
/// concurrent redemptions exactly one proceeds, on any replica.
pub async fn redeem(store: &dyn Store, code: &str) -> Result<Redeemed, CodeError> {
    let hash = digest(code);
    let tomb_key = tombstone_key(&hash);
    let fresh = encode(&Tombstone::default())?;
    if !store.put_new(&tomb_key, fresh, MAX_CODE_TTL).await? {
        return Err(reused(store, &tomb_key).await?);
    }
    match store.take(&code_key(&hash)).await? {
        Some(bytes) => {
            let grant = serde_json::from_slice(&bytes).map_err(|_| CodeError::Corrupt)?;
            Ok(Redeemed { grant })
        }
        None => {
            // Never issued, or expired: no tombstone for what never was.
            store.delete(&tomb_key).await?;
            Err(CodeError::Invalid)
        }
    }
}

/// A second redemption: flags the tombstone, revokes what was recorded.
async fn reused(store: &dyn Store, tomb_key: &str) -> Result<CodeError, CodeError> {
    let tomb: Tombstone = match store.get(tomb_key).await? {
        Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
        None => Tombstone::default(),
    };
    let flagged = Tombstone {
        family: tomb.family.clone(),
        reused: true,
    };
    store.put(tomb_key, encode(&flagged)?, MAX_CODE_TTL).await?;
    if let Some(family) = &tomb.family {
        refresh::revoke_family(store, family).await?;
    }
    Ok(CodeError::Reused {
        family: tomb.family,
    })
}

/// Records the refresh family issued from a redeemed code, so that a
/// later reuse of the code revokes it. If the code was reused meanwhile,
/// revokes the family now and says so with [`CodeError::Reused`].
pub async fn record_issued(store: &dyn Store, code: &str, family: &str) -> Result<(), CodeError> {
    let tomb_key = tombstone_key(&digest(code));
    let before: Tombstone = match store.get(&tomb_key).await? {
        Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
        None => Tombstone::default(),
    };
    let tomb = Tombstone {
        family: Some(family.to_string()),
        reused: before.reused,
    };
    store.put(&tomb_key, encode(&tomb)?, MAX_CODE_TTL).await?;
    if before.reused {
        refresh::revoke_family(store, family).await?;
        return Err(CodeError::Reused {
            family: tomb.family,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refresh::{RefreshError, RefreshGrant};
    use crate::store::MemoryStore;

    fn grant() -> CodeGrant {
        CodeGrant {
            client_id: "client-1".into(),
            redirect_uri: "http://127.0.0.1/callback".into(),
            code_challenge: crate::pkce::challenge_s256(&"v".repeat(43)),
            resource: "https://mcp.example.com/".into(),
            scope: "mcp".into(),
            identity: Identity {
                login: "octocat".into(),
                ..Identity::default()
            },
            nonce: None,
            auth_time: 1_800_000_000,
        }
    }

    const TTL: Duration = Duration::from_secs(60);

    async fn single_use(store: &dyn Store) {
        let code = issue(store, &grant(), TTL).await.expect("issue");
        assert_eq!(redeem(store, &code).await, Ok(Redeemed { grant: grant() }));
        assert_eq!(
            redeem(store, &code).await,
            Err(CodeError::Reused { family: None })
        );
        assert_eq!(redeem(store, "never-issued").await, Err(CodeError::Invalid));
        assert_eq!(redeem(store, "never-issued").await, Err(CodeError::Invalid));
    }

    #[tokio::test]
    async fn codes_are_single_use() {
        single_use(&MemoryStore::new()).await;
    }

    #[tokio::test]
    async fn the_store_never_holds_the_code() {
        let store = MemoryStore::new();
        let code = issue(&store, &grant(), TTL).await.expect("issue");
        assert_eq!(store.get(&code_key(&code)).await, Ok(None));
        assert!(
            store
                .get(&code_key(&digest(&code)))
                .await
                .expect("get")
                .is_some()
        );
    }

    /// The refresh family a token endpoint would start from `grant()`.
    async fn family(store: &dyn Store) -> (String, String) {
        let g = grant();
        let refresh = RefreshGrant::new(&g.client_id, &g.scope, &g.resource, g.identity);
        let family = refresh.family.clone();
        let token = refresh::issue_family(store, refresh, TTL)
            .await
            .expect("family");
        (family, token)
    }

    async fn is_revoked(store: &dyn Store, token: &str) -> bool {
        let now = refresh::unix_now();
        let rotated = refresh::rotate(store, token, "client-1", now, TTL).await;
        rotated.err() == Some(RefreshError::Invalid)
    }

    #[tokio::test]
    async fn reuse_revokes_the_family_it_issued() {
        let store = MemoryStore::new();
        let code = issue(&store, &grant(), TTL).await.expect("issue");
        redeem(&store, &code).await.expect("first");
        let (family, token) = family(&store).await;
        record_issued(&store, &code, &family).await.expect("record");
        let reuse = redeem(&store, &code).await;
        assert_eq!(
            reuse,
            Err(CodeError::Reused {
                family: Some(family)
            })
        );
        assert!(is_revoked(&store, &token).await);
    }

    #[tokio::test]
    async fn a_family_recorded_after_a_reuse_is_revoked_on_arrival() {
        let store = MemoryStore::new();
        let code = issue(&store, &grant(), TTL).await.expect("issue");
        redeem(&store, &code).await.expect("first");
        let reuse = redeem(&store, &code).await;
        assert_eq!(reuse, Err(CodeError::Reused { family: None }));
        let (family, token) = family(&store).await;
        let late = record_issued(&store, &code, &family).await;
        assert_eq!(
            late,
            Err(CodeError::Reused {
                family: Some(family)
            })
        );
        assert!(is_revoked(&store, &token).await);
    }

    #[tokio::test(start_paused = true)]
    async fn codes_expire() {
        let store = MemoryStore::new();
        let code = issue(&store, &grant(), Duration::from_secs(3600))
            .await
            .expect("issue");
        tokio::time::advance(MAX_CODE_TTL).await;
        assert_eq!(
            redeem(&store, &code).await,
            Err(CodeError::Invalid),
            "capped at 10 min"
        );
    }

    #[tokio::test]
    async fn concurrent_redemptions_one_wins() {
        let store = std::sync::Arc::new(MemoryStore::new());
        let code = issue(store.as_ref(), &grant(), TTL).await.expect("issue");
        let tries = (0..8).map(|_| {
            let (store, code) = (store.clone(), code.clone());
            tokio::spawn(async move { redeem(store.as_ref(), &code).await })
        });
        let results = futures::future::join_all(tries).await;
        let wins = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
        assert_eq!(wins, 1, "{results:?}");
    }

    /// One Redis, two replicas: issued on one, redeemed on the other,
    /// reused on the first.
    #[tokio::test]
    async fn across_replicas_in_redis() {
        let Some((url, _server)) = crate::store::tests::redis().await else {
            return;
        };
        let (a, b) = crate::store::tests::redis_replicas(&url);
        single_use(&a).await;
        let code = issue(&a, &grant(), TTL).await.expect("issue");
        assert_eq!(redeem(&b, &code).await, Ok(Redeemed { grant: grant() }));
        assert!(matches!(
            redeem(&a, &code).await,
            Err(CodeError::Reused { .. })
        ));
    }
}
