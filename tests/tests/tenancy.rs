//! Tenancy of names on the rig (issue 13): namespace A holds a hostname and
//! a proxy user name, namespace B's claims on them wait refused; when A is
//! deleted, B stays refused under a name policy without takeover (also
//! across an operator restart), and takes the names over once the policy
//! allows it. The refusal is also an Event on B's objects.
//!
//! One test, one operator at a time: the operator watches every namespace
//! (the scenario needs two), so it must never run beside another of its kind.

use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, ListParams};
use postern_api::ConditionStatus;
use postern_harness::{Operator, Postern, tmp_dir};
use postern_tests::resources::{apply_secret, create, observe};
use postern_tests::spine::WAIT;
use postern_tests::{Rig, TestNamespace, dataplane, eventually, install_crds, rig_or_skip};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const RUST_LOG: &str = "info,postern_operator=debug";
/// What B's two objects show while A holds the names.
const REFUSALS: [(&str, &str); 2] = [
    ("ProxyTarget", "HostnameConflict"),
    ("UserUpstream", "DuplicateUser"),
];

/// Starts an operator for every namespace with `policy` as its name
/// policy, on `sync` (a restarted one takes its predecessor's port).
async fn operator(
    rig: &Rig,
    lease_ns: &str,
    token: &str,
    policy: &str,
    sync: SocketAddr,
) -> Operator {
    let file = tmp_dir("tenancy-policy").join("policy.yaml");
    std::fs::write(&file, policy).expect("write the policy");
    Operator::builder_all_namespaces(rig.kubeconfig(), lease_ns)
        .id("tenancy-op")
        .sync_token(token)
        .sync_addr(sync)
        .env("RUST_LOG", RUST_LOG)
        .arg("--name-policy")
        .arg(&file)
        .start()
        .await
}

fn policy(a: &str, b: &str, host: &str, user: &str, takeover: &str) -> String {
    format!(
        "rules:
  - hostnames: [\"{host}\"]
    users: [\"{user}\"]
    namespaces: [{a}, {b}]
    takeover: {takeover}
  # Everyone else keeps today's behaviour (other tests' objects included).
  - hostnames: [\"*\"]
    users: [\"*\"]
    namespaces: [\"*\"]
"
    )
}

/// A ProxyTarget `web` for `host` and a UserUpstream `u` for `user` with
/// `password`, in `ns`.
async fn claim(client: &Client, ns: &str, host: &str, user: &str, password: &str) {
    apply_secret(client, ns, "u-pw", &[("password", password)]).await;
    let objects = [
        json!({"kind": "ProxyTarget", "metadata": {"name": "web"}, "spec": {
            "hostnames": [host], "backend": {"url": "http://127.0.0.1:9"}}}),
        json!({"kind": "UserUpstream", "metadata": {"name": "u"}, "spec": {
            "user": user, "passwordSecretRef": {"name": "u-pw"}, "upstream": "direct://",
            "allowInternalNetworks": ["127.0.0.0/8"]}}),
    ];
    for object in objects {
        if let Err(error) = create(client, ns, object).await {
            panic!("creating in {ns}: {error}");
        }
    }
}

/// Waits until `kind/name` in `ns` shows Accepted with `status` and `reason`
/// at its generation; returns the condition's message.
async fn accepted(
    client: &Client,
    ns: &str,
    kind: &str,
    status: ConditionStatus,
    reason: &str,
) -> String {
    accepted_saying(client, ns, kind, status, reason, "").await
}

/// [`accepted`], with a message that contains `saying`.
async fn accepted_saying(
    client: &Client,
    ns: &str,
    kind: &str,
    status: ConditionStatus,
    reason: &str,
    saying: &str,
) -> String {
    let name = if kind == "ProxyTarget" { "web" } else { "u" };
    let what = format!("{kind} {ns}/{name} Accepted={status:?} {reason} {saying:?}");
    eventually(&what, WAIT, || async {
        let observed = observe(client, ns, kind, name).await?;
        match observed.condition("Accepted") {
            Some(c)
                if c.status == status
                    && c.reason == reason
                    && c.message.contains(saying)
                    && c.observed_generation == Some(observed.generation) =>
            {
                Ok(c.message.clone())
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

/// Waits until both of B's objects are refused saying `saying`, and
/// checks that no message names namespace `other`.
async fn refused_saying(client: &Client, ns: &str, other: &str, saying: &str) {
    for (kind, reason) in REFUSALS {
        let message =
            accepted_saying(client, ns, kind, ConditionStatus::False, reason, saying).await;
        assert!(
            !message.contains(other),
            "names the other tenant: {message}"
        );
    }
}

/// The status line's code of a CONNECT through the forward proxy as
/// `user`: 407 when the proxy does not take the credentials.
async fn connect_as(dp: &Postern, user: &str, password: &str) -> u16 {
    let mut stream = TcpStream::connect(dp.proxy).await.expect("proxy");
    let credentials = basic(&format!("{user}:{password}"));
    let request = format!(
        "CONNECT 127.0.0.1:9 HTTP/1.1\r\nHost: 127.0.0.1:9\r\nProxy-Authorization: Basic {credentials}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.expect("status line");
    String::from_utf8_lossy(&head[9..12]).parse().unwrap_or(0)
}

fn basic(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from_be_bytes([0, b[0], b[1], b[2]]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

async fn proxy_answers(dp: &Postern, user: &str, password: &str, authenticated: bool) {
    let what = format!("{user} authenticated={authenticated}");
    eventually(&what, WAIT, || async {
        let code = connect_as(dp, user, password).await;
        if (code != 407) == authenticated {
            Ok(())
        } else {
            Err(code)
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_claim_is_not_taken_over_unless_the_policy_allows_it() {
    let rig = rig_or_skip!();
    let client = rig.client().await;
    install_crds(&client).await;
    let lease = TestNamespace::create(&rig, "tenancy-op").await;
    let a = TestNamespace::create(&rig, "tenancy-a").await;
    let b = TestNamespace::create(&rig, "tenancy-b").await;
    // Names of this run only, so no other test's objects contest them.
    let host = format!("web.{}.localhost", b.name);
    let user = format!("alice-{}", &b.name[b.name.len() - 6..]);
    let token = format!("token-{}", lease.name);
    let deny = policy(&a.name, &b.name, &host, &user, "deny");
    let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
    let op = operator(&rig, &lease.name, &token, &deny, any_port).await;
    let dp = dataplane(op.sync, "tenancy-dp", &token).start().await;

    claim(&client, &a.name, &host, &user, "pw-a").await;
    accepted(
        &client,
        &a.name,
        "UserUpstream",
        ConditionStatus::True,
        "Accepted",
    )
    .await;
    // Created later: B loses both names.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    claim(&client, &b.name, &host, &user, "pw-b").await;
    refused_saying(&client, &b.name, &a.name, "held by another object").await;
    let observed = observe(&client, &b.name, "UserUpstream", "u")
        .await
        .expect("observe");
    assert_eq!(observed.status.lost_claims.users, vec![user.clone()]);
    proxy_answers(&dp, &user, "pw-a", true).await;
    proxy_answers(&dp, &user, "pw-b", false).await;

    // The refusal is an Event on B's object.
    let events: Api<Event> = Api::namespaced(client.clone(), &b.name);
    eventually("a DuplicateUser Event", WAIT, || async {
        let list = events
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let found = list.items.iter().any(|e| {
            e.reason.as_deref() == Some("DuplicateUser")
                && e.type_.as_deref() == Some("Warning")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("u")
        });
        if found {
            Ok(())
        } else {
            Err(format!(
                "{:?}",
                list.items.iter().map(|e| &e.reason).collect::<Vec<_>>()
            ))
        }
    })
    .await;

    // A goes away: B stays refused, and nobody is alice.
    let a_name = a.name.clone();
    a.cleanup(&client).await;
    eventually(
        "namespace A's objects gone",
        Duration::from_secs(60),
        || async {
            match observe(&client, &a_name, "UserUpstream", "u").await {
                Err(_) => Ok(()),
                Ok(o) => Err(format!("{o:?}")),
            }
        },
    )
    .await;
    proxy_answers(&dp, &user, "pw-a", false).await;
    refused_saying(&client, &b.name, &a_name, "no takeover").await;
    proxy_answers(&dp, &user, "pw-b", false).await;

    // The record is in B's status: a restarted operator keeps B refused.
    let sync = op.sync;
    drop(op);
    let op = operator(&rig, &lease.name, &token, &deny, sync).await;
    // The data plane serves what the new operator compiled from B's status.
    eventually(
        "the data plane on the new operator's snapshot",
        WAIT,
        || async {
            let published = op.view().await?["version"].clone();
            let applied = dp.view().await?.version;
            match (published.as_str(), applied.as_deref()) {
                (Some(p), Some(a)) if p == a => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    proxy_answers(&dp, &user, "pw-b", false).await;
    accepted(
        &client,
        &b.name,
        "UserUpstream",
        ConditionStatus::False,
        "DuplicateUser",
    )
    .await;

    // The policy now allows takeover: B takes both names.
    drop(op);
    let allow = policy(&a_name, &b.name, &host, &user, "allow");
    let _op = operator(&rig, &lease.name, &token, &allow, sync).await;
    for kind in ["ProxyTarget", "UserUpstream"] {
        accepted(&client, &b.name, kind, ConditionStatus::True, "Accepted").await;
    }
    proxy_answers(&dp, &user, "pw-b", true).await;
    let observed = observe(&client, &b.name, "UserUpstream", "u")
        .await
        .expect("observe");
    assert!(observed.status.lost_claims.is_empty(), "{observed:?}");
    b.cleanup(&client).await;
    lease.cleanup(&client).await;
}
