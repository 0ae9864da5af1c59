//! A stream that first yields bytes already read from it: what a PROXY
//! protocol header, an HTTP CONNECT reply or a sniffed first byte left
//! behind.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `inner`, read after `prefix` is used up. Writes go straight through.
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Prefixed {
            prefix,
            pos: 0,
            inner,
        }
    }

    /// The bytes not yet read, and the stream.
    pub fn into_parts(mut self) -> (Vec<u8>, S) {
        let rest = self.prefix.split_off(self.pos);
        (rest, self.inner)
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The bytes not yet read.
    pub fn buffered(&self) -> &[u8] {
        &self.prefix[self.pos..]
    }

    /// Puts `bytes` in front of the stream again, after what is still
    /// buffered.
    pub fn refill(&mut self, bytes: Vec<u8>) {
        if self.pos == self.prefix.len() {
            self.prefix = bytes;
            self.pos = 0;
        } else {
            self.prefix.extend_from_slice(&bytes);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.prefix.len() {
            let rest = &this.prefix[this.pos..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.pos += n;
            if this.pos == this.prefix.len() {
                // Give the buffer back: an idle connection keeps nothing.
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn replays_the_prefix_then_reads_the_stream() {
        let (mut near, far) = tokio::io::duplex(64);
        near.write_all(b" world").await.expect("write");
        drop(near);
        let mut s = Prefixed::new(b"hello".to_vec(), far);
        let mut all = String::new();
        s.read_to_string(&mut all).await.expect("read");
        assert_eq!(all, "hello world");
    }

    #[tokio::test]
    async fn into_parts_keeps_what_was_not_read() {
        let (_near, far) = tokio::io::duplex(64);
        let mut s = Prefixed::new(b"abcdef".to_vec(), far);
        let mut two = [0u8; 2];
        s.read_exact(&mut two).await.expect("read");
        let (rest, _) = s.into_parts();
        assert_eq!(rest, b"cdef");
    }
}
