//! The rebuild loop against a hand-fed index: a Secret and the object
//! naming it, in either order, never publish the half-arrived state.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::watcher::Event;
use postern_api::{SecretKeyRef, UserUpstreamSpec};
use postern_compile::Reason;
use postern_crds::UserUpstream;
use tokio::task::JoinHandle;

use super::*;
use crate::index::Indexed;
use crate::index::tests::{meta, synced_index};

const DEBOUNCE: Duration = Duration::from_millis(100);

fn password(name: &str) -> Secret {
    Secret {
        metadata: meta(name, 0),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            "password".to_string(),
            ByteString(b"pw".to_vec()),
        )])),
        ..Secret::default()
    }
}

fn user(name: &str) -> UserUpstream {
    UserUpstream {
        metadata: meta(name, 1),
        spec: UserUpstreamSpec {
            user: name.into(),
            password_secret_ref: SecretKeyRef {
                name: name.into(),
                key: None,
            },
            upstream: "direct://".into(),
            ..UserUpstreamSpec::default()
        }
        .into(),
        status: None,
    }
}

/// A running rebuild loop and what the watches would hold.
struct Rig {
    index: Arc<Mutex<Index>>,
    changed: Arc<Changes>,
    latest: Latest,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Rig {
    /// Starts the loop and waits for its first publication (nothing yet).
    async fn start() -> Rig {
        let index = Arc::new(Mutex::new(synced_index()));
        let changed = Arc::new(Changes::default());
        let (tx, latest) = watch::channel(None);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(rebuild_loop(
            index.clone(),
            changed.clone(),
            DEBOUNCE,
            tx,
            Arc::new(Metrics::default()),
            shutdown.clone(),
        ));
        let mut rig = Rig {
            index,
            changed,
            latest,
            shutdown,
            task,
        };
        rig.changed.note();
        rig.next().await;
        rig
    }

    /// What a watch does with an event.
    fn feed<K: Indexed>(&self, event: Event<K>) {
        if lock(&self.index).handle(event) {
            self.changed.note();
        }
    }

    async fn next(&mut self) -> Arc<Published> {
        self.latest.changed().await.expect("loop running");
        self.latest.borrow_and_update().clone().expect("published")
    }

    /// Lets the loop take in the changes so far (virtual time: the clock
    /// only moves when every task, the compile included, is idle), and
    /// checks that it published nothing.
    async fn quiet(&self) {
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(
            !self.latest.has_changed().expect("loop running"),
            "published: {:?}",
            self.latest.borrow().as_deref().map(reasons)
        );
    }

    /// Waits for the next publication, which must judge alice alone, as
    /// `reason`; returns how long it took.
    async fn next_alice(&mut self, reason: Reason) -> Duration {
        let start = tokio::time::Instant::now();
        let published = self.next().await;
        assert_eq!(reasons(&published), [("alice".to_string(), reason)]);
        start.elapsed()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("loop ended");
    }
}

fn reasons(published: &Published) -> Vec<(String, Reason)> {
    published
        .verdicts
        .iter()
        .map(|v| (v.key.name.clone(), v.reason))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn secret_then_object_publishes_at_once() {
    let mut rig = Rig::start().await;
    rig.feed(Event::Apply(password("alice")));
    rig.quiet().await;
    rig.feed(Event::Apply(user("alice")));
    let took = rig.next_alice(Reason::Accepted).await;
    assert!(took < DEBOUNCE, "no settle: {took:?}");
    rig.quiet().await;
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn object_then_secret_publishes_only_the_whole() {
    let mut rig = Rig::start().await;
    rig.feed(Event::Apply(user("alice")));
    rig.quiet().await;
    rig.feed(Event::Apply(password("alice")));
    let took = rig.next_alice(Reason::Accepted).await;
    assert!(took >= DEBOUNCE, "settled after the Secret: {took:?}");
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn secret_deleted_before_its_object_is_never_published_alone() {
    let mut rig = Rig::start().await;
    rig.feed(Event::Apply(password("alice")));
    rig.feed(Event::Apply(user("alice")));
    rig.next_alice(Reason::Accepted).await;

    rig.feed(Event::Delete(password("alice")));
    rig.quiet().await;
    rig.feed(Event::Delete(user("alice")));
    let published = rig.next().await;
    assert!(published.verdicts.is_empty(), "{:?}", reasons(&published));
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_secret_that_never_comes_is_refused_after_the_settle() {
    let mut rig = Rig::start().await;
    rig.feed(Event::Apply(user("alice")));
    let took = rig.next_alice(Reason::SecretNotFound).await;
    assert!(took >= DEBOUNCE, "settled: {took:?}");

    let mut edited = user("alice");
    edited.metadata.generation = Some(2);
    edited.spec.0.upstream = "socks5://socks.internal:1080".into();
    rig.feed(Event::Apply(edited));
    let took = rig.next_alice(Reason::SecretNotFound).await;
    assert!(took < DEBOUNCE, "the same refusal is not new: {took:?}");
    rig.stop().await;
}
