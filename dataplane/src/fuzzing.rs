//! The fuzzing surface: one function per parser that reads the network or
//! a file, driving the production code from memory (an in-memory stream in
//! place of the socket). Used by `fuzz/` (cargo-fuzz) and by the
//! regression tests of crashes it found; nothing in the data plane calls it.
//!
//! Each function takes arbitrary bytes and must not panic. Where a parser
//! promises something checkable (a destination prints back to itself, a
//! compiled snapshot validates, a PROXY header parses the same however it
//! was split into reads), the function asserts it, so a broken promise is a
//! crash the fuzzer reports like any other.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{Request, Response, StatusCode, header};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use postern_snapshot::sync::{ToDataplane, ToOperator, decode, decode_snapshot, encode};
use postern_snapshot::{PasswordHash, Snapshot, Upstream};
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

use crate::forward::target::Target;
use crate::forward::{Forward, ForwardConfig, auth, inbound_http, inbound_socks};
use crate::net::{Caps, Connections};
use crate::reverse::proxy_protocol::{self, Announced};
use crate::reverse::tables::Live;
use crate::runtime::{Runtime, Source};
use crate::standalone::{ManifestFile, load};
use crate::sync::session;

mod oauth;
mod tunnel;
pub use oauth::oauth_inputs;
pub use tunnel::tunnel_hello;

/// The user every fuzzed handshake may authenticate as (`alice:secret`).
pub const USER: &str = "alice";
pub const PASSWORD: &str = "secret";

struct Fixture {
    rt: tokio::runtime::Runtime,
    fwd: Arc<Forward>,
}

/// Built once per process: a runtime and a proxy that knows [`USER`].
static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime");
    let unlimited = Caps {
        per_listener: 0,
        per_client: 0,
    };
    let fwd = Forward::new(
        ForwardConfig::default(),
        CancellationToken::new(),
        &Connections::new(0),
        unlimited,
        std::sync::Arc::new(crate::reqlog::RequestLog::off()),
    )
    .expect("the default proxy configuration");
    fwd.apply(&users());
    Fixture { rt, fwd }
});

/// Built from JSON so that fields added later, which snapshots default,
/// need no change here.
fn users() -> Snapshot {
    let user = serde_json::json!({
        "id": "default/alice",
        "user": USER,
        "password": PasswordHash::new("fuzz", PASSWORD.as_bytes()),
        "upstream": Upstream::Direct,
        "destinations": {
            "allow": ["*.example.com:443", "10.0.0.0/8", "[::1]:22"],
            "deny": ["10.9.0.0/16", "bad.example.com"],
        },
        "maxConnections": 4,
        "revision": "r1",
    });
    Snapshot {
        users: vec![serde_json::from_value(user).expect("a proxy user")],
        ..Snapshot::default()
    }
    .seal()
}

/// A destination prints as text that parses back to it: it is written into
/// requests to upstream proxies and into rules' matching.
fn assert_round_trip(target: &Target) {
    let text = target.to_string();
    let again = Target::parse(&text, None);
    assert_eq!(
        again.as_ref().ok(),
        Some(target),
        "{text:?} does not parse back"
    );
}

/// One client connection on the proxy port: hyper's HTTP/1 server with the
/// proxy's limits, then the destination, credentials and admission.
pub fn connect_head(input: &[u8]) {
    let fx = &*FIXTURE;
    let service = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| {
        let status = proxy_request(&fx.fwd, &req);
        let mut resp = Response::new(Empty::<Bytes>::new());
        *resp.status_mut() = status;
        async move { Ok::<_, Infallible>(resp) }
    });
    // Owned: a connection with upgrades outlives any borrow.
    let owned = std::io::Cursor::new(input.to_vec());
    let io = TokioIo::new(tokio::io::join(owned, tokio::io::sink()));
    let conn = inbound_http::http1(&ForwardConfig::default())
        .serve_connection(io, service)
        .with_upgrades();
    let _ = fx.rt.block_on(conn);
}

fn proxy_request<B>(fwd: &Forward, req: &Request<B>) -> StatusCode {
    let target = match inbound_http::request_target(req) {
        Ok(t) => t,
        Err(e) => return e.status(),
    };
    assert_round_trip(&target);
    let value = req.headers().get(header::PROXY_AUTHORIZATION);
    let admitted = auth::parse_basic(value.map(|v| v.as_bytes()))
        .and_then(|p| fwd.authenticate(&p).map(|user| (p, user)))
        .and_then(|(p, user)| fwd.admit(user, &p, &target));
    admitted.map_or_else(|e| e.status(), |_| StatusCode::OK)
}

/// One SOCKS5 client: greeting, RFC 1929 credentials and the request, then
/// admission of the destination it named.
pub fn socks5(input: &[u8]) {
    let fx = &*FIXTURE;
    let mut io = tokio::io::join(input, tokio::io::sink());
    let Ok((presented, user, target)) = fx.rt.block_on(inbound_socks::handshake(&fx.fwd, &mut io))
    else {
        return;
    };
    assert_round_trip(&target);
    let _ = fx.fwd.admit(user, &presented, &target);
}

/// A PROXY protocol v1/v2 header from a trusted peer. The first byte sets
/// how many bytes each read returns (1..=255); the result must be the one
/// a single large read gives, since TCP may split the header anywhere.
pub fn proxy_protocol(input: &[u8]) {
    let Some((&chunk, data)) = input.split_first() else {
        return;
    };
    let split = read_proxy_header(data, usize::from(chunk).max(1));
    let whole = read_proxy_header(data, data.len().max(1));
    assert_eq!(
        split.as_ref().ok(),
        whole.as_ref().ok(),
        "reads of {chunk} bytes and one read disagree"
    );
    if let Ok((_, tail)) = &whole {
        assert!(data.ends_with(tail), "the bytes after the header changed");
    }
}

/// The header's announcement and every byte after it (read past or not).
fn read_proxy_header(data: &[u8], chunk: usize) -> Result<(Announced, Vec<u8>), String> {
    let mut reader = Chunked { data, chunk };
    let (announced, mut tail) = FIXTURE
        .rt
        .block_on(proxy_protocol::read_header(&mut reader))
        .map_err(|e| e.to_string())?;
    tail.extend_from_slice(reader.data);
    Ok((announced, tail))
}

/// A reader returning at most `chunk` bytes per read.
struct Chunked<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self.chunk.min(self.data.len()).min(buf.remaining());
        let (now, rest) = self.data.split_at(n);
        buf.put_slice(now);
        self.data = rest;
        Poll::Ready(Ok(()))
    }
}

/// The sync stream as a data plane reads it: frames, each message applied
/// as the session would; a snapshot is also resealed (a real operator
/// seals what it sends) so that its content reaches the feature tables.
/// Every frame is also read as the operator reads its peer's messages.
pub fn sync_frames(input: &[u8]) {
    let runtime = Runtime::new(Source::Operator);
    let mut codec = session::codec();
    let mut buf = BytesMut::from(input);
    while let Ok(Some(frame)) = codec.decode(&mut buf) {
        operator_reads(&frame);
        if let Ok(ToDataplane::Snapshot {
            schema,
            version,
            body,
        }) = session::read(Some(Ok(frame)))
        {
            let _ = session::apply_frame(&runtime, schema, version, &body);
            if let Ok(snapshot) = decode_snapshot(schema, &body) {
                apply_everywhere(&snapshot.seal());
            }
        }
    }
}

fn operator_reads(frame: &[u8]) {
    if let Ok(msg) = decode::<ToOperator>(frame) {
        let bytes = encode(&msg).expect("a decoded message encodes");
        let again: ToOperator = decode(&bytes).expect("an encoded message decodes");
        assert_eq!(again, msg, "a message changed through encode/decode");
    }
}

/// What the features build from a valid snapshot: the proxy's user table
/// and the reverse proxy's router and certificate store.
fn apply_everywhere(snapshot: &Snapshot) {
    if snapshot.validate().is_err() {
        return;
    }
    let _ = crate::forward::table::Table::build(snapshot);
    Live::new(None).rebuild(snapshot);
}

/// One manifest file as standalone mode reads it. Whatever compile accepts
/// must validate (the data plane refuses a snapshot that does not), compile
/// the same twice, and build into the feature tables.
pub fn manifests(input: &[u8]) {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let files = [ManifestFile {
        name: "fuzz.yaml".into(),
        text: text.into(),
    }];
    let Ok(output) = load::compile(&files, load::Limits::NONE) else {
        return;
    };
    let snapshot = output.snapshot;
    if let Err(e) = snapshot.validate() {
        panic!("compile produced a snapshot that does not validate: {e}");
    }
    let again = load::compile(&files, load::Limits::NONE).map(|o| o.snapshot.version);
    assert_eq!(
        again.ok().as_ref(),
        Some(&snapshot.version),
        "not deterministic"
    );
    apply_everywhere(&snapshot);
}

/// A request path through [`normalise`](crate::net::path::normalise): the
/// canonical form is a fixed point, absolute, free of empty and dot
/// segments, and decodes to no separator.
pub fn path(input: &[u8]) {
    let Ok(raw) = std::str::from_utf8(input) else {
        return;
    };
    let Ok(once) = crate::net::path::normalise(raw) else {
        return;
    };
    assert_canonical(&once);
    let twice = crate::net::path::normalise(&once);
    assert_eq!(
        twice.as_deref(),
        Ok(&*once),
        "normalising {raw:?} twice differs"
    );
}

/// What every accepted path looks like after normalising.
pub fn assert_canonical(path: &str) {
    if path == "*" {
        return;
    }
    assert!(path.starts_with('/'), "{path:?} is not absolute");
    for bad in ["//", "/./", "/../", "\\", "\0"] {
        assert!(!path.contains(bad), "{path:?} contains {bad:?}");
    }
    assert!(
        !path.ends_with("/.") && !path.ends_with("/.."),
        "{path:?} ends in a dot segment"
    );
    let upper = path.to_ascii_uppercase();
    assert!(
        !upper.contains("%2F") && !upper.contains("%5C"),
        "{path:?} hides a separator"
    );
}

/// Destinations as clients name them, and Host headers.
pub fn authority(input: &[u8]) {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    if let Ok(target) = Target::parse(text, Some(80)) {
        assert_round_trip(&target);
    }
    if let Some(host) = crate::reverse::router::normalise_host(text) {
        assert_eq!(host, host.to_ascii_lowercase(), "{text:?}");
        assert!(!host.is_empty() && !host.ends_with('.'), "{text:?}");
    }
}

#[cfg(test)]
mod tests;
