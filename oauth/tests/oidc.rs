//! OpenID Connect login against a real provider, npm's `oauth2-mock-server`
//! 8.2.3 run by `oidc_peer.mjs` (Node): discovery, authorize by a plain GET
//! whose redirect is read, not followed, then `Oidc::finish` verifying real
//! ID tokens signed with RS256, PS256, ES256, ES384 and EdDSA keys.
//!
//! The package is looked for in `$OAUTH_NODE_MODULES` (a `node_modules`
//! directory), then where `e2e/oauth/setup` put it (`target/oauth/env`),
//! then in `target/oauth-login/node_modules`, where it is installed once
//! with npm when it is nowhere.

mod peer;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};

use peer::{Peer, param, pkce, random_token, redirect_params};
use postern_oauth::identity::Identity;
use postern_oauth::login::{HttpClient, LoginError, Oidc};
use postern_snapshot::OidcProvider;

const PACKAGE: &str = "oauth2-mock-server@8.2.3";
const CLIENT: &str = "postern-test";
const REDIRECT: &str = "http://127.0.0.1:9/login/callback";

fn module_dir() -> Option<PathBuf> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match FOUND.get_or_init(find_or_install) {
        Ok(dir) => Some(dir.clone()),
        Err(why) => peer::unavailable(why),
    }
}

fn has_package(dir: &Path) -> bool {
    dir.join("oauth2-mock-server/package.json").exists()
}

/// `$OAUTH_NODE_MODULES`, else the one `e2e/oauth/setup` recorded in
/// `target/oauth/env`, else our own install of the same pinned version.
fn find_or_install() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("OAUTH_NODE_MODULES").map(PathBuf::from) {
        return if has_package(&dir) {
            Ok(dir)
        } else {
            Err(format!(
                "no oauth2-mock-server in $OAUTH_NODE_MODULES={}",
                dir.display()
            ))
        };
    }
    let target = peer::workspace().join("target");
    let recorded = std::fs::read_to_string(target.join("oauth/env"))
        .ok()
        .and_then(|env| {
            env.lines()
                .find_map(|l| l.strip_prefix("OAUTH_NODE_MODULES=").map(PathBuf::from))
        });
    if let Some(dir) = recorded.filter(|d| has_package(d)) {
        return Ok(dir);
    }
    let ours = target.join("oauth-login");
    if has_package(&ours.join("node_modules")) {
        return Ok(ours.join("node_modules"));
    }
    if !peer::runs("npm") {
        return Err(
            "oauth2-mock-server is not installed (e2e/oauth/setup) and npm does not run".into(),
        );
    }
    let status = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--prefix"])
        .arg(&ours)
        .arg(PACKAGE)
        .stdout(Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() && has_package(&ours.join("node_modules")) => {
            Ok(ours.join("node_modules"))
        }
        _ => Err(format!("npm install {PACKAGE} failed")),
    }
}

struct Provider {
    peer: Peer,
    issuer: String,
}

fn start() -> Option<Provider> {
    if !peer::runs("node") {
        return peer::unavailable("node does not run");
    }
    let dir = module_dir()?;
    let mut cmd = Command::new("node");
    cmd.arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oidc_peer.mjs"))
        .arg(dir);
    let peer = peer::spawn(cmd);
    let issuer = peer.extra.trim().to_owned();
    assert!(
        issuer.starts_with("http://"),
        "the peer names its issuer: {issuer:?}"
    );
    Some(Provider { peer, issuer })
}

fn oidc(issuer: &str, client_id: &str, secret: Option<&str>) -> Oidc {
    Oidc::from(&OidcProvider {
        issuer: issuer.into(),
        client_id: client_id.into(),
        client_secret: secret.map(str::to_owned),
        scopes: vec!["email".into(), "profile".into()],
    })
}

/// One login through the provider; `fault` picks a misbehaviour of the
/// peer (see oidc_peer.mjs) and `nonce_back` the nonce `finish` expects.
async fn login(
    http: &HttpClient,
    oidc: &Oidc,
    fault: &str,
    nonce_back: Option<&str>,
) -> Result<Identity, LoginError> {
    let discovered = oidc.discover(http).await.expect("discovery");
    let redirect = format!("{REDIRECT}/{fault}");
    let (verifier, challenge) = pkce();
    let (state, nonce) = (random_token(), random_token());
    let url = oidc.authorize_url(&discovered, &redirect, &state, &nonce, &challenge);
    let params = redirect_params(http, &url).await;
    assert_eq!(param(&params, "state"), Some(state.as_str()));
    let code = param(&params, "code").expect("a code in the redirect");
    let nonce = nonce_back.unwrap_or(&nonce);
    oidc.finish(http, code, &redirect, &verifier, nonce).await
}

fn refused(result: Result<Identity, LoginError>, why: &str) {
    match result {
        Err(e @ LoginError::Refused { .. }) => {
            assert!(e.to_string().contains(why), "expected {why:?}, got: {e}");
            assert!(!e.is_provider_failure());
        }
        other => panic!("expected a refusal ({why}), got {other:?}"),
    }
}

#[tokio::test]
async fn oidc_login_verifies_id_tokens_of_every_algorithm() {
    let Some(idp) = start() else { return };
    let http = HttpClient::new(None).expect("client");
    let oidc = oidc(&idp.issuer, CLIENT, Some("s3cret"));
    // Five keys take turns with the access tokens: five logins use each
    // key once for an ID token.
    for _ in 0..5 {
        let id = login(&http, &oidc, "ok", None).await.expect("login");
        assert_eq!(
            id,
            Identity {
                provider: "oidc".into(),
                subject: "johndoe".into(),
                login: "john".into(),
                email: Some("john.doe@example.com".into()),
                name: Some("John Doe".into()),
                groups: vec!["admins".into(), "staff".into()],
            }
        );
    }
    let first = oidc.discover(&http).await.expect("cached");
    assert!(Arc::ptr_eq(
        &first,
        &oidc.discover(&http).await.expect("cached")
    ));
    assert_eq!(first.issuer, idp.issuer);
}

#[tokio::test]
async fn oidc_login_takes_the_email_from_userinfo_when_the_id_token_has_none() {
    let Some(idp) = start() else { return };
    let http = HttpClient::new(None).expect("client");
    let id = login(&http, &oidc(&idp.issuer, CLIENT, None), "userinfo", None)
        .await
        .expect("login");
    assert_eq!(id.email.as_deref(), Some("john@userinfo.example"));
    assert_eq!(id.login, "john", "the ID token's username stands");
}

#[tokio::test]
async fn oidc_login_refuses_tokens_that_do_not_verify() {
    let Some(idp) = start() else { return };
    let http = HttpClient::new(None).expect("client");
    let ours = oidc(&idp.issuer, CLIENT, Some("s3cret"));
    refused(
        login(&http, &ours, "ok", Some("another-nonce")).await,
        "nonce",
    );
    let intruder = oidc(&idp.issuer, "intruder", None);
    refused(login(&http, &intruder, "ok", None).await, "another client");
    refused(login(&http, &ours, "tamper", None).await, "signature");
    refused(
        login(&http, &ours, "alg-none", None).await,
        "not a signed JWT",
    );
    refused(login(&http, &ours, "expired", None).await, "expired");

    // The provider refuses a code redeemed with the wrong PKCE verifier.
    let discovered = ours.discover(&http).await.expect("discovery");
    let (_, challenge) = pkce();
    let url = ours.authorize_url(&discovered, REDIRECT, "s", "n", &challenge);
    let params = redirect_params(&http, &url).await;
    let code = param(&params, "code").expect("a code");
    let (wrong_verifier, _) = pkce();
    let err = ours
        .finish(&http, code, REDIRECT, &wrong_verifier, "n")
        .await;
    refused(err, "invalid_request");
}

#[tokio::test]
async fn oidc_login_discovery_wants_the_issuer_byte_for_byte() {
    let Some(idp) = start() else { return };
    let http = HttpClient::new(None).expect("client");
    let port = idp.peer.port;
    // The provider calls itself http://localhost:PORT.
    for issuer in [
        format!("http://127.0.0.1:{port}"),
        format!("{}/", idp.issuer),
    ] {
        let err = oidc(&issuer, CLIENT, None)
            .discover(&http)
            .await
            .expect_err("mismatch");
        assert!(matches!(err, LoginError::BadAnswer { .. }), "{err}");
        assert_eq!(err.status(), http::StatusCode::BAD_GATEWAY);
    }
    drop(idp);
    let gone = oidc(&format!("http://127.0.0.1:{port}"), CLIENT, None);
    let err = gone.discover(&http).await.expect_err("nobody listens");
    assert!(matches!(err, LoginError::Unavailable { .. }), "{err}");
}
