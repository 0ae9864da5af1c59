//! HTTP/1.1 Upgrade (WebSocket and any other protocol): the request goes
//! to the backend with its Upgrade headers; when the backend answers 101,
//! both upgraded connections are spliced together until either closes.
//!
//! The client's side is handed over by the listener rather than by hyper:
//! HTTP/1.1 connections are served by a fresh hyper connection per busy
//! spell (`parked.rs`), which takes its stream back when it ends, so the
//! listener gives it to the request's [`ClientUpgrade`] after a 101.

use std::sync::{Arc, Mutex};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

use http::{Request, Response, StatusCode, Version, header};

use super::ProxyBody;
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

/// A client connection after its 101: the stream with the bytes the
/// client sent past the request already in front.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}
pub type Upgraded = Box<dyn Io>;

/// The request's side of the handover: resolves to the client's stream once
/// the 101 was written, or fails if the connection ended otherwise.
pub struct ClientUpgrade(oneshot::Receiver<Upgraded>);

/// How the offer rides in the request's extensions, which must be `Clone`.
#[derive(Clone)]
struct Offer(Arc<Mutex<Option<oneshot::Receiver<Upgraded>>>>);

/// The connection's side: holds the sender of the request whose response
/// is a 101, until the listener has the stream back from hyper.
#[derive(Clone, Default)]
pub struct Handoff(Arc<Mutex<Option<oneshot::Sender<Upgraded>>>>);

impl ClientUpgrade {
    /// Offers an upgrade to an HTTP/1.1 request asking for one; the handler
    /// takes it back with [`ClientUpgrade::take`].
    pub fn offer<B>(req: &mut Request<B>) -> Option<oneshot::Sender<Upgraded>> {
        if !requested(req) {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        req.extensions_mut()
            .insert(Offer(Arc::new(Mutex::new(Some(rx)))));
        Some(tx)
    }

    pub fn take<B>(req: &mut Request<B>) -> Option<ClientUpgrade> {
        let offer = req.extensions_mut().remove::<Offer>()?;
        let rx = offer.0.lock().ok()?.take()?;
        Some(ClientUpgrade(rx))
    }
}

impl Handoff {
    /// Called with the response to a request that was offered an upgrade:
    /// a 101 means hyper ends the connection after writing it.
    pub fn answered<B>(&self, offered: oneshot::Sender<Upgraded>, response: &Response<B>) {
        if response.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Ok(mut slot) = self.0.lock()
        {
            *slot = Some(offered);
        }
    }

    /// The sender waiting for the stream, if the last response was a 101.
    pub fn pending(&self) -> Option<oneshot::Sender<Upgraded>> {
        self.0.lock().ok().and_then(|mut slot| slot.take())
    }
}

/// When the backend switched protocols, splices the client's upgraded
/// connection to the backend's in the background, holding the client
/// connection's `permit` (its place under the connection caps) until then.
pub fn splice(
    client: ClientUpgrade,
    response: &mut Response<ProxyBody>,
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
        let (client, backend) = tokio::join!(client.0, backend);
        let (mut client, backend) = match (client, backend) {
            (Ok(c), Ok(b)) => (c, b),
            (Err(_), _) => {
                tracing::debug!("the client connection ended before its upgrade");
                return;
            }
            (_, Err(e)) => {
                tracing::debug!(error = %e, "upgrade did not complete");
                return;
            }
        };
        gauge.inc();
        let mut backend = TokioIo::new(backend);
        if let Err(e) = crate::net::relay(&mut client, &mut backend).await.result {
            tracing::debug!(error = %e, "upgraded connection ended with an error");
        }
        gauge.dec();
    });
}
