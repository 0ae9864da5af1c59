//! The authorization server and the guard refusing what they must, driven
//! by hand with curl (a real client would never send most of this): PKCE
//! missing or `plain`, a reused code, a wrong redirect URI, a token for
//! another host, an expired token, a rotated refresh token replayed, users
//! and orgs outside the allowlists, a trailing-slash issuer, a `resource`
//! of another server, an unknown client, and Redis down.
//!
//! Each test starts its own GitHub stand-in and postern (a second or so):
//! no test sees another's rate-limit counters or state.

use std::time::Duration;

use postern_harness::oauth::{
    Flow, OauthRig, OauthSetup, Pkce, Redirected, STANDIN_USERS, Served, Tools, enc, oauth_route,
    redis_server,
};
use postern_harness::{Backend, Curl, eventually};
use postern_oauth::keys::KeySet;
use postern_snapshot::{SigningAlg, SigningKey};
use serde_json::Value;

const REDIRECT: &str = "http://127.0.0.1:9/callback";

struct Fx {
    rig: OauthRig,
    flow: Flow,
    _standin: Served,
    _backend: Backend,
}

/// Servers: `auth` (1h tokens), `short` (1 s tokens), `auth2`. Sites of
/// `auth`: mcp (scope mcp, org acme), other (scope mcp), users (alice
/// only), team (anyone; /acme for org acme, /alice for alice); of
/// `short`: brief; of `auth2`: foreign.
async fn fixture(label: &str, args: Vec<String>) -> Option<Fx> {
    let tools = Tools::find(&[])?;
    let standin = tools.github_standin(STANDIN_USERS).await;
    let backend = Backend::start("app");
    let (gh, app) = (standin.url(), backend.url());
    let rig = OauthSetup::new(label)
        .github_server("auth", "auth.localhost", &gh, "")
        .github_server("short", "short-auth.localhost", &gh, "accessTokenTtl: 1s")
        .github_server("auth2", "auth2.localhost", &gh, "")
        .protect(
            "mcp",
            "mcp.localhost",
            &app,
            "auth",
            "scopes: [mcp], allowedOrgs: [acme]",
        )
        .protect("other", "other.localhost", &app, "auth", "scopes: [mcp]")
        .protect(
            "users",
            "users.localhost",
            &app,
            "auth",
            "allowedUsers: [alice]",
        )
        .protect("team", "team.localhost", &app, "auth", "")
        .doc(oauth_route(
            "acme",
            "team",
            "/acme",
            "auth",
            "allowedOrgs: [acme]",
        ))
        .doc(oauth_route(
            "alice",
            "team",
            "/alice",
            "auth",
            "allowedUsers: [alice]",
        ))
        .protect("brief", "brief.localhost", &app, "short", "scopes: [mcp]")
        .protect("foreign", "foreign.localhost", &app, "auth2", "")
        .args(args)
        .start()
        .await;
    let flow = rig.flow();
    Some(Fx {
        rig,
        flow,
        _standin: standin,
        _backend: backend,
    })
}

impl Fx {
    fn issuer(&self) -> String {
        self.rig.origin("auth.localhost")
    }

    fn origin(&self, host: &str) -> String {
        self.rig.origin(host)
    }

    async fn client(&self) -> String {
        self.flow.register(&self.issuer(), &[REDIRECT]).await
    }

    /// Where `user`'s login for `host` ends at the client, in a fresh
    /// agent (no session at the authorization server).
    async fn login_as(&self, client: &str, host: &str, user: &str) -> (Redirected, Pkce) {
        let resource = self.origin(host);
        let (result, pkce) = self
            .flow
            .fresh()
            .code_flow(&self.issuer(), client, REDIRECT, Some(&resource), user)
            .await;
        let redirected = result.unwrap_or_else(|r| panic!("{user}'s login stopped at {r:?}"));
        (redirected, pkce)
    }

    /// alice's code for `host` and its PKCE pair.
    async fn code(&self, client: &str, host: &str) -> (String, Pkce) {
        let (redirected, pkce) = self.login_as(client, host, "alice").await;
        (redirected.code().to_string(), pkce)
    }

    /// Tokens of `user` for `host` from `server` (a fresh client).
    async fn tokens_from(&self, server: &str, host: &str, user: &str) -> Value {
        let issuer = self.origin(server);
        let client = self.flow.register(&issuer, &[REDIRECT]).await;
        let flow = self.flow.fresh();
        flow.login(&issuer, &client, REDIRECT, &self.origin(host), user)
            .await
    }

    async fn tokens(&self, host: &str, user: &str) -> Value {
        self.tokens_from("auth.localhost", host, user).await
    }

    /// GET `https://host/path` with the token.
    async fn call(&self, host: &str, path: &str, token: &str) -> Curl {
        let url = format!("{}{path}", self.origin(host));
        self.flow.bearer(&url, token).await
    }

    /// GET /authorize with `pairs`, not followed.
    async fn authorize(&self, pairs: &[(&str, &str)]) -> Curl {
        let query: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect();
        let url = format!("{}/authorize?{}", self.issuer(), query.join("&"));
        self.flow.get(&url, &[]).await
    }
}

fn access(tokens: &Value) -> &str {
    tokens["access_token"].as_str().expect("access_token")
}

fn refresh(tokens: &Value) -> &str {
    tokens["refresh_token"].as_str().expect("refresh_token")
}

/// The redirect to [`REDIRECT`] that `r` is.
fn redirected(r: &Curl) -> Redirected {
    let location = r.header("location").unwrap_or_default();
    assert!(
        r.status == 302 && location.starts_with(REDIRECT),
        "expected a redirect to the client: {r:?}"
    );
    Redirected::parse(location)
}

/// An OAuth error answer of the token endpoint.
fn assert_oauth_error(r: &Curl, status: u16, error: &str) {
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (status, Some(error)),
        "{r:?}"
    );
}

/// A 401 whose challenge says `invalid_token`.
fn assert_invalid_token(r: &Curl, description: &str) {
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert_eq!(r.status, 401, "{r:?}");
    assert!(
        challenge.contains("error=\"invalid_token\"") && challenge.contains(description),
        "{challenge}"
    );
}

/// An HTML error page, never a redirect (RFC 6749 §4.1.2.1).
fn assert_error_page(r: &Curl, says: &str) {
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.header("location"), None, "{r:?}");
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("text/html")),
        "{r:?}"
    );
    assert!(r.body.contains(says), "{}", r.body);
}

fn payload(jwt: &str) -> Value {
    use base64::Engine;
    let part = jwt.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

#[tokio::test]
async fn authorize_without_pkce_is_refused() {
    let Some(fx) = fixture("oauth-no-pkce", vec![]).await else {
        return;
    };
    let client = fx.client().await;
    let resource = fx.origin("mcp.localhost");
    let r = fx
        .authorize(&[
            ("response_type", "code"),
            ("client_id", &client),
            ("redirect_uri", REDIRECT),
            ("state", "s1"),
            ("resource", &resource),
        ])
        .await;
    let q = redirected(&r);
    assert_eq!(q.param("error"), Some("invalid_request"), "{q:?}");
    assert_eq!(q.param("state"), Some("s1"));
    assert_eq!(q.param("iss"), Some(fx.issuer().as_str()));
    assert_eq!(q.param("code"), None);
    assert!(
        q.param("error_description")
            .is_some_and(|d| d.contains("PKCE"))
    );
}

#[tokio::test]
async fn plain_pkce_is_refused() {
    let Some(fx) = fixture("oauth-plain-pkce", vec![]).await else {
        return;
    };
    let meta = fx
        .flow
        .get(
            &format!("{}/.well-known/oauth-authorization-server", fx.issuer()),
            &[],
        )
        .await;
    assert_eq!(
        meta.json()["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    let client = fx.client().await;
    let resource = fx.origin("mcp.localhost");
    let verifier = "a-plain-verifier-of-at-least-forty-three-characters-long";
    for method in [Some("plain"), None] {
        let mut pairs = vec![
            ("response_type", "code"),
            ("client_id", client.as_str()),
            ("redirect_uri", REDIRECT),
            ("state", "s2"),
            ("resource", &resource),
            ("code_challenge", verifier),
        ];
        if let Some(m) = method {
            pairs.push(("code_challenge_method", m));
        }
        let q = redirected(&fx.authorize(&pairs).await);
        assert_eq!(
            q.param("error"),
            Some("invalid_request"),
            "{method:?}: {q:?}"
        );
        assert_eq!(q.param("code"), None);
    }
    // With S256, the verifier must hash to the challenge: the challenge
    // itself (what a `plain` client would send) is refused.
    let (code, pkce) = fx.code(&client, "mcp.localhost").await;
    let r = fx
        .flow
        .exchange(&fx.issuer(), &client, REDIRECT, &code, &pkce.challenge)
        .await;
    assert_oauth_error(&r, 400, "invalid_grant");
}

#[tokio::test]
async fn a_reused_code_is_refused_and_revokes_its_refresh_token() {
    let Some(fx) = fixture("oauth-code-reuse", vec![]).await else {
        return;
    };
    let client = fx.client().await;
    let (code, pkce) = fx.code(&client, "mcp.localhost").await;
    let issuer = fx.issuer();
    let exchange = || {
        fx.flow
            .exchange(&issuer, &client, REDIRECT, &code, &pkce.verifier)
    };
    let first = exchange().await;
    assert_eq!(first.status, 200, "{first:?}");
    let tokens = first.json();
    assert_eq!(first.header("cache-control"), Some("no-store"));
    let second = exchange().await;
    assert_oauth_error(&second, 400, "invalid_grant");
    let r = fx
        .flow
        .refresh(&fx.issuer(), &client, refresh(&tokens))
        .await;
    assert_oauth_error(&r, 400, "invalid_grant");
}

#[tokio::test]
async fn a_wrong_redirect_uri_is_refused() {
    let Some(fx) = fixture("oauth-redirect-uri", vec![]).await else {
        return;
    };
    let other = "http://127.0.0.1:9/other";
    let client = fx.flow.register(&fx.issuer(), &[REDIRECT, other]).await;
    let resource = fx.origin("mcp.localhost");
    let pkce = Pkce::new();
    let ask = |redirect: &'static str| {
        let (client, resource, challenge) =
            (client.clone(), resource.clone(), pkce.challenge.clone());
        let fx = &fx;
        async move {
            fx.authorize(&[
                ("response_type", "code"),
                ("client_id", &client),
                ("redirect_uri", redirect),
                ("state", "s3"),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
                ("resource", &resource),
            ])
            .await
        }
    };
    for bad in [
        "https://evil.example/callback",
        "http://127.0.0.1:9/callback/more",
    ] {
        assert_error_page(&ask(bad).await, "redirect_uri is not registered");
    }
    // Loopback redirect URIs match on any port (RFC 8252 §7.3).
    let r = ask("http://127.0.0.1:5555/callback").await;
    assert_eq!(r.status, 302, "{r:?}");
    // A code issued for one registered URI is refused with the other.
    let (code, pkce) = fx.code(&client, "mcp.localhost").await;
    let r = fx
        .flow
        .exchange(&fx.issuer(), &client, other, &code, &pkce.verifier)
        .await;
    assert_oauth_error(&r, 400, "invalid_grant");
}

#[tokio::test]
async fn a_token_for_another_host_is_refused() {
    let Some(fx) = fixture("oauth-audience", vec![]).await else {
        return;
    };
    let tokens = fx.tokens("mcp.localhost", "alice").await;
    let claims = payload(access(&tokens));
    assert_eq!(
        claims["aud"].as_str(),
        Some(fx.origin("mcp.localhost").as_str())
    );
    assert_eq!(claims["iss"].as_str(), Some(fx.issuer().as_str()));
    let ok = fx.call("mcp.localhost", "/x", access(&tokens)).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    // Same server, same scope, another host.
    let r = fx.call("other.localhost", "/x", access(&tokens)).await;
    assert_invalid_token(&r, "another resource");
    let metadata = format!(
        "resource_metadata=\"{}/.well-known/oauth-protected-resource/x\"",
        fx.origin("other.localhost")
    );
    assert!(
        r.header("www-authenticate")
            .is_some_and(|c| c.contains(&metadata))
    );
    // Another server's token for its own host.
    let foreign = fx
        .tokens_from("auth2.localhost", "foreign.localhost", "alice")
        .await;
    let r = fx.call("foreign.localhost", "/", access(&foreign)).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = fx.call("mcp.localhost", "/", access(&foreign)).await;
    assert_eq!(r.status, 401, "{r:?}");
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let Some(fx) = fixture("oauth-expired", vec![]).await else {
        return;
    };
    let tokens = fx
        .tokens_from("short-auth.localhost", "brief.localhost", "alice")
        .await;
    assert_eq!(tokens["expires_in"], 1);
    let token = access(&tokens);
    let first = fx.call("brief.localhost", "/", token).await;
    assert_eq!(first.status, 200, "{first:?}");
    // Refused once expired (the guard allows a few seconds of clock skew).
    let r = eventually("the token to expire", Duration::from_secs(30), || async {
        let r = fx.call("brief.localhost", "/", token).await;
        if r.status == 401 {
            Ok(r)
        } else {
            Err(r.status)
        }
    })
    .await;
    assert_invalid_token(&r, "expired");
    // A refresh gives a working token again.
    let issuer = fx.origin("short-auth.localhost");
    let client = payload(token)["client_id"].as_str().map(String::from);
    let r = fx
        .flow
        .refresh(&issuer, &client.expect("client_id"), refresh(&tokens))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let again = fx.call("brief.localhost", "/", access(&r.json())).await;
    assert_eq!(again.status, 200, "{again:?}");
}

#[tokio::test]
async fn a_refresh_token_replayed_after_rotation_revokes_its_family() {
    let Some(fx) = fixture("oauth-refresh-reuse", vec![]).await else {
        return;
    };
    let issuer = fx.issuer();
    let tokens = fx.tokens("mcp.localhost", "alice").await;
    let client = payload(access(&tokens))["client_id"]
        .as_str()
        .map(String::from)
        .expect("client_id");
    let rotate = |token: String| {
        let (flow, issuer, client) = (&fx.flow, issuer.clone(), client.clone());
        async move { flow.refresh(&issuer, &client, &token).await }
    };
    let r0 = refresh(&tokens).to_string();
    let first = rotate(r0.clone()).await;
    assert_eq!(first.status, 200, "{first:?}");
    let r1 = refresh(&first.json()).to_string();
    assert_ne!(r1, r0, "rotation gives a new refresh token");
    // Within the grace window, before its successor is used, a second
    // presentation gets the same successor (concurrent refreshes).
    let again = rotate(r0.clone()).await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(refresh(&again.json()), r1);
    // The successor is used: the family moved on.
    let second = rotate(r1.clone()).await;
    assert_eq!(second.status, 200, "{second:?}");
    let r2 = refresh(&second.json()).to_string();
    // A token rotated two steps ago is a replay: refused, and the whole
    // family with it.
    assert_oauth_error(&rotate(r0).await, 400, "invalid_grant");
    assert_oauth_error(&rotate(r2).await, 400, "invalid_grant");
    assert_oauth_error(&rotate(r1).await, 400, "invalid_grant");
}

/// The grace window is 30 s (fixed): a refresh token presented again
/// more than 30 s after its first rotation is reuse, even though its
/// successor was never used.
#[tokio::test]
async fn a_refresh_token_reused_after_the_grace_window_revokes_its_family() {
    let Some(fx) = fixture("oauth-refresh-grace", vec![]).await else {
        return;
    };
    let issuer = fx.issuer();
    let tokens = fx.tokens("mcp.localhost", "alice").await;
    let client = payload(access(&tokens))["client_id"]
        .as_str()
        .map(String::from)
        .expect("client_id");
    let first = fx.flow.refresh(&issuer, &client, refresh(&tokens)).await;
    assert_eq!(first.status, 200, "{first:?}");
    let rotated_at = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(31).saturating_sub(rotated_at.elapsed())).await;
    let late = fx.flow.refresh(&issuer, &client, refresh(&tokens)).await;
    assert_oauth_error(&late, 400, "invalid_grant");
    assert!(late.body.contains("reused"), "{late:?}");
    let successor = fx
        .flow
        .refresh(&issuer, &client, refresh(&first.json()))
        .await;
    assert_oauth_error(&successor, 400, "invalid_grant");
}

#[tokio::test]
async fn a_user_not_in_the_allowlist_is_refused() {
    let Some(fx) = fixture("oauth-allowed-users", vec![]).await else {
        return;
    };
    let client = fx.client().await;
    let (bob, _) = fx.login_as(&client, "users.localhost", "bob").await;
    assert_eq!(bob.param("error"), Some("access_denied"), "{bob:?}");
    assert_eq!(bob.param("code"), None);
    assert_eq!(bob.param("iss"), Some(fx.issuer().as_str()));
    let (alice, _) = fx.login_as(&client, "users.localhost", "alice").await;
    assert!(alice.param("code").is_some(), "{alice:?}");
    // On a route of a site open to anyone: bob passes the site, not the route.
    let bob = fx.tokens("team.localhost", "bob").await;
    let alice = fx.tokens("team.localhost", "alice").await;
    assert_eq!(
        fx.call("team.localhost", "/", access(&bob)).await.status,
        200
    );
    let r = fx.call("team.localhost", "/alice/x", access(&bob)).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(
        r.body.contains("access_denied") || r.body.contains("not allowed"),
        "{r:?}"
    );
    let r = fx.call("team.localhost", "/alice/x", access(&alice)).await;
    assert_eq!(r.status, 200, "{r:?}");
}

#[tokio::test]
async fn a_user_without_an_allowed_org_is_refused() {
    let Some(fx) = fixture("oauth-allowed-orgs", vec![]).await else {
        return;
    };
    let client = fx.client().await;
    // carol is in widgets, not acme.
    let (carol, _) = fx.login_as(&client, "mcp.localhost", "carol").await;
    assert_eq!(carol.param("error"), Some("access_denied"), "{carol:?}");
    assert_eq!(carol.param("code"), None);
    let carol = fx.tokens("team.localhost", "carol").await;
    let alice = fx.tokens("team.localhost", "alice").await;
    assert_eq!(
        payload(access(&carol))["groups"],
        serde_json::json!(["widgets"])
    );
    let r = fx.call("team.localhost", "/acme", access(&carol)).await;
    assert_eq!(r.status, 403, "{r:?}");
    let r = fx.call("team.localhost", "/acme", access(&alice)).await;
    assert_eq!(r.status, 200, "{r:?}");
}

#[tokio::test]
async fn an_issuer_with_a_trailing_slash_is_refused() {
    let Some(fx) = fixture("oauth-issuer-slash", vec![]).await else {
        return;
    };
    let issuer = fx.issuer();
    assert!(!issuer.ends_with('/'));
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        let r = fx.flow.get(&format!("{issuer}{path}"), &[]).await;
        assert_eq!(r.json()["issuer"].as_str(), Some(issuer.as_str()), "{path}");
    }
    // The trailing-slash form of the metadata URL is not another issuer.
    let r = fx
        .flow
        .get(
            &format!("{issuer}/.well-known/oauth-authorization-server/"),
            &[],
        )
        .await;
    assert!(
        r.status == 404 || r.json()["issuer"] == issuer.as_str(),
        "{r:?}"
    );
    let prm = fx
        .flow
        .get(
            &format!(
                "{}/.well-known/oauth-protected-resource/mcp",
                fx.origin("mcp.localhost")
            ),
            &[],
        )
        .await;
    assert_eq!(
        prm.json()["authorization_servers"],
        serde_json::json!([issuer])
    );
    // A token signed with the server's own key: accepted as issued, refused
    // once its iss carries a trailing slash.
    let tokens = fx.tokens("mcp.localhost", "alice").await;
    let claims = payload(access(&tokens));
    let keys = KeySet::from_snapshot(&[SigningKey {
        kid: "k1".into(),
        alg: SigningAlg::ES256,
        private_key_pem: fx.rig.signing_key.clone(),
    }])
    .expect("the setup's signing key");
    let resigned = keys.sign("at+jwt", &claims).expect("sign");
    let r = fx.call("mcp.localhost", "/", &resigned).await;
    assert_eq!(r.status, 200, "the same claims re-signed pass: {r:?}");
    let mut slashed = claims.clone();
    slashed["iss"] = format!("{issuer}/").into();
    let slashed = keys.sign("at+jwt", &slashed).expect("sign");
    assert_invalid_token(
        &fx.call("mcp.localhost", "/", &slashed).await,
        "another server",
    );
}

#[tokio::test]
async fn a_resource_of_another_server_is_an_invalid_target() {
    let Some(fx) = fixture("oauth-invalid-target", vec![]).await else {
        return;
    };
    let client = fx.client().await;
    let pkce = Pkce::new();
    let port = fx.rig.port();
    for resource in [
        fx.origin("foreign.localhost"),
        format!("https://mcp.localhost:{}", port.wrapping_add(1)),
        format!("http://mcp.localhost:{port}"),
        "https://nowhere.example/".to_string(),
    ] {
        let r = fx
            .authorize(&[
                ("response_type", "code"),
                ("client_id", &client),
                ("redirect_uri", REDIRECT),
                ("state", "s4"),
                ("code_challenge", &pkce.challenge),
                ("code_challenge_method", "S256"),
                ("resource", &resource),
            ])
            .await;
        let q = redirected(&r);
        assert_eq!(
            q.param("error"),
            Some("invalid_target"),
            "{resource}: {q:?}"
        );
        assert_eq!(q.param("state"), Some("s4"));
    }
    // At the token endpoint, a resource other than the code's.
    let (code, pkce) = fx.code(&client, "mcp.localhost").await;
    let other = fx.origin("other.localhost");
    let pairs = [
        ("grant_type", "authorization_code"),
        ("client_id", client.as_str()),
        ("redirect_uri", REDIRECT),
        ("code", &code),
        ("code_verifier", &pkce.verifier),
        ("resource", &other),
    ];
    assert_oauth_error(
        &fx.flow.token(&fx.issuer(), &pairs).await,
        400,
        "invalid_target",
    );
}

#[tokio::test]
async fn an_unregistered_client_gets_an_error_page_and_no_redirect() {
    let Some(fx) = fixture("oauth-unknown-client", vec![]).await else {
        return;
    };
    let pkce = Pkce::new();
    let resource = fx.origin("mcp.localhost");
    let base = [
        ("response_type", "code"),
        ("redirect_uri", REDIRECT),
        ("state", "s5"),
        ("code_challenge", pkce.challenge.as_str()),
        ("code_challenge_method", "S256"),
        ("resource", resource.as_str()),
    ];
    let mut unknown = base.to_vec();
    unknown.push(("client_id", "never-registered"));
    assert_error_page(&fx.authorize(&unknown).await, "unknown client");
    assert_error_page(&fx.authorize(&base).await, "client_id is missing");
    let r = fx
        .flow
        .refresh(&fx.issuer(), "never-registered", "whatever")
        .await;
    assert_oauth_error(&r, 401, "invalid_client");
}

#[tokio::test]
async fn with_redis_down_the_token_endpoint_answers_503_and_tokens_still_work() {
    let Some(mut redis) = redis_server().await else {
        return;
    };
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let Some(fx) = fixture("oauth-redis-down", vec!["--redis-url".into(), url]).await else {
        return;
    };
    let issuer = fx.issuer();
    let client = fx.client().await;
    let tokens = fx
        .flow
        .login(
            &issuer,
            &client,
            REDIRECT,
            &fx.origin("mcp.localhost"),
            "alice",
        )
        .await;
    redis.proc.kill();
    let r = fx.flow.refresh(&issuer, &client, refresh(&tokens)).await;
    assert_oauth_error(&r, 503, "temporarily_unavailable");
    assert!(r.body.contains("state store is unreachable"), "{r:?}");
    assert!(r.header("retry-after").is_some(), "{r:?}");
    let pkce = Pkce::new();
    let r = fx
        .authorize(&[
            ("response_type", "code"),
            ("client_id", &client),
            ("redirect_uri", REDIRECT),
            ("code_challenge", &pkce.challenge),
            ("code_challenge_method", "S256"),
        ])
        .await;
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("state store is unreachable"), "{r:?}");
    // The guard checks tokens locally: still fine.
    let r = fx.call("mcp.localhost", "/x", access(&tokens)).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["headers"]["x-forwarded-user"][0], "alice");
    assert_eq!(fx.rig.postern.readyz().await, Ok(200));
}

/// A POST the guard refuses before reading its body (the MCP SDK's first
/// request: headers and body in two TLS records) must leave its HTTP/1.1
/// connection usable for the client's next request, or say
/// `Connection: close`: clients pool connections, and the next request
/// (the metadata lookup) goes on the same one.
#[tokio::test]
async fn a_refused_post_does_not_break_its_keep_alive_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(fx) = fixture("oauth-refused-keepalive", vec![]).await else {
        return;
    };
    let port = fx.rig.port();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from("mcp.localhost").expect("name");
    let connector = fx.rig.ca.connector(&[b"http/1.1"]);
    let mut tls = connector.connect(name, tcp).await.expect("TLS");
    let body = br#"{"jsonrpc":"2.0","id":1,"method":"server/discover"}"#;
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: mcp.localhost:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.expect("head");
    tls.flush().await.expect("flush");
    tokio::time::sleep(Duration::from_millis(100)).await;
    tls.write_all(body).await.expect("body");
    tls.flush().await.expect("flush");
    let first = read_response(&mut tls).await;
    assert!(first.starts_with("HTTP/1.1 401"), "{first}");
    let says_close = first
        .to_ascii_lowercase()
        .contains("\r\nconnection: close\r\n");
    let next = format!(
        "GET /.well-known/oauth-protected-resource/mcp HTTP/1.1\r\nHost: mcp.localhost:{port}\r\n\r\n"
    );
    let sent = tls.write_all(next.as_bytes()).await;
    let mut second = vec![0; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut second)).await;
    let second = match (sent, read) {
        (Ok(()), Ok(Ok(n))) => String::from_utf8_lossy(&second[..n]).into_owned(),
        (sent, read) => format!("no answer: {sent:?} {read:?}"),
    };
    assert!(
        says_close || second.starts_with("HTTP/1.1 200"),
        "the 401 did not say `Connection: close`, yet the connection was dropped: {second}\nfirst answer:\n{first}"
    );
}

/// One HTTP/1.1 response (chunked or with a length) as text.
async fn read_response<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> String {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let complete = |seen: &[u8]| {
        let text = String::from_utf8_lossy(seen).to_ascii_lowercase();
        let Some((head, rest)) = text.split_once("\r\n\r\n") else {
            return false;
        };
        if head.contains("transfer-encoding: chunked") {
            return rest.ends_with("0\r\n\r\n");
        }
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|n| n.trim().parse::<usize>().ok())
            .unwrap_or(0);
        rest.len() >= length
    };
    while !complete(&seen) {
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await;
        match read {
            Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&buf[..n]),
            other => panic!(
                "response cut short ({other:?}): {}",
                String::from_utf8_lossy(&seen)
            ),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}
