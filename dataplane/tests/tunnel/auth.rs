//! Identity: an agent whose token names another Tunnel, has expired or was
//! signed by another key is refused and serves nothing; a rotated key, a
//! deleted Tunnel or a deleted key Secret cuts the agent that was serving,
//! with the snapshot that makes the change.

use std::time::Duration;

use postern::tunnel::auth::{Claims, sign, unix_now};
use postern_harness::{Backend, TunnelKey, eventually, tunnel_yaml};

use crate::rig::{CONNECT, Rig, host_tunnel};

#[tokio::test]
async fn wrong_expired_and_forged_tokens_serve_nothing_and_rotation_cuts() {
    let local = Backend::start("laptop");
    let docs = [
        host_tunnel("app", &["app.test"]),
        tunnel_yaml(
            "other",
            "agent-key",
            "  mode: http\n  hostnames: [other.test]\n",
        ),
    ];
    let mut rig = Rig::start("tunnel-auth", "es256", &docs).await;
    let to = format!("default/app={}", local.url());
    let other = rig.key.token(&["default/other"], "1h");
    let expired_claims = Claims {
        sub: "default/app".into(),
        tunnels: vec![],
        exp: unix_now() - 3600,
        iat: unix_now() - 7200,
        jti: "old".into(),
    };
    let key = std::fs::read(&rig.key.private).expect("private key");
    let expired = sign(&expired_claims, &key).expect("sign");
    let forged = TunnelKey::generate("es256").token(&["default/app"], "1h");
    let mut refused = Vec::new();
    for (token, reason) in [
        (other, "wrong_tunnel"),
        (expired, "expired"),
        (forged, "bad_signature"),
    ] {
        let agent = rig.agent(&token, &[&to]);
        agent.wait_status("refused", 1, CONNECT).await;
        let log = agent.log();
        assert!(log.contains(reason), "{reason}: {log}");
        assert_eq!(agent.status_count("connected"), 0, "{log}");
        refused.push(agent);
    }
    let r = rig.https("app.test", "/", &[]).await;
    assert_eq!(r.status, 503, "no agent serves app.test: {r:?}");
    let metrics = rig.postern.metrics().await;
    for reason in ["wrong_tunnel", "expired", "bad_signature"] {
        assert!(
            metrics.contains(&format!("reason=\"{reason}\"")),
            "{reason} counted: {metrics}"
        );
    }
    let log = rig.postern.log();
    assert!(log.contains("agent refused"), "{log}");

    // A good token for app only: app is served, other is not.
    let good = rig.agent(&rig.key.token(&["default/app"], "1h"), &[&to]);
    good.wait_status("connected", 1, CONNECT).await;
    let r = rig.https("app.test", "/ok", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = rig.http("other.test", "/", &[]).await;
    assert_eq!(r.status, 503, "{r:?}");

    // Rotating the key cuts the agent within one snapshot.
    rig.rotate_key("ed25519").await;
    good.wait_status("refused", 1, CONNECT).await;
    let r = rig.https("app.test", "/", &[]).await;
    assert_eq!(r.status, 503, "{r:?}\n{}", good.log());
    assert!(
        rig.postern.log().contains("cut from its tunnel"),
        "{}",
        rig.postern.log()
    );
}

#[tokio::test]
async fn deleting_the_tunnel_or_its_key_secret_cuts_the_agent() {
    let local = Backend::start("laptop");
    let app = host_tunnel("app", &["app.test"]);
    let mut rig = Rig::start("tunnel-delete", "ed25519", std::slice::from_ref(&app)).await;
    let to = format!("default/app={}", local.url());
    let token = rig.key.token(&["default/app"], "1h");
    for (what, key_secret) in [("the Tunnel", true), ("the key Secret", false)] {
        let agent = rig.agent(&token, &[&to]);
        agent.wait_status("connected", 1, CONNECT).await;
        let r = rig.https("app.test", "/ok", &[]).await;
        assert_eq!(r.status, 200, "{r:?}");
        let before = cuts(&rig);
        let docs = if key_secret {
            vec![]
        } else {
            vec![app.clone()]
        };
        rig.serve(&docs, key_secret).await;
        // Cut by that snapshot, not by a later check or the token's expiry.
        eventually(&format!("{what} deleted: the agent cut"), CUT, || async {
            let n = cuts(&rig);
            if n > before { Ok(()) } else { Err(n) }
        })
        .await;
        agent.wait_status("refused", 1, CONNECT).await;
        assert!(agent.log().contains("unknown_tunnel"), "{}", agent.log());
        let r = rig.https("app.test", "/ok", &[]).await;
        assert_ne!(r.status, 200, "{what} deleted: {r:?}");
        rig.serve(std::slice::from_ref(&app), true).await;
    }
}

/// How soon after a snapshot serves its cuts must have happened: features
/// apply a snapshot side by side, so the tunnel's may finish a moment after
/// the reverse proxy's tables (which `serving` waits for).
const CUT: Duration = Duration::from_secs(2);

/// The agent sessions cut by snapshots so far, with the reason.
fn cuts(rig: &Rig) -> usize {
    rig.postern
        .log()
        .lines()
        .filter(|l| l.contains("cut from its tunnel") && l.contains("unknown_tunnel"))
        .count()
}
