//! Rotation with an injected clock: grace, reuse, revocation, expiry,
//! concurrent refreshes, and two replicas on one Redis.

use std::sync::Arc;

use super::*;
use crate::store::MemoryStore;

const NOW: u64 = 1_800_000_000;
const DAY: Duration = Duration::from_secs(86_400);
const GRACE: Duration = Duration::from_secs(30);

fn grant() -> RefreshGrant {
    let who = Identity {
        login: "octocat".into(),
        ..Identity::default()
    };
    RefreshGrant::new("client-1", "mcp", "https://mcp.example.com/", who)
}

async fn start(store: &dyn Store) -> String {
    issue_family_at(store, grant(), DAY, NOW)
        .await
        .expect("issue")
}

async fn rotate_at(store: &dyn Store, token: &str, now: u64) -> Result<String, RefreshError> {
    rotate(store, token, "client-1", now, GRACE)
        .await
        .map(|(_, next)| next)
}

/// Rotation, the grace window, then reuse outside it revoking the family.
async fn lifecycle(store: &dyn Store) {
    let t0 = start(store).await;
    let (granted, t1) = rotate(store, &t0, "client-1", NOW, GRACE)
        .await
        .expect("rotate");
    assert_eq!(
        (granted.scope.as_str(), granted.family_expires_at),
        ("mcp", NOW + 86_400)
    );
    assert_ne!(t1, t0);
    // A concurrent refresh, and a retry after a lost answer: same successor.
    assert_eq!(rotate_at(store, &t0, NOW).await, Ok(t1.clone()));
    assert_eq!(rotate_at(store, &t0, NOW + 30).await, Ok(t1.clone()));
    let t2 = rotate_at(store, &t1, NOW + 31).await.expect("t1 rotates");
    // Outside the window: reuse, and the whole family goes.
    assert_eq!(
        rotate_at(store, &t0, NOW + 31).await,
        Err(RefreshError::Reused)
    );
    assert_eq!(
        rotate_at(store, &t2, NOW + 32).await,
        Err(RefreshError::Invalid)
    );
    assert_eq!(
        rotate_at(store, &t1, NOW + 32).await,
        Err(RefreshError::Invalid)
    );
}

#[tokio::test]
async fn rotation_grace_and_reuse() {
    lifecycle(&MemoryStore::new()).await;
}

#[tokio::test]
async fn another_client_cannot_use_it() {
    let store = MemoryStore::new();
    let t0 = start(&store).await;
    let stolen = rotate(&store, &t0, "client-2", NOW, GRACE).await;
    assert_eq!(stolen.err(), Some(RefreshError::ClientMismatch));
    assert!(
        rotate_at(&store, &t0, NOW).await.is_ok(),
        "the mismatch did not use it"
    );
}

#[tokio::test]
async fn families_expire_and_rotation_never_extends_them() {
    let store = MemoryStore::new();
    let t0 = start(&store).await;
    let end = NOW + DAY.as_secs();
    let t1 = rotate_at(&store, &t0, end - 1).await.expect("last second");
    let (granted, _) = rotate(&store, &t1, "client-1", end - 1, GRACE)
        .await
        .expect("t1");
    assert_eq!(granted.family_expires_at, end);
    assert_eq!(
        rotate_at(&store, &t1, end).await,
        Err(RefreshError::Invalid)
    );
}

#[tokio::test]
async fn revocation_kills_the_family() {
    let store = MemoryStore::new();
    let t0 = start(&store).await;
    let t1 = rotate_at(&store, &t0, NOW).await.expect("rotate");
    revoke_token(&store, &t1).await.expect("revoke");
    assert_eq!(
        rotate_at(&store, &t1, NOW + 1).await,
        Err(RefreshError::Invalid)
    );
    assert_eq!(
        rotate_at(&store, &t0, NOW + 1).await,
        Err(RefreshError::Invalid)
    );
    revoke_token(&store, "never-issued")
        .await
        .expect("unknown is fine");
    assert_eq!(
        rotate_at(&store, "never-issued", NOW).await,
        Err(RefreshError::Invalid)
    );
}

#[tokio::test]
async fn lookup_reports_live_unrotated_tokens() {
    let store = MemoryStore::new();
    let t0 = start(&store).await;
    assert_eq!(
        lookup(&store, &t0, NOW)
            .await
            .expect("lookup")
            .map(|g| g.client_id),
        Some("client-1".into())
    );
    let t1 = rotate_at(&store, &t0, NOW).await.expect("rotate");
    assert_eq!(lookup(&store, &t0, NOW).await, Ok(None));
    assert!(lookup(&store, &t1, NOW).await.expect("lookup").is_some());
    assert_eq!(
        lookup(&store, &t1, NOW + DAY.as_secs()).await,
        Ok(None),
        "expired"
    );
}

#[tokio::test]
async fn the_store_never_holds_a_token() {
    let store = MemoryStore::new();
    let t0 = start(&store).await;
    let t1 = rotate_at(&store, &t0, NOW).await.expect("rotate");
    for token in [&t0, &t1] {
        for key in [token_key(token), used_key(token)] {
            assert_eq!(store.get(&key).await, Ok(None));
        }
        assert!(
            store
                .get(&token_key(&digest(token)))
                .await
                .expect("get")
                .is_some()
        );
    }
}

#[tokio::test]
async fn concurrent_refreshes_get_one_successor() {
    let store = Arc::new(MemoryStore::new());
    let t0 = start(store.as_ref()).await;
    let tries = (0..8).map(|_| {
        let (store, t0) = (store.clone(), t0.clone());
        tokio::spawn(async move { rotate_at(store.as_ref(), &t0, NOW).await })
    });
    let mut got: Vec<String> = futures::future::join_all(tries)
        .await
        .into_iter()
        .map(|r| r.expect("task").expect("rotate"))
        .collect();
    got.dedup();
    assert_eq!(got.len(), 1, "{got:?}");
}

/// Two replicas on one Redis: issued on A, rotated on B, raced on both,
/// and a reuse on A seen as a revoked family on B.
#[tokio::test]
async fn across_replicas_in_redis() {
    let Some((url, _server)) = crate::store::tests::redis().await else {
        return;
    };
    let (a, b) = crate::store::tests::redis_replicas(&url);
    lifecycle(&a).await;
    let t0 = start(&a).await;
    let t1 = rotate_at(&b, &t0, NOW).await.expect("rotate on B");
    let (on_a, on_b) = tokio::join!(rotate_at(&a, &t1, NOW + 1), rotate_at(&b, &t1, NOW + 1));
    assert_eq!(on_a.clone().expect("A"), on_b.expect("B"));
    assert_eq!(
        rotate_at(&a, &t0, NOW + 100).await,
        Err(RefreshError::Reused)
    );
    let t2 = on_a.expect("A");
    assert_eq!(
        rotate_at(&b, &t2, NOW + 101).await,
        Err(RefreshError::Invalid)
    );
}

/// Within the grace window, a token whose successor was already rotated
/// is a replay of an older generation: refused, and the family goes.
#[tokio::test]
async fn a_replay_two_generations_back_is_reuse_even_within_the_grace() {
    let store = MemoryStore::new();
    let t0 = start(&store).await;
    let t1 = rotate_at(&store, &t0, NOW).await.expect("t0 rotates");
    assert_eq!(rotate_at(&store, &t0, NOW + 1).await, Ok(t1.clone()));
    let t2 = rotate_at(&store, &t1, NOW + 2).await.expect("t1 rotates");
    assert_eq!(
        rotate_at(&store, &t0, NOW + 3).await,
        Err(RefreshError::Reused)
    );
    assert_eq!(
        rotate_at(&store, &t2, NOW + 4).await,
        Err(RefreshError::Invalid)
    );
}
