//! UserUpstreams → forward-proxy users: the user name rule, the password
//! hash, the upstream and its credentials (from a Secret, or discouraged
//! inline in the URL), destination rules and the internal networks the
//! user may reach. User names are unique: the older UserUpstream keeps a
//! duplicated one.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use postern_api::{Kind, Object, UserUpstreamSpec, user_name};
use postern_snapshot::{
    Credentials, DestinationRules, PasswordHash, ProxyUser, Upstream, sha256_hex,
};

use crate::Reason;
use crate::build::{Build, oldest_first};
use crate::checks;
use crate::claims::{Holders, claim};
use crate::policy::NameKind;
use crate::refusal::{Refusal, invalid};

const INLINE_CREDENTIALS: &str =
    "upstream credentials inline in the URL are discouraged: use upstreamCredentialsSecretRef";

/// Compiles UserUpstreams oldest first: the older object keeps a user name
/// two of them claim.
pub(crate) fn compile(build: &mut Build<'_>) -> Vec<ProxyUser> {
    let mut holders = Holders::new(NameKind::User);
    let mut users: BTreeMap<String, ProxyUser> = BTreeMap::new();
    let inputs = build.inputs;
    for obj in oldest_first(&inputs.user_upstreams) {
        let key = obj.key();
        let name = user_name(&obj.spec.user).map(|name| BTreeSet::from([name]));
        let outcome = claim(build, &holders, Kind::UserUpstream, &key, name)
            .and_then(|names| Ok((names, proxy_user(build, obj)?)))
            .map(|(names, (user, warning))| {
                holders.hold(Kind::UserUpstream, &key, &names);
                users.insert(user.user.clone(), user);
                warning
            });
        build.verdict(Kind::UserUpstream, obj, outcome);
    }
    users.into_values().collect()
}

fn user_name(user: &str) -> Result<String, Refusal> {
    if user_name::is_valid(user) {
        Ok(user.to_string())
    } else {
        Err(invalid(format!(
            "{user:?} is not a valid user name ({})",
            user_name::RULE
        )))
    }
}

/// The user and any warning to report on an accepted object.
fn proxy_user(
    build: &Build<'_>,
    obj: &Object<UserUpstreamSpec>,
) -> Result<(ProxyUser, String), Refusal> {
    let ns = obj.namespace();
    let spec = &obj.spec;
    let password_ref = &spec.password_secret_ref;
    let password = build.secret_value(ns, &password_ref.name, password_ref.key_or("password"))?;
    let salt = sha256_hex(format!("postern-user\0{}\0{}", obj.key(), spec.user).as_bytes());
    let password = PasswordHash::new(&salt[..32], password);
    let (upstream, warning) = upstream(build, ns, spec)?;
    let destinations = spec.destinations.clone().unwrap_or_default();
    if let Some(bad) = destinations
        .allow
        .iter()
        .chain(&destinations.deny)
        .find(|d| d.is_empty() || d.contains(char::is_whitespace))
    {
        return Err((
            Reason::InvalidSpec,
            format!("{bad:?} is not a destination rule"),
        ));
    }
    let allow_internal_networks = internal_networks(&spec.allow_internal_networks)?;
    let revision_input = serde_json::to_vec(&(&password, &upstream)).unwrap_or_default();
    Ok((
        ProxyUser {
            id: obj.key().to_string(),
            user: spec.user.clone(),
            password,
            revision: sha256_hex(&revision_input)[..16].to_string(),
            upstream,
            destinations: DestinationRules {
                allow: destinations.allow,
                deny: destinations.deny,
            },
            allow_internal_networks,
            max_connections: spec.max_connections,
        },
        warning,
    ))
}

/// `allowInternalNetworks` as normalised CIDRs (host bits cleared; a
/// single address becomes a /32 or /128, an IPv4-mapped IPv6 address its
/// IPv4 form, which is what the data plane compares against).
fn internal_networks(entries: &[String]) -> Result<Vec<String>, Refusal> {
    let mut nets = Vec::with_capacity(entries.len());
    for entry in entries {
        let net = match entry.parse::<IpNet>() {
            Ok(net) => net,
            Err(_) => entry
                .parse::<IpAddr>()
                .map(|ip| IpNet::from(ip.to_canonical()))
                .map_err(|_| {
                    (
                        Reason::InvalidSpec,
                        format!(
                            "allowInternalNetworks: {entry:?} is not a CIDR (10.0.0.0/8) or an IP address"
                        ),
                    )
                })?,
        };
        let net = net.trunc().to_string();
        if !nets.contains(&net) {
            nets.push(net);
        }
    }
    Ok(nets)
}

fn upstream(
    build: &Build<'_>,
    ns: &str,
    spec: &UserUpstreamSpec,
) -> Result<(Upstream, String), Refusal> {
    if spec.upstream.trim_end_matches('/') == "direct:" {
        return Ok((Upstream::Direct, String::new()));
    }
    let url = checks::host_url(&spec.upstream, &["direct", "socks5", "http", "https"])?;
    if url.scheme == "direct" {
        return Ok((Upstream::Direct, String::new()));
    }
    let mut warning = String::new();
    let credentials = match (&spec.upstream_credentials_secret_ref, url.userinfo) {
        (Some(secret), _) => {
            let username = build.secret_value(ns, &secret.name, "username")?;
            let password = build.secret_value(ns, &secret.name, "password")?;
            Some(Credentials {
                username: checks::utf8(username, "username")?.to_string(),
                password: checks::utf8(password, "password")?.to_string(),
            })
        }
        (None, Some((username, password))) => {
            warning = INLINE_CREDENTIALS.to_string();
            Some(Credentials { username, password })
        }
        (None, None) => None,
    };
    let ca_pem = upstream_ca(build, ns, spec, &url.scheme)?;
    let host = url.host;
    Ok((
        match url.scheme.as_str() {
            "socks5" => Upstream::Socks5 {
                host,
                port: url.port.unwrap_or(1080),
                credentials,
            },
            "http" => Upstream::Http {
                host,
                port: url.port.unwrap_or(80),
                credentials,
            },
            _ => Upstream::Https {
                host,
                port: url.port.unwrap_or(443),
                credentials,
                ca_pem,
            },
        },
        warning,
    ))
}

/// The PEM of `upstreamCaSecretRef` (https:// upstreams only).
fn upstream_ca(
    build: &Build<'_>,
    ns: &str,
    spec: &UserUpstreamSpec,
    scheme: &str,
) -> Result<Option<String>, Refusal> {
    let Some(secret) = &spec.upstream_ca_secret_ref else {
        return Ok(None);
    };
    if scheme != "https" {
        return Err((
            Reason::InvalidSpec,
            "upstreamCaSecretRef applies only to https:// upstreams".into(),
        ));
    }
    let pem = build.secret_value(ns, &secret.name, secret.key_or("ca.crt"))?;
    let pem = checks::utf8(pem, "upstream CA")?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err((
            Reason::InvalidSpec,
            format!(
                "{}: no PEM certificate in the upstream CA Secret",
                secret.name
            ),
        ));
    }
    Ok(Some(pem.to_string()))
}
