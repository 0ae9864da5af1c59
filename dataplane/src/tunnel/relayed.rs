//! What one stream to an agent relays, counted as it passes: bytes each way
//! into `postern_tunnel_bytes_total` and the stream's place in
//! `postern_tunnel_streams_open`, held until the last part of the stream
//! (request body, response body, raw connection) is dropped.
//!
//! Plain http requests count their bodies' data frames ([`Counted`]); raw
//! streams (tcp, upgrades) count every byte of the connection through
//! [`crate::net::Metered`], the upgraded request's head included.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use super::metrics::{BytesLabels, StreamLabels, TunnelMetrics};
use crate::net::Tally;
use crate::reverse::ProxyBody;

/// One stream's counters; the open gauge goes down when it drops.
pub struct Relayed {
    kind: &'static str,
    /// Client to agent.
    into_agent: Counter,
    /// Agent to client.
    from_agent: Counter,
    open: Gauge,
}

impl Relayed {
    /// A stream of `kind` (`http`, `upgrade` or `tcp`) on `tunnel`, open
    /// from now on.
    pub fn open(metrics: &TunnelMetrics, tunnel: &str, kind: &'static str) -> Arc<Relayed> {
        let bytes = |direction| {
            let labels = BytesLabels {
                tunnel: tunnel.to_string(),
                direction,
            };
            metrics.bytes.get_or_create(&labels).clone()
        };
        let labels = StreamLabels {
            tunnel: tunnel.to_string(),
            kind,
        };
        let open = metrics.open.get_or_create(&labels).clone();
        open.inc();
        Arc::new(Relayed {
            kind,
            into_agent: bytes("in"),
            from_agent: bytes("out"),
            open,
        })
    }

    pub fn kind(&self) -> &'static str {
        self.kind
    }
}

impl Drop for Relayed {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// On the data plane's end of a raw stream: what it reads came from the
/// agent, what it writes goes to it.
impl Tally for Arc<Relayed> {
    fn read(&self, n: u64) {
        self.from_agent.inc_by(n);
    }

    fn wrote(&self, n: u64) {
        self.into_agent.inc_by(n);
    }
}

/// Which way a [`Counted`] body goes.
#[derive(Clone, Copy)]
pub enum Way {
    ToAgent,
    FromAgent,
}

/// A body that counts its data frames into its stream's [`Relayed`].
pub struct Counted {
    inner: ProxyBody,
    relayed: Arc<Relayed>,
    way: Way,
}

impl Counted {
    pub fn wrap(inner: ProxyBody, relayed: Arc<Relayed>, way: Way) -> ProxyBody {
        http_body_util::BodyExt::boxed_unsync(Counted {
            inner,
            relayed,
            way,
        })
    }
}

impl Body for Counted {
    type Data = Bytes;
    type Error = <ProxyBody as Body>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            let n = data.len() as u64;
            match this.way {
                Way::ToAgent => this.relayed.into_agent.inc_by(n),
                Way::FromAgent => this.relayed.from_agent.inc_by(n),
            };
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
