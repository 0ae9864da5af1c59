//! Reverse tunnels in cluster mode: a Tunnel and its key Secret applied to
//! the rig's API server, compiled by a real operator, served by a real data
//! plane whose agent listener a real `postern agent` dials; the Tunnel's
//! `AgentConnected` condition follows the agent.

use std::time::Duration;

use postern_api::ConditionStatus;
use postern_harness::{Agent, Backend, Ca, TunnelKey, curl};
use postern_tests::resources::{apply_secret, observe};
use postern_tests::spine::{Spine, WAIT};
use postern_tests::{dataplane, eventually, rig_or_skip};
use serde_json::json;

const SERVER_NAME: &str = "tunnel.postern.test";

/// Waits until the Tunnel's AgentConnected is `status` with a message
/// containing `part`; returns the message.
async fn agent_connected(spine: &Spine, name: &str, status: ConditionStatus, part: &str) -> String {
    let what = format!("Tunnel {name} AgentConnected={status:?} saying {part:?}");
    eventually(&what, WAIT, || async {
        let observed = observe(&spine.client, spine.ns(), "Tunnel", name).await?;
        match observed.condition("AgentConnected") {
            Some(c) if c.status == status && c.message.contains(part) => Ok(c.message.clone()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_is_served_through_its_agent_and_reports_agent_connected() {
    let mut spine = Spine::operator_only(rig_or_skip!(), "tun").await;
    let ca = Ca::new("tunnel-cluster CA");
    let id = format!("{}-dp-1", spine.prefix);
    let dp = dataplane(spine.operator.sync, &id, &spine.token)
        .tunnel_tls(&ca.leaf(&[SERVER_NAME]))
        .start()
        .await;
    spine.dataplanes.push(dp);
    let key = http_tunnel(&spine, "laptop.example.test").await;
    agent_connected(&spine, "laptop", ConditionStatus::False, "no agent").await;

    // A token for another namespace's Tunnel of the same name is refused.
    let wrong = key.token(&["elsewhere/laptop"], "1h");
    let tunnel_addr = spine.dataplane().tunnel.expect("tunnel listener");
    let ca_file = ca.file();
    let local = Backend::text("laptop");
    let to = format!("{}/laptop={}", spine.ns(), local.url());
    let refused = Agent::builder(tunnel_addr, SERVER_NAME, &ca_file, &wrong, &[&to]).spawn();
    refused.wait_status("refused", 1, WAIT).await;
    agent_connected(&spine, "laptop", ConditionStatus::False, "wrong_tunnel").await;
    drop(refused);

    let token = key.token(&[&format!("{}/laptop", spine.ns())], "1h");
    let mut agent = Agent::builder(tunnel_addr, SERVER_NAME, &ca_file, &token, &[&to]).spawn();
    agent.wait_status("connected", 1, WAIT).await;
    let http = spine.dataplane().http;
    let resolve = format!("laptop.example.test:{}:127.0.0.1", http.port());
    let url = format!("http://laptop.example.test:{}/hello", http.port());
    let r = curl(&["--resolve", &resolve, &url]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "laptop /hello"), "{r:?}");
    let message = agent_connected(&spine, "laptop", ConditionStatus::True, "1 agent(s)").await;
    assert!(message.contains(&id), "names the data plane: {message}");

    agent.proc.kill();
    agent_connected(&spine, "laptop", ConditionStatus::False, "no agent").await;
    let r = curl(&["--resolve", &resolve, "--max-time", "5", &url]).await;
    assert_eq!(r.status, 503, "{r:?}");
    tokio::time::sleep(Duration::from_millis(10)).await;
    spine.ns.cleanup(&spine.client).await;
}

/// Two data planes on one operator and the rig's Redis: the agent is on
/// the first, a request to the second reaches it through the peer port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_to_the_replica_without_the_agent_reaches_it_in_a_cluster() {
    let mut spine = Spine::operator_only(rig_or_skip!(), "tunha").await;
    let Some(redis) = spine.rig.get("REDIS_URL").map(String::from) else {
        assert!(!postern_harness::in_ci(), "the rig has no REDIS_URL");
        return;
    };
    let ca = Ca::new("tunnel-ha CA");
    let secret = postern_harness::tmp_dir("tunnel-ha").join("peer-secret");
    std::fs::write(&secret, "the replicas' shared peer secret").expect("secret");
    let leaf = ca.leaf(&[SERVER_NAME]);
    for n in 1..=2 {
        let peer = postern_harness::free_addr();
        let dp = dataplane(
            spine.operator.sync,
            &format!("{}-dp-{n}", spine.prefix),
            &spine.token,
        )
        .tunnel_tls(&leaf)
        .args(["--redis-url", &redis])
        .args(["--tunnel-peer-addr", &peer.to_string()])
        .arg("--tunnel-peer-secret-file")
        .arg(&secret)
        .start()
        .await;
        spine.dataplanes.push(dp);
    }
    let key = http_tunnel(&spine, "ha.example.test").await;
    let local = Backend::text("laptop");
    let to = format!("{}/laptop={}", spine.ns(), local.url());
    let token = key.token(&[&format!("{}/laptop", spine.ns())], "1h");
    let first = spine.dataplanes[0].tunnel.expect("tunnel listener");
    let agent = Agent::builder(first, SERVER_NAME, &ca.file(), &token, &[&to]).spawn();
    agent.wait_status("connected", 1, WAIT).await;

    let http = spine.dataplanes[1].http;
    let resolve = format!("ha.example.test:{}:127.0.0.1", http.port());
    let url = format!("http://ha.example.test:{}/via-b", http.port());
    let r = eventually("the second data plane to forward", WAIT, || async {
        let r = curl(&["--resolve", &resolve, "--max-time", "5", &url]).await;
        if r.status == 200 {
            Ok(r)
        } else {
            Err(format!("{r:?}"))
        }
    })
    .await;
    assert_eq!(r.body, "laptop /via-b");
    agent_connected(&spine, "laptop", ConditionStatus::True, "1 agent(s)").await;
    drop(agent);
    spine.ns.cleanup(&spine.client).await;
}

/// A key Secret `agent-key` and an http Tunnel `laptop` for `host` using
/// it, programmed; the key, for the agent's token.
async fn http_tunnel(spine: &Spine, host: &str) -> TunnelKey {
    let key = TunnelKey::generate("ed25519");
    apply_secret(
        &spine.client,
        spine.ns(),
        "agent-key",
        &[("key", &key.public)],
    )
    .await;
    spine
        .create(
            json!({"kind": "Tunnel", "metadata": {"name": "laptop"}, "spec": {
                "mode": "http",
                "hostnames": [host],
                "agentKeySecretRef": {"name": "agent-key"},
            }}),
        )
        .await;
    spine.programmed("Tunnel", "laptop", 1, WAIT).await;
    key
}
