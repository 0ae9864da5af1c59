//! Every cross-object rule of compile, and its determinism.

mod fixtures;

use std::sync::Arc;

use fixtures::*;
use postern_api::{Backend, Kind, LocalRef, ObjectKey, PathMatchType, ServiceBackend, TlsConfig};
use postern_compile::{Inputs, Output, Reason, ServiceInfo, compile};
use postern_snapshot::{PathRule, SiteTls, Upstream};

fn verdict(out: &Output, kind: Kind, name: &str) -> (Reason, String) {
    let v = out
        .verdicts
        .iter()
        .find(|v| v.kind == kind && v.key == ObjectKey::new(NS, name))
        .unwrap_or_else(|| panic!("no verdict for {kind} {name}"));
    (v.reason, v.message.clone())
}

fn full_inputs() -> Inputs {
    let mut inputs = Inputs {
        proxy_targets: vec![
            target("api", &["api.example.com"]).into(),
            target("web", &["*.example.org"]).into(),
        ],
        ..Inputs::default()
    };
    inputs.routes = vec![
        route("v1", "api", PathMatchType::Prefix, "/v1", 10).into(),
        route("v1-users", "api", PathMatchType::Prefix, "/v1/users", 10).into(),
        route("health", "api", PathMatchType::Exact, "/healthz", 50).into(),
        route(
            "re",
            "web",
            PathMatchType::RegularExpression,
            "/item/[0-9]+",
            0,
        )
        .into(),
    ];
    inputs.user_upstreams = vec![
        user("alice", "alice", "socks5://socks.internal:1080").into(),
        user("bob", "bob", "direct://").into(),
    ];
    secret(&mut inputs, "alice-proxy", &[("password", "pw-a")]);
    secret(&mut inputs, "bob-proxy", &[("password", "pw-b")]);
    inputs.tunnels = vec![tunnel("laptop", &["app.example.net"]).into()];
    secret(&mut inputs, "laptop-agent", &[("key", "agent-secret")]);
    inputs.oauth_clients = vec![client("my-app").into()];
    inputs
}

#[test]
fn everything_valid_is_accepted_and_the_snapshot_validates() {
    let out = compile(&full_inputs());
    let refused: Vec<_> = out.verdicts.iter().filter(|v| !v.accepted()).collect();
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(out.verdicts.len(), 10);
    assert_eq!(out.snapshot.objects.len(), 10);
    assert_eq!(out.snapshot.validate(), Ok(()));
    assert_eq!(out.snapshot.summary().routes, 4);
}

#[test]
fn same_inputs_in_any_order_give_identical_bytes_and_version() {
    let a = compile(&full_inputs()).snapshot;
    let mut shuffled = full_inputs();
    shuffled.proxy_targets.reverse();
    shuffled.routes.reverse();
    shuffled.user_upstreams.reverse();
    let b = compile(&shuffled).snapshot;
    assert_eq!(a.version, b.version);
    assert_eq!(a.to_json().expect("json"), b.to_json().expect("json"));
    assert_eq!(a.version.len(), 32);
}

#[test]
fn a_change_changes_the_version() {
    let a = compile(&full_inputs()).snapshot;
    let mut changed = full_inputs();
    Arc::make_mut(&mut changed.proxy_targets[0])
        .spec
        .hostnames
        .push("api2.example.com".into());
    assert_ne!(a.version, compile(&changed).snapshot.version);
}

#[test]
fn the_older_target_keeps_a_contested_hostname() {
    let inputs = Inputs {
        proxy_targets: vec![
            created(
                target("newer", &["shared.example.com", "own.example.com"]),
                "2026-01-02T00:00:00Z",
            )
            .into(),
            created(
                target("older", &["SHARED.example.com"]),
                "2026-01-01T00:00:00Z",
            )
            .into(),
        ],
        ..Inputs::default()
    };
    let out = compile(&inputs);
    assert_eq!(
        verdict(&out, Kind::ProxyTarget, "older").0,
        Reason::Accepted
    );
    let (reason, message) = verdict(&out, Kind::ProxyTarget, "newer");
    assert_eq!(reason, Reason::HostnameConflict);
    assert!(
        message.contains("shared.example.com") && message.contains("ProxyTarget older"),
        "{message}"
    );
    assert_eq!(out.snapshot.sites.len(), 1);
    assert_eq!(out.snapshot.sites[0].hostnames, vec!["shared.example.com"]);
}

#[test]
fn a_route_whose_target_is_missing_or_refused_is_refused() {
    let inputs = Inputs {
        proxy_targets: vec![
            created(target("a", &["a.example.com"]), "2026-01-01T00:00:00Z").into(),
            created(target("b", &["a.example.com"]), "2026-01-02T00:00:00Z").into(),
        ],
        routes: vec![
            route("to-nothing", "ghost", PathMatchType::Prefix, "/", 0).into(),
            route("to-loser", "b", PathMatchType::Prefix, "/", 0).into(),
        ],
        ..Inputs::default()
    };
    let out = compile(&inputs);
    let (reason, message) = verdict(&out, Kind::Route, "to-nothing");
    assert_eq!(reason, Reason::TargetNotFound);
    assert!(message.contains("team/ghost not found"), "{message}");
    let (reason, message) = verdict(&out, Kind::Route, "to-loser");
    assert_eq!(reason, Reason::TargetNotFound);
    assert!(message.contains("not accepted"), "{message}");
}

#[test]
fn routes_are_ordered_by_priority_then_length() {
    let out = compile(&full_inputs());
    let api = out
        .snapshot
        .sites
        .iter()
        .find(|s| s.id == "team/api")
        .expect("site");
    let order: Vec<&str> = api.routes.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(order, ["team/health", "team/v1-users", "team/v1"]);
    assert_eq!(api.routes[0].path, PathRule::Exact("/healthz".into()));
}

#[test]
fn an_invalid_regex_is_refused_alone() {
    let mut inputs = full_inputs();
    inputs.routes.push(
        route(
            "broken",
            "api",
            PathMatchType::RegularExpression,
            "/(unclosed",
            0,
        )
        .into(),
    );
    let out = compile(&inputs);
    let (reason, message) = verdict(&out, Kind::Route, "broken");
    assert_eq!(reason, Reason::InvalidRegex);
    assert!(message.contains("/(unclosed"), "{message}");
    assert_eq!(verdict(&out, Kind::Route, "re").0, Reason::Accepted);
}

#[test]
fn a_tunnel_loses_a_hostname_a_target_serves() {
    let mut inputs = full_inputs();
    inputs
        .tunnels
        .push(tunnel("clash", &["api.example.com"]).into());
    secret(&mut inputs, "clash-agent", &[("key", "k")]);
    let out = compile(&inputs);
    let (reason, message) = verdict(&out, Kind::Tunnel, "clash");
    assert_eq!(reason, Reason::HostnameConflict);
    assert!(message.contains("ProxyTarget"), "{message}");
}

#[test]
fn an_http_tunnel_hostname_is_a_site_that_names_the_tunnel() {
    let mut inputs = full_inputs();
    let mut prefixed = tunnel("prefixed", &[]);
    prefixed.spec.hostnames = None;
    prefixed.spec.path_prefix = Some("/t/laptop".into());
    prefixed.spec.strip_prefix = Some(false);
    prefixed.spec.pool = Some(true);
    inputs.tunnels.push(prefixed.into());
    secret(&mut inputs, "prefixed-agent", &[("key", "k")]);
    let out = compile(&inputs);
    assert_eq!(verdict(&out, Kind::Tunnel, "prefixed").0, Reason::Accepted);
    let site = out
        .snapshot
        .sites
        .iter()
        .find(|s| s.hostnames == ["app.example.net"])
        .expect("the tunnel's site");
    assert_eq!(site.tunnel.as_deref(), Some("team/laptop"));
    assert!(
        site.preserve_host,
        "the agent's service sees the public Host"
    );
    assert_eq!(out.snapshot.validate(), Ok(()));
    let entry = |id: &str| out.snapshot.tunnels.iter().find(|t| t.id == id).cloned();
    assert_eq!(entry("team/prefixed").map(|t| t.strip_prefix), Some(false));
    assert_eq!(entry("team/laptop").map(|t| t.strip_prefix), Some(true));
    let pool = |id: &str| entry(id).map(|t| t.pool);
    assert_eq!(
        (pool("team/prefixed"), pool("team/laptop")),
        (Some(true), Some(false)),
        "spec.pool, standby by default"
    );
    assert!(
        out.snapshot
            .sites
            .iter()
            .all(|s| s.tunnel.is_none() || s.id == "team/laptop"),
        "a path-prefix tunnel has no site of its own"
    );
}

#[test]
fn tls_on_a_tunnel_without_hostnames_is_refused() {
    let mut inputs = full_inputs();
    let mut prefixed = tunnel("prefixed", &[]);
    prefixed.spec.hostnames = None;
    prefixed.spec.path_prefix = Some("/t/x".into());
    prefixed.spec.tls = Some(TlsConfig {
        secret_ref: Some(LocalRef { name: "x".into() }),
        acme: None,
    });
    inputs.tunnels.push(prefixed.into());
    secret(&mut inputs, "prefixed-agent", &[("key", "k")]);
    let out = compile(&inputs);
    let (reason, message) = verdict(&out, Kind::Tunnel, "prefixed");
    assert_eq!(reason, Reason::InvalidSpec);
    assert!(message.contains("tls"), "{message}");
}

#[test]
fn missing_secrets_and_keys_are_named() {
    let mut inputs = full_inputs();
    inputs.secrets.remove(&ObjectKey::new(NS, "alice-proxy"));
    secret(&mut inputs, "laptop-agent", &[("wrong", "x")]);
    let out = compile(&inputs);
    let (reason, message) = verdict(&out, Kind::UserUpstream, "alice");
    assert_eq!(reason, Reason::SecretNotFound);
    assert!(message.contains("team/alice-proxy not found"), "{message}");
    let (reason, message) = verdict(&out, Kind::Tunnel, "laptop");
    assert_eq!(reason, Reason::SecretNotFound);
    assert!(message.contains("no key key"), "{message}");

    let mut tls = full_inputs();
    Arc::make_mut(&mut tls.proxy_targets[0]).spec.tls = Some(TlsConfig {
        secret_ref: Some(LocalRef {
            name: "api-tls".into(),
        }),
        acme: None,
    });
    let out = compile(&tls);
    assert_eq!(
        verdict(&out, Kind::ProxyTarget, "api").0,
        Reason::SecretNotFound
    );
    secret(&mut tls, "api-tls", &[("tls.crt", CERT), ("tls.key", KEY)]);
    let out = compile(&tls);
    assert_eq!(verdict(&out, Kind::ProxyTarget, "api").0, Reason::Accepted);
    assert_eq!(out.snapshot.certificates.len(), 1);
    assert_eq!(
        out.snapshot.sites[0].tls,
        Some(SiteTls::Secret {
            certificate: "team/api-tls".into()
        })
    );
    assert_eq!(out.snapshot.validate(), Ok(()));
}

#[test]
fn a_duplicate_proxy_user_is_refused() {
    let mut inputs = full_inputs();
    inputs
        .user_upstreams
        .push(created(user("alice2", "alice", "direct://"), "2027-01-01T00:00:00Z").into());
    secret(&mut inputs, "alice2-proxy", &[("password", "x")]);
    let out = compile(&inputs);
    let (reason, message) = verdict(&out, Kind::UserUpstream, "alice2");
    assert_eq!(reason, Reason::DuplicateUser);
    assert!(message.contains("UserUpstream alice"), "{message}");
    assert_eq!(out.snapshot.users.len(), 2);
}

#[test]
fn a_secret_rotation_changes_the_version_and_the_user_revision() {
    let before = compile(&full_inputs()).snapshot;
    let mut rotated = full_inputs();
    secret(&mut rotated, "alice-proxy", &[("password", "new")]);
    let after = compile(&rotated).snapshot;
    assert_ne!(before.version, after.version);
    let rev = |s: &postern_snapshot::Snapshot, u: &str| {
        s.users
            .iter()
            .find(|x| x.user == u)
            .map(|x| x.revision.clone())
    };
    assert_ne!(rev(&before, "alice"), rev(&after, "alice"));
    assert_eq!(rev(&before, "bob"), rev(&after, "bob"));
}

#[test]
fn passwords_are_hashed_and_credentials_come_from_secrets() {
    let mut inputs = full_inputs();
    Arc::make_mut(&mut inputs.user_upstreams[0])
        .spec
        .upstream_credentials_secret_ref = Some(LocalRef {
        name: "socks-creds".into(),
    });
    secret(
        &mut inputs,
        "socks-creds",
        &[("username", "u"), ("password", "p")],
    );
    let out = compile(&inputs);
    let json = String::from_utf8(out.snapshot.to_json().expect("json")).expect("utf8");
    assert!(
        !json.contains("pw-a"),
        "plaintext proxy password in the snapshot"
    );
    let alice = out
        .snapshot
        .users
        .iter()
        .find(|u| u.user == "alice")
        .expect("alice");
    match &alice.upstream {
        Upstream::Socks5 {
            host,
            port,
            credentials: Some(c),
        } => {
            assert_eq!(
                (host.as_str(), *port, c.username.as_str()),
                ("socks.internal", 1080, "u")
            );
        }
        other => panic!("unexpected upstream {other:?}"),
    }
    assert_eq!(
        alice.password.sha256,
        postern_snapshot::salted_sha256(&alice.password.salt, b"pw-a")
    );
}

#[test]
fn an_https_upstream_takes_its_ca_from_a_secret() {
    let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let mut inputs = full_inputs();
    let spec = &mut Arc::make_mut(&mut inputs.user_upstreams[0]).spec;
    spec.upstream = "https://proxy.internal:8443".into();
    spec.upstream_ca_secret_ref = Some(postern_api::SecretKeyRef {
        name: "proxy-ca".into(),
        key: None,
    });
    secret(&mut inputs, "proxy-ca", &[("ca.crt", pem)]);
    let out = compile(&inputs);
    assert_eq!(
        verdict(&out, Kind::UserUpstream, "alice").0,
        Reason::Accepted
    );
    let alice = out
        .snapshot
        .users
        .iter()
        .find(|u| u.user == "alice")
        .expect("alice");
    match &alice.upstream {
        Upstream::Https { ca_pem, .. } => assert_eq!(ca_pem.as_deref(), Some(pem)),
        other => panic!("unexpected upstream {other:?}"),
    }
    let revision = alice.revision.clone();

    // A new CA is a new revision (the user's tunnels are cut).
    secret(
        &mut inputs,
        "proxy-ca",
        &[("ca.crt", &pem.replace("MIIB", "MIIC"))],
    );
    let out = compile(&inputs);
    let alice = out
        .snapshot
        .users
        .iter()
        .find(|u| u.user == "alice")
        .expect("alice");
    assert_ne!(alice.revision, revision);

    // Not PEM, or not an https:// upstream: refused.
    secret(&mut inputs, "proxy-ca", &[("ca.crt", "garbage")]);
    assert_eq!(
        verdict(&compile(&inputs), Kind::UserUpstream, "alice").0,
        Reason::InvalidSpec
    );
    secret(&mut inputs, "proxy-ca", &[("ca.crt", pem)]);
    Arc::make_mut(&mut inputs.user_upstreams[0]).spec.upstream =
        "http://proxy.internal:3128".into();
    assert_eq!(
        verdict(&compile(&inputs), Kind::UserUpstream, "alice").0,
        Reason::InvalidSpec
    );
}

#[test]
fn inline_credentials_are_accepted_with_a_warning() {
    let mut inputs = full_inputs();
    Arc::make_mut(&mut inputs.user_upstreams[0]).spec.upstream =
        "http://u:p@proxy.internal:3128".into();
    let out = compile(&inputs);
    let (reason, message) = verdict(&out, Kind::UserUpstream, "alice");
    assert_eq!(reason, Reason::Accepted);
    assert!(message.contains("discouraged"), "{message}");
}

#[test]
fn specs_no_schema_checked_are_checked_here() {
    let mut inputs = full_inputs();
    Arc::make_mut(&mut inputs.user_upstreams[0]).spec.upstream = "ftp://x".into();
    Arc::make_mut(&mut inputs.proxy_targets[1]).spec.hostnames = vec!["not a host".into()];
    let out = compile(&inputs);
    assert_eq!(
        verdict(&out, Kind::UserUpstream, "alice").0,
        Reason::InvalidSpec
    );
    assert_eq!(
        verdict(&out, Kind::ProxyTarget, "web").0,
        Reason::InvalidSpec
    );
}

#[test]
fn service_backends_resolve_to_cluster_dns_when_the_service_exists() {
    let mut inputs = full_inputs();
    Arc::make_mut(&mut inputs.proxy_targets[0]).spec.backend = Backend {
        service: Some(ServiceBackend {
            name: "api".into(),
            port: 8080,
        }),
        url: None,
        ..Backend::default()
    };
    inputs.services = Some(Default::default());
    let out = compile(&inputs);
    assert_eq!(
        verdict(&out, Kind::ProxyTarget, "api").0,
        Reason::BackendNotFound
    );
    inputs.services = Some([(ObjectKey::new(NS, "api"), ServiceInfo { ports: vec![8080] })].into());
    let out = compile(&inputs);
    let site = out
        .snapshot
        .sites
        .iter()
        .find(|s| s.id == "team/api")
        .expect("site");
    assert_eq!(site.backend.url, "http://api.team.svc.cluster.local:8080");
}

#[test]
fn objects_carry_their_generation() {
    let mut inputs = full_inputs();
    Arc::make_mut(&mut inputs.proxy_targets[0]).meta.generation = Some(7);
    let out = compile(&inputs);
    let api = out
        .snapshot
        .objects
        .iter()
        .find(|o| o.name == "api")
        .expect("api");
    assert_eq!((api.kind.as_str(), api.generation), ("ProxyTarget", 7));
}

#[test]
fn internal_networks_are_normalised_and_garbage_is_refused() {
    let mut inputs = full_inputs();
    Arc::make_mut(&mut inputs.user_upstreams[0])
        .spec
        .allow_internal_networks = vec![
        "127.0.0.1/8".into(),
        "::1".into(),
        "::ffff:169.254.169.254".into(),
        "127.0.0.0/8".into(),
    ];
    let out = compile(&inputs);
    assert_eq!(
        verdict(&out, Kind::UserUpstream, "alice").0,
        Reason::Accepted
    );
    let alice = out
        .snapshot
        .users
        .iter()
        .find(|u| u.user == "alice")
        .expect("alice");
    assert_eq!(
        alice.allow_internal_networks,
        ["127.0.0.0/8", "::1/128", "169.254.169.254/32"]
    );
    for bad in ["localhost", "127.0.0.0/33", "10.0.0.0/8 ", "*"] {
        Arc::make_mut(&mut inputs.user_upstreams[0])
            .spec
            .allow_internal_networks = vec![bad.into()];
        let out = compile(&inputs);
        let (reason, message) = verdict(&out, Kind::UserUpstream, "alice");
        assert_eq!(reason, Reason::InvalidSpec, "{bad}");
        assert!(
            message.contains("allowInternalNetworks"),
            "{bad}: {message}"
        );
    }
}
