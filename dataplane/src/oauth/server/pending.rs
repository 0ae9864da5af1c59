//! An authorization request between `/authorize` and the consent: who
//! asked, for what, and (once the user logged in upstream) who answered.
//! Kept in the store for ten minutes under an unguessable id, which also
//! serves as the `state` towards the upstream provider.

use postern_oauth::identity::Identity;
use postern_oauth::store::StoreError;
use serde::{Deserialize, Serialize};
use std::time::Duration;

use super::Ctx;

pub const TTL: Duration = Duration::from_secs(600);

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pending {
    pub client_id: String,
    pub client_name: Option<String>,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub code_challenge: String,
    /// The normalised `resource`, and the audience (its origin).
    pub resource: String,
    pub audience: String,
    pub scope: String,
    /// The issuer the client talked to (returned as `iss`).
    pub issuer: String,
    /// Binds the consent form to this request.
    pub csrf: String,
    /// `github` or `oidc`, once chosen.
    pub provider: Option<String>,
    /// PKCE verifier and OIDC nonce towards the upstream provider.
    pub upstream_verifier: String,
    pub nonce: String,
    pub identity: Option<Identity>,
}

fn key(ctx: &Ctx, id: &str) -> String {
    format!("pending:{}:{}", ctx.server.id, id)
}

pub async fn save(ctx: &Ctx, id: &str, pending: &Pending) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(pending).unwrap_or_default();
    ctx.oauth.store.put(&key(ctx, id), bytes, TTL).await
}

pub async fn load(ctx: &Ctx, id: &str) -> Result<Option<Pending>, StoreError> {
    if id.is_empty() || id.len() > 128 {
        return Ok(None);
    }
    let bytes = ctx.oauth.store.get(&key(ctx, id)).await?;
    Ok(bytes.and_then(|b| serde_json::from_slice(&b).ok()))
}

/// Takes it out: a consent is answered once.
pub async fn take(ctx: &Ctx, id: &str) -> Result<Option<Pending>, StoreError> {
    let bytes = ctx.oauth.store.take(&key(ctx, id)).await?;
    Ok(bytes.and_then(|b| serde_json::from_slice(&b).ok()))
}
