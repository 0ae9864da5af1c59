//! The signal from the watches to the rebuild loop: "compilation input
//! changed", and whether that change came after a quiet spell.
//!
//! The gap is measured between changes as the watches see them, not from
//! the last compile, so a lone edit that arrives while a compile of the
//! previous one is still running still counts as isolated, while one of a
//! burst never does.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Shared by the watch tasks (which [`note`](Changes::note)) and the
/// rebuild loop (which waits on it).
#[derive(Debug, Default)]
pub struct Changes {
    notify: Notify,
    /// When the latest change was seen, and how long before it the one
    /// preceding it was (`None` for the first change).
    latest: Mutex<Option<(Instant, Option<Duration>)>>,
}

impl Changes {
    /// Records one change and wakes the rebuild loop.
    pub fn note(&self) {
        let now = Instant::now();
        {
            let mut latest = self.lock();
            let gap = latest.map(|(at, _)| now.duration_since(at));
            *latest = Some((now, gap));
        }
        self.notify.notify_one();
    }

    /// Resolves at the next change (at once if one came since the last wait).
    pub async fn notified(&self) {
        self.notify.notified().await;
    }

    /// Whether the latest change followed at least `quiet` without any:
    /// false for the very first change (the initial lists are a burst).
    pub fn isolated(&self, quiet: Duration) -> bool {
        self.lock()
            .is_some_and(|(_, gap)| gap.is_some_and(|gap| gap >= quiet))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Instant, Option<Duration>)>> {
        // Plain data, never held across an await: a poisoned lock is still usable.
        self.latest.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_change_after_quiet_is_isolated() {
        let changes = Changes::default();
        let quiet = Duration::from_millis(20);
        assert!(!changes.isolated(quiet), "nothing yet");
        changes.note();
        assert!(!changes.isolated(quiet), "the first change starts a burst");
        std::thread::sleep(quiet);
        changes.note();
        assert!(changes.isolated(quiet));
        changes.note();
        assert!(!changes.isolated(quiet), "right after another");
    }
}
