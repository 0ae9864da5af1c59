//! The rig and the CRDs: valid objects of every kind are accepted by the
//! API server, invalid ones refused with the schema's own message.

use postern_tests::resources::{create, get, rejection_message};
use postern_tests::{TestNamespace, install_crds, rig_or_skip};
use serde_json::json;

fn valid_objects() -> Vec<serde_json::Value> {
    vec![
        json!({"kind": "ProxyTarget", "metadata": {"name": "api"}, "spec": {
            "hostnames": ["api.example.com"],
            "backend": {"service": {"name": "api", "port": 8080}},
            "tls": {"secretRef": {"name": "api-tls"}},
            "redirectHttp": true,
            "auth": {"type": "none"}
        }}),
        json!({"kind": "Route", "metadata": {"name": "api-v1"}, "spec": {
            "targetRef": {"name": "api"},
            "match": {"path": {"type": "Prefix", "value": "/v1/"}, "methods": ["GET", "POST"]},
            "priority": 50,
            "backend": {"url": "http://10.0.0.6:8080"}
        }}),
        json!({"kind": "UserUpstream", "metadata": {"name": "alice"}, "spec": {
            "user": "alice",
            "passwordSecretRef": {"name": "alice-proxy", "key": "password"},
            "upstream": "socks5://socks.internal:1080",
            "upstreamCredentialsSecretRef": {"name": "socks-creds"},
            "destinations": {"allow": ["*.example.com:443"], "deny": ["169.254.0.0/16"]},
            "maxConnections": 100
        }}),
        json!({"kind": "Tunnel", "metadata": {"name": "laptop"}, "spec": {
            "mode": "http",
            "hostnames": ["app.example.com"],
            "agentKeySecretRef": {"name": "laptop-agent", "key": "key"}
        }}),
        json!({"kind": "OAuthClient", "metadata": {"name": "my-app"}, "spec": {
            "redirectUris": ["https://myapp.example.com/callback"],
            "grantTypes": ["authorization_code", "refresh_token"],
            "scopes": ["read", "write"],
            "secretRef": {"name": "my-app-oauth", "key": "clientSecret"}
        }}),
    ]
}

#[tokio::test]
async fn the_api_server_accepts_valid_objects_and_refuses_invalid_ones() {
    let rig = rig_or_skip!();
    let client = rig.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&rig, "smoke").await;

    for manifest in valid_objects() {
        let kind = manifest["kind"].as_str().unwrap_or_default().to_string();
        let name = manifest["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if let Err(error) = create(&client, &ns.name, manifest).await {
            panic!("valid {kind} refused: {error}");
        }
        let stored = get(&client, &ns.name, &kind, &name).await;
        let stored = stored.unwrap_or_else(|| panic!("{kind} {name} not stored"));
        assert_eq!(stored.metadata.generation, Some(1), "{kind}");
    }

    let ftp = create(
        &client,
        &ns.name,
        json!({"kind": "UserUpstream", "metadata": {"name": "bob"}, "spec": {
            "user": "bob",
            "passwordSecretRef": {"name": "bob-proxy"},
            "upstream": "ftp://x"
        }}),
    )
    .await;
    let message = rejection_message(ftp);
    assert!(message.contains("spec.upstream"), "{message}");
    assert!(message.contains("should match"), "{message}");

    let both = create(
        &client,
        &ns.name,
        json!({"kind": "ProxyTarget", "metadata": {"name": "both"}, "spec": {
            "hostnames": ["both.example.com"],
            "backend": {"url": "http://10.0.0.5:8080", "service": {"name": "api", "port": 80}}
        }}),
    )
    .await;
    let message = rejection_message(both);
    assert!(
        message.contains("exactly one of service or url must be set"),
        "{message}"
    );

    let bad_host = create(
        &client,
        &ns.name,
        json!({"kind": "ProxyTarget", "metadata": {"name": "bad-host"}, "spec": {
            "hostnames": ["Not A Host"],
            "backend": {"url": "http://10.0.0.5:8080"}
        }}),
    )
    .await;
    let message = rejection_message(bad_host);
    assert!(message.contains("spec.hostnames[0]"), "{message}");

    ns.cleanup(&client).await;
}
