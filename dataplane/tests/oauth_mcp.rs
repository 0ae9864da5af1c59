//! The real mcp SDK (PyPI `mcp`, `e2e/oauth/mcp_client.py`) against an
//! MCP server of the same SDK behind postern: discovery from the 401,
//! dynamic registration, PKCE through the GitHub stand-in and the consent
//! page, `tools/call whoami` (identity headers in, Authorization out),
//! refresh after expiry, step-up on `insufficient_scope`, and a login
//! through a real OIDC provider (oauth2-mock-server).
//!
//! Each test starts its own stand-in, MCP server and postern: the SDK's
//! runs take a few seconds each and the processes under a second.

use postern_harness::oauth::{
    Need, OauthRig, OauthSetup, STANDIN_USERS, Served, Tools, oauth_route,
};
use postern_harness::{curl, documents};
use serde_json::Value;

struct Fx {
    tools: Tools,
    rig: OauthRig,
    mcp: Served,
    _standin: Served,
    oidc: Option<Served>,
}

/// Servers: `auth` (GitHub, 1h tokens) for mcp (scope mcp, org acme) and
/// stepup (scope mcp); `short` (GitHub, 2 s tokens) for mcp-short; with
/// `oidc`, `idp` (the OIDC provider) for mcp-oidc (scope mcp, org acme).
async fn fixture(label: &str, oidc: bool) -> Option<Fx> {
    let needs = if oidc { vec![Need::Node] } else { vec![] };
    let tools = Tools::find(&needs)?;
    let standin = tools.github_standin(STANDIN_USERS).await;
    let mcp = tools.mcp_server().await;
    let (gh, backend) = (standin.url(), mcp.url());
    let mut setup = OauthSetup::new(label)
        .github_server("auth", "auth.localhost", &gh, "")
        .github_server("short", "short-auth.localhost", &gh, "accessTokenTtl: 2s")
        .protect(
            "mcp",
            "mcp.localhost",
            &backend,
            "auth",
            "scopes: [mcp], allowedOrgs: [acme]",
        )
        .protect(
            "stepup",
            "stepup.localhost",
            &backend,
            "auth",
            "scopes: [mcp]",
        )
        .protect(
            "mcp-short",
            "mcp-short.localhost",
            &backend,
            "short",
            "scopes: [mcp]",
        );
    let provider = match oidc {
        true => Some(tools.oidc_provider(STANDIN_USERS).await),
        false => None,
    };
    if let Some(p) = &provider {
        setup = setup
            .oidc_server("idp", "idp.localhost", &p.url(), "")
            .protect(
                "mcp-oidc",
                "mcp-oidc.localhost",
                &backend,
                "idp",
                "scopes: [mcp], allowedOrgs: [acme]",
            );
    }
    Some(Fx {
        rig: setup.start().await,
        tools,
        mcp,
        _standin: standin,
        oidc: provider,
    })
}

impl Fx {
    fn url(&self, host: &str) -> String {
        format!("{}/mcp", self.rig.origin(host))
    }

    /// Runs the SDK client on `host` as alice with `extra` flags.
    async fn client(&self, host: &str, extra: &[&str]) -> Value {
        let url = self.url(host);
        let ca = self.rig.ca_file.display().to_string();
        let mut args = vec!["--url", &url, "--ca", &ca, "--login", "alice"];
        args.extend(extra);
        let report = self.tools.mcp_client(&args).await;
        report.expect_ok(&format!("mcp_client on {host}")).clone()
    }

    /// Every request the MCP server received.
    async fn backend_log(&self) -> Vec<Value> {
        let r = curl(&[&format!("{}/_backend/log", self.mcp.url())]).await;
        r.json().as_array().cloned().unwrap_or_default()
    }
}

/// Index of the first `http[]` entry `f` accepts.
fn first(report: &Value, what: &str, f: impl Fn(&Value) -> bool) -> usize {
    let http = report["http"].as_array().expect("http[]");
    http.iter()
        .position(f)
        .unwrap_or_else(|| panic!("no request {what} in {:#}", report["http"]))
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

/// The whoami result of the call in `phase`.
fn whoami<'a>(report: &'a Value, phase: &str) -> &'a Value {
    let calls = report["calls"].as_array().expect("calls[]");
    let call = calls.iter().find(|c| c["phase"] == phase);
    &call.unwrap_or_else(|| panic!("no {phase} call: {:#}", report["calls"]))["result"]
}

fn assert_alice(result: &Value) {
    assert_eq!(result["user"], "alice", "{result:#}");
    assert_eq!(result["email"], "alice@example.com", "{result:#}");
    let groups = result["groups_list"].as_array().expect("groups_list");
    assert!(groups.iter().any(|g| g == "acme"), "{result:#}");
    assert_eq!(result["authorization_present"], false, "{result:#}");
}

#[tokio::test]
async fn the_sdk_discovers_registers_logs_in_and_calls_a_tool() {
    let Some(fx) = fixture("oauth-mcp-github", false).await else {
        return;
    };
    let report = fx.client("mcp.localhost", &["--calls", "2"]).await;
    let issuer = fx.rig.origin("auth.localhost");
    let origin = fx.rig.origin("mcp.localhost");
    // Discovery from the 401 challenge.
    let challenge = &report["http"][0];
    assert_eq!(
        (challenge["status"].as_u64(), &challenge["has_bearer"]),
        (Some(401), &Value::Bool(false))
    );
    let www = str_of(challenge, "www_authenticate");
    let metadata =
        format!("resource_metadata=\"{origin}/.well-known/oauth-protected-resource/mcp\"");
    assert!(
        www.contains(&metadata) && www.contains("scope=\"mcp\""),
        "{www}"
    );
    let prm = &report["protected_resource_metadata"];
    assert_eq!(prm["resource"], format!("{origin}/mcp"));
    assert_eq!(prm["authorization_servers"], serde_json::json!([issuer]));
    assert_eq!(
        report["authorization_server_metadata"]["issuer"],
        issuer.as_str()
    );
    // Registration (no auth method asked: a public client), then one login.
    let counts = &report["counts"];
    assert_eq!(
        (
            counts["registrations"].as_u64(),
            counts["authorizations"].as_u64()
        ),
        (Some(1), Some(1)),
        "{counts}"
    );
    assert_eq!(report["client"]["token_endpoint_auth_method"], "none");
    let authz = &report["authorizations"][0];
    assert_eq!(authz["params"]["code_challenge_method"], "S256");
    assert_eq!(authz["params"]["resource"], format!("{origin}/mcp"));
    assert_eq!(authz["params"]["scope"], "mcp");
    assert_eq!(authz["result"]["iss"], issuer.as_str());
    assert_eq!(authz["result"]["code_received"], true);
    let hops = authz["hops"].as_array().expect("hops");
    assert!(
        hops.iter()
            .any(|h| str_of(h, "url").ends_with("/login/oauth/authorize")),
        "{hops:?}"
    );
    assert!(str_of(&authz["consent_page"], "csp").contains("frame-ancestors 'none'"));
    let claims = &report["tokens"][0]["access_token_claims"];
    assert_eq!(
        (claims["iss"].as_str(), claims["aud"].as_str()),
        (Some(issuer.as_str()), Some(origin.as_str()))
    );
    assert_eq!(claims["login"], "alice");
    // In that order: challenge, registration, code exchange, a call that passes.
    let registered = first(&report, "registering", |e| e["registration"] == true);
    let exchanged = first(&report, "exchanging the code", |e| {
        e["grant_type"] == "authorization_code"
    });
    let passed = first(&report, "passing with a bearer", |e| {
        e["has_bearer"] == true && e["status"] == 200 && e["url"] == format!("{origin}/mcp")
    });
    assert!(
        0 < registered && registered < exchanged && exchanged < passed,
        "{:#}",
        report["http"]
    );
    // The tool saw alice, never the bearer.
    assert_eq!(report["calls"].as_array().map(Vec::len), Some(2));
    assert_alice(whoami(&report, "initial"));
    let log = fx.backend_log().await;
    assert!(!log.is_empty());
    for entry in &log {
        let headers = &entry["headers"];
        assert!(headers.get("authorization").is_none(), "{entry:#}");
        assert_eq!(headers["x-forwarded-user"], "alice", "{entry:#}");
    }
    // What happened is counted, under the documented names.
    let postern = &fx.rig.postern;
    let issued = postern
        .metric(r#"postern_oauth_tokens_issued_total{grant="authorization_code"}"#)
        .await;
    assert!(issued >= 1.0, "{issued}");
    let passed = postern
        .metric(r#"postern_oauth_guard_decisions_total{result="bearer"}"#)
        .await;
    assert!(passed >= 1.0, "{passed}");
    let challenged = postern
        .metric(r#"postern_oauth_guard_decisions_total{result="challenge"}"#)
        .await;
    assert!(challenged >= 1.0, "{challenged}");
    let registered = postern
        .metric(r#"postern_oauth_requests_total{endpoint="register",class="2xx"}"#)
        .await;
    assert!(registered >= 1.0, "{registered}");
}

#[tokio::test]
async fn the_sdk_refreshes_after_the_token_expires() {
    let Some(fx) = fixture("oauth-mcp-refresh", false).await else {
        return;
    };
    let report = fx
        .client("mcp-short.localhost", &["--wait-expiry", "3"])
        .await;
    assert_eq!(report["refreshed_after_wait"], true, "{:#}", report["http"]);
    let counts = &report["counts"];
    assert_eq!(counts["authorizations"], 1, "no second login: {counts}");
    assert!(counts["refreshes_ok"].as_u64() >= Some(1), "{counts}");
    let tokens = report["tokens"].as_array().expect("tokens[]");
    let initial = &tokens[0];
    let renewed = tokens
        .iter()
        .find(|t| t["phase"] == "after_wait")
        .expect("a token after the wait");
    assert_eq!(initial["expires_in"], 2);
    for key in ["access_token_sha256", "refresh_token_sha256"] {
        assert_ne!(initial[key], renewed[key], "{key} rotates");
    }
    // The refresh came first, then the call with the new token passed.
    let refreshed = first(&report, "refreshing", |e| {
        e["grant_type"] == "refresh_token" && e["status"] == 200
    });
    let resource = format!("{}/mcp", fx.rig.origin("mcp-short.localhost"));
    assert_eq!(report["http"][refreshed]["resource"], resource.as_str());
    let after = first(&report, "calling after the wait", |e| {
        e["phase"] == "after_wait"
            && e["has_bearer"] == true
            && e["status"] == 200
            && e["mcp-method"] == "tools/call"
    });
    assert!(refreshed < after);
    assert_alice(whoami(&report, "after_wait"));
}

#[tokio::test]
async fn the_sdk_steps_up_on_insufficient_scope() {
    let Some(fx) = fixture("oauth-mcp-step-up", false).await else {
        return;
    };
    let state = fx.rig.postern.scratch_dir().join("mcp-client-state.json");
    let state = state.display().to_string();
    let redirect = "http://127.0.0.1:9/callback";
    let args = ["--state", &state, "--redirect-uri", redirect];
    let before = fx.client("stepup.localhost", &args).await;
    assert_eq!(before["scopes_granted"], serde_json::json!(["mcp"]));
    // The MCP endpoint now needs admin too: the stored token (scope mcp)
    // gets 403 insufficient_scope, and the SDK asks for both.
    let route = oauth_route(
        "stepup-admin",
        "stepup",
        "/mcp",
        "auth",
        "scopes: [mcp, admin]",
    );
    fx.rig.write("route.yaml", &documents(&[route])).await;
    let report = fx.client("stepup.localhost", &args).await;
    assert_eq!(report["state_loaded"], true);
    let refused = first(&report, "refused for its scope", |e| e["status"] == 403);
    let www = str_of(&report["http"][refused], "www_authenticate");
    assert!(
        www.contains("error=\"insufficient_scope\"") && www.contains("scope=\"admin mcp\""),
        "{www}"
    );
    assert_eq!(report["http"][refused]["has_bearer"], true);
    let counts = &report["counts"];
    assert_eq!(
        (
            counts["registrations"].as_u64(),
            counts["authorizations"].as_u64()
        ),
        (Some(0), Some(1)),
        "{counts}"
    );
    let asked = str_of(&report["authorizations"][0]["params"], "scope");
    let mut asked: Vec<&str> = asked.split(' ').collect();
    asked.sort();
    assert_eq!(asked, ["admin", "mcp"]);
    let exchanged = first(&report, "exchanging the code", |e| {
        e["grant_type"] == "authorization_code"
    });
    let passed = first(&report, "passing with admin", |e| {
        e["has_bearer"] == true && e["status"] == 200
    });
    assert!(
        refused < exchanged && exchanged < passed,
        "{:#}",
        report["http"]
    );
    let mut granted: Vec<String> =
        serde_json::from_value(report["scopes_granted"].clone()).expect("scopes");
    granted.sort();
    assert_eq!(granted, ["admin", "mcp"]);
    assert_eq!(whoami(&report, "initial")["user"], "alice");
}

#[tokio::test]
async fn the_sdk_logs_in_through_an_oidc_provider() {
    let Some(fx) = fixture("oauth-mcp-oidc", true).await else {
        return;
    };
    let report = fx.client("mcp-oidc.localhost", &[]).await;
    let issuer = fx.rig.origin("idp.localhost");
    assert_eq!(
        report["authorization_server_metadata"]["issuer"],
        issuer.as_str()
    );
    let provider = fx.oidc.as_ref().expect("the OIDC provider").url();
    let hops = report["authorizations"][0]["hops"]
        .as_array()
        .expect("hops");
    assert!(
        hops.iter()
            .any(|h| h["url"] == format!("{provider}/authorize")),
        "{hops:?}"
    );
    assert_eq!(
        report["tokens"][0]["access_token_claims"]["iss"],
        issuer.as_str()
    );
    assert_alice(whoami(&report, "initial"));
    // Postern spoke to the provider with PKCE, a nonce and its secret.
    let events = fx
        .oidc
        .as_ref()
        .map(|p| p.proc.log_path().with_file_name("oidc-events.jsonl"));
    let events =
        std::fs::read_to_string(events.expect("events")).expect("the provider's event log");
    let events: Vec<Value> = events
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let authorize = events
        .iter()
        .find(|e| e["event"] == "authorize")
        .expect("an authorize event");
    assert_eq!(authorize["query"]["code_challenge_method"], "S256");
    assert!(
        authorize["query"]["nonce"]
            .as_str()
            .is_some_and(|n| !n.is_empty())
    );
    let token = events
        .iter()
        .find(|e| e["event"] == "token")
        .expect("a token event");
    assert_eq!(
        (token["client_auth"].as_str(), &token["has_code_verifier"]),
        (Some("client_secret_post"), &Value::Bool(true)),
        "{token}"
    );
    assert_eq!(token["login"], "alice");
}
