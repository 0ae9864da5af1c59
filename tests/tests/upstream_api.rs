//! The UpstreamGate-compatible `/upstream` API in cluster mode, served by a
//! real operator on its admin port against the rig's API server: a POST
//! writes a Secret and a UserUpstream (read back here with kube), the
//! operator's watch compiles them, and a real data plane serves the user.
//! Status codes match the data plane's standalone API.

use std::net::SocketAddr;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use postern_crds::UserUpstream;
use postern_harness::{call, connect_status, echo_target, eventually, tmp_dir};
use postern_tests::spine::{Spine, WAIT};
use postern_tests::{Rig, TestNamespace, install_crds, operator, rig_or_skip};
use serde_json::{Value, json};

const TOKEN: &str = "s3cret-admin-token";
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_serves_the_upstreamgate_api() {
    let spine = spine_with_token(rig_or_skip!(), "upapi").await;
    let (admin, ns) = (spine.operator.admin, spine.ns().to_string());
    let secrets: Api<Secret> = Api::namespaced(spine.client.clone(), &ns);
    let users: Api<UserUpstream> = Api::namespaced(spine.client.clone(), &ns);

    // A user written by hand, not through the API.
    postern_tests::resources::apply_secret(&spine.client, &ns, "alice-pw", &[("password", "pw1")])
        .await;
    spine
        .create(
            json!({"kind": "UserUpstream", "metadata": {"name": "alice"}, "spec": {
                "user": "alice", "passwordSecretRef": {"name": "alice-pw"}, "upstream": "direct://",
            }}),
        )
        .await;
    users_served(&spine, 1).await;

    let bob = r#"{"user":"bob","password":"pw2","upstream":"socks5://su:sp@127.0.0.1:1080"}"#;
    let ftp = r#"{"user":"bob","password":"pw2","upstream":"ftp://127.0.0.1:21"}"#;
    let bad_name = r#"{"user":"b o b","password":"pw2","upstream":"direct://"}"#;
    let refused = [
        ("POST", "/upstream", None, bob, 401),
        ("POST", "/upstream", Some("wrong"), bob, 401),
        ("GET", "/upstream", Some("wrong"), "", 401),
        ("POST", "/upstream", Some(TOKEN), "{not json", 400),
        ("POST", "/upstream", Some(TOKEN), ftp, 400),
        ("POST", "/upstream", Some(TOKEN), bad_name, 400),
        ("PUT", "/upstream", Some(TOKEN), bob, 405),
        ("GET", "/upstream/bob", Some(TOKEN), "", 405),
    ];
    for (method, path, token, body, want) in refused {
        let got = status(admin, method, path, token, body).await;
        assert_eq!(got, want, "{method} {path} {token:?} {body}");
    }
    assert!(!exists(&users, "upstreamgate-bob").await);

    // POST: the Secrets and the UserUpstream, credentials out of the URL.
    let (code, text) = call(admin, "POST", "/upstream", Some(TOKEN), bob).await;
    assert_eq!(code, 204, "{text}");
    let object = users
        .get("upstreamgate-bob")
        .await
        .expect("UserUpstream written");
    assert_eq!(object.spec.user, "bob");
    assert_eq!(object.spec.upstream, "socks5://127.0.0.1:1080");
    assert_eq!(object.spec.password_secret_ref.name, "upstreamgate-bob");
    let creds_ref = object.spec.upstream_credentials_secret_ref.as_ref();
    assert_eq!(
        creds_ref.map(|r| r.name.as_str()),
        Some("upstreamgate-bob-upstream")
    );
    assert_eq!(label(&object.metadata), Some("postern-upstream-api"));
    assert_eq!(
        secret_values(&secrets, "upstreamgate-bob").await,
        [("password".to_string(), "pw2".to_string())]
    );
    assert_eq!(
        secret_values(&secrets, "upstreamgate-bob-upstream").await,
        [
            ("password".into(), "sp".into()),
            ("username".into(), "su".into())
        ]
    );
    spine
        .programmed("UserUpstream", "upstreamgate-bob", 1, WAIT)
        .await;
    users_served(&spine, 2).await;

    // A direct user is served at once through the data plane: let past
    // authentication, then refused the test's loopback target (users of
    // this API get the default deny of internal networks).
    let carol = r#"{"user":"carol","password":"pw3","upstream":"direct://"}"#;
    assert_eq!(
        status(admin, "POST", "/upstream", Some(TOKEN), carol).await,
        204
    );
    users_served(&spine, 3).await;
    let echo = echo_target().await;
    // The snapshot's user list shows carol before the forward proxy has
    // swapped in her credentials, and the API writes her Secret and her
    // UserUpstream apart: her password is accepted eventually (407 until).
    let proxy = spine.dataplane().proxy;
    eventually("carol let past authentication", WAIT, || async move {
        match connect_status(proxy, "carol", "pw3", echo).await {
            403 => Ok(()),
            other => Err(other),
        }
    })
    .await;
    assert_eq!(
        connect_status(spine.dataplane().proxy, "carol", "nope", echo).await,
        407
    );

    // GET: every user, managed or not, and no secret.
    let (code, text) = call(admin, "GET", "/upstream", Some(TOKEN), "").await;
    assert_eq!(code, 200, "{text}");
    let listed: Value = serde_json::from_str(&text).expect("JSON");
    let expected = json!([
        {"user": "alice", "upstream": "direct://", "id": format!("{ns}/alice"), "managed": false},
        {"user": "bob", "upstream": "socks5://127.0.0.1:1080",
         "id": format!("{ns}/upstreamgate-bob"), "managed": true},
        {"user": "carol", "upstream": "direct://",
         "id": format!("{ns}/upstreamgate-carol"), "managed": true},
    ]);
    assert_eq!(listed, expected);
    for secret in ["pw1", "pw2", "pw3", "\"sp\"", "sp@"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }

    // Users defined by hand belong to their authors.
    let alice = r#"{"user":"alice","password":"x","upstream":"direct://"}"#;
    assert_eq!(
        status(admin, "POST", "/upstream", Some(TOKEN), alice).await,
        409
    );
    assert_eq!(
        status(admin, "DELETE", "/upstream/alice", Some(TOKEN), "").await,
        409
    );
    assert!(exists(&users, "alice").await);
    assert!(!exists(&users, "upstreamgate-alice").await);

    // A new POST replaces the user; credentials no longer inline go away.
    let bob_direct = r#"{"user":"bob","password":"pw2b","upstream":"direct://"}"#;
    assert_eq!(
        status(admin, "POST", "/upstream", Some(TOKEN), bob_direct).await,
        204
    );
    let object = users.get("upstreamgate-bob").await.expect("UserUpstream");
    assert_eq!(object.spec.upstream, "direct://");
    assert_eq!(object.spec.upstream_credentials_secret_ref, None);
    assert!(!exists(&secrets, "upstreamgate-bob-upstream").await);

    // DELETE removes the UserUpstream and its Secrets.
    assert_eq!(
        status(admin, "DELETE", "/upstream/bob", Some(TOKEN), "").await,
        204
    );
    assert!(!exists(&users, "upstreamgate-bob").await);
    assert!(!exists(&secrets, "upstreamgate-bob").await);
    for user in ["bob", "nobody", "b%20o"] {
        let path = format!("/upstream/{user}");
        assert_eq!(
            status(admin, "DELETE", &path, Some(TOKEN), "").await,
            404,
            "{user}"
        );
    }
    users_served(&spine, 2).await;
    assert!(exists(&secrets, "alice-pw").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_admin_token_the_api_is_closed() {
    let rig = rig_or_skip!();
    let client = rig.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&rig, "upapi-closed").await;
    let operator = operator(&rig, &ns.name, "upapi-closed-op", "sync-token")
        .start()
        .await;
    let eve = r#"{"user":"eve","password":"x","upstream":"direct://"}"#;
    for token in [None, Some(""), Some("anything")] {
        assert_eq!(
            status(operator.admin, "POST", "/upstream", token, eve).await,
            401
        );
        assert_eq!(
            status(operator.admin, "GET", "/upstream", token, "").await,
            401
        );
    }
    let users: Api<UserUpstream> = Api::namespaced(client, &ns.name);
    assert!(!exists(&users, "upstreamgate-eve").await);
}

/// A namespace, an operator with `--admin-token-file`, and one data plane.
async fn spine_with_token(rig: Rig, prefix: &str) -> Spine {
    let token_file = tmp_dir(prefix).join("admin-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token file");
    let flag = format!("--admin-token-file={}", token_file.display());
    Spine::start_with_args(rig, prefix, &[flag]).await
}

async fn users_served(spine: &Spine, n: u64) {
    let what = format!("{n} users in the data plane's snapshot");
    spine
        .snapshot_where(&what, |view| view.count("userUpstreams") == Some(n))
        .await;
}

/// `call`'s status code.
async fn status(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> u16 {
    call(addr, method, path, token, body).await.0
}

async fn exists<K>(api: &Api<K>, name: &str) -> bool
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name)
        .await
        .unwrap_or_else(|e| panic!("reading {name}: {e}"))
        .is_some()
}

fn label(meta: &kube::api::ObjectMeta) -> Option<&str> {
    meta.labels.as_ref()?.get(MANAGED_BY).map(String::as_str)
}

/// A Secret's values, checking that the API wrote it.
async fn secret_values(api: &Api<Secret>, name: &str) -> Vec<(String, String)> {
    let secret = api
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("Secret {name}: {e}"));
    assert_eq!(label(&secret.metadata), Some("postern-upstream-api"));
    secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
        .collect()
}
