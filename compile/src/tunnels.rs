//! Tunnels → tunnel entries: the mode's shape (hostnames or a path prefix
//! for http, a port for tcp), the agent key, and the claims tunnels make.
//! Hostnames sites serve are not a tunnel's; among tunnels the older keeps a
//! contested hostname, path prefix or port. An http tunnel's hostnames also
//! become a site (`Site::tunnel` set), so routing, TLS and ACME treat them as
//! any other host.

use std::collections::BTreeMap;

use postern_api::{Kind, Object, ObjectKey, TunnelMode as ApiMode, TunnelSpec};
use postern_snapshot::{
    AuthRule, BackendEndpoint, Certificate, Site, Timeouts, TunnelEntry, TunnelMode,
};

use crate::Reason;
use crate::build::{Build, oldest_first};
use crate::checks;
use crate::claims::{Holders, claim};
use crate::refusal::Refusal;

/// Path prefixes and ports already granted to older tunnels.
#[derive(Default)]
struct TunnelClaims {
    paths: BTreeMap<String, ObjectKey>,
    ports: BTreeMap<u16, ObjectKey>,
}

/// Compiles Tunnels oldest first; `hosts` holds the hostnames sites
/// already serve, which no tunnel may take.
/// Returns the entries and the sites of their hostnames, both sorted by id.
pub(crate) fn compile(build: &mut Build<'_>, mut hosts: Holders) -> (Vec<TunnelEntry>, Vec<Site>) {
    let mut claims = TunnelClaims::default();
    let mut out = Vec::new();
    let mut sites = Vec::new();
    let inputs = build.inputs;
    for obj in oldest_first(&inputs.tunnels) {
        let key = obj.key();
        let names = checks::hostnames(obj.spec.hostnames.iter().flatten());
        let outcome = claim(build, &hosts, Kind::Tunnel, &key, names)
            .and_then(|names| Ok((names, tunnel(build, obj)?)))
            .and_then(|(names, (entry, site))| {
                let entry = claim_path_and_port(&mut claims, &key, entry)?;
                hosts.hold(Kind::Tunnel, &key, &names);
                Ok((entry, site))
            });
        let outcome = outcome.map(|(entry, site)| {
            if let Some((site, certificate)) = site {
                if let Some(certificate) = certificate {
                    build
                        .certificates
                        .insert(certificate.id.clone(), certificate);
                }
                sites.push(site);
            }
            out.push(entry);
            String::new()
        });
        build.verdict(Kind::Tunnel, obj, outcome);
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    sites.sort_by(|a, b| a.id.cmp(&b.id));
    (out, sites)
}

/// The site serving an http tunnel's hostnames: the client's Host goes to
/// the agent, no auth, default timeouts.
fn tunnel_site(
    build: &Build<'_>,
    obj: &Object<TunnelSpec>,
    entry: &TunnelEntry,
) -> Result<Option<(Site, Option<Certificate>)>, Refusal> {
    if entry.mode != TunnelMode::Http || entry.hostnames.is_empty() {
        if obj.spec.tls.is_some() {
            return Err((
                Reason::InvalidSpec,
                "tls applies only to http tunnels with hostnames".into(),
            ));
        }
        return Ok(None);
    }
    let (tls, certificate) = match &obj.spec.tls {
        Some(tls) => {
            let secret = crate::acme_secret_name(Kind::Tunnel, &obj.meta.name);
            let (tls, certificate) = crate::sites::site_tls(build, obj.namespace(), &secret, tls)?;
            (Some(tls), certificate)
        }
        None => (None, None),
    };
    let site = Site {
        id: entry.id.clone(),
        hostnames: entry.hostnames.clone(),
        backend: BackendEndpoint::new(format!("tunnel://{}", entry.id.replace('/', "."))),
        tls,
        auth: AuthRule::default(),
        timeouts: Timeouts::default(),
        preserve_host: true,
        tunnel: Some(entry.id.clone()),
        ..Site::default()
    };
    Ok(Some((site, certificate)))
}

/// Path prefixes and ports are first come, first served among all
/// namespaces (the name policy covers hostnames and users only).
fn claim_path_and_port(
    claims: &mut TunnelClaims,
    key: &ObjectKey,
    entry: TunnelEntry,
) -> Result<TunnelEntry, Refusal> {
    if let Some(owner) = entry.path_prefix.as_ref().and_then(|p| claims.paths.get(p)) {
        return Err((
            Reason::PathConflict,
            format!("path prefix is already held by {}", holder(owner, key)),
        ));
    }
    if let Some(owner) = entry.tcp_port.and_then(|p| claims.ports.get(&p)) {
        return Err((
            Reason::PortConflict,
            format!("TCP port is already held by {}", holder(owner, key)),
        ));
    }
    if let Some(path) = &entry.path_prefix {
        claims.paths.insert(path.clone(), key.clone());
    }
    if let Some(port) = entry.tcp_port {
        claims.ports.insert(port, key.clone());
    }
    Ok(entry)
}

/// The holder as a refusal may name it: only within the claimant's namespace.
fn holder(owner: &ObjectKey, claimant: &ObjectKey) -> String {
    if owner.namespace == claimant.namespace {
        format!("Tunnel {}", owner.name)
    } else {
        "a Tunnel of another namespace".to_string()
    }
}

type Compiled = (TunnelEntry, Option<(Site, Option<Certificate>)>);

fn tunnel(build: &Build<'_>, obj: &Object<TunnelSpec>) -> Result<Compiled, Refusal> {
    let ns = obj.namespace();
    let spec = &obj.spec;
    let hostnames = checks::hostnames(spec.hostnames.iter().flatten())?;
    let mode = match spec.mode {
        ApiMode::Http => {
            if hostnames.is_empty() == spec.path_prefix.is_none() {
                return Err((
                    Reason::InvalidSpec,
                    "an http tunnel needs exactly one of hostnames or pathPrefix".into(),
                ));
            }
            TunnelMode::Http
        }
        ApiMode::Tcp => {
            if spec.tcp_port.is_none() || spec.path_prefix.is_some() {
                return Err((
                    Reason::InvalidSpec,
                    "a tcp tunnel needs tcpPort and no pathPrefix".into(),
                ));
            }
            TunnelMode::Tcp
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
    let entry = TunnelEntry {
        id: obj.key().to_string(),
        mode,
        hostnames: hostnames.into_iter().collect(),
        path_prefix: spec.path_prefix.clone(),
        tcp_port: spec.tcp_port,
        agent_key: checks::utf8(key, "the agent key")?.to_string(),
        strip_prefix: spec.strip_prefix.unwrap_or(true),
        pool: spec.pool.unwrap_or(false),
    };
    let site = tunnel_site(build, obj, &entry)?;
    Ok((entry, site))
}
