//! GitHub login against the local stand-in that speaks GitHub's wire
//! protocol (`e2e/oauth/github_standin.py`, Python standard library only):
//! authorize by a plain GET whose redirect is read, not followed, then
//! `Github::finish` over real HTTP.

mod peer;

use std::process::Command;

use peer::{Peer, param, pkce, random_token, redirect_params};
use postern_oauth::login::{Github, HttpClient, LoginError};
use postern_snapshot::GithubProvider;
use serde_json::{Value, json};

const CLIENT: &str = "postern-test";
const SECRET: &str = "postern-test-secret";
const REDIRECT: &str = "https://auth.example/login/callback";
/// More than one page of 100, so pagination is exercised.
const ORGS: usize = 150;

struct StandIn {
    peer: Peer,
    _config: TempFile,
}

struct TempFile(std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn config() -> Value {
    let orgs: Vec<Value> = (0..ORGS)
        .map(|i| match i {
            0 => json!({"login": "org-000", "public": true}),
            _ => json!(format!("org-{i:03}")),
        })
        .collect();
    json!({
        "default_user": "alice",
        "users": [
            {"login": "alice", "id": 4242, "name": "Alice Example", "orgs": orgs, "emails": [
                {"email": "alice@old.example", "primary": false, "verified": true},
                {"email": "Alice@Example.COM", "primary": true, "verified": true, "visibility": "public"}
            ]},
            {"login": "bob", "id": 4343, "orgs": [], "emails": [
                {"email": "bob@example.org", "primary": true, "verified": false}
            ]},
            {"login": "mallory", "id": 4444, "emails": ["m@example.com"], "deny": true}
        ],
        "clients": {CLIENT: SECRET},
        "require_pkce": true,
        "require_user_agent": true
    })
}

fn start() -> Option<StandIn> {
    let script = peer::workspace().join("e2e/oauth/github_standin.py");
    if !script.exists() {
        return peer::unavailable(&format!("{} is not there", script.display()));
    }
    if !peer::runs("python3") {
        return peer::unavailable("python3 does not run");
    }
    let path = std::env::temp_dir().join(format!(
        "postern-github-standin-{}-{}.json",
        std::process::id(),
        random_token().replace(['-', '_'], "")
    ));
    std::fs::write(&path, config().to_string()).expect("write the stand-in's config");
    let mut cmd = Command::new("python3");
    cmd.arg(&script)
        .arg("--config")
        .arg(&path)
        .args(["--port", "0"]);
    Some(StandIn {
        peer: peer::spawn(cmd),
        _config: TempFile(path),
    })
}

fn github(port: u16, secret: &str) -> Github {
    Github::from(&GithubProvider {
        client_id: CLIENT.into(),
        client_secret: secret.into(),
        web_url: format!("http://127.0.0.1:{port}"),
        api_url: format!("http://127.0.0.1:{port}/api/v3"),
    })
}

/// Runs the authorize step as `login` and returns (code, verifier).
async fn authorize(http: &HttpClient, gh: &Github, login: &str) -> (String, String) {
    let (verifier, challenge) = pkce();
    let state = random_token();
    let url = format!(
        "{}&login={login}",
        gh.authorize_url(REDIRECT, &state, &challenge)
    );
    let params = redirect_params(http, &url).await;
    assert_eq!(param(&params, "state"), Some(state.as_str()));
    let code = param(&params, "code").expect("a code in the redirect");
    (code.to_owned(), verifier)
}

async fn log(http: &HttpClient, port: u16, path: &str) -> Vec<Value> {
    let url = format!("http://127.0.0.1:{port}/_standin/log?path={path}");
    let resp = http.get(&url, &[]).await.expect("the stand-in's log");
    resp.json().expect("a JSON log")
}

#[tokio::test]
async fn github_login_reads_user_primary_email_and_every_org() {
    let Some(standin) = start() else { return };
    let port = standin.peer.port;
    let http = HttpClient::new(None).expect("client");
    let gh = github(port, SECRET);
    let (code, verifier) = authorize(&http, &gh, "alice").await;
    let id = gh
        .finish(&http, &code, REDIRECT, &verifier)
        .await
        .expect("login");
    assert_eq!(id.provider, "github");
    assert_eq!(id.subject, "4242");
    assert_eq!(id.login, "alice");
    assert_eq!(id.name.as_deref(), Some("Alice Example"));
    assert_eq!(id.email.as_deref(), Some("alice@example.com"));
    let want: Vec<String> = (0..ORGS).map(|i| format!("org-{i:03}")).collect();
    assert_eq!(id.groups, want, "private orgs too, across pages");

    let pages = log(&http, port, "/api/v3/user/orgs").await;
    assert_eq!(pages.len(), 2, "two pages of 100");
    for page in &pages {
        let headers = &page["headers"];
        assert!(
            headers["authorization"]
                .as_str()
                .is_some_and(|a| a.starts_with("Bearer gho_"))
        );
        assert_eq!(headers["accept"], "application/vnd.github+json");
        assert!(
            headers["user-agent"]
                .as_str()
                .is_some_and(|ua| ua.starts_with("postern/"))
        );
    }
    let token = log(&http, port, "/login/oauth/access_token").await;
    assert_eq!(token[0]["headers"]["accept"], "application/json");
    assert_eq!(token[0]["body"]["code_verifier"], verifier.as_str());
    assert_eq!(token[0]["body"]["redirect_uri"], REDIRECT);
}

#[tokio::test]
async fn github_login_without_a_verified_primary_email_has_none() {
    let Some(standin) = start() else { return };
    let http = HttpClient::new(None).expect("client");
    let gh = github(standin.peer.port, SECRET);
    let (code, verifier) = authorize(&http, &gh, "bob").await;
    let id = gh
        .finish(&http, &code, REDIRECT, &verifier)
        .await
        .expect("login");
    assert_eq!((id.login.as_str(), id.subject.as_str()), ("bob", "4343"));
    assert_eq!(id.email, None);
    assert!(id.groups.is_empty());
    assert_eq!(id.name, None);
}

#[tokio::test]
async fn github_login_refusals_and_outages_are_told_apart() {
    let Some(standin) = start() else { return };
    let port = standin.peer.port;
    let http = HttpClient::new(None).expect("client");
    let gh = github(port, SECRET);

    // A wrong PKCE verifier, then the same code again (codes are single use).
    let (code, verifier) = authorize(&http, &gh, "alice").await;
    let err = gh
        .finish(&http, &code, REDIRECT, "x".repeat(43).as_str())
        .await
        .expect_err("refused");
    assert!(matches!(err, LoginError::Refused { .. }), "{err}");
    assert!(err.to_string().contains("bad_verification_code"), "{err}");
    let err = gh
        .finish(&http, &code, REDIRECT, &verifier)
        .await
        .expect_err("refused");
    assert!(matches!(err, LoginError::Refused { .. }), "{err}");

    // Wrong client secret: GitHub's HTTP 200 with an error field.
    let (code, verifier) = authorize(&http, &gh, "alice").await;
    let err = github(port, "wrong")
        .finish(&http, &code, REDIRECT, &verifier)
        .await
        .expect_err("refused");
    assert!(
        err.to_string().contains("incorrect_client_credentials"),
        "{err}"
    );
    assert!(
        !err.to_string().contains("wrong"),
        "no secret in messages: {err}"
    );
    assert_eq!(err.status(), http::StatusCode::FORBIDDEN);

    // The user clicks Cancel: the callback carries the error.
    let (_, challenge) = pkce();
    let url = format!(
        "{}&login=mallory",
        gh.authorize_url(REDIRECT, "st", &challenge)
    );
    let params = redirect_params(&http, &url).await;
    assert_eq!(param(&params, "code"), None);
    let err = LoginError::from_callback(
        "github",
        param(&params, "error").expect("an error"),
        param(&params, "error_description"),
    );
    assert!(matches!(err, LoginError::Denied { .. }) && err.to_string().contains("access_denied"));

    // Nobody listening: the provider is unavailable, not the user refused.
    drop(standin);
    let err = gh
        .finish(&http, "c", REDIRECT, &verifier)
        .await
        .expect_err("refused");
    assert!(matches!(err, LoginError::Unavailable { .. }), "{err}");
    assert!(err.is_provider_failure());
}
