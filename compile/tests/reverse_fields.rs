//! The reverse proxy's per-target options: backend protocol, TLS
//! verification, PROXY protocol, Host preservation and header changes.

mod fixtures;

use std::sync::Arc;

use fixtures::*;
use postern_api::{
    BackendProtocol as ApiProtocol, BackendTls as ApiTls, HeaderModifier, HeaderValue, Kind,
    ObjectKey, PathMatchType, ProxyProtocolVersion, SecretKeyRef,
};
use postern_compile::{Inputs, Output, Reason, compile};
use postern_snapshot::{BackendProtocol, HeaderPair, ProxyProtocol};

const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n";

fn verdict(out: &Output, kind: Kind, name: &str) -> (Reason, String) {
    let v = out
        .verdicts
        .iter()
        .find(|v| v.kind == kind && v.key == ObjectKey::new(NS, name))
        .unwrap_or_else(|| panic!("no verdict for {kind} {name}"));
    (v.reason, v.message.clone())
}

fn https_target() -> Inputs {
    let mut t = target("api", &["api.example.com"]);
    t.spec.backend.url = Some("https://10.0.0.5:8443".into());
    t.spec.backend.protocol = Some(ApiProtocol::Http2);
    t.spec.backend.proxy_protocol = Some(ProxyProtocolVersion::V2);
    t.spec.backend.tls = Some(ApiTls {
        ca_secret_ref: Some(SecretKeyRef {
            name: "api-ca".into(),
            key: None,
        }),
        server_name: Some("API.internal".into()),
    });
    let mut inputs = Inputs {
        proxy_targets: vec![t.into()],
        ..Inputs::default()
    };
    secret(&mut inputs, "api-ca", &[("ca.crt", CA)]);
    inputs
}

#[test]
fn backend_options_reach_the_snapshot() {
    let out = compile(&https_target());
    assert_eq!(verdict(&out, Kind::ProxyTarget, "api").0, Reason::Accepted);
    let backend = &out.snapshot.sites[0].backend;
    assert_eq!(backend.url, "https://10.0.0.5:8443");
    assert_eq!(backend.protocol, BackendProtocol::Http2);
    assert_eq!(backend.proxy_protocol, Some(ProxyProtocol::V2));
    let tls = backend.tls.as_ref().expect("tls");
    assert_eq!(tls.ca_pem.as_deref(), Some(CA));
    assert_eq!(tls.server_name.as_deref(), Some("api.internal"));
    assert_eq!(out.snapshot.validate(), Ok(()));
}

#[test]
fn defaults_are_http1_system_roots_no_proxy_header_and_backend_host() {
    let inputs = Inputs {
        proxy_targets: vec![target("api", &["api.example.com"]).into()],
        ..Inputs::default()
    };
    let site = &compile(&inputs).snapshot.sites[0];
    assert_eq!(site.backend.protocol, BackendProtocol::Http1);
    assert_eq!(site.backend.tls, None);
    assert_eq!(site.backend.proxy_protocol, None);
    assert!(!site.preserve_host);
    assert!(site.request_headers.is_empty() && site.response_headers.is_empty());
}

#[test]
fn backend_tls_needs_https_and_its_ca_secret() {
    let mut plain = https_target();
    Arc::make_mut(&mut plain.proxy_targets[0]).spec.backend.url =
        Some("http://10.0.0.5:8080".into());
    let (reason, message) = verdict(&compile(&plain), Kind::ProxyTarget, "api");
    assert_eq!(reason, Reason::InvalidSpec);
    assert!(message.contains("https"), "{message}");

    let mut no_secret = https_target();
    no_secret.secrets.clear();
    let (reason, message) = verdict(&compile(&no_secret), Kind::ProxyTarget, "api");
    assert_eq!(reason, Reason::SecretNotFound);
    assert!(message.contains("api-ca"), "{message}");

    let mut not_pem = https_target();
    secret(&mut not_pem, "api-ca", &[("ca.crt", "garbage")]);
    assert_eq!(
        verdict(&compile(&not_pem), Kind::ProxyTarget, "api").0,
        Reason::InvalidSpec
    );
}

#[test]
fn a_wildcard_server_name_is_refused() {
    let mut inputs = https_target();
    let tls = Arc::make_mut(&mut inputs.proxy_targets[0])
        .spec
        .backend
        .tls
        .as_mut()
        .expect("tls");
    tls.server_name = Some("*.internal".into());
    let (reason, message) = verdict(&compile(&inputs), Kind::ProxyTarget, "api");
    assert_eq!(reason, Reason::InvalidSpec);
    assert!(message.contains("wildcard"), "{message}");
}

#[test]
fn a_backend_port_beyond_65535_is_refused_not_defaulted() {
    let mut t = target("api", &["api.example.com"]);
    t.spec.backend.url = Some("http://10.0.0.5:70000".into());
    let inputs = Inputs {
        proxy_targets: vec![t.into()],
        ..Inputs::default()
    };
    let (reason, message) = verdict(&compile(&inputs), Kind::ProxyTarget, "api");
    assert_eq!(reason, Reason::InvalidSpec);
    assert!(message.contains("port 70000"), "{message}");
}

fn pair(name: &str, value: &str) -> HeaderValue {
    HeaderValue {
        name: name.into(),
        value: value.into(),
    }
}

#[test]
fn header_rules_are_lowercased_and_kept_in_order() {
    let mut inputs = Inputs::default();
    let mut t = target("api", &["api.example.com"]);
    t.spec.preserve_host = Some(true);
    t.spec.request_headers = Some(HeaderModifier {
        remove: Some(vec!["X-Debug".into()]),
        set: Some(vec![pair("X-Env", "prod")]),
        add: Some(vec![pair("X-Tag", "a"), pair("x-tag", "b")]),
    });
    t.spec.response_headers = Some(HeaderModifier {
        remove: Some(vec!["Server".into()]),
        ..HeaderModifier::default()
    });
    inputs.proxy_targets = vec![t.into()];
    let site = &compile(&inputs).snapshot.sites[0];
    assert!(site.preserve_host);
    assert_eq!(site.request_headers.remove, ["x-debug"]);
    assert_eq!(
        site.request_headers.set,
        [HeaderPair {
            name: "x-env".into(),
            value: "prod".into()
        }]
    );
    assert_eq!(site.request_headers.add.len(), 2);
    assert_eq!(site.request_headers.add[1].name, "x-tag");
    assert_eq!(site.response_headers.remove, ["server"]);
}

#[test]
fn framing_and_hop_by_hop_headers_and_broken_values_are_refused() {
    for (modifier, needle) in [
        (
            HeaderModifier {
                remove: Some(vec!["Transfer-Encoding".into()]),
                ..HeaderModifier::default()
            },
            "transfer-encoding",
        ),
        (
            HeaderModifier {
                set: Some(vec![pair("Host", "evil")]),
                ..HeaderModifier::default()
            },
            "host",
        ),
        (
            HeaderModifier {
                add: Some(vec![pair("X-Ok", "a\r\nInjected: yes")]),
                ..HeaderModifier::default()
            },
            "one line",
        ),
        (
            HeaderModifier {
                add: Some(vec![pair("bad name", "v")]),
                ..HeaderModifier::default()
            },
            "header name",
        ),
    ] {
        let mut inputs = Inputs::default();
        let mut t = target("api", &["api.example.com"]);
        t.spec.request_headers = Some(modifier);
        inputs.proxy_targets = vec![t.into()];
        let (reason, message) = verdict(&compile(&inputs), Kind::ProxyTarget, "api");
        assert_eq!(reason, Reason::InvalidSpec, "{needle}");
        assert!(message.contains(needle), "{message}");
    }
}

#[test]
fn a_route_backend_carries_its_own_options() {
    let mut inputs = Inputs {
        proxy_targets: vec![target("api", &["api.example.com"]).into()],
        ..Inputs::default()
    };
    let mut r = route("grpc", "api", PathMatchType::Prefix, "/pkg.Svc", 10);
    r.spec.backend = Some(postern_api::Backend {
        url: Some("http://10.0.0.9:50051".into()),
        protocol: Some(ApiProtocol::Http2),
        ..postern_api::Backend::default()
    });
    inputs.routes = vec![r.into()];
    let out = compile(&inputs);
    assert_eq!(verdict(&out, Kind::Route, "grpc").0, Reason::Accepted);
    let backend = out.snapshot.sites[0].routes[0]
        .backend
        .as_ref()
        .expect("override");
    assert_eq!(backend.protocol, BackendProtocol::Http2);
    assert_eq!(
        out.snapshot.sites[0].backend.protocol,
        BackendProtocol::Http1
    );
}
