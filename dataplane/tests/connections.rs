//! Every connection state has a deadline and every traffic listener has
//! caps: a client that connects and says nothing (before the protocol is
//! known, after an HTTP/2 preface, after a TLS handshake, between
//! keep-alive requests) is closed; one that holds too many connections gets
//! no more; the admin listener answers while the traffic listeners are
//! full; and a process near its open-file limit refuses instead of failing
//! accept(2) in a loop.

use std::time::Duration;

use postern_harness::{
    Backend, Ca, LOOPBACK_ALLOWED, PATIENCE, Postern, PosternBuilder, documents, eventually,
    http_get, metric_value, raw, read_response, target_yaml, tls_secret, user_yaml,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Short deadlines, so the tests need not wait the defaults (30 s, 60 s).
const DEADLINES: [&str; 6] = [
    "--request-header-timeout",
    "1s",
    "--client-idle-timeout",
    "2s",
    "--tls-handshake-timeout",
    "1s",
];
/// How long a test waits to see a connection closed. Far beyond the
/// deadlines: a loaded machine is slow, and today's tree never closes them.
const SEEN_WITHIN: Duration = Duration::from_secs(20);

struct Setup {
    proxy: Postern,
    ca: Ca,
    _backend: Backend,
}

async fn setup(label: &str, args: &[&str]) -> Setup {
    setup_with(label, args, |builder| builder).await
}

/// [`setup`], the builder adjusted by `adjust` before it starts.
async fn setup_with(
    label: &str,
    args: &[&str],
    adjust: impl FnOnce(PosternBuilder) -> PosternBuilder,
) -> Setup {
    let ca = Ca::new("deadlines CA");
    let leaf = ca.leaf(&["site.test"]);
    let backend = Backend::start("main");
    let yaml = documents(&[
        target_yaml(
            "site",
            &["site.test"],
            &backend.url(),
            "  tls: {secretRef: {name: site-tls}}\n",
        ),
        target_yaml("plain", &["plain.test"], &backend.url(), ""),
        tls_secret("site-tls", &leaf.cert, &leaf.key),
    ]);
    let proxy = adjust(Postern::standalone_with(label, &[("site.yaml", yaml)]).args(args))
        .start()
        .await;
    Setup {
        proxy,
        ca,
        _backend: backend,
    }
}

/// Reads (and discards) until the server closes. `Err` if it is still open
/// after `limit`.
async fn closed_by_server<S: AsyncReadExt + Unpin>(
    stream: &mut S,
    limit: Duration,
) -> Result<Vec<u8>, String> {
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    let reading = async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(limit, reading)
        .await
        .map_err(|_| format!("still open after {limit:?}"))?;
    Ok(seen)
}

async fn connect(addr: std::net::SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame.
const H2_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

#[tokio::test]
async fn silent_connections_are_closed_in_every_state() {
    let s = setup("silent", &DEADLINES).await;

    let mut nothing = connect(s.proxy.http).await;
    closed_by_server(&mut nothing, SEEN_WITHIN)
        .await
        .expect("HTTP: a connection that never sends a byte");

    let mut one_byte = connect(s.proxy.http).await;
    one_byte.write_all(b"G").await.expect("write");
    closed_by_server(&mut one_byte, SEEN_WITHIN)
        .await
        .expect("HTTP: a connection that stops after one byte");

    let mut h2c = connect(s.proxy.http).await;
    h2c.write_all(H2_PREFACE).await.expect("write");
    h2c.write_all(H2_SETTINGS).await.expect("write");
    let frames = closed_by_server(&mut h2c, SEEN_WITHIN)
        .await
        .expect("h2c: a connection with no stream after the preface");
    // The server said goodbye properly: a GOAWAY (type 7) frame.
    assert!(
        h2_frame_types(&frames).contains(&7),
        "no GOAWAY before the close: {frames:?}"
    );

    let mut no_handshake = connect(s.proxy.https).await;
    closed_by_server(&mut no_handshake, SEEN_WITHIN)
        .await
        .expect("HTTPS: a connection that never starts its handshake");

    let tls = s.ca.connector(&[b"http/1.1"]);
    let name = rustls::pki_types::ServerName::try_from("site.test").expect("name");
    let mut after_handshake = tls
        .connect(name, connect(s.proxy.https).await)
        .await
        .expect("TLS handshake");
    closed_by_server(&mut after_handshake, SEEN_WITHIN)
        .await
        .expect("HTTPS: a connection silent after its handshake");

    let log = s.proxy.log();
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test]
async fn a_kept_alive_connection_is_closed_when_idle_but_never_mid_request() {
    let s = setup("keepalive", &DEADLINES).await;
    let mut conn = connect(s.proxy.http).await;
    // /slow answers after 3 s: longer than the 2 s idle deadline, which
    // must not count while a request is in flight.
    conn.write_all(b"GET /slow HTTP/1.1\r\nHost: plain.test\r\n\r\n")
        .await
        .expect("write");
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(SEEN_WITHIN, conn.read(&mut chunk))
            .await
            .expect("a response to the slow request")
            .expect("read");
        assert!(n > 0, "closed while the request was in flight");
        head.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Now idle: closed after the idle deadline.
    closed_by_server(&mut conn, SEEN_WITHIN)
        .await
        .expect("an idle kept-alive connection");
}

#[tokio::test]
async fn a_kept_alive_connection_is_parked_between_spells_and_loses_nothing() {
    // Default deadlines: parking (after 50 ms of quiet) must not end a
    // connection, and a client asking to close must not wait for the 60 s
    // idle deadline.
    let s = setup("parked", &[]).await;
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: plain.test\r\n\r\n");
    let mut conn = connect(s.proxy.http).await;
    for round in 0..3 {
        conn.write_all(get(&format!("/round/{round}")).as_bytes())
            .await
            .expect("write");
        let answer = read_response(&mut conn, SEEN_WITHIN).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains(&format!("/round/{round}")), "{answer}");
        // Long enough to be parked.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Two pipelined requests, then a head split across a pause.
    conn.write_all(format!("{}{}", get("/one"), get("/two")).as_bytes())
        .await
        .expect("write");
    assert!(read_response(&mut conn, SEEN_WITHIN).await.contains("/one"));
    assert!(read_response(&mut conn, SEEN_WITHIN).await.contains("/two"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    conn.write_all(b"GET /split HTTP/1.1\r\nHo")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(300)).await;
    conn.write_all(b"st: plain.test\r\n\r\n")
        .await
        .expect("write");
    assert!(
        read_response(&mut conn, SEEN_WITHIN)
            .await
            .contains("/split")
    );
    // Asked to close: closed at once, not at the idle deadline.
    tokio::time::sleep(Duration::from_millis(300)).await;
    conn.write_all(b"GET /last HTTP/1.1\r\nHost: plain.test\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let rest = closed_by_server(&mut conn, Duration::from_secs(10))
        .await
        .expect("closed after a Connection: close request");
    assert!(String::from_utf8_lossy(&rest).contains("/last"));
    // HTTP/1.0 without keep-alive: the same.
    let mut old = connect(s.proxy.http).await;
    old.write_all(b"GET /old HTTP/1.0\r\nHost: plain.test\r\n\r\n")
        .await
        .expect("write");
    let rest = closed_by_server(&mut old, Duration::from_secs(10))
        .await
        .expect("closed after an HTTP/1.0 request");
    assert!(String::from_utf8_lossy(&rest).contains("/old"));
}

#[tokio::test]
async fn one_client_cannot_hold_more_than_its_share() {
    let s = setup("per-client", &["--max-connections-per-client", "3"]).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect(s.proxy.http).await);
    }
    // The fourth is accepted by the kernel, then closed at once.
    let mut fourth = connect(s.proxy.http).await;
    closed_by_server(&mut fourth, SEEN_WITHIN)
        .await
        .expect("the connection over the per-client cap");
    let refused = |metrics: &str| {
        metric_value(
            metrics,
            r#"postern_connections_refused_total{listener="http",reason="client"}"#,
        )
    };
    assert!(
        refused(&s.proxy.metrics().await).unwrap_or(0.0) >= 1.0,
        "refusal not counted"
    );
    // Other listeners and the admin listener are unaffected.
    let health = http_get(s.proxy.admin, "/healthz").await.expect("admin");
    assert_eq!(health.status, 200);
    // A place given back is a place to take.
    drop(held.pop());
    served(&s.proxy, "a place given back").await;
}

#[tokio::test]
async fn near_the_open_file_limit_traffic_is_refused_and_admin_answers() {
    const LIMIT: u64 = 256;
    let s = setup_with("fd-limit", &["--max-connections-per-client", "0"], |b| {
        b.open_file_limit(LIMIT)
    })
    .await;
    // More connections than the budget the limit allows (192 of 256) and
    // than the descriptors left, from several "clients" so no per-client
    // cap is what refuses them.
    let mut held = Vec::new();
    for _ in 0..(LIMIT + 64) {
        match TcpStream::connect(s.proxy.http).await {
            Ok(stream) => held.push(stream),
            Err(_) => break,
        }
    }
    // The kernel completes connections before the server accepts them, so
    // the server may still be draining its backlog: wait for the refusal.
    // The admin listener, outside the budget, answers throughout.
    let (metrics, refused) = eventually("a refusal at the budget", PATIENCE, || async {
        let metrics = http_get(s.proxy.admin, "/metrics").await?;
        if metrics.status != 200 {
            return Err(format!("admin answered {}", metrics.status));
        }
        let refused = metric_value(
            &metrics.body,
            r#"postern_connections_refused_total{listener="http",reason="budget"}"#,
        )
        .unwrap_or(0.0);
        if refused >= 1.0 {
            Ok((metrics.body, refused))
        } else {
            Err(format!("nothing refused yet: {}", metrics.body))
        }
    })
    .await;
    let open =
        metric_value(&metrics, r#"postern_connections_open{listener="http"}"#).expect("open gauge");
    assert!(open <= 192.0, "{open} open over a budget of 192");
    // No descriptor ran out: accept(2) never failed, so nothing spun.
    let failed =
        metric_value(&metrics, r#"postern_accept_errors_total{listener="http"}"#).unwrap_or(0.0);
    assert_eq!(failed, 0.0, "accept failed {failed} times");
    // Refusals are logged once per interval, not once per connection.
    let log = s.proxy.log();
    let lines = log.matches("a connection cap is reached").count();
    assert!(
        (1..=3).contains(&lines),
        "{lines} refusal lines for {refused} refusals"
    );
    drop(held);
    // Once the clients go, traffic is served again.
    served(&s.proxy, "served again").await;
}

#[tokio::test]
async fn tunnels_count_both_their_descriptors_so_the_forward_proxy_cannot_exhaust_them() {
    const LIMIT: u64 = 256;
    let backend = Backend::start("held");
    let user = user_yaml("tess", "pw", "direct://", None, LOOPBACK_ALLOWED);
    let proxy = Postern::standalone_with("fd-tunnels", &[("user.yaml", user)])
        .args(["--max-connections-per-client", "0"])
        .open_file_limit(LIMIT)
        .start()
        .await;
    let target = backend.addr;
    let auth = "Basic dGVzczpwdw=="; // tess:pw
    let connect = format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: {auth}\r\n\r\n"
    );
    // More tunnels than the descriptors could hold at two each.
    let (mut held, mut statuses) = (Vec::new(), Vec::new());
    for _ in 0..LIMIT {
        let Ok(mut stream) = TcpStream::connect(proxy.proxy).await else {
            break;
        };
        if stream.write_all(connect.as_bytes()).await.is_err() {
            break;
        }
        let mut head = [0u8; 12];
        match tokio::time::timeout(SEEN_WITHIN, stream.read_exact(&mut head)).await {
            Ok(Ok(_)) => statuses.push(String::from_utf8_lossy(&head[9..12]).into_owned()),
            _ => statuses.push("none".into()),
        }
        held.push(stream);
    }
    // Refused: closed on arrival ("none"), or 503 when the client got a
    // place but its upstream descriptor did not.
    let opened = statuses.iter().filter(|s| *s == "200").count();
    let refused = statuses.len() - opened;
    assert!(opened > 0, "no tunnel opened: {statuses:?}");
    assert!(refused > 0, "none refused at capacity: {statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| ["200", "503", "none"].contains(&s.as_str())),
        "{statuses:?}"
    );
    // The budget (192 of 256) bounds the descriptors, two per tunnel:
    // nothing ran out, so accept(2) never failed and the admin listener
    // answers.
    assert!(2 * opened <= 192, "{opened} tunnels over a budget of 192");
    let metrics = http_get(proxy.admin, "/metrics").await.expect("admin");
    assert_eq!(metrics.status, 200);
    for listener in ["proxy", "socks", "http", "https", "admin"] {
        let sample = format!(r#"postern_accept_errors_total{{listener="{listener}"}}"#);
        let failed = metric_value(&metrics.body, &sample).unwrap_or(0.0);
        assert_eq!(failed, 0.0, "{listener}: accept failed {failed} times");
    }
    let sample = r#"postern_connections_refused_total{listener="proxy",reason="budget"}"#;
    assert!(
        metric_value(&metrics.body, sample).unwrap_or(0.0) >= 1.0,
        "{}",
        metrics.body
    );
}

/// Waits until a request on the plain site is answered 200.
async fn served(proxy: &Postern, what: &str) {
    eventually(what, PATIENCE, || async {
        let request = b"GET /x HTTP/1.1\r\nHost: plain.test\r\nConnection: close\r\n\r\n";
        match raw(proxy.http, request).await {
            Ok((200, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

/// The type of each whole HTTP/2 frame in `bytes` (a server's side starts
/// with frames, no preface).
fn h2_frame_types(bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 9 {
        let len = (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
        types.push(rest[3]);
        if rest.len() < 9 + len {
            break;
        }
        rest = &rest[9 + len..];
    }
    types
}
