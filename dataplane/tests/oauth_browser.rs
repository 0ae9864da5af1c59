//! A browser login in headless Chromium (`e2e/oauth/browser.py`, over the
//! DevTools protocol): a protected page sends the browser to the
//! authorization server, the GitHub stand-in, the consent page, and back
//! to the page with a `__Host-` session cookie; the backend sees the user;
//! logout clears the cookie and the page is protected again.

use postern_harness::Backend;
use postern_harness::oauth::{Need, OauthSetup, STANDIN_USERS, Tools};
use serde_json::Value;

fn hop_to<'a>(hops: &'a [Value], url: &str) -> Option<&'a Value> {
    hops.iter()
        .find(|h| h["url"].as_str().is_some_and(|u| u.starts_with(url)))
}

#[tokio::test]
async fn a_browser_logs_in_through_consent_and_out_again() {
    let Some(tools) = Tools::find(&[Need::Chromium]) else {
        return;
    };
    let standin = tools.github_standin(STANDIN_USERS).await;
    let backend = Backend::start("site");
    let rig = OauthSetup::new("oauth-browser")
        .github_server("auth", "auth.localhost", &standin.url(), "")
        .protect(
            "site",
            "site.localhost",
            &backend.url(),
            "auth",
            "allowedOrgs: [acme]",
        )
        .start()
        .await;
    let site = rig.origin("site.localhost");
    let issuer = rig.origin("auth.localhost");
    let page = format!("{site}/welcome");
    let ca = rig.ca_file.display().to_string();
    let args = [
        "--url",
        &page,
        "--ca",
        &ca,
        "--login",
        "alice",
        "--expect-text",
        r#""x-forwarded-user":["alice"]"#,
    ];
    let report = tools.browser(&args).await;
    let report = report.expect_ok("browser.py");

    // Page → authorization server → stand-in → consent → callback → page.
    let hops = report["login_hops"].as_array().expect("login_hops");
    let first = &hops[0];
    assert_eq!(first["status"], 302, "{first}");
    let to_login = first["location"].as_str().unwrap_or_default();
    // (browser.py reports locations without their query.)
    assert_eq!(to_login, format!("{issuer}/authorize"));
    let upstream = format!("{}/login/oauth/authorize", standin.url());
    assert!(hop_to(hops, &upstream).is_some(), "{hops:#?}");
    let callback = hop_to(hops, &format!("{site}/_postern/callback")).expect("the callback");
    assert_eq!(callback["status"], 302);
    let consent = &report["consent"];
    assert_eq!(consent["url"], format!("{issuer}/consent"));
    assert_eq!(consent["has_csrf_field"], true);
    let csp = consent["content_security_policy"]
        .as_str()
        .unwrap_or_default();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(consent["x_frame_options"], "DENY");
    // Back on the page, as alice, with the session cookie.
    assert_eq!(
        (
            report["landed_url"].as_str(),
            report["landed_status"].as_u64()
        ),
        (Some(page.as_str()), Some(200))
    );
    assert_eq!(report["expect_text_found"], true);
    let excerpt = report["body_excerpt"].as_str().unwrap_or_default();
    assert!(
        !excerpt.contains("postern-session"),
        "the session cookie reached the backend: {excerpt}"
    );
    let cookie = &report["host_cookie"];
    assert_eq!(cookie["name"], "__Host-postern-session", "{cookie}");
    assert_eq!(
        (&cookie["secure"], &cookie["httpOnly"]),
        (&Value::Bool(true), &Value::Bool(true))
    );
    assert_eq!(
        (cookie["path"].as_str(), cookie["domain"].as_str()),
        (Some("/"), Some("site.localhost"))
    );
    // Logout: through the authorization server and back, cookie gone.
    let logout = &report["logout"];
    assert_eq!(logout["cookie_still_set"], Value::Null, "{logout:#}");
    let logout_hops = logout["hops"].as_array().expect("logout hops");
    assert!(
        hop_to(logout_hops, &format!("{issuer}/logout")).is_some(),
        "{logout_hops:#?}"
    );
    let again = &report["protected_again"];
    assert_eq!(again["first_status"], 302, "{again:#}");
    let to_login = again["redirected_to"].as_str().unwrap_or_default();
    assert_eq!(to_login, format!("{issuer}/authorize"));
}
