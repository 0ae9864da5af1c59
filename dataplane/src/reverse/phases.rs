//! The hooks of the reverse request path, one trait per phase, in the
//! order a request meets them (the path itself is [`super::handler`]):
//!
//! 1. **early request** ([`EarlyRequest`]): before the Host is looked up.
//!    May answer the request itself (ACME HTTP-01 challenges, health).
//!    Default: nobody answers.
//! 2. **route** (built in): the site for the Host, the `redirectHttp` 308,
//!    then the first matching Route, else the site's own backend.
//! 3. **authenticate** ([`Authenticate`]): the target's [`Guard`]. A hook
//!    claims the guard kinds it owns (OAuth); `none` and `bearer` are built
//!    in; a kind nobody claims answers 501.
//! 4. **choose upstream** ([`ChooseUpstream`]): the [`Backend`] that takes
//!    the request. A hook claims the targets it owns (tunnels); default: the
//!    target's pooled URL / Service client.
//! 5. **upstream request** (built in): hop-by-hop headers out, forwarding
//!    headers and the request id in, Host, the target's header changes.
//! 6. **response filter** ([`ResponseFilter`]): after the built-in
//!    hop-by-hop stripping and the target's header changes; every hook runs.
//! 7. **log** ([`Log`]): once per request, answered or refused, when its
//!    response body has ended or was dropped (only then are the bytes
//!    sent known), after the built-in access log line; every hook runs.
//!
//! And one hook outside the request path, [`TlsHook`], for the https
//! listener's handshake: extra ALPN protocols and certificates chosen
//! before the SNI store (ACME TLS-ALPN-01 answers `acme-tls/1`).
//!
//! A capability adds its hooks to [`Hooks`] when the data plane starts
//! and edits no other phase. Hooks run on the request's task and must not
//! block; they read their own live state, swapped per snapshot by their
//! feature.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use futures::future::BoxFuture;
use http::uri::{Authority, PathAndQuery};
use http::{Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use rustls::server::ClientHello;
use rustls::sign::CertifiedKey;

use super::auth::Guard;
use super::router::{SiteTable, Target};
use super::{ConnInfo, ProxyBody, ProxyError};

/// The answer of an early-request hook: it may read the body and call out
/// (the authorization server's endpoints do) before it responds.
pub type Answer = BoxFuture<'static, Response<ProxyBody>>;

/// Phase 1: answers a request before routing, or lets it through.
pub trait EarlyRequest: Send + Sync {
    /// `Ok` takes the request and ends it with that answer; `Err` hands
    /// the request back untouched for the next hook and routing. (Handing
    /// it back by value is the point: boxing it would cost every request
    /// an allocation.)
    #[allow(clippy::result_large_err)]
    fn early_request(
        &self,
        req: Request<Incoming>,
        conn: &Arc<ConnInfo>,
    ) -> Result<Answer, Request<Incoming>>;
}

/// Who phase 3 let in: the hook that checked puts it in the request's
/// extensions (never read from a header a client could send), and the log
/// phase reads it.
#[derive(Clone, Debug)]
pub struct AuthenticatedUser(pub String);

/// What phase 3 knows besides the request: the routed host and path.
pub struct AuthContext<'a> {
    /// Lowercase, without the port.
    pub host: &'a str,
    /// As the client wrote it (`host[:port]`), for absolute URLs.
    pub raw_host: &'a str,
    /// The normalised path routing and auth decide on.
    pub path: &'a str,
}

/// Phase 3: checks the guard kinds this hook owns. It may edit the request
/// on its way to the backend (drop the client's credentials, add the
/// identity headers) and refuse with its own challenge
/// ([`ProxyError::Refused`]).
pub trait Authenticate: Send + Sync {
    /// `None`: not this hook's kind of guard. `Some(Err)` refuses.
    fn authenticate(
        &self,
        guard: &Guard,
        req: &mut Request<Incoming>,
        ctx: &AuthContext<'_>,
    ) -> Option<Result<(), ProxyError>>;
}

/// Something that takes a prepared request and returns the backend's
/// response head: the pooled URL client today, a tunnel stream next.
pub trait Backend: Send + Sync {
    /// Whether requests go out as HTTP/2 (the authority then rides in the URI).
    fn speaks_h2(&self) -> bool;
    /// `host:port`: the Host the backend sees unless the site preserves it.
    fn authority(&self) -> &Authority;
    /// The absolute URI of `path` on this backend.
    fn uri(&self, path: Option<&PathAndQuery>) -> Uri;
    /// Why this backend cannot take requests (bad settings), if so.
    fn broken(&self) -> Option<&str>;
    /// Sends the request. `addrs` are (client, server) for a PROXY header;
    /// `client_broke` is set when the client's body broke mid-way, which
    /// decides who is at fault when the exchange fails.
    fn exchange(
        &self,
        request: Request<ProxyBody>,
        addrs: (SocketAddr, SocketAddr),
        client_broke: Arc<AtomicBool>,
    ) -> BoxFuture<'_, Result<Response<ProxyBody>, ProxyError>>;
    /// The response body of a request this backend answered (not of a
    /// protocol switch), on its way to the client: a backend that counts
    /// what it relays wraps it. The default passes it through.
    fn response_body(&self, body: ProxyBody) -> ProxyBody {
        body
    }
    /// What the request log calls this backend (never credentials).
    fn label(&self) -> Cow<'_, str> {
        Cow::Borrowed(self.authority().as_str())
    }
}

/// Phase 4: picks the backend of the targets this hook owns.
pub trait ChooseUpstream: Send + Sync {
    /// `None`: not this hook's target. `path` is the normalised path that
    /// routing saw (a tunnel may own a path prefix on every site).
    fn choose_upstream(
        &self,
        site: &SiteTable,
        target: &Target,
        method: &Method,
        path: &str,
    ) -> Option<Result<Arc<dyn Backend>, ProxyError>>;
}

/// Phase 6: edits the response head on its way to the client.
pub trait ResponseFilter: Send + Sync {
    fn filter_response(&self, site: &SiteTable, response: &mut http::response::Parts);
}

/// What phase 7 knows about a finished request.
pub struct LogRecord<'a> {
    pub client: SocketAddr,
    pub method: &'a Method,
    /// Lowercase, without the port; `None` when the request had no usable Host.
    pub host: Option<&'a str>,
    pub path: &'a str,
    pub status: StatusCode,
    /// `ok` or the error's metric label; `client_gone` when the client
    /// left before the body ended, `body_failed` when the backend's broke.
    pub outcome: &'static str,
    pub site: Option<&'a str>,
    pub route: Option<&'a str>,
    /// The backend that took it ([`Backend::label`]).
    pub upstream: Option<&'a str>,
    /// Who the authenticate phase let in ([`AuthenticatedUser`]).
    pub user: Option<&'a str>,
    pub request_id: &'a str,
    /// Body bytes read from the client (a refused request's body is not read).
    pub bytes_in: u64,
    /// Body bytes sent to the client.
    pub bytes_out: u64,
    /// From the request head to the end of the response body.
    pub millis: u64,
}

/// Phase 7: sees every request once it is answered.
pub trait Log: Send + Sync {
    fn log(&self, record: &LogRecord<'_>);
}

/// The https handshake's hook.
pub trait TlsHook: Send + Sync {
    /// ALPN protocols to offer besides h2 and http/1.1.
    fn alpn(&self) -> Vec<Vec<u8>> {
        Vec::new()
    }
    /// A certificate for this handshake ahead of the SNI store, if any.
    fn resolve(&self, hello: &ClientHello<'_>) -> Option<Arc<CertifiedKey>>;
}

/// Every capability's hooks, by phase, in registration order.
#[derive(Clone, Default)]
pub struct Hooks {
    pub early: Vec<Arc<dyn EarlyRequest>>,
    pub authenticate: Vec<Arc<dyn Authenticate>>,
    pub upstream: Vec<Arc<dyn ChooseUpstream>>,
    pub response: Vec<Arc<dyn ResponseFilter>>,
    pub log: Vec<Arc<dyn Log>>,
    pub tls: Vec<Arc<dyn TlsHook>>,
}

impl Hooks {
    /// Phase 1: the first hook that answers, else the request back.
    #[allow(clippy::result_large_err)]
    pub fn early_request(
        &self,
        mut req: Request<Incoming>,
        conn: &Arc<ConnInfo>,
    ) -> Result<Answer, Request<Incoming>> {
        for hook in &self.early {
            match hook.early_request(req, conn) {
                Ok(answer) => return Ok(answer),
                Err(back) => req = back,
            }
        }
        Err(req)
    }

    /// Phase 3: the first hook that owns the guard, else the built-in check.
    pub fn authenticate(
        &self,
        guard: &Guard,
        req: &mut Request<Incoming>,
        ctx: &AuthContext<'_>,
    ) -> Result<(), ProxyError> {
        for hook in &self.authenticate {
            if let Some(verdict) = hook.authenticate(guard, req, ctx) {
                return verdict;
            }
        }
        guard.check(req.headers())
    }

    /// Phase 4: the first hook that owns the target, else its pooled client.
    pub fn choose_upstream(
        &self,
        site: &SiteTable,
        target: &Target,
        method: &Method,
        path: &str,
    ) -> Result<Arc<dyn Backend>, ProxyError> {
        let chosen = self
            .upstream
            .iter()
            .find_map(|h| h.choose_upstream(site, target, method, path))
            .unwrap_or_else(|| Ok(target.upstream.clone() as Arc<dyn Backend>))?;
        if let Some(why) = chosen.broken() {
            return Err(ProxyError::BackendConfig(why.to_string()));
        }
        Ok(chosen)
    }

    /// Phase 6: every hook, in order.
    pub fn filter_response(&self, site: &SiteTable, response: &mut http::response::Parts) {
        for hook in &self.response {
            hook.filter_response(site, response);
        }
    }

    /// Phase 7: every hook, in order.
    pub fn log(&self, record: &LogRecord<'_>) {
        for hook in &self.log {
            hook.log(record);
        }
    }

    /// Whether any phase-7 hook wants records (they cost a copy of the path).
    pub fn logs(&self) -> bool {
        !self.log.is_empty()
    }
}
