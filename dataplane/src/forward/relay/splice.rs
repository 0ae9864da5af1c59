//! Zero-copy tunnels on Linux: splice(2) moves a direction's bytes from one
//! socket into a pipe and from the pipe into the other socket, so they never
//! cross into user space. Through `rustix`'s safe wrappers; readiness comes
//! from tokio (`readable`/`writable` + `try_io`), so nothing blocks.
//!
//! A direction gets its pipe (two descriptors) when a peek shows its first
//! bytes: an idle tunnel holds sockets only, and a direction whose first
//! event is the end of stream or a reset (most short tunnels) never makes
//! one, which saves a pipe2(2) and two close(2)s each. When no pipe can be
//! had (descriptor limits), the direction copies through a buffer instead.
//! The pipe starts at the kernel's default size (64 KiB), which the per-user
//! pipe accounting allows for thousands of tunnels; a direction that fills
//! it asks for a larger one, so bulk moves more per wake-up.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use prometheus_client::metrics::counter::Counter;
use rustix::pipe::{PipeFlags, SpliceFlags, pipe_with, splice};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// The most one splice call moves into a default pipe (64 KiB).
const MOVE: usize = 64 * 1024;
/// The pipe of a direction that filled the default one: 16 times fewer
/// splice calls and wake-ups for bulk (measured: a quarter to a half more
/// throughput on loopback). `fs.pipe-max-size` allows it unprivileged.
const BULK_PIPE: usize = 1024 * 1024;
/// Grown pipes at once, process-wide. Each counts 256 pages against the
/// per-user pipe limit (`fs.pipe-user-pages-soft`, 16,384 pages by default),
/// past which every new pipe of the user shrinks to two pages; 16 keep a
/// quarter of it.
const MAX_GROWN: usize = 16;
static GROWN: AtomicUsize = AtomicUsize::new(0);
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
    if from.peek(&mut [0u8; 1]).await? == 0 {
        return half_close(to);
    }
    let (pipe_out, pipe_in) = match pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK) {
        Ok(pipe) => pipe,
        Err(_) => return copy(from, to, count, metric).await,
    };
    let mut most = MOVE;
    // Held (not read) until the direction ends: its drop frees the slot.
    let mut _grown: Option<Grown> = None;
    let mut tried = false;
    loop {
        from.readable().await?;
        let moved = from.try_io(Interest::READABLE, || {
            splice(
                from,
                None,
                &pipe_in,
                None,
                most,
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
        if n == most && !tried {
            tried = true;
            if let Some((size, g)) = grow(&pipe_in) {
                (most, _grown) = (size, Some(g));
            }
        }
    }
}

/// A larger pipe for a direction that filled the default one, while fewer
/// than [`MAX_GROWN`] are; `None` when over that or when the kernel refuses
/// (the per-user pipe limit), and the pipe stays as it is.
fn grow(pipe: &OwnedFd) -> Option<(usize, Grown)> {
    if GROWN.fetch_add(1, Relaxed) >= MAX_GROWN {
        GROWN.fetch_sub(1, Relaxed);
        return None;
    }
    let grown = Grown;
    let size = rustix::pipe::fcntl_setpipe_size(pipe, BULK_PIPE).ok()?;
    Some((size, grown))
}

/// One grown pipe, counted in [`GROWN`] until the direction ends.
struct Grown;

impl Drop for Grown {
    fn drop(&mut self) {
        GROWN.fetch_sub(1, Relaxed);
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
