//! Waiting for a condition with a deadline, never a fixed sleep.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

/// Calls `check` every 200 ms until it returns `Ok`, and returns that value.
/// `Err` carries what was seen instead; after `timeout` the test panics
/// with `what` and the last thing seen.
pub async fn eventually<T, E, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    E: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(seen) if tokio::time::Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {seen:?}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
