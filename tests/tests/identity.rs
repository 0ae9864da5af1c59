//! Per-data-plane identity on the rig: each data plane presents a
//! ServiceAccount token of its own (here bound to a Secret each, as the API
//! server allows without pods), the operator verifies it with a TokenReview
//! and takes the data plane's id from it. A hello claiming another data
//! plane's id, a token for another audience and a token of an unlisted
//! ServiceAccount are refused; deleting one bound Secret cuts that data
//! plane alone. The operator's admin port serves TLS under the test's CA.

use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::Client;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use postern_harness::{HARNESS_READ_TOKEN, curl, tmp_dir, wait_for};
use postern_tests::resources::{apply_secret, create};
use postern_tests::{Ca, Operator, Postern, TestNamespace, install_crds, rig_or_skip};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(30);
const AUDIENCE: &str = "postern-sync";
const RUST_LOG: &str = "info,postern=debug,postern_operator=debug";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_data_plane_is_who_its_token_says_and_is_revoked_alone() {
    let rig = rig_or_skip!();
    let client = rig.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&rig, "identity").await;
    let ns_name = ns.name.clone();
    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), &ns_name);
    for sa in ["dataplane", "stranger"] {
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(sa.into()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        accounts
            .create(&PostParams::default(), &account)
            .await
            .unwrap_or_else(|e| panic!("ServiceAccount {sa}: {e}"));
    }
    // The objects the tokens are bound to; deleting one revokes its token.
    for secret in ["dp-a", "dp-b", "dp-c"] {
        apply_secret(&client, &ns_name, secret, &[("bound", "token")]).await;
    }
    let token_a = token(&client, &ns_name, "dataplane", AUDIENCE, "dp-a").await;
    let token_b = token(&client, &ns_name, "dataplane", AUDIENCE, "dp-b").await;

    let ca = Ca::new("identity-ca");
    let ca_file = ca.file();
    let pair = ca
        .leaf(&["localhost", "127.0.0.1"])
        .write(&tmp_dir("identity-admin-tls"));
    let allowed = format!("{ns_name}/dataplane");
    let operator = Operator::builder(rig.kubeconfig(), &ns_name)
        .id("identity-op")
        .env("RUST_LOG", RUST_LOG)
        .serviceaccount_auth(&[&allowed], 2)
        .admin_tls(&pair)
        .start()
        .await;
    let admin = Admin {
        addr: operator.admin,
        ca: ca_file.display().to_string(),
    };

    // The admin port answers over TLS under the CA, and not in plain HTTP.
    let health = admin.get("/healthz").await;
    assert_eq!((health.exit, health.status), (0, 200), "{}", health.stderr);
    let plain = curl(&[&format!("http://{}/healthz", operator.admin)]).await;
    assert_ne!(plain.status, 200, "plain HTTP on a TLS admin port");

    let dataplane = |id: &str, token: &str| {
        Postern::dataplane(operator.sync)
            .id(id)
            .sync_sa_token(token)
            .env("RUST_LOG", RUST_LOG)
    };
    let dp_a = dataplane("dp-a", &token_a).start().await;
    let dp_b = dataplane("dp-b", &token_b).start().await;
    let fleet = admin.fleet_where("dp-a and dp-b acked the snapshot", |fleet| {
        fleet.acked("dp-a").is_some() && fleet.acked("dp-b").is_some()
    });
    let fleet = fleet.await;
    assert_eq!(fleet.ids(), ["dp-a", "dp-b"], "{}", fleet.0);
    for dp in [&dp_a, &dp_b] {
        let view = dp.view().await.expect("data plane view");
        assert_eq!(view.version, fleet.acked("dp-a"));
    }

    // Neither data plane's credential can pose as the other.
    let refused = hello(operator.sync, &token_a, "dp-b").await;
    assert!(
        refused.contains("is not the one its credential names (\"dp-a\")"),
        "{refused}"
    );
    // A token for another audience is not a sync credential.
    let other_audience = token(&client, &ns_name, "dataplane", "not-postern", "dp-c").await;
    let refused = hello(operator.sync, &other_audience, "dp-c").await;
    assert!(refused.starts_with("token refused"), "{refused}");
    // A ServiceAccount that is not listed is refused whatever it claims.
    let stranger = token(&client, &ns_name, "stranger", AUDIENCE, "dp-c").await;
    let refused = hello(operator.sync, &stranger, "dp-c").await;
    assert!(
        refused.contains(":stranger is not an allowed data plane ServiceAccount"),
        "{refused}"
    );
    // And neither is a made-up token.
    let refused = hello(operator.sync, "not.a.token", "dp-c").await;
    assert!(refused.starts_with("token refused"), "{refused}");
    assert_eq!(admin.fleet().await.ids(), ["dp-a", "dp-b"]);

    // Deleting dp-a's bound Secret revokes its token: the next review cuts
    // it, and every reconnection is refused; dp-b serves on.
    Api::<Secret>::namespaced(client.clone(), &ns_name)
        .delete("dp-a", &DeleteParams::default())
        .await
        .expect("delete Secret dp-a");
    admin
        .fleet_where("dp-a gone from the fleet", |fleet| fleet.ids() == ["dp-b"])
        .await;
    wait_for("dp-a told it was refused", WAIT, || async {
        dp_a.log()
            .contains("the operator refused this data plane")
            .then_some(())
    })
    .await;
    let refused = hello(operator.sync, &token_a, "dp-a").await;
    assert!(refused.starts_with("token refused"), "{refused}");
    // A change after the revocation reaches dp-b and not dp-a, which keeps
    // serving what it had (as a data plane cut off from the operator does).
    let before = dp_a.view().await.expect("dp-a view").version;
    let site = json!({"kind": "ProxyTarget", "metadata": {"name": "after"}, "spec": {
        "hostnames": ["after.identity.test"],
        "backend": {"url": "http://127.0.0.1:9"}
    }});
    create(&client, &ns_name, site)
        .await
        .expect("ProxyTarget after");
    let fleet = admin
        .fleet_where("dp-b acked the change", |fleet| {
            fleet.acked("dp-b").is_some() && fleet.acked("dp-b") != before
        })
        .await;
    assert_eq!(fleet.ids(), ["dp-b"], "{}", fleet.0);
    let view = dp_b.view().await.expect("dp-b view");
    assert_eq!(view.count("proxyTargets"), Some(1), "{}", view.json);
    assert_eq!(dp_a.view().await.expect("dp-a view").version, before);
    let log = operator.log();
    assert!(log.contains("no longer valid; disconnecting it"), "{log}");
    for secret in [&token_a, &token_b, &stranger, &other_audience] {
        assert!(
            !log.contains(secret.as_str()),
            "a token in the operator's log"
        );
    }
    ns.cleanup(&client).await;
}

/// The operator's admin port over HTTPS, trusting the test's CA alone.
struct Admin {
    addr: SocketAddr,
    ca: String,
}

impl Admin {
    async fn get(&self, path: &str) -> postern_harness::Curl {
        let bearer = format!("Authorization: Bearer {HARNESS_READ_TOKEN}");
        let url = format!("https://localhost:{}{path}", self.addr.port());
        curl(&["--cacert", &self.ca, "-H", &bearer, &url]).await
    }

    async fn fleet(&self) -> Fleet {
        let answer = self.get("/api/v1/overview").await;
        assert_eq!(answer.status, 200, "{} {}", answer.body, answer.stderr);
        Fleet(answer.json())
    }

    async fn fleet_where(&self, what: &str, check: impl Fn(&Fleet) -> bool) -> Fleet {
        wait_for(what, WAIT, || async {
            let fleet = self.fleet().await;
            check(&fleet).then_some(fleet)
        })
        .await
    }
}

/// The operator's overview.
struct Fleet(Value);

impl Fleet {
    fn planes(&self) -> &[Value] {
        self.0["dataPlanes"].as_array().map_or(&[], Vec::as_slice)
    }

    /// The data planes' ids, sorted.
    fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .planes()
            .iter()
            .filter_map(|dp| dp["id"].as_str().map(str::to_string))
            .collect();
        ids.sort();
        ids
    }

    /// The version `id` acked, when it is the one published.
    fn acked(&self, id: &str) -> Option<String> {
        let published = self.0["snapshot"]["version"].as_str()?;
        self.planes()
            .iter()
            .find(|dp| dp["id"] == id)
            .and_then(|dp| dp["ackedVersion"].as_str())
            .filter(|acked| *acked == published)
            .map(str::to_string)
    }
}

/// A ServiceAccount token from the TokenRequest API, bound to a Secret.
async fn token(client: &Client, ns: &str, sa: &str, audience: &str, secret: &str) -> String {
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![audience.into()],
            expiration_seconds: Some(3600),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Secret".into()),
                name: Some(secret.into()),
                uid: None,
            }),
        },
        ..TokenRequest::default()
    };
    let issued: TokenRequest = Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create_subresource("token", sa, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("token for {sa} bound to {secret}: {e}"));
    issued.status.map(|s| s.token).unwrap_or_default()
}

/// Speaks the sync protocol's hello (a 4-byte length, then JSON) with
/// `token` claiming `id`, and returns the operator's refusal. The
/// credential is checked before protocols and schemas, so those need not
/// be this build's.
async fn hello(sync: SocketAddr, token: &str, id: &str) -> String {
    let hello = json!({"hello": {
        "protocol": 1, "protocols": [1], "dataplaneId": id, "token": token,
        "schemas": [1], "currentVersion": null,
    }});
    let body = hello.to_string().into_bytes();
    let mut conn = TcpStream::connect(sync).await.expect("connect to sync");
    let len = u32::try_from(body.len()).expect("small hello");
    conn.write_all(&len.to_be_bytes()).await.expect("write");
    conn.write_all(&body).await.expect("write");
    let mut len = [0u8; 4];
    tokio::time::timeout(WAIT, conn.read_exact(&mut len))
        .await
        .expect("an answer in time")
        .expect("an answer");
    let mut frame = vec![0u8; u32::from_be_bytes(len) as usize];
    conn.read_exact(&mut frame).await.expect("the answer");
    let answer: Value = serde_json::from_slice(&frame).expect("JSON answer");
    match answer["refused"]["reason"].as_str() {
        Some(reason) => reason.to_string(),
        None => panic!("expected a refusal, got {answer}"),
    }
}
