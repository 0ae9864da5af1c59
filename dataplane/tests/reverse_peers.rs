//! The reverse proxy between real peers: haproxy in front sending PROXY
//! v1 and v2, nginx behind reading our PROXY header, a WebSocket client
//! and server (python3-websockets) and a gRPC client and server
//! (python3-grpcio) speaking HTTP/2 with trailers.

use std::time::Duration;

use postern_harness::peers::nginx;
use postern_harness::python::{
    GRPC_ECHO_CLIENT, GRPC_ECHO_SERVER, WS_ECHO_CLIENT, WS_ECHO_SERVER, python_client,
    python_server,
};
use postern_harness::{
    Backend, Ca, Launch, Manifests, PATIENCE, Postern, fetch, free_port, loopback, peer,
    python_with, read_response, tls_secret, tmp_dir, wait_port,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn websocket_echo_through_the_proxy() {
    let Some(python) = python_with("websockets") else {
        return;
    };
    let dir = tmp_dir("ws");
    let (_server, backend_port) = python_server(&python, "ws_server", WS_ECHO_SERVER).await;
    let yaml = format!(
        "apiVersion: postern.io/v1alpha1\nkind: ProxyTarget\nmetadata: {{name: ws, namespace: default}}\nspec:\n  hostnames: [ws.test]\n  backend: {{url: \"http://127.0.0.1:{backend_port}\"}}\n"
    );
    let proxy = Postern::standalone(Manifests::new("ws").with("site.yaml", &yaml))
        .start()
        .await;
    let port = proxy.http.port().to_string();
    python_client(&python, &dir, "ws_client", WS_ECHO_CLIENT, &[&port]);

    // An upgrade on a kept-alive connection that was parked between its
    // requests (idle past the park delay): the 101 and the echo still pass.
    let mut conn = tokio::net::TcpStream::connect(proxy.http)
        .await
        .expect("connect");
    conn.write_all(b"GET /plain HTTP/1.1\r\nHost: ws.test\r\n\r\n")
        .await
        .expect("write");
    let first = read_response(&mut conn, PATIENCE).await;
    assert!(!first.starts_with("HTTP/1.1 101"), "{first}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    conn.write_all(
        b"GET / HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .expect("write");
    let switched = read_response(&mut conn, PATIENCE).await;
    assert!(switched.starts_with("HTTP/1.1 101"), "{switched}");
    // A masked text frame "hi"; the echo comes back unmasked.
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | 2];
    frame.extend_from_slice(&mask);
    frame.extend(b"hi".iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    conn.write_all(&frame).await.expect("write frame");
    let mut echo = [0u8; 4];
    tokio::time::timeout(PATIENCE, conn.read_exact(&mut echo))
        .await
        .expect("an echo in time")
        .expect("read echo");
    assert_eq!(&echo, &[0x81, 2, b'h', b'i']);
}

#[tokio::test]
async fn grpc_calls_with_trailers_and_streams_through_the_proxy() {
    let Some(python) = python_with("grpc") else {
        return;
    };
    let dir = tmp_dir("grpc");
    let (_server, backend_port) = python_server(&python, "grpc_server", GRPC_ECHO_SERVER).await;
    let yaml = format!(
        "apiVersion: postern.io/v1alpha1\nkind: ProxyTarget\nmetadata: {{name: grpc, namespace: default}}\nspec:\n  hostnames: [grpc.test]\n  backend: {{url: \"http://127.0.0.1:{backend_port}\", protocol: http2}}\n"
    );
    let proxy = Postern::standalone(Manifests::new("grpc").with("site.yaml", &yaml))
        .start()
        .await;
    let port = proxy.http.port().to_string();
    python_client(&python, &dir, "grpc_client", GRPC_ECHO_CLIENT, &[&port]);
}

#[tokio::test]
async fn haproxy_in_front_sends_proxy_v1_and_v2() {
    let Some(haproxy) = peer("haproxy") else {
        return;
    };
    let backend = Backend::start("echo");
    let ca = Ca::new("pp CA");
    let leaf = ca.leaf(&["pp.test"]);
    let yaml = format!(
        "apiVersion: postern.io/v1alpha1\nkind: ProxyTarget\nmetadata: {{name: pp, namespace: default}}\nspec:\n  hostnames: [pp.test]\n  backend: {{url: \"{}\"}}\n  tls: {{secretRef: {{name: pp-tls}}}}\n---\n{}",
        backend.url(),
        tls_secret("pp-tls", &leaf.cert, &leaf.key)
    );
    let manifests = Manifests::new("haproxy").with("site.yaml", &yaml);
    let ca_file = ca.write(manifests.work_dir());
    let proxy = Postern::standalone(manifests)
        .args(["--proxy-protocol-trusted", "127.0.0.1/32"])
        .start()
        .await;
    let (v1, v2, tls) = (free_port(), free_port(), free_port());
    let config = format!(
        "global\n    maxconn 100\ndefaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
         listen v1\n    bind 127.0.0.1:{v1}\n    server p 127.0.0.1:{http} send-proxy\n\
         listen v2\n    bind 127.0.0.1:{v2}\n    server p 127.0.0.1:{http} send-proxy-v2\n\
         listen tls\n    bind 127.0.0.1:{tls}\n    server p 127.0.0.1:{https} send-proxy-v2\n",
        http = proxy.http.port(),
        https = proxy.https.port(),
    );
    let launch = Launch::new("haproxy", haproxy);
    let cfg = launch.write("haproxy.cfg", &config);
    let _haproxy = launch.arg("-db").arg("-f").arg(cfg).spawn();
    for port in [v1, v2, tls] {
        wait_port(loopback(port)).await;
    }
    // The client is 127.0.0.2; haproxy connects to postern from 127.0.0.1.
    for port in [v1, v2] {
        let r = fetch(&[
            "--interface",
            "127.0.0.2",
            "-H",
            "Host: pp.test",
            &format!("http://127.0.0.1:{port}/"),
        ]);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            r.json()["headers"]["x-forwarded-for"][0],
            "127.0.0.2",
            "via port {port}"
        );
    }
    let r = fetch(&[
        "--interface",
        "127.0.0.2",
        "--cacert",
        ca_file.to_str().expect("p"),
        "--resolve",
        &format!("pp.test:{tls}:127.0.0.1"),
        &format!("https://pp.test:{tls}/"),
    ]);
    assert_eq!(r.json()["headers"]["x-forwarded-for"][0], "127.0.0.2");
    assert_eq!(r.json()["headers"]["x-forwarded-proto"][0], "https");
    let log = proxy.log();
    assert!(
        log.contains("client=127.0.0.2"),
        "the access log names the real client"
    );

    // An untrusted peer's PROXY header is not believed: it is not HTTP.
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind("127.0.0.3:0".parse().expect("addr"))
        .expect("bind");
    let mut s = sock.connect(proxy.http).await.expect("connect");
    s.write_all(b"PROXY TCP4 6.6.6.6 127.0.0.1 1 80\r\nGET / HTTP/1.1\r\nHost: pp.test\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("answer")
        .expect("read");
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(!text.contains("6.6.6.6"));
    // A trusted peer that sends no header is dropped.
    let mut s = tokio::net::TcpStream::connect(proxy.http)
        .await
        .expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: pp.test\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(PATIENCE, s.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "the connection was left open, not dropped");
    assert!(buf.is_empty(), "{}", String::from_utf8_lossy(&buf));
    let metrics = proxy.metrics().await;
    assert!(metrics.contains("reason=\"proxy_header\""), "{metrics}");
}

#[tokio::test]
async fn nginx_behind_reads_our_proxy_header() {
    let (p1, p2) = (free_port(), free_port());
    let server = |port: u16| {
        format!(
            "  server {{\n    listen 127.0.0.1:{port} proxy_protocol;\n    location / {{\n      default_type text/plain;\n      return 200 \"client=$proxy_protocol_addr server=$proxy_protocol_server_addr\";\n    }}\n  }}\n"
        )
    };
    let Some(_nginx) = nginx(&format!("{}{}", server(p1), server(p2))) else {
        return;
    };
    wait_port(loopback(p1)).await;
    wait_port(loopback(p2)).await;
    let yaml = format!(
        "apiVersion: postern.io/v1alpha1\nkind: ProxyTarget\nmetadata: {{name: v1, namespace: default}}\nspec:\n  hostnames: [v1.test]\n  backend: {{url: \"http://127.0.0.1:{p1}\", proxyProtocol: v1}}\n---\napiVersion: postern.io/v1alpha1\nkind: ProxyTarget\nmetadata: {{name: v2, namespace: default}}\nspec:\n  hostnames: [v2.test]\n  backend: {{url: \"http://127.0.0.1:{p2}\", proxyProtocol: v2}}\n"
    );
    let proxy = Postern::standalone(Manifests::new("nginx-pp").with("site.yaml", &yaml))
        .start()
        .await;
    for host in ["v1.test", "v2.test"] {
        let r = fetch(&[
            "--interface",
            "127.0.0.2",
            "-H",
            &format!("Host: {host}"),
            &format!("http://{}/", proxy.http),
        ]);
        assert_eq!(r.status, 200, "{host}: {}", r.body);
        assert_eq!(r.body, "client=127.0.0.2 server=127.0.0.1", "{host}");
    }
}
