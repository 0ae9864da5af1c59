//! Builders for compile fixtures: the smallest valid object of each kind,
//! adjusted by chained calls.

#![allow(dead_code)]

use postern_api::*;
use postern_compile::{Inputs, SecretData};

pub const NS: &str = "team";

pub fn target(name: &str, hosts: &[&str]) -> Object<ProxyTargetSpec> {
    Object::new(
        NS,
        name,
        ProxyTargetSpec {
            hostnames: hosts.iter().map(|h| h.to_string()).collect(),
            backend: Backend {
                service: None,
                url: Some("http://10.0.0.5:8080".into()),
                ..Backend::default()
            },
            ..ProxyTargetSpec::default()
        },
    )
}

pub fn route(
    name: &str,
    target: &str,
    kind: PathMatchType,
    value: &str,
    priority: i32,
) -> Object<RouteSpec> {
    Object::new(
        NS,
        name,
        RouteSpec {
            target_ref: LocalRef {
                name: target.into(),
            },
            matches: RouteMatch {
                path: PathMatch {
                    kind,
                    value: value.into(),
                },
                methods: None,
            },
            priority,
            backend: None,
            auth: None,
        },
    )
}

pub fn user(name: &str, user: &str, upstream: &str) -> Object<UserUpstreamSpec> {
    Object::new(
        NS,
        name,
        UserUpstreamSpec {
            user: user.into(),
            password_secret_ref: SecretKeyRef {
                name: format!("{name}-proxy"),
                key: None,
            },
            upstream: upstream.into(),
            ..UserUpstreamSpec::default()
        },
    )
}

pub fn tunnel(name: &str, hosts: &[&str]) -> Object<TunnelSpec> {
    Object::new(
        NS,
        name,
        TunnelSpec {
            mode: TunnelMode::Http,
            hostnames: Some(hosts.iter().map(|h| h.to_string()).collect()),
            path_prefix: None,
            agent_key_secret_ref: SecretKeyRef {
                name: format!("{name}-agent"),
                key: None,
            },
            tcp_port: None,
            ..TunnelSpec::default()
        },
    )
}

pub fn client(name: &str) -> Object<OAuthClientSpec> {
    Object::new(
        NS,
        name,
        OAuthClientSpec {
            redirect_uris: vec!["https://app.example.com/callback".into()],
            grant_types: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
            scopes: vec!["read".into()],
            client_name: None,
            secret_ref: None,
        },
    )
}

/// Sets the creation time, which decides who wins a conflict.
pub fn created<S>(mut obj: Object<S>, at: &str) -> Object<S> {
    obj.meta.creation_timestamp = Some(at.into());
    obj
}

pub fn secret(inputs: &mut Inputs, name: &str, pairs: &[(&str, &str)]) {
    inputs.secrets.insert(
        ObjectKey::new(NS, name),
        SecretData {
            kind: None,
            data: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
        },
    );
}

pub const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
pub const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";
