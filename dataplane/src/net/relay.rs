//! Moving bytes both ways between two streams until both ends are done,
//! for every feature that joins two connections (tunnel streams, the
//! agent's local services, peer replicas, upgraded HTTP connections).
//!
//! An idle direction holds no heap buffer: it waits for its reader with a
//! read into a buffer on the polling thread's stack, and bytes read go
//! straight to the writer from there. Only what the writer does not take
//! at once is kept on the heap, and that buffer is let go as soon as the
//! reader has nothing more, so thousands of quiet streams cost no buffer
//! memory while a bulk transfer still moves [`CHUNK`] bytes per read.
//!
//! Like `tokio::io::copy_bidirectional`, the end of one reader shuts down
//! the other side's writer (a half-close) and the other direction carries
//! on; unlike it, the bytes moved are reported even when a side fails.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `Poll<io::Result<T>>` to `io::Result<T>`, returning `Ok(Poll::Pending)`
/// from the enclosing function while it is pending.
macro_rules! ready_or_pending {
    ($e:expr) => {
        match $e {
            Poll::Ready(r) => r,
            Poll::Pending => return Ok(Poll::Pending),
        }
    };
}

/// The most bytes one read takes: what a bulk transfer moves per write.
pub const CHUNK: usize = 64 * 1024;

/// What a [`relay`] moved, and why it stopped.
#[derive(Debug)]
pub struct Moved {
    /// Bytes read from `a` and written to `b`.
    pub a_to_b: u64,
    /// Bytes read from `b` and written to `a`.
    pub b_to_a: u64,
    /// `Ok` when both readers ended and both writers were shut down.
    pub result: io::Result<()>,
}

/// Relays `a` and `b` until both directions end or one fails.
pub async fn relay<A, B>(a: &mut A, b: &mut B) -> Moved
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let (mut there, mut back) = (Pump::default(), Pump::default());
    let result = poll_fn(|cx| {
        let forth = there.poll(cx, Pin::new(&mut *a), Pin::new(&mut *b))?;
        let back = back.poll(cx, Pin::new(&mut *b), Pin::new(&mut *a))?;
        ready!(forth);
        ready!(back);
        Poll::Ready(Ok(()))
    })
    .await;
    Moved {
        a_to_b: there.moved,
        b_to_a: back.moved,
        result,
    }
}

#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum Stage {
    #[default]
    Copying,
    /// The reader ended: flush and shut down the writer.
    Closing,
    Done,
}

/// One direction.
#[derive(Default)]
struct Pump {
    /// Read but not yet written. Unallocated unless the writer lagged.
    held: BytesMut,
    /// Written since the writer was last flushed.
    unflushed: bool,
    moved: u64,
    stage: Stage,
}

impl Pump {
    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut r: Pin<&mut R>,
        mut w: Pin<&mut W>,
    ) -> io::Result<Poll<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        // Shares the task's budget, so a side that is always ready cannot
        // starve the other tasks on this thread.
        let coop = match tokio::task::coop::poll_proceed(cx) {
            Poll::Ready(coop) => coop,
            Poll::Pending => return Ok(Poll::Pending),
        };
        loop {
            match self.stage {
                Stage::Done => return Ok(Poll::Ready(())),
                Stage::Closing => {
                    // A shutdown flushes first (the `AsyncWrite` contract).
                    ready_or_pending!(w.as_mut().poll_shutdown(cx))?;
                    self.stage = Stage::Done;
                    continue;
                }
                Stage::Copying => {}
            }
            if !self.held.is_empty() {
                if self.write_held(cx, w.as_mut())?.is_pending() {
                    return Ok(Poll::Pending);
                }
                coop.made_progress();
                continue;
            }
            let read = if self.held.capacity() > 0 {
                self.read_held(cx, r.as_mut())?
            } else {
                self.read_through(cx, r.as_mut(), w.as_mut())?
            };
            match read {
                Poll::Ready(true) => coop.made_progress(),
                Poll::Ready(false) => self.stage = Stage::Closing,
                Poll::Pending => {
                    // Nothing to read: give the buffer back, and push out
                    // what was written (TLS holds it until a flush).
                    self.held = BytesMut::new();
                    if self.unflushed {
                        ready_or_pending!(w.as_mut().poll_flush(cx))?;
                        self.unflushed = false;
                    }
                    return Ok(Poll::Pending);
                }
            }
        }
    }

    /// Writes what is held; ready once all of it is written.
    fn write_held<W>(&mut self, cx: &mut Context<'_>, mut w: Pin<&mut W>) -> io::Result<Poll<()>>
    where
        W: AsyncWrite + ?Sized,
    {
        while !self.held.is_empty() {
            let n = ready_or_pending!(w.as_mut().poll_write(cx, &self.held))?;
            self.wrote(n)?;
            self.held.advance(n);
        }
        Ok(Poll::Ready(()))
    }

    /// Reads into the held buffer, which a lagging writer left allocated:
    /// while it keeps lagging, reads go where the writer will take them
    /// from. Ready(false) at the end of the stream.
    fn read_held<R>(&mut self, cx: &mut Context<'_>, r: Pin<&mut R>) -> io::Result<Poll<bool>>
    where
        R: AsyncRead + ?Sized,
    {
        self.held.clear();
        self.held.reserve(CHUNK);
        let n = ready_or_pending!(tokio_util::io::poll_read_buf(r, cx, &mut self.held))?;
        Ok(Poll::Ready(n > 0))
    }

    /// Reads into a buffer on the stack and writes it on at once; only
    /// what the writer does not take goes to the heap. Ready(false) at the
    /// end of the stream.
    #[inline(never)]
    fn read_through<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: Pin<&mut R>,
        mut w: Pin<&mut W>,
    ) -> io::Result<Poll<bool>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        let mut stack = [MaybeUninit::<u8>::uninit(); CHUNK];
        let mut buf = ReadBuf::uninit(&mut stack);
        ready_or_pending!(r.poll_read(cx, &mut buf))?;
        let mut data = buf.filled();
        if data.is_empty() {
            return Ok(Poll::Ready(false));
        }
        while !data.is_empty() {
            match w.as_mut().poll_write(cx, data) {
                Poll::Ready(n) => {
                    let n = self.wrote(n?)?;
                    data = &data[n..];
                }
                Poll::Pending => {
                    self.held = BytesMut::with_capacity(CHUNK);
                    self.held.extend_from_slice(data);
                    break;
                }
            }
        }
        Ok(Poll::Ready(true))
    }

    /// Counts a write of `n` bytes; a writer that takes none is gone.
    fn wrote(&mut self, n: usize) -> io::Result<usize> {
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        self.moved += n as u64;
        self.unflushed = true;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;

    #[tokio::test]
    async fn relays_both_ways_half_closes_and_counts() {
        let (mut a, mut client) = duplex(64);
        let (mut b, mut server) = duplex(64);
        let peers = async {
            client.write_all(b"hello").await.expect("write");
            let mut got = [0u8; 5];
            server.read_exact(&mut got).await.expect("read");
            assert_eq!(&got, b"hello");
            client.shutdown().await.expect("half-close");
            // The client's end reaches the server as an end of stream...
            assert_eq!(server.read(&mut [0u8; 8]).await.expect("eof"), 0);
            // ...and the other way still carries bytes.
            server.write_all(b"world!").await.expect("write");
            drop(server);
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).await.expect("read to end");
            assert_eq!(rest, b"world!");
        };
        let (moved, ()) = tokio::join!(relay(&mut a, &mut b), peers);
        assert!(moved.result.is_ok(), "{:?}", moved.result);
        assert_eq!((moved.a_to_b, moved.b_to_a), (5, 6));
    }

    #[tokio::test]
    async fn bulk_moves_whole_chunks_through_a_lagging_writer() {
        let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut source = Scripted::reading(&payload);
        // A small pipe makes the writer lag, so the held buffer is used.
        let (mut b, mut far) = duplex(4096);
        let receive = async move {
            let mut got = Vec::new();
            far.read_to_end(&mut got).await.expect("read to end");
            // Ends the other direction.
            drop(far);
            got
        };
        let (moved, got) = tokio::join!(relay(&mut source, &mut b), receive);
        assert!(moved.result.is_ok(), "{:?}", moved.result);
        assert_eq!(moved.a_to_b, payload.len() as u64);
        assert!(got == payload, "payload intact");

        let mut source = Scripted::reading(&payload);
        let mut sink = Scripted::reading(&[]);
        let moved = relay(&mut source, &mut sink).await;
        assert_eq!(moved.a_to_b, payload.len() as u64);
        assert_eq!(sink.largest_write, CHUNK, "bulk goes in whole chunks");
        assert!(sink.written == payload);
    }

    #[tokio::test]
    async fn a_failing_side_still_reports_what_moved() {
        let (mut a, mut client) = duplex(64);
        let mut b = Scripted::reading(&[]);
        b.fail_writes = true;
        client.write_all(b"abc").await.expect("write");
        let moved = relay(&mut a, &mut b).await;
        assert!(moved.result.is_err());
        assert_eq!((moved.a_to_b, moved.b_to_a), (0, 0));
    }

    #[test]
    fn a_buffer_is_held_only_while_the_writer_lags() {
        let mut cx = Context::from_waker(Waker::noop());
        let mut reader = Scripted::reading(b"0123456789");
        reader.pending_when_empty = true;
        let mut writer = Scripted::reading(&[]);
        writer.closed = true;
        let mut pump = Pump::default();
        let mut poll = |pump: &mut Pump, r: &mut Scripted, w: &mut Scripted| {
            pump.poll(&mut cx, Pin::new(r), Pin::new(w))
                .expect("no error")
        };

        assert!(poll(&mut pump, &mut reader, &mut writer).is_pending());
        assert_eq!(&pump.held[..], b"0123456789", "kept for the writer");

        writer.closed = false;
        assert!(poll(&mut pump, &mut reader, &mut writer).is_pending());
        assert_eq!(writer.written, b"0123456789");
        assert_eq!(pump.held.capacity(), 0, "idle again: nothing held");

        reader.data.extend_from_slice(b"more");
        assert!(poll(&mut pump, &mut reader, &mut writer).is_pending());
        assert_eq!(pump.held.capacity(), 0, "a keeping-up writer needs none");
        assert_eq!(pump.moved, 14);
    }

    /// A stream that reads from `data` and records what is written to it.
    #[derive(Default)]
    struct Scripted {
        data: Vec<u8>,
        pos: usize,
        /// Pending instead of the end of the stream once `data` is read.
        pending_when_empty: bool,
        /// Writes are pending.
        closed: bool,
        fail_writes: bool,
        written: Vec<u8>,
        largest_write: usize,
    }

    impl Scripted {
        fn reading(data: &[u8]) -> Scripted {
            Scripted {
                data: data.to_vec(),
                ..Scripted::default()
            }
        }
    }

    impl AsyncRead for Scripted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let rest = &self.data[self.pos..];
            if rest.is_empty() && self.pending_when_empty {
                return Poll::Pending;
            }
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            self.pos += n;
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Scripted {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.fail_writes {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            if self.closed {
                return Poll::Pending;
            }
            self.written.extend_from_slice(buf);
            self.largest_write = self.largest_write.max(buf.len());
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }
}
