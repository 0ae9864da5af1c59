//! A namespace with an operator watching it and data planes connected:
//! the fixture of the spine tests, with waits for what they observe.

use std::time::Duration;

use kube::Client;
use postern_api::ConditionStatus;
use serde_json::Value;

use postern_harness::tmp_dir;

use crate::resources::{Observed, create, observe};
use crate::{
    Ca, Operator, Postern, Rig, SnapshotView, TestNamespace, dataplane, eventually, install_crds,
    operator,
};

/// How long a change may take to show.
pub const WAIT: Duration = Duration::from_secs(30);

/// A namespace with an operator watching it, and the data planes started.
pub struct Spine {
    pub rig: Rig,
    pub client: Client,
    pub ns: TestNamespace,
    pub token: String,
    pub operator: Operator,
    pub dataplanes: Vec<Postern>,
    pub prefix: String,
    /// With TLS: the CA that signed the operator's sync certificate, which
    /// every data plane [`Spine::add_dataplane`] starts trusts.
    pub ca: Option<Ca>,
}

impl Spine {
    /// The namespace and the operator, no data plane yet.
    pub async fn operator_only(rig: Rig, prefix: &str) -> Spine {
        Spine::launch(rig, prefix, false, &[]).await
    }

    /// Like [`Spine::operator_only`], the sync stream over TLS with a
    /// certificate from a CA made for this test.
    pub async fn operator_only_tls(rig: Rig, prefix: &str) -> Spine {
        Spine::launch(rig, prefix, true, &[]).await
    }

    /// The namespace and the operator started with more flags, no data plane.
    pub async fn operator_with_args(rig: Rig, prefix: &str, args: &[String]) -> Spine {
        Spine::launch(rig, prefix, false, args).await
    }

    /// The namespace, the operator started with more flags, and one data plane.
    pub async fn start_with_args(rig: Rig, prefix: &str, args: &[String]) -> Spine {
        let mut spine = Spine::launch(rig, prefix, false, args).await;
        spine.add_dataplane().await;
        spine
    }

    async fn launch(rig: Rig, prefix: &str, tls: bool, args: &[String]) -> Spine {
        let client = rig.client().await;
        install_crds(&client).await;
        let ns = TestNamespace::create(&rig, prefix).await;
        let token = format!("token-{}", ns.name);
        let id = format!("{prefix}-op-1");
        let ca = tls.then(|| Ca::new(&format!("{prefix}-ca")));
        let mut operator = operator(&rig, &ns.name, &id, &token).args(args);
        if let Some(ca) = &ca {
            // Where test operators listen.
            let leaf = ca.leaf(&["localhost", "127.0.0.1"]);
            operator = operator.tls(&leaf.write(&tmp_dir(&format!("{prefix}-sync-tls"))));
        }
        let operator = operator.start().await;
        Spine {
            rig,
            client,
            ns,
            token,
            operator,
            dataplanes: Vec::new(),
            prefix: prefix.into(),
            ca,
        }
    }

    /// The namespace, the operator and one data plane.
    pub async fn start(rig: Rig, prefix: &str) -> Spine {
        let mut spine = Spine::operator_only(rig, prefix).await;
        spine.add_dataplane().await;
        spine
    }

    pub async fn add_dataplane(&mut self) {
        let id = format!("{}-dp-{}", self.prefix, self.dataplanes.len() + 1);
        let sync = self.operator.sync;
        let mut dataplane = dataplane(sync, &id, &self.token);
        if let Some(ca) = &self.ca {
            dataplane = dataplane.sync_ca(&ca.file());
        }
        self.dataplanes.push(dataplane.start().await);
    }

    /// The first data plane.
    pub fn dataplane(&self) -> &Postern {
        self.dataplanes.first().expect("a data plane was started")
    }

    pub fn ns(&self) -> &str {
        &self.ns.name
    }

    pub async fn create(&self, manifest: Value) {
        let what = format!("{} {}", manifest["kind"], manifest["metadata"]["name"]);
        if let Err(error) = create(&self.client, self.ns(), manifest).await {
            panic!("creating {what}: {error}");
        }
    }

    /// Waits until the data plane serves a snapshot for which `check` holds.
    pub async fn snapshot_where(
        &self,
        what: &str,
        check: impl Fn(&SnapshotView) -> bool,
    ) -> SnapshotView {
        let dataplane = self.dataplane();
        eventually(what, WAIT, || async {
            let view = dataplane.view().await?;
            if check(&view) {
                Ok(view)
            } else {
                Err(view.json.to_string())
            }
        })
        .await
    }

    /// Waits until `kind/name` shows `Accepted` with this status and reason.
    pub async fn accepted(
        &self,
        kind: &str,
        name: &str,
        status: ConditionStatus,
        reason: &str,
    ) -> Observed {
        let what = format!("{kind} {name} Accepted={status:?} reason {reason}");
        eventually(&what, WAIT, || async {
            let observed = observe(&self.client, self.ns(), kind, name).await?;
            match observed.condition("Accepted") {
                Some(c)
                    if c.status == status
                        && c.reason == reason
                        && c.observed_generation == Some(observed.generation) =>
                {
                    Ok(observed)
                }
                _ => Err(format!("{observed:?}")),
            }
        })
        .await
    }

    /// Waits until `kind/name` is Accepted and Programmed at its current
    /// generation, with `status.observedGeneration` to match.
    pub async fn programmed(
        &self,
        kind: &str,
        name: &str,
        generation: i64,
        timeout: Duration,
    ) -> Observed {
        let what = format!("{kind} {name} Programmed at generation {generation}");
        eventually(&what, timeout, || async {
            let observed = observe(&self.client, self.ns(), kind, name).await?;
            let at_generation = |t: &str| {
                observed.condition(t).is_some_and(|c| {
                    c.status == ConditionStatus::True && c.observed_generation == Some(generation)
                })
            };
            let done = observed.generation == generation
                && observed.status.observed_generation == Some(generation)
                && at_generation("Accepted")
                && at_generation("Programmed");
            if done {
                Ok(observed)
            } else {
                Err(format!("{observed:?}"))
            }
        })
        .await
    }
}
