//! ACME challenges, answered by every data plane: HTTP-01 tokens on the
//! plain HTTP listener (phase 1, [`EarlyRequest`], before redirects, auth
//! and routing) and TLS-ALPN-01 certificates on the HTTPS listener (the
//! [`TlsHook`], only for clients that offer ALPN `acme-tls/1`).
//!
//! The hooks read the runtime's snapshot directly rather than a table of
//! their own: the sync client acks a snapshot as soon as the runtime
//! swapped it in, and the operator tells the CA to validate once every
//! data plane acked, so a challenge must be answerable from that moment.
//! Ordering certificates is not done here (see the `postern-acme` crate);
//! this module only answers what the snapshot lists, and only for the
//! hostname each challenge names.

pub mod local;

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use postern_snapshot::AcmeChallenge;
use rustls::server::ClientHello;
use rustls::sign::CertifiedKey;

use crate::reverse::{Answer, ConnInfo, EarlyRequest, ProxyBody, TlsHook, unchecked_key};
use crate::runtime::Runtime;

/// The certificate manager of `postern standalone`, when `--state-dir` is
/// set (the ACME flags are checked either way), and what the manifest
/// watcher shares with it.
#[allow(clippy::type_complexity)]
pub fn standalone_manager(
    args: &crate::cli::StandaloneArgs,
    runtime: &Arc<Runtime>,
) -> crate::Result<(
    Arc<local::Local>,
    Option<(
        Arc<postern_acme::Manager>,
        tokio::sync::watch::Receiver<Vec<postern_compile::AcmeRequest>>,
    )>,
)> {
    let config = postern_acme::AcmeConfig::from_args(&args.acme)
        .map_err(|e| crate::Error::Usage(e.to_string()))?;
    let local = local::Local::new(config.names(), args.state_dir.clone(), runtime.clone());
    let Some(dir) = &args.state_dir else {
        return Ok((local, None));
    };
    let store = local::FileStore::new(dir.clone(), local.clone())
        .map_err(|e| crate::Error::Usage(format!("--state-dir {}: {e}", dir.display())))?;
    let metrics = postern_acme::Metrics::default();
    runtime.metrics().register_with(|r| metrics.register(r));
    let manager = postern_acme::Manager::new(
        config,
        Arc::new(store),
        local.clone(),
        Arc::new(local::LogReporter),
        metrics,
    );
    let requests = local.requests();
    Ok((local, Some((manager, requests))))
}

/// The ALPN protocol of TLS-ALPN-01 (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

/// Both challenge hooks, over the live snapshot.
pub struct Challenges {
    runtime: Arc<Runtime>,
}

impl Challenges {
    pub fn new(runtime: Arc<Runtime>) -> Arc<Self> {
        Arc::new(Challenges { runtime })
    }

    /// The key authorization for `token` on `host`, if being validated.
    fn http01(&self, host: &str, token: &str) -> Option<String> {
        let snapshot = self.runtime.snapshot()?;
        snapshot.acme_challenges.iter().find_map(|c| match c {
            AcmeChallenge::Http01 {
                hostname,
                token: t,
                key_authorization,
            } if hostname == host && t == token => Some(key_authorization.clone()),
            _ => None,
        })
    }

    /// The TLS-ALPN-01 certificate for `host`, parsed per handshake: only
    /// validators ask for it, a few times per order.
    fn tls_alpn01(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        let snapshot = self.runtime.snapshot()?;
        snapshot.acme_challenges.iter().find_map(|c| match c {
            AcmeChallenge::TlsAlpn01 {
                hostname,
                cert_pem,
                key_pem,
                // The pair was made together by the orderer; webpki cannot
                // parse the certificate to check it (its extension is critical).
            } if hostname == host => match unchecked_key(cert_pem.as_bytes(), key_pem.as_bytes()) {
                Ok(key) => Some(Arc::new(key)),
                Err(e) => {
                    tracing::warn!(hostname, error = %e, "unusable TLS-ALPN-01 certificate");
                    None
                }
            },
            _ => None,
        })
    }
}

impl Challenges {
    fn answer(&self, req: &Request<Incoming>, conn: &ConnInfo) -> Option<Response<ProxyBody>> {
        // RFC 8555 8.3: the CA fetches over plain HTTP; a redirect to
        // HTTPS must not come first, so this runs before routing.
        if conn.tls || (req.method() != Method::GET && req.method() != Method::HEAD) {
            return None;
        }
        let token = req.uri().path().strip_prefix(HTTP01_PREFIX)?;
        let host = request_host(req)?;
        let key_authorization = self.http01(&host, token)?;
        tracing::info!(hostname = %host, "answered an ACME HTTP-01 challenge");
        let body = Full::new(Bytes::from(key_authorization))
            .map_err(|never| match never {})
            .boxed_unsync();
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(body)
            .ok()
    }
}

impl EarlyRequest for Challenges {
    fn early_request(
        &self,
        req: Request<Incoming>,
        conn: &Arc<ConnInfo>,
    ) -> Result<Answer, Request<Incoming>> {
        match self.answer(&req, conn) {
            Some(response) => Ok(Box::pin(async move { response })),
            None => Err(req),
        }
    }
}

impl TlsHook for Challenges {
    fn alpn(&self) -> Vec<Vec<u8>> {
        vec![ACME_TLS_ALPN.to_vec()]
    }

    fn resolve(&self, hello: &ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let offers_acme = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if !offers_acme {
            return None;
        }
        let host = hello.server_name()?.to_ascii_lowercase();
        let key = self.tls_alpn01(&host)?;
        tracing::info!(hostname = %host, "answered an ACME TLS-ALPN-01 challenge");
        Some(key)
    }
}

/// The Host of a request, lowercase, without port or trailing dot.
fn request_host<B>(req: &Request<B>) -> Option<String> {
    let raw = match req.uri().host() {
        Some(host) => host.to_string(),
        None => {
            let value = req.headers().get(header::HOST)?.to_str().ok()?;
            value
                .parse::<http::uri::Authority>()
                .ok()?
                .host()
                .to_string()
        }
    };
    Some(raw.trim_end_matches('.').to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_drops_port_case_and_dot() {
        let req = Request::builder()
            .uri("/.well-known/acme-challenge/t")
            .header(header::HOST, "Web.Example.COM.:8080")
            .body(())
            .expect("request");
        assert_eq!(request_host(&req).as_deref(), Some("web.example.com"));
    }
}
