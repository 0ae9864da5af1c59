//! Compile and publish: turns the index into the current [`Published`]
//! snapshot on a `watch` channel that the push server and status writer read.
//!
//! Compilation runs on the blocking pool; nothing here waits on the API
//! server or on data planes, so a slow status writer or a stuck data plane
//! cannot hold back a new snapshot.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use postern_api::{Kind, ObjectKey};
use postern_compile::{Inputs, Verdict};
use postern_snapshot::Summary;
use postern_snapshot::sync::snapshot_frame;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::Result;
use crate::changes::Changes;
use crate::fleet::Coverage;
use crate::index::Index;
use crate::metrics::Metrics;

/// One compiled snapshot, ready to send, with the verdicts it came with.
#[derive(Debug)]
pub struct Published {
    /// Counts publications (not versions): a new verdict with an unchanged
    /// snapshot is still a new publication.
    pub seq: u64,
    pub version: String,
    pub summary: Summary,
    /// The `ToDataplane::Snapshot` message, encoded once for every connection.
    pub frame: Bytes,
    /// Generation of every object in the snapshot and its challenges: what
    /// an ack of it proves, shared with the fleet.
    pub coverage: Arc<Coverage>,
    /// One verdict per object of the five kinds.
    pub verdicts: Vec<Verdict>,
    /// The ACME certificates the accepted objects need.
    pub acme: Vec<postern_compile::AcmeRequest>,
}

impl Published {
    /// Whether this snapshot carries the object at this generation: an ack
    /// of it means that generation is programmed.
    pub fn contains(&self, kind: Kind, key: &ObjectKey, generation: i64) -> bool {
        self.coverage.contains(kind, key, generation)
    }

    /// Compiles and encodes; CPU-bound, so callers run it off the async threads.
    pub fn build(seq: u64, inputs: &Inputs) -> Result<Published> {
        let started = Instant::now();
        let output = postern_compile::compile(inputs);
        let compiled = started.elapsed();
        let snapshot = output.snapshot;
        let frame = Bytes::from(snapshot_frame(&snapshot, &output.json)?);
        let encoded = started.elapsed();
        let published = Published {
            seq,
            version: snapshot.version.clone(),
            summary: snapshot.summary(),
            frame,
            coverage: Arc::new(Coverage::of(&snapshot)),
            verdicts: output.verdicts,
            acme: output.acme,
        };
        tracing::debug!(
            compile_ms = ms(compiled),
            encode_ms = ms(encoded - compiled),
            rest_ms = ms(started.elapsed() - encoded),
            bytes = published.frame.len(),
            "built snapshot"
        );
        Ok(published)
    }
}

/// The receiving end every consumer clones: `None` until the first compile.
pub type Latest = watch::Receiver<Option<Arc<Published>>>;

/// Waits for index changes, compiles and publishes. Runs until `shutdown`.
///
/// A lone change is compiled at once and published unless the result
/// refuses an object that the published state does not refuse (the same
/// way). Objects written together (a Secret and the object naming it)
/// arrive on separate watches in either order, and the first alone looks
/// exactly like that: an object refused for a missing Secret. Such a result
/// is held, never published (so no status or Event says it), and the
/// change settles for `debounce` and is compiled again; what comes out
/// then is published, refusals and all. A burst (more than one change
/// since the last compile read the index) settles before compiling, so it
/// costs one extra compile, not one per object.
pub async fn rebuild_loop(
    index: Arc<Mutex<Index>>,
    changed: Arc<Changes>,
    debounce: Duration,
    tx: watch::Sender<Option<Arc<Published>>>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut seq = 0;
    let mut compiled_changes = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = changed.notified() => {}
        }
        let burst = changed.count() > compiled_changes + 1;
        let mut settled = Duration::ZERO;
        if burst {
            settled += settle(&changed, debounce).await;
        }
        seq += 1;
        let Some(mut compiled) = compile_index(&index, &changed, seq, &metrics).await else {
            continue;
        };
        let held = !burst && refuses_anew(tx.borrow().as_deref(), &compiled.published);
        if held {
            tracing::debug!(seq, "a new refusal: settling before publishing");
            settled += settle(&changed, debounce).await;
            if changed.count() != compiled.changes {
                seq += 1;
                match compile_index(&index, &changed, seq, &metrics).await {
                    Some(again) => compiled = again,
                    None => continue,
                }
            }
        }
        compiled_changes = compiled.changes;
        tracing::debug!(
            seq,
            held,
            settle_ms = ms(settled),
            inputs_ms = compiled.inputs_ms,
            build_ms = compiled.build_ms,
            "rebuilt"
        );
        offer(&tx, compiled.published, &metrics);
    }
}

/// One compile of the index, with the number of changes it reflects.
struct Compiled {
    published: Published,
    changes: u64,
    inputs_ms: f64,
    build_ms: f64,
}

/// Compiles the index as it is now, off the async threads; `None` before
/// every kind is listed (compiling then would refuse objects whose Secrets
/// are merely not seen yet) or when the build failed (logged).
async fn compile_index(
    index: &Mutex<Index>,
    changed: &Changes,
    seq: u64,
    metrics: &Metrics,
) -> Option<Compiled> {
    let copying = Instant::now();
    let (inputs, changes) = {
        let index = lock(index);
        if !index.synced() {
            return None;
        }
        (index.inputs(), changed.count())
    };
    let started = Instant::now();
    let built = tokio::task::spawn_blocking(move || Published::build(seq, &inputs)).await;
    metrics
        .compile_seconds
        .observe(started.elapsed().as_secs_f64());
    match built {
        Ok(Ok(published)) => Some(Compiled {
            published,
            changes,
            inputs_ms: ms(started - copying),
            build_ms: ms(started.elapsed()),
        }),
        Ok(Err(error)) => {
            tracing::error!(%error, "encoding the snapshot failed");
            None
        }
        Err(error) => {
            tracing::error!(%error, "compilation panicked");
            None
        }
    }
}

/// Whether `new` refuses an object that `current` (the published state,
/// `None` before the first) does not refuse for the same reason.
fn refuses_anew(current: Option<&Published>, new: &Published) -> bool {
    new.verdicts.iter().filter(|v| !v.accepted()).any(|v| {
        // Verdicts are sorted by kind and key (compile's output contract).
        let before = current.and_then(|c| {
            c.verdicts
                .binary_search_by(|o| (o.kind, &o.key).cmp(&(v.kind, &v.key)))
                .ok()
                .map(|i| &c.verdicts[i])
        });
        !before.is_some_and(|b| b.reason == v.reason && b.message == v.message)
    })
}

/// Milliseconds, for timing logs.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Waits until no change has arrived for `debounce`, but no longer than ten
/// debounce periods in all, so a steady trickle of changes cannot starve
/// publication. Returns how long it waited.
async fn settle(changed: &Changes, debounce: Duration) -> Duration {
    let start = tokio::time::Instant::now();
    let deadline = start + debounce * 10;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(debounce) => break,
            _ = tokio::time::sleep_until(deadline) => break,
            _ = changed.notified() => {}
        }
    }
    start.elapsed()
}

/// Publishes unless neither the snapshot nor any verdict changed.
fn offer(tx: &watch::Sender<Option<Arc<Published>>>, new: Published, metrics: &Metrics) {
    let same = tx
        .borrow()
        .as_ref()
        .is_some_and(|current| current.version == new.version && current.verdicts == new.verdicts);
    if same {
        return;
    }
    tracing::info!(
        version = %new.version,
        proxy_targets = new.summary.proxy_targets,
        routes = new.summary.routes,
        user_upstreams = new.summary.user_upstreams,
        tunnels = new.summary.tunnels,
        oauth_clients = new.summary.oauth_clients,
        rejected = new.verdicts.iter().filter(|v| !v.accepted()).count(),
        "published snapshot"
    );
    metrics.snapshots_published.inc();
    tx.send_replace(Some(Arc::new(new)));
}

/// Locks the index. Its lock is never held across an await, so a poisoned
/// lock can only mean a panic mid-update of plain maps: keep going with them.
pub fn lock(index: &Mutex<Index>) -> std::sync::MutexGuard<'_, Index> {
    index
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod rebuild_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use postern_api::{Backend, Object, ProxyTargetSpec};
    use postern_snapshot::sync::ToDataplane;

    fn inputs(host: &str, generation: i64) -> Inputs {
        let mut pt = Object::new(
            "team",
            "api",
            ProxyTargetSpec {
                hostnames: vec![host.into()],
                backend: Backend {
                    url: Some("http://10.0.0.1:80".into()),
                    service: None,
                    ..Backend::default()
                },
                ..ProxyTargetSpec::default()
            },
        );
        pt.meta.generation = Some(generation);
        Inputs {
            proxy_targets: vec![pt.into()],
            ..Inputs::default()
        }
    }

    #[test]
    fn published_knows_which_generations_it_carries() {
        let published = Published::build(1, &inputs("a.example.com", 4)).expect("build");
        let key = ObjectKey::new("team", "api");
        assert!(published.contains(Kind::ProxyTarget, &key, 4));
        assert!(!published.contains(Kind::ProxyTarget, &key, 3));
        assert!(!published.contains(Kind::Route, &key, 4));
        assert_eq!(published.summary.proxy_targets, 1);
        let frame: ToDataplane = postern_snapshot::sync::decode(&published.frame).expect("frame");
        assert!(
            matches!(frame, ToDataplane::Snapshot { version, .. } if version == published.version)
        );
    }

    #[test]
    fn unchanged_output_is_not_republished() {
        let metrics = Metrics::default();
        let (tx, rx) = watch::channel(None);
        offer(
            &tx,
            Published::build(1, &inputs("a.example.com", 1)).expect("build"),
            &metrics,
        );
        offer(
            &tx,
            Published::build(2, &inputs("a.example.com", 1)).expect("build"),
            &metrics,
        );
        assert_eq!(rx.borrow().as_ref().map(|p| p.seq), Some(1));
        offer(
            &tx,
            Published::build(3, &inputs("b.example.com", 2)).expect("build"),
            &metrics,
        );
        assert_eq!(rx.borrow().as_ref().map(|p| p.seq), Some(3));
    }

    #[tokio::test(start_paused = true)]
    async fn settle_waits_for_quiet_but_not_forever() {
        let changed = Arc::new(Changes::default());
        let start = tokio::time::Instant::now();
        settle(&changed, Duration::from_millis(100)).await;
        assert_eq!(start.elapsed(), Duration::from_millis(100));

        let pinger = {
            let changed = changed.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    changed.note();
                }
            })
        };
        let start = tokio::time::Instant::now();
        settle(&changed, Duration::from_millis(100)).await;
        pinger.abort();
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(1),
            "capped at ten periods"
        );
    }
}
