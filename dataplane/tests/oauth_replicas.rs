//! Two data planes and one Redis: replica A (127.0.0.1) and replica B
//! (127.0.0.2) serve the same manifests with the same signing key on the
//! same port, as two pods behind one address. A token issued through A
//! works on B, B refreshes a token A issued, a code A issued is redeemed
//! on B (once), and a refresh token replayed on one replica revokes the
//! family on both.

use postern_harness::Backend;
use postern_harness::oauth::{OauthSetup, STANDIN_USERS, Tools, redis_server};
use serde_json::Value;

const REDIRECT: &str = "http://127.0.0.1:9/callback";

fn assert_invalid_grant(r: &postern_harness::Curl) {
    let error = r.json()["error"].as_str().map(String::from);
    assert_eq!(
        (r.status, error.as_deref()),
        (400, Some("invalid_grant")),
        "{r:?}"
    );
}

fn token<'a>(tokens: &'a Value, key: &str) -> &'a str {
    tokens[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key}: {tokens}"))
}

#[tokio::test]
async fn tokens_codes_and_refreshes_cross_replicas() {
    let Some(tools) = Tools::find(&[]) else {
        return;
    };
    let Some(redis) = redis_server().await else {
        return;
    };
    let standin = tools.github_standin(STANDIN_USERS).await;
    let backend = Backend::start("app");
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let rig = OauthSetup::new("oauth-replica-a")
        .github_server("auth", "auth.localhost", &standin.url(), "")
        .protect(
            "mcp",
            "mcp.localhost",
            &backend.url(),
            "auth",
            "scopes: [mcp], allowedOrgs: [acme]",
        )
        .args(["--redis-url", &url])
        .start()
        .await;
    let b = rig.replica("127.0.0.2", rig.args()).await;
    let (on_a, on_b) = (rig.flow(), rig.flow_via("127.0.0.2"));
    let issuer = rig.origin("auth.localhost");
    let resource = rig.origin("mcp.localhost");
    let api = format!("{resource}/api");
    let jwks = format!("{issuer}/jwks");
    assert_eq!(
        on_a.get(&jwks, &[]).await.json(),
        on_b.get(&jwks, &[]).await.json()
    );

    // Registered, logged in and issued on A; used on B.
    let client = on_a.register(&issuer, &[REDIRECT]).await;
    let tokens = on_a
        .login(&issuer, &client, REDIRECT, &resource, "alice")
        .await;
    let r = on_b.bearer(&api, token(&tokens, "access_token")).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["headers"]["x-forwarded-user"][0], "alice");

    // Refreshed on B; the new token works on A.
    let r = on_b
        .refresh(&issuer, &client, token(&tokens, "refresh_token"))
        .await;
    assert_eq!(r.status, 200, "refresh on B of A's token: {r:?}");
    let renewed = r.json();
    let r = on_a.bearer(&api, token(&renewed, "access_token")).await;
    assert_eq!(r.status, 200, "{r:?}");
    let served_by_b = b.log();
    assert!(
        served_by_b.lines().any(|l| l.contains("postern::access")
            && l.contains("method=POST")
            && l.contains("path=\"/token\"")
            && l.contains("status=200")),
        "B answered no token request:\n{served_by_b}"
    );

    // A code issued on A is redeemed on B, and only once.
    let (result, pkce) = on_a
        .code_flow(&issuer, &client, REDIRECT, Some(&resource), "alice")
        .await;
    let code = result.expect("a code from A").code().to_string();
    let r = on_b
        .exchange(&issuer, &client, REDIRECT, &code, &pkce.verifier)
        .await;
    assert_eq!(r.status, 200, "code from A redeemed on B: {r:?}");
    let second = r.json();
    let r = on_a
        .exchange(&issuer, &client, REDIRECT, &code, &pkce.verifier)
        .await;
    assert_invalid_grant(&r);
    // ... and that reuse revoked what the first redemption (on B) issued.
    let r = on_a
        .refresh(&issuer, &client, token(&second, "refresh_token"))
        .await;
    assert_eq!(r.status, 400, "{r:?}");

    // R0 (A) → R1 (B) above → R2 (A) → R3 (B); then R0 replayed on B is
    // reuse, and the family goes on both: R3 is refused on A.
    let r = on_a
        .refresh(&issuer, &client, token(&renewed, "refresh_token"))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r2 = r.json();
    let r = on_b
        .refresh(&issuer, &client, token(&r2, "refresh_token"))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r3 = r.json();
    let r = on_b
        .refresh(&issuer, &client, token(&tokens, "refresh_token"))
        .await;
    assert_invalid_grant(&r);
    let r = on_a
        .refresh(&issuer, &client, token(&r3, "refresh_token"))
        .await;
    assert_invalid_grant(&r);
}
