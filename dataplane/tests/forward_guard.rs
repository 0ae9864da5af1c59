//! The gateway's guard: no user reaches loopback, unspecified or link-local
//! addresses however they are spelled, over CONNECT, absolute-form HTTP or
//! SOCKS5, unless its UserUpstream allows them (`allowInternalNetworks`);
//! and nobody reaches the gateway's own listeners (the admin API, the proxy
//! itself). Names are judged on the addresses they resolve to, names sent
//! to an upstream proxy on what they say, and `--proxy-deny-cidr` adds
//! networks.

use std::net::SocketAddr;

use base64::Engine as _;
use postern_harness::peers::microsocks;
use postern_harness::{
    LOOPBACK_ALLOWED, Manifests, PATIENCE, Postern, curl, field, http_target, raw, user_yaml,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Loopback, unspecified and link-local, as clients spell them. The port
/// is filled in; `169.254.169.254` is never connected to (it would hang).
const SPELLINGS: &[&str] = &[
    "127.0.0.1",
    "127.1",
    "2130706433",
    "0x7f.0.0.1",
    "0.0.0.0",
    "localhost",
    "[::1]",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "169.254.169.254",
];

/// alice: direct, no exemption; bob: direct, loopback allowed.
async fn start(label: &str) -> Postern {
    let files = [
        (
            "alice.yaml",
            user_yaml("alice", "pw", "direct://", None, ""),
        ),
        (
            "bob.yaml",
            user_yaml("bob", "pw2", "direct://", None, LOOPBACK_ALLOWED),
        ),
    ];
    Postern::standalone_with(label, &files)
        .json_logs()
        .start()
        .await
}

fn basic(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

/// A raw CONNECT (nothing normalises the authority): status and text.
async fn connect(p: &Postern, creds: (&str, &str), authority: &str) -> (u16, String) {
    let req = format!(
        "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\nProxy-Authorization: Basic {}\r\n\r\n",
        basic(creds.0, creds.1)
    );
    raw(p.proxy, req.as_bytes()).await.expect("raw CONNECT")
}

/// A raw absolute-form GET: status and text.
async fn absolute(p: &Postern, creds: (&str, &str), authority: &str, path: &str) -> (u16, String) {
    let req = format!(
        "GET http://{authority}{path} HTTP/1.1\r\nHost: {authority}\r\nProxy-Authorization: Basic {}\r\nConnection: close\r\n\r\n",
        basic(creds.0, creds.1)
    );
    raw(p.proxy, req.as_bytes()).await.expect("raw GET")
}

/// A SOCKS5 CONNECT to `host:port`, the host sent as a name (ATYP 3) or,
/// when it is an IP literal, as an address (ATYP 1 or 4): the reply code.
async fn socks(p: &Postern, creds: (&str, &str), host: &str, port: u16) -> u8 {
    let mut s = TcpStream::connect(p.socks).await.expect("socks connect");
    s.write_all(&[5, 1, 2]).await.expect("greeting");
    let mut two = [0u8; 2];
    s.read_exact(&mut two).await.expect("method");
    let (u, pw) = (creds.0.as_bytes(), creds.1.as_bytes());
    let mut auth = vec![1, u.len() as u8];
    auth.extend_from_slice(u);
    auth.push(pw.len() as u8);
    auth.extend_from_slice(pw);
    s.write_all(&auth).await.expect("auth");
    s.read_exact(&mut two).await.expect("auth reply");
    assert_eq!(two, [1, 0], "socks auth for {}", creds.0);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let mut req = vec![5, 1, 0];
    match bare.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => {
            req.push(1);
            req.extend_from_slice(&v4.octets());
        }
        Ok(std::net::IpAddr::V6(v6)) => {
            req.push(4);
            req.extend_from_slice(&v6.octets());
        }
        Err(_) => {
            req.extend_from_slice(&[3, bare.len() as u8]);
            req.extend_from_slice(bare.as_bytes());
        }
    }
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req).await.expect("request");
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).await.expect("reply");
    reply[1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_of_loopback_is_refused_on_every_inbound() {
    let p = start("guard-spellings").await;
    let target = http_target().await;
    let port = target.port();
    let alice = ("alice", "pw");
    for host in SPELLINGS {
        let authority = format!("{host}:{port}");
        let (status, text) = connect(&p, alice, &authority).await;
        assert_eq!(status, 403, "CONNECT {authority}: {text}");
        let (status, text) = absolute(&p, alice, &authority, "/").await;
        assert_eq!(status, 403, "GET http://{authority}/: {text}");
        assert!(!text.contains("hello"), "{authority} was reached: {text}");
        assert_eq!(socks(&p, alice, host, port).await, 2, "SOCKS5 {authority}");
    }
    // curl's own spellings, and SOCKS5 with curl resolving (--socks5) or
    // passing the name on (--socks5-hostname).
    for host in ["127.1", "2130706433", "localhost", "[::1]", "0.0.0.0"] {
        let url = format!("http://{host}:{port}/");
        let plain = curl(&["-x", &p.proxy_url("alice", "pw"), &url]).await;
        assert_eq!(plain.status, 403, "{url}: {plain:?}");
        let tunnel = curl(&["-p", "-x", &p.proxy_url("alice", "pw"), &url]).await;
        assert_eq!(tunnel.connect_code, 403, "{url}: {tunnel:?}");
        for flag in ["--socks5", "--socks5-hostname"] {
            let out = curl(&[flag, &p.socks_url("alice", "pw"), &url]).await;
            assert_eq!(out.status, 0, "{flag} {url}: {out:?}");
            assert!(out.stderr.contains("(2)"), "{flag} {url}: reply 2: {out:?}");
        }
    }
    // The body names what the client asked for, nothing it resolved to.
    let (_, text) = connect(&p, alice, &format!("localhost:{port}")).await;
    assert!(
        text.ends_with(&format!("destination localhost:{port} is not allowed\n")),
        "{text}"
    );
    // `localhost` was resolved and its address refused (the log says which),
    // counted by reason and logged at info.
    let line = p
        .wait_log("a guarded refusal of localhost", PATIENCE, |l| {
            field(l, "message") == "tunnel refused"
                && field(l, "destination") == format!("localhost:{port}").as_str()
        })
        .await;
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(field(&line, "outcome"), "denied_loopback", "{line}");
    assert!(
        field(&line, "error")
            .as_str()
            .is_some_and(|e| e.contains(&format!(":{port} is a loopback address"))),
        "{line}"
    );
    for kind in ["denied_loopback", "denied_unspecified", "denied_link_local"] {
        let sample = format!("postern_proxy_errors_total{{user=\"alice\",kind=\"{kind}\"}}");
        assert!(p.metric(&sample).await >= 1.0, "{sample}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_user_reaches_loopback_but_never_the_gateway_itself() {
    let p = start("guard-self").await;
    let target = http_target().await;
    let bob = ("bob", "pw2");
    for host in ["127.0.0.1", "localhost", "127.1"] {
        let url = format!("http://{host}:{}/", target.port());
        let plain = curl(&["-x", &p.proxy_url("bob", "pw2"), &url]).await;
        assert_eq!(
            (plain.status, plain.body.as_str()),
            (200, "hello from 127.0.0.1"),
            "{url}: {plain:?}"
        );
        let socks5 = curl(&["--socks5-hostname", &p.socks_url("bob", "pw2"), &url]).await;
        assert_eq!(socks5.status, 200, "{url}: {socks5:?}");
    }
    let own: [(&str, SocketAddr); 3] = [("admin", p.admin), ("proxy", p.proxy), ("socks", p.socks)];
    for (name, addr) in own {
        let port = addr.port();
        for authority in [
            addr.to_string(),
            format!("localhost:{port}"),
            format!("[::ffff:127.0.0.1]:{port}"),
            format!("2130706433:{port}"),
        ] {
            let (status, text) = connect(&p, bob, &authority).await;
            assert_eq!(status, 403, "{name}: CONNECT {authority}: {text}");
            assert_eq!(
                socks(
                    &p,
                    bob,
                    authority.rsplit_once(':').map_or("", |(h, _)| h),
                    port
                )
                .await,
                2,
                "{name}: SOCKS5 {authority}"
            );
        }
        // The admin API's snapshot and metrics stay out of reach.
        for path in ["/api/v1/snapshot", "/metrics"] {
            let (status, text) = absolute(&p, bob, &addr.to_string(), path).await;
            assert_eq!(status, 403, "{name}: GET {path}: {text}");
            assert!(!text.contains("version"), "{name}{path} leaked: {text}");
        }
    }
    let sample = "postern_proxy_errors_total{user=\"bob\",kind=\"denied_gateway\"}";
    assert!(p.metric(sample).await >= 24.0, "{sample}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_cidrs_from_flags_and_env_refuse_and_the_allow_punches_a_hole() {
    let files = [
        (
            "alice.yaml",
            user_yaml("alice", "pw", "direct://", None, LOOPBACK_ALLOWED),
        ),
        (
            "bob.yaml",
            user_yaml(
                "bob",
                "pw2",
                "direct://",
                None,
                "  allowInternalNetworks: [\"127.0.0.1\"]\n",
            ),
        ),
    ];
    let p = Postern::standalone_with("guard-cidrs", &files)
        .env("POSTERN_PROXY_DENY_CIDR", "203.0.113.0/24,198.51.100.0/24")
        .json_logs()
        .start()
        .await;
    for authority in [
        "203.0.113.7:443",
        "198.51.100.7:443",
        "[::ffff:203.0.113.9]:80",
    ] {
        let (status, text) = connect(&p, ("alice", "pw"), authority).await;
        assert_eq!(status, 403, "{authority}: {text}");
    }
    let sample = "postern_proxy_errors_total{user=\"alice\",kind=\"denied_network\"}";
    assert_eq!(p.metric(sample).await, 3.0);
    // The flag, repeated.
    let q = Postern::standalone_with("guard-cidr-flags", &files)
        .args([
            "--proxy-deny-cidr=192.0.2.0/24",
            "--proxy-deny-cidr",
            "2001:db8::/32",
        ])
        .start()
        .await;
    for authority in ["192.0.2.1:80", "[2001:db8::1]:80"] {
        let (status, text) = connect(&q, ("alice", "pw"), authority).await;
        assert_eq!(status, 403, "{authority}: {text}");
    }
    // bob may reach 127.0.0.1 only: 127.0.0.2 stays loopback to him.
    let target = http_target().await;
    let url = format!("http://127.0.0.1:{}/", target.port());
    let ok = curl(&["-x", &p.proxy_url("bob", "pw2"), &url]).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    let (status, text) = connect(&p, ("bob", "pw2"), &format!("127.0.0.2:{}", target.port())).await;
    assert_eq!(status, 403, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_an_upstream_proxy_names_are_judged_and_a_loop_is_refused() {
    let Some((_ms, ms_addr)) = microsocks(None, Some("127.0.0.8")).await else {
        return;
    };
    let upstream = format!("socks5://{ms_addr}");
    let files = [
        ("carol.yaml", user_yaml("carol", "pw3", &upstream, None, "")),
        (
            "dave.yaml",
            user_yaml("dave", "pw4", &upstream, None, LOOPBACK_ALLOWED),
        ),
    ];
    let p = Postern::standalone_with("guard-chained", &files)
        .json_logs()
        .start()
        .await;
    let target = http_target().await;
    let port = target.port();
    // The upstream runs beside us: its loopback is ours.
    for host in ["localhost", "app.localhost", "127.1", "[::ffff:127.0.0.1]"] {
        let (status, text) = connect(&p, ("carol", "pw3"), &format!("{host}:{port}")).await;
        assert_eq!(status, 403, "{host}: {text}");
        assert_eq!(socks(&p, ("carol", "pw3"), host, port).await, 2, "{host}");
    }
    let url = format!("http://localhost:{port}/");
    let through = curl(&["-x", &p.proxy_url("dave", "pw4"), &url]).await;
    assert_eq!(through.body, "hello from 127.0.0.8", "{through:?}");
    let admin = format!("localhost:{}", p.admin.port());
    let (status, text) = connect(&p, ("dave", "pw4"), &admin).await;
    assert_eq!(status, 403, "{admin} through the upstream: {text}");
    // An upstream that is this gateway's own proxy port would loop.
    p.write(
        "erin.yaml",
        &user_yaml("erin", "pw5", &format!("http://{}", p.proxy), None, ""),
    );
    let loop_url = "http://example.invalid/";
    let looped = postern_harness::wait_for("erin is served", PATIENCE, || async {
        let out = curl(&["-x", &p.proxy_url("erin", "pw5"), loop_url]).await;
        (out.status != 407).then_some(out)
    })
    .await;
    assert_eq!(looped.status, 403, "{looped:?}");
    let sample = "postern_proxy_errors_total{user=\"erin\",kind=\"denied_gateway\"}";
    assert!(p.metric(sample).await >= 1.0, "{sample}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_example_is_refused() {
    // README.md: `curl -x http://alice:change-me-alice@127.0.0.1:8090
    // http://127.0.0.1:9000/healthz`, on the example's listeners.
    let p = Postern::standalone(Manifests::example("guard-readme"))
        .start()
        .await;
    let out = curl(&[
        "-x",
        &format!("http://alice:change-me-alice@{}", p.proxy),
        &format!("http://{}/healthz", p.admin),
    ])
    .await;
    assert_eq!(out.status, 403, "{out:?}");
    assert_eq!(
        out.body,
        format!("destination {} is not allowed\n", p.admin),
        "{out:?}"
    );
}
