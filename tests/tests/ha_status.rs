//! Operator HA that tells the truth: three operator replicas, three data
//! planes each connected to a different replica, and `Programmed` computed
//! by the leader over the whole fleet from the data planes' leases.
//!
//! Order and eventual state are asserted, each wait bounded; the only
//! timing asserted is what the lease rule implies (a dead data plane drops
//! out no sooner than its lease's duration after its last renewal).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ListParams};
use postern_api::ConditionStatus;
use postern_tests::relay::Relay;
use postern_tests::resources::{Observed, apply_secret, create, observe, patch_spec};
use postern_tests::{
    Operator, Postern, TestNamespace, dataplane, eventually, install_crds, operator, rig_or_skip,
};
use serde_json::{Value, json};

/// The operator's lease duration (its default): how long a data plane whose
/// replica or connection is gone still counts, and how long a dead leader
/// holds the election.
const LEASE: Duration = Duration::from_secs(15);
/// A bound for what takes one or two lease durations, generous for a
/// loaded machine.
const TAKEOVER: Duration = Duration::from_secs(90);
/// A bound for what takes no lease expiry.
const WAIT: Duration = Duration::from_secs(45);

struct Fixture {
    client: Client,
    ns: TestNamespace,
    token: String,
    operators: Vec<Operator>,
}

impl Fixture {
    fn ns(&self) -> &str {
        &self.ns.name
    }

    fn dataplane(&self, n: usize, sync: std::net::SocketAddr) -> postern_harness::PosternBuilder {
        dataplane(sync, &format!("ha-dp-{n}"), &self.token)
    }

    async fn patch_hosts(&self, hosts: &[&str]) {
        patch_spec(
            &self.client,
            self.ns(),
            "ProxyTarget",
            "api",
            json!({"hostnames": hosts}),
        )
        .await;
    }

    /// Waits until Programmed at `generation` has this status and its
    /// message contains `says`.
    async fn programmed(
        &self,
        generation: i64,
        status: ConditionStatus,
        says: &str,
        limit: Duration,
    ) -> Observed {
        let what = format!("Programmed={status:?} at generation {generation} saying {says:?}");
        eventually(&what, limit, || async {
            let observed = observe(&self.client, self.ns(), "ProxyTarget", "api").await?;
            let matches = observed.condition("Programmed").is_some_and(|c| {
                c.status == status
                    && c.observed_generation == Some(generation)
                    && c.message.contains(says)
            });
            if matches {
                Ok(observed)
            } else {
                Err(format!("{observed:?}"))
            }
        })
        .await
    }

    /// The data-plane leases: data plane id → (holder, the generation of
    /// ProxyTarget api its acked snapshot holds).
    async fn leases(&self) -> BTreeMap<String, (String, Option<i64>)> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), self.ns());
        let params = ListParams::default().labels("postern.io/role=dataplane");
        let list = api.list(&params).await.expect("list leases");
        let key = format!("{}/api", self.ns());
        list.items
            .iter()
            .filter_map(|lease| {
                let text = lease
                    .metadata
                    .annotations
                    .as_ref()?
                    .get("postern.io/dataplane")?;
                let record: Value = serde_json::from_str(text).ok()?;
                let holder = lease.spec.as_ref()?.holder_identity.clone()?;
                let generation = record["acked"]["generations"]["ProxyTarget"][&key].as_i64();
                Some((record["id"].as_str()?.to_string(), (holder, generation)))
            })
            .collect()
    }

    /// The election lease's holder.
    async fn leader(&self) -> Option<String> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), self.ns());
        let lease = api.get_opt("postern-operator").await.ok()??;
        lease.spec?.holder_identity
    }
}

async fn serves_hosts(dp: &Postern, hosts: u64) {
    eventually(
        &format!("data plane serving {hosts} hostnames"),
        WAIT,
        || async {
            let view = dp.view().await?;
            if view.count("hostnames") == Some(hosts) {
                Ok(())
            } else {
                Err(view.json.to_string())
            }
        },
    )
    .await;
}

fn transition_time(observed: &Observed) -> Timestamp {
    observed
        .condition("Programmed")
        .and_then(|c| c.last_transition_time.as_deref())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no Programmed transition time: {observed:?}"))
}

#[tokio::test]
async fn programmed_counts_every_data_plane_of_every_replica() {
    let rig = rig_or_skip!();
    let client = rig.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&rig, "ha-status").await;
    let token = format!("token-{}", ns.name);

    // Replica 1 leads: it starts first and the others start once it holds the lease.
    let first = operator(&rig, &ns.name, "ha-op-1", &token).start().await;
    eventually("ha-op-1 to lead", WAIT, || async {
        let view = first.view().await?;
        if view["leader"] == json!(true) {
            Ok(())
        } else {
            Err(view.to_string())
        }
    })
    .await;
    let mut operators = vec![first];
    for n in [2, 3] {
        let id = format!("ha-op-{n}");
        operators.push(operator(&rig, &ns.name, &id, &token).start().await);
    }
    let mut fx = Fixture {
        client,
        ns,
        token,
        operators,
    };
    assert_eq!(fx.leader().await.as_deref(), Some("ha-op-1"));

    // Data plane n talks to replica n; 1 and 3 through a relay (the Service
    // in front of the operators), which the test can cut or repoint.
    let relay1 = Relay::start(fx.operators[0].sync).await;
    let relay3 = Relay::start(fx.operators[2].sync).await;
    let dp1 = fx.dataplane(1, relay1.addr).start().await;
    let dp2 = fx.dataplane(2, fx.operators[1].sync).start().await;
    let mut dp3 = fx.dataplane(3, relay3.addr).start().await;

    apply_secret(&fx.client, fx.ns(), "api-tokens", &[("ci", "s3cret")]).await;
    let target = json!({"kind": "ProxyTarget", "metadata": {"name": "api"}, "spec": {
        "hostnames": ["h1.example.com"],
        "backend": {"url": "http://10.0.0.5:8080"},
        "auth": {"type": "bearer", "tokensSecretRef": {"name": "api-tokens"}}
    }});
    create(&fx.client, fx.ns(), target)
        .await
        .expect("create the ProxyTarget");

    // 1. Programmed once all three acked, though the leader talks to one.
    fx.programmed(1, ConditionStatus::True, "applied by 3 data plane(s)", WAIT)
        .await;
    let leases = fx.leases().await;
    let expected: BTreeMap<String, (String, Option<i64>)> = (1..=3)
        .map(|n| (format!("ha-dp-{n}"), (format!("ha-op-{n}"), Some(1))))
        .collect();
    assert_eq!(
        leases, expected,
        "one lease per data plane, held by its replica"
    );
    let leader_view = fx.operators[0].view().await.expect("leader view");
    assert_eq!(
        leader_view["dataplanes"].as_array().map(Vec::len),
        Some(1),
        "the leader itself serves one data plane: {leader_view}"
    );

    // 2. A change that a non-leader's data plane cannot apply stays
    // Pending, and becomes Programmed once that data plane acks it.
    relay3.cut_snapshots(true);
    fx.patch_hosts(&["h1.example.com", "h2.example.com"]).await;
    fx.programmed(
        2,
        ConditionStatus::False,
        "waiting for 1 of 3 data plane(s)",
        WAIT,
    )
    .await;
    serves_hosts(&dp1, 2).await;
    serves_hosts(&dp2, 2).await;
    let still = observe(&fx.client, fx.ns(), "ProxyTarget", "api")
        .await
        .expect("observe");
    let programmed = still.condition("Programmed").expect("Programmed");
    assert_eq!(programmed.status, ConditionStatus::False, "{still:?}");
    assert_eq!(programmed.reason, "Pending", "{still:?}");
    relay3.cut_snapshots(false);
    fx.programmed(2, ConditionStatus::True, "applied by 3 data plane(s)", WAIT)
        .await;
    assert!(relay3.cuts() >= 1, "the relay cut a snapshot");

    // 3. A data plane of a non-leader dies while a change is pending: it
    // counts (Pending) until its lease expires, then the fleet is two.
    dp3.kill();
    let killed_at = Timestamp::now();
    fx.patch_hosts(&["h1.example.com", "h2.example.com", "h3.example.com"])
        .await;
    fx.programmed(
        3,
        ConditionStatus::False,
        "waiting for 1 of 3 data plane(s)",
        WAIT,
    )
    .await;
    let done = fx
        .programmed(
            3,
            ConditionStatus::True,
            "applied by 2 data plane(s)",
            TAKEOVER,
        )
        .await;
    // Its last renewal was at most a renew period (5 s) and a writer tick
    // before the kill, so it expired no sooner than 9 s after; the
    // transition time has whole seconds.
    let earliest = killed_at + (LEASE - Duration::from_secs(7));
    assert!(
        transition_time(&done) >= earliest,
        "Programmed only after the dead data plane's lease expired: {done:?}, killed at {killed_at}"
    );

    // The data plane comes back to replica 3 and the fleet is three again.
    let dp3_again = fx.dataplane(3, relay3.addr).start().await;
    fx.programmed(3, ConditionStatus::True, "applied by 3 data plane(s)", WAIT)
        .await;

    // 4. The leader dies mid-change; its data plane's Service now routes
    // to replica 2. A new leader finishes with the fleet's status.
    fx.patch_hosts(&["h1.example.com", "h4.example.com"]).await;
    fx.operators[0].kill();
    relay1.set_upstream(fx.operators[1].sync);
    let done = fx
        .programmed(
            4,
            ConditionStatus::True,
            "applied by 3 data plane(s)",
            TAKEOVER,
        )
        .await;
    assert_eq!(done.generation, 4);
    let leader = fx.leader().await;
    assert!(
        matches!(leader.as_deref(), Some("ha-op-2" | "ha-op-3")),
        "a surviving replica leads: {leader:?}"
    );
    let leases = fx.leases().await;
    assert_eq!(
        leases.get("ha-dp-1"),
        Some(&("ha-op-2".to_string(), Some(4))),
        "data plane 1 moved to replica 2: {leases:?}"
    );
    serves_hosts(&dp1, 2).await;
    serves_hosts(&dp2, 2).await;
    serves_hosts(&dp3_again, 2).await;

    drop((dp1, dp2, dp3_again, relay1, relay3));
    let Fixture { client, ns, .. } = fx;
    ns.cleanup(&client).await;
}
