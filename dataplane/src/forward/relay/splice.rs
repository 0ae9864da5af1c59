//! Zero-copy tunnels on Linux: splice(2) moves a direction's bytes from one
//! socket into a pipe and from the pipe into the other socket, so they never
//! cross into user space. Through `rustix`'s safe wrappers; readiness comes
//! from tokio (`readable`/`writable` + `try_io`), so nothing blocks.
//!
//! A direction gets its pipe (two descriptors) when its first bytes arrive:
//! an idle tunnel holds sockets only. When no pipe can be had (descriptor
//! limits), the direction copies through a buffer instead. The pipe keeps
//! the kernel's default size, which the per-user pipe accounting allows for
//! thousands of tunnels.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use prometheus_client::metrics::counter::Counter;
use rustix::pipe::{PipeFlags, SpliceFlags, pipe_with, splice};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// The most one splice call moves (the default pipe holds 64 KiB).
const MOVE: usize = 64 * 1024;
/// The buffer of the copying fallback.
const COPY_BUF: usize = 16 * 1024;

/// One direction: `early` (bytes already read from `from`) first, then
/// everything until end of stream, which half-closes `to`.
pub(super) async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    early: Vec<u8>,
    count: &AtomicU64,
    metric: &Counter,
) -> io::Result<()> {
    if !early.is_empty() {
        write_all(to, &early).await?;
        counted(count, metric, early.len());
    }
    // The pipe is made when the first bytes (or the end) arrive.
    from.readable().await?;
    let (pipe_out, pipe_in) = match pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK) {
        Ok(pipe) => pipe,
        Err(_) => return copy(from, to, count, metric).await,
    };
    loop {
        from.readable().await?;
        let moved = from.try_io(Interest::READABLE, || {
            splice(
                from,
                None,
                &pipe_in,
                None,
                MOVE,
                SpliceFlags::MOVE | SpliceFlags::NONBLOCK,
            )
            .map_err(io::Error::from)
        });
        let n = match moved {
            Ok(0) => return half_close(to),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        drain(&pipe_out, to, n).await?;
        counted(count, metric, n);
    }
}

/// Moves exactly `n` bytes from the pipe into `to`.
async fn drain(pipe_out: &OwnedFd, to: &TcpStream, mut n: usize) -> io::Result<()> {
    while n > 0 {
        to.writable().await?;
        let moved = to.try_io(Interest::WRITABLE, || {
            splice(
                pipe_out,
                None,
                to,
                None,
                n,
                SpliceFlags::MOVE | SpliceFlags::NONBLOCK,
            )
            .map_err(io::Error::from)
        });
        match moved {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(m) => n -= m,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The same direction through a user-space buffer.
async fn copy(
    from: &TcpStream,
    to: &TcpStream,
    count: &AtomicU64,
    metric: &Counter,
) -> io::Result<()> {
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        from.readable().await?;
        match from.try_read(&mut buf) {
            Ok(0) => return half_close(to),
            Ok(n) => {
                write_all(to, &buf[..n]).await?;
                counted(count, metric, n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

async fn write_all(to: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        to.writable().await?;
        match to.try_write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// End of stream on one side: pass the FIN on, keep the other direction.
fn half_close(to: &TcpStream) -> io::Result<()> {
    // The peer may be gone already; the other direction decides the outcome.
    let _ = rustix::net::shutdown(to, rustix::net::Shutdown::Write);
    Ok(())
}

fn counted(count: &AtomicU64, metric: &Counter, n: usize) {
    count.fetch_add(n as u64, Relaxed);
    metric.inc_by(n as u64);
}
