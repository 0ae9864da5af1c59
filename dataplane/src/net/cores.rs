//! Serving threads: one current-thread runtime per CPU, each accepting
//! from the same listening socket, and each connection served on one of
//! them to its end.
//!
//! On the process's multi-threaded runtime a connection's task moves
//! between workers: a request wakes it on whichever worker is free, the
//! backend's answer wakes it on another, and every such hand-over is a
//! futex wake-up, a context switch and the connection's state pulled into
//! another core's cache. Measured on this project's 2-core machine under
//! `wrk -c64` through the reverse proxy: 29 µs of CPU per request with two
//! workers against 22 µs with one. A connection that stays on one thread
//! pays none of that. Every thread accepts from the listening socket and
//! hands what it accepts to the thread serving the fewest connections
//! (itself when tied): the kernel wakes the waiting pollers in a fixed
//! order, so left to itself one thread would take most connections of a
//! burst (measured: 30% / 70% of the CPU between two threads).
//!
//! Everything else (snapshots, admin, tunnels' agent sessions, ACME) stays
//! on the main runtime: tokio's channels, locks and timers work across
//! runtimes, so a connection served here still reaches them.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::FutureExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

thread_local! {
    /// Which serving thread this is: 1.., or 0 on any other thread.
    static HOME: Cell<usize> = const { Cell::new(0) };
}

/// The serving threads. Dropping the last handle stops them; their
/// connections are dropped with their runtimes.
#[derive(Debug)]
pub struct Cores {
    handles: Vec<Handle>,
    /// Open connections per thread, `handles`' order. Apart from `Cores`
    /// so that a connection holds only this, not the threads.
    load: Arc<[AtomicUsize]>,
    stop: CancellationToken,
}

impl Cores {
    /// Starts `threads` serving threads; 0 means one per CPU the process
    /// may use (cgroup quota and affinity included).
    pub fn start(threads: usize) -> io::Result<Arc<Cores>> {
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
            n => n,
        };
        let stop = CancellationToken::new();
        let mut handles = Vec::with_capacity(threads);
        for index in 1..=threads {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("postern-serve-{index}"))
                .spawn(move || {
                    HOME.with(|home| home.set(index));
                    runtime.block_on(stop.cancelled());
                })?;
        }
        let load = (0..threads).map(|_| AtomicUsize::new(0)).collect();
        Ok(Arc::new(Cores {
            handles,
            load,
            stop,
        }))
    }

    /// How many serving threads there are.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Whether there are none (never, once started).
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// The serving thread the caller runs on (1..), or 0 when it runs
    /// elsewhere. Lets per-connection state that is cheapest used where it
    /// was made (pooled backend connections) stay with its thread.
    pub fn home() -> usize {
        HOME.with(Cell::get)
    }

    /// Serves `stream`, accepted on the caller's serving thread, on the
    /// thread with the fewest open connections: `serve` gets it registered
    /// with that thread's poller.
    pub fn serve<F, Fut>(&self, stream: TcpStream, serve: F)
    where
        F: FnOnce(TcpStream) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let target = self.least_loaded(Cores::home());
        self.serve_on(target, stream, serve);
    }

    /// Serves `stream` on serving thread `target` (1..), where state it
    /// works with lives (a tunnel's agent connection); on the thread with
    /// the fewest connections when `target` is no serving thread.
    pub fn serve_on<F, Fut>(&self, target: usize, stream: TcpStream, serve: F)
    where
        F: FnOnce(TcpStream) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let here = Cores::home();
        let target = if (1..=self.handles.len()).contains(&target) {
            target
        } else {
            self.least_loaded(here)
        };
        let load = Load::count(self.load.clone(), target);
        // The connection's future, made here and only counted on the way:
        // an `async` wrapper would keep room for `serve`'s captures beside
        // it for as long as the connection lives.
        let counted = |connection: Fut| connection.map(move |()| drop(load));
        if target == here {
            tokio::spawn(counted(serve(stream)));
            return;
        }
        let handle = &self.handles[target - 1];
        // Off this thread's poller onto the target's (`epoll_ctl` twice).
        let moved = stream.into_std().and_then(|stream| {
            let _target = handle.enter();
            TcpStream::from_std(stream)
        });
        match moved {
            Ok(stream) => {
                handle.spawn(counted(serve(stream)));
            }
            Err(e) => {
                tracing::debug!(error = %e, "dropping a connection that could not change threads");
            }
        }
    }

    /// The thread (1..) with the fewest open connections; `here` on a tie.
    fn least_loaded(&self, here: usize) -> usize {
        let threads = self.load.len();
        // Counted from `here`, so the first of equals is `here`.
        let first = here.checked_sub(1).filter(|&i| i < threads).unwrap_or(0);
        let fewest = (0..threads)
            .map(|k| (first + k) % threads)
            .min_by_key(|&i| self.load[i].load(Ordering::Relaxed))
            .unwrap_or(0);
        fewest + 1
    }

    /// Runs `accept` on every serving thread, each with its own handle on
    /// `listener`'s socket and on these threads (to hand what it accepts to
    /// [`Cores::serve`]), until all of them return.
    pub async fn accept_on_each<F, Fut>(
        self: &Arc<Self>,
        listener: TcpListener,
        accept: F,
    ) -> io::Result<()>
    where
        F: Fn(TcpListener, Arc<Cores>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        // Off the main runtime's poller: each serving thread registers its
        // own handle with its own.
        let socket = listener.into_std()?;
        let accept = Arc::new(accept);
        let mut loops = Vec::with_capacity(self.handles.len());
        for handle in &self.handles {
            let socket = socket.try_clone()?;
            let (accept, cores) = (accept.clone(), self.clone());
            loops.push(handle.spawn(async move {
                match TcpListener::from_std(socket) {
                    Ok(listener) => {
                        accept(listener, cores).await;
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }));
        }
        let mut first_error = None;
        for looped in loops {
            let result = looped.await.unwrap_or_else(|e| Err(io::Error::other(e)));
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// One open connection, counted against its thread while it lives.
struct Load {
    load: Arc<[AtomicUsize]>,
    index: usize,
}

impl Load {
    /// Counts one more on `thread` (1..), as [`Cores::least_loaded`] gives.
    fn count(load: Arc<[AtomicUsize]>, thread: usize) -> Load {
        let index = thread - 1;
        load[index].fetch_add(1, Ordering::Relaxed);
        Load { load, index }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.load[self.index].fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Cores {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Accept loops on two threads; each connection answers with the
    /// thread serving it and stays open.
    async fn serve_homes(cores: &Arc<Cores>, stop: CancellationToken) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let cores = cores.clone();
        tokio::spawn(async move {
            cores
                .accept_on_each(listener, move |listener, cores| {
                    let stop = stop.clone();
                    async move {
                        loop {
                            let (stream, _) = tokio::select! {
                                accepted = listener.accept() => accepted.expect("accept"),
                                () = stop.cancelled() => return,
                            };
                            cores.serve(stream, |mut stream| async move {
                                let mut byte = [0u8; 1];
                                let _ = stream.read_exact(&mut byte).await;
                                let home = Cores::home() as u8;
                                let _ = stream.write_all(&[home]).await;
                                // Held open, so it counts against its thread.
                                let _ = stream.read_exact(&mut byte).await;
                                assert_eq!(Cores::home() as u8, home, "moved threads");
                            });
                        }
                    }
                })
                .await
                .expect("accept loops");
        });
        addr
    }

    #[tokio::test]
    async fn connections_spread_evenly_over_the_threads() {
        let cores = Cores::start(2).expect("start");
        assert_eq!(cores.len(), 2);
        let stop = CancellationToken::new();
        let addr = serve_homes(&cores, stop.clone()).await;
        let mut open = Vec::new();
        let mut per_thread = [0usize; 3];
        for _ in 0..10 {
            let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
            client.write_all(b"x").await.expect("write");
            let mut home = [0u8; 1];
            client.read_exact(&mut home).await.expect("read");
            per_thread[usize::from(home[0])] += 1;
            open.push(client);
        }
        assert_eq!(per_thread, [0, 5, 5], "served on: {per_thread:?}");
        assert_eq!(Cores::home(), 0, "the test's own thread serves nothing");
        stop.cancel();
    }
}
