//! `postern dataplane` against a tiny in-test operator speaking the sync
//! protocol: hello and token, acks, nacks, reconnection and refusal.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use postern_harness::{PATIENCE, Postern, eventually, metric_value, tmp_dir, wait_for};
use postern_snapshot::sync::{self, ToDataplane, ToOperator};
use postern_snapshot::{Site, Snapshot};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

const TOKEN: &str = "s3cret-sync-token";
/// Three attempts with jittered delays of at most 100, 200 and 400 ms take
/// well under this even on a loaded machine; a fixed retry period would not.
const BACKOFF_BOUND: Duration = Duration::from_secs(10);

/// A sealed snapshot with one site per hostname.
fn snapshot(hosts: &[&str]) -> Snapshot {
    let sites = hosts
        .iter()
        .map(|h| Site::new(format!("default/{h}"), &[h], "http://127.0.0.1:1"))
        .collect();
    Snapshot {
        sites,
        ..Snapshot::default()
    }
    .seal()
}

/// The operator's side of one connection.
struct Session(Framed<TcpStream, LengthDelimitedCodec>);

impl Session {
    async fn accept(listener: &TcpListener) -> Session {
        let (stream, _) = tokio::time::timeout(PATIENCE, listener.accept())
            .await
            .expect("the data plane connects in time")
            .expect("accept");
        let codec = LengthDelimitedCodec::builder()
            .max_frame_length(sync::MAX_FRAME)
            .new_codec();
        Session(Framed::new(stream, codec))
    }

    async fn send(&mut self, msg: &ToDataplane) {
        let bytes = sync::encode(msg).expect("encode");
        self.0.send(Bytes::from(bytes)).await.expect("send");
    }

    async fn send_snapshot(&mut self, snap: &Snapshot) {
        let msg = ToDataplane::snapshot(snap, snap.to_json().expect("json")).expect("frame");
        self.send(&msg).await;
    }

    /// The next message that is not a ping (pings are answered).
    async fn recv(&mut self) -> ToOperator {
        loop {
            match self.recv_with_agents().await {
                // Tunnel agent reports: not what these tests are about.
                ToOperator::Agents { .. } => {}
                msg => return msg,
            }
        }
    }

    /// The next message that is not a ping, agent reports included.
    async fn recv_with_agents(&mut self) -> ToOperator {
        loop {
            let frame = tokio::time::timeout(PATIENCE, self.0.next())
                .await
                .expect("a message in time")
                .expect("connection open")
                .expect("frame");
            match sync::decode(&frame).expect("decodable") {
                ToOperator::Ping => self.send(&ToDataplane::Pong).await,
                msg => return msg,
            }
        }
    }

    /// Reads the hello: (dataplane id, token, current version).
    async fn hello(&mut self) -> (String, String, Option<String>) {
        match self.recv().await {
            ToOperator::Hello {
                protocol,
                protocols,
                dataplane_id,
                token,
                schemas,
                current_version,
                capabilities,
            } => {
                // The oldest first, for operators from before negotiation.
                assert_eq!(protocol, sync::MIN_PROTOCOL);
                assert!(protocols.contains(&sync::PROTOCOL), "{protocols:?}");
                assert!(schemas.contains(&postern_snapshot::SCHEMA));
                // Every kind: all features run in every data plane.
                let capabilities = capabilities.unwrap_or_default();
                for kind in sync::CAPABILITIES {
                    assert!(capabilities.iter().any(|c| c == kind), "{capabilities:?}");
                }
                (dataplane_id, token, current_version)
            }
            other => panic!("expected hello, got {other:?}"),
        }
    }

    async fn welcome(listener: &TcpListener) -> Session {
        Session::welcome_speaking(listener, sync::PROTOCOL).await
    }

    async fn welcome_speaking(listener: &TcpListener, protocol: u32) -> Session {
        let mut s = Session::accept(listener).await;
        let (_, token, _) = s.hello().await;
        assert_eq!(token, TOKEN);
        s.send(&ToDataplane::Welcome {
            operator_id: "test-operator".into(),
            protocol,
        })
        .await;
        s
    }

    async fn expect_ack(&mut self, version: &str) {
        match self.recv().await {
            ToOperator::Ack { version: v } => assert_eq!(v, version),
            other => panic!("expected ack of {version}, got {other:?}"),
        }
    }
}

async fn start_dataplane(operator: SocketAddr, extra: &[&str], envs: &[(&str, &str)]) -> Postern {
    let dataplane = Postern::dataplane(operator).args(extra);
    let dataplane = envs.iter().fold(dataplane, |d, (k, v)| d.env(k, v));
    dataplane.start().await
}

fn version_is(want: &str) -> impl Fn(&serde_json::Value) -> Option<()> + '_ {
    move |v| (v["version"] == want).then_some(())
}

#[tokio::test]
async fn hello_carries_the_token_and_a_snapshot_is_acked() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let token_file = tmp_dir("token").join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("write token");
    let tf = token_file.to_str().expect("utf-8");
    let extra = ["--sync-token-file", tf, "--dataplane-id", "dp-test"];
    let p = start_dataplane(listener.local_addr().expect("addr"), &extra, &[]).await;

    let mut s = Session::accept(&listener).await;
    let (id, token, current) = s.hello().await;
    assert_eq!(
        (id.as_str(), token.as_str(), current),
        ("dp-test", TOKEN, None)
    );
    assert_eq!(p.get("/readyz").await.0, 503, "not ready before a snapshot");
    s.send(&ToDataplane::Welcome {
        operator_id: "test-operator".into(),
        protocol: sync::PROTOCOL,
    })
    .await;

    let snap = snapshot(&["a.example.com"]);
    s.send_snapshot(&snap).await;
    s.expect_ack(&snap.version).await;
    let view = p.snapshot().await;
    assert_eq!(view["version"], snap.version.as_str());
    assert_eq!(view["source"], "operator");
    assert_eq!(view["summary"]["hostnames"], 1);
    assert_eq!(p.get("/readyz").await.0, 200);
    let (_, metrics) = p.get("/metrics").await;
    assert!(metrics.contains("postern_sync_connected 1"), "{metrics}");
    assert!(!p.log().contains(TOKEN), "the token is never logged");
}

/// Agent reports come only in a session whose protocol has them: an
/// operator from before them would drop the connection on the message.
#[tokio::test]
async fn agent_reports_only_under_a_protocol_that_has_them() {
    for (protocol, reports) in [(sync::AGENTS_PROTOCOL, true), (1, false)] {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let _p = start_dataplane(
            listener.local_addr().expect("addr"),
            &[],
            &[("POSTERN_SYNC_TOKEN", TOKEN)],
        )
        .await;
        let mut s = Session::welcome_speaking(&listener, protocol).await;
        let snap = snapshot(&["a.example.com"]);
        s.send_snapshot(&snap).await;
        // The report, when there is one, is sent before anything is read.
        let mut seen = false;
        loop {
            match s.recv_with_agents().await {
                ToOperator::Agents { .. } => seen = true,
                ToOperator::Ack { version } if version == snap.version => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(seen, reports, "protocol {protocol}");
    }
}

#[tokio::test]
async fn a_bad_snapshot_is_nacked_and_the_last_good_one_serves() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let p = start_dataplane(
        listener.local_addr().expect("addr"),
        &[],
        &[("POSTERN_SYNC_TOKEN", TOKEN)],
    )
    .await;
    let mut s = Session::welcome(&listener).await;
    let good = snapshot(&["a.example.com"]);
    s.send_snapshot(&good).await;
    s.expect_ack(&good.version).await;

    let mut bad = snapshot(&["b.example.com"]);
    bad.version = "0123456789abcdef0123456789abcdef".into();
    s.send_snapshot(&bad).await;
    match s.recv().await {
        ToOperator::Nack { version, reason } => {
            assert_eq!(version, bad.version);
            assert!(
                reason.contains("does not match the content hash"),
                "{reason}"
            );
        }
        other => panic!("expected a nack, got {other:?}"),
    }
    let view = p.snapshot().await;
    assert_eq!(
        view["version"],
        good.version.as_str(),
        "the last good snapshot serves"
    );
    assert_eq!(view["lastError"]["version"], bad.version.as_str());
    assert_eq!(p.get("/readyz").await.0, 200);
    let (_, metrics) = p.get("/metrics").await;
    assert!(
        metrics.contains("postern_snapshot_nacks_total 1"),
        "{metrics}"
    );

    let next = snapshot(&["a.example.com", "c.example.com"]);
    s.send_snapshot(&next).await;
    s.expect_ack(&next.version).await;
    let view = p.snapshot().await;
    assert_eq!(view["version"], next.version.as_str());
    assert!(view["lastError"].is_null(), "{view}");
}

#[tokio::test]
async fn after_an_operator_restart_it_reconnects_and_acks_again() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let p = start_dataplane(addr, &[], &[("POSTERN_SYNC_TOKEN", TOKEN)]).await;
    let mut s = Session::welcome(&listener).await;
    let first = snapshot(&["a.example.com"]);
    s.send_snapshot(&first).await;
    s.expect_ack(&first.version).await;

    // The operator goes away: the data plane keeps serving.
    drop(s);
    drop(listener);
    wait_metrics(&p, "postern_sync_connected 0").await;
    assert_eq!(p.snapshot().await["version"], first.version.as_str());
    assert_eq!(p.get("/readyz").await.0, 200);

    // It comes back on the same address.
    let listener = TcpListener::bind(addr).await.expect("rebind");
    let mut s = Session::accept(&listener).await;
    let (_, token, current) = s.hello().await;
    assert_eq!(token, TOKEN);
    assert_eq!(
        current.as_deref(),
        Some(first.version.as_str()),
        "hello says what it serves"
    );
    s.send(&ToDataplane::Welcome {
        operator_id: "test-operator".into(),
        protocol: sync::PROTOCOL,
    })
    .await;
    let second = snapshot(&["b.example.com"]);
    s.send_snapshot(&second).await;
    s.expect_ack(&second.version).await;
    p.snapshot_until("the new version", PATIENCE, version_is(&second.version))
        .await;
    let (_, metrics) = p.get("/metrics").await;
    let reconnects = metric_value(&metrics, "postern_sync_reconnects_total");
    assert!(reconnects.is_some_and(|n| n >= 1.0), "{metrics}");
}

#[tokio::test]
async fn a_wrong_token_is_refused_and_retried_with_backoff() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let envs = [("POSTERN_SYNC_TOKEN", "wrong-token")];
    let p = start_dataplane(listener.local_addr().expect("addr"), &[], &envs).await;
    let started = Instant::now();
    for _ in 0..3 {
        let mut s = Session::accept(&listener).await;
        let (_, token, _) = s.hello().await;
        assert_eq!(token, "wrong-token");
        s.send(&ToDataplane::Refused {
            reason: "bad sync token".into(),
        })
        .await;
    }
    // Three attempts, each after a jittered delay of at most 100, 200, 400 ms.
    assert!(started.elapsed() < BACKOFF_BOUND);
    let log = wait_for("the refusal in the log", PATIENCE, || {
        let log = p.log();
        async move { (log.matches("refused this data plane").count() >= 2).then_some(log) }
    })
    .await;
    assert!(log.contains("bad sync token"), "{log}");
    assert!(log.contains("reconnecting"), "{log}");
    assert!(!log.contains("wrong-token"), "the token is never logged");
    assert_eq!(p.get("/readyz").await.0, 503);
}

async fn wait_metrics(p: &Postern, needle: &str) {
    eventually(needle, PATIENCE, || async {
        let (_, body) = p.get("/metrics").await;
        if body.contains(needle) {
            Ok(())
        } else {
            Err(body)
        }
    })
    .await;
}
