//! The certificate manager: for every [`AcmeRequest`] the compiler emits,
//! decides with [`policy::decide`] and orders when due, one order at a
//! time, and stores the result. Storage, challenge publishing and status
//! reporting are the caller's (standalone: files; operator: Secrets,
//! snapshots, conditions), behind [`Store`], [`Presenter`] and [`Reporter`].
//! Only one manager may run per store: the operator runs it on the elected
//! leader only.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use instant_acme::{Account, AccountCredentials, ExternalAccountKey, NewAccount};
use postern_compile::AcmeRequest;
use tokio::sync::{Mutex, watch};

use crate::issuers::{AcmeConfig, Issuer};
use crate::metrics::Metrics;
use crate::order::{Presenter, ari_id, ari_window, order, problem};
use crate::policy::{self, CertState, Decision, Problem, Unix, Why};

/// Where accounts, certificates and their state live.
pub trait Store: Send + Sync {
    /// The account credentials (JSON) kept for `issuer`, if any.
    fn account<'a>(&'a self, issuer: &'a str) -> BoxFuture<'a, Result<Option<String>, String>>;
    fn save_account<'a>(
        &'a self,
        issuer: &'a str,
        json: String,
    ) -> BoxFuture<'a, Result<(), String>>;
    /// The state stored for the request's certificate, if any.
    fn state<'a>(
        &'a self,
        request: &'a AcmeRequest,
    ) -> BoxFuture<'a, Result<Option<CertState>, String>>;
    /// Stores a new certificate with its state (replacing the old one whole).
    fn save_issued<'a>(
        &'a self,
        request: &'a AcmeRequest,
        cert_pem: String,
        key_pem: String,
        state: CertState,
    ) -> BoxFuture<'a, Result<(), String>>;
    /// Stores state only (a failure), keeping any certificate.
    fn save_state<'a>(
        &'a self,
        request: &'a AcmeRequest,
        state: CertState,
    ) -> BoxFuture<'a, Result<(), String>>;
}

/// What a certificate's status says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// A certificate is stored and current. `issued` is set on the pass
    /// that just ordered it (`renewal` when it replaced one).
    Ready {
        not_after: Unix,
        renew_after: Unix,
        issued: Option<Why>,
    },
    /// Ordering (or waiting to).
    Pending(String),
    /// The last order failed; the next try is at `retry_at`.
    Failed { problem: Problem, retry_at: Unix },
    /// Wildcard hostnames need DNS-01, which is not offered.
    Dns01Required(Vec<String>),
}

/// Receives each change of a certificate's status.
pub trait Reporter: Send + Sync {
    fn report<'a>(&'a self, request: &'a AcmeRequest, report: Report) -> BoxFuture<'a, ()>;
}

/// The manager and what it talks to.
pub struct Manager {
    pub config: AcmeConfig,
    pub store: Arc<dyn Store>,
    pub presenter: Arc<dyn Presenter>,
    pub reporter: Arc<dyn Reporter>,
    pub metrics: Metrics,
    accounts: Mutex<BTreeMap<String, Account>>,
    reported: Mutex<BTreeMap<String, Report>>,
}

/// The longest sleep between two passes, so ARI-free renewals and
/// back-offs are noticed without a timer per certificate.
const MAX_SLEEP: Duration = Duration::from_secs(30);

impl Manager {
    pub fn new(
        config: AcmeConfig,
        store: Arc<dyn Store>,
        presenter: Arc<dyn Presenter>,
        reporter: Arc<dyn Reporter>,
        metrics: Metrics,
    ) -> Arc<Self> {
        Arc::new(Manager {
            config,
            store,
            presenter,
            reporter,
            metrics,
            accounts: Mutex::new(BTreeMap::new()),
            reported: Mutex::new(BTreeMap::new()),
        })
    }

    /// Runs passes over the latest requests until `stop` resolves.
    pub async fn run(
        self: Arc<Self>,
        mut requests: watch::Receiver<Vec<AcmeRequest>>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        loop {
            let current = requests.borrow_and_update().clone();
            let wake = self.pass(&current).await;
            let sleep = Duration::from_secs(wake.saturating_sub(now())).min(MAX_SLEEP);
            tokio::select! {
                changed = requests.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(sleep.max(Duration::from_millis(200))) => {}
                () = &mut stop => return,
            }
        }
    }

    /// Handles every request once; returns when the next pass is due.
    pub async fn pass(&self, requests: &[AcmeRequest]) -> Unix {
        let mut wake = now() + MAX_SLEEP.as_secs();
        for request in requests {
            if let Some(until) = self.handle(request).await {
                wake = wake.min(until);
            }
        }
        self.metrics.retain(requests);
        wake
    }

    async fn handle(&self, request: &AcmeRequest) -> Option<Unix> {
        if !request.wildcards.is_empty() {
            self.report(request, Report::Dns01Required(request.wildcards.clone()))
                .await;
            return None;
        }
        let state = match self.store.state(request).await {
            Ok(state) => state,
            Err(e) => {
                tracing::warn!(target = %request.key, error = %e, "cannot read certificate state");
                return Some(now() + 5);
            }
        };
        if let Some(s) = state.as_ref().filter(|s| s.not_after > 0) {
            self.metrics.expiry(request, s.not_after);
        }
        match policy::decide(now(), &request.hostnames, &request.issuer, state.as_ref()) {
            Decision::Keep { until } => {
                let s = state.as_ref()?;
                self.report(request, ready(s, None)).await;
                let ari_due =
                    s.ari_id.is_some() && s.ari_check_after > 0 && now() >= s.ari_check_after;
                if ari_due {
                    return Some(self.recheck_ari(request, s.clone()).await.min(until));
                }
                Some(if s.ari_check_after > 0 {
                    until.min(s.ari_check_after)
                } else {
                    until
                })
            }
            Decision::Wait { until, .. } => {
                if let Some(problem) = state.as_ref().and_then(|s| s.last_error.clone()) {
                    self.report(
                        request,
                        Report::Failed {
                            problem,
                            retry_at: until,
                        },
                    )
                    .await;
                }
                Some(until)
            }
            Decision::Order(why) => {
                self.report(
                    request,
                    Report::Pending(format!("ordering ({})", why.as_str())),
                )
                .await;
                self.order(request, state, why).await
            }
        }
    }

    async fn order(
        &self,
        request: &AcmeRequest,
        state: Option<CertState>,
        why: Why,
    ) -> Option<Unix> {
        let started = std::time::Instant::now();
        let outcome = match self.account(&request.issuer).await {
            Ok(account) => order(&account, request, self.presenter.as_ref()).await,
            Err(p) => Err(p),
        };
        match outcome {
            Ok(issued) => {
                let fraction = self.config.policy.renew_fraction;
                let id = ari_id(&issued.cert_pem);
                let ari = match (&id, self.account(&request.issuer).await) {
                    (Some(id), Ok(account)) => ari_window(&account, id).await,
                    _ => None,
                };
                let renew_after = policy::renew_after(
                    issued.not_before,
                    issued.not_after,
                    fraction,
                    ari.map(|a| a.0),
                );
                let new_state = CertState {
                    issuer: request.issuer.clone(),
                    hostnames: request.hostnames.clone(),
                    not_before: issued.not_before,
                    not_after: issued.not_after,
                    renew_after,
                    ari_id: ari.and(id),
                    ari_check_after: ari.map_or(0, |a| a.1),
                    ..CertState::default()
                };
                if let Err(e) = self
                    .store
                    .save_issued(request, issued.cert_pem, issued.key_pem, new_state.clone())
                    .await
                {
                    tracing::error!(target = %request.key, error = %e, "cannot store the issued certificate");
                    self.metrics.order("store_failed");
                    return Some(now() + 5);
                }
                self.metrics.order("issued");
                self.metrics.expiry(request, new_state.not_after);
                tracing::info!(
                    target = %request.key, hostnames = ?request.hostnames, issuer = %request.issuer,
                    seconds = started.elapsed().as_secs_f64(), why = why.as_str(), "certificate issued"
                );
                let had_one = state.as_ref().is_some_and(|s| !s.hostnames.is_empty());
                let issued = Some(if had_one {
                    Why::Renewal
                } else {
                    Why::NoCertificate
                });
                self.report(request, ready(&new_state, issued)).await;
                Some(renew_after)
            }
            Err(problem) => {
                self.metrics.order("failed");
                let jitter: f64 = rand::random();
                let failed = policy::failed(
                    &self.config.policy,
                    state.as_ref(),
                    &request.hostnames,
                    &request.issuer,
                    problem.clone(),
                    now(),
                    jitter,
                );
                tracing::warn!(
                    target = %request.key, problem = %problem, failures = failed.failures,
                    retry_in = failed.retry_after.saturating_sub(now()), "certificate order failed"
                );
                if let Err(e) = self.store.save_state(request, failed.clone()).await {
                    tracing::error!(target = %request.key, error = %e, "cannot store the failure");
                }
                let retry_at = failed.retry_after;
                self.report(request, Report::Failed { problem, retry_at })
                    .await;
                Some(retry_at)
            }
        }
    }

    /// Asks the CA's renewal information again (RFC 9773): a window that
    /// starts earlier moves the renewal earlier. Returns when to look next.
    async fn recheck_ari(&self, request: &AcmeRequest, mut state: CertState) -> Unix {
        let Ok(account) = self.account(&request.issuer).await else {
            return now() + 60;
        };
        let Some(id) = state.ari_id.clone() else {
            return state.renew_after;
        };
        let (start, again) = ari_window(&account, &id).await.unwrap_or((0, now() + 3600));
        let fraction = self.config.policy.renew_fraction;
        let ari = (start > 0).then_some(start);
        state.renew_after = policy::renew_after(state.not_before, state.not_after, fraction, ari);
        state.ari_check_after = again;
        if let Err(e) = self.store.save_state(request, state.clone()).await {
            tracing::warn!(target = %request.key, error = %e, "cannot store the renewal information");
        }
        state.renew_after.min(again)
    }

    /// Sends a report when it differs from the last one for this request.
    async fn report(&self, request: &AcmeRequest, report: Report) {
        let id = format!("{}/{}", request.kind, request.key);
        {
            let mut reported = self.reported.lock().await;
            if reported.get(&id) == Some(&report) {
                return;
            }
            reported.insert(id, report.clone());
        }
        self.reporter.report(request, report).await;
    }

    /// The account on `issuer`, created once and kept in the store.
    async fn account(&self, issuer: &str) -> Result<Account, Problem> {
        let mut accounts = self.accounts.lock().await;
        if let Some(account) = accounts.get(issuer) {
            return Ok(account.clone());
        }
        let config = self.config.issuers.get(issuer).ok_or_else(|| Problem {
            kind: "postern:unknownIssuer".into(),
            detail: format!("no issuer {issuer:?} is configured"),
        })?;
        let account = self.load_or_create(config).await?;
        accounts.insert(issuer.to_string(), account.clone());
        Ok(account)
    }

    async fn load_or_create(&self, issuer: &Issuer) -> Result<Account, Problem> {
        let store_error = |e: String| Problem {
            kind: "postern:store".into(),
            detail: e,
        };
        let builder = || match &issuer.ca_file {
            Some(path) => Account::builder_with_root(path),
            None => Account::builder(),
        };
        if let Some(json) = self
            .store
            .account(&issuer.name)
            .await
            .map_err(store_error)?
        {
            let credentials: AccountCredentials =
                serde_json::from_str(&json).map_err(|e| Problem {
                    kind: "postern:store".into(),
                    detail: format!("stored account of {}: {e}", issuer.name),
                })?;
            return builder()
                .map_err(problem)?
                .from_credentials(credentials)
                .await
                .map_err(problem);
        }
        let contact = self.config.email.as_ref().map(|e| format!("mailto:{e}"));
        let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
        let eab = issuer
            .eab
            .as_ref()
            .map(|eab| ExternalAccountKey::new(eab.kid.clone(), &eab.hmac));
        let new = NewAccount {
            contact: &contacts,
            terms_of_service_agreed: true,
            only_return_existing: false,
        };
        let (account, credentials) = builder()
            .map_err(problem)?
            .create(&new, issuer.directory.clone(), eab.as_ref())
            .await
            .map_err(problem)?;
        let json = serde_json::to_string(&credentials).map_err(|e| store_error(e.to_string()))?;
        self.store
            .save_account(&issuer.name, json)
            .await
            .map_err(store_error)?;
        tracing::info!(issuer = %issuer.name, id = account.id(), "created ACME account");
        Ok(account)
    }
}

fn ready(state: &CertState, issued: Option<Why>) -> Report {
    Report::Ready {
        not_after: state.not_after,
        renew_after: state.renew_after,
        issued,
    }
}

/// The wall clock, in Unix seconds.
pub fn now() -> Unix {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// RFC 3339 of a Unix time (UTC).
pub fn rfc3339(t: Unix) -> String {
    time::OffsetDateTime::from_unix_timestamp(t as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
