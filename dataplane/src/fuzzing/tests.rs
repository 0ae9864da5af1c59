//! Every checked-in seed runs clean through its fuzzing function, and each
//! crash the fuzzers found stays fixed. `write_seeds` (ignored) regenerates
//! the seeds that come from the real encoders.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use postern_snapshot::ProxyProtocol;
use postern_snapshot::sync::{PROTOCOL, ToDataplane, ToOperator, encode};

use super::*;

/// A fuzz target's function.
type Run = fn(&[u8]);

/// The fuzz targets' functions, by corpus folder.
const TARGETS: &[(&str, Run)] = &[
    ("connect_head", connect_head),
    ("socks5", socks5),
    ("proxy_protocol", proxy_protocol),
    ("sync_frame", sync_frames),
    ("manifests", manifests),
    ("path_normalise", path),
    ("authority", authority),
    ("tunnel_hello", tunnel_hello),
    ("oauth_inputs", oauth_inputs),
];

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
}

#[test]
fn every_seed_runs_clean() {
    for (target, run) in TARGETS {
        let dir = corpus().join(target);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}"));
        let mut count = 0;
        for entry in entries {
            let path = entry.expect("a corpus entry").path();
            run(&std::fs::read(&path).expect("a seed"));
            count += 1;
        }
        assert!(count > 0, "no seeds for {target}");
    }
}

/// The harness reaches past parsing: the seeds' verdicts are the proxy's.
#[test]
fn the_request_harness_judges_like_the_proxy() {
    let fwd = &FIXTURE.fwd;
    let req = |target: &str, auth: Option<&str>| {
        let mut b = Request::builder().method("CONNECT").uri(target);
        if let Some(a) = auth {
            b = b.header(header::PROXY_AUTHORIZATION, a);
        }
        proxy_request(fwd, &b.body(()).expect("a request"))
    };
    assert_eq!(req("www.example.com:443", Some(ALICE)), StatusCode::OK);
    assert_eq!(
        req("www.example.com:443", None),
        StatusCode::PROXY_AUTHENTICATION_REQUIRED
    );
    assert_eq!(req("10.9.0.1:80", Some(ALICE)), StatusCode::FORBIDDEN);
}

/// Regenerates the seeds that are made by the real encoders:
/// `cargo test -p postern --lib fuzzing::tests::write_seeds -- --ignored`.
#[test]
#[ignore = "writes fuzz/corpus; run by hand when the formats change"]
fn write_seeds() {
    for (target, name, bytes) in seeds() {
        let dir = corpus().join(target);
        std::fs::create_dir_all(&dir).expect("corpus folder");
        std::fs::write(dir.join(name), bytes).expect("seed written");
    }
}

fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut add = |target, name: &str, bytes: Vec<u8>| out.push((target, name.to_string(), bytes));
    for (name, head) in connect_heads() {
        add("connect_head", name, head.into_bytes());
    }
    for (name, bytes) in socks_sessions() {
        add("socks5", name, bytes);
    }
    for (name, bytes) in proxy_headers() {
        add("proxy_protocol", name, bytes);
    }
    for (name, bytes) in sync_streams() {
        add("sync_frame", name, bytes);
    }
    for (name, text) in example_manifests() {
        add("manifests", &name, text.into_bytes());
    }
    for (i, p) in PATHS.iter().enumerate() {
        add(
            "path_normalise",
            &format!("path-{i:02}"),
            p.as_bytes().to_vec(),
        );
    }
    for (i, a) in AUTHORITIES.iter().enumerate() {
        add(
            "authority",
            &format!("authority-{i:02}"),
            a.as_bytes().to_vec(),
        );
    }
    for (name, bytes) in tunnel_openings() {
        add("tunnel_hello", name, bytes);
    }
    out
}

/// What reaches the tunnel's ports first: hellos (one with a token the
/// fuzzing key signed, valid for ten years), a peer's magic, WebSocket frames.
fn tunnel_openings() -> Vec<(&'static str, Vec<u8>)> {
    use crate::tunnel::protocol::{Hello, VERSION};
    let frame = |hello: &Hello| {
        let body = serde_json::to_vec(hello).expect("json");
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend(body);
        out
    };
    let token = crate::tunnel::keys::token(
        &["default/app".into()],
        b"fuzzing-hs256-secret-0123456789",
        std::time::Duration::from_secs(3650 * 86400),
    )
    .expect("a token");
    let hello = |token: &str, tunnels: &[&str]| Hello {
        protocol: VERSION,
        agent_version: "0.1.0".into(),
        token: token.into(),
        tunnels: tunnels.iter().map(|t| t.to_string()).collect(),
    };
    // A masked binary WebSocket frame, as a client sends.
    let ws = |payload: &[u8]| {
        let mask = [0x12u8, 0x34, 0x56, 0x78];
        let mut out = vec![0x82, 0x80 | payload.len() as u8];
        out.extend(mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    };
    let signed = frame(&hello(&token, &["default/app"]));
    vec![
        ("hello-signed", signed.clone()),
        ("hello-all-of-token", frame(&hello(&token, &[]))),
        (
            "hello-junk-token",
            frame(&hello("a.b.c", &["ns/x", "ns/y"])),
        ),
        ("hello-version-9", {
            let mut h = hello("t", &[]);
            h.protocol = 9;
            frame(&h)
        }),
        (
            "peer-magic",
            b"PSTPEER1".iter().copied().chain([7u8; 64]).collect(),
        ),
        ("ws-hello", ws(&signed[..100.min(signed.len())])),
        (
            "ws-ping-close",
            [vec![0x89, 0x80, 1, 2, 3, 4], vec![0x88, 0x80, 1, 2, 3, 4]].concat(),
        ),
    ]
}

/// `Basic base64(alice:secret)`.
const ALICE: &str = "Basic YWxpY2U6c2VjcmV0";

fn connect_heads() -> Vec<(&'static str, String)> {
    vec![
        (
            "connect-allowed",
            format!(
                "CONNECT www.example.com:443 HTTP/1.1\r\nHost: www.example.com:443\r\nProxy-Authorization: {ALICE}\r\n\r\n"
            ),
        ),
        (
            "connect-no-auth",
            "CONNECT www.example.com:443 HTTP/1.1\r\nHost: www.example.com:443\r\n\r\n".into(),
        ),
        (
            "connect-denied-cidr",
            format!("CONNECT 10.9.1.1:80 HTTP/1.1\r\nProxy-Authorization: {ALICE}\r\n\r\n"),
        ),
        (
            "connect-v6",
            format!(
                "CONNECT [::1]:22 HTTP/1.1\r\nHost: [::1]:22\r\nProxy-Authorization: {ALICE}\r\n\r\n"
            ),
        ),
        (
            "absolute-get-keepalive",
            format!(
                "GET http://api.example.com/x?y=1 HTTP/1.1\r\nHost: api.example.com\r\nProxy-Authorization: {ALICE}\r\n\r\nGET http://10.1.2.3:8080/ HTTP/1.1\r\nHost: 10.1.2.3\r\nProxy-Authorization: basic   YWxpY2U6c2VjcmV0  \r\nContent-Length: 3\r\n\r\nabc"
            ),
        ),
        (
            "https-absolute",
            "GET https://www.example.com/ HTTP/1.1\r\nHost: www.example.com\r\n\r\n".into(),
        ),
        (
            "origin-form",
            "GET / HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Bearer abc\r\n\r\n".into(),
        ),
    ]
}

fn socks_sessions() -> Vec<(&'static str, Vec<u8>)> {
    let greeting = [5u8, 2, 0, 2];
    let creds = {
        let mut c = vec![1, USER.len() as u8];
        c.extend_from_slice(USER.as_bytes());
        c.push(PASSWORD.len() as u8);
        c.extend_from_slice(PASSWORD.as_bytes());
        c
    };
    let session = |request: &[u8]| [&greeting[..], &creds, request].concat();
    let mut name = vec![5, 1, 0, 3, 15];
    name.extend_from_slice(b"www.example.com");
    name.extend_from_slice(&443u16.to_be_bytes());
    let ipv4 = [5, 1, 0, 1, 10, 1, 2, 3, 0, 80];
    let mut ipv6 = vec![5, 1, 0, 4];
    ipv6.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    ipv6.extend_from_slice(&22u16.to_be_bytes());
    let bind = [5, 2, 0, 1, 10, 1, 2, 3, 0, 80];
    let mut wrong = vec![5, 1, 2, 1, 5];
    wrong.extend_from_slice(b"alice\x05wrong");
    vec![
        ("name", session(&name)),
        ("ipv4", session(&ipv4)),
        ("ipv6", session(&ipv6)),
        ("bind-refused", session(&bind)),
        ("no-password-method", vec![5, 1, 0]),
        ("wrong-password", wrong),
    ]
}

fn proxy_headers() -> Vec<(&'static str, Vec<u8>)> {
    let addr = |s: &str| s.parse::<SocketAddr>().expect("an address");
    let (c4, s4) = (addr("192.0.2.7:5555"), addr("10.0.0.1:443"));
    let (c6, s6) = (addr("[2001:db8::7]:5555"), addr("[2001:db8::1]:443"));
    let body = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let with = |chunk: u8, header: Vec<u8>| [&[chunk][..], &header, body].concat();
    vec![
        (
            "v1-tcp4",
            with(7, proxy_protocol::outbound(ProxyProtocol::V1, c4, s4)),
        ),
        (
            "v1-tcp6",
            with(255, proxy_protocol::outbound(ProxyProtocol::V1, c6, s6)),
        ),
        ("v1-unknown", with(3, b"PROXY UNKNOWN\r\n".to_vec())),
        (
            "v2-tcp4",
            with(5, proxy_protocol::outbound(ProxyProtocol::V2, c4, s4)),
        ),
        (
            "v2-tcp6",
            with(1, proxy_protocol::outbound(ProxyProtocol::V2, c6, s6)),
        ),
        ("v2-local", with(16, v2_local_with_tlv())),
        ("plain-http", with(200, Vec::new())),
    ]
}

/// A v2 LOCAL header (a health check) carrying one TLV.
fn v2_local_with_tlv() -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x20); // version 2, LOCAL
    h.push(0x11); // TCP over IPv4
    let addresses = [192, 0, 2, 7, 10, 0, 0, 1, 0x15, 0xb3, 0x01, 0xbb];
    let tlv = [0x04, 0x00, 0x03, b'a', b'b', b'c']; // PP2_TYPE_NOOP
    h.extend_from_slice(&((addresses.len() + tlv.len()) as u16).to_be_bytes());
    h.extend_from_slice(&addresses);
    h.extend_from_slice(&tlv);
    h
}

fn frame(bytes: Vec<u8>) -> Vec<u8> {
    let len = u32::try_from(bytes.len()).expect("a small frame");
    [&len.to_be_bytes()[..], &bytes].concat()
}

fn sync_streams() -> Vec<(&'static str, Vec<u8>)> {
    let files: Vec<ManifestFile> = example_manifests()
        .into_iter()
        .map(|(name, text)| ManifestFile { name, text })
        .collect();
    let snapshot = load::compile(&files, load::Limits::NONE)
        .expect("the examples compile")
        .snapshot;
    let json = snapshot.to_json().expect("json");
    let snap = ToDataplane::snapshot(&snapshot, json).expect("a snapshot frame");
    let welcome = ToDataplane::Welcome {
        operator_id: "operator-0".into(),
        protocol: PROTOCOL,
    };
    let to_dp = |m: &ToDataplane| frame(encode(m).expect("encode"));
    let to_op = |m: &ToOperator| frame(encode(m).expect("encode"));
    let hello = ToOperator::Hello {
        protocol: PROTOCOL,
        protocols: vec![PROTOCOL],
        dataplane_id: "dp-1".into(),
        token: "t".into(),
        schemas: vec![postern_snapshot::SCHEMA],
        current_version: Some(snapshot.version.clone()),
        capabilities: None,
    };
    let ack = ToOperator::Nack {
        version: snapshot.version.clone(),
        reason: "no".into(),
    };
    vec![
        (
            "session",
            [to_dp(&welcome), to_dp(&snap), to_dp(&ToDataplane::Ping)].concat(),
        ),
        ("users-snapshot", users_frame()),
        (
            "operator-reads",
            [to_op(&hello), to_op(&ack), to_op(&ToOperator::Ping)].concat(),
        ),
        (
            "refused",
            to_dp(&ToDataplane::Refused {
                reason: "bad token".into(),
            }),
        ),
    ]
}

fn users_frame() -> Vec<u8> {
    let snapshot = users();
    let json = snapshot.to_json().expect("json");
    frame(encode(&ToDataplane::snapshot(&snapshot, json).expect("frame")).expect("encode"))
}

/// `examples/standalone`, file by file and all together.
fn example_manifests() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/standalone");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("examples/standalone")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| {
            let name = p
                .file_name()
                .expect("a name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read_to_string(&p).expect("a manifest"))
        })
        .collect();
    files.sort();
    let all = files
        .iter()
        .map(|(_, t)| t.as_str())
        .collect::<Vec<_>>()
        .join("\n---\n");
    files.push(("all.yaml".into(), all));
    files
}

const PATHS: &[&str] = &[
    "/",
    "/admin/",
    "/x/../admin/",
    "//admin//./",
    "/%61dmin/%7euser",
    "/a%20b/%c3%a9",
    "/x/.%2E/y",
    "/a%2fb",
    "/a%zz",
    "*",
    "/caf\u{e9}/%20",
];

const AUTHORITIES: &[&str] = &[
    "www.example.com:443",
    "[::1]:22",
    "10.0.0.1",
    "API.Example.com.:8443",
    "user@host:1",
    "http://bob:p%40ss@Proxy.local:1080",
    "socks5://[2001:db8::1]:70000",
    "https://backend",
];
