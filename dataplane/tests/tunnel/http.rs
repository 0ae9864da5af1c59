//! http tunnels: by hostname over HTTPS, by path prefix on the gateway's
//! host, server-sent events as they are sent, and a WebSocket echo, with
//! one agent process serving three Tunnels through several `--to`; gRPC
//! (trailers, streams) to an h2c service and an https service whose CA
//! the agent is given.

use std::time::{Duration, Instant};

use postern_harness::backend::SSE_GAP;
use postern_harness::python::{
    GRPC_ECHO_CLIENT, GRPC_ECHO_SERVER, WS_ECHO_CLIENT, WS_ECHO_SERVER, python_client,
    python_server,
};
use postern_harness::{
    Agent, Backend, Ca, eventually, python_with, target_yaml, tmp_dir, tunnel_yaml,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::rig::{CONNECT, Rig, SERVER_NAME, host_tunnel, prefix_tunnel};

#[tokio::test]
async fn host_and_prefix_tunnels_carry_requests_sse_and_websockets() {
    let python = python_with("websockets");
    let local = Backend::start("laptop");
    let gateway = Backend::text("gateway");
    let docs = [
        host_tunnel("app", &["app.test"]),
        host_tunnel("ws", &["ws.test"]),
        prefix_tunnel("laptop", "/t/laptop"),
        target_yaml("gateway", &["gateway.test"], &gateway.url(), ""),
    ];
    let rig = Rig::start("tunnel-http", "ed25519", &docs).await;
    let token = rig
        .key
        .token(&["default/app", "default/laptop", "default/ws"], "1h");
    let ws = match &python {
        Some(python) => Some(python_server(python, "ws_server", WS_ECHO_SERVER).await),
        None => None,
    };
    let ws_to = ws
        .as_ref()
        .map(|(_, port)| format!("default/ws=http://127.0.0.1:{port}"));
    let mut to = vec![local.url()];
    to.extend(ws_to);
    let to: Vec<&str> = to.iter().map(String::as_str).collect();
    let agent = rig.agent(&token, &to);
    agent.wait_status("connected", 1, CONNECT).await;

    // By hostname, over HTTPS with the hostname's certificate.
    let r = rig.https("app.test", "/hello?x=1", &[]).await;
    assert_eq!(r.status, 200, "{r:?}\n{}", agent.log());
    let seen = r.json();
    assert_eq!(seen["backend"], "laptop");
    assert_eq!(seen["uri"], "/hello?x=1");
    assert_eq!(seen["headers"]["x-forwarded-for"][0], "127.0.0.1");
    assert_eq!(seen["headers"]["x-forwarded-proto"][0], "https");
    assert!(
        seen["headers"]["x-forwarded-host"][0]
            .as_str()
            .is_some_and(|h| h.starts_with("app.test")),
        "{seen}"
    );
    assert!(
        seen["headers"]["host"][0]
            .as_str()
            .is_some_and(|h| h.starts_with("app.test")),
        "the local service sees the public Host: {seen}"
    );
    // A body goes up and the count comes back.
    let body = tmp_dir("tunnel-body").join("body");
    std::fs::write(&body, vec![b'y'; 3 * 1024 * 1024 + 7]).expect("body");
    let data = format!("@{}", body.display());
    let r = rig
        .https("app.test", "/sink", &["--data-binary", &data])
        .await;
    assert_eq!((r.status, r.body.as_str()), (200, "3145735"), "{r:?}");
    // Both bodies counted, and the streams closed once they ended.
    let bytes = |tunnel: &str, direction: &str| {
        format!(
            "postern_tunnel_bytes_total{{tunnel=\"default/{tunnel}\",direction=\"{direction}\"}}"
        )
    };
    assert!(rig.postern.metric(&bytes("app", "in")).await >= 3145735.0);
    assert!(rig.postern.metric(&bytes("app", "out")).await > 0.0);
    closed(&rig, "app", "http").await;

    // By path prefix on the gateway's host, the prefix stripped.
    let r = rig.http("gateway.test", "/t/laptop/deep/x?q=2", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["uri"], "/deep/x?q=2");
    let r = rig.http("gateway.test", "/t/laptopx", &[]).await;
    assert_eq!(
        r.body, "gateway /t/laptopx",
        "not the prefix: the site's backend"
    );

    // Server-sent events: the first arrives long before the second is sent.
    let started = Instant::now();
    let first = first_sse_event(rig.postern.http, "app.test").await;
    assert!(first.contains("data: first"), "{first}");
    assert!(
        started.elapsed() < SSE_GAP - Duration::from_secs(1),
        "the first event took {:?}: buffered",
        started.elapsed()
    );

    // A WebSocket through the tunnel (the agent's second --to).
    if let Some(python) = &python {
        let port = rig.postern.http.port().to_string();
        python_client(
            python,
            &tmp_dir("ws"),
            "ws_client",
            WS_ECHO_CLIENT,
            &[&port],
        );
        for direction in ["in", "out"] {
            let n = rig.postern.metric(&bytes("ws", direction)).await;
            assert!(n > 0.0, "WebSocket bytes {direction}: {n}");
        }
        closed(&rig, "ws", "upgrade").await;
    }
    let log = agent.log();
    assert!(!log.contains(&token), "the agent never logs its token");
    assert!(
        !rig.postern.log().contains(&token),
        "nor does the data plane"
    );
}

/// Waits until no stream of `kind` is open on the Tunnel `name`.
async fn closed(rig: &Rig, name: &str, kind: &str) {
    let open = format!("postern_tunnel_streams_open{{tunnel=\"default/{name}\",kind=\"{kind}\"}}");
    eventually(
        &format!("no {kind} stream open on {name}"),
        CONNECT,
        || async {
            match rig.postern.metric(&open).await {
                0.0 => Ok(()),
                n => Err(n),
            }
        },
    )
    .await;
}

/// Sends `GET /sse` for `host` and returns what arrived within 3 s, read
/// until the first event.
async fn first_sse_event(addr: std::net::SocketAddr, host: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET /sse HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while !String::from_utf8_lossy(&seen).contains("data: first") {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test]
async fn grpc_trailers_through_an_h2c_service_and_an_https_service_with_its_own_ca() {
    let local_ca = Ca::new("tunnel local service CA");
    let secure = Backend::start_with("secure", Some(&local_ca.leaf(&["127.0.0.1"])));
    let local_ca_file = local_ca.write(&tmp_dir("tunnel-local-ca"));
    let docs = [
        host_tunnel("app", &["app.test"]),
        tunnel_yaml(
            "grpc",
            "agent-key",
            "  mode: http\n  hostnames: [grpc.test]\n",
        ),
    ];
    let rig = Rig::start("tunnel-grpc", "hs256", &docs).await;
    let python = python_with("grpc");
    let grpc = match &python {
        Some(python) => Some(python_server(python, "grpc_server", GRPC_ECHO_SERVER).await),
        None => None,
    };
    let mut to = vec![format!(
        "default/app=https://127.0.0.1:{}",
        secure.addr.port()
    )];
    if let Some((_, port)) = &grpc {
        to.push(format!("default/grpc=h2c://127.0.0.1:{port}"));
    }
    let token = rig.key.token(&["default/app", "default/grpc"], "1h");
    let mut builder = Agent::builder(
        rig.tunnel_addr(),
        SERVER_NAME,
        &rig.ca_file,
        &token,
        &to.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    builder = builder
        .arg("--to-ca")
        .arg(local_ca_file.to_str().expect("utf-8"));
    let agent = builder.spawn();
    agent.wait_status("connected", 1, CONNECT).await;

    let r = rig.https("app.test", "/over-tls", &[]).await;
    assert_eq!(r.status, 200, "{r:?}\n{}", agent.log());
    assert_eq!(r.json()["backend"], "secure");
    if let Some(python) = &python {
        let port = rig.postern.http.port().to_string();
        python_client(
            python,
            &tmp_dir("grpc"),
            "grpc_client",
            GRPC_ECHO_CLIENT,
            &[&port],
        );
    }
}
