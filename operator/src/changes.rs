//! The signal from the watches to the rebuild loop: "compilation input
//! changed", and how many changes there have been, so the loop can tell a
//! lone change (compiled at once) from a burst (settled first); see
//! `publish::rebuild_loop`.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

/// Shared by the watch tasks (which [`note`](Changes::note)) and the
/// rebuild loop (which waits on it).
#[derive(Debug, Default)]
pub struct Changes {
    notify: Notify,
    count: AtomicU64,
}

impl Changes {
    /// Records one change and wakes the rebuild loop.
    pub fn note(&self) {
        // Counted before the wake-up, so a woken loop always sees it.
        self.count.fetch_add(1, Ordering::SeqCst);
        self.notify.notify_one();
    }

    /// Resolves at the next change (at once if one came since the last wait).
    pub async fn notified(&self) {
        self.notify.notified().await;
    }

    /// How many changes have been noted so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }
}
