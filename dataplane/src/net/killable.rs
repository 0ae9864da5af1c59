//! A stream that can be broken from outside: [`Kill::kill`] makes its next
//! read or write fail (and wakes the task polling it), whoever owns it. For
//! connections driven by a library's own task (hyper's h2 client), where
//! dropping our handles would only end the connection once every stream had.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The switch shared by the owner and the stream.
#[derive(Default)]
pub struct Kill {
    killed: AtomicBool,
    waker: AtomicWaker,
}

impl Kill {
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.waker.wake();
    }

    fn check(&self, cx: &mut Context<'_>) -> io::Result<()> {
        self.waker.register(cx.waker());
        if self.killed.load(Ordering::Acquire) {
            return Err(io::ErrorKind::ConnectionAborted.into());
        }
        Ok(())
    }
}

/// An IO that [`Kill::kill`] breaks.
pub struct Killable<T> {
    inner: T,
    kill: Arc<Kill>,
}

impl<T> Killable<T> {
    pub fn new(inner: T, kill: Arc<Kill>) -> Self {
        Killable { inner, kill }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Killable<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Err(e) = self.kill.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Killable<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Err(e) = self.kill.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Err(e) = self.kill.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_killed_stream_fails_a_pending_read_and_later_writes() {
        let (a, mut b) = tokio::io::duplex(64);
        let kill = Arc::new(Kill::default());
        let mut s = Killable::new(a, kill.clone());
        b.write_all(b"hi").await.expect("write");
        let mut buf = [0u8; 2];
        s.read_exact(&mut buf).await.expect("read before the kill");
        let pending = tokio::spawn(async move {
            let mut buf = [0u8; 1];
            let read = s.read(&mut buf).await;
            (read.map_err(|e| e.kind()), s)
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        kill.kill();
        let (read, mut s) = pending.await.expect("task");
        assert_eq!(read, Err(io::ErrorKind::ConnectionAborted));
        assert!(s.write_all(b"x").await.is_err());
        drop(b);
    }
}
