//! Who a data plane is: the credential in its hello, checked against the
//! shared sync token or, as a Kubernetes ServiceAccount token, with a
//! `TokenReview`. A ServiceAccount identity comes from the token, never from
//! the hello: the pod name the API server bound it to, else the bound
//! object's name, else the credential id. A hello claiming any other id is
//! refused, so one data plane's credential cannot pose as another.
//!
//! Must not log a credential: only review verdicts and identities.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, UserInfo};
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::token::SyncToken;

const POD_NAME: &str = "authentication.kubernetes.io/pod-name";
const CREDENTIAL_ID: &str = "authentication.kubernetes.io/credential-id";
/// How long a positive review is reused for a hello presenting the same
/// token: a reconnect storm costs the API server one review per data plane.
const CACHE_TTL: Duration = Duration::from_secs(10);

/// How data planes authenticate (`--sync-auth`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SyncAuthMode {
    /// The shared token only (standalone clusters, older data planes).
    Token,
    /// ServiceAccount tokens verified by TokenReview only.
    Serviceaccount,
    /// Either: the shared token first, then a TokenReview.
    Both,
}

/// What the ServiceAccount path accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccountPolicy {
    /// Usernames (`system:serviceaccount:NS:NAME`) allowed to connect.
    pub allowed: Vec<String>,
    /// The audience the token must be issued for.
    pub audience: String,
    /// How often a connection's token is reviewed again.
    pub review_every: Duration,
}

impl ServiceAccountPolicy {
    /// `ns/name` entries into usernames; an entry without a `/` is an error.
    pub fn new(
        allowed: &[String],
        audience: String,
        review_every: Duration,
    ) -> Result<Self, String> {
        let allowed = allowed
            .iter()
            .map(|entry| match entry.split_once('/') {
                Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                    Ok(format!("system:serviceaccount:{ns}:{name}"))
                }
                _ => Err(format!(
                    "--sync-allowed-serviceaccount {entry:?} is not NAMESPACE/NAME"
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if allowed.is_empty() {
            return Err("--sync-auth serviceaccount needs --sync-allowed-serviceaccount".into());
        }
        Ok(ServiceAccountPolicy {
            allowed,
            audience,
            review_every,
        })
    }
}

/// The operator's side of data-plane authentication.
pub struct Authenticator {
    token: Option<SyncToken>,
    reviewer: Option<Reviewer>,
}

/// A ServiceAccount token presented by an authenticated connection, kept to
/// review it again. Its `Debug` hides the value.
#[derive(Clone)]
pub struct Credential(String);

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credential(..)")
    }
}

/// An authenticated data plane.
#[derive(Debug)]
pub struct Identity {
    pub id: String,
    /// `Some` when the identity came from a ServiceAccount token, which is
    /// reviewed again while the connection lasts.
    pub credential: Option<Credential>,
}

/// The answer to a review.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The data plane this token identifies.
    Valid(String),
    /// The token is not (or no longer) acceptable; the reason is safe to
    /// tell the data plane.
    Denied(String),
    /// The API server could not answer: nothing is known about the token.
    Unavailable(String),
}

struct Reviewer {
    client: kube::Client,
    policy: ServiceAccountPolicy,
    /// SHA-256 of a token → the id it reviewed to, and when that expires.
    cache: Mutex<HashMap<[u8; 32], (String, Instant)>>,
}

impl Authenticator {
    /// The shared token alone.
    pub fn token(token: SyncToken) -> Self {
        Authenticator {
            token: Some(token),
            reviewer: None,
        }
    }

    /// The shared token (if any) and ServiceAccount tokens (if a policy).
    pub fn new(
        token: Option<SyncToken>,
        policy: Option<ServiceAccountPolicy>,
        client: kube::Client,
    ) -> Self {
        let reviewer = policy.map(|policy| Reviewer {
            client,
            policy,
            cache: Mutex::new(HashMap::new()),
        });
        Authenticator { token, reviewer }
    }

    /// How often ServiceAccount connections are reviewed again.
    pub fn review_every(&self) -> Option<Duration> {
        self.reviewer.as_ref().map(|r| r.policy.review_every)
    }

    /// Checks a hello's credential and claimed id. `Err` is the refusal
    /// sent back to the data plane.
    pub async fn authenticate(&self, presented: &str, claimed: &str) -> Result<Identity, String> {
        if self.token.as_ref().is_some_and(|t| t.matches(presented)) {
            return Ok(Identity {
                id: claimed.to_string(),
                credential: None,
            });
        }
        let Some(reviewer) = &self.reviewer else {
            return Err("invalid sync token".into());
        };
        let id = match reviewer.review(presented, true).await {
            Verdict::Valid(id) => id,
            Verdict::Denied(reason) => return Err(reason),
            Verdict::Unavailable(error) => {
                tracing::warn!(%error, "cannot review a data plane's token");
                return Err("the operator cannot review tokens now".into());
            }
        };
        if id != claimed {
            return Err(format!(
                "dataplane id {claimed:?} is not the one its credential names ({id:?})"
            ));
        }
        Ok(Identity {
            id,
            credential: Some(Credential(presented.to_string())),
        })
    }

    /// Reviews a connection's credential again, bypassing the cache; a
    /// denial also evicts it, so a reconnect is reviewed afresh.
    pub async fn recheck(&self, credential: &Credential) -> Verdict {
        match &self.reviewer {
            Some(reviewer) => reviewer.review(&credential.0, false).await,
            None => Verdict::Denied("ServiceAccount tokens are not accepted".into()),
        }
    }
}

impl Reviewer {
    async fn review(&self, token: &str, use_cache: bool) -> Verdict {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if use_cache && let Some(id) = self.cached(&key) {
            return Verdict::Valid(id);
        }
        let verdict = match self.ask(token).await {
            Ok(user) => identify(&user, token, &self.policy.allowed),
            Err(Ok(reason)) => Verdict::Denied(reason),
            Err(Err(error)) => Verdict::Unavailable(error),
        };
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        cache.retain(|_, (_, until)| *until > now);
        match &verdict {
            Verdict::Valid(id) => {
                let ttl = CACHE_TTL.min(self.policy.review_every);
                cache.insert(key, (id.clone(), now + ttl));
            }
            Verdict::Denied(_) => {
                cache.remove(&key);
            }
            Verdict::Unavailable(_) => {}
        }
        verdict
    }

    fn cached(&self, key: &[u8; 32]) -> Option<String> {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache
            .get(key)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(id, _)| id.clone())
    }

    /// The reviewed user; `Err(Ok(reason))` a denial, `Err(Err(error))`
    /// no answer.
    async fn ask(&self, token: &str) -> Result<UserInfo, Result<String, String>> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(vec![self.policy.audience.clone()]),
            },
            ..TokenReview::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| Err(e.to_string()))?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            // The API server's error text names no token; it says why
            // (expired, bound object gone, wrong audience).
            let why = status.error.unwrap_or_else(|| "not authenticated".into());
            return Err(Ok(format!("token refused: {why}")));
        }
        let audiences = status.audiences.unwrap_or_default();
        if !audiences.contains(&self.policy.audience) {
            return Err(Ok(format!(
                "token is not for audience {}",
                self.policy.audience
            )));
        }
        status
            .user
            .ok_or_else(|| Ok("token review named no user".to_string()))
    }
}

/// The data plane an authenticated token stands for, if its ServiceAccount
/// is allowed.
fn identify(user: &UserInfo, token: &str, allowed: &[String]) -> Verdict {
    let username = user.username.clone().unwrap_or_default();
    if !allowed.contains(&username) {
        return Verdict::Denied(format!(
            "{username} is not an allowed data plane ServiceAccount"
        ));
    }
    let extra = |key: &str| {
        user.extra
            .as_ref()
            .and_then(|extra| extra.get(key))
            .and_then(|values| values.first())
            .filter(|v| !v.is_empty())
            .cloned()
    };
    match extra(POD_NAME)
        .or_else(|| bound_object(token))
        .or_else(|| extra(CREDENTIAL_ID))
    {
        Some(id) => Verdict::Valid(id),
        None => Verdict::Denied("the token is bound to no pod or object".into()),
    }
}

/// The name of the object (pod, Secret) a ServiceAccount token is bound
/// to, from its claims. Read only after the API server has verified the
/// token, so the claims are its own; the review's `extra` names pods but
/// not Secrets.
fn bound_object(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    let bound = &claims["kubernetes.io"];
    ["pod", "secret"]
        .iter()
        .find_map(|kind| bound[kind]["name"].as_str())
        .filter(|name| !name.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn jwt(claims: serde_json::Value) -> String {
        let body = URL_SAFE_NO_PAD.encode(claims.to_string());
        format!("eyJhbGciOiJSUzI1NiJ9.{body}.c2ln")
    }

    fn user(name: &str, extra: &[(&str, &str)]) -> UserInfo {
        let extra: BTreeMap<String, Vec<String>> = extra
            .iter()
            .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
            .collect();
        UserInfo {
            username: Some(name.into()),
            extra: Some(extra),
            ..UserInfo::default()
        }
    }

    const SA: &str = "system:serviceaccount:edge:postern-dataplane";

    #[test]
    fn allowed_entries_become_usernames() {
        let policy = ServiceAccountPolicy::new(
            &["edge/postern-dataplane".into()],
            "postern-sync".into(),
            Duration::from_secs(300),
        )
        .expect("policy");
        assert_eq!(policy.allowed, [SA]);
        for bad in ["edge", "/x", "a/", "a/b/c"] {
            let err = ServiceAccountPolicy::new(&[bad.into()], "a".into(), Duration::ZERO);
            assert!(err.is_err(), "{bad}");
        }
        assert!(ServiceAccountPolicy::new(&[], "a".into(), Duration::ZERO).is_err());
    }

    #[test]
    fn the_pod_name_wins_then_the_bound_object_then_the_credential_id() {
        let allowed = [SA.to_string()];
        let secret_bound = jwt(serde_json::json!({"kubernetes.io": {"secret": {"name": "dp-a"}}}));
        let pod = user(SA, &[(POD_NAME, "dp-7f9"), (CREDENTIAL_ID, "JTI=1")]);
        assert_eq!(
            identify(&pod, &secret_bound, &allowed),
            Verdict::Valid("dp-7f9".into())
        );
        let bare = user(SA, &[(CREDENTIAL_ID, "JTI=1")]);
        assert_eq!(
            identify(&bare, &secret_bound, &allowed),
            Verdict::Valid("dp-a".into())
        );
        assert_eq!(
            identify(&bare, "not-a-jwt", &allowed),
            Verdict::Valid("JTI=1".into())
        );
        assert!(matches!(
            identify(&user(SA, &[]), "x.e30.y", &allowed),
            Verdict::Denied(_)
        ));
    }

    #[test]
    fn an_unlisted_service_account_is_denied() {
        let other = user("system:serviceaccount:edge:default", &[(POD_NAME, "p")]);
        let verdict = identify(&other, "t", &[SA.to_string()]);
        assert!(
            matches!(&verdict, Verdict::Denied(m) if m.contains("edge:default")),
            "{verdict:?}"
        );
    }

    #[test]
    fn a_credential_never_shows_in_debug() {
        let identity = Identity {
            id: "dp".into(),
            credential: Some(Credential("eyJsecret".into())),
        };
        assert!(!format!("{identity:?}").contains("eyJsecret"));
    }
}
