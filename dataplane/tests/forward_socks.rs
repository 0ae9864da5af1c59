//! The SOCKS5 inbound in standalone mode: curl `--socks5-hostname` with
//! RFC 1929 credentials, the same users and upstreams as the HTTP proxy,
//! and the refusals (no auth offered, wrong password, denied destination,
//! unsupported command).

use postern_harness::peers::microsocks;
use postern_harness::{LOOPBACK_ALLOWED, PATIENCE, Postern, curl, field, http_target, user_yaml};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_over_socks5_direct_and_through_an_upstream() {
    let Some((_ms, ms_addr)) = microsocks(Some(("u", "p")), Some("127.0.0.6")).await else {
        return;
    };
    let files = [
        (
            "a.yaml",
            user_yaml(
                "alice",
                "pw",
                "direct://",
                None,
                &(LOOPBACK_ALLOWED.to_string() + "  destinations: {deny: [\"*.denied.test\"]}\n"),
            ),
        ),
        (
            "b.yaml",
            user_yaml(
                "bob",
                "pw2",
                &format!("socks5://{ms_addr}"),
                Some(("u", "p")),
                LOOPBACK_ALLOWED,
            ),
        ),
    ];
    let p = Postern::standalone_with("socks-in", &files)
        .json_logs()
        .start()
        .await;
    let target = http_target().await;
    let url = format!("http://localhost:{}/", target.port());
    let direct = curl(&["--socks5-hostname", &p.socks_url("alice", "pw"), &url]).await;
    assert_eq!(
        (direct.status, direct.body.as_str()),
        (200, "hello from 127.0.0.1"),
        "{direct:?}"
    );
    let chained = curl(&["--socks5-hostname", &p.socks_url("bob", "pw2"), &url]).await;
    assert_eq!(chained.body, "hello from 127.0.0.6", "{chained:?}");
    let wrong = curl(&["--socks5-hostname", &p.socks_url("alice", "nope"), &url]).await;
    assert_eq!((wrong.status, wrong.exit), (0, 97), "{wrong:?}");
    let denied = curl(&[
        "--socks5-hostname",
        &p.socks_url("alice", "pw"),
        "http://x.denied.test/",
    ])
    .await;
    assert_eq!(denied.status, 0, "{denied:?}");
    assert!(
        denied.stderr.contains("(2)"),
        "reply 2, not allowed by ruleset: {denied:?}"
    );
    let line = p
        .wait_log("a socks5 tunnel line", PATIENCE, |l| {
            field(l, "message") == "tunnel closed"
                && field(l, "inbound") == "socks5"
                && field(l, "user") == "bob"
        })
        .await;
    assert_eq!(
        field(&line, "upstream"),
        format!("socks5://{ms_addr}").as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_an_open_socks_proxy() {
    let files = [(
        "a.yaml",
        user_yaml("alice", "pw", "direct://", None, LOOPBACK_ALLOWED),
    )];
    let p = Postern::standalone_with("socks-closed", &files)
        .json_logs()
        .start()
        .await;
    // Offering only "no authentication" is refused.
    let mut s = TcpStream::connect(p.socks).await.expect("connect");
    s.write_all(&[5, 1, 0]).await.expect("greeting");
    let mut reply = [0u8; 2];
    s.read_exact(&mut reply).await.expect("method reply");
    assert_eq!(reply, [5, 0xff]);
    // BIND is not supported.
    let mut s = TcpStream::connect(p.socks).await.expect("connect");
    s.write_all(&[5, 1, 2]).await.expect("greeting");
    s.read_exact(&mut reply).await.expect("method reply");
    assert_eq!(reply, [5, 2]);
    s.write_all(&[1, 5, b'a', b'l', b'i', b'c', b'e', 2, b'p', b'w'])
        .await
        .expect("auth");
    s.read_exact(&mut reply).await.expect("auth reply");
    assert_eq!(reply, [1, 0]);
    s.write_all(&[5, 2, 0, 1, 127, 0, 0, 1, 0, 80])
        .await
        .expect("request");
    let mut answer = [0u8; 10];
    s.read_exact(&mut answer).await.expect("request reply");
    assert_eq!(answer[..2], [5, 7]);
}
