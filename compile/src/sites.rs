//! ProxyTargets and Routes → sites.
//!
//! Targets are compiled oldest first, so an older target keeps a hostname a
//! newer one also claims. Routes attach to accepted targets only and are put
//! in match order here, once, so the data plane never sorts per request.

use std::collections::BTreeMap;

use postern_api::{
    AuthPolicy, AuthType, Kind, Object, ObjectKey, PathForwarding, PathMatchType, ProxyTargetSpec,
    RouteSpec, TlsConfig,
};
use postern_snapshot::{
    AcmeIssuer, AuthRule, Certificate, PathRule, RouteEntry, Site, SiteTls, Timeouts, sha256_hex,
};

use crate::Reason;
use crate::backends::{backend, header_rules};
use crate::build::{Build, oldest_first};
use crate::checks;
use crate::claims::{Holders, claim};
use crate::oauth_servers;
use crate::policy::NameKind;
use crate::refusal::Refusal;

/// Compiles ProxyTargets and their Routes; returns the sites and who
/// holds each hostname (Tunnels claim from what is left).
pub(crate) fn compile(build: &mut Build<'_>) -> (Vec<Site>, Holders) {
    let mut holders = Holders::new(NameKind::Hostname);
    let mut sites: BTreeMap<ObjectKey, Site> = BTreeMap::new();
    let inputs = build.inputs;
    for target in oldest_first(&inputs.proxy_targets) {
        let key = target.key();
        let names = checks::hostnames(&target.spec.hostnames);
        let outcome = claim(build, &holders, Kind::ProxyTarget, &key, names)
            .and_then(|names| Ok((names, site(build, target)?)));
        let outcome = match outcome {
            Ok((names, (site, certificate))) => {
                holders.hold(Kind::ProxyTarget, &key, &names);
                if let Some(certificate) = certificate {
                    build
                        .certificates
                        .insert(certificate.id.clone(), certificate);
                }
                sites.insert(target.key(), site);
                Ok(String::new())
            }
            Err(refusal) => Err(refusal),
        };
        build.verdict(Kind::ProxyTarget, target, outcome);
    }
    attach_routes(build, &mut sites);
    oauth_servers::link(build, &mut sites);
    (sites.into_values().collect(), holders)
}

/// A target's site and the certificate it needs, if any.
fn site(
    build: &Build<'_>,
    target: &Object<ProxyTargetSpec>,
) -> Result<(Site, Option<Certificate>), Refusal> {
    let ns = target.namespace();
    let spec = &target.spec;
    let hostnames = checks::hostnames(&spec.hostnames)?;
    if hostnames.is_empty() {
        return Err((Reason::InvalidSpec, "hostnames must not be empty".into()));
    }
    let authorization_server = match &spec.authorization_server {
        Some(server) => {
            if !spec.backend.is_unset() {
                return Err((
                    Reason::InvalidSpec,
                    "exactly one of backend or authorizationServer must be set".into(),
                ));
            }
            if spec.tls.is_none() {
                return Err((
                    Reason::InvalidSpec,
                    "authorizationServer needs tls (its issuer is https)".into(),
                ));
            }
            if spec.auth.is_some() {
                return Err((
                    Reason::InvalidSpec,
                    "an authorization server takes no auth policy".into(),
                ));
            }
            Some(oauth_servers::server(build, ns, &target.meta.name, server)?)
        }
        None => None,
    };
    let backend = match authorization_server {
        Some(_) => Default::default(),
        None => backend(build, ns, &spec.backend)?,
    };
    let (tls, certificate) = match &spec.tls {
        Some(tls) => {
            let secret = crate::acme_secret_name(Kind::ProxyTarget, &target.meta.name);
            let (tls, certificate) = site_tls(build, ns, &secret, tls)?;
            (Some(tls), certificate)
        }
        None => (None, None),
    };
    let redirect_http = spec.redirect_http.unwrap_or(false);
    if redirect_http && tls.is_none() {
        return Err((Reason::InvalidSpec, "redirectHttp needs tls".into()));
    }
    let timeouts = spec.timeouts.clone().unwrap_or_default();
    let defaults = Timeouts::default();
    let site = Site {
        id: target.key().to_string(),
        hostnames: hostnames.into_iter().collect(),
        backend,
        tls,
        redirect_http,
        auth: auth(build, ns, spec.auth.as_ref(), None)?,
        timeouts: Timeouts {
            connect_ms: checks::millis(timeouts.connect.as_ref(), defaults.connect_ms)?,
            response_headers_ms: checks::millis(
                timeouts.response_headers.as_ref(),
                defaults.response_headers_ms,
            )?,
            idle_ms: checks::millis(timeouts.idle.as_ref(), defaults.idle_ms)?,
        },
        routes: Vec::new(),
        preserve_host: spec.preserve_host.unwrap_or(false),
        forward_raw_path: spec.path_forwarding == Some(PathForwarding::AsReceived),
        request_headers: header_rules(spec.request_headers.as_ref())?,
        response_headers: header_rules(spec.response_headers.as_ref())?,
        tunnel: None,
        authorization_server,
    };
    Ok((site, certificate))
}

/// The issued certificate, once the manager stored one. Not having it yet is
/// normal (the site serves plain HTTP and the default certificate meanwhile).
fn acme_certificate(build: &Build<'_>, ns: &str, secret: &str) -> Option<Certificate> {
    let cert = std::str::from_utf8(build.secret_value(ns, secret, "tls.crt").ok()?).ok()?;
    let key = std::str::from_utf8(build.secret_value(ns, secret, "tls.key").ok()?).ok()?;
    Some(Certificate {
        id: format!("{ns}/{secret}"),
        cert_pem: cert.to_string(),
        key_pem: key.to_string(),
    })
}

pub(crate) fn site_tls(
    build: &Build<'_>,
    ns: &str,
    acme_secret: &str,
    tls: &TlsConfig,
) -> Result<(SiteTls, Option<Certificate>), Refusal> {
    match (&tls.secret_ref, &tls.acme) {
        (Some(secret), None) => {
            let cert = checks::utf8(build.secret_value(ns, &secret.name, "tls.crt")?, "tls.crt")?;
            let key = checks::utf8(build.secret_value(ns, &secret.name, "tls.key")?, "tls.key")?;
            if !cert.contains("-----BEGIN CERTIFICATE-----") || !key.contains("PRIVATE KEY-----") {
                return Err((
                    Reason::InvalidSpec,
                    format!(
                        "Secret {ns}/{} does not hold a PEM certificate and key",
                        secret.name
                    ),
                ));
            }
            let id = format!("{ns}/{}", secret.name);
            let certificate = Certificate {
                id: id.clone(),
                cert_pem: cert.to_string(),
                key_pem: key.to_string(),
            };
            Ok((SiteTls::Secret { certificate: id }, Some(certificate)))
        }
        (None, Some(acme)) => {
            if !build.inputs.options.acme_issuers.contains(&acme.issuer) {
                return Err((
                    Reason::UnknownIssuer,
                    format!("no ACME issuer {:?} is configured", acme.issuer),
                ));
            }
            let certificate = acme_certificate(build, ns, acme_secret);
            let tls = SiteTls::Acme {
                issuer: AcmeIssuer::parse(&acme.issuer),
                certificate: certificate.as_ref().map(|c| c.id.clone()),
            };
            Ok((tls, certificate))
        }
        _ => Err((
            Reason::InvalidSpec,
            "tls needs exactly one of secretRef or acme".into(),
        )),
    }
}

/// `inherited`: the server of the target's own oauth policy, for a Route
/// override that names none.
fn auth(
    build: &Build<'_>,
    ns: &str,
    policy: Option<&AuthPolicy>,
    inherited: Option<&str>,
) -> Result<AuthRule, Refusal> {
    let Some(policy) = policy else {
        return Ok(AuthRule::None);
    };
    let oauth_only = policy.server.is_some()
        || policy.allowed_users.is_some()
        || policy.allowed_orgs.is_some()
        || policy.allowed_emails.is_some()
        || policy.scopes.is_some()
        || policy.identity_headers.is_some();
    if oauth_only && policy.kind != AuthType::Oauth {
        return Err((
            Reason::InvalidSpec,
            "server, allowlists, scopes and identityHeaders apply only to auth type oauth".into(),
        ));
    }
    match policy.kind {
        AuthType::None => Ok(AuthRule::None),
        AuthType::Bearer => {
            let secret = policy.tokens_secret_ref.as_ref().ok_or_else(|| {
                (
                    Reason::InvalidSpec,
                    "auth type bearer needs tokensSecretRef".to_string(),
                )
            })?;
            let mut hashes: Vec<String> = build
                .secret_values(ns, &secret.name)?
                .into_iter()
                .map(<[u8]>::trim_ascii)
                .filter(|token| !token.is_empty())
                .map(sha256_hex)
                .collect();
            if hashes.is_empty() {
                return Err((
                    Reason::SecretNotFound,
                    format!("Secret {ns}/{} holds no token", secret.name),
                ));
            }
            hashes.sort();
            hashes.dedup();
            Ok(AuthRule::Bearer {
                token_sha256: hashes,
            })
        }
        AuthType::Oauth => Ok(AuthRule::Oauth(oauth_servers::policy(
            build, ns, policy, inherited,
        )?)),
    }
}

fn attach_routes(build: &mut Build<'_>, sites: &mut BTreeMap<ObjectKey, Site>) {
    let inputs = build.inputs;
    for route in oldest_first(&inputs.routes) {
        let target = ObjectKey::new(route.namespace(), route.spec.target_ref.name.clone());
        let outcome = match sites.get_mut(&target) {
            None => Err(target_missing(build, &target)),
            Some(site) if site.authorization_server.is_some() => Err((
                Reason::InvalidSpec,
                format!(
                    "ProxyTarget {target} serves an authorization server: Routes cannot attach to it"
                ),
            )),
            Some(site) => route_entry(build, route, inherited_server(&site.auth)).map(|entry| {
                site.routes.push(entry);
                String::new()
            }),
        };
        build.verdict(Kind::Route, route, outcome);
    }
    for site in sites.values_mut() {
        site.routes.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then(b.path.value().len().cmp(&a.path.value().len()))
                .then(a.id.cmp(&b.id))
        });
    }
}

fn target_missing(build: &Build<'_>, target: &ObjectKey) -> Refusal {
    let exists = build
        .inputs
        .proxy_targets
        .iter()
        .any(|t| &t.key() == target);
    let message = if exists {
        format!("ProxyTarget {target} is not accepted")
    } else {
        format!("ProxyTarget {target} not found")
    };
    (Reason::TargetNotFound, message)
}

/// The authorization server a target's oauth policy names, if any.
fn inherited_server(rule: &AuthRule) -> Option<String> {
    match rule {
        AuthRule::Oauth(policy) => Some(policy.server.clone()),
        _ => None,
    }
}

fn route_entry(
    build: &Build<'_>,
    route: &Object<RouteSpec>,
    inherited: Option<String>,
) -> Result<RouteEntry, Refusal> {
    let ns = route.namespace();
    let spec = &route.spec;
    let value = spec.matches.path.value.clone();
    let path = match spec.matches.path.kind {
        PathMatchType::RegularExpression => {
            regex::Regex::new(&format!("^(?:{value})$")).map_err(|e| {
                (
                    Reason::InvalidRegex,
                    format!("path {value:?} is not a valid regular expression: {e}"),
                )
            })?;
            PathRule::Regex(value)
        }
        kind => {
            if !value.starts_with('/') {
                return Err((
                    Reason::InvalidSpec,
                    format!("path {value:?} must start with /"),
                ));
            }
            if kind == PathMatchType::Exact {
                PathRule::Exact(value)
            } else {
                PathRule::Prefix(value)
            }
        }
    };
    let mut methods: Vec<String> = spec
        .matches
        .methods
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|m| m.to_ascii_uppercase())
        .collect();
    if let Some(bad) = methods
        .iter()
        .find(|m| m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()))
    {
        return Err((
            Reason::InvalidSpec,
            format!("{bad:?} is not an HTTP method"),
        ));
    }
    methods.sort();
    methods.dedup();
    Ok(RouteEntry {
        id: route.key().to_string(),
        path,
        methods,
        priority: spec.priority,
        backend: spec
            .backend
            .as_ref()
            .map(|b| backend(build, ns, b))
            .transpose()?,
        auth: spec
            .auth
            .as_ref()
            .map(|a| auth(build, ns, Some(a), inherited.as_deref()))
            .transpose()?,
    })
}
