//! The signal from the watches to the rebuild loop: "compilation input
//! changed". The rebuild loop settles every change for `--debounce-ms`
//! before compiling (see `publish::rebuild_loop` for why even a lone one).

use tokio::sync::Notify;

/// Shared by the watch tasks (which [`note`](Changes::note)) and the
/// rebuild loop (which waits on it).
#[derive(Debug, Default)]
pub struct Changes {
    notify: Notify,
}

impl Changes {
    /// Records one change and wakes the rebuild loop.
    pub fn note(&self) {
        self.notify.notify_one();
    }

    /// Resolves at the next change (at once if one came since the last wait).
    pub async fn notified(&self) {
        self.notify.notified().await;
    }
}
