//! Authorization servers and the oauth policies that name them.
//!
//! A ProxyTarget with `authorizationServer` compiles to a site with no
//! backend: its login providers, its signing keys (every `<kid>.pem` of a
//! Secret, PKCS#8, the last kid signs), lifetimes. A site or route with
//! `auth: {type: oauth}` names such a target in its namespace; once every
//! site is compiled, [`link`] gives each server the hostnames it protects
//! and the scopes they require, and refuses protected targets whose server
//! was not accepted (they could never let anyone in).

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use postern_api::{
    AuthPolicy, AuthorizationServerSpec, Kind, ObjectKey, ProxyTargetSpec, SecretKeyRef,
};
use postern_snapshot::{
    AuthRule, AuthorizationServer, GithubProvider, IdentityHeaderNames, OauthPolicy, OidcProvider,
    SigningAlg, SigningKey, Site,
};

use crate::Reason;
use crate::build::Build;
use crate::checks;
use crate::refusal::{Refusal, invalid};

/// The Secret that keeps an authorization server's generated signing key
/// when its spec names none (written by the operator or standalone mode).
pub fn signing_keys_secret_name(target: &str) -> String {
    format!("{target}-oauth-keys")
}

const MAX_ACCESS_TTL_S: u64 = 3600;

/// The server a target's spec declares, with `resources` and the protected
/// sites' scopes left for [`link`].
pub(crate) fn server(
    build: &Build<'_>,
    ns: &str,
    target: &str,
    spec: &AuthorizationServerSpec,
) -> Result<AuthorizationServer, Refusal> {
    let keys_secret = spec
        .signing_keys_secret_ref
        .as_ref()
        .map(|r| r.name.clone())
        .unwrap_or_else(|| signing_keys_secret_name(target));
    let signing_keys = signing_keys(build, ns, &keys_secret)?;
    let github = spec
        .github
        .as_ref()
        .map(|g| {
            Ok::<_, Refusal>(GithubProvider {
                client_id: g.client_id.clone(),
                client_secret: secret_text(build, ns, &g.client_secret_ref)?,
                web_url: base_url(g.web_url.as_deref(), "https://github.com")?,
                api_url: base_url(g.api_url.as_deref(), "https://api.github.com")?,
            })
        })
        .transpose()?;
    let oidc = spec
        .oidc
        .as_ref()
        .map(|o| {
            let scopes = o
                .scopes
                .clone()
                .unwrap_or_else(|| ["openid", "email", "profile"].map(String::from).to_vec());
            if !scopes.iter().any(|s| s == "openid") {
                return Err(invalid("oidc.scopes must include openid".into()));
            }
            Ok(OidcProvider {
                issuer: base_url(Some(&o.issuer_url), "")?,
                client_id: o.client_id.clone(),
                client_secret: o
                    .client_secret_ref
                    .as_ref()
                    .map(|r| secret_text(build, ns, r))
                    .transpose()?,
                scopes,
            })
        })
        .transpose()?;
    if github.is_none() && oidc.is_none() {
        return Err(invalid(
            "an authorization server needs github or oidc login".into(),
        ));
    }
    let access_token_ttl_s = seconds(spec.access_token_ttl.as_ref(), 3600)?;
    if access_token_ttl_s == 0 || access_token_ttl_s > MAX_ACCESS_TTL_S {
        return Err(invalid("accessTokenTtl must be between 1s and 1h".into()));
    }
    let refresh_token_ttl_s = seconds(spec.refresh_token_ttl.as_ref(), 720 * 3600)?;
    let session_ttl_s = seconds(spec.session_ttl.as_ref(), 12 * 3600)?;
    if refresh_token_ttl_s == 0 || session_ttl_s == 0 {
        return Err(invalid(
            "refreshTokenTtl and sessionTtl must be positive".into(),
        ));
    }
    Ok(AuthorizationServer {
        signing_keys,
        github,
        oidc,
        scopes: sorted(spec.scopes.as_deref().unwrap_or_default()),
        access_token_ttl_s,
        refresh_token_ttl_s,
        session_ttl_s,
        dynamic_registration: spec.dynamic_registration.unwrap_or(true),
        client_id_metadata_documents: spec.client_id_metadata_documents.unwrap_or(false),
        resources: Vec::new(),
    })
}

/// The policy of `auth: {type: oauth}`. `inherited` is the target's
/// server, for a Route that names none.
pub(crate) fn policy(
    build: &Build<'_>,
    ns: &str,
    auth: &AuthPolicy,
    inherited: Option<&str>,
) -> Result<OauthPolicy, Refusal> {
    let server = match (&auth.server, inherited) {
        (Some(r), _) => ObjectKey::new(ns, r.name.clone()).to_string(),
        (None, Some(id)) => id.to_string(),
        (None, None) => {
            return Err(invalid(
                "auth type oauth needs server: the ProxyTarget serving the authorization server"
                    .into(),
            ));
        }
    };
    let issuer_hosts = issuer_hosts(build, &server)?;
    let mut allowed_emails = Vec::new();
    for email in auth.allowed_emails.as_deref().unwrap_or_default() {
        let email = email.to_ascii_lowercase();
        let (local, domain) = email.split_once('@').unwrap_or(("", ""));
        if local.is_empty() || domain.is_empty() || (local.contains('*') && local != "*") {
            return Err(invalid(format!(
                "allowedEmails entry {email:?} must be an address or *@domain"
            )));
        }
        allowed_emails.push(email);
    }
    allowed_emails.sort();
    allowed_emails.dedup();
    Ok(OauthPolicy {
        server,
        issuer_hosts,
        allowed_users: sorted(auth.allowed_users.as_deref().unwrap_or_default()),
        allowed_orgs: sorted(auth.allowed_orgs.as_deref().unwrap_or_default()),
        allowed_emails,
        scopes: sorted(auth.scopes.as_deref().unwrap_or_default()),
        identity_headers: identity_headers(auth)?,
    })
}

/// Gives every server the hostnames it protects and the scopes they need,
/// and refuses targets (and drops routes) whose server is not served.
pub(crate) fn link(build: &mut Build<'_>, sites: &mut BTreeMap<ObjectKey, Site>) {
    let servers: BTreeSet<String> = sites
        .values()
        .filter(|s| s.authorization_server.is_some())
        .map(|s| s.id.clone())
        .collect();
    let orphaned: Vec<(ObjectKey, String)> = sites
        .iter()
        .filter_map(|(key, site)| {
            let missing = policies(site).find(|p| !servers.contains(&p.server))?;
            Some((key.clone(), missing.server.clone()))
        })
        .collect();
    for (key, server) in orphaned {
        sites.remove(&key);
        build.overrule(
            Kind::ProxyTarget,
            &key,
            (
                Reason::ServerNotFound,
                format!("authorization server {server} is not served (no accepted ProxyTarget with authorizationServer)"),
            ),
        );
    }
    let mut protected: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    for site in sites.values() {
        for policy in policies(site) {
            let entry = protected.entry(policy.server.clone()).or_default();
            entry.0.extend(site.hostnames.iter().cloned());
            entry.1.extend(policy.scopes.iter().cloned());
        }
    }
    for site in sites.values_mut() {
        let Some(server) = site.authorization_server.as_mut() else {
            continue;
        };
        if let Some((hosts, scopes)) = protected.remove(&site.id) {
            server.resources = hosts.into_iter().collect();
            let mut all: BTreeSet<String> = server.scopes.iter().cloned().collect();
            all.extend(scopes);
            server.scopes = all.into_iter().collect();
        }
    }
}

/// The oauth policies of a site and its routes.
fn policies(site: &Site) -> impl Iterator<Item = &OauthPolicy> {
    std::iter::once(&site.auth)
        .chain(site.routes.iter().filter_map(|r| r.auth.as_ref()))
        .filter_map(|rule| match rule {
            AuthRule::Oauth(policy) => Some(policy),
            _ => None,
        })
}

/// The hostnames of the ProxyTarget `server`, if it declares a server.
fn issuer_hosts(build: &Build<'_>, server: &str) -> Result<Vec<String>, Refusal> {
    let target = build.target(server);
    let declares = |spec: &ProxyTargetSpec| spec.authorization_server.is_some();
    match target {
        Some(t) if declares(&t.spec) => {
            let hosts: BTreeSet<String> = t
                .spec
                .hostnames
                .iter()
                .map(|h| checks::hostname(h))
                .collect::<Result<_, _>>()?;
            if hosts.iter().any(|h| h.starts_with("*.")) {
                return Err(invalid(format!(
                    "authorization server {server} has a wildcard hostname; an issuer needs exact names"
                )));
            }
            Ok(hosts.into_iter().collect())
        }
        Some(_) => Err((
            Reason::ServerNotFound,
            format!("ProxyTarget {server} has no authorizationServer"),
        )),
        None => Err((
            Reason::ServerNotFound,
            format!("authorization server {server} not found"),
        )),
    }
}

fn identity_headers(auth: &AuthPolicy) -> Result<IdentityHeaderNames, Refusal> {
    let defaults = IdentityHeaderNames::default();
    let Some(custom) = &auth.identity_headers else {
        return Ok(defaults);
    };
    let pick = |value: &Option<String>, default: String| -> Result<String, Refusal> {
        let name = value.clone().unwrap_or(default).to_ascii_lowercase();
        if !name.is_empty() && http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(invalid(format!("{name:?} is not a header name")));
        }
        if ["authorization", "host", "cookie", "content-length"].contains(&name.as_str()) {
            return Err(invalid(format!(
                "{name} cannot carry identity: Postern owns that header"
            )));
        }
        Ok(name)
    };
    Ok(IdentityHeaderNames {
        user: pick(&custom.user, defaults.user)?,
        email: pick(&custom.email, defaults.email)?,
        groups: pick(&custom.groups, defaults.groups)?,
    })
}

/// Every `<kid>.pem` of the Secret, sorted by kid.
fn signing_keys(build: &Build<'_>, ns: &str, secret: &str) -> Result<Vec<SigningKey>, Refusal> {
    let data = build.secret_entries(ns, secret)?;
    let mut keys = Vec::new();
    for (name, value) in data {
        let Some(kid) = name.strip_suffix(".pem") else {
            continue;
        };
        let pem = checks::utf8(value, name)?;
        let alg = key_alg(pem).ok_or_else(|| {
            invalid(format!(
                "key {name} of Secret {ns}/{secret} is not a PKCS#8 EC P-256 or RSA private key in PEM"
            ))
        })?;
        keys.push(SigningKey {
            kid: kid.to_string(),
            alg,
            private_key_pem: pem.to_string(),
        });
    }
    if keys.is_empty() {
        return Err((
            Reason::SecretNotFound,
            format!("Secret {ns}/{secret} holds no signing key (<kid>.pem)"),
        ));
    }
    keys.sort_by(|a, b| a.kid.cmp(&b.kid));
    Ok(keys)
}

/// The algorithm a PKCS#8 PEM key signs with, from its algorithm OID.
fn key_alg(pem: &str) -> Option<SigningAlg> {
    const EC_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    const RSA: &[u8] = &[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
    ];
    let body = pem
        .trim()
        .strip_prefix("-----BEGIN PRIVATE KEY-----")?
        .strip_suffix("-----END PRIVATE KEY-----")?;
    let b64: String = body.split_ascii_whitespace().collect();
    let der = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    // The algorithm identifier sits in the first few dozen bytes.
    let head = &der[..der.len().min(48)];
    let has = |oid: &[u8]| head.windows(oid.len()).any(|w| w == oid);
    if has(EC_P256) {
        Some(SigningAlg::ES256)
    } else if has(RSA) {
        Some(SigningAlg::RS256)
    } else {
        None
    }
}

fn secret_text(build: &Build<'_>, ns: &str, r: &SecretKeyRef) -> Result<String, Refusal> {
    let value = build.secret_value(ns, &r.name, r.key_or("clientSecret"))?;
    Ok(checks::utf8(value, "clientSecret")?.trim().to_string())
}

/// An http(s) base URL without a trailing slash.
fn base_url(value: Option<&str>, default: &str) -> Result<String, Refusal> {
    let url = value.unwrap_or(default).trim_end_matches('/');
    let ok = (url.starts_with("https://") || url.starts_with("http://"))
        && http::Uri::try_from(url).is_ok_and(|u| u.host().is_some() && u.query().is_none());
    if ok {
        Ok(url.to_string())
    } else {
        Err(invalid(format!("{url:?} is not an http(s) base URL")))
    }
}

fn seconds(d: Option<&postern_api::Duration>, default_s: u64) -> Result<u64, Refusal> {
    Ok(checks::millis(d, default_s * 1000)? / 1000)
}

fn sorted(values: &[String]) -> Vec<String> {
    let set: BTreeSet<String> = values.iter().cloned().collect();
    set.into_iter().collect()
}
