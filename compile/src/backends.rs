//! What a site says about its backends beyond routing: the resolved
//! endpoint with its protocol, TLS verification and PROXY protocol, and the
//! header changes applied on the way through.

use postern_api::{
    Backend, BackendProtocol as ApiProtocol, HeaderModifier, ObjectKey, ProxyProtocolVersion,
};
use postern_snapshot::{
    BackendEndpoint, BackendProtocol, BackendTls, HeaderPair, HeaderRules, ProxyProtocol,
};

use crate::Reason;
use crate::build::Build;
use crate::checks;
use crate::refusal::{Refusal, invalid};

/// Headers a rule may not touch: they belong to the connection or to the
/// message framing, and changing them would break the exchange.
const PROTECTED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

/// Resolves a backend: a Service to its cluster DNS name, a URL to
/// `scheme://host:port`, plus how to speak to it.
pub(crate) fn backend(
    build: &Build<'_>,
    ns: &str,
    backend: &Backend,
) -> Result<BackendEndpoint, Refusal> {
    let url = match (&backend.service, &backend.url) {
        (Some(svc), None) => {
            if let Some(services) = &build.inputs.services {
                let key = ObjectKey::new(ns, svc.name.clone());
                let known = services
                    .get(&key)
                    .ok_or_else(|| (Reason::BackendNotFound, format!("Service {key} not found")))?;
                if !known.ports.contains(&svc.port) {
                    return Err((
                        Reason::BackendNotFound,
                        format!("Service {key} has no port {}", svc.port),
                    ));
                }
            }
            let domain = &build.inputs.options.cluster_domain;
            format!("http://{}.{ns}.svc.{domain}:{}", svc.name, svc.port)
        }
        (None, Some(url)) => {
            let u = checks::host_url(url, &["http", "https"])?;
            if u.userinfo.is_some() {
                return Err(invalid("backend url must not carry credentials".into()));
            }
            let port = u.port.unwrap_or(if u.scheme == "https" { 443 } else { 80 });
            format!("{}://{}:{port}", u.scheme, checks::url_host(&u.host))
        }
        _ => {
            return Err(invalid(
                "backend needs exactly one of service or url".into(),
            ));
        }
    };
    let tls = match &backend.tls {
        None => None,
        Some(_) if !url.starts_with("https://") => {
            return Err(invalid(
                "backend tls applies only to an https:// url".into(),
            ));
        }
        Some(tls) => Some(backend_tls(build, ns, tls)?),
    };
    Ok(BackendEndpoint {
        url,
        protocol: match backend.protocol.unwrap_or_default() {
            ApiProtocol::Http1 => BackendProtocol::Http1,
            ApiProtocol::Http2 => BackendProtocol::Http2,
        },
        tls,
        proxy_protocol: backend.proxy_protocol.map(|v| match v {
            ProxyProtocolVersion::V1 => ProxyProtocol::V1,
            ProxyProtocolVersion::V2 => ProxyProtocol::V2,
        }),
    })
}

fn backend_tls(
    build: &Build<'_>,
    ns: &str,
    tls: &postern_api::BackendTls,
) -> Result<BackendTls, Refusal> {
    let ca_pem = match &tls.ca_secret_ref {
        None => None,
        Some(secret) => {
            let key = secret.key_or("ca.crt");
            let pem = checks::utf8(build.secret_value(ns, &secret.name, key)?, key)?;
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                return Err(invalid(format!(
                    "Secret {ns}/{} key {key} holds no PEM certificate",
                    secret.name
                )));
            }
            Some(pem.to_string())
        }
    };
    let server_name = match &tls.server_name {
        None => None,
        Some(name) => {
            let name = checks::hostname(name)?;
            if name.starts_with("*.") {
                return Err(invalid(format!("serverName {name} must not be a wildcard")));
            }
            Some(name)
        }
    };
    Ok(BackendTls {
        ca_pem,
        server_name,
    })
}

/// Checks and normalises header changes: names lowercase and not
/// protected, values printable on one line.
pub(crate) fn header_rules(modifier: Option<&HeaderModifier>) -> Result<HeaderRules, Refusal> {
    let Some(m) = modifier else {
        return Ok(HeaderRules::default());
    };
    let remove = m
        .remove
        .iter()
        .flatten()
        .map(|n| header_name(n))
        .collect::<Result<_, _>>()?;
    let pairs = |list: &Option<Vec<postern_api::HeaderValue>>| {
        list.iter()
            .flatten()
            .map(|h| {
                Ok(HeaderPair {
                    name: header_name(&h.name)?,
                    value: header_value(&h.name, &h.value)?,
                })
            })
            .collect::<Result<Vec<_>, Refusal>>()
    };
    Ok(HeaderRules {
        remove,
        set: pairs(&m.set)?,
        add: pairs(&m.add)?,
    })
}

fn header_name(raw: &str) -> Result<String, Refusal> {
    let name = raw.to_ascii_lowercase();
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(invalid(format!("{raw:?} is not a header name")));
    }
    if PROTECTED.contains(&name.as_str()) {
        return Err(invalid(format!("header {name} cannot be changed")));
    }
    Ok(name)
}

fn header_value(name: &str, value: &str) -> Result<String, Refusal> {
    let printable = value
        .bytes()
        .all(|b| b == b'\t' || (0x20..0x7f).contains(&b));
    if !printable {
        return Err(invalid(format!(
            "the value of header {name} must be printable text on one line"
        )));
    }
    Ok(value.to_string())
}
