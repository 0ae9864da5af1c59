//! Runs the features side by side with the snapshot source (the sync
//! client or the manifests watcher), in one `JoinSet`.
//!
//! Start: every feature's metrics are registered, the listeners they name
//! are bound (a busy port fails start-up before anything serves), and the
//! address file is written. Then one loop feeds each snapshot the runtime
//! swaps in to every feature, each on a blocking thread. When any part
//! fails, or returns while nothing asked it to stop, the process stops with
//! an error naming that part, and the failure is counted. On shutdown every
//! part gets [`DRAIN`] to finish; what is still running then is aborted.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cli::ListenerArgs;
use crate::feature::Feature;
use crate::listeners::{Listener, Listeners, write_addr_file};
use crate::runtime::Runtime;
use crate::{Error, Result};

/// How long all parts together get to finish after shutdown starts: more
/// than the reverse proxy's own grace for open requests.
pub const DRAIN: Duration = Duration::from_secs(15);

type Part = (&'static str, Result<()>);

/// The features and where the listeners' addresses are written.
pub struct Supervisor {
    features: Vec<Arc<dyn Feature>>,
    addr_file: Option<PathBuf>,
    drain: Duration,
}

impl Supervisor {
    pub fn new(features: Vec<Arc<dyn Feature>>, addr_file: Option<PathBuf>) -> Self {
        Supervisor {
            features,
            addr_file,
            drain: DRAIN,
        }
    }

    /// Another bound than [`DRAIN`] on shutdown.
    pub fn with_drain(mut self, drain: Duration) -> Self {
        self.drain = drain;
        self
    }

    /// Binds, then serves until `shutdown` or the first failure. `source`
    /// is the task that feeds `runtime` snapshots.
    pub async fn run(
        self,
        args: &ListenerArgs,
        runtime: Arc<Runtime>,
        shutdown: CancellationToken,
        source: (
            &'static str,
            futures::future::BoxFuture<'static, Result<()>>,
        ),
    ) -> Result<()> {
        for feature in &self.features {
            runtime
                .metrics()
                .register_with(|r| feature.register_metrics(r));
        }
        let mut listeners = Listeners::bind(args, &self.wanted()?)?;
        // Connections finishing after their listener closed still need
        // their threads: these stop when the supervisor returns.
        let _cores = listeners.cores().clone();
        if let Some(path) = &self.addr_file {
            write_addr_file(path, &listeners.addrs()?)?;
        }
        let mut parts: JoinSet<Part> = JoinSet::new();
        for feature in &self.features {
            let own = listeners.split(feature.listeners());
            let serving = feature.clone().serve(own, shutdown.clone());
            let name = feature.name();
            parts.spawn(async move { (name, serving.await) });
        }
        let follow = follow(runtime.clone(), self.features.clone(), shutdown.clone());
        parts.spawn(async move {
            follow.await;
            ("snapshots", Ok(()))
        });
        let (name, fed) = source;
        parts.spawn(async move { (name, fed.await) });
        supervise(parts, &runtime, shutdown, self.drain).await
    }

    /// Every listener some feature serves; one feature each.
    fn wanted(&self) -> Result<Vec<Listener>> {
        let mut wanted: Vec<Listener> = Vec::new();
        for feature in &self.features {
            for &listener in feature.listeners() {
                if wanted.contains(&listener) {
                    return Err(Error::ListenerTaken {
                        listener: listener.name(),
                        feature: feature.name(),
                    });
                }
                wanted.push(listener);
            }
        }
        Ok(wanted)
    }
}

/// Waits for the parts: the first to end before shutdown stops the rest.
async fn supervise(
    mut parts: JoinSet<Part>,
    runtime: &Runtime,
    shutdown: CancellationToken,
    drain: Duration,
) -> Result<()> {
    let mut failed: Option<Error> = None;
    loop {
        let next = if shutdown.is_cancelled() {
            match tokio::time::timeout(drain, parts.join_next()).await {
                Ok(next) => next,
                Err(_) => {
                    tracing::warn!(
                        left = parts.len(),
                        "parts still running {drain:?} after shutdown: aborting them"
                    );
                    parts.abort_all();
                    break;
                }
            }
        } else {
            parts.join_next().await
        };
        let Some(joined) = next else { break };
        let (name, result) = match joined {
            Ok(part) => part,
            Err(e) => ("a task", Err(Error::Task(e))),
        };
        let error = match result {
            Ok(()) if shutdown.is_cancelled() => continue,
            Ok(()) => Error::Stopped(name),
            Err(e) => e,
        };
        runtime.metrics().failure(name, error.metric_label());
        if shutdown.is_cancelled() {
            tracing::warn!(part = name, error = %error, "failed while shutting down");
            continue;
        }
        tracing::error!(part = name, error = %error, "stopping: a part of the data plane failed");
        failed = Some(Error::Part {
            part: name,
            source: Box::new(error),
        });
        shutdown.cancel();
    }
    failed.map_or(Ok(()), Err)
}

/// Hands every snapshot the runtime swaps in to every feature, each on a
/// blocking thread, until shutdown. A feature that panics while applying
/// keeps what it had; the others still get the snapshot.
async fn follow(
    runtime: Arc<Runtime>,
    features: Vec<Arc<dyn Feature>>,
    shutdown: CancellationToken,
) {
    let mut changes = runtime.subscribe();
    loop {
        let applied = changes.borrow_and_update().clone();
        if let Some(applied) = applied {
            let applying = features.iter().map(|feature| {
                let (feature, snapshot) = (feature.clone(), applied.snapshot.clone());
                let name = feature.name();
                let task = tokio::task::spawn_blocking(move || {
                    let started = std::time::Instant::now();
                    feature.apply(&snapshot);
                    let apply_ms = started.elapsed().as_secs_f64() * 1000.0;
                    tracing::debug!(feature = name, apply_ms, "feature applied the snapshot");
                });
                async move { (name, task.await) }
            });
            for (name, done) in futures::future::join_all(applying).await {
                if let Err(e) = done {
                    runtime.metrics().failure(name, "apply_panicked");
                    tracing::error!(feature = name, error = %e, "applying a snapshot failed");
                }
            }
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            () = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use clap::Parser;
    use postern_snapshot::Snapshot;

    use super::*;
    use crate::cli::{Cli, Command, PORT_0_FLAGS};
    use crate::runtime::Source;

    /// What a test feature does once serving.
    #[derive(Clone, Copy)]
    enum Behaviour {
        /// Serves until shutdown.
        Serve,
        /// Fails at once.
        Fail,
        /// Returns at once without being asked.
        Quit,
        /// Ignores shutdown.
        Hang,
    }

    struct Probe {
        name: &'static str,
        listeners: &'static [Listener],
        behaviour: Behaviour,
        applied: Mutex<Vec<String>>,
        stopped: Mutex<bool>,
    }

    impl Probe {
        fn new(
            name: &'static str,
            listeners: &'static [Listener],
            behaviour: Behaviour,
        ) -> Arc<Self> {
            Arc::new(Probe {
                name,
                listeners,
                behaviour,
                applied: Mutex::new(Vec::new()),
                stopped: Mutex::new(false),
            })
        }
    }

    impl Feature for Probe {
        fn name(&self) -> &'static str {
            self.name
        }

        fn listeners(&self) -> &'static [Listener] {
            self.listeners
        }

        fn apply(&self, snapshot: &Snapshot) {
            if let Ok(mut seen) = self.applied.lock() {
                seen.push(snapshot.version.clone());
            }
        }

        fn serve(
            self: Arc<Self>,
            mut listeners: Listeners,
            shutdown: CancellationToken,
        ) -> futures::future::BoxFuture<'static, Result<()>> {
            Box::pin(async move {
                for &l in self.listeners {
                    listeners.take(l)?;
                }
                match self.behaviour {
                    Behaviour::Fail => return Err(Error::Admin(std::io::Error::other("boom"))),
                    Behaviour::Quit => return Ok(()),
                    Behaviour::Hang => std::future::pending::<()>().await,
                    Behaviour::Serve => shutdown.cancelled().await,
                }
                if let Ok(mut stopped) = self.stopped.lock() {
                    *stopped = true;
                }
                Ok(())
            })
        }
    }

    fn args() -> ListenerArgs {
        let base = ["postern", "standalone", "--manifests=m"];
        let cli = Cli::try_parse_from(base.into_iter().chain(PORT_0_FLAGS)).expect("parses");
        match cli.command {
            Command::Standalone(a) => a.listeners,
            _ => panic!("standalone expected"),
        }
    }

    fn idle_source(
        shutdown: &CancellationToken,
    ) -> (
        &'static str,
        futures::future::BoxFuture<'static, Result<()>>,
    ) {
        let shutdown = shutdown.clone();
        (
            "source",
            Box::pin(async move {
                shutdown.cancelled().await;
                Ok(())
            }),
        )
    }

    async fn run(
        features: Vec<Arc<dyn Feature>>,
        shutdown: CancellationToken,
    ) -> (Result<()>, Arc<Runtime>) {
        let runtime = Runtime::new(Source::Manifests);
        let source = idle_source(&shutdown);
        let result = Supervisor::new(features, None)
            .with_drain(Duration::from_millis(200))
            .run(&args(), runtime.clone(), shutdown, source)
            .await;
        (result, runtime)
    }

    #[tokio::test]
    async fn a_failing_part_stops_the_others_and_names_itself() {
        let good = Probe::new("good", &[Listener::Http], Behaviour::Serve);
        let bad = Probe::new("bad", &[Listener::Proxy], Behaviour::Fail);
        let (result, runtime) = run(vec![good.clone(), bad], CancellationToken::new()).await;
        let err = result.expect_err("the failure stops the process");
        assert!(err.to_string().starts_with("bad failed: "), "{err}");
        assert_eq!(err.metric_label(), "admin_io");
        assert!(
            *good.stopped.lock().expect("lock"),
            "the other part was drained"
        );
        let metrics = runtime.metrics().encode();
        assert!(
            metrics.contains(r#"postern_failures_total{part="bad",kind="admin_io"} 1"#),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn a_part_that_returns_unasked_is_a_failure() {
        let quitter = Probe::new("quitter", &[], Behaviour::Quit);
        let (result, _) = run(vec![quitter], CancellationToken::new()).await;
        let err = result.expect_err("stopping unasked is an error");
        assert_eq!(
            err.to_string(),
            "quitter failed: quitter stopped although nothing asked it to"
        );
    }

    #[tokio::test]
    async fn shutdown_drains_within_the_bound_and_aborts_the_rest() {
        let good = Probe::new("good", &[Listener::Admin], Behaviour::Serve);
        let stuck = Probe::new("stuck", &[], Behaviour::Hang);
        let shutdown = CancellationToken::new();
        let stopper = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            stopper.cancel();
        });
        let (result, _) = run(vec![good.clone(), stuck], shutdown).await;
        result.expect("a clean shutdown, even with a part aborted");
        assert!(*good.stopped.lock().expect("lock"));
    }

    #[tokio::test]
    async fn every_feature_gets_every_snapshot() {
        let a = Probe::new("a", &[], Behaviour::Serve);
        let b = Probe::new("b", &[Listener::Socks], Behaviour::Serve);
        let runtime = Runtime::new(Source::Manifests);
        let shutdown = CancellationToken::new();
        let supervisor = Supervisor::new(vec![a.clone(), b.clone()], None);
        let running = {
            let (runtime, shutdown) = (runtime.clone(), shutdown.clone());
            tokio::spawn(async move {
                let source = idle_source(&shutdown);
                supervisor.run(&args(), runtime, shutdown, source).await
            })
        };
        let snapshot = Snapshot::default().seal();
        let version = snapshot.version.clone();
        runtime.apply(snapshot).expect("valid");
        for _ in 0..200 {
            let seen = |p: &Probe| p.applied.lock().expect("lock").contains(&version);
            if seen(&a) && seen(&b) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(a.applied.lock().expect("lock").contains(&version));
        assert!(b.applied.lock().expect("lock").contains(&version));
        shutdown.cancel();
        running.await.expect("joins").expect("clean shutdown");
    }

    #[test]
    fn a_listener_belongs_to_one_feature() {
        let one = Probe::new("one", &[Listener::Http], Behaviour::Serve);
        let two = Probe::new("two", &[Listener::Http], Behaviour::Serve);
        let err = Supervisor::new(vec![one, two], None)
            .wanted()
            .expect_err("claimed twice");
        assert_eq!(
            err.to_string(),
            "the http listener is claimed twice (again by two)"
        );
    }
}
