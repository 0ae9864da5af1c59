//! tcp tunnels: a real Redis protocol session (redis-cli to a private
//! redis-server) through the public port, which is refused while no agent
//! is live; and the PROXY v2 header an agent can send its local service.

use std::process::Command;
use std::time::Duration;

use postern_harness::{
    Agent, Launch, free_port, loopback, peer, tmp_dir, tunnel_yaml, wait_for, wait_port,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::rig::{CONNECT, Rig, SERVER_NAME};

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

/// A local service that reads a PROXY v2 header and answers with the
/// source address it names.
async fn proxy_reader() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = [0u8; 16];
                if s.read_exact(&mut head).await.is_err() {
                    return;
                }
                let len = u16::from_be_bytes([head[14], head[15]]) as usize;
                let mut rest = vec![0u8; len];
                if s.read_exact(&mut rest).await.is_err() {
                    return;
                }
                let mut all = head.to_vec();
                all.extend(rest);
                let answer = match ppp::v2::Header::try_from(all.as_slice()) {
                    Ok(h) => match h.addresses {
                        ppp::v2::Addresses::IPv4(a) => {
                            format!("src={}:{}\n", a.source_address, a.source_port)
                        }
                        other => format!("other {other:?}\n"),
                    },
                    Err(e) => format!("bad header {e:?}\n"),
                };
                let _ = s.write_all(answer.as_bytes()).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn the_agent_can_name_the_public_client_in_a_proxy_v2_header() {
    let local = proxy_reader().await;
    let public = free_port();
    let docs = [tunnel_yaml(
        "pp",
        "agent-key",
        &format!("  mode: tcp\n  tcpPort: {public}\n"),
    )];
    let rig = Rig::start("tunnel-pp", "hs256", &docs).await;
    let to = format!("tcp://127.0.0.1:{local}");
    let agent = Agent::builder(
        rig.tunnel_addr(),
        SERVER_NAME,
        &rig.ca_file,
        &rig.key.token(&["default/pp"], "1h"),
        &[&to],
    )
    .arg("--proxy-protocol")
    .arg("v2")
    .spawn();
    agent.wait_status("connected", 1, CONNECT).await;
    wait_port(loopback(public)).await;
    let mut s = tokio::net::TcpStream::connect(loopback(public))
        .await
        .expect("connect");
    let me = s.local_addr().expect("addr");
    let mut line = String::new();
    let mut buf = [0u8; 256];
    while !line.ends_with('\n') {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("an answer")
            .expect("read");
        assert!(n > 0, "closed after {line:?}");
        line.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert_eq!(line.trim(), format!("src={me}"));
}

/// Every public connection is one stream on the agent's connection; far
/// more than hyper's default limit of 200 are open at once, each echoing.
#[tokio::test]
async fn many_connections_at_once_through_one_agent() {
    const OPEN: usize = 600;
    let echo = postern_harness::echo_target().await;
    let public = free_port();
    let docs = [tunnel_yaml(
        "many",
        "agent-key",
        &format!("  mode: tcp\n  tcpPort: {public}\n"),
    )];
    let rig = Rig::start("tunnel-many", "ed25519", &docs).await;
    let to = format!("tcp://{echo}");
    let agent = rig.agent(&rig.key.token(&["default/many"], "1h"), &[&to]);
    agent.wait_status("connected", 1, CONNECT).await;
    wait_port(loopback(public)).await;
    let mut held = Vec::with_capacity(OPEN);
    for i in 0..OPEN {
        let mut s = tokio::net::TcpStream::connect(loopback(public))
            .await
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        assert!(
            postern_harness::echo_roundtrip(&mut s, format!("hello {i}").as_bytes()).await,
            "connection {i} of {OPEN} echoed nothing while {i} were open"
        );
        held.push(s);
    }
    // The first ones still work with all of them open.
    for (i, s) in held.iter_mut().take(5).enumerate() {
        assert!(
            postern_harness::echo_roundtrip(s, b"again").await,
            "connection {i}"
        );
    }
}
