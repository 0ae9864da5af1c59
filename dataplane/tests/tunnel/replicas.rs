//! Two data planes and one Redis: the agent is connected to replica A,
//! and requests (by host, by path prefix, tcp) that reach replica B get to
//! it through A's peer port. With Redis stopped B answers 503 at once and
//! says it is degraded; with the agent moved to B, A forwards to B.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use postern_harness::{
    Agent, Backend, Launch, Postern, Proc, echo_roundtrip, echo_target, free_port, loopback, peer,
    target_yaml, tmp_dir, tunnel_yaml, wait_for, wait_port,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::rig::{CONNECT, Rig, SERVER_NAME, host_tunnel, prefix_tunnel};

/// How long the registry may take to show a change (it refreshes every second).
const SPREAD: Duration = Duration::from_secs(10);

fn redis(server: &std::path::Path, port: u16) -> Proc {
    Launch::new("redis-server", server)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .spawn()
}

/// The peer flags of one replica: its own peer port on loopback.
fn peer_args(redis_port: u16, secret: &std::path::Path) -> Vec<String> {
    [
        "--redis-url",
        &format!("redis://127.0.0.1:{redis_port}"),
        "--tunnel-peer-addr",
        &format!("127.0.0.1:{}", free_port()),
        "--tunnel-peer-secret-file",
        secret.to_str().expect("utf-8"),
    ]
    .map(String::from)
    .to_vec()
}

fn secret_file() -> PathBuf {
    let file = tmp_dir("tunnel-peer-secret").join("secret");
    std::fs::write(&file, "a shared secret of the replicas\n").expect("secret");
    file
}

#[tokio::test]
async fn a_request_to_the_replica_without_the_agent_reaches_it() {
    let Some(server) = peer("redis-server") else {
        return;
    };
    let redis_port = free_port();
    let mut registry = redis(&server, redis_port);
    wait_port(loopback(redis_port)).await;
    let local = Backend::start("laptop");
    let gateway = Backend::text("gateway");
    let echo = echo_target().await;
    let public = free_port();
    let docs = [
        host_tunnel("app", &["app.test"]),
        prefix_tunnel("lap", "/t/lap"),
        tunnel_yaml(
            "db",
            "agent-key",
            &format!("  mode: tcp\n  tcpPort: {public}\n"),
        ),
        target_yaml("gateway", &["gateway.test"], &gateway.url(), ""),
    ];
    let secret = secret_file();
    let rig = Rig::start_with(
        "tunnel-replica-a",
        "ed25519",
        &docs,
        &peer_args(redis_port, &secret),
    )
    .await;
    // tcp tunnels on B's own loopback address, as each pod has its own IP.
    let b = rig
        .replica("127.0.0.2", &peer_args(redis_port, &secret))
        .await;
    let token = rig
        .key
        .token(&["default/app", "default/lap", "default/db"], "1h");
    let to = [
        format!("default/app={}", local.url()),
        format!("default/lap={}", local.url()),
        format!("default/db=tcp://{echo}"),
    ];
    let to: Vec<&str> = to.iter().map(String::as_str).collect();
    let agent = rig.agent(&token, &to);
    agent.wait_status("connected", 1, CONNECT).await;

    // By hostname over HTTPS, on B.
    let r = wait_for("B to forward app.test to A", SPREAD, || async {
        let r = rig.https_on(&b, "app.test", "/hello?x=1", &[]).await;
        (r.status == 200).then_some(r)
    })
    .await;
    let seen = r.json();
    assert_eq!(
        (seen["backend"].as_str(), seen["uri"].as_str()),
        (Some("laptop"), Some("/hello?x=1"))
    );
    assert_eq!(seen["headers"]["x-forwarded-proto"][0], "https");
    // A body up through both replicas.
    let body = tmp_dir("tunnel-replica-body").join("body");
    std::fs::write(&body, vec![b'y'; 1024 * 1024 + 3]).expect("body");
    let data = format!("@{}", body.display());
    let r = rig
        .https_on(&b, "app.test", "/sink", &["--data-binary", &data])
        .await;
    assert_eq!((r.status, r.body.as_str()), (200, "1048579"), "{r:?}");
    // By path prefix on B's gateway host, stripped.
    let r = Rig::http_on(&b, "gateway.test", "/t/lap/deep?q=2", &[]).await;
    assert_eq!(
        (r.status, r.json()["uri"].as_str()),
        (200, Some("/deep?q=2")),
        "{r:?}"
    );
    // tcp on B's own address.
    let on_b = std::net::SocketAddr::from(([127, 0, 0, 2], public));
    wait_port(on_b).await;
    let mut conn = tokio::net::TcpStream::connect(on_b)
        .await
        .expect("B's tcp port");
    assert!(echo_roundtrip(&mut conn, b"through two replicas").await);
    drop(conn);
    let forwarded = "postern_tunnel_peer_streams_total{tunnel=\"default/app\",role=\"forwarded\"}";
    assert!(b.metric(forwarded).await >= 2.0);
    let served = "postern_tunnel_peer_streams_total{tunnel=\"default/db\",role=\"served\"}";
    assert!(rig.postern.metric(served).await >= 1.0);
    assert_eq!(b.metric("postern_tunnel_registry_up").await, 1.0);

    // The peer port speaks to holders of the secret only.
    let peer_port = peer_port_of(&rig.postern);
    let mut stray = tokio::net::TcpStream::connect(peer_port)
        .await
        .expect("peer port");
    stray
        .write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\npostern-tunnel: default/app\r\n\r\n")
        .await
        .expect("write");
    let mut seen = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stray.read_to_end(&mut seen)).await;
    assert!(
        !String::from_utf8_lossy(&seen).contains("HTTP/"),
        "no HTTP answer without the secret: {seen:?}"
    );

    // Redis stopped: B cannot find the agent and says so at once; A,
    // which holds it, still serves.
    registry.kill();
    wait_for("B to see the registry down", SPREAD, || async {
        (b.metric("postern_tunnel_registry_up").await == 0.0).then_some(())
    })
    .await;
    let asked = Instant::now();
    let r = rig.https_on(&b, "app.test", "/", &[]).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert!(
        r.body.contains("tunnel registry (Redis) is unreachable"),
        "{r:?}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "503 took {:?}",
        asked.elapsed()
    );
    let ready = b.get("/readyz").await;
    assert_eq!(ready.0, 200);
    assert!(
        ready.1.contains("degraded") && ready.1.contains("Redis"),
        "{ready:?}"
    );
    assert_eq!(rig.https("app.test", "/", &[]).await.status, 200);

    // Redis back (empty): the record is written again.
    let _registry = redis(&server, redis_port);
    wait_for("B to forward again", SPREAD, || async {
        (rig.https_on(&b, "app.test", "/", &[]).await.status == 200).then_some(())
    })
    .await;
    assert_eq!(b.get("/readyz").await.1, "ready\n");

    // The agent moves to B: A now forwards to B.
    let mut agent = agent;
    agent.proc.kill();
    let moved = Agent::builder(
        b.tunnel.expect("B's tunnel listener"),
        SERVER_NAME,
        &rig.ca_file,
        &token,
        &to,
    )
    .spawn();
    moved.wait_status("connected", 1, CONNECT).await;
    wait_for("A to forward to B", SPREAD, || async {
        let r = rig.https("app.test", "/moved", &[]).await;
        (r.status == 200).then_some(())
    })
    .await;
    let served = "postern_tunnel_peer_streams_total{tunnel=\"default/app\",role=\"served\"}";
    assert!(b.metric(served).await >= 1.0);
}

/// The `--tunnel-peer-addr` a data plane logged.
fn peer_port_of(postern: &Postern) -> std::net::SocketAddr {
    let log = postern.log();
    log.lines()
        .find(|l| l.contains("tunnel peer port bound"))
        .and_then(|l| l.split("listen=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no peer port in the log:\n{log}"))
}
