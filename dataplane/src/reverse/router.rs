//! Routing tables, compiled once per snapshot: hosts in two hash maps
//! (exact names, then one-label wildcards by parent domain), so a lookup
//! costs the same with ten sites or ten thousand; then the site's routes,
//! already in match order, scanned until one matches; else the site's
//! own backend.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use postern_snapshot::{PathRule, RouteEntry, Site, Snapshot};
use regex::Regex;

use super::auth::Guard;
use super::backend::{BackendClient, Pools};
use super::headers::HeaderOps;

/// Where a matched request goes and who may send it.
pub struct Target {
    /// `namespace/name` of the Route, or `None` for the site's default.
    pub route: Option<String>,
    pub upstream: Arc<BackendClient>,
    pub guard: Guard,
}

/// One ProxyTarget, ready to serve.
pub struct SiteTable {
    pub id: String,
    pub redirect_http: bool,
    /// Whether the site has TLS: a site without is never served over it.
    pub tls: bool,
    pub preserve_host: bool,
    pub forward_raw_path: bool,
    pub response_timeout: Duration,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    pub default: Target,
    routes: Vec<RouteTable>,
    /// The tunnel whose agent serves this site (an http Tunnel's hostnames).
    pub tunnel: Option<String>,
}

struct RouteTable {
    path: PathMatcher,
    /// Empty: every method.
    methods: Vec<Method>,
    target: Target,
}

enum PathMatcher {
    /// Without its trailing slash; empty matches everything.
    Prefix(String),
    Exact(String),
    Regex(Regex),
}

impl PathMatcher {
    fn compile(rule: &PathRule) -> Result<Self, regex::Error> {
        Ok(match rule {
            PathRule::Prefix(p) => PathMatcher::Prefix(p.trim_end_matches('/').to_string()),
            PathRule::Exact(p) => PathMatcher::Exact(p.clone()),
            PathRule::Regex(re) => PathMatcher::Regex(Regex::new(&format!("^(?:{re})$"))?),
        })
    }

    /// Prefixes match whole segments: `/v1` takes `/v1` and `/v1/x`, not `/v10`.
    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatcher::Prefix(p) => {
                path.starts_with(p.as_str())
                    && matches!(path.as_bytes().get(p.len()), None | Some(b'/'))
            }
            PathMatcher::Exact(p) => path == p,
            PathMatcher::Regex(re) => re.is_match(path),
        }
    }
}

impl SiteTable {
    /// The first route that matches, else the site's default.
    pub fn target(&self, method: &Method, path: &str) -> &Target {
        self.routes
            .iter()
            .find(|r| (r.methods.is_empty() || r.methods.contains(method)) && r.path.matches(path))
            .map_or(&self.default, |r| &r.target)
    }
}

/// Every site by hostname.
#[derive(Default)]
pub struct Router {
    exact: HashMap<String, usize>,
    /// `example.com` for `*.example.com`.
    wildcard: HashMap<String, usize>,
    sites: Vec<SiteTable>,
}

impl Router {
    /// Compiles every site. Backends come from `pools`, reused when unchanged.
    pub fn build(snapshot: &Snapshot, pools: &mut Pools) -> Router {
        let mut router = Router::default();
        for site in &snapshot.sites {
            let index = router.sites.len();
            router.sites.push(site_table(site, pools));
            for host in &site.hostnames {
                match host.strip_prefix("*.") {
                    Some(parent) => router.wildcard.insert(parent.to_string(), index),
                    None => router.exact.insert(host.clone(), index),
                };
            }
        }
        router
    }

    /// The site for a lowercase host without port: exact first, then the
    /// wildcard one label up.
    pub fn site(&self, host: &str) -> Option<&SiteTable> {
        let index = self.exact.get(host).or_else(|| {
            let (_, parent) = host.split_once('.')?;
            self.wildcard.get(parent)
        })?;
        self.sites.get(*index)
    }
}

fn site_table(site: &Site, pools: &mut Pools) -> SiteTable {
    let guard = Guard::compile(&site.auth);
    let upstream = pools.get(&site.backend, &site.timeouts);
    let routes = site
        .routes
        .iter()
        .filter_map(|r| route_table(r, site, &guard, &upstream, pools))
        .collect();
    SiteTable {
        id: site.id.clone(),
        redirect_http: site.redirect_http,
        tls: site.tls.is_some(),
        preserve_host: site.preserve_host,
        forward_raw_path: site.forward_raw_path,
        response_timeout: Duration::from_millis(site.timeouts.response_headers_ms),
        request_headers: HeaderOps::compile(&site.request_headers),
        response_headers: HeaderOps::compile(&site.response_headers),
        default: Target {
            route: None,
            upstream,
            guard,
        },
        routes,
        tunnel: site.tunnel.clone(),
    }
}

fn route_table(
    route: &RouteEntry,
    site: &Site,
    site_guard: &Guard,
    site_upstream: &Arc<BackendClient>,
    pools: &mut Pools,
) -> Option<RouteTable> {
    let path = match PathMatcher::compile(&route.path) {
        Ok(p) => p,
        Err(e) => {
            // validate() refuses such snapshots; this is defence in depth.
            tracing::warn!(route = %route.id, error = %e, "skipping a route whose regex does not compile");
            return None;
        }
    };
    Some(RouteTable {
        path,
        methods: route
            .methods
            .iter()
            .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
            .collect(),
        target: Target {
            route: Some(route.id.clone()),
            upstream: route
                .backend
                .as_ref()
                .map_or_else(|| site_upstream.clone(), |b| pools.get(b, &site.timeouts)),
            guard: route
                .auth
                .as_ref()
                .map_or_else(|| site_guard.clone(), Guard::compile),
        },
    })
}

/// The host a request is for: lowercase, no port, no trailing dot.
pub fn normalise_host(raw: &str) -> Option<String> {
    let raw = raw.rsplit_once('@').map_or(raw, |(_, h)| h);
    let host = if let Some(rest) = raw.strip_prefix('[') {
        rest.split_once(']')?.0
    } else {
        match raw.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => raw,
        }
    };
    let host = host.trim_end_matches('.');
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_snapshot::{AuthRule, BackendEndpoint};

    fn site(id: &str, hosts: &[&str], routes: Vec<RouteEntry>) -> Site {
        Site {
            id: id.into(),
            hostnames: hosts.iter().map(|h| h.to_string()).collect(),
            backend: BackendEndpoint::new(format!("http://{}.internal:80", id.replace('/', "-"))),
            routes,
            ..Site::default()
        }
    }

    fn route(id: &str, path: PathRule, methods: &[&str]) -> RouteEntry {
        RouteEntry {
            id: id.into(),
            path,
            methods: methods.iter().map(|m| m.to_string()).collect(),
            priority: 0,
            backend: Some(BackendEndpoint::new(format!(
                "http://{}.internal:80",
                id.replace('/', "-")
            ))),
            auth: None,
        }
    }

    fn router(sites: Vec<Site>) -> Router {
        let snapshot = Snapshot {
            sites,
            ..Snapshot::default()
        };
        Router::build(&snapshot, &mut Pools::default())
    }

    fn pick<'a>(r: &'a Router, host: &str, method: Method, path: &str) -> Option<&'a Target> {
        Some(r.site(host)?.target(&method, path))
    }

    #[test]
    fn hosts_are_exact_then_one_label_wildcards() {
        let r = router(vec![
            site("a/exact", &["api.example.com"], vec![]),
            site("a/wild", &["*.example.com"], vec![]),
        ]);
        assert_eq!(
            r.site("api.example.com").map(|s| s.id.as_str()),
            Some("a/exact")
        );
        assert_eq!(
            r.site("www.example.com").map(|s| s.id.as_str()),
            Some("a/wild")
        );
        assert!(r.site("a.b.example.com").is_none());
        assert!(r.site("example.com").is_none());
        assert!(r.site("other.org").is_none());
    }

    #[test]
    fn hosts_are_normalised() {
        assert_eq!(
            normalise_host("API.Example.com:8443").as_deref(),
            Some("api.example.com")
        );
        assert_eq!(
            normalise_host("example.com.").as_deref(),
            Some("example.com")
        );
        assert_eq!(normalise_host("[::1]:80").as_deref(), Some("::1"));
        assert_eq!(normalise_host("user@host:1").as_deref(), Some("host"));
        assert_eq!(normalise_host(""), None);
    }

    #[test]
    fn routes_match_in_order_by_path_and_method() {
        let routes = vec![
            route("t/exact", PathRule::Exact("/healthz".into()), &[]),
            route("t/users", PathRule::Prefix("/v1/users/".into()), &["POST"]),
            route("t/v1", PathRule::Prefix("/v1".into()), &[]),
            route("t/item", PathRule::Regex("/item/[0-9]+".into()), &[]),
        ];
        let r = router(vec![site("t/site", &["h.example"], routes)]);
        let id = |m: Method, p: &str| {
            pick(&r, "h.example", m, p)
                .and_then(|t| t.route.clone())
                .unwrap_or_default()
        };
        assert_eq!(id(Method::GET, "/healthz"), "t/exact");
        assert_eq!(id(Method::GET, "/healthz/x"), "");
        assert_eq!(id(Method::POST, "/v1/users"), "t/users");
        assert_eq!(id(Method::GET, "/v1/users"), "t/v1");
        assert_eq!(id(Method::GET, "/v1"), "t/v1");
        assert_eq!(id(Method::GET, "/v10"), "");
        assert_eq!(id(Method::GET, "/item/42"), "t/item");
        assert_eq!(id(Method::GET, "/item/42/x"), "", "regex is anchored");
        let t = pick(&r, "h.example", Method::GET, "/item/7").expect("target");
        assert_eq!(t.upstream.endpoint.url, "http://t-item.internal:80");
    }

    #[test]
    fn a_route_inherits_or_overrides_auth() {
        let mut open = route("t/open", PathRule::Prefix("/public".into()), &[]);
        open.auth = Some(AuthRule::None);
        let mut s = site("t/site", &["h.example"], vec![open]);
        s.auth = AuthRule::Bearer {
            token_sha256: vec![postern_snapshot::sha256_hex(b"t")],
        };
        let r = router(vec![s]);
        let public = pick(&r, "h.example", Method::GET, "/public/x").expect("target");
        assert_eq!(public.guard, Guard::Open);
        let private = pick(&r, "h.example", Method::GET, "/private").expect("target");
        assert!(matches!(private.guard, Guard::Bearer(_)));
    }

    #[test]
    fn same_backend_settings_share_one_upstream() {
        let a = site("a/one", &["one.example"], vec![]);
        let mut b = site("a/two", &["two.example"], vec![]);
        b.backend = a.backend.clone();
        let mut pools = Pools::default();
        let snap = Snapshot {
            sites: vec![a, b],
            ..Snapshot::default()
        };
        let r = Router::build(&snap, &mut pools);
        let one = &r.site("one.example").expect("one").default.upstream;
        let two = &r.site("two.example").expect("two").default.upstream;
        assert!(Arc::ptr_eq(one, two));
        // The next snapshot reuses it.
        let kept = pools.finish();
        let mut next = Pools::begin(kept);
        let r2 = Router::build(&snap, &mut next);
        assert!(Arc::ptr_eq(
            one,
            &r2.site("one.example").expect("one").default.upstream
        ));
    }
}
