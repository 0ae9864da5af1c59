//! OAuth in cluster mode: an authorization server and a host it protects,
//! applied to the rig's API server, compiled by a real operator whose
//! leader generates the signing key Secret, served by a real data plane.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use postern_api::ConditionStatus;
use postern_harness::{Backend, Ca, curl};
use postern_tests::resources::apply_secret;
use postern_tests::spine::{Spine, WAIT};
use postern_tests::{eventually, rig_or_skip};
use serde_json::json;

const AUTH: &str = "auth.oauth.test";
const MCP: &str = "mcp.oauth.test";

fn target(name: &str, spec: serde_json::Value) -> serde_json::Value {
    json!({"kind": "ProxyTarget", "metadata": {"name": name}, "spec": spec})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_keys_an_authorization_server_and_the_data_plane_serves_and_guards() {
    let spine = Spine::start(rig_or_skip!(), "oauth").await;
    let ns = spine.ns().to_string();
    let ca = Ca::new("oauth-cluster CA");
    let leaf = ca.leaf(&[AUTH, MCP]);
    apply_secret(
        &spine.client,
        &ns,
        "tls",
        &[("tls.crt", &leaf.cert), ("tls.key", &leaf.key)],
    )
    .await;
    apply_secret(&spine.client, &ns, "gh", &[("clientSecret", "gh-secret")]).await;
    let backend = Backend::text("mcp");
    spine
        .create(target(
            "auth",
            json!({
                "hostnames": [AUTH],
                "tls": {"secretRef": {"name": "tls"}},
                "authorizationServer": {
                    "github": {"clientId": "gh-app", "clientSecretRef": {"name": "gh"}},
                    "scopes": ["mcp"]
                }
            }),
        ))
        .await;
    spine
        .create(target(
            "mcp",
            json!({
                "hostnames": [MCP],
                "tls": {"secretRef": {"name": "tls"}},
                "backend": {"url": backend.url()},
                "auth": {"type": "oauth", "server": {"name": "auth"}, "scopes": ["mcp"]}
            }),
        ))
        .await;
    spine
        .create(target(
            "lost",
            json!({
                "hostnames": ["lost.oauth.test"],
                "backend": {"url": backend.url()},
                "auth": {"type": "oauth", "server": {"name": "nowhere"}}
            }),
        ))
        .await;

    // The leader creates the key Secret, owned by its target.
    let secrets: Api<Secret> = Api::namespaced(spine.client.clone(), &ns);
    let key = eventually("the generated signing key Secret", WAIT, || async {
        match secrets.get_opt("auth-oauth-keys").await {
            Ok(Some(s)) => Ok(s),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let owner = key.metadata.owner_references.unwrap_or_default();
    assert_eq!(
        owner
            .iter()
            .map(|o| (o.kind.as_str(), o.name.as_str()))
            .collect::<Vec<_>>(),
        [("ProxyTarget", "auth")]
    );
    let pem = key
        .data
        .and_then(|d| d.get("generated.pem").cloned())
        .expect("generated.pem");
    assert!(String::from_utf8_lossy(&pem.0).contains("BEGIN PRIVATE KEY"));

    spine.programmed("ProxyTarget", "auth", 1, WAIT).await;
    spine.programmed("ProxyTarget", "mcp", 1, WAIT).await;
    let lost = spine
        .accepted(
            "ProxyTarget",
            "lost",
            ConditionStatus::False,
            "ServerNotFound",
        )
        .await;
    let message = lost
        .condition("Accepted")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(message.contains("nowhere"), "{message}");

    // The data plane answers as the issuer the client addressed.
    let port = spine.dataplane().https.port();
    let ca_file = ca.file();
    let ca_path = ca_file.to_string_lossy();
    let resolve = |host: &str| format!("{host}:{port}:127.0.0.1");
    let issuer = format!("https://{AUTH}:{port}");
    let r = curl(&[
        "--resolve",
        &resolve(AUTH),
        "--cacert",
        &ca_path,
        &format!("{issuer}/.well-known/oauth-authorization-server"),
    ])
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let metadata = r.json();
    assert_eq!(metadata["issuer"], issuer.as_str());
    assert_eq!(
        metadata["code_challenge_methods_supported"],
        json!(["S256"])
    );
    let r = curl(&[
        "--resolve",
        &resolve(AUTH),
        "--cacert",
        &ca_path,
        &format!("{issuer}/jwks"),
    ])
    .await;
    let jwks = r.json();
    assert_eq!(jwks["keys"][0]["kid"], "generated", "{jwks}");
    assert_eq!(jwks["keys"][0]["alg"], "ES256", "{jwks}");

    // The protected host sends clients to its metadata, which names the server.
    let mcp = format!("https://{MCP}:{port}");
    let r = curl(&[
        "--resolve",
        &resolve(MCP),
        "--cacert",
        &ca_path,
        "-X",
        "POST",
        &format!("{mcp}/mcp"),
    ])
    .await;
    assert_eq!(r.status, 401, "{r:?}");
    let challenge = r.header("www-authenticate").unwrap_or_default().to_string();
    assert!(
        challenge.contains(&format!(
            "resource_metadata=\"{mcp}/.well-known/oauth-protected-resource/mcp\""
        )),
        "{challenge}"
    );
    let r = curl(&[
        "--resolve",
        &resolve(MCP),
        "--cacert",
        &ca_path,
        &format!("{mcp}/.well-known/oauth-protected-resource/mcp"),
    ])
    .await;
    let prm = r.json();
    assert_eq!(prm["resource"], format!("{mcp}/mcp").as_str());
    assert_eq!(prm["authorization_servers"], json!([issuer]));
    let ok = curl(&[
        "--resolve",
        &resolve(MCP),
        "--cacert",
        &ca_path,
        "-H",
        "Authorization: Bearer not-a-token",
        &format!("{mcp}/mcp"),
    ])
    .await;
    assert_eq!(ok.status, 401);
    assert!(
        ok.header("www-authenticate")
            .is_some_and(|v| v.contains("invalid_token"))
    );
    spine.ns.cleanup(&spine.client).await;
}
