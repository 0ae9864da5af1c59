//! `socks5://` upstreams through `tokio-socks` (a maintained RFC 1928/1929
//! client): the destination name is passed through for the upstream to
//! resolve, with username/password auth when credentials are configured.

use postern_snapshot::Credentials;
use tokio_socks::tcp::Socks5Stream;

use tokio::io::{AsyncRead, AsyncWrite};

use super::io_reason;
use crate::forward::errors::ForwardError;
use crate::forward::target::Target;

/// The SOCKS5 handshake over `proxy`; the same stream once the tunnel is open.
pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    proxy: S,
    target: &Target,
    credentials: Option<&Credentials>,
    label: &str,
) -> Result<S, ForwardError> {
    let host = target.host_str();
    let dest = (host.as_str(), target.port);
    let result = match credentials {
        Some(c) => {
            Socks5Stream::connect_with_password_and_socket(proxy, dest, &c.username, &c.password)
                .await
        }
        None => Socks5Stream::connect_with_socket(proxy, dest).await,
    };
    match result {
        Ok(stream) => Ok(stream.into_inner()),
        Err(e) => Err(classify(e, label)),
    }
}

fn classify(e: tokio_socks::Error, label: &str) -> ForwardError {
    use tokio_socks::Error as E;
    let refused = |status: &str| ForwardError::Refused {
        upstream: label.to_string(),
        status: status.to_string(),
    };
    match e {
        E::Io(io) => ForwardError::unreachable(label, io_reason(&io)),
        E::PasswordAuthFailure(_) => refused("authentication failed"),
        E::NoAcceptableAuthMethods | E::AuthorizationRequired => refused("authentication required"),
        other => refused(&other.to_string().to_lowercase()),
    }
}
