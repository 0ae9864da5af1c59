//! What the compiler says about authorization servers and the sites they
//! protect: keys read and typed, servers linked to the hosts naming them,
//! and every inconsistent configuration refused with a reason.

mod fixtures;

use fixtures::*;
use postern_api::{
    AuthPolicy, AuthType, AuthorizationServerSpec, Backend, GithubLogin, LocalRef, PathMatchType,
    SecretKeyRef, TlsConfig,
};
use postern_compile::{Inputs, Output, Reason, compile, signing_keys_secret_name};
use postern_snapshot::{AuthRule, SigningAlg};

const ES256: &str = include_str!("keys/es256.pem");
const RS256: &str = include_str!("keys/rs256.pem");

fn tls() -> Option<TlsConfig> {
    Some(TlsConfig {
        secret_ref: Some(LocalRef { name: "tls".into() }),
        acme: None,
    })
}

fn server(name: &str, host: &str) -> postern_api::Object<postern_api::ProxyTargetSpec> {
    let mut t = target(name, &[host]);
    t.spec.backend = Backend::default();
    t.spec.tls = tls();
    t.spec.authorization_server = Some(AuthorizationServerSpec {
        github: Some(GithubLogin {
            client_id: "gh-app".into(),
            client_secret_ref: SecretKeyRef {
                name: "gh".into(),
                key: None,
            },
            web_url: None,
            api_url: None,
        }),
        scopes: Some(vec!["read".into()]),
        ..AuthorizationServerSpec::default()
    });
    t
}

fn oauth(server: Option<&str>) -> AuthPolicy {
    AuthPolicy {
        kind: AuthType::Oauth,
        server: server.map(|s| LocalRef { name: s.into() }),
        scopes: Some(vec!["mcp".into()]),
        ..AuthPolicy::default()
    }
}

fn protected(
    name: &str,
    host: &str,
    server: &str,
) -> postern_api::Object<postern_api::ProxyTargetSpec> {
    let mut t = target(name, &[host]);
    t.spec.auth = Some(oauth(Some(server)));
    t
}

/// Inputs with the Secrets a server named `auth` needs.
fn inputs_with_keys(keys: &[(&str, &str)]) -> Inputs {
    let mut inputs = Inputs::default();
    secret(&mut inputs, "tls", &[("tls.crt", CERT), ("tls.key", KEY)]);
    secret(&mut inputs, "gh", &[("clientSecret", "s3cret")]);
    secret(&mut inputs, &signing_keys_secret_name("auth"), keys);
    inputs
}

fn verdict(out: &Output, name: &str) -> (Reason, String) {
    let v = out
        .verdicts
        .iter()
        .find(|v| v.key.name == name)
        .expect("a verdict");
    (v.reason, v.message.clone())
}

#[test]
fn a_server_reads_every_key_and_the_last_kid_signs() {
    let mut inputs = inputs_with_keys(&[
        ("2026-01.pem", RS256),
        ("2026-06.pem", ES256),
        ("README", "x"),
    ]);
    inputs.proxy_targets = vec![server("auth", "auth.example.com").into()];
    let out = compile(&inputs);
    assert_eq!(
        verdict(&out, "auth").0,
        Reason::Accepted,
        "{:?}",
        verdict(&out, "auth")
    );
    let site = &out.snapshot.sites[0];
    assert!(site.backend.url.is_empty());
    let server = site.authorization_server.as_ref().expect("a server");
    let kids: Vec<(&str, SigningAlg)> = server
        .signing_keys
        .iter()
        .map(|k| (k.kid.as_str(), k.alg))
        .collect();
    assert_eq!(
        kids,
        [
            ("2026-01", SigningAlg::RS256),
            ("2026-06", SigningAlg::ES256)
        ]
    );
    let github = server.github.as_ref().expect("github");
    assert_eq!(github.web_url, "https://github.com");
    assert_eq!(github.api_url, "https://api.github.com");
    assert_eq!(github.client_secret, "s3cret");
    assert_eq!(server.access_token_ttl_s, 3600);
    assert!(server.dynamic_registration);
    // Debug output never shows the key or the client secret.
    let debug = format!("{server:?}");
    assert!(
        !debug.contains("PRIVATE KEY") && !debug.contains("s3cret"),
        "{debug}"
    );
}

#[test]
fn a_server_without_its_keys_or_with_bad_ones_is_refused() {
    let mut inputs = inputs_with_keys(&[]);
    inputs
        .secrets
        .retain(|k, _| k.name != signing_keys_secret_name("auth"));
    inputs.proxy_targets = vec![server("auth", "auth.example.com").into()];
    let (reason, message) = verdict(&compile(&inputs), "auth");
    assert_eq!(reason, Reason::SecretNotFound);
    assert!(message.contains("auth-oauth-keys"), "{message}");

    let mut inputs = inputs_with_keys(&[("k.pem", CERT)]);
    inputs.proxy_targets = vec![server("auth", "auth.example.com").into()];
    let (reason, message) = verdict(&compile(&inputs), "auth");
    assert_eq!(reason, Reason::InvalidSpec);
    assert!(message.contains("PKCS#8"), "{message}");
}

#[test]
fn a_server_takes_no_backend_auth_or_plain_http() {
    let mut with_backend = server("auth", "auth.example.com");
    with_backend.spec.backend.url = Some("http://10.0.0.1:80".into());
    let mut no_tls = server("auth", "auth.example.com");
    no_tls.spec.tls = None;
    let mut with_auth = server("auth", "auth.example.com");
    with_auth.spec.auth = Some(AuthPolicy::default());
    let mut long_token = server("auth", "auth.example.com");
    long_token
        .spec
        .authorization_server
        .as_mut()
        .expect("server")
        .access_token_ttl = Some(postern_api::Duration("2h".into()));
    for (t, words) in [
        (with_backend, "backend"),
        (no_tls, "tls"),
        (with_auth, "auth policy"),
        (long_token, "accessTokenTtl"),
    ] {
        let mut inputs = inputs_with_keys(&[("k.pem", ES256)]);
        inputs.proxy_targets = vec![t.into()];
        let (reason, message) = verdict(&compile(&inputs), "auth");
        assert_eq!(reason, Reason::InvalidSpec, "{message}");
        assert!(message.contains(words), "{message} lacks {words}");
    }
}

#[test]
fn protected_sites_name_their_server_which_learns_their_hosts_and_scopes() {
    let mut inputs = inputs_with_keys(&[("k.pem", ES256)]);
    inputs.proxy_targets = vec![
        server("auth", "auth.example.com").into(),
        protected("api", "api.example.com", "auth").into(),
    ];
    let mut admin = route("admin", "api", PathMatchType::Prefix, "/admin", 10);
    admin.spec.auth = Some(AuthPolicy {
        server: None,
        scopes: Some(vec!["admin".into()]),
        ..oauth(None)
    });
    let mut health = route("health", "api", PathMatchType::Exact, "/health", 10);
    health.spec.auth = Some(AuthPolicy::default());
    inputs.routes = vec![admin.into(), health.into()];
    let out = compile(&inputs);
    assert!(
        out.verdicts.iter().all(|v| v.reason == Reason::Accepted),
        "{:?}",
        out.verdicts
    );
    let api = out
        .snapshot
        .sites
        .iter()
        .find(|s| s.id == "team/api")
        .expect("api");
    let AuthRule::Oauth(policy) = &api.auth else {
        panic!("{:?}", api.auth)
    };
    assert_eq!(policy.server, "team/auth");
    assert_eq!(policy.issuer_hosts, ["auth.example.com"]);
    assert_eq!(policy.identity_headers.user, "x-forwarded-user");
    // The route's override inherits the target's server.
    let route = api
        .routes
        .iter()
        .find(|r| r.id == "team/admin")
        .expect("route");
    let Some(AuthRule::Oauth(admin)) = &route.auth else {
        panic!("{:?}", route.auth)
    };
    assert_eq!(
        (admin.server.as_str(), admin.scopes.as_slice()),
        ("team/auth", &["admin".to_string()][..])
    );
    let auth = out
        .snapshot
        .sites
        .iter()
        .find(|s| s.id == "team/auth")
        .expect("auth");
    let server = auth.authorization_server.as_ref().expect("server");
    assert_eq!(server.resources, ["api.example.com"]);
    assert_eq!(server.scopes, ["admin", "mcp", "read"]);
}

#[test]
fn an_unknown_or_refused_server_refuses_the_sites_naming_it() {
    let mut inputs = inputs_with_keys(&[("k.pem", ES256)]);
    inputs.proxy_targets = vec![
        protected("nowhere", "a.example.com", "missing").into(),
        protected("plain", "b.example.com", "web").into(),
        target("web", &["web.example.com"]).into(),
        protected("orphan", "c.example.com", "auth").into(),
        // The older target keeps the hostname: the server is refused.
        created(
            target("squatter", &["auth.example.com"]),
            "2020-01-01T00:00:00Z",
        )
        .into(),
        created(server("auth", "auth.example.com"), "2021-01-01T00:00:00Z").into(),
    ];
    let out = compile(&inputs);
    assert_eq!(verdict(&out, "nowhere").0, Reason::ServerNotFound);
    let (reason, message) = verdict(&out, "plain");
    assert_eq!(reason, Reason::ServerNotFound);
    assert!(message.contains("no authorizationServer"), "{message}");
    assert_eq!(verdict(&out, "auth").0, Reason::HostnameConflict);
    let (reason, message) = verdict(&out, "orphan");
    assert_eq!(reason, Reason::ServerNotFound, "{message}");
    assert!(!out.snapshot.sites.iter().any(|s| s.id == "team/orphan"));
    assert!(!out.snapshot.objects.iter().any(|o| o.name == "orphan"));
}

#[test]
fn oauth_fields_on_other_auth_types_and_routes_on_a_server_are_refused() {
    let mut inputs = inputs_with_keys(&[("k.pem", ES256)]);
    let mut bearer_with_allowlist = target("web", &["web.example.com"]);
    bearer_with_allowlist.spec.auth = Some(AuthPolicy {
        kind: AuthType::None,
        allowed_users: Some(vec!["ada".into()]),
        ..AuthPolicy::default()
    });
    let mut no_server = target("lost", &["lost.example.com"]);
    no_server.spec.auth = Some(oauth(None));
    inputs.proxy_targets = vec![
        server("auth", "auth.example.com").into(),
        bearer_with_allowlist.into(),
        no_server.into(),
    ];
    inputs.routes = vec![route("onto-server", "auth", PathMatchType::Prefix, "/x", 1).into()];
    let out = compile(&inputs);
    assert_eq!(verdict(&out, "web").0, Reason::InvalidSpec);
    let (reason, message) = verdict(&out, "lost");
    assert_eq!(reason, Reason::InvalidSpec);
    assert!(message.contains("needs server"), "{message}");
    let (reason, message) = verdict(&out, "onto-server");
    assert_eq!(reason, Reason::InvalidSpec);
    assert!(message.contains("authorization server"), "{message}");
}

#[test]
fn the_guard_client_id_is_reserved() {
    let inputs = Inputs {
        oauth_clients: vec![client("postern-guard").into(), client("mine").into()],
        ..Inputs::default()
    };
    let out = compile(&inputs);
    assert_eq!(verdict(&out, "postern-guard").0, Reason::InvalidSpec);
    assert_eq!(verdict(&out, "mine").0, Reason::Accepted);
}
