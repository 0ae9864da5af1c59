//! The push server against a hand-driven data plane over real TCP, plain
//! and with TLS.

use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use postern_api::{Backend, Object, ProxyTargetSpec};
use postern_compile::Inputs;
use postern_snapshot::sync::{
    MIN_PROTOCOL, PROTOCOL, ToDataplane, ToOperator, decode, encode, offered,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

use super::SyncServer;
use super::auth::Authenticator;
use crate::fleet::Fleet;
use crate::metrics::Metrics;
use crate::publish::Published;
use crate::sync_tls::SyncTls;
use crate::test_pki::{TestCa, scratch_dir};
use crate::token::SyncToken;

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

type Client = Framed<Box<dyn Io>, LengthDelimitedCodec>;

struct Harness {
    addr: std::net::SocketAddr,
    tx: watch::Sender<Option<Arc<Published>>>,
    fleet: Arc<Fleet>,
    shutdown: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn published(seq: u64, host: &str) -> Arc<Published> {
    let pt = Object::new(
        "team",
        "api",
        ProxyTargetSpec {
            hostnames: vec![host.into()],
            backend: Backend {
                url: Some("http://10.0.0.1:80".into()),
                service: None,
                ..Backend::default()
            },
            ..ProxyTargetSpec::default()
        },
    );
    let inputs = Inputs {
        proxy_targets: vec![pt.into()],
        ..Inputs::default()
    };
    Arc::new(Published::build(seq, &inputs).expect("build"))
}

async fn harness(first: Option<Arc<Published>>) -> Harness {
    harness_with(first, None).await
}

async fn harness_with(first: Option<Arc<Published>>, tls: Option<SyncTls>) -> Harness {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, latest) = watch::channel(first);
    let fleet = Arc::new(Fleet::default());
    let server = SyncServer {
        auth: Arc::new(Authenticator::token(
            SyncToken::new("right").expect("token"),
        )),
        operator_id: "op-test".into(),
        latest,
        fleet: fleet.clone(),
        metrics: Arc::new(Metrics::default()),
        tls: tls.map(Arc::new),
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(server.serve(listener, shutdown.clone()));
    Harness {
        addr,
        tx,
        fleet,
        shutdown,
    }
}

async fn connect(addr: std::net::SocketAddr, token: &str) -> Client {
    let stream = TcpStream::connect(addr).await.expect("connect");
    say_hello(Box::new(stream), token).await
}

async fn say_hello(stream: Box<dyn Io>, token: &str) -> Client {
    say_hello_speaking(stream, token, MIN_PROTOCOL, offered()).await
}

async fn say_hello_speaking(
    stream: Box<dyn Io>,
    token: &str,
    protocol: u32,
    protocols: Vec<u32>,
) -> Client {
    let mut client = Framed::new(stream, LengthDelimitedCodec::new());
    let hello = ToOperator::Hello {
        protocol,
        protocols,
        dataplane_id: "dp-1".into(),
        token: token.into(),
        schemas: vec![postern_snapshot::SCHEMA],
        current_version: None,
        capabilities: None,
    };
    client
        .send(bytes::Bytes::from(encode(&hello).expect("encode")))
        .await
        .expect("send hello");
    client
}

async fn recv(client: &mut Client) -> ToDataplane {
    loop {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(5), client.next())
            .await
            .expect("a message within 5s")
            .expect("connection open")
            .expect("frame");
        let msg: ToDataplane = decode(&frame).expect("decode");
        if !matches!(msg, ToDataplane::Ping) {
            return msg;
        }
    }
}

async fn reply(client: &mut Client, msg: &ToOperator) {
    client
        .send(bytes::Bytes::from(encode(msg).expect("encode")))
        .await
        .expect("send");
}

/// Polls the fleet until `check` holds (the server handles frames on its own task).
async fn until(fleet: &Fleet, check: impl Fn(&Fleet) -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while !check(fleet) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "fleet never reached the state"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_wrong_token_is_refused() {
    let h = harness(Some(published(1, "a.example.com"))).await;
    let mut client = connect(h.addr, "wrong").await;
    match recv(&mut client).await {
        ToDataplane::Refused { reason } => assert!(reason.contains("token"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(client.next().await.is_none(), "closed after the refusal");
    assert!(h.fleet.is_empty());
}

#[tokio::test]
async fn snapshots_flow_and_acks_and_nacks_are_tracked() {
    let first = published(1, "a.example.com");
    let h = harness(Some(first.clone())).await;
    let mut client = connect(h.addr, "right").await;
    assert!(
        matches!(recv(&mut client).await, ToDataplane::Welcome { operator_id, protocol } if operator_id == "op-test" && protocol == PROTOCOL)
    );
    let ToDataplane::Snapshot { version, .. } = recv(&mut client).await else {
        panic!("expected the current snapshot");
    };
    assert_eq!(version, first.version);
    reply(&mut client, &ToOperator::Ack { version }).await;
    until(&h.fleet, |f| {
        f.dataplanes()
            .first()
            .and_then(|dp| dp.acked.clone())
            .is_some_and(|p| p.version == first.version)
    })
    .await;

    let second = published(2, "b.example.com");
    h.tx.send_replace(Some(second.clone()));
    let ToDataplane::Snapshot { version, .. } = recv(&mut client).await else {
        panic!("expected the new snapshot");
    };
    assert_eq!(version, second.version);
    reply(
        &mut client,
        &ToOperator::Nack {
            version,
            reason: "bad cert".into(),
        },
    )
    .await;
    until(&h.fleet, |f| {
        f.dataplanes().first().is_some_and(|dp| {
            dp.nack.as_ref().is_some_and(|n| n.reason == "bad cert")
                && dp
                    .acked
                    .as_ref()
                    .is_some_and(|p| p.version == first.version)
        })
    })
    .await;

    reply(&mut client, &ToOperator::Ping).await;
    assert!(matches!(recv(&mut client).await, ToDataplane::Pong));
    drop(client);
    until(&h.fleet, |f| f.is_empty()).await;
}

#[tokio::test]
async fn the_session_speaks_the_newest_common_protocol() {
    let h = harness(Some(published(1, "a.example.com"))).await;
    let stream = TcpStream::connect(h.addr).await.expect("connect");
    // A data plane from before negotiation: protocol 1, no list.
    let mut old = say_hello_speaking(Box::new(stream), "right", 1, vec![]).await;
    assert!(matches!(
        recv(&mut old).await,
        ToDataplane::Welcome { protocol: 1, .. }
    ));
    let stream = TcpStream::connect(h.addr).await.expect("connect");
    let mut future = say_hello_speaking(Box::new(stream), "right", 1, vec![1, 2, 9]).await;
    assert!(matches!(
        recv(&mut future).await,
        ToDataplane::Welcome { protocol: 2, .. }
    ));
    let stream = TcpStream::connect(h.addr).await.expect("connect");
    let mut alien = say_hello_speaking(Box::new(stream), "right", 9, vec![9]).await;
    match recv(&mut alien).await {
        ToDataplane::Refused { reason } => {
            assert!(reason.contains("no common protocol"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_stranger_cannot_announce_a_large_frame() {
    let h = harness(Some(published(1, "a.example.com"))).await;
    let mut stream = TcpStream::connect(h.addr).await.expect("connect");
    // A length prefix of 200 MiB, then silence: the server must not wait
    // to buffer it, but drop the connection at once.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(&(200u32 * 1024 * 1024).to_be_bytes())
        .await
        .expect("write");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(super::HELLO_TIMEOUT / 2, stream.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(_)) | Ok(Err(_))),
        "the connection stayed open waiting for the frame"
    );
    assert!(h.fleet.is_empty());
}

#[tokio::test]
async fn a_connection_before_the_first_compile_waits_for_it() {
    let h = harness(None).await;
    let mut client = connect(h.addr, "right").await;
    assert!(matches!(
        recv(&mut client).await,
        ToDataplane::Welcome { .. }
    ));
    let first = published(1, "a.example.com");
    h.tx.send_replace(Some(first.clone()));
    assert!(
        matches!(recv(&mut client).await, ToDataplane::Snapshot { version, .. } if version == first.version)
    );
}

#[tokio::test]
async fn with_tls_snapshots_flow_only_to_clients_that_trust_the_ca() {
    let ca = TestCa::new("sync ca");
    let tls = SyncTls::load(ca.write_pair(&scratch_dir("sync-tls"))).expect("load");
    let first = published(1, "a.example.com");
    let h = harness_with(Some(first.clone()), Some(tls)).await;

    let tcp = TcpStream::connect(h.addr).await.expect("connect");
    let stream = ca.connect(tcp).await.expect("handshake");
    let mut client = say_hello(Box::new(stream), "right").await;
    assert!(matches!(
        recv(&mut client).await,
        ToDataplane::Welcome { .. }
    ));
    assert!(
        matches!(recv(&mut client).await, ToDataplane::Snapshot { version, .. } if version == first.version)
    );
    until(&h.fleet, |f| f.len() == 1).await;

    // The token still decides, inside TLS.
    let tcp = TcpStream::connect(h.addr).await.expect("connect");
    let stream = ca.connect(tcp).await.expect("handshake");
    let mut wrong = say_hello(Box::new(stream), "wrong").await;
    assert!(matches!(
        recv(&mut wrong).await,
        ToDataplane::Refused { .. }
    ));

    // A client that does not trust the certificate gives up in the handshake.
    let tcp = TcpStream::connect(h.addr).await.expect("connect");
    let stranger = TestCa::new("another ca");
    let refused = stranger.connect(tcp).await.expect_err("untrusted");
    assert!(refused.to_string().contains("certificate"), "{refused}");

    // Plain TCP gets not a single frame, even with the right token.
    let mut plain = connect(h.addr, "right").await;
    let next = tokio::time::timeout(std::time::Duration::from_secs(5), plain.next())
        .await
        .expect("closed within 5s");
    assert!(
        !matches!(next, Some(Ok(_))),
        "a plain client got a frame: {next:?}"
    );
    assert_eq!(h.fleet.len(), 1);
}
