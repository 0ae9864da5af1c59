//! Every way a forward-proxy request fails, and the one place that maps each
//! kind to an HTTP status, a SOCKS5 reply code and a metric label.
//!
//! Messages go back to the client, so they name hosts and statuses but never
//! credentials. Kinds are grouped by fault: the client's (`auth`,
//! `bad_request`, `denied`, `denied_<guard reason>`, `limit`) or the path beyond us (`unreachable`,
//! `refused`, `timeout`).

use http::StatusCode;

use super::guard::Reason;
use super::target::Target;

/// Why a request was not forwarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// Missing, malformed or wrong credentials, or an unknown user.
    #[error("proxy authentication required ({0})")]
    Auth(&'static str),
    /// A request a proxy cannot serve (not a proxy request, bad target).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The user's destination rules (or the default metadata guard) refuse it.
    #[error("destination {0} is not allowed for this user")]
    Denied(String),
    /// The destination is guarded ([`super::guard`]): the gateway itself, or
    /// an internal network the user is not allowed. The client is told no
    /// more than the destination it named; the log gets the rest.
    #[error("destination {destination} is not allowed")]
    Guarded {
        destination: String,
        /// The resolved address refused, when it is not the name itself.
        address: Option<std::net::SocketAddr>,
        reason: Reason,
    },
    /// The process holds as many connections as its descriptors allow.
    #[error("the proxy is at capacity; try again later")]
    Capacity,
    /// The user already holds `maxConnections` tunnels.
    #[error("too many connections: the limit is {0}")]
    Limit(u32),
    /// The upstream proxy (or, for `direct`, the destination) cannot be reached.
    #[error("cannot reach {what}: {reason}")]
    Unreachable { what: String, reason: String },
    /// The upstream proxy answered but did not open the tunnel.
    #[error("upstream {upstream} refused: {status}")]
    Refused { upstream: String, status: String },
    /// Connecting or the handshake with the upstream took too long.
    #[error("timed out connecting to {0}")]
    Timeout(String),
}

impl ForwardError {
    /// The HTTP status the proxy answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ForwardError::Auth(_) => StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            ForwardError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ForwardError::Denied(_) | ForwardError::Guarded { .. } => StatusCode::FORBIDDEN,
            ForwardError::Limit(_) => StatusCode::TOO_MANY_REQUESTS,
            ForwardError::Capacity => StatusCode::SERVICE_UNAVAILABLE,
            ForwardError::Unreachable { .. } | ForwardError::Refused { .. } => {
                StatusCode::BAD_GATEWAY
            }
            ForwardError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The SOCKS5 reply code (RFC 1928 §6) for the same failure.
    pub fn socks_reply(&self) -> u8 {
        match self {
            ForwardError::Auth(_) | ForwardError::Denied(_) | ForwardError::Guarded { .. } => 0x02,
            ForwardError::BadRequest(_) | ForwardError::Limit(_) | ForwardError::Capacity => 0x01,
            ForwardError::Unreachable { .. } => 0x04,
            ForwardError::Refused { .. } => 0x05,
            ForwardError::Timeout(_) => 0x06,
        }
    }

    /// The `kind` label of the error counter.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ForwardError::Auth(_) => "auth",
            ForwardError::BadRequest(_) => "bad_request",
            ForwardError::Denied(_) => "denied",
            ForwardError::Guarded { reason, .. } => reason.metric_label(),
            ForwardError::Limit(_) => "limit",
            ForwardError::Capacity => "capacity",
            ForwardError::Unreachable { .. } => "unreachable",
            ForwardError::Refused { .. } => "refused",
            ForwardError::Timeout(_) => "timeout",
        }
    }

    /// The error as the log shows it: for a guarded destination, which
    /// address was refused and why, which the client is not told.
    pub fn log_detail(&self) -> String {
        match self {
            ForwardError::Guarded {
                address: Some(address),
                reason,
                ..
            } => format!("{self}: {address} is {}", reason.describe()),
            ForwardError::Guarded { reason, .. } => format!("{self}: it is {}", reason.describe()),
            _ => self.to_string(),
        }
    }

    pub(crate) fn guarded(
        target: &Target,
        address: Option<std::net::SocketAddr>,
        reason: Reason,
    ) -> Self {
        ForwardError::Guarded {
            destination: target.to_string(),
            address,
            reason,
        }
    }

    pub(crate) fn unreachable(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        ForwardError::Unreachable {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}

/// The proxy cannot start: its configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the upstream CA file {path}: {source}")]
    CaFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the upstream CA file {0} holds no usable certificate")]
    CaEmpty(std::path::PathBuf),
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_maps_to_its_status() {
        let cases = [
            (ForwardError::Auth("missing"), 407),
            (ForwardError::BadRequest("x".into()), 400),
            (ForwardError::Denied("a:1".into()), 403),
            (ForwardError::Limit(1), 429),
            (ForwardError::unreachable("a", "refused"), 502),
            (
                ForwardError::Refused {
                    upstream: "u".into(),
                    status: "407".into(),
                },
                502,
            ),
            (ForwardError::Timeout("u".into()), 504),
            (
                ForwardError::Guarded {
                    destination: "localhost:9000".into(),
                    address: None,
                    reason: Reason::Gateway,
                },
                403,
            ),
        ];
        for (err, status) in cases {
            assert_eq!(err.status().as_u16(), status, "{err}");
            assert!(!err.metric_label().is_empty());
        }
    }

    #[test]
    fn a_guarded_refusal_tells_the_client_only_what_it_named() {
        let err = ForwardError::Guarded {
            destination: "db.example:5432".into(),
            address: Some("127.0.0.1:5432".parse().expect("addr")),
            reason: Reason::Loopback,
        };
        assert_eq!(
            err.to_string(),
            "destination db.example:5432 is not allowed"
        );
        assert_eq!(err.socks_reply(), 0x02);
        assert_eq!(err.metric_label(), "denied_loopback");
        assert!(
            err.log_detail()
                .contains("127.0.0.1:5432 is a loopback address")
        );
    }
}
