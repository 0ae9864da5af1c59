//! Losing either side: a killed agent's standby takes over at once, a
//! drained agent finishes its streams and then requests get 503 without
//! hanging, and a restarted data plane has its agent back within a second.

use std::time::{Duration, Instant};

use postern_harness::{Agent, Backend, tunnel_yaml, wait_for};

use crate::rig::{CONNECT, Rig, host_tunnel};

#[tokio::test]
async fn a_standby_takes_over_a_killed_agent_and_a_drained_one_finishes_its_streams() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let rig = Rig::start(
        "tunnel-standby",
        "hs256",
        &[host_tunnel("app", &["app.test"])],
    )
    .await;
    let token = rig.key.token(&["default/app"], "1h");
    let mut first = rig.agent(&token, &[&a.url()]);
    first.wait_status("connected", 1, CONNECT).await;
    let second = rig.agent(&token, &[&b.url()]);
    second.wait_status("connected", 1, CONNECT).await;
    assert!(second.log().contains("standby"), "{}", second.log());
    let backend = |r: postern_harness::Curl| r.json()["backend"].as_str().map(String::from);
    assert_eq!(
        backend(rig.https("app.test", "/", &[]).await).as_deref(),
        Some("a")
    );

    // SIGKILL: the socket closes, the standby serves the next request.
    first.proc.kill();
    let killed = Instant::now();
    wait_for(
        "the standby to take over",
        Duration::from_secs(5),
        || async {
            let r = rig.https("app.test", "/", &[]).await;
            (r.status == 200 && backend(r).as_deref() == Some("b")).then_some(())
        },
    )
    .await;
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(1), "takeover took {took:?}");

    // SIGTERM: a request in flight finishes; afterwards 503 at once.
    let slow = {
        let port = rig.postern.https.port();
        let ca = rig.ca_file.clone();
        tokio::spawn(async move {
            let resolve = format!("app.test:{port}:127.0.0.1");
            let url = format!("https://app.test:{port}/slow");
            let ca = ca.to_str().expect("utf-8").to_string();
            postern_harness::curl(&["--cacert", &ca, "--resolve", &resolve, &url]).await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    second.terminate();
    second.wait_status("draining", 1, CONNECT).await;
    let r = slow.await.expect("slow request");
    assert_eq!((r.status, r.body.as_str()), (200, "slow"), "{r:?}");
    let asked = Instant::now();
    let r = rig.https("app.test", "/", &[]).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "503 took {:?}",
        asked.elapsed()
    );
    let mut second = second;
    let status = tokio::task::spawn_blocking(move || {
        let status = second.proc.wait_exit(Duration::from_secs(20));
        (status, second)
    })
    .await
    .expect("wait");
    assert!(
        status.0.success(),
        "the drained agent exits 0: {:?}",
        status.0
    );
}

#[tokio::test]
async fn a_pool_spreads_streams_over_its_agents_and_drops_a_dead_one() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let pool = tunnel_yaml(
        "app",
        "agent-key",
        "  mode: http\n  hostnames: [app.test]\n  tls: {secretRef: {name: app-tls}}\n  pool: true\n",
    );
    let rig = Rig::start("tunnel-pool", "hs256", &[pool]).await;
    let token = rig.key.token(&["default/app"], "1h");
    let mut first = rig.agent(&token, &[&a.url()]);
    first.wait_status("connected", 1, CONNECT).await;
    let second = rig.agent(&token, &[&b.url()]);
    second.wait_status("connected", 1, CONNECT).await;
    assert!(
        !second.log().contains("standby"),
        "in a pool every agent serves: {}",
        second.log()
    );
    let backend = |r: postern_harness::Curl| r.json()["backend"].as_str().map(String::from);
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(backend(rig.https("app.test", "/", &[]).await));
    }
    for name in ["a", "b"] {
        assert!(
            seen.iter().any(|s| s.as_deref() == Some(name)),
            "{name} serves part of the load: {seen:?}"
        );
    }

    // A dead agent drops out: every request goes to the other one.
    first.proc.kill();
    let killed = Instant::now();
    wait_for(
        "the pool to drop the dead agent",
        Duration::from_secs(5),
        || async {
            let mut all_b = true;
            for _ in 0..4 {
                let r = rig.https("app.test", "/", &[]).await;
                all_b &= r.status == 200 && backend(r).as_deref() == Some("b");
            }
            all_b.then_some(())
        },
    )
    .await;
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(2), "failover took {took:?}");
    // The second session came with a token already seen: a reconnect.
    let sample = "postern_tunnel_reconnects_total{tunnel=\"default/app\"}";
    assert_eq!(rig.postern.metric(sample).await, 1.0);
    assert_eq!(
        rig.postern
            .metric("postern_tunnel_sessions_total{tunnel=\"default/app\"}")
            .await,
        2.0
    );
}

#[tokio::test]
async fn the_agent_is_back_within_a_second_of_a_restarted_data_plane() {
    let local = Backend::start("laptop");
    let mut rig = Rig::start(
        "tunnel-restart",
        "ed25519",
        &[host_tunnel("app", &["app.test"])],
    )
    .await;
    let agent = rig.agent(&rig.key.token(&["default/app"], "1h"), &[&local.url()]);
    agent.wait_status("connected", 1, CONNECT).await;
    assert_eq!(rig.https("app.test", "/", &[]).await.status, 200);
    let spawned = Instant::now();
    rig.restart().await;
    let serving = Instant::now();
    agent.wait_status("connected", 2, CONNECT).await;
    let back = serving.elapsed();
    eprintln!(
        "agent back {back:?} after the new data plane served ({:?} after it was spawned)",
        spawned.elapsed()
    );
    assert!(back < Duration::from_secs(1), "the agent took {back:?}");
    assert!(agent.status_count("reconnecting") >= 1, "{}", agent.log());
    let r = rig.https("app.test", "/again", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    // A data plane listens before its first snapshot is in; an agent that
    // reconnects in that moment waits for it instead of being refused for
    // a tunnel about to exist (and backing off for seconds).
    for round in 3..6 {
        rig.restart().await;
        agent.wait_status("connected", round, CONNECT).await;
    }
    assert_eq!(agent.status_count("refused"), 0, "{}", agent.log());
}

/// Sends `sig` to `pid` with kill(1).
fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{sig} {pid}");
}

#[tokio::test]
async fn heartbeats_find_a_frozen_agent_within_fifteen_seconds() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let rig = Rig::start(
        "tunnel-frozen",
        "ed25519",
        &[host_tunnel("app", &["app.test"])],
    )
    .await;
    let token = rig.key.token(&["default/app"], "1h");
    let first = rig.agent(&token, &[&a.url()]);
    first.wait_status("connected", 1, CONNECT).await;
    let second = rig.agent(&token, &[&b.url()]);
    second.wait_status("connected", 1, CONNECT).await;
    // SIGSTOP: the socket stays open, nothing answers, not even PINGs.
    signal(first.pid(), "STOP");
    let frozen = Instant::now();
    wait_for("the standby to serve", Duration::from_secs(25), || async {
        let r = rig.https("app.test", "/", &["--max-time", "2"]).await;
        (r.status == 200 && r.body.contains("\"b\"")).then_some(())
    })
    .await;
    let took = frozen.elapsed();
    signal(first.pid(), "CONT");
    eprintln!("a frozen agent was replaced after {took:?}");
    assert!(took < Duration::from_secs(17), "took {took:?}");
    assert!(
        rig.postern.log().contains("agent session ended"),
        "{}",
        rig.postern.log()
    );
}

#[tokio::test]
async fn a_replaced_tunnel_certificate_is_served_to_the_next_agents() {
    let local = Backend::start("laptop");
    let rig = Rig::start(
        "tunnel-cert",
        "ed25519",
        &[host_tunnel("app", &["app.test"])],
    )
    .await;
    let token = rig.key.token(&["default/app"], "1h");
    // As a mounted Secret changes: the same files, new contents.
    rig.ca
        .leaf(&["renamed.postern.test"])
        .write(rig.postern.scratch_dir());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let renamed = Agent::builder(
        rig.tunnel_addr(),
        "renamed.postern.test",
        &rig.ca_file,
        &token,
        &[&local.url()],
    )
    .spawn();
    renamed.wait_status("connected", 1, CONNECT).await;
    let old_name = rig.agent(&token, &[&local.url()]);
    old_name.wait_status("reconnecting", 2, CONNECT).await;
    assert_eq!(old_name.status_count("connected"), 0, "{}", old_name.log());
    assert!(rig.postern.log().contains("tunnel certificate reloaded"));
}
