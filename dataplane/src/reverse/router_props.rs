//! Properties of host matching and routing order, each checked against a
//! naive reference: the router must pick what the documented rules pick.
//!
//! Routing order is compile's (`compile/src/sites.rs`, and `priority` in
//! `api/src/route.rs`): higher priority first, then the longer path value,
//! then the Route's `namespace/name`; the first route that matches the
//! method and the path wins, else the site's default. So the routes here go
//! through the real manifest reader and compiler, as a cluster's would.

use http::Method;
use postern_snapshot::{Site, Snapshot};
use proptest::prelude::*;

use super::backend::Pools;
use super::router::{Router, normalise_host};
use crate::standalone::{ManifestFile, load};

#[derive(Clone, Debug)]
enum Kind {
    Prefix,
    Exact,
    Regex,
}

#[derive(Clone, Debug)]
struct Rule {
    kind: Kind,
    value: String,
    methods: Vec<&'static str>,
    priority: u16,
}

const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE"];

/// Paths from a small alphabet, so that routes and requests overlap.
fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(&["a", "b", "v1", "10", "x"][..]), 0..4)
        .prop_map(|segs| format!("/{}", segs.join("/")))
}

fn rule() -> impl Strategy<Value = Rule> {
    let kind = prop_oneof![Just(Kind::Prefix), Just(Kind::Exact), Just(Kind::Regex)];
    let methods = prop::sample::subsequence(METHODS, 0..3);
    (kind, path(), any::<bool>(), methods, 0u16..4).prop_map(
        |(kind, path, slash, methods, priority)| {
            let value = match kind {
                // A trailing slash on a prefix changes its length, not its match.
                Kind::Prefix if slash && path != "/" => format!("{path}/"),
                // One digit-class segment: `/v1/[0-9]+`.
                Kind::Regex if slash => format!("{}/[0-9]+", path.trim_end_matches('/')),
                _ => path,
            };
            Rule {
                kind,
                value,
                methods,
                priority,
            }
        },
    )
}

/// One ProxyTarget `site` for `h.example` and one Route per rule, `r<i>`.
fn manifests(rules: &[Rule]) -> String {
    let mut text = String::from(
        "apiVersion: postern.io/v1alpha1\nkind: ProxyTarget\nmetadata: {name: site}\n\
         spec:\n  hostnames: [h.example]\n  backend: {url: \"http://site.internal:80\"}\n",
    );
    for (i, r) in rules.iter().enumerate() {
        let kind = match r.kind {
            Kind::Prefix => "Prefix",
            Kind::Exact => "Exact",
            Kind::Regex => "RegularExpression",
        };
        text.push_str(&format!(
            "---\napiVersion: postern.io/v1alpha1\nkind: Route\nmetadata: {{name: r{i}}}\n\
             spec:\n  targetRef: {{name: site}}\n  priority: {}\n  match:\n    \
             path: {{type: {kind}, value: {:?}}}\n    methods: {:?}\n  \
             backend: {{url: \"http://r{i}.internal:80\"}}\n",
            r.priority, r.value, r.methods
        ));
    }
    text
}

/// The reference matcher: prefixes match whole segments.
fn matches(rule: &Rule, method: &str, path: &str) -> bool {
    let method_ok = rule.methods.is_empty() || rule.methods.contains(&method);
    let path_ok = match rule.kind {
        Kind::Exact => path == rule.value,
        Kind::Prefix => {
            let p = rule.value.trim_end_matches('/');
            path == p || path.starts_with(&format!("{p}/"))
        }
        Kind::Regex => {
            let (base, digits) = match rule.value.strip_suffix("/[0-9]+") {
                Some(base) => (base, true),
                None => (rule.value.as_str(), false),
            };
            match path.strip_prefix(base) {
                Some(rest) if digits => rest
                    .strip_prefix('/')
                    .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())),
                Some(rest) => rest.is_empty(),
                None => false,
            }
        }
    };
    method_ok && path_ok
}

/// The route the documented order picks: the maximum by (priority, path
/// length, then the smaller id) among the matching ones.
fn reference(rules: &[Rule], method: &str, path: &str) -> Option<String> {
    rules
        .iter()
        .enumerate()
        .filter(|(_, r)| matches(r, method, path))
        .map(|(i, r)| (r.priority, r.value.len(), format!("default/r{i}")))
        .max_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)).then(b.2.cmp(&a.2)))
        .map(|(_, _, id)| id)
}

fn compile(text: String) -> Snapshot {
    let files = [ManifestFile {
        name: "routes.yaml".into(),
        text,
    }];
    let output = load::compile(&files, load::Limits::NONE).expect("the manifests read");
    let refused: Vec<_> = output.verdicts.iter().filter(|v| !v.accepted()).collect();
    assert!(refused.is_empty(), "refused: {refused:?}");
    output.snapshot
}

/// Host labels; a request host is some of them, in any case.
fn label() -> impl Strategy<Value = String> {
    prop::sample::select(&["a", "b", "www", "api", "example", "com"][..]).prop_map(str::to_string)
}

fn hostname() -> impl Strategy<Value = String> {
    prop::collection::vec(label(), 1..4).prop_map(|l| l.join("."))
}

/// As a Host header may spell it: any case, a port, a trailing dot.
fn spelled(host: &str, upper: &[bool], port: Option<u16>, dot: bool) -> String {
    let cased: String = host
        .chars()
        .zip(upper.iter().cycle())
        .map(|(c, &u)| if u { c.to_ascii_uppercase() } else { c })
        .collect();
    let dot = if dot { "." } else { "" };
    match port {
        Some(p) => format!("{cased}{dot}:{p}"),
        None => format!("{cased}{dot}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The route chosen is the documented maximum among those that match.
    #[test]
    fn the_chosen_route_is_the_maximum_by_the_documented_order(
        rules in prop::collection::vec(rule(), 1..8),
        requests in prop::collection::vec((prop::sample::select(METHODS), path()), 1..16),
        digits in "[0-9]{1,3}",
    ) {
        let snapshot = compile(manifests(&rules));
        let router = Router::build(&snapshot, &mut Pools::default());
        let site = router.site("h.example").expect("the site");
        for (method, path) in requests {
            // Some requests end in digits, for the regex routes.
            for path in [path.clone(), format!("{}/{digits}", path.trim_end_matches('/'))] {
                let m = Method::from_bytes(method.as_bytes()).expect("a method");
                let got = site.target(&m, &path).route.clone();
                prop_assert_eq!(got, reference(&rules, method, &path), "{} {}", method, path);
            }
        }
    }

    /// Hosts match case-insensitively, without port or trailing dot: an
    /// exact name first, else `*.parent` for exactly one more label.
    #[test]
    fn hosts_match_exact_then_one_label_wildcards(
        names in prop::collection::btree_set(hostname(), 1..6),
        wild in prop::collection::btree_set(hostname(), 0..4),
        host in hostname(),
        upper in prop::collection::vec(any::<bool>(), 1..8),
        port in prop::option::of(1u16..),
        dot in any::<bool>(),
    ) {
        let mut sites: Vec<Site> = Vec::new();
        for (i, name) in names.iter().enumerate() {
            sites.push(Site::new(format!("n/{i}"), &[name], "http://x.internal:80"));
        }
        for (i, parent) in wild.iter().enumerate() {
            let name = format!("*.{parent}");
            sites.push(Site::new(format!("w/{i}"), &[&name], "http://x.internal:80"));
        }
        let snapshot = Snapshot { sites, ..Snapshot::default() };
        let router = Router::build(&snapshot, &mut Pools::default());
        let raw = spelled(&host, &upper, port, dot);
        let normal = normalise_host(&raw);
        prop_assert_eq!(normal.as_deref(), Some(host.as_str()), "{}", raw);
        let got = router.site(&host).map(|s| s.id.clone());
        let exact = names.iter().position(|n| *n == host).map(|i| format!("n/{i}"));
        let by_parent = || {
            let (_, parent) = host.split_once('.')?;
            wild.iter().position(|w| w == parent).map(|i| format!("w/{i}"))
        };
        prop_assert_eq!(got, exact.or_else(by_parent), "{}", host);
    }

    /// Host normalising never yields an empty, upper-case or dotted-off name.
    #[test]
    fn normalised_hosts_are_lowercase_and_not_empty(raw in "\\PC{0,40}") {
        if let Some(host) = normalise_host(&raw) {
            prop_assert!(!host.is_empty());
            prop_assert_eq!(host.clone(), host.to_ascii_lowercase());
            prop_assert!(!host.ends_with('.'));
        }
    }
}

#[test]
fn the_reference_agrees_with_the_documented_example() {
    // priority beats length; length beats id.
    let rules = vec![
        Rule {
            kind: Kind::Prefix,
            value: "/v1/a".into(),
            methods: vec![],
            priority: 0,
        },
        Rule {
            kind: Kind::Prefix,
            value: "/v1".into(),
            methods: vec![],
            priority: 1,
        },
        Rule {
            kind: Kind::Prefix,
            value: "/v1/a/b".into(),
            methods: vec![],
            priority: 0,
        },
    ];
    assert_eq!(
        reference(&rules, "GET", "/v1/a/b").as_deref(),
        Some("default/r1")
    );
    let rules = &rules[..1]
        .iter()
        .chain(&rules[2..])
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(
        reference(rules, "GET", "/v1/a/b").as_deref(),
        Some("default/r1")
    );
    assert_eq!(
        reference(rules, "GET", "/v1/a").as_deref(),
        Some("default/r0")
    );
}
