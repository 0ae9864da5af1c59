//! HTTP/1.1 Upgrade (WebSocket and any other protocol): the request goes
//! to the backend with its Upgrade headers; when the backend answers 101,
//! both upgraded connections are spliced together until either closes.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use http::{Request, Response, StatusCode, Version, header};

use super::metrics::ReverseMetrics;
use crate::net::admission::Permit;

/// True for an HTTP/1.1 request asking to switch protocols.
pub fn requested<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// When the backend switched protocols, splices the client's upgraded
/// connection to the backend's in the background, holding the client
/// connection's `permit` (its place under the connection caps) until then.
pub fn splice(
    client: OnUpgrade,
    response: &mut Response<Incoming>,
    metrics: &ReverseMetrics,
    permit: Option<Arc<Permit>>,
) {
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return;
    }
    let backend = hyper::upgrade::on(response);
    let gauge = metrics.upgraded.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let (client, backend) = tokio::join!(client, backend);
        let (client, backend) = match (client, backend) {
            (Ok(c), Ok(b)) => (c, b),
            (Err(e), _) | (_, Err(e)) => {
                tracing::debug!(error = %e, "upgrade did not complete");
                return;
            }
        };
        gauge.inc();
        let mut client = TokioIo::new(client);
        let mut backend = TokioIo::new(backend);
        if let Err(e) = crate::net::relay(&mut client, &mut backend).await.result {
            tracing::debug!(error = %e, "upgraded connection ended with an error");
        }
        gauge.dec();
    });
}
