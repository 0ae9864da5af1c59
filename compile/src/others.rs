//! UserUpstreams, Tunnels and OAuthClients.

use std::collections::{BTreeMap, BTreeSet};

use postern_api::{GrantType, Kind, Object, ObjectKey, TunnelMode, TunnelSpec, UserUpstreamSpec};
use postern_snapshot::{
    Credentials, DestinationRules, OAuthClientEntry, PasswordHash, ProxyUser, TunnelEntry,
    Upstream, sha256_hex,
};

use crate::Reason;
use crate::build::{Build, Refusal, oldest_first};
use crate::checks;

const INLINE_CREDENTIALS: &str =
    "upstream credentials inline in the URL are discouraged: use upstreamCredentialsSecretRef";

pub(crate) fn users(build: &mut Build<'_>) -> Vec<ProxyUser> {
    let mut users: BTreeMap<String, (ObjectKey, ProxyUser)> = BTreeMap::new();
    let inputs = build.inputs;
    for obj in oldest_first(&inputs.user_upstreams) {
        let outcome = proxy_user(build, obj).and_then(|(user, warning)| {
            if let Some((owner, _)) = users.get(&user.user) {
                return Err((
                    Reason::DuplicateUser,
                    format!(
                        "user {} is already defined by UserUpstream {owner}",
                        user.user
                    ),
                ));
            }
            users.insert(user.user.clone(), (obj.key(), user));
            Ok(warning)
        });
        build.verdict(Kind::UserUpstream, obj, outcome);
    }
    users.into_values().map(|(_, user)| user).collect()
}

/// The user and any warning to report on an accepted object.
fn proxy_user(
    build: &Build<'_>,
    obj: &Object<UserUpstreamSpec>,
) -> Result<(ProxyUser, String), Refusal> {
    let ns = obj.namespace();
    let spec = &obj.spec;
    if spec.user.is_empty() || spec.user.contains(':') || spec.user.len() > 64 {
        return Err((
            Reason::InvalidSpec,
            format!("{:?} is not a valid user name", spec.user),
        ));
    }
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
            max_connections: spec.max_connections,
        },
        warning,
    ))
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

/// Claims already granted to older tunnels.
#[derive(Default)]
struct TunnelClaims {
    hosts: BTreeMap<String, ObjectKey>,
    paths: BTreeMap<String, ObjectKey>,
    ports: BTreeMap<u16, ObjectKey>,
}

pub(crate) fn tunnels(build: &mut Build<'_>, site_hosts: &BTreeSet<String>) -> Vec<TunnelEntry> {
    let mut claims = TunnelClaims::default();
    let mut out = Vec::new();
    let inputs = build.inputs;
    for obj in oldest_first(&inputs.tunnels) {
        let outcome =
            tunnel(build, obj).and_then(|entry| claim(&mut claims, site_hosts, obj.key(), entry));
        let outcome = outcome.map(|entry| {
            out.push(entry);
            String::new()
        });
        build.verdict(Kind::Tunnel, obj, outcome);
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

fn claim(
    claims: &mut TunnelClaims,
    site_hosts: &BTreeSet<String>,
    key: ObjectKey,
    entry: TunnelEntry,
) -> Result<TunnelEntry, Refusal> {
    for host in &entry.hostnames {
        if site_hosts.contains(host) {
            return Err((
                Reason::HostnameConflict,
                format!("hostname {host} is already served by a ProxyTarget"),
            ));
        }
        if let Some(owner) = claims.hosts.get(host) {
            return Err((
                Reason::HostnameConflict,
                format!("hostname {host} is already held by Tunnel {owner}"),
            ));
        }
    }
    if let Some(owner) = entry.path_prefix.as_ref().and_then(|p| claims.paths.get(p)) {
        return Err((
            Reason::PathConflict,
            format!("path prefix is already held by Tunnel {owner}"),
        ));
    }
    if let Some(owner) = entry.tcp_port.and_then(|p| claims.ports.get(&p)) {
        return Err((
            Reason::PortConflict,
            format!("TCP port is already held by Tunnel {owner}"),
        ));
    }
    for host in &entry.hostnames {
        claims.hosts.insert(host.clone(), key.clone());
    }
    if let Some(path) = &entry.path_prefix {
        claims.paths.insert(path.clone(), key.clone());
    }
    if let Some(port) = entry.tcp_port {
        claims.ports.insert(port, key);
    }
    Ok(entry)
}

fn tunnel(build: &Build<'_>, obj: &Object<TunnelSpec>) -> Result<TunnelEntry, Refusal> {
    let ns = obj.namespace();
    let spec = &obj.spec;
    let hostnames: BTreeSet<String> = spec
        .hostnames
        .iter()
        .flatten()
        .map(|h| checks::hostname(h))
        .collect::<Result<_, _>>()?;
    let mode = match spec.mode {
        TunnelMode::Http => {
            if hostnames.is_empty() == spec.path_prefix.is_none() {
                return Err((
                    Reason::InvalidSpec,
                    "an http tunnel needs exactly one of hostnames or pathPrefix".into(),
                ));
            }
            "http"
        }
        TunnelMode::Tcp => {
            if spec.tcp_port.is_none() || spec.path_prefix.is_some() {
                return Err((
                    Reason::InvalidSpec,
                    "a tcp tunnel needs tcpPort and no pathPrefix".into(),
                ));
            }
            "tcp"
        }
    };
    if let Some(prefix) = &spec.path_prefix
        && (!prefix.starts_with('/') || prefix.ends_with('/') || prefix.len() < 2)
    {
        return Err((
            Reason::InvalidSpec,
            format!("pathPrefix {prefix:?} must start with / and not end with /"),
        ));
    }
    let key_ref = &spec.agent_key_secret_ref;
    let key = build.secret_value(ns, &key_ref.name, key_ref.key_or("key"))?;
    Ok(TunnelEntry {
        id: obj.key().to_string(),
        mode: mode.to_string(),
        hostnames: hostnames.into_iter().collect(),
        path_prefix: spec.path_prefix.clone(),
        tcp_port: spec.tcp_port,
        agent_key: checks::utf8(key, "the agent key")?.to_string(),
    })
}

pub(crate) fn oauth_clients(build: &mut Build<'_>) -> Vec<OAuthClientEntry> {
    let mut clients: BTreeMap<String, (ObjectKey, OAuthClientEntry)> = BTreeMap::new();
    let inputs = build.inputs;
    for obj in oldest_first(&inputs.oauth_clients) {
        let outcome = oauth_client(build, obj).and_then(|entry| {
            if let Some((owner, _)) = clients.get(&entry.client_id) {
                return Err((
                    Reason::DuplicateClientId,
                    format!(
                        "client id {} is already used by OAuthClient {owner}",
                        entry.client_id
                    ),
                ));
            }
            clients.insert(entry.client_id.clone(), (obj.key(), entry));
            Ok(String::new())
        });
        build.verdict(Kind::OAuthClient, obj, outcome);
    }
    clients.into_values().map(|(_, entry)| entry).collect()
}

fn oauth_client(
    build: &Build<'_>,
    obj: &Object<postern_api::OAuthClientSpec>,
) -> Result<OAuthClientEntry, Refusal> {
    let ns = obj.namespace();
    let spec = &obj.spec;
    if spec.redirect_uris.is_empty() || spec.grant_types.is_empty() {
        return Err((
            Reason::InvalidSpec,
            "redirectUris and grantTypes must not be empty".into(),
        ));
    }
    for uri in &spec.redirect_uris {
        let loopback = ["http://localhost", "http://127.0.0.1", "http://[::1]"]
            .iter()
            .any(|p| uri.starts_with(p));
        if !(uri.starts_with("https://") || loopback) || uri.contains('#') {
            return Err((
                Reason::InvalidSpec,
                format!(
                    "redirect URI {uri:?} must be https, or http on a loopback host, without a fragment"
                ),
            ));
        }
    }
    let secret = match &spec.secret_ref {
        Some(r) => {
            let value = build.secret_value(ns, &r.name, r.key_or("clientSecret"))?;
            let salt = sha256_hex(format!("postern-client\0{}", obj.meta.name).as_bytes());
            Some(PasswordHash::new(&salt[..32], value))
        }
        None => None,
    };
    if secret.is_none() && spec.grant_types.contains(&GrantType::ClientCredentials) {
        return Err((
            Reason::InvalidSpec,
            "client_credentials needs a confidential client (secretRef)".into(),
        ));
    }
    let mut grant_types: Vec<String> = spec
        .grant_types
        .iter()
        .map(|g| match g {
            GrantType::AuthorizationCode => "authorization_code",
            GrantType::RefreshToken => "refresh_token",
            GrantType::ClientCredentials => "client_credentials",
        })
        .map(str::to_string)
        .collect();
    grant_types.sort();
    grant_types.dedup();
    let sorted = |v: &[String]| {
        let mut v = v.to_vec();
        v.sort();
        v.dedup();
        v
    };
    Ok(OAuthClientEntry {
        id: obj.key().to_string(),
        client_id: obj.meta.name.clone(),
        redirect_uris: sorted(&spec.redirect_uris),
        grant_types,
        scopes: sorted(&spec.scopes),
        secret,
    })
}
