//! The one accept loop step every listener uses: admission (a [`Permit`]
//! per connection, refused ones closed at once) and, when `accept(2)`
//! fails (out of descriptors, most often), an exponential pause instead of
//! a spin, with one log line per run of failures rather than one per try.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::admission::{Admission, Permit};

const FIRST_PAUSE: Duration = Duration::from_millis(5);
const LONGEST_PAUSE: Duration = Duration::from_secs(1);

/// A connection that was accepted and admitted.
pub struct Accepted {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    /// Held for as long as the connection is open.
    pub permit: Permit,
}

/// A listener with its admission.
pub struct Acceptor {
    listener: TcpListener,
    admission: Admission,
    /// Whether a peer's address counts against the per-client cap; false
    /// for peers trusted to send a PROXY protocol header.
    per_client: Box<dyn Fn(SocketAddr) -> bool + Send + Sync>,
    pause: Duration,
    failures: u64,
}

impl Acceptor {
    pub fn new(listener: TcpListener, admission: Admission) -> Acceptor {
        Acceptor {
            listener,
            admission,
            per_client: Box::new(|_| true),
            pause: FIRST_PAUSE,
            failures: 0,
        }
    }

    /// Exempts the peers `exempt` returns true for from the per-client cap.
    pub fn exempting(
        mut self,
        exempt: impl Fn(SocketAddr) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.per_client = Box::new(move |peer| !exempt(peer));
        self
    }

    /// The next admitted connection, or `None` once `shutdown` is cancelled.
    pub async fn next(&mut self, shutdown: &CancellationToken) -> Option<Accepted> {
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                () = shutdown.cancelled() => return None,
            };
            match accepted {
                Ok((stream, peer)) => {
                    self.recovered();
                    let count = (self.per_client)(peer);
                    match self.admission.admit(peer.ip(), count) {
                        Ok(permit) => {
                            return Some(Accepted {
                                stream,
                                peer,
                                permit,
                            });
                        }
                        // Closing at once is the refusal: dropping the stream.
                        Err(_) => drop(stream),
                    }
                }
                Err(e) => {
                    self.admission.accept_failed();
                    if self.failures == 0 {
                        tracing::warn!(
                            listener = self.admission.name(),
                            error = %e,
                            "accept failed; pausing this listener and retrying"
                        );
                    }
                    self.failures += 1;
                    tokio::select! {
                        () = tokio::time::sleep(self.pause) => {}
                        () = shutdown.cancelled() => return None,
                    }
                    self.pause = (self.pause * 2).min(LONGEST_PAUSE);
                }
            }
        }
    }

    fn recovered(&mut self) {
        if self.failures > 0 {
            tracing::info!(
                listener = self.admission.name(),
                failed = self.failures,
                "accepting again"
            );
            self.failures = 0;
            self.pause = FIRST_PAUSE;
        }
    }
}
