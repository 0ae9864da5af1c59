//! Waiting for a condition with a deadline, never a fixed sleep. Tests
//! assert the eventual state within a generous bound: a loaded two-core
//! machine must not make them flake.

use std::fmt::Debug;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

/// The default bound of a wait: long enough for a loaded CI machine.
pub const PATIENCE: Duration = Duration::from_secs(30);

const POLL: Duration = Duration::from_millis(50);

/// Calls `check` every 50 ms until it returns `Ok`, and returns that value.
/// `Err` carries what was seen instead; after `limit` the test panics with
/// `what` and the last thing seen.
pub async fn eventually<T, E, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    E: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(seen) if tokio::time::Instant::now() >= deadline => {
                panic!("timed out after {limit:?} waiting for {what}; last seen: {seen:?}")
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// [`eventually`] for a check that says only yes (`Some`) or not yet.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let check = || {
        let fut = check();
        async move { fut.await.ok_or("not yet") }
    };
    eventually(what, limit, check).await
}

/// Waits until `addr` accepts TCP connections.
pub async fn wait_port(addr: SocketAddr) {
    let what = format!("something to listen on {addr}");
    eventually(&what, PATIENCE, || async {
        tokio::net::TcpStream::connect(addr).await.map(drop)
    })
    .await;
}
