//! The body type on both sides of the proxy, and a wrapper that notices
//! when the client's side of a body breaks (the client went away), so the
//! failure is not blamed on the backend.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Body, Frame, SizeHint};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every body the proxy sends or receives, streamed frame by frame.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// A client's request body that records whether it failed, and counts
/// its bytes when the request log wants them.
pub struct Watched<B> {
    inner: B,
    broken: Arc<AtomicBool>,
    received: Option<Arc<AtomicU64>>,
}

impl<B> Watched<B> {
    pub fn new(inner: B, broken: Arc<AtomicBool>, received: Option<Arc<AtomicU64>>) -> Self {
        Watched {
            inner,
            broken,
            received,
        }
    }
}

impl<B> Body for Watched<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => {
                this.broken.store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(received), Some(data)) = (&this.received, frame.data_ref()) {
                    received.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            other => other.map(|f| f.map(|r| r.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A backend's response with its body boxed as [`ProxyBody`].
pub fn boxed_response(
    response: http::Response<hyper::body::Incoming>,
) -> http::Response<ProxyBody> {
    response.map(|body| body.map_err(Into::into).boxed_unsync())
}
