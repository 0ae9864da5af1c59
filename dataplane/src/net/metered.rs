//! A stream that reports every byte read from it and written to it as it
//! passes, for the features that let a library (hyper) do the copying and
//! still count what they relay.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Where a [`Metered`] stream reports what passed; called on the polling
/// task, so it must be cheap (atomic adds).
pub trait Tally {
    /// `n` bytes were read from the stream.
    fn read(&self, n: u64);
    /// `n` bytes were written to the stream.
    fn wrote(&self, n: u64);
}

/// `inner`, reporting to `tally`.
pub struct Metered<S, T> {
    inner: S,
    tally: T,
}

impl<S, T> Metered<S, T> {
    pub fn new(inner: S, tally: T) -> Self {
        Metered { inner, tally }
    }
}

impl<S: AsyncRead + Unpin, T: Tally + Unpin> AsyncRead for Metered<S, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            self.tally.read(n);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin, T: Tally + Unpin> AsyncWrite for Metered<S, T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.tally.wrote(n as u64);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[derive(Default)]
    struct Both(AtomicU64, AtomicU64);

    impl Tally for &Both {
        fn read(&self, n: u64) {
            self.0.fetch_add(n, Relaxed);
        }
        fn wrote(&self, n: u64) {
            self.1.fetch_add(n, Relaxed);
        }
    }

    #[tokio::test]
    async fn counts_each_way() {
        let (near, mut far) = tokio::io::duplex(64);
        let both = Both::default();
        let mut io = Metered::new(near, &both);
        io.write_all(b"hello").await.expect("write");
        far.write_all(b"abc").await.expect("far write");
        let mut buf = [0u8; 3];
        io.read_exact(&mut buf).await.expect("read");
        assert_eq!((both.0.load(Relaxed), both.1.load(Relaxed)), (3, 5));
    }
}
