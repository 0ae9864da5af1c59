//! What the admin API's read endpoints answer, built from the snapshot in
//! service and the features' live state. Like [`super::view`], never secret
//! material: no keys, password hashes, credentials or tokens (an upstream is
//! shown as its scheme, host and port only).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postern_snapshot::{
    AuthRule, BackendEndpoint, PathRule, Site, SiteTls, Snapshot, TunnelMode, Upstream,
};
use serde::Serialize;

use super::rfc3339;
use crate::forward::Forward;
use crate::tunnel::Tunnels;

#[derive(Serialize)]
pub struct Items<T> {
    pub items: Vec<T>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SiteView {
    id: String,
    hostnames: Vec<String>,
    tls: bool,
    auth: &'static str,
    backend: String,
    routes: Vec<RouteView>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteView {
    order: usize,
    id: Option<String>,
    path: PathView,
    methods: Vec<String>,
    priority: i32,
    backend: String,
    auth: &'static str,
}

#[derive(Serialize)]
pub struct PathView {
    kind: &'static str,
    value: String,
}

/// Sites and their routes, in the order the router tries them (compile
/// sorts routes; the snapshot's order is the match order).
pub fn sites(snapshot: &Snapshot) -> Items<SiteView> {
    let items = snapshot
        .sites
        .iter()
        .map(|site| SiteView {
            id: site.id.clone(),
            hostnames: site.hostnames.clone(),
            tls: site.tls.is_some(),
            auth: auth_label(&site.auth),
            backend: site_backend(site),
            routes: site
                .routes
                .iter()
                .enumerate()
                .map(|(order, r)| RouteView {
                    order,
                    id: Some(r.id.clone()),
                    path: match &r.path {
                        PathRule::Prefix(v) => PathView {
                            kind: "prefix",
                            value: v.clone(),
                        },
                        PathRule::Exact(v) => PathView {
                            kind: "exact",
                            value: v.clone(),
                        },
                        PathRule::Regex(v) => PathView {
                            kind: "regex",
                            value: v.clone(),
                        },
                    },
                    methods: r.methods.clone(),
                    priority: r.priority,
                    backend: r
                        .backend
                        .as_ref()
                        .map_or_else(|| site_backend(site), backend_label),
                    auth: r.auth.as_ref().map_or(auth_label(&site.auth), auth_label),
                })
                .collect(),
        })
        .collect();
    Items { items }
}

fn site_backend(site: &Site) -> String {
    if let Some(tunnel) = &site.tunnel {
        return format!("tunnel {tunnel}");
    }
    if site.authorization_server.is_some() {
        return "authorization server".into();
    }
    backend_label(&site.backend)
}

/// The backend's URL without any userinfo.
fn backend_label(backend: &BackendEndpoint) -> String {
    match url::Url::parse(&backend.url) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.to_string()
        }
        Err(_) => backend.url.clone(),
    }
}

fn auth_label(rule: &AuthRule) -> &'static str {
    match rule {
        AuthRule::None => "none",
        AuthRule::Bearer { .. } => "bearer",
        AuthRule::Oauth(_) => "oauth",
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    name: String,
    id: String,
    upstream: String,
    connections: u32,
    bytes_up: u64,
    bytes_down: u64,
}

/// Forward-proxy users with their live connections on this data plane and
/// their bytes since it started.
pub fn users(snapshot: &Snapshot, forward: &Forward) -> Items<UserView> {
    let metrics = forward.metrics();
    let items = snapshot
        .users
        .iter()
        .map(|u| {
            let labels = crate::forward::metrics::ForwardMetrics::user(&u.user);
            UserView {
                name: u.user.clone(),
                id: u.id.clone(),
                upstream: upstream_label(&u.upstream),
                connections: forward.registry().open_count(&u.user),
                bytes_up: metrics.bytes_up.get_or_create(&labels).get(),
                bytes_down: metrics.bytes_down.get_or_create(&labels).get(),
            }
        })
        .collect();
    Items { items }
}

/// The upstream as `scheme://host:port`: never its credentials.
pub fn upstream_label(upstream: &Upstream) -> String {
    match upstream {
        Upstream::Direct => "direct".into(),
        Upstream::Socks5 { host, port, .. } => format!("socks5://{host}:{port}"),
        Upstream::Http { host, port, .. } => format!("http://{host}:{port}"),
        Upstream::Https { host, port, .. } => format!("https://{host}:{port}"),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TunnelView {
    id: String,
    mode: &'static str,
    hostnames: Vec<String>,
    path_prefix: Option<String>,
    tcp_port: Option<u16>,
    agents: Vec<AgentView>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentView {
    session: String,
    remote: String,
    agent_version: String,
    connected_at: String,
    active: bool,
}

/// Tunnels and the agents connected to this data plane.
pub fn tunnels(snapshot: &Snapshot, tunnels: &Tunnels) -> Items<TunnelView> {
    let items = snapshot
        .tunnels
        .iter()
        .map(|t| TunnelView {
            id: t.id.clone(),
            mode: match t.mode {
                TunnelMode::Http => "http",
                TunnelMode::Tcp => "tcp",
            },
            hostnames: t.hostnames.clone(),
            path_prefix: t.path_prefix.clone(),
            tcp_port: t.tcp_port,
            agents: tunnels
                .agents(&t.id)
                .into_iter()
                .map(|a| AgentView {
                    session: a.session,
                    remote: a.remote.to_string(),
                    agent_version: a.agent_version,
                    connected_at: rfc3339::format(a.since),
                    active: a.active,
                })
                .collect(),
        })
        .collect();
    Items { items }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateView {
    id: String,
    hostnames: Vec<String>,
    source: &'static str,
    issuer: String,
    subject: String,
    not_before: String,
    not_after: String,
    days_left: i64,
}

/// The certificates the data plane serves: names, issuer and validity read
/// from the certificate itself (the leaf of each chain).
pub fn certificates(snapshot: &Snapshot, now: SystemTime) -> Items<CertificateView> {
    let acme: BTreeMap<&str, ()> = snapshot
        .sites
        .iter()
        .filter_map(|s| match &s.tls {
            Some(SiteTls::Acme {
                certificate: Some(id),
                ..
            }) => Some((id.as_str(), ())),
            _ => None,
        })
        .collect();
    let items = snapshot
        .certificates
        .iter()
        .filter_map(|c| {
            let leaf = Leaf::parse(&c.cert_pem)?;
            let left = leaf
                .not_after
                .duration_since(now)
                .map_or_else(|e| -(e.duration().as_secs() as i64), |d| d.as_secs() as i64);
            Some(CertificateView {
                id: c.id.clone(),
                hostnames: leaf.names,
                source: if acme.contains_key(c.id.as_str()) {
                    "acme"
                } else {
                    "secret"
                },
                issuer: leaf.issuer,
                subject: leaf.subject,
                not_before: rfc3339::format(leaf.not_before),
                not_after: rfc3339::format(leaf.not_after),
                // Whole days, rounded down; negative once expired.
                days_left: left.div_euclid(86_400),
            })
        })
        .collect();
    Items { items }
}

/// The fields of a leaf certificate the admin API shows.
struct Leaf {
    names: Vec<String>,
    issuer: String,
    subject: String,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl Leaf {
    fn parse(pem: &str) -> Option<Leaf> {
        use x509_parser::extensions::GeneralName;
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
        let cert = pem.parse_x509().ok()?;
        let names = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        GeneralName::DNSName(d) => Some(d.to_string()),
                        GeneralName::IPAddress(ip) => ip_text(ip),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let time = |t: &x509_parser::time::ASN1Time| {
            UNIX_EPOCH + Duration::from_secs(u64::try_from(t.timestamp()).unwrap_or(0))
        };
        let validity = cert.validity();
        Some(Leaf {
            names,
            issuer: cert.issuer().to_string(),
            subject: cert.subject().to_string(),
            not_before: time(&validity.not_before),
            not_after: time(&validity.not_after),
        })
    }
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes)
            .ok()
            .map(|b| std::net::Ipv4Addr::from(b).to_string()),
        16 => <[u8; 16]>::try_from(bytes)
            .ok()
            .map(|b| std::net::Ipv6Addr::from(b).to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_shows_its_names_issuer_and_days_left() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["a.example".into(), "b.example".into()])
                .expect("params");
        params.not_after = rcgen::date_time_ymd(2030, 1, 10);
        let cert = params.self_signed(&key).expect("cert");
        let snapshot = Snapshot {
            certificates: vec![postern_snapshot::Certificate {
                id: "ns/tls".into(),
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
            }],
            ..Snapshot::default()
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_893_456_000); // 2030-01-01
        let view = certificates(&snapshot, now);
        let json = serde_json::to_value(&view).expect("json");
        let c = &json["items"][0];
        assert_eq!(
            c["hostnames"],
            serde_json::json!(["a.example", "b.example"])
        );
        assert_eq!(c["source"], "secret");
        assert_eq!(c["daysLeft"], 9);
        assert!(
            c["notAfter"]
                .as_str()
                .is_some_and(|t| t.starts_with("2030-01-10"))
        );
        assert!(!json.to_string().contains("PRIVATE"), "no key material");
    }

    #[test]
    fn upstreams_never_show_credentials() {
        let up = Upstream::Socks5 {
            host: "p".into(),
            port: 1080,
            credentials: Some(postern_snapshot::Credentials {
                username: "u".into(),
                password: "secret".into(),
            }),
        };
        assert_eq!(upstream_label(&up), "socks5://p:1080");
        let backend = BackendEndpoint {
            url: "http://user:pw@10.0.0.1:8080/".into(),
            ..BackendEndpoint::default()
        };
        assert_eq!(backend_label(&backend), "http://10.0.0.1:8080/");
    }
}
