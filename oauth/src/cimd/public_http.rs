//! [`PublicHttp`]: the outbound client for URLs a client, not the
//! operator, chose (Client ID Metadata Documents). hyper-util's pooled
//! client over rustls, with its own resolver: the connector connects only
//! to addresses the resolver returned, and the production resolver
//! ([`PublicOnly`] over [`SystemDns`]) returns a name's addresses only
//! when every one of them is public (see [`super::addr`]). Since the name
//! is resolved once, by us, and the connection goes to an address that
//! passed, DNS rebinding between a check and the connect gains nothing.
//! TLS is verified for the name in the URL; IP-literal hosts (which
//! hyper-util would connect to without asking the resolver) and plain
//! `http` are refused; redirects are returned, never followed.
//!
//! Tests that serve on loopback inject a resolver of their own with
//! [`PublicHttp::with_resolver`]; nothing in configuration reaches it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::header::{ACCEPT, USER_AGENT};
use http::{Request, Uri};
use http_body_util::Empty;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;
use url::{Host, Url};

use super::CimdError;
use super::addr::forbidden_range;
use crate::login::http::{BodyError, HttpResponse, describe, error_chain, read_capped, tls_config};

/// How long one fetch may take, connection, TLS and body included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest document read; client metadata is a few hundred bytes.
pub const MAX_DOCUMENT: usize = 64 * 1024;

const USER_AGENT_VALUE: &str = concat!("postern/", env!("CARGO_PKG_VERSION"));

/// Why a name gave no address to connect to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("{host}: DNS lookup failed: {reason}")]
    Lookup { host: String, reason: String },
    #[error("{0}: no address")]
    NoAddress(String),
    /// The name resolves to (at least) one address the gateway must not
    /// fetch from on a client's behalf.
    #[error("{host} resolves to {ip}, a {range} address")]
    Forbidden {
        host: String,
        ip: IpAddr,
        range: &'static str,
    },
}

/// Turns a host name into the addresses to connect to (the URL's port is
/// added by the connector).
pub trait Resolve: Send + Sync + 'static {
    fn resolve(&self, host: &str) -> BoxFuture<'static, Result<Vec<IpAddr>, ResolveError>>;
}

/// The system's resolver (getaddrinfo). A name with a dot is looked up as
/// absolute (`name.`), so the search domains of a pod's resolv.conf never
/// turn a public-looking name into a cluster-internal one.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemDns;

impl Resolve for SystemDns {
    fn resolve(&self, host: &str) -> BoxFuture<'static, Result<Vec<IpAddr>, ResolveError>> {
        let host = host.to_owned();
        let query = match host.contains('.') && !host.ends_with('.') {
            true => format!("{host}."),
            false => host.clone(),
        };
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((query.as_str(), 0))
                .await
                .map_err(|e| ResolveError::Lookup {
                    host,
                    reason: e.to_string(),
                })?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// Another resolver's answer, refused whole when any address in it is not
/// public: a name that mixes public and internal addresses is an attack or
/// a mistake, and either way not worth a partial answer.
#[derive(Clone, Copy, Debug, Default)]
pub struct PublicOnly<R>(pub R);

impl<R: Resolve> Resolve for PublicOnly<R> {
    fn resolve(&self, host: &str) -> BoxFuture<'static, Result<Vec<IpAddr>, ResolveError>> {
        let answer = self.0.resolve(host);
        let host = host.to_owned();
        Box::pin(async move {
            let ips = answer.await?;
            if ips.is_empty() {
                return Err(ResolveError::NoAddress(host));
            }
            match ips
                .iter()
                .find_map(|ip| forbidden_range(*ip).map(|range| (*ip, range)))
            {
                Some((ip, range)) => Err(ResolveError::Forbidden { host, ip, range }),
                None => Ok(ips),
            }
        })
    }
}

/// A [`Resolve`] as hyper-util's connector wants it.
#[derive(Clone)]
struct Dns(Arc<dyn Resolve>);

impl tower_service::Service<Name> for Dns {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = ResolveError;
    type Future = BoxFuture<'static, Result<Self::Response, ResolveError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ResolveError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let answer = self.0.resolve(name.as_str());
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = answer
                .await?
                .into_iter()
                .map(|ip| SocketAddr::new(ip, 0))
                .collect();
            Ok(addrs.into_iter())
        })
    }
}

/// A cheap-to-clone client: clones share one connection pool.
#[derive(Clone)]
pub struct PublicHttp {
    client: Client<HttpsConnector<HttpConnector<Dns>>, Empty<Bytes>>,
}

impl std::fmt::Debug for PublicHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicHttp").finish_non_exhaustive()
    }
}

impl PublicHttp {
    /// The production client: system roots only, and the system's resolver
    /// behind the public-address filter.
    pub fn new() -> Result<Self, CimdError> {
        Self::with_resolver(Arc::new(PublicOnly(SystemDns)), None)
    }

    /// A client on another resolver, which replaces the address filter
    /// too, trusting `extra_roots_pem` on top of the system's roots. For
    /// tests that serve documents on loopback; the gateway never calls it.
    pub fn with_resolver(
        resolver: Arc<dyn Resolve>,
        extra_roots_pem: Option<&[u8]>,
    ) -> Result<Self, CimdError> {
        let tls = tls_config(extra_roots_pem).map_err(|e| CimdError::Client(e.to_string()))?;
        let mut tcp = HttpConnector::new_with_resolver(Dns(resolver));
        tcp.enforce_http(false);
        tcp.set_connect_timeout(Some(FETCH_TIMEOUT));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_all_versions()
            .wrap_connector(tcp);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Self { client })
    }

    /// `GET url` (https, a DNS name) asking for JSON, read whole within
    /// [`FETCH_TIMEOUT`] and [`MAX_DOCUMENT`] bytes. Any status is
    /// returned as it came; redirects are not followed.
    pub async fn get(&self, url: &Url) -> Result<HttpResponse, CimdError> {
        let uri = checked_uri(url)?;
        let target = describe(&uri);
        let req = Request::get(uri)
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, USER_AGENT_VALUE)
            .body(Empty::new())
            .map_err(|_| CimdError::Malformed)?;
        match tokio::time::timeout(FETCH_TIMEOUT, self.exchange(req, &target)).await {
            Ok(answer) => answer,
            Err(_) => Err(CimdError::Timeout(FETCH_TIMEOUT)),
        }
    }

    async fn exchange(
        &self,
        req: Request<Empty<Bytes>>,
        target: &str,
    ) -> Result<HttpResponse, CimdError> {
        let resp = self.client.request(req).await.map_err(|e| refused(&e))?;
        read_capped(resp, MAX_DOCUMENT, target)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge => CimdError::TooLarge,
                BodyError::Transport(e) => CimdError::Transport(e),
            })
    }
}

/// The request URI, once more refusing what the connector would reach
/// without the resolver: a host that is an address, not a name.
fn checked_uri(url: &Url) -> Result<Uri, CimdError> {
    if url.scheme() != "https" {
        return Err(CimdError::NotHttps);
    }
    if !matches!(url.host(), Some(Host::Domain(_))) {
        return Err(CimdError::IpLiteral);
    }
    let uri: Uri = url.as_str().parse().map_err(|_| CimdError::Malformed)?;
    let host = uri.host().ok_or(CimdError::NoHost)?;
    if host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok() {
        return Err(CimdError::IpLiteral);
    }
    Ok(uri)
}

/// A connect failure: the resolver's refusal when that is what it was.
fn refused(e: &(dyn std::error::Error + 'static)) -> CimdError {
    let mut cause = Some(e);
    while let Some(err) = cause {
        if let Some(resolve) = err.downcast_ref::<ResolveError>() {
            return CimdError::Resolve(resolve.clone());
        }
        cause = err.source();
    }
    CimdError::Transport(error_chain(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Vec<IpAddr>);

    impl Resolve for Fixed {
        fn resolve(&self, _: &str) -> BoxFuture<'static, Result<Vec<IpAddr>, ResolveError>> {
            let ips = self.0.clone();
            Box::pin(async move { Ok(ips) })
        }
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter()
            .map(|s| s.parse().expect("test address"))
            .collect()
    }

    #[tokio::test]
    async fn public_only_refuses_any_internal_address() {
        let public = PublicOnly(Fixed(ips(&["1.1.1.1", "2606:4700::1111"])));
        assert_eq!(
            public.resolve("a.example").await,
            Ok(ips(&["1.1.1.1", "2606:4700::1111"]))
        );
        for internal in ["127.0.0.1", "10.1.2.3", "169.254.169.254", "fd00::1"] {
            let mixed = PublicOnly(Fixed(ips(&["1.1.1.1", internal])));
            assert!(
                matches!(
                    mixed.resolve("a.example").await,
                    Err(ResolveError::Forbidden { ip, .. }) if ip.to_string() == internal
                ),
                "{internal}"
            );
        }
        assert_eq!(
            PublicOnly(Fixed(Vec::new())).resolve("a.example").await,
            Err(ResolveError::NoAddress("a.example".into()))
        );
    }

    #[tokio::test]
    async fn system_dns_is_filtered_in_production() {
        // `localhost` is in /etc/hosts: 127.0.0.1 (and maybe ::1).
        let answer = PublicOnly(SystemDns).resolve("localhost").await;
        assert!(
            matches!(answer, Err(ResolveError::Forbidden { .. })),
            "{answer:?}"
        );
    }

    #[test]
    fn address_hosts_never_reach_the_connector() {
        for url in [
            "https://127.0.0.1/doc",
            "https://[::1]/doc",
            "https://0x7f000001/doc",
        ] {
            let url = Url::parse(url).expect("test url");
            assert!(
                matches!(checked_uri(&url), Err(CimdError::IpLiteral)),
                "{url}"
            );
        }
        let http = Url::parse("http://app.example/doc").expect("test url");
        assert!(matches!(checked_uri(&http), Err(CimdError::NotHttps)));
        let ok = Url::parse("https://app.example:8443/doc?x=1").expect("test url");
        assert_eq!(
            checked_uri(&ok).expect("a name").to_string(),
            "https://app.example:8443/doc?x=1"
        );
    }
}
