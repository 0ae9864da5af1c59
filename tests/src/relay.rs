//! A TCP relay between data planes and the operator: the Service in front
//! of the operator, which a test can point elsewhere and make cut the sync
//! stream in the middle of a snapshot frame.
//!
//! The operator-to-data-plane direction is read frame by frame (a 4-byte
//! big-endian length, then one JSON message, as `postern_snapshot::sync`
//! says), so a cut lands inside a snapshot frame by construction, never on a
//! frame boundary. Plain TCP only: a TLS stream's frames are not visible.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How a snapshot frame starts: `ToDataplane::Snapshot`, externally tagged.
const SNAPSHOT_TAG: &[u8] = b"{\"snapshot\":";

/// A running relay; stops accepting when dropped (open connections end
/// when either side closes).
pub struct Relay {
    /// Where data planes connect.
    pub addr: SocketAddr,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

#[derive(Debug)]
struct State {
    upstream: Mutex<SocketAddr>,
    cutting: AtomicBool,
    cuts: AtomicU64,
    /// Length of the last frame cut, and how much of it was delivered.
    last_cut: Mutex<Option<(usize, usize)>>,
    connections: AtomicUsize,
}

impl Relay {
    /// Listens on a free loopback port and relays every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("relay bind: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let state = Arc::new(State {
            upstream: Mutex::new(upstream),
            cutting: AtomicBool::new(false),
            cuts: AtomicU64::new(0),
            last_cut: Mutex::new(None),
            connections: AtomicUsize::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, state.clone()));
        Relay {
            addr,
            state,
            accept,
        }
    }

    /// New connections go to `upstream` (the replacement operator).
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *lock(&self.state.upstream) = upstream;
    }

    /// While on, every snapshot frame is delivered only in part (its
    /// length prefix and half its body), then both connections close.
    pub fn cut_snapshots(&self, on: bool) {
        self.state.cutting.store(on, Ordering::SeqCst);
    }

    /// How many snapshot frames were cut so far.
    pub fn cuts(&self) -> u64 {
        self.state.cuts.load(Ordering::SeqCst)
    }

    /// The last cut frame's body length and the bytes of it delivered.
    pub fn last_cut(&self) -> Option<(usize, usize)> {
        *lock(&self.state.last_cut)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        state.connections.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(relay(client, state.clone()));
    }
}

/// One connection: to the upstream as it is now; a refused upstream
/// closes the client, as a Service with no ready endpoint would.
async fn relay(client: TcpStream, state: Arc<State>) {
    let upstream = *lock(&state.upstream);
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_rx, client_tx) = client.into_split();
    let (server_rx, server_tx) = server.into_split();
    let up = tokio::spawn(copy(client_rx, server_tx));
    // Frames from the operator decide when the connection ends.
    down(server_rx, client_tx, &state).await;
    up.abort();
}

async fn copy(mut from: OwnedReadHalf, mut to: OwnedWriteHalf) {
    let _ = tokio::io::copy(&mut from, &mut to).await;
    let _ = to.shutdown().await;
}

/// Operator → data plane, one whole frame at a time, cutting snapshot
/// frames while asked to. Returns when either side is done.
async fn down(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, state: &State) {
    loop {
        let mut head = [0u8; 4];
        if from.read_exact(&mut head).await.is_err() {
            break;
        }
        let len = u32::from_be_bytes(head) as usize;
        let mut body = vec![0u8; len];
        if from.read_exact(&mut body).await.is_err() {
            break;
        }
        let cut = state.cutting.load(Ordering::SeqCst) && body.starts_with(SNAPSHOT_TAG);
        let sent = if cut { len / 2 } else { len };
        let written = async {
            to.write_all(&head).await?;
            to.write_all(&body[..sent]).await?;
            to.flush().await
        };
        if written.await.is_err() {
            break;
        }
        if cut {
            *lock(&state.last_cut) = Some((len, sent));
            state.cuts.fetch_add(1, Ordering::SeqCst);
            // Let the partial frame reach the data plane before the close.
            tokio::time::sleep(Duration::from_millis(200)).await;
            break;
        }
    }
    let _ = to.shutdown().await;
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
