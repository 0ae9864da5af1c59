//! What the oauth capability reads per request, rebuilt once per snapshot:
//! the authorization servers by hostname and by site id (their keys loaded,
//! their login providers built), the hosts they protect, and the static
//! clients. Requests in flight keep the tables they loaded.

use std::collections::HashMap;
use std::sync::Arc;

use postern_oauth::keys::KeySet;
use postern_oauth::login::github::Github;
use postern_oauth::login::oidc::Oidc;
use postern_snapshot::{AuthRule, AuthorizationServer, OAuthClientEntry, OauthPolicy, Snapshot};

/// One authorization server, ready to serve.
pub struct Server {
    /// The site id (`namespace/name`) that policies name.
    pub id: String,
    /// Its hostnames: each is an issuer `https://<host>[:port]`.
    pub hosts: Vec<String>,
    pub keys: KeySet,
    pub config: AuthorizationServer,
    pub github: Option<Github>,
    pub oidc: Option<Oidc>,
    /// The site-level oauth policy of each protected hostname: who may log
    /// in for it is decided at `/authorize` already.
    pub policies: HashMap<String, OauthPolicy>,
}

impl Server {
    /// Whether `host` (lowercase, no port) is a resource this server issues for.
    pub fn protects(&self, host: &str) -> bool {
        self.config.resources.iter().any(|r| r == host)
            || wildcard_match(&self.config.resources, host)
    }

    /// The policy of a protected host, if its site (not only a route) is protected.
    pub fn policy_for(&self, host: &str) -> Option<&OauthPolicy> {
        self.policies.get(host).or_else(|| {
            let (_, parent) = host.split_once('.')?;
            self.policies.get(&format!("*.{parent}"))
        })
    }
}

/// A host some site or route of which is protected.
pub struct Protected {
    pub server: Arc<Server>,
    /// Every scope the host's policies require, sorted: what its protected
    /// resource metadata advertises.
    pub scopes: Vec<String>,
    /// The site-level policy, when the whole site is protected.
    pub policy: Option<OauthPolicy>,
}

#[derive(Default)]
pub struct Tables {
    pub servers_by_host: HashMap<String, Arc<Server>>,
    pub servers_by_id: HashMap<String, Arc<Server>>,
    /// Exact hostnames and `*.` wildcards.
    pub protected: HashMap<String, Arc<Protected>>,
    pub clients: HashMap<String, OAuthClientEntry>,
}

impl Tables {
    /// Builds the tables; a server whose keys cannot be loaded is left out
    /// (its hosts answer 503) and logged. An OIDC provider whose settings
    /// did not change is carried over from `previous` with its discovery
    /// and key caches, so an unrelated change costs no refetch.
    pub fn build(snapshot: &Snapshot, previous: &Tables) -> Tables {
        let mut tables = Tables::default();
        for site in &snapshot.sites {
            let Some(config) = &site.authorization_server else {
                continue;
            };
            let keys = match KeySet::from_snapshot(&config.signing_keys) {
                Ok(keys) => keys,
                Err(e) => {
                    tracing::error!(site = %site.id, error = %e, "authorization server left out: its signing keys do not load");
                    continue;
                }
            };
            let server = Arc::new(Server {
                id: site.id.clone(),
                hosts: site.hostnames.clone(),
                keys,
                config: config.clone(),
                github: config.github.as_ref().map(Github::from),
                oidc: config.oidc.as_ref().map(|o| previous.oidc(&site.id, o)),
                policies: site_policies(snapshot, &site.id),
            });
            for host in &site.hostnames {
                tables.servers_by_host.insert(host.clone(), server.clone());
            }
            tables.servers_by_id.insert(site.id.clone(), server);
        }
        for site in &snapshot.sites {
            let policies: Vec<&OauthPolicy> = std::iter::once(&site.auth)
                .chain(site.routes.iter().filter_map(|r| r.auth.as_ref()))
                .filter_map(|rule| match rule {
                    AuthRule::Oauth(p) => Some(p),
                    _ => None,
                })
                .collect();
            let Some(first) = policies.first() else {
                continue;
            };
            let Some(server) = tables.servers_by_id.get(&first.server) else {
                continue;
            };
            let mut scopes: Vec<String> = policies
                .iter()
                .flat_map(|p| p.scopes.iter().cloned())
                .collect();
            scopes.sort();
            scopes.dedup();
            let policy = match &site.auth {
                AuthRule::Oauth(p) => Some(p.clone()),
                _ => None,
            };
            let protected = Arc::new(Protected {
                server: server.clone(),
                scopes,
                policy,
            });
            for host in &site.hostnames {
                tables.protected.insert(host.clone(), protected.clone());
            }
        }
        tables.clients = snapshot
            .oauth_clients
            .iter()
            .map(|c| (c.client_id.clone(), c.clone()))
            .collect();
        tables
    }

    /// The provider client of server `id` when configured as `config`,
    /// kept from these tables if the settings are the same.
    fn oidc(&self, id: &str, config: &postern_snapshot::OidcProvider) -> Oidc {
        self.servers_by_id
            .get(id)
            .filter(|s| s.config.oidc.as_ref() == Some(config))
            .and_then(|s| s.oidc.clone())
            .unwrap_or_else(|| Oidc::from(config))
    }

    pub fn server_for_host(&self, host: &str) -> Option<&Arc<Server>> {
        self.servers_by_host.get(host)
    }

    pub fn protected_host(&self, host: &str) -> Option<&Arc<Protected>> {
        self.protected.get(host).or_else(|| {
            let (_, parent) = host.split_once('.')?;
            self.protected.get(&format!("*.{parent}"))
        })
    }
}

/// The site-level oauth policies naming `server`, by hostname.
fn site_policies(snapshot: &Snapshot, server: &str) -> HashMap<String, OauthPolicy> {
    let mut out = HashMap::new();
    for site in &snapshot.sites {
        if let AuthRule::Oauth(policy) = &site.auth
            && policy.server == server
        {
            for host in &site.hostnames {
                out.insert(host.clone(), policy.clone());
            }
        }
    }
    out
}

fn wildcard_match(patterns: &[String], host: &str) -> bool {
    let Some((_, parent)) = host.split_once('.') else {
        return false;
    };
    let wanted = format!("*.{parent}");
    patterns.contains(&wanted)
}
