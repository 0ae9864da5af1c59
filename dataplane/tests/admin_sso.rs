//! Dashboard sign-on through a real OpenID Connect provider (the OAuth
//! tools' oauth2-mock-server): the admin port sends the browser there with
//! PKCE and a nonce, takes the code back, checks the ID token, and opens a
//! session with the role the allowlists give (alice: admin by login, bob:
//! read by domain); carol, on no list, is refused; a replayed callback and
//! an unknown state are refused.

use std::process::Command;

use postern_harness::oauth::{Need, STANDIN_USERS, Tools};
use postern_harness::{Postern, target_yaml};

/// One request with curl: status, the Location and Set-Cookie headers.
fn fetch(url: &str, cookie: Option<&str>) -> (u16, Option<String>, Option<String>) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "/dev/null", "-D", "-", "--max-time", "20"]);
    if let Some(cookie) = cookie {
        cmd.args(["-H", &format!("Cookie: {cookie}")]);
    }
    let out = cmd.arg(url).output().expect("curl");
    let head = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    (status, header("location"), header("set-cookie"))
}

/// Signs `user` on; the callback's answer (status, Location, Set-Cookie)
/// and the callback URL (to replay).
fn sign_on(admin: &str, user: &str) -> ((u16, Option<String>, Option<String>), String) {
    let (status, to_provider, _) = fetch(&format!("{admin}/ui/sso/login"), None);
    assert_eq!(status, 302, "login starts with a redirect");
    let to_provider = to_provider.expect("Location");
    assert!(
        to_provider.contains("code_challenge_method=S256"),
        "{to_provider}"
    );
    assert!(to_provider.contains("nonce="), "{to_provider}");
    let (status, back, _) = fetch(&format!("{to_provider}&login_hint={user}"), None);
    assert_eq!(status, 302, "the provider sends the browser back");
    let back = back.expect("Location");
    assert!(
        back.starts_with(&format!("{admin}/ui/sso/callback?")),
        "{back}"
    );
    (fetch(&back, None), back)
}

/// `GET /api/v1/session` with the session cookie `pair`.
fn session(admin: &str, pair: &str) -> serde_json::Value {
    let out = Command::new("curl")
        .args([
            "-s",
            "-H",
            &format!("Cookie: {pair}"),
            &format!("{admin}/api/v1/session"),
        ])
        .output()
        .expect("curl");
    serde_json::from_slice(&out.stdout).expect("session json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_signs_users_on_through_an_oidc_provider() {
    let Some(tools) = Tools::find(&[Need::Node]) else {
        return;
    };
    let provider = tools.oidc_provider(STANDIN_USERS).await;
    let issuer = provider.url();
    // The admin port is bound first, so the redirect URI can name it.
    let admin_addr = postern_harness::free_addr();
    let admin = format!("http://{admin_addr}");
    let docs = [(
        "web.yaml",
        target_yaml("web", &["web.test"], "http://127.0.0.1:9", ""),
    )];
    let p = Postern::standalone_with("admin-sso", &docs)
        .listen("--admin-addr", admin_addr)
        .arg(format!("--admin-oidc-issuer={issuer}"))
        .arg("--admin-oidc-client-id=postern-test")
        .arg("--admin-oidc-client-secret-file")
        .arg({
            let file = postern_harness::tmp_dir("admin-sso").join("secret");
            std::fs::write(&file, "postern-test-secret\n").expect("secret");
            file
        })
        .arg(format!("--admin-oidc-redirect-uri={admin}/ui/sso/callback"))
        .arg("--admin-oidc-admins=alice")
        .arg("--admin-oidc-readers=*@example.org")
        .start()
        .await;
    assert_eq!(p.admin, admin_addr);
    let (status, _, _) = fetch(&format!("{admin}/ui/sso"), None);
    assert_eq!(status, 200);

    // alice: admin, by login.
    let ((status, location, cookie), callback) = sign_on(&admin, "alice");
    assert_eq!(status, 302, "{location:?}");
    assert_eq!(location.as_deref(), Some("/ui/"));
    let cookie = cookie.expect("a session cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().expect("pair").to_string();
    let alice = session(&admin, &pair);
    assert_eq!(alice["role"], "admin", "{alice}");
    assert_eq!(alice["via"], "cookie");
    // A callback works once.
    assert_eq!(fetch(&callback, None).0, 400, "a replayed callback");
    assert_eq!(
        fetch(&format!("{admin}/ui/sso/callback?state=nope&code=x"), None).0,
        400
    );

    // bob: read, by his domain.
    let ((status, _, cookie), _) = sign_on(&admin, "bob");
    assert_eq!(status, 302);
    let pair = cookie
        .expect("cookie")
        .split(';')
        .next()
        .expect("pair")
        .to_string();
    let (status, _, _) = fetch(&format!("{admin}/api/v1/overview"), Some(&pair));
    assert_eq!(status, 200);
    let bob = session(&admin, &pair);
    assert_eq!(bob["role"], "read", "{bob}");
    let csrf = bob["csrf"].as_str().expect("csrf");
    let cut = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .args([
            "-H",
            &format!("Cookie: {pair}"),
            "-H",
            &format!("X-CSRF-Token: {csrf}"),
        ])
        .arg(format!("{admin}/api/v1/users/alice/disconnect"))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&cut.stdout), "403");

    // carol: signed in at the provider, on no list.
    let ((status, _, cookie), _) = sign_on(&admin, "carol");
    assert_eq!(status, 403);
    assert!(cookie.is_none(), "no session for carol");
}
