//! Faults survived, on the rig: a real operator and real data plane
//! processes, each fault made real (SIGKILL, a stopped Redis, a sync
//! connection cut inside a snapshot frame) and the eventual state asserted,
//! never a deadline. The API server restart lives in `faults_apiserver.rs`.
//!
//! Where a data plane must reach "the operator" across a restart or a cut,
//! it connects through a [`Relay`]: the Service in front of the operator.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use postern_api::ConditionStatus;
use postern_harness::{Backend, Launch, Proc, binary, curl, free_addr, peer, wait_port};
use postern_tests::relay::Relay;
use postern_tests::resources::{apply_secret, observe, patch_spec};
use postern_tests::serving::{get, keeps_serving, routed, site};
use postern_tests::spine::{Spine, WAIT};
use postern_tests::{Postern, Rig, dataplane, eventually, operator, rig_or_skip};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A replacement operator must first see the dead one's lease expire (15 s).
const TAKEOVER: Duration = Duration::from_secs(90);
/// Long enough for a data plane to notice a lost connection and retry.
const WATCH: Duration = Duration::from_secs(4);
const HOST: &str = "web.faults.test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_operator_leaves_the_site_served_and_a_new_one_catches_up() {
    let (mut spine, relay, _v1, v2) = site_through_a_relay(rig_or_skip!(), "fault-op").await;
    let dp = spine.dataplane();
    let first = dp.version().await.expect("a version");

    spine.operator.kill();
    let dp = spine.dataplane();
    // Changed while no operator runs.
    let moved = json!({"backend": {"url": v2.url()}});
    patch_spec(&spine.client, spine.ns(), "ProxyTarget", "web", moved).await;
    eventually("the data plane to notice", WAIT, || async {
        match dp.metric("postern_sync_connected").await {
            0.0 => Ok(()),
            other => Err(other),
        }
    })
    .await;
    let answered = keeps_serving(dp, HOST, "v1 /", &first, WATCH).await;
    assert!(answered > 1, "{answered}");

    let id = "fault-op-op-2";
    spine.operator = operator(&spine.rig, spine.ns(), id, &spine.token)
        .start()
        .await;
    relay.set_upstream(spine.operator.sync);
    let dp = spine.dataplane();
    routed(dp.http, HOST, "/", "v2 /", WAIT).await;
    let second = dp.version().await.expect("a version");
    assert_ne!(second, first);
    assert!(dp.metric("postern_sync_reconnects_total").await >= 1.0);
    assert_eq!(dp.metric("postern_snapshot_nacks_total").await, 0.0);

    let observed = spine.programmed("ProxyTarget", "web", 2, TAKEOVER).await;
    let programmed = observed.condition("Programmed").expect("Programmed");
    assert!(
        programmed.message.contains("by 1 data plane"),
        "{observed:?}"
    );
    let view = spine.operator.view().await.expect("operator view");
    assert_eq!(view["version"], json!(second), "{view}");
    assert_eq!(
        view["dataplanes"][0]["ackedVersion"],
        json!(second),
        "{view}"
    );
    spine.ns.cleanup(&spine.client).await;
}

/// A data plane that starts while the operator is down serves the snapshot
/// it kept in `--state-dir`; one without a state directory serves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dataplane_started_while_the_operator_is_down_serves_its_kept_snapshot() {
    let mut spine = Spine::operator_only(rig_or_skip!(), "fault-keep").await;
    let state = postern_harness::tmp_dir("fault-keep-state");
    let id = format!("{}-dp-1", spine.prefix);
    let (sync, token) = (spine.operator.sync, spine.token.clone());
    let kept_dataplane = || dataplane(sync, &id, &token).arg("--state-dir").arg(&state);
    spine.dataplanes.push(kept_dataplane().start().await);
    let v1 = Backend::text("v1");
    spine.create(site("web", HOST, &v1.url())).await;
    routed(spine.dataplane().http, HOST, "/", "v1 /", WAIT).await;
    let version = spine.dataplane().version().await.expect("a version");
    let file = state.join("last-snapshot.json");
    eventually("the snapshot kept on disk", WAIT, || async {
        let text = std::fs::read_to_string(&file).map_err(|e| e.to_string())?;
        if text.contains(&version) {
            Ok(())
        } else {
            Err("an older snapshot".to_string())
        }
    })
    .await;
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the kept snapshot holds secrets");
    }

    spine.operator.kill();
    spine.dataplanes.remove(0).into_proc().kill();
    let restarted = kept_dataplane().start().await;
    routed(restarted.http, HOST, "/", "v1 /", WAIT).await;
    assert_eq!(restarted.version().await.as_deref(), Some(version.as_str()));
    assert_eq!(restarted.metric("postern_sync_connected").await, 0.0);
    assert!(
        restarted
            .log()
            .contains("serving the last snapshot kept on disk")
    );

    let bare = dataplane(spine.operator.sync, "fault-keep-bare", &spine.token)
        .start()
        .await;
    let (status, _) = get(bare.http, HOST, "/").await;
    assert_eq!(status, 404, "without --state-dir nothing is served");
    spine.ns.cleanup(&spine.client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_dataplane_gets_the_current_snapshot_and_counts_again() {
    let mut spine = Spine::start(rig_or_skip!(), "fault-dp").await;
    spine.add_dataplane().await;
    let (v1, v2) = (Backend::text("v1"), Backend::text("v2"));
    spine.create(site("web", HOST, &v1.url())).await;
    programmed_by(&spine, 1, 2).await;
    for dp in &spine.dataplanes {
        routed(dp.http, HOST, "/", "v1 /", WAIT).await;
    }

    // SIGKILL: no goodbye; the operator sees the connection drop.
    let killed = spine.dataplanes.remove(0);
    let killed_id = killed.id.clone();
    killed.into_proc().kill();
    eventually(
        "the operator to drop the killed data plane",
        WAIT,
        || async {
            let view = spine.operator.view().await?;
            match view["dataplanes"].as_array().map(Vec::len) {
                Some(1) => Ok(()),
                _ => Err(view.to_string()),
            }
        },
    )
    .await;
    // Once its lease expires the killed data plane is out of the fleet,
    // and Programmed counts the one left.
    programmed_by(&spine, 1, 1).await;
    let moved = json!({"backend": {"url": v2.url()}});
    patch_spec(&spine.client, spine.ns(), "ProxyTarget", "web", moved).await;
    programmed_by(&spine, 2, 1).await;
    routed(spine.dataplane().http, HOST, "/", "v2 /", WAIT).await;

    // The same id again, a new process: it gets the current snapshot.
    let restarted = dataplane(spine.operator.sync, &killed_id, &spine.token)
        .start()
        .await;
    routed(restarted.http, HOST, "/", "v2 /", WAIT).await;
    let current = spine.dataplane().version().await;
    assert_eq!(restarted.version().await, current);
    assert_eq!(
        restarted.metric("postern_snapshot_applies_total").await,
        1.0
    );
    spine.dataplanes.push(restarted);
    programmed_by(&spine, 2, 2).await;
    let view = spine.operator.view().await.expect("operator view");
    let acked: Vec<&Value> = view["dataplanes"]
        .as_array()
        .map(|dps| dps.iter().map(|dp| &dp["ackedVersion"]).collect())
        .unwrap_or_default();
    assert_eq!(acked, [&json!(current), &json!(current)], "{view}");
    spine.ns.cleanup(&spine.client).await;
}

/// Only the tunnel registry talks to Redis (`postern --redis-url`; the
/// operator takes no Redis settings, which `--help` checks). So this pins
/// down that proxying, forward and reverse, has no hidden dependency on
/// it, and that the data plane says it is degraded: a private Redis is
/// stopped and started again while both keep serving, `/readyz` stays 200
/// but says `degraded`, and `postern_tunnel_registry_up` follows Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxying_goes_on_while_redis_is_down_and_back() {
    let rig = rig_or_skip!();
    let program = binary("postern-operator");
    let help = help_text(&program, &["--help"]);
    assert!(
        !help.to_ascii_lowercase().contains("redis"),
        "{} now takes Redis settings: make this test cover its degraded mode\n{help}",
        program.display()
    );
    let Some(mut redis) = Redis::start() else {
        return;
    };
    redis.ping().await;

    let mut spine = Spine::operator_only(rig, "fault-redis").await;
    let secret = postern_harness::tmp_dir("fault-redis").join("peer-secret");
    std::fs::write(&secret, "a peer secret of some length").expect("secret");
    let dp = dataplane(
        spine.operator.sync,
        &format!("{}-dp-1", spine.prefix),
        &spine.token,
    )
    .args(["--redis-url", &format!("redis://{}", redis.addr)])
    .args(["--tunnel-peer-addr", &free_addr().to_string()])
    .arg("--tunnel-peer-secret-file")
    .arg(&secret)
    .start()
    .await;
    spine.dataplanes.push(dp);
    let backend = Backend::text("site");
    spine.create(site("web", HOST, &backend.url())).await;
    apply_secret(&spine.client, spine.ns(), "alice-pw", &[("password", "pw")]).await;
    spine
        .create(
            json!({"kind": "UserUpstream", "metadata": {"name": "alice"}, "spec": {
                "user": "alice",
                "passwordSecretRef": {"name": "alice-pw"},
                "upstream": "direct://",
                // The test's backend is on loopback, which users are denied by default.
                "allowInternalNetworks": ["127.0.0.0/8"],
            }}),
        )
        .await;
    spine.programmed("ProxyTarget", "web", 1, WAIT).await;
    spine.programmed("UserUpstream", "alice", 1, WAIT).await;
    let dp = spine.dataplane();
    let forward = || async { forward_get(dp, &backend.url()).await };
    routed(dp.http, HOST, "/", "site /", WAIT).await;
    assert_eq!(forward().await, (200, "site /x".to_string()));
    let registry_up = |want: f64| async move {
        match dp.metric("postern_tunnel_registry_up").await {
            v if v == want => Ok(()),
            v => Err(v),
        }
    };
    eventually("the registry up", WAIT, || registry_up(1.0)).await;

    redis.stop();
    assert!(
        TcpStream::connect(redis.addr).await.is_err(),
        "Redis is really down"
    );
    let until = tokio::time::Instant::now() + WATCH;
    while tokio::time::Instant::now() < until {
        assert_eq!(get(dp.http, HOST, "/").await, (200, "site /".to_string()));
        assert_eq!(forward().await, (200, "site /x".to_string()));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eventually("the registry down", WAIT, || registry_up(0.0)).await;
    let (status, body) = dp.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("degraded"), "{body}");

    redis.start_again();
    redis.ping().await;
    assert_eq!(get(dp.http, HOST, "/").await, (200, "site /".to_string()));
    assert_eq!(forward().await, (200, "site /x".to_string()));
    eventually("the registry up again", WAIT, || registry_up(1.0)).await;
    let (status, body) = dp.get("/readyz").await;
    assert!(
        status == 200 && !body.contains("degraded"),
        "{status} {body}"
    );
    spine.ns.cleanup(&spine.client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_cut_mid_frame_is_refused_and_the_last_good_one_serves() {
    let (spine, relay, _v1, v2) = site_through_a_relay(rig_or_skip!(), "fault-cut").await;
    let dp = spine.dataplane();
    let good = dp.version().await.expect("a version");
    let applies = dp.metric("postern_snapshot_applies_total").await;

    // A large snapshot (about 100 KB of header values), cut in the middle.
    relay.cut_snapshots(true);
    let headers: Vec<Value> = (0..24)
        .map(|i| json!({"name": format!("x-pad-{i}"), "value": "p".repeat(4000)}))
        .collect();
    let change = json!({"backend": {"url": v2.url()}, "requestHeaders": {"set": headers}});
    patch_spec(&spine.client, spine.ns(), "ProxyTarget", "web", change).await;
    // The change's frame, then the same snapshot again on the reconnect.
    eventually("two snapshot frames cut", WAIT, || async {
        match relay.cuts() {
            n if n >= 2 => Ok(()),
            n => Err(n),
        }
    })
    .await;
    let (len, delivered) = relay.last_cut().expect("a cut");
    assert!(len > 64 * 1024 && delivered < len, "{len} {delivered}");

    let answered = keeps_serving(dp, HOST, "v1 /", &good, WATCH).await;
    assert!(answered > 1, "{answered}");
    // Never decoded, so not even nacked: a partial frame is no snapshot.
    assert_eq!(dp.metric("postern_snapshot_nacks_total").await, 0.0);
    assert_eq!(dp.metric("postern_snapshot_applies_total").await, applies);
    assert!(
        dp.log().contains("serving the last snapshot"),
        "{}",
        dp.log()
    );
    let observed = observe(&spine.client, spine.ns(), "ProxyTarget", "web").await;
    let observed = observed.expect("the ProxyTarget");
    let programmed_at_2 = observed
        .condition("Programmed")
        .is_some_and(|c| c.status == ConditionStatus::True && c.observed_generation == Some(2));
    assert!(!programmed_at_2, "no data plane applied it: {observed:?}");

    relay.cut_snapshots(false);
    routed(dp.http, HOST, "/", "v2 /", WAIT).await;
    assert_ne!(dp.version().await, Some(good));
    spine.programmed("ProxyTarget", "web", 2, WAIT).await;
    assert!(relay.connections() >= 3, "{}", relay.connections());
    spine.ns.cleanup(&spine.client).await;
}

/// Waits until the ProxyTarget `web` is Programmed at `generation`, by
/// `dataplanes` connected data planes.
/// An operator, one data plane `{name}-dp-1` reaching it through a relay,
/// and the site [`HOST`] served from backend `v1` (`v2` is for the change).
async fn site_through_a_relay(rig: Rig, name: &str) -> (Spine, Relay, Backend, Backend) {
    let mut spine = Spine::operator_only(rig, name).await;
    let relay = Relay::start(spine.operator.sync).await;
    let dp = dataplane(relay.addr, &format!("{name}-dp-1"), &spine.token);
    spine.dataplanes.push(dp.start().await);
    let (v1, v2) = (Backend::text("v1"), Backend::text("v2"));
    spine.create(site("web", HOST, &v1.url())).await;
    spine.programmed("ProxyTarget", "web", 1, WAIT).await;
    routed(spine.dataplane().http, HOST, "/", "v1 /", WAIT).await;
    (spine, relay, v1, v2)
}

async fn programmed_by(spine: &Spine, generation: i64, dataplanes: usize) {
    let want = format!("generation {generation} applied by {dataplanes} data plane(s)");
    eventually(&format!("web Programmed: {want}"), WAIT, || async {
        let observed = observe(&spine.client, spine.ns(), "ProxyTarget", "web").await?;
        let done = observed.status.observed_generation == Some(generation)
            && observed.condition("Programmed").is_some_and(|c| {
                c.status == ConditionStatus::True
                    && c.observed_generation == Some(generation)
                    && c.message == want
            });
        if done {
            Ok(())
        } else {
            Err(format!("{observed:?}"))
        }
    })
    .await;
}

/// `GET target/x` through the forward proxy as alice.
async fn forward_get(dp: &Postern, target: &str) -> (u16, String) {
    let proxy = dp.proxy_url("alice", "pw");
    let out = curl(&["-x", &proxy, &format!("{target}/x")]).await;
    (out.status, out.body)
}

/// What `program args` prints, on either stream.
fn help_text(program: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .env_remove("POSTERN_SYNC_TOKEN")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    let (stdout, stderr) = (out.stdout, out.stderr);
    format!(
        "{}{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    )
}

/// A private redis-server on a fixed free port, so it can be stopped and
/// started again without touching the rig's (other tests may use it).
struct Redis {
    program: PathBuf,
    addr: SocketAddr,
    proc: Option<Proc>,
}

impl Redis {
    fn start() -> Option<Redis> {
        let mut redis = Redis {
            program: peer("redis-server")?,
            addr: free_addr(),
            proc: None,
        };
        redis.start_again();
        Some(redis)
    }

    fn start_again(&mut self) {
        let port = self.addr.port().to_string();
        let launch = Launch::new("redis-server", &self.program).args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port,
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
        self.proc = Some(launch.spawn());
    }

    /// SIGKILL.
    fn stop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill();
        }
    }

    /// Waits until it answers PING.
    async fn ping(&self) {
        wait_port(self.addr).await;
        eventually("redis to answer PING", WAIT, || async {
            let mut s = TcpStream::connect(self.addr)
                .await
                .map_err(|e| e.to_string())?;
            s.write_all(b"PING\r\n").await.map_err(|e| e.to_string())?;
            let mut buf = [0u8; 7];
            s.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            if &buf == b"+PONG\r\n" {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&buf).into_owned())
            }
        })
        .await;
    }
}
