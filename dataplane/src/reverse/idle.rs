//! When a client connection is idle: no request in flight, from the moment
//! the last response body ended (or the connection opened) to the next
//! request head. hyper bounds a request head's arrival on HTTP/1.1 but not
//! the bytes before hyper knows the protocol, nor an HTTP/2 connection with
//! no streams; this bounds both, the same way.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// The requests in flight on one connection.
///
/// Requests only count themselves in and out; nothing is woken per request.
/// The watcher ([`Activity::idle`]) sleeps to the earliest moment the
/// connection could be idle and looks again then: a request costs two
/// atomic updates and a clock read, where waking the watcher and arming a
/// fresh timer per request showed in the request path's profile.
pub struct Activity {
    in_flight: AtomicUsize,
    /// Whether a request has ever started here.
    started: AtomicBool,
    /// When the last request ended, in nanoseconds after `opened`.
    quiet_since: AtomicU64,
    opened: Instant,
}

/// One request in flight, until its response body ends or is dropped.
pub struct Busy(Arc<Activity>);

impl Activity {
    /// A connection opened now, with nothing in flight yet.
    pub fn new() -> Activity {
        Activity {
            in_flight: AtomicUsize::new(0),
            started: AtomicBool::new(false),
            quiet_since: AtomicU64::new(0),
            opened: Instant::now(),
        }
    }

    pub fn begin(self: &Arc<Self>) -> Busy {
        // Counted before it is marked started: a watcher that sees it
        // started and nothing in flight sees a request that ended.
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.started.store(true, Ordering::Release);
        Busy(self.clone())
    }

    /// Whether a request has ever started.
    pub fn started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    /// Resolves once nothing was in flight for `first` (before any request
    /// started) or `between` (after one did), without interruption.
    pub async fn idle(&self, first: Duration, between: Duration) {
        // Nothing wakes the watcher when a request starts or ends, so it
        // wakes when the connection could first be idle: a request could
        // start and end at once, making it idle `between` later.
        let sleep = tokio::time::sleep_until(self.opened + first.min(between));
        tokio::pin!(sleep);
        loop {
            sleep.as_mut().await;
            let now = Instant::now();
            let next = if self.in_flight.load(Ordering::Acquire) > 0 {
                now + between
            } else if self.started() {
                let since = self.quiet_since.load(Ordering::Acquire);
                let due = self.opened + Duration::from_nanos(since) + between;
                if now >= due {
                    return;
                }
                due
            } else {
                let due = self.opened + first;
                if now >= due {
                    return;
                }
                due.min(now + between)
            };
            sleep.as_mut().reset(next);
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let activity = &self.0;
        // Stamped before the count falls, so a watcher that sees nothing
        // in flight also sees when it ended.
        let since = u64::try_from(activity.opened.elapsed().as_nanos()).unwrap_or(u64::MAX);
        activity.quiet_since.fetch_max(since, Ordering::AcqRel);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: Duration = Duration::from_secs(5);
    const BETWEEN: Duration = Duration::from_secs(60);

    /// A task waiting for `activity` to be idle; it answers when it was.
    fn watch(
        activity: &Arc<Activity>,
        first: Duration,
        between: Duration,
    ) -> tokio::task::JoinHandle<tokio::time::Instant> {
        let activity = activity.clone();
        tokio::spawn(async move {
            activity.idle(first, between).await;
            tokio::time::Instant::now()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_never_asks_is_idle_after_the_first_limit() {
        let activity = Arc::new(Activity::new());
        let started = tokio::time::Instant::now();
        activity.idle(FIRST, BETWEEN).await;
        assert_eq!(started.elapsed(), FIRST);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_is_never_idle_and_the_clock_restarts_after_it() {
        let activity = Arc::new(Activity::new());
        let busy = activity.begin();
        let watcher = watch(&activity, FIRST, BETWEEN);
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(!watcher.is_finished(), "idle while a request was in flight");
        let ended = tokio::time::Instant::now();
        drop(busy);
        let idle_at = watcher.await.expect("watcher");
        assert_eq!(idle_at - ended, BETWEEN);
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_limit_between_requests_applies_even_when_the_first_is_long() {
        let first = Duration::from_secs(30);
        let between = Duration::from_millis(50);
        let activity = Arc::new(Activity::new());
        let watcher = watch(&activity, first, between);
        tokio::time::sleep(Duration::from_millis(120)).await;
        let busy = activity.begin();
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(busy);
        let ended = tokio::time::Instant::now();
        let idle_at = watcher.await.expect("watcher");
        assert!(idle_at >= ended + between, "idle before the limit");
        // Looked at least every `between`: late by less than one look.
        assert!(
            idle_at < ended + 2 * between,
            "idle only {:?} after the request",
            idle_at - ended
        );
    }

    #[tokio::test(start_paused = true)]
    async fn quiet_spells_shorter_than_the_limit_never_count_as_idle() {
        let activity = Arc::new(Activity::new());
        drop(activity.begin());
        let watcher = watch(&activity, FIRST, BETWEEN);
        let mut last_end = tokio::time::Instant::now();
        // Requests 59 s apart for ten minutes: never a whole minute quiet.
        for _ in 0..10 {
            tokio::time::sleep(BETWEEN - Duration::from_secs(1)).await;
            assert!(
                !watcher.is_finished(),
                "idle after a quiet spell under the limit"
            );
            let busy = activity.begin();
            tokio::time::sleep(Duration::from_millis(10)).await;
            drop(busy);
            last_end = tokio::time::Instant::now();
        }
        let idle_at = watcher.await.expect("watcher");
        assert_eq!(idle_at - last_end, BETWEEN);
    }
}
