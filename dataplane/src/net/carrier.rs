//! The TCP connection under a tunnel's TLS: one per agent session, carrying
//! every stream of that agent, so it is tuned for bulk and for latency at
//! once. Nothing here knows about TLS or HTTP/2.

use tokio::io::BufReader;
use tokio::net::TcpStream;

/// What one read from a carrier's socket takes. rustls asks the socket for
/// 4 KiB at a time; with a long link's receive queue holding 64 KiB
/// segments, most of every segment then sits unread when the kernel's
/// receive autotuning measures the reader (Linux counts what is still
/// queued against what was read), and the window stayed at 64–140 KiB
/// for seconds: one stream at 50 ms RTT fell to 0.01–0.3 Gbit/s
/// (`target/release/tunnel 5 1000 link`). Draining the queue in large
/// reads keeps the window growing, and costs one syscall per 64 KiB
/// instead of sixteen. One buffer per agent connection, not per stream.
pub const READ_AHEAD: usize = 64 * 1024;

/// A carrier connection: reads ahead in [`READ_AHEAD`] chunks, writes
/// (vectored too) straight through.
pub type Carrier = BufReader<TcpStream>;

/// Wraps a freshly connected or accepted socket as a carrier. Small
/// frames (heartbeats, stream opens, window updates) go out at once.
pub fn carrier(tcp: TcpStream) -> Carrier {
    let _ = tcp.set_nodelay(true);
    BufReader::with_capacity(READ_AHEAD, tcp)
}
