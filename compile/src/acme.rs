//! The certificates ACME must provide, read from what compiled: one
//! request per accepted site with `tls.acme` (ProxyTargets and http
//! Tunnels), so only hostnames of accepted objects are ever ordered. The
//! ordering itself is not here: the certificate manager reads these
//! requests and feeds its challenges back as [`Inputs::acme_challenges`].

use std::collections::BTreeSet;

use postern_api::{AcmeChallengeType, Kind, ObjectKey, TlsConfig};
use postern_snapshot::{AcmeChallenge, Site, SiteTls};

use crate::Inputs;

/// One certificate the manager must keep issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcmeRequest {
    /// The object that owns the certificate's Secret.
    pub kind: Kind,
    pub key: ObjectKey,
    /// Exact hostnames, sorted: the SANs of the one order.
    pub hostnames: Vec<String>,
    /// `*.` hostnames: they need DNS-01, which is not offered, so they
    /// are reported and never ordered.
    pub wildcards: Vec<String>,
    pub issuer: String,
    pub challenge: AcmeChallengeType,
    /// The Secret (in the object's namespace) the certificate goes in.
    pub secret: String,
}

/// The Secret that keeps the ACME certificate of object `name` of `kind`.
/// Tunnels get a prefix so a Tunnel and a ProxyTarget of one name never
/// share a Secret.
pub fn acme_secret_name(kind: Kind, name: &str) -> String {
    match kind {
        Kind::Tunnel => format!("tunnel-{name}-acme-tls"),
        _ => format!("{name}-acme-tls"),
    }
}

/// A request per accepted ACME site, sorted by kind and key.
pub(crate) fn requests(inputs: &Inputs, sites: &[Site]) -> Vec<AcmeRequest> {
    let mut out: Vec<AcmeRequest> = sites
        .iter()
        .filter_map(|site| request(inputs, site))
        .collect();
    out.sort_by(|a, b| (a.kind, &a.key).cmp(&(b.kind, &b.key)));
    out
}

fn request(inputs: &Inputs, site: &Site) -> Option<AcmeRequest> {
    let Some(SiteTls::Acme { issuer, .. }) = &site.tls else {
        return None;
    };
    let (namespace, name) = site.id.split_once('/')?;
    let key = ObjectKey::new(namespace, name);
    let kind = if site.tunnel.is_some() {
        Kind::Tunnel
    } else {
        Kind::ProxyTarget
    };
    let tls: Option<&TlsConfig> = match kind {
        Kind::Tunnel => inputs
            .tunnels
            .iter()
            .find(|t| t.key() == key)
            .and_then(|t| t.spec.tls.as_ref()),
        _ => inputs
            .proxy_targets
            .iter()
            .find(|t| t.key() == key)
            .and_then(|t| t.spec.tls.as_ref()),
    };
    let challenge = tls
        .and_then(|t| t.acme.as_ref())
        .and_then(|a| a.challenge)
        .unwrap_or_default();
    let (wildcards, hostnames) = site
        .hostnames
        .iter()
        .cloned()
        .partition(|h| h.starts_with("*."));
    Some(AcmeRequest {
        kind,
        secret: acme_secret_name(kind, name),
        key,
        hostnames,
        wildcards,
        issuer: issuer.as_str().to_string(),
        challenge,
    })
}

/// The key of a request's Secret where the operator's leader puts the
/// challenges being validated, so that every replica compiles them into
/// its snapshots (data planes may be connected to any replica).
pub const CHALLENGES_KEY: &str = "acme-challenges.json";

/// The challenges of `inputs` and of the requests' Secrets that name an
/// exact hostname of their request, sorted and without duplicates: a
/// challenge for anything else is dropped.
pub(crate) fn challenges(inputs: &Inputs, requests: &[AcmeRequest]) -> Vec<AcmeChallenge> {
    let names: BTreeSet<&str> = requests
        .iter()
        .flat_map(|r| r.hostnames.iter().map(String::as_str))
        .collect();
    let mut kept: BTreeSet<AcmeChallenge> = inputs
        .acme_challenges
        .iter()
        .filter(|c| names.contains(c.hostname()))
        .cloned()
        .collect();
    for request in requests {
        let key = ObjectKey::new(&request.key.namespace, &request.secret);
        let Some(raw) = inputs
            .secrets
            .get(&key)
            .and_then(|s| s.data.get(CHALLENGES_KEY))
        else {
            continue;
        };
        let Ok(listed) = serde_json::from_slice::<Vec<AcmeChallenge>>(raw) else {
            continue;
        };
        kept.extend(
            listed
                .into_iter()
                .filter(|c| request.hostnames.iter().any(|h| h == c.hostname())),
        );
    }
    kept.into_iter().collect()
}
