//! When a client connection is idle: no request in flight, from the moment
//! the last response body ended (or the connection opened) to the next
//! request head. hyper bounds a request head's arrival on HTTP/1.1 but not
//! the bytes before hyper knows the protocol, nor an HTTP/2 connection with
//! no streams; this bounds both, the same way.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// The requests in flight on one connection.
#[derive(Default)]
pub struct Activity {
    in_flight: AtomicUsize,
    /// Whether a request has ever started here.
    started: AtomicBool,
    changed: Notify,
}

/// One request in flight, until its response body ends or is dropped.
pub struct Busy(Arc<Activity>);

impl Activity {
    pub fn begin(self: &Arc<Self>) -> Busy {
        self.started.store(true, Ordering::Release);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_waiters();
        Busy(self.clone())
    }

    /// Whether a request has ever started.
    pub fn started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    /// Resolves once nothing was in flight for `first` (before any request
    /// started) or `between` (after one did), without interruption.
    pub async fn idle(&self, first: Duration, between: Duration) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before reading the count, so no change is missed.
            changed.as_mut().enable();
            if self.in_flight.load(Ordering::Acquire) == 0 {
                let limit = if self.started.load(Ordering::Acquire) {
                    between
                } else {
                    first
                };
                tokio::select! {
                    () = tokio::time::sleep(limit) => return,
                    () = changed => {}
                }
            } else {
                changed.await;
            }
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: Duration = Duration::from_secs(5);
    const BETWEEN: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_never_asks_is_idle_after_the_first_limit() {
        let activity = Arc::new(Activity::default());
        let started = tokio::time::Instant::now();
        activity.idle(FIRST, BETWEEN).await;
        assert_eq!(started.elapsed(), FIRST);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_is_never_idle_and_the_clock_restarts_after_it() {
        let activity = Arc::new(Activity::default());
        let busy = activity.begin();
        let watcher = {
            let activity = activity.clone();
            tokio::spawn(async move {
                activity.idle(FIRST, BETWEEN).await;
                tokio::time::Instant::now()
            })
        };
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(!watcher.is_finished(), "idle while a request was in flight");
        let ended = tokio::time::Instant::now();
        drop(busy);
        let idle_at = watcher.await.expect("watcher");
        assert_eq!(idle_at - ended, BETWEEN);
    }
}
