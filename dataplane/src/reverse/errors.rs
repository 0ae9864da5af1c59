//! Every way a proxied request fails, classified by who is at fault, and
//! the one place that maps each kind to an HTTP status, a metric label and
//! a small body (HTML for browsers, JSON otherwise).
//!
//! Faults: the client's (`bad_request`, `unauthorized`), the configuration's
//! (`unknown_host`, `auth_unavailable`, `backend_config`), the backend's
//! (`backend_refused`, `backend_tls`, `backend_timeout`, `backend_failed`,
//! `no_agent`: a tunnel without a connected agent, 503; `peer_unreachable`
//! and `tunnel_registry_down`: the other replicas cannot be asked),
//! or nobody's to answer (`client_gone`: the client left, no one reads a
//! response). Messages name hosts and phases, never credentials.

use std::error::Error as _;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};

use super::ProxyBody;
use super::connector::ConnectError;

/// Why a request was not proxied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// A request we cannot read: no Host, a bad header or URI.
    #[error("malformed request: {0}")]
    BadRequest(&'static str),
    /// No site serves the requested host.
    #[error("no site serves this host")]
    UnknownHost,
    /// The host is not served on this connection: another certificate
    /// (SNI) than the one the site's would be, or a plain-HTTP site asked
    /// for over TLS (RFC 9110 §15.5.20).
    #[error("this connection does not serve this host")]
    Misdirected,
    /// Bearer auth failed; `presented` says whether a token was sent.
    #[error("authentication required")]
    Unauthorized { presented: bool },
    /// The route asks for an auth kind this build cannot check yet.
    #[error("this host requires OAuth, which this data plane does not provide yet")]
    AuthUnavailable,
    /// The backend could not be set up (a CA that does not parse...).
    #[error("backend misconfigured: {0}")]
    BackendConfig(String),
    /// The backend refused the connection or its name did not resolve.
    #[error("cannot connect to the backend: {0}")]
    BackendRefused(String),
    /// The backend's TLS handshake failed (verification included).
    #[error("TLS to the backend failed: {0}")]
    BackendTls(String),
    /// Connecting or waiting for response headers took too long.
    #[error("the backend timed out ({0})")]
    BackendTimeout(&'static str),
    /// The backend broke the exchange: reset, malformed response.
    #[error("the backend failed: {0}")]
    BackendFailed(String),
    /// The client went away mid-request; nobody reads the answer.
    #[error("the client went away")]
    ClientGone,
    /// A tunnel's host or prefix, but no agent is connected for it.
    #[error("no agent is connected for this tunnel")]
    NoAgent,
    /// No agent for the tunnel here, and the registry of the other data
    /// plane replicas (Redis) cannot be read to find one.
    #[error(
        "no agent for this tunnel is connected to this data plane replica, and the tunnel registry (Redis) is unreachable"
    )]
    TunnelRegistryDown,
    /// The replica holding the tunnel's agent did not answer on its peer port.
    #[error("the data plane replica holding this tunnel's agent cannot be reached: {0}")]
    PeerUnreachable(String),
    /// An auth hook refused with an answer of its own: an OAuth challenge
    /// (401 with `WWW-Authenticate`, 403 `insufficient_scope`) or a browser
    /// sent to log in (302).
    #[error("{}", .0.description)]
    Refused(Box<Refusal>),
}

/// The answer of an auth hook that refuses a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    /// The `error` member of the JSON body (RFC 6750 codes), and the label.
    pub error: &'static str,
    pub description: String,
    /// Extra headers (`WWW-Authenticate`, `Location`, `Set-Cookie`, CORS).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) | ProxyError::ClientGone => StatusCode::BAD_REQUEST,
            ProxyError::UnknownHost => StatusCode::NOT_FOUND,
            ProxyError::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ProxyError::AuthUnavailable => StatusCode::NOT_IMPLEMENTED,
            ProxyError::BackendConfig(_)
            | ProxyError::BackendRefused(_)
            | ProxyError::BackendTls(_)
            | ProxyError::BackendFailed(_) => StatusCode::BAD_GATEWAY,
            ProxyError::BackendTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::NoAgent | ProxyError::TunnelRegistryDown => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::PeerUnreachable(_) => StatusCode::BAD_GATEWAY,
            ProxyError::Refused(r) => r.status,
        }
    }

    /// The `outcome` label of `postern_reverse_requests_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ProxyError::BadRequest(_) => "bad_request",
            ProxyError::UnknownHost => "unknown_host",
            ProxyError::Misdirected => "misdirected",
            ProxyError::Unauthorized { .. } => "unauthorized",
            ProxyError::AuthUnavailable => "auth_unavailable",
            ProxyError::BackendConfig(_) => "backend_config",
            ProxyError::BackendRefused(_) => "backend_refused",
            ProxyError::BackendTls(_) => "backend_tls",
            ProxyError::BackendTimeout(_) => "backend_timeout",
            ProxyError::BackendFailed(_) => "backend_failed",
            ProxyError::ClientGone => "client_gone",
            ProxyError::NoAgent => "no_agent",
            ProxyError::TunnelRegistryDown => "tunnel_registry_down",
            ProxyError::PeerUnreachable(_) => "peer_unreachable",
            ProxyError::Refused(r) => r.error,
        }
    }

    /// Classifies a failed backend exchange. `client_gone` is true when the
    /// request body broke because the client disconnected.
    pub fn from_backend(err: &hyper_util::client::legacy::Error, client_gone: bool) -> Self {
        if let Some(connect) = find::<ConnectError>(err) {
            return ProxyError::from_connect(connect);
        }
        if client_gone {
            return ProxyError::ClientGone;
        }
        let detail = match err.source() {
            Some(source) => source.to_string(),
            None => err.to_string(),
        };
        ProxyError::BackendFailed(detail)
    }

    /// No connection to the backend could be made.
    pub fn from_connect(err: &ConnectError) -> Self {
        match err {
            ConnectError::Timeout => ProxyError::BackendTimeout("connect"),
            ConnectError::Tls(e) => ProxyError::BackendTls(e.clone()),
            ConnectError::Config(e) => ProxyError::BackendConfig(e.clone()),
            ConnectError::Io(e) => ProxyError::BackendRefused(e.clone()),
        }
    }

    /// A backend connection failed while a request was on it.
    pub fn from_hyper(err: &hyper::Error, client_gone: bool) -> Self {
        if client_gone {
            return ProxyError::ClientGone;
        }
        let detail = match err.source() {
            Some(source) => format!("{err}: {source}"),
            None => err.to_string(),
        };
        ProxyError::BackendFailed(detail)
    }

    /// What the client is told: the kind of fault, never the backend's
    /// address or its error text (those go to the log).
    pub fn public_message(&self) -> String {
        match self {
            ProxyError::BackendConfig(_) => "the backend is misconfigured".into(),
            ProxyError::BackendRefused(_) => "cannot connect to the backend".into(),
            ProxyError::BackendTls(_) => "TLS to the backend failed".into(),
            ProxyError::BackendFailed(_) => "the backend failed".into(),
            ProxyError::PeerUnreachable(_) => {
                "the data plane replica holding this tunnel's agent cannot be reached".into()
            }
            other => other.to_string(),
        }
    }

    /// A small response saying what went wrong.
    pub fn response(&self, html: bool) -> Response<ProxyBody> {
        let status = self.status();
        let message = self.public_message();
        let (content_type, body) = if html {
            let reason = status.canonical_reason().unwrap_or("Error");
            let text = format!(
                "<!doctype html><html><head><title>{code} {reason}</title></head><body><h1>{code} {reason}</h1><p>{}</p></body></html>\n",
                escape_html(&message),
                code = status.as_u16(),
            );
            ("text/html; charset=utf-8", text)
        } else {
            let json = serde_json::json!({
                "error": self.metric_label(),
                "status": status.as_u16(),
                "message": message,
            });
            ("application/json", format!("{json}\n"))
        };
        let mut response = Response::new(
            Full::new(Bytes::from(body))
                .map_err(|e| match e {})
                .boxed_unsync(),
        );
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let ProxyError::Refused(refusal) = self {
            for (name, value) in &refusal.headers {
                headers.append(name.clone(), value.clone());
            }
        }
        if let ProxyError::Unauthorized { presented } = self {
            let challenge = if *presented {
                "Bearer realm=\"postern\", error=\"invalid_token\""
            } else {
                "Bearer realm=\"postern\""
            };
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

/// The first error of type `E` in `err`'s source chain.
fn find<'a, E: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a E> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// Text safe inside HTML elements and quoted attributes.
pub(crate) fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// True when the client prefers HTML (a browser).
pub fn wants_html(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_fault_has_one_status_and_label() {
        let cases = [
            (ProxyError::BadRequest("x"), 400, "bad_request"),
            (ProxyError::UnknownHost, 404, "unknown_host"),
            (ProxyError::Misdirected, 421, "misdirected"),
            (
                ProxyError::Unauthorized { presented: false },
                401,
                "unauthorized",
            ),
            (ProxyError::AuthUnavailable, 501, "auth_unavailable"),
            (
                ProxyError::BackendRefused("x".into()),
                502,
                "backend_refused",
            ),
            (ProxyError::BackendTls("x".into()), 502, "backend_tls"),
            (
                ProxyError::BackendTimeout("connect"),
                504,
                "backend_timeout",
            ),
            (ProxyError::BackendFailed("x".into()), 502, "backend_failed"),
        ];
        for (err, status, label) in cases {
            assert_eq!(err.status().as_u16(), status, "{err}");
            assert_eq!(err.metric_label(), label);
        }
    }

    #[tokio::test]
    async fn bodies_never_carry_backend_details() {
        for err in [
            ProxyError::BackendRefused("10.1.2.3:8080: connection refused".into()),
            ProxyError::BackendTls("10.1.2.3:8443: bad certificate".into()),
            ProxyError::BackendFailed("10.1.2.3:8080 reset".into()),
            ProxyError::BackendConfig("http://10.1.2.3:8080 bad CA".into()),
        ] {
            for html in [true, false] {
                let bytes = err
                    .response(html)
                    .into_body()
                    .collect()
                    .await
                    .expect("body")
                    .to_bytes();
                let body = String::from_utf8_lossy(&bytes);
                assert!(body.contains("backend"), "{body}");
                assert!(!err.public_message().contains("10.1.2.3"), "{err}");
                assert!(!body.contains("10.1.2.3"), "{body}");
            }
        }
    }

    #[test]
    fn bodies_are_html_for_browsers_and_json_otherwise() {
        let err = ProxyError::Unauthorized { presented: true };
        let html = err.response(true);
        assert_eq!(
            html.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert!(
            html.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .is_ok_and(|v| v.starts_with("Bearer"))
        );
        let json = ProxyError::UnknownHost.response(false);
        assert_eq!(json.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(json.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn browsers_are_told_by_accept() {
        let mut h = http::HeaderMap::new();
        assert!(!wants_html(&h));
        h.insert(header::ACCEPT, HeaderValue::from_static("text/html,*/*"));
        assert!(wants_html(&h));
    }
}
