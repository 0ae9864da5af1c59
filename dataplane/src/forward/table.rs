//! The users of one snapshot, indexed for the request path: built once per
//! snapshot (never per request) and swapped whole.

use std::collections::HashMap;
use std::sync::Arc;

use ipnet::IpNet;
use postern_snapshot::{PasswordHash, ProxyUser, Snapshot, Upstream};

use super::guard::canonical_net;
use super::rules::Rules;

/// Every proxy user of one snapshot.
#[derive(Debug, Default)]
pub struct Table {
    pub version: String,
    users: HashMap<String, Arc<UserEntry>>,
}

/// One user, ready to authenticate and route.
#[derive(Debug)]
pub struct UserEntry {
    pub user: String,
    /// `namespace/name` of the UserUpstream.
    pub id: String,
    /// Changes with the password, upstream or upstream credentials.
    pub revision: String,
    pub upstream: Upstream,
    pub rules: Rules,
    /// Holes in the guard's default deny: `allowInternalNetworks`, and the
    /// link-local allow CIDRs of the destination rules.
    pub internal_allow: Vec<IpNet>,
    pub max_connections: Option<u32>,
    pub(super) password: PasswordHash,
}

impl Table {
    pub fn build(snapshot: &Snapshot) -> Table {
        let users = snapshot
            .users
            .iter()
            .map(|u| (u.user.clone(), Arc::new(UserEntry::new(u))))
            .collect();
        Table {
            version: snapshot.version.clone(),
            users,
        }
    }

    pub fn get(&self, user: &str) -> Option<&Arc<UserEntry>> {
        self.users.get(user)
    }

    pub fn users(&self) -> impl Iterator<Item = &Arc<UserEntry>> {
        self.users.values()
    }
}

impl UserEntry {
    fn new(u: &ProxyUser) -> UserEntry {
        let rules = Rules::compile(&u.destinations);
        // Compile refused unparsable entries; one that slips through
        // exempts nothing.
        let internal_allow = u
            .allow_internal_networks
            .iter()
            .filter_map(|n| n.parse::<IpNet>().ok())
            .chain(rules.link_local_allows())
            .map(canonical_net)
            .collect();
        UserEntry {
            user: u.user.clone(),
            id: u.id.clone(),
            revision: u.revision.clone(),
            upstream: u.upstream.clone(),
            rules,
            internal_allow,
            max_connections: u.max_connections,
            password: u.password.clone(),
        }
    }

    /// The upstream as logs and metrics show it: scheme, host and port, never credentials.
    pub fn upstream_label(&self) -> String {
        upstream_label(&self.upstream)
    }
}

/// `direct`, `socks5://host:port`, `http://host:port`, `https://host:port`.
pub fn upstream_label(upstream: &Upstream) -> String {
    match upstream {
        Upstream::Direct => "direct".to_string(),
        Upstream::Socks5 { host, port, .. } => format!("socks5://{}", host_port(host, *port)),
        Upstream::Http { host, port, .. } => format!("http://{}", host_port(host, *port)),
        Upstream::Https { host, port, .. } => format!("https://{}", host_port(host, *port)),
    }
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}
