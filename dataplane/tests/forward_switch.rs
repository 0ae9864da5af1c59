//! Live switching in standalone mode: rewriting a user's manifest cuts that
//! user's open tunnels (promptly after the apply, read from postern's own
//! log) and no one else's; the next request takes the new upstream (proved
//! by the outgoing address the target sees and by the upstream's log); a new
//! user works at once, a deleted user's tunnels close, and the registry
//! ends empty.

use postern_harness::peers::microsocks;
use postern_harness::{
    LOOPBACK_ALLOWED, PATIENCE, Postern, closed_within, curl, echo_roundtrip, echo_target, field,
    http_target, open_tunnel, user_yaml, wait_for,
};

/// How long after the apply the cut may come: immediate on an idle
/// machine, but a loaded one may delay the tunnel's task.
const CUT_LAG: f64 = 1.0;

/// Seconds since midnight of a log line's RFC 3339 timestamp; panics when
/// there is none, so that two missing timestamps cannot pass as "no lag".
fn seconds(line: &serde_json::Value) -> f64 {
    let parsed = line["timestamp"].as_str().and_then(|ts| {
        let time = ts.split_once('T')?.1.trim_end_matches('Z');
        let mut parts = time.split(':').map(|p| p.parse::<f64>().ok());
        Some(parts.next()?? * 3600.0 + parts.next()?? * 60.0 + parts.next()??)
    });
    parsed.unwrap_or_else(|| panic!("no RFC 3339 timestamp in {line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_a_user_cuts_only_its_tunnels() {
    let Some((old, old_addr)) = microsocks(None, Some("127.0.0.2")).await else {
        return;
    };
    let Some((new, new_addr)) = microsocks(Some(("su", "sp")), Some("127.0.0.3")).await else {
        return;
    };
    let files = [
        (
            "alice.yaml",
            user_yaml(
                "alice",
                "pw",
                &format!("socks5://{old_addr}"),
                None,
                LOOPBACK_ALLOWED,
            ),
        ),
        (
            "bob.yaml",
            user_yaml(
                "bob",
                "pw2",
                &format!("socks5://{old_addr}"),
                None,
                LOOPBACK_ALLOWED,
            ),
        ),
    ];
    let p = Postern::standalone_with("switch", &files)
        .json_logs()
        .start()
        .await;
    let echo = echo_target().await;
    let target = http_target().await;
    let url = format!("http://{target}/");

    let mut alice = open_tunnel(p.proxy, "alice", "pw", echo)
        .await
        .expect("alice's tunnel");
    let mut bob = open_tunnel(p.proxy, "bob", "pw2", echo)
        .await
        .expect("bob's tunnel");
    assert!(echo_roundtrip(&mut alice, b"alice-1").await);
    assert!(echo_roundtrip(&mut bob, b"bob-1").await);
    let before = curl(&["-x", &p.proxy_url("alice", "pw"), &url]).await;
    assert_eq!(before.body, "hello from 127.0.0.2", "{before:?}");

    // Switch alice to the other upstream, with credentials.
    p.write(
        "alice.yaml",
        &user_yaml(
            "alice",
            "pw",
            &format!("socks5://{new_addr}"),
            Some(("su", "sp")),
            LOOPBACK_ALLOWED,
        ),
    );
    assert!(
        closed_within(&mut alice, PATIENCE).await,
        "alice's tunnel was not cut"
    );
    let cutting = p
        .wait_log("the cut", PATIENCE, |l| {
            field(l, "message")
                .as_str()
                .is_some_and(|m| m.starts_with("user changed"))
                && field(l, "user") == "alice"
        })
        .await;
    let closed = p
        .wait_log("alice's tunnel line", PATIENCE, |l| {
            field(l, "message") == "tunnel closed"
                && field(l, "user") == "alice"
                && field(l, "outcome") == "cut"
        })
        .await;
    // The apply logs its line once the cut is made, so the tunnel's own line
    // may come a hair earlier (another thread): only lateness is a fault.
    let lag = seconds(&closed) - seconds(&cutting);
    assert!(lag < CUT_LAG, "cut {lag:.3}s after the apply");
    assert!(
        echo_roundtrip(&mut bob, b"bob-2").await,
        "bob's tunnel must survive alice's switch"
    );

    // The next request goes through the new upstream.
    let after = curl(&["-x", &p.proxy_url("alice", "pw"), &url]).await;
    assert_eq!(after.body, "hello from 127.0.0.3", "{after:?}");
    assert!(
        new.log().contains("connected to"),
        "the new upstream logged the connection:\n{}",
        new.log()
    );
    let old_log_lines = old.log().lines().count();

    // A password change cuts too, and the old password stops working.
    let mut alice = open_tunnel(p.proxy, "alice", "pw", echo)
        .await
        .expect("alice again");
    p.write(
        "alice.yaml",
        &user_yaml(
            "alice",
            "pw-new",
            &format!("socks5://{new_addr}"),
            Some(("su", "sp")),
            LOOPBACK_ALLOWED,
        ),
    );
    assert!(
        closed_within(&mut alice, PATIENCE).await,
        "a password change cuts"
    );
    let old_pw = curl(&["-x", &p.proxy_url("alice", "pw"), &url]).await;
    assert_eq!(old_pw.status, 407, "{old_pw:?}");
    assert!(echo_roundtrip(&mut bob, b"bob-3").await);

    // A new user works as soon as its manifest is applied.
    p.write(
        "carol.yaml",
        &user_yaml("carol", "pw3", "direct://", None, LOOPBACK_ALLOWED),
    );
    let carol = wait_for("carol to work", PATIENCE, || async {
        let out = curl(&["-x", &p.proxy_url("carol", "pw3"), &url]).await;
        (out.status == 200).then_some(out)
    })
    .await;
    assert_eq!(carol.body, "hello from 127.0.0.1");

    // Deleting a user closes its tunnels.
    p.remove("bob.yaml");
    assert!(
        closed_within(&mut bob, PATIENCE).await,
        "bob's tunnel outlived bob"
    );
    let gone = curl(&["-x", &p.proxy_url("bob", "pw2"), &url]).await;
    assert_eq!(gone.status, 407);
    assert_eq!(
        old.log().lines().count(),
        old_log_lines,
        "nothing went through the old upstream after the switch"
    );

    // Nothing left behind.
    wait_for("an empty registry", PATIENCE, || async {
        let users = p.metric("postern_proxy_registry_users").await;
        let active = p
            .metric("postern_proxy_active_relays{user=\"alice\"}")
            .await
            + p.metric("postern_proxy_active_relays{user=\"bob\"}").await;
        (users == 0.0 && active == 0.0).then_some(())
    })
    .await;
    assert!(
        p.metric("postern_proxy_cut_relays_total{user=\"alice\"}")
            .await
            >= 2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_closed_tunnels_leave_no_trace() {
    let files = [(
        "a.yaml",
        user_yaml("alice", "pw", "direct://", None, LOOPBACK_ALLOWED),
    )];
    let p = Postern::standalone_with("leak", &files)
        .json_logs()
        .start()
        .await;
    let echo = echo_target().await;
    for round in 0..5 {
        let mut held = Vec::new();
        for _ in 0..20 {
            held.push(
                open_tunnel(p.proxy, "alice", "pw", echo)
                    .await
                    .expect("tunnel"),
            );
        }
        for s in &mut held {
            assert!(echo_roundtrip(s, b"x").await, "round {round}");
        }
        assert_eq!(
            p.metric("postern_proxy_active_relays{user=\"alice\"}")
                .await,
            20.0
        );
        drop(held);
        wait_for("tunnels to close", PATIENCE, || async {
            (p.metric("postern_proxy_registry_users").await == 0.0).then_some(())
        })
        .await;
    }
    assert_eq!(
        p.metric("postern_proxy_active_relays{user=\"alice\"}")
            .await,
        0.0
    );
    assert_eq!(
        p.metric("postern_proxy_relays_total{user=\"alice\"}").await,
        100.0
    );
}
