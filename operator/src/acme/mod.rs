//! Certificates over ACME in the cluster: the elected leader runs the
//! `postern-acme` manager on the requests of the latest snapshot, keeps
//! accounts and certificates in Secrets ([`store`]), publishes challenges
//! through the target's Secret so that every replica compiles them, and
//! tells the CA to validate only once every data plane in the fleet (by
//! the data planes' leases, whichever replica each talks to) acked a
//! snapshot holding them ([`present`]). The `CertificateReady`
//! condition goes through the status writer ([`Board`]); Events and
//! metrics are written here.

mod present;
mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use kube::Client;
use kube::api::{Api, PostParams};
use postern_acme::{AcmeConfig, Manager, Report, Reporter, rfc3339};
use postern_api::{CertificateStatus, Condition, ConditionStatus, Kind, ObjectKey};
use postern_compile::AcmeRequest;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::fleet::FleetView;
use crate::index::Index;
use crate::publish::Latest;

pub const CERTIFICATE_READY: &str = "CertificateReady";

/// What the status writer shows of each certificate: the condition (its
/// transition time is the writer's) and `status.certificate`.
#[derive(Clone, Debug, PartialEq)]
pub struct CertReport {
    pub condition: Condition,
    pub certificate: Option<CertificateStatus>,
}

/// The latest [`CertReport`] per object, shared with the status writer.
#[derive(Debug, Default)]
pub struct Board {
    reports: Mutex<HashMap<(Kind, ObjectKey), CertReport>>,
    changed: watch::Sender<u64>,
}

impl Board {
    pub fn get(&self, kind: Kind, key: &ObjectKey) -> Option<CertReport> {
        let reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        reports.get(&(kind, key.clone())).cloned()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn set(&self, kind: Kind, key: &ObjectKey, report: CertReport) {
        let mut reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        reports.insert((kind, key.clone()), report);
        drop(reports);
        self.changed.send_modify(|n| *n += 1);
    }
}

/// What the leader's manager needs.
pub struct Acme {
    pub client: Client,
    pub config: AcmeConfig,
    pub lease_namespace: String,
    pub index: Arc<Mutex<Index>>,
    pub latest: Latest,
    pub fleet: Arc<FleetView>,
    pub leader: watch::Receiver<bool>,
    pub board: Arc<Board>,
    pub metrics: postern_acme::Metrics,
    pub operator_id: String,
}

impl Acme {
    /// Runs a manager while this replica leads, until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let elected = tokio::select! {
                () = shutdown.cancelled() => return,
                elected = self.leader.wait_for(|leader| *leader) => elected.is_ok(),
            };
            if !elected {
                return;
            }
            tracing::info!("leading: ordering ACME certificates");
            let manager = self.manager();
            let (tx, rx) = watch::channel(Vec::new());
            let mut leader = self.leader.clone();
            let lost = async move {
                let _ = leader.wait_for(|leader| !*leader).await;
            };
            let stop = shutdown.clone();
            let feed = feed(self.latest.clone(), tx);
            tokio::select! {
                () = manager.run(rx, async move {
                    tokio::select! { () = lost => {}, () = stop.cancelled() => {} }
                }) => {}
                () = feed => {}
            }
            tracing::info!("no longer ordering ACME certificates");
        }
    }

    fn manager(&self) -> Arc<Manager> {
        let store = store::SecretStore {
            client: self.client.clone(),
            lease_namespace: self.lease_namespace.clone(),
            index: self.index.clone(),
            leader: self.leader.clone(),
        };
        let presenter = present::Acked {
            store: store.clone(),
            fleet: self.fleet.clone(),
        };
        let reporter = StatusReporter {
            client: self.client.clone(),
            board: self.board.clone(),
            index: self.index.clone(),
            operator_id: self.operator_id.clone(),
        };
        Manager::new(
            self.config.clone(),
            Arc::new(store),
            Arc::new(presenter),
            Arc::new(reporter),
            self.metrics.clone(),
        )
    }
}

/// Hands the manager the requests of each snapshot as it is published.
async fn feed(mut latest: Latest, tx: watch::Sender<Vec<AcmeRequest>>) {
    loop {
        let requests = latest
            .borrow_and_update()
            .as_ref()
            .map(|p| p.acme.clone())
            .unwrap_or_default();
        tx.send_if_modified(|current| {
            let changed = *current != requests;
            *current = requests;
            changed
        });
        if latest.changed().await.is_err() {
            return;
        }
    }
}

/// Writes reports to the board and Events to the API server.
struct StatusReporter {
    client: Client,
    board: Arc<Board>,
    index: Arc<Mutex<Index>>,
    operator_id: String,
}

impl Reporter for StatusReporter {
    fn report<'a>(&'a self, request: &'a AcmeRequest, report: Report) -> BoxFuture<'a, ()> {
        async move {
            let (status, reason, message, certificate) = describe(request, &report);
            let condition = Condition {
                kind: CERTIFICATE_READY.into(),
                status,
                reason: reason.into(),
                message: message.clone(),
                observed_generation: None,
                last_transition_time: None,
            };
            self.board.set(
                request.kind,
                &request.key,
                CertReport {
                    condition,
                    certificate,
                },
            );
            let event = match &report {
                Report::Ready {
                    issued: Some(why), ..
                } if *why == postern_acme::policy::Why::NoCertificate => Some(("Normal", "Issued")),
                Report::Ready {
                    issued: Some(_), ..
                } => Some(("Normal", "Renewed")),
                Report::Failed { .. } => Some(("Warning", "OrderFailed")),
                _ => None,
            };
            if let Some((kind, reason)) = event {
                self.event(request, kind, reason, &message).await;
            }
        }
        .boxed()
    }
}

fn describe(
    request: &AcmeRequest,
    report: &Report,
) -> (
    ConditionStatus,
    &'static str,
    String,
    Option<CertificateStatus>,
) {
    match report {
        Report::Ready {
            not_after,
            renew_after,
            ..
        } => (
            ConditionStatus::True,
            "Issued",
            format!(
                "certificate for {} from {} valid until {}; renewal from {}",
                request.hostnames.join(", "),
                request.issuer,
                rfc3339(*not_after),
                rfc3339(*renew_after)
            ),
            Some(CertificateStatus {
                issuer: request.issuer.clone(),
                not_after: rfc3339(*not_after),
                renew_after: rfc3339(*renew_after),
            }),
        ),
        Report::Pending(what) => (ConditionStatus::False, "Pending", what.clone(), None),
        Report::Failed { problem, retry_at } => (
            ConditionStatus::False,
            "Failed",
            format!(
                "{} ({}); next attempt at {}",
                problem.detail,
                problem.kind,
                rfc3339(*retry_at)
            ),
            None,
        ),
        Report::Dns01Required(names) => (
            ConditionStatus::False,
            "DNS01Required",
            format!(
                "{} need(s) a DNS-01 challenge, which this operator does not offer; no certificate is ordered",
                names.join(", ")
            ),
            None,
        ),
    }
}

impl StatusReporter {
    async fn event(&self, request: &AcmeRequest, kind: &str, reason: &str, message: &str) {
        let uid = {
            let index = crate::publish::lock(&self.index);
            index
                .observed(request.kind, &request.key)
                .and_then(|o| o.uid)
        };
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        );
        let event = Event {
            metadata: kube::api::ObjectMeta {
                generate_name: Some(format!("{}.", request.key.name)),
                namespace: Some(request.key.namespace.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("postern.io/v1alpha1".into()),
                kind: Some(request.kind.as_str().into()),
                name: Some(request.key.name.clone()),
                namespace: Some(request.key.namespace.clone()),
                uid,
                ..Default::default()
            },
            reason: Some(reason.into()),
            message: Some(message.chars().take(1000).collect()),
            type_: Some(kind.into()),
            source: Some(EventSource {
                component: Some("postern-operator".into()),
                host: Some(self.operator_id.clone()),
            }),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &request.key.namespace);
        if let Err(error) = api.create(&PostParams::default(), &event).await {
            tracing::warn!(target = %request.key, %error, "cannot record an Event");
        }
    }
}
