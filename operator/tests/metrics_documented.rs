//! Every family the operator registers is in `docs/metrics.md` with its
//! type and labels, and the page lists no operator family that is gone.

#[path = "../../dataplane/tests/metrics_doc/mod.rs"]
mod metrics_doc;

use std::collections::BTreeSet;

use metrics_doc::{MetricsDoc, check_exposition, registry_families};
use postern_operator::metrics::Metrics;

#[test]
fn the_registry_and_the_page_list_the_same_families() {
    let doc = MetricsDoc::load();
    assert_eq!(doc.problems(), Vec::<String>::new());
    let metrics = Metrics::default();
    // The Debug text holds every registered descriptor, series or not.
    let registered: BTreeSet<String> = registry_families(&format!("{metrics:?}"))
        .into_iter()
        .collect();
    assert!(
        registered.contains("postern_operator_leader")
            && registered.contains("postern_operator_acme_certificate_expiry_seconds"),
        "the registry's Debug text was not read: {registered:?}"
    );
    doc.assert_lists(&registered, |n| n.starts_with("postern_operator_"));
}

#[test]
fn an_encoded_registry_keeps_to_the_documented_types_and_values() {
    let doc = MetricsDoc::load();
    let metrics = Metrics::default();
    metrics.acks.inc();
    metrics.compile_seconds.observe(0.01);
    for result in ["issued", "failed", "store_failed"] {
        metrics.acme.order(result);
    }
    let text = metrics.encode();
    let problems = check_exposition(&doc, &text, &|_, _, _| false, &|_, _, _| false);
    assert_eq!(problems, Vec::<String>::new(), "in\n{text}");
    // The check reads what it checks: a result the page does not list fails.
    metrics.acme.order("made_up");
    let problems = check_exposition(&doc, &metrics.encode(), &|_, _, _| false, &|_, _, _| false);
    assert!(
        problems.iter().any(|p| p.contains("made_up")),
        "{problems:?}"
    );
}
