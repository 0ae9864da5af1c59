//! The outbound HTTP(S) client that upstream logins talk to identity
//! providers with: hyper-util's pooled client over rustls (ring), trusting
//! the system's roots plus any CA the caller adds. Every request has a
//! deadline and every body a size cap, so a slow or hostile provider costs
//! a login at most [`DEFAULT_TIMEOUT`] and [`MAX_BODY`] bytes.
//!
//! It never logs: requests carry client secrets, codes and tokens, and only
//! the caller knows which parts are safe to show. Errors name the host and
//! path, never the query or the body.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, HeaderName, HeaderValue, USER_AGENT};
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::de::DeserializeOwned;

/// How long one request may take, connection and body included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest response body read; identity providers' answers are a few KiB.
pub const MAX_BODY: usize = 1 << 20;

const DEFAULT_USER_AGENT: &str = concat!("postern/", env!("CARGO_PKG_VERSION"));

/// Why a request got no usable answer. The messages carry no secrets: at
/// most the scheme, host and path of the URL.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("building the TLS client: {0}")]
    Tls(String),
    #[error("the extra CA bundle: {0}")]
    ExtraRoots(String),
    #[error("invalid URL {0}")]
    InvalidUrl(String),
    #[error("a header for {0} is not a valid header value")]
    InvalidHeader(String),
    #[error("{0}: no answer within {1:?}")]
    Timeout(String, Duration),
    #[error("{0}: {1}")]
    Transport(String, String),
    #[error("{0}: the answer is larger than {MAX_BODY} bytes")]
    TooLarge(String),
    #[error("{0}: the answer is not the JSON expected ({1})")]
    Json(String, String),
}

/// A response read whole: status, headers and the (capped) body.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Scheme, host and path of the request, for error messages.
    pub target: String,
}

impl HttpResponse {
    /// The body as JSON of type `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| HttpError::Json(self.target.clone(), e.to_string()))
    }

    /// A header's value when it is present and visible ASCII.
    pub fn header(&self, name: &HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A cheap-to-clone client: clones share one connection pool.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// A client trusting the system's roots and, when given, every
    /// certificate in `extra_roots_pem` (a private CA, or a test's).
    /// Plain `http://` URLs are allowed: which URLs are acceptable is the
    /// configuration's decision, not the transport's.
    pub fn new(extra_roots_pem: Option<&[u8]>) -> Result<Self, HttpError> {
        let tls = tls_config(extra_roots_pem)?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Self {
            client,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// The same client with another per-request deadline.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// `GET url` with extra headers.
    pub async fn get(
        &self,
        url: &str,
        headers: &[(HeaderName, &str)],
    ) -> Result<HttpResponse, HttpError> {
        let req = build(Method::GET, url, headers, None)?;
        self.send(req).await
    }

    /// `POST url` with an `application/x-www-form-urlencoded` body.
    pub async fn post_form(
        &self,
        url: &str,
        headers: &[(HeaderName, &str)],
        form: &[(&str, &str)],
    ) -> Result<HttpResponse, HttpError> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let req = build(Method::POST, url, headers, Some(body))?;
        self.send(req).await
    }

    /// Sends a request and reads the whole answer within the deadline.
    /// Redirects are returned, not followed.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<HttpResponse, HttpError> {
        let target = describe(req.uri());
        match tokio::time::timeout(self.timeout, self.exchange(req, &target)).await {
            Ok(answer) => answer,
            Err(_) => Err(HttpError::Timeout(target, self.timeout)),
        }
    }

    async fn exchange(
        &self,
        req: Request<Full<Bytes>>,
        target: &str,
    ) -> Result<HttpResponse, HttpError> {
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| HttpError::Transport(target.to_owned(), error_chain(&e)))?;
        read_capped(resp, MAX_BODY, target)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge => HttpError::TooLarge(target.to_owned()),
                BodyError::Transport(e) => HttpError::Transport(target.to_owned(), e),
            })
    }
}

/// A rustls client configuration (ring) trusting the system's roots and
/// every certificate in `extra_roots_pem`.
pub(crate) fn tls_config(
    extra_roots_pem: Option<&[u8]>,
) -> Result<rustls::ClientConfig, HttpError> {
    let roots = root_store(extra_roots_pem)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Why a response body was not read whole.
pub(crate) enum BodyError {
    TooLarge,
    Transport(String),
}

/// A response read whole, refused once its body passes `max` bytes.
pub(crate) async fn read_capped(
    resp: http::Response<Incoming>,
    max: usize,
    target: &str,
) -> Result<HttpResponse, BodyError> {
    let (parts, body) = resp.into_parts();
    let body = Limited::new(body, max)
        .collect()
        .await
        .map_err(|e| match e.is::<http_body_util::LengthLimitError>() {
            true => BodyError::TooLarge,
            false => BodyError::Transport(error_chain(e.as_ref())),
        })?
        .to_bytes();
    Ok(HttpResponse {
        status: parts.status,
        headers: parts.headers,
        body,
        target: target.to_owned(),
    })
}

fn root_store(extra_pem: Option<&[u8]>) -> Result<rustls::RootCertStore, HttpError> {
    let mut roots = rustls::RootCertStore::empty();
    // A system without a CA bundle still serves private CAs and plain HTTP.
    let native = rustls_native_certs::load_native_certs();
    let _ = roots.add_parsable_certificates(native.certs);
    if let Some(pem) = extra_pem {
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| HttpError::ExtraRoots(e.to_string()))?;
            roots
                .add(cert)
                .map_err(|e| HttpError::ExtraRoots(e.to_string()))?;
            added += 1;
        }
        if added == 0 {
            return Err(HttpError::ExtraRoots("no certificate in the PEM".into()));
        }
    }
    Ok(roots)
}

fn build(
    method: Method,
    url: &str,
    headers: &[(HeaderName, &str)],
    form: Option<String>,
) -> Result<Request<Full<Bytes>>, HttpError> {
    let uri: Uri = url
        .parse()
        .map_err(|_| HttpError::InvalidUrl(describe_str(url)))?;
    if uri.host().is_none() || !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(HttpError::InvalidUrl(describe(&uri)));
    }
    let target = describe(&uri);
    let mut req = Request::builder().method(method).uri(uri);
    let map = req
        .headers_mut()
        .ok_or_else(|| HttpError::InvalidUrl(target.clone()))?;
    map.insert(USER_AGENT, HeaderValue::from_static(DEFAULT_USER_AGENT));
    map.insert(ACCEPT, HeaderValue::from_static("application/json"));
    if form.is_some() {
        map.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
    }
    for (name, value) in headers {
        let value =
            HeaderValue::from_str(value).map_err(|_| HttpError::InvalidHeader(target.clone()))?;
        map.insert(name.clone(), value);
    }
    req.body(Full::new(Bytes::from(form.unwrap_or_default())))
        .map_err(|_| HttpError::InvalidUrl(target))
}

/// Scheme, authority and path: what errors may show of a URL (queries can
/// hold codes or tokens).
pub(crate) fn describe(uri: &Uri) -> String {
    format!(
        "{}://{}{}",
        uri.scheme_str().unwrap_or("?"),
        uri.authority().map(|a| a.as_str()).unwrap_or("?"),
        uri.path()
    )
}

fn describe_str(url: &str) -> String {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    url[..end].chars().take(200).collect()
}

/// The error and its causes on one line ("client error (Connect): tcp
/// connect error: Connection refused"), since hyper's top level alone says
/// little.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_drops_query() {
        let uri: Uri = "https://gh.example/login/oauth/access_token?code=secret"
            .parse()
            .expect("test setup");
        assert_eq!(
            describe(&uri),
            "https://gh.example/login/oauth/access_token"
        );
        assert_eq!(describe_str("not a url?code=x"), "not a url");
    }

    #[test]
    fn extra_roots_must_hold_a_certificate() {
        assert!(matches!(
            HttpClient::new(Some(b"garbage")),
            Err(HttpError::ExtraRoots(_))
        ));
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".into()]).expect("test setup");
        assert!(HttpClient::new(Some(ca.cert.pem().as_bytes())).is_ok());
    }

    #[test]
    fn only_http_urls_with_a_host() {
        for url in ["ftp://h/x", "/relative", "https://"] {
            assert!(build(Method::GET, url, &[], None).is_err(), "{url}");
        }
        let req = build(Method::GET, "http://h:1/p", &[(ACCEPT, "text/plain")], None)
            .expect("test setup");
        assert_eq!(req.headers()[ACCEPT], "text/plain");
        assert_eq!(req.headers()[USER_AGENT], DEFAULT_USER_AGENT);
    }
}
