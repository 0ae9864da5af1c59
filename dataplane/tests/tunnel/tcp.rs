//! tcp tunnels: a real Redis protocol session (redis-cli to a private
//! redis-server) through the public port, which is refused while no agent
//! is live.

use std::process::Command;
use std::time::Duration;

use postern_harness::{
    Launch, free_port, loopback, peer, tmp_dir, tunnel_yaml, wait_for, wait_port,
};

use crate::rig::{CONNECT, Rig};

fn redis_cli(cli: &std::path::Path, port: u16, args: &[&str]) -> String {
    let out = Command::new("timeout")
        .arg("20")
        .arg(cli)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn redis_cli_talks_to_redis_through_a_tcp_tunnel() {
    let (Some(server), Some(cli)) = (peer("redis-server"), peer("redis-cli")) else {
        return;
    };
    let redis_port = free_port();
    let _redis = Launch::new("redis-server", server)
        .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .spawn();
    wait_port(loopback(redis_port)).await;
    let public = free_port();
    let docs = [tunnel_yaml(
        "db",
        "agent-key",
        &format!("  mode: tcp\n  tcpPort: {public}\n"),
    )];
    let rig = Rig::start("tunnel-tcp", "ed25519", &docs).await;
    assert!(
        tokio::net::TcpStream::connect(loopback(public))
            .await
            .is_err(),
        "no agent yet: the port refuses connections"
    );
    let to = format!("tcp://127.0.0.1:{redis_port}");
    let mut agent = rig.agent(&rig.key.token(&["default/db"], "1h"), &[&to]);
    agent.wait_status("connected", 1, CONNECT).await;
    wait_port(loopback(public)).await;

    assert_eq!(redis_cli(&cli, public, &["PING"]), "PONG");
    assert_eq!(redis_cli(&cli, public, &["SET", "greeting", "hello"]), "OK");
    assert_eq!(redis_cli(&cli, public, &["GET", "greeting"]), "hello");
    // A 2 MiB value up and its length back, in one session.
    let big = tmp_dir("redis-big").join("value");
    std::fs::write(&big, vec![b'z'; 2 * 1024 * 1024]).expect("value");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "timeout 20 {} -h 127.0.0.1 -p {public} -x SET big < {} && timeout 20 {} -h 127.0.0.1 -p {public} STRLEN big",
            cli.display(),
            big.display(),
            cli.display()
        ))
        .output()
        .expect("sh");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.split_whitespace().collect::<Vec<_>>(),
        ["OK", "2097152"],
        "{text}"
    );
    let metrics = rig.postern.metrics().await;
    assert!(
        metrics.contains("tunnel_streams_total{tunnel=\"default/db\",kind=\"tcp\"}"),
        "{metrics}"
    );

    // The agent goes: the port closes.
    agent.proc.kill();
    wait_for("the tcp port to close", Duration::from_secs(5), || async {
        tokio::net::TcpStream::connect(loopback(public))
            .await
            .is_err()
            .then_some(())
    })
    .await;
}
