//! The spine end to end: resources in the API server → operator → snapshot
//! pushed to a real data plane process → acks → status conditions.

use std::time::Duration;

use postern_api::ConditionStatus;
use postern_tests::resources::{apply_secret, delete, patch_spec};
use postern_tests::spine::{Spine, WAIT};
use postern_tests::{Ca, dataplane, eventually, http_get, operator, rig_or_skip};
use serde_json::{Value, json};

/// A restarted operator must first see the dead one's lease expire (15 s).
const TAKEOVER: Duration = Duration::from_secs(60);

fn proxy_target(name: &str, hostnames: &[&str]) -> Value {
    json!({"kind": "ProxyTarget", "metadata": {"name": name}, "spec": {
        "hostnames": hostnames,
        "backend": {"url": "http://10.0.0.5:8080"},
        "auth": {"type": "bearer", "tokensSecretRef": {"name": "api-tokens"}}
    }})
}

#[tokio::test]
async fn an_object_is_programmed_updated_and_removed() {
    let mut spine = Spine::operator_only(rig_or_skip!(), "spine-flow").await;
    apply_secret(
        &spine.client,
        spine.ns(),
        "api-tokens",
        &[("ci", "s3cret-token")],
    )
    .await;
    spine
        .create(proxy_target("api", &["api.example.com"]))
        .await;

    // Accepted, but with no data plane nothing is programmed yet.
    let alone = spine
        .accepted("ProxyTarget", "api", ConditionStatus::True, "Accepted")
        .await;
    let programmed = alone.condition("Programmed").expect("Programmed");
    assert_eq!(programmed.status, ConditionStatus::False, "{alone:?}");
    assert_eq!(programmed.reason, "NoDataplanes", "{alone:?}");

    // A data plane with the wrong token is refused and gets nothing.
    let intruder = dataplane(spine.operator.sync, "spine-flow-intruder", "wrong")
        .start()
        .await;
    spine.add_dataplane().await;

    let first = spine
        .snapshot_where("the ProxyTarget at the data plane", |v| {
            v.count("proxyTargets") == Some(1)
        })
        .await;
    let v1 = first.version.clone().expect("a version");
    let observed = spine.programmed("ProxyTarget", "api", 1, WAIT).await;
    let programmed = observed.condition("Programmed").expect("Programmed");
    assert_eq!(programmed.reason, "Programmed");
    assert!(programmed.last_transition_time.is_some());

    patch_spec(
        &spine.client,
        spine.ns(),
        "ProxyTarget",
        "api",
        json!({"hostnames": ["api.example.com", "www.example.com"]}),
    )
    .await;
    let second = spine
        .snapshot_where("the update at the data plane", |v| {
            v.version.as_deref() != Some(v1.as_str()) && v.count("hostnames") == Some(2)
        })
        .await;
    assert_eq!(second.count("proxyTargets"), Some(1));
    spine.programmed("ProxyTarget", "api", 2, WAIT).await;

    let view = spine.operator.view().await.expect("operator view");
    assert_eq!(
        view["version"].as_str(),
        second.version.as_deref(),
        "{view}"
    );
    assert_eq!(
        view["dataplanes"].as_array().map(Vec::len),
        Some(1),
        "{view}"
    );
    assert_eq!(
        view["dataplanes"][0]["id"],
        json!(spine.dataplane().id),
        "{view}"
    );
    let refused = intruder.view().await.expect("intruder admin");
    assert_eq!(refused.version, None, "{}", refused.json);
    assert_ne!(intruder.readyz().await, Ok(200));
    let metrics = http_get(spine.operator.admin, "/metrics")
        .await
        .expect("metrics");
    assert!(
        metrics.body.contains("postern_operator_acks_total"),
        "{}",
        metrics.body
    );
    assert_eq!(
        http_get(spine.operator.admin, "/readyz")
            .await
            .map(|r| r.status),
        Ok(200)
    );

    delete(&spine.client, spine.ns(), "ProxyTarget", "api").await;
    spine
        .snapshot_where("the ProxyTarget gone from the data plane", |v| {
            v.count("proxyTargets") == Some(0)
        })
        .await;
    spine.ns.cleanup(&spine.client).await;
}

#[tokio::test]
async fn conflicts_and_missing_targets_are_refused_with_a_reason() {
    let spine = Spine::start(rig_or_skip!(), "spine-conflict").await;
    apply_secret(
        &spine.client,
        spine.ns(),
        "api-tokens",
        &[("ci", "s3cret-token")],
    )
    .await;
    spine
        .create(proxy_target("first", &["shared.example.com"]))
        .await;
    spine.programmed("ProxyTarget", "first", 1, WAIT).await;

    // Created later, so it is the younger claimant and loses.
    spine
        .create(proxy_target(
            "second",
            &["shared.example.com", "other.example.com"],
        ))
        .await;
    let loser = spine
        .accepted(
            "ProxyTarget",
            "second",
            ConditionStatus::False,
            "HostnameConflict",
        )
        .await;
    let message = &loser.condition("Accepted").expect("Accepted").message;
    assert!(message.contains("shared.example.com"), "{message}");
    let programmed = loser.condition("Programmed").expect("Programmed");
    assert_eq!(programmed.status, ConditionStatus::False, "{loser:?}");
    assert_eq!(loser.status.observed_generation, Some(1));

    spine
        .create(
            json!({"kind": "Route", "metadata": {"name": "orphan"}, "spec": {
                "targetRef": {"name": "missing"},
                "match": {"path": {"type": "Prefix", "value": "/v1"}}
            }}),
        )
        .await;
    spine
        .accepted("Route", "orphan", ConditionStatus::False, "TargetNotFound")
        .await;

    let view = spine.dataplane().view().await.expect("snapshot");
    assert_eq!(view.count("proxyTargets"), Some(1), "{}", view.json);
    assert_eq!(view.count("routes"), Some(0), "{}", view.json);
    // The winner is untouched by the loser.
    spine.programmed("ProxyTarget", "first", 1, WAIT).await;
    spine.ns.cleanup(&spine.client).await;
}

#[tokio::test]
async fn a_secret_rotation_produces_a_new_snapshot() {
    let spine = Spine::start(rig_or_skip!(), "spine-rotate").await;
    apply_secret(
        &spine.client,
        spine.ns(),
        "alice-proxy",
        &[("password", "first-password")],
    )
    .await;
    spine
        .create(
            json!({"kind": "UserUpstream", "metadata": {"name": "alice"}, "spec": {
                "user": "alice",
                "passwordSecretRef": {"name": "alice-proxy"},
                "upstream": "direct://"
            }}),
        )
        .await;
    let before = spine
        .snapshot_where("alice at the data plane", |v| {
            v.count("userUpstreams") == Some(1)
        })
        .await;
    let v1 = before.version.clone().expect("a version");
    spine.programmed("UserUpstream", "alice", 1, WAIT).await;

    apply_secret(
        &spine.client,
        spine.ns(),
        "alice-proxy",
        &[("password", "second-password")],
    )
    .await;
    let after = spine
        .snapshot_where("a new version after the rotation", |v| {
            v.version.as_deref() != Some(v1.as_str())
        })
        .await;
    assert_eq!(after.count("userUpstreams"), Some(1), "{}", after.json);
    spine.ns.cleanup(&spine.client).await;
}

#[tokio::test]
async fn the_dataplane_outlives_the_operator_and_resyncs() {
    let mut spine = Spine::start(rig_or_skip!(), "spine-restart").await;
    apply_secret(
        &spine.client,
        spine.ns(),
        "api-tokens",
        &[("ci", "s3cret-token")],
    )
    .await;
    spine
        .create(proxy_target("api", &["api.example.com"]))
        .await;
    let before = spine
        .snapshot_where("the ProxyTarget at the data plane", |v| {
            v.count("proxyTargets") == Some(1)
        })
        .await;
    let v1 = before.version.clone().expect("a version");
    spine.programmed("ProxyTarget", "api", 1, WAIT).await;

    let sync_addr = spine.operator.sync;
    spine.operator.kill();
    // A change while no operator runs.
    patch_spec(
        &spine.client,
        spine.ns(),
        "ProxyTarget",
        "api",
        json!({"hostnames": ["api.example.com", "www.example.com"]}),
    )
    .await;
    // For a while (enough for the data plane to notice the lost connection
    // and retry), it keeps serving the last snapshot and stays ready.
    let dataplane = spine.dataplane();
    let watch_until = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < watch_until {
        let view = dataplane
            .view()
            .await
            .expect("the data plane still answers");
        assert_eq!(view.version.as_deref(), Some(v1.as_str()), "{}", view.json);
        assert_eq!(dataplane.readyz().await, Ok(200));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // A new replica (another id, so it must take the dead one's lease over)
    // on the same address, where the data plane keeps reconnecting.
    spine.operator = operator(&spine.rig, spine.ns(), "spine-restart-op-2", &spine.token)
        .sync_addr(sync_addr)
        .start()
        .await;
    let dataplane = spine.dataplane();
    let resynced = eventually("the data plane to resync", WAIT, || async {
        let view = dataplane.view().await?;
        let fresh =
            view.version.as_deref() != Some(v1.as_str()) && view.count("hostnames") == Some(2);
        if fresh {
            Ok(view)
        } else {
            Err(view.json.to_string())
        }
    })
    .await;
    assert_eq!(resynced.count("proxyTargets"), Some(1));
    assert_eq!(dataplane.readyz().await, Ok(200));

    spine.programmed("ProxyTarget", "api", 2, TAKEOVER).await;
    spine.ns.cleanup(&spine.client).await;
}

#[tokio::test]
async fn the_stream_is_tls_when_configured() {
    let mut spine = Spine::operator_only_tls(rig_or_skip!(), "spine-tls").await;
    apply_secret(
        &spine.client,
        spine.ns(),
        "api-tokens",
        &[("ci", "s3cret-token")],
    )
    .await;
    spine
        .create(proxy_target("api", &["api.example.com"]))
        .await;

    // The right token is not enough: one data plane trusts another CA, the
    // other speaks plain TCP.
    let sync = spine.operator.sync;
    let other_ca = Ca::new("spine-tls-other-ca");
    let wrong_ca = dataplane(sync, "spine-tls-wrong-ca", &spine.token)
        .sync_ca(&other_ca.file())
        .start()
        .await;
    let plain = dataplane(sync, "spine-tls-plain", &spine.token)
        .start()
        .await;
    spine.add_dataplane().await;

    spine
        .snapshot_where("the ProxyTarget at the TLS data plane", |v| {
            v.count("proxyTargets") == Some(1)
        })
        .await;
    spine.programmed("ProxyTarget", "api", 1, WAIT).await;
    let view = spine.operator.view().await.expect("operator view");
    assert_eq!(
        view["dataplanes"].as_array().map(Vec::len),
        Some(1),
        "{view}"
    );

    eventually("the wrong CA to be reported", WAIT, || async {
        let log = wrong_ca.log();
        if log.contains("UnknownIssuer") && log.contains("will retry") {
            Ok(())
        } else {
            Err(log)
        }
    })
    .await;
    eventually("the plain data plane to be told why", WAIT, || async {
        let log = plain.log();
        if log.contains("if it serves TLS, give --sync-ca") {
            Ok(())
        } else {
            Err(log)
        }
    })
    .await;
    eventually("the operator to turn the others away", WAIT, || async {
        let log = spine.operator.log();
        let failed = log
            .matches("TLS handshake with a data plane failed")
            .count();
        if failed >= 2 { Ok(()) } else { Err(log) }
    })
    .await;
    for dataplane in [&wrong_ca, &plain] {
        let view = dataplane.view().await.expect("admin answers");
        assert_eq!(view.version, None, "{}: {}", dataplane.id, view.json);
        assert_ne!(dataplane.readyz().await, Ok(200), "{}", dataplane.id);
    }
    spine.ns.cleanup(&spine.client).await;
}
