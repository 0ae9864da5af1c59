//! The API server restarted under a running operator: its watches resume,
//! an unchanged world costs no work (no compile, no publication, no
//! snapshot sent, no status patch), and a change made after the restart is
//! applied and its status written.
//!
//! The API server is a private one ([`Apiserver`]): the rig's binary and
//! certificates on the rig's etcd under a prefix of its own, so killing it
//! disturbs no other test, in this binary or beside it. Its `/metrics`
//! shows which watches are open (`apiserver_longrunning_requests`), which
//! is how the test knows that every watch of the operator is back, and
//! that each came back through a relist (`apiserver_request_total`).

use std::collections::BTreeSet;
use std::time::Duration;

use postern_harness::{Backend, metric_value};
use postern_tests::apiserver::Apiserver;
use postern_tests::resources::patch_spec;
use postern_tests::serving::{keeps_serving, metric, routed, site};
use postern_tests::spine::{Spine, WAIT};
use postern_tests::{eventually, rig_or_skip};
use serde_json::json;

/// Watches back off for up to 30 s each after losing the API server.
const RESUME: Duration = Duration::from_secs(120);
/// How long an unchanged world is watched for work it should not cause.
const QUIET: Duration = Duration::from_secs(6);
const HOST: &str = "web.faults.test";

/// The namespaced watches of the operator, by resource (no other client
/// of the private API server watches a namespace).
const WATCHED: [&str; 7] = [
    "proxytargets",
    "routes",
    "userupstreams",
    "tunnels",
    "oauthclients",
    "secrets",
    "services",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_resume_after_an_api_server_restart_without_repeating_work() {
    let rig = rig_or_skip!();
    let mut apiserver = Apiserver::start(&rig, "fault-api").await;
    let spine = Spine::start(apiserver.rig(), "fault-api").await;
    let (v1, v2) = (Backend::text("v1"), Backend::text("v2"));
    spine.create(site("web", HOST, &v1.url())).await;
    spine.programmed("ProxyTarget", "web", 1, WAIT).await;
    let dp = spine.dataplane();
    routed(dp.http, HOST, "/", "v1 /", WAIT).await;
    let version = dp.version().await.expect("a version");
    all_watches_open(&apiserver, WAIT).await;
    let before = Work::now(&spine).await;

    apiserver.kill();
    keeps_serving(dp, HOST, "v1 /", &version, QUIET).await;
    eventually("the operator to see its watches fail", WAIT, || async {
        let log = spine.operator.log();
        if log.contains("watch failed") {
            Ok(())
        } else {
            Err(log)
        }
    })
    .await;
    apiserver.restart().await;
    all_watches_open(&apiserver, RESUME).await;
    // Each came back through a relist (the restarted server cannot resume
    // an old watch), the path where repeated work could come from.
    let (_, page) = apiserver.get("/metrics").await;
    for resource in WATCHED {
        let lists = namespaced(&page, "apiserver_request_total", "LIST", resource);
        assert!(lists >= 1.0, "no relist of {resource}:\n{page}");
    }

    // Every watch relisted or resumed; the world is as it was.
    keeps_serving(dp, HOST, "v1 /", &version, QUIET).await;
    let after = Work::now(&spine).await;
    assert_eq!(after, before, "an unchanged world cost work");
    let view = spine.operator.view().await.expect("operator view");
    assert_eq!(view["version"], json!(version), "{view}");

    // A change after the restart is applied, once.
    let moved = json!({"backend": {"url": v2.url()}});
    patch_spec(&spine.client, spine.ns(), "ProxyTarget", "web", moved).await;
    routed(dp.http, HOST, "/", "v2 /", WAIT).await;
    spine.programmed("ProxyTarget", "web", 2, WAIT).await;
    keeps_serving(dp, HOST, "v2 /", &dp.version().await.expect("v"), QUIET).await;
    let changed = Work::now(&spine).await;
    let once = Work {
        compiles: before.compiles + 1.0,
        published: before.published + 1.0,
        acks: before.acks + 1.0,
        applies: before.applies + 1.0,
        status_patches: changed.status_patches,
    };
    assert_eq!(changed, once, "one change, one of each");
    assert!(changed.status_patches > before.status_patches);
    spine.ns.cleanup(&spine.client).await;
}

/// What the operator and the data plane have done so far.
#[derive(Debug, PartialEq)]
struct Work {
    compiles: f64,
    published: f64,
    acks: f64,
    applies: f64,
    status_patches: f64,
}

impl Work {
    async fn now(spine: &Spine) -> Work {
        let op = spine.operator.admin;
        Work {
            compiles: metric(op, "postern_operator_compile_seconds_count").await,
            published: metric(op, "postern_operator_snapshots_published_total").await,
            acks: metric(op, "postern_operator_acks_total").await,
            applies: spine
                .dataplane()
                .metric("postern_snapshot_applies_total")
                .await,
            status_patches: metric(op, "postern_operator_status_patches_total").await,
        }
    }
}

/// Waits until the API server holds an open namespaced watch for each of
/// [`WATCHED`].
async fn all_watches_open(apiserver: &Apiserver, limit: Duration) {
    eventually("every watch of the operator to be open", limit, || async {
        let (status, page) = apiserver.get("/metrics").await;
        if status != 200 {
            return Err(format!("{status} {page}"));
        }
        let missing: BTreeSet<&str> = WATCHED
            .into_iter()
            .filter(|r| namespaced(&page, "apiserver_longrunning_requests", "WATCH", r) < 1.0)
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("no watch on {missing:?}"))
        }
    })
    .await;
}

/// The API server's `metric` for namespaced `verb` requests on
/// `resource`, summed over the other labels.
fn namespaced(page: &str, metric: &str, verb: &str, resource: &str) -> f64 {
    let prefix = format!("{metric}{{");
    let labels = [
        format!("resource=\"{resource}\""),
        format!("verb=\"{verb}\""),
        "scope=\"namespace\"".to_string(),
    ];
    page.lines()
        .filter(|l| l.starts_with(&prefix) && labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| {
            let (sample, _) = l.rsplit_once(' ')?;
            metric_value(l, sample)
        })
        .sum()
}
