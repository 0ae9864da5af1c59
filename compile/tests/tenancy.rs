//! Tenancy of names: the name policy, and lost claims that stay lost.

mod fixtures;

use fixtures::*;
use postern_api::{Kind, LostClaims, Object, ObjectKey};
use postern_compile::{Inputs, NamePolicy, Output, Reason, compile};

const POLICY: &str = r#"
rules:
  - hostnames: ["*.a.example", "web.localhost"]
    users: ["alice"]
    namespaces: [team-a, team-b]
  - hostnames: ["open.localhost"]
    users: ["bob"]
    namespaces: ["*"]
    takeover: allow
"#;

fn in_ns<S>(mut obj: Object<S>, ns: &str, at: &str) -> Object<S> {
    obj.meta.namespace = Some(ns.into());
    created(obj, at)
}

fn secret_in(inputs: &mut Inputs, ns: &str, name: &str, key: &str) {
    secret(inputs, name, &[(key, "x")]);
    let value = inputs.secrets.remove(&ObjectKey::new(NS, name));
    inputs
        .secrets
        .insert(ObjectKey::new(ns, name), value.unwrap_or_default());
}

/// A ProxyTarget and a UserUpstream per namespace, claiming `host` and
/// `user`; team-a's are the older.
fn contest(namespaces: &[&str], host: &str, user: &str, policy: &NamePolicy) -> Inputs {
    let mut inputs = Inputs::default();
    inputs.options.name_policy = policy.clone();
    for (day, ns) in namespaces.iter().enumerate() {
        let at = format!("2026-01-0{}T00:00:00Z", day + 1);
        inputs
            .proxy_targets
            .push(in_ns(target("web", &[host]), ns, &at).into());
        inputs
            .user_upstreams
            .push(in_ns(fixtures::user("u", user, "direct://"), ns, &at).into());
        secret_in(&mut inputs, ns, "u-proxy", "password");
    }
    inputs
}

fn verdict<'a>(out: &'a Output, kind: Kind, ns: &str) -> &'a postern_compile::Verdict {
    let key = ObjectKey::new(
        ns,
        if kind == Kind::ProxyTarget {
            "web"
        } else {
            "u"
        },
    );
    out.verdicts
        .iter()
        .find(|v| v.kind == kind && v.key == key)
        .unwrap_or_else(|| panic!("no verdict for {kind} {key}"))
}

/// What the operator does between compilations: each verdict's lost
/// claims become the object's status, read back as input.
fn record(inputs: &mut Inputs, out: &Output) {
    inputs.lost_claims = out
        .verdicts
        .iter()
        .filter(|v| !v.lost_claims.is_empty())
        .map(|v| ((v.kind, v.key.clone()), v.lost_claims.clone()))
        .collect();
}

fn without_namespace(inputs: &mut Inputs, ns: &str) {
    inputs.proxy_targets.retain(|o| o.namespace() != ns);
    inputs.user_upstreams.retain(|o| o.namespace() != ns);
}

fn policy() -> NamePolicy {
    NamePolicy::from_yaml(POLICY).expect("policy")
}

#[test]
fn namespaces_the_policy_allows_claim_and_others_are_refused_naming_the_rule() {
    let mut inputs = contest(&["team-a"], "x.a.example", "alice", &policy());
    let other = contest(&["team-c"], "web.localhost", "alice2", &policy());
    inputs.proxy_targets.extend(other.proxy_targets);
    inputs.user_upstreams.extend(other.user_upstreams);
    inputs.secrets.extend(other.secrets);
    let out = compile(&inputs);
    assert!(verdict(&out, Kind::ProxyTarget, "team-a").accepted());
    assert!(verdict(&out, Kind::UserUpstream, "team-a").accepted());
    let refused = verdict(&out, Kind::ProxyTarget, "team-c");
    assert_eq!(refused.reason, Reason::NameNotAllowed);
    assert!(
        refused.message.contains("\"web.localhost\""),
        "{}",
        refused.message
    );
    assert!(!refused.message.contains("team-a"), "{}", refused.message);
    let refused = verdict(&out, Kind::UserUpstream, "team-c");
    assert_eq!(refused.reason, Reason::NameNotAllowed);
    assert!(
        refused.message.contains("\"alice*\""),
        "{}",
        refused.message
    );
    assert!(!refused.message.contains("team-b"), "{}", refused.message);
    // A name no rule covers is nobody's.
    let uncovered = contest(&["team-a"], "elsewhere.example", "carol", &policy());
    let out = compile(&uncovered);
    for kind in [Kind::ProxyTarget, Kind::UserUpstream] {
        let v = verdict(&out, kind, "team-a");
        assert_eq!(v.reason, Reason::NameNotAllowed);
        assert!(
            v.message.starts_with("no name policy rule covers"),
            "{}",
            v.message
        );
    }
}

#[test]
fn the_most_specific_pattern_decides() {
    let policy = NamePolicy::from_yaml(
        r#"
rules:
  - hostnames: ["*"]
    users: ["*"]
    namespaces: ["*"]
  - hostnames: ["*.corp.example"]
    users: ["corp-"]
    namespaces: [corp]
  - hostnames: ["shared.corp.example"]
    namespaces: [team-b]
"#,
    )
    .expect("policy");
    let allowed = |ns: &str, host: &str, user: &str| {
        let out = compile(&contest(&[ns], host, user, &policy));
        (
            verdict(&out, Kind::ProxyTarget, ns).reason,
            verdict(&out, Kind::UserUpstream, ns).reason,
        )
    };
    assert_eq!(
        allowed("any", "a.example", "ann"),
        (Reason::Accepted, Reason::Accepted)
    );
    assert_eq!(
        allowed("any", "x.corp.example", "corp-ann"),
        (Reason::NameNotAllowed, Reason::NameNotAllowed)
    );
    assert_eq!(
        allowed("corp", "x.y.corp.example", "corp-ann"),
        (Reason::Accepted, Reason::Accepted)
    );
    assert_eq!(
        allowed("corp", "shared.corp.example", "ann").0,
        Reason::NameNotAllowed
    );
    assert_eq!(
        allowed("team-b", "shared.corp.example", "ann").0,
        Reason::Accepted
    );
}

#[test]
fn a_claim_lost_to_another_namespace_names_no_tenant_and_is_not_taken_over() {
    let mut inputs = contest(&["team-a", "team-b"], "web.localhost", "alice", &policy());
    let out = compile(&inputs);
    for kind in [Kind::ProxyTarget, Kind::UserUpstream] {
        assert!(verdict(&out, kind, "team-a").accepted());
        let lost = verdict(&out, kind, "team-b");
        assert!(!lost.accepted());
        assert!(!lost.message.contains("team-a"), "{}", lost.message);
        assert!(lost.message.contains("another object"), "{}", lost.message);
    }
    assert_eq!(
        verdict(&out, Kind::ProxyTarget, "team-b").reason,
        Reason::HostnameConflict
    );
    let user = verdict(&out, Kind::UserUpstream, "team-b");
    assert_eq!(user.reason, Reason::DuplicateUser);
    assert_eq!(user.lost_claims.users, vec!["alice"]);
    assert_eq!(
        verdict(&out, Kind::ProxyTarget, "team-b")
            .lost_claims
            .hostnames,
        vec!["web.localhost"]
    );

    record(&mut inputs, &out);
    without_namespace(&mut inputs, "team-a");
    let out = compile(&inputs);
    for kind in [Kind::ProxyTarget, Kind::UserUpstream] {
        let still = verdict(&out, kind, "team-b");
        assert!(!still.accepted(), "{kind} took the name over");
        assert!(
            still.message.contains("allows no takeover"),
            "{}",
            still.message
        );
        assert!(!still.lost_claims.is_empty(), "the record is kept");
    }
    assert!(out.snapshot.users.is_empty());
    assert!(out.snapshot.sites.is_empty());

    // Recreated (status gone): a fresh claim on a free name.
    inputs.lost_claims.clear();
    let out = compile(&inputs);
    assert!(verdict(&out, Kind::UserUpstream, "team-b").accepted());
}

#[test]
fn a_lost_claim_takes_over_where_the_policy_allows_it() {
    let mut inputs = contest(&["team-a", "team-b"], "open.localhost", "bob", &policy());
    let out = compile(&inputs);
    assert!(!verdict(&out, Kind::ProxyTarget, "team-b").accepted());
    record(&mut inputs, &out);
    without_namespace(&mut inputs, "team-a");
    let out = compile(&inputs);
    for kind in [Kind::ProxyTarget, Kind::UserUpstream] {
        let v = verdict(&out, kind, "team-b");
        assert!(v.accepted(), "{}", v.message);
        assert_eq!(
            v.lost_claims,
            LostClaims::default(),
            "record dropped once held"
        );
    }
    assert_eq!(out.snapshot.users[0].user, "bob");
}

#[test]
fn within_one_namespace_the_next_object_takes_over_and_is_named() {
    let policy = NamePolicy::default();
    let mut inputs = contest(&["team-a"], "web.localhost", "alice", &policy);
    let mut newer = created(target("web2", &["web.localhost"]), "2026-02-01T00:00:00Z");
    newer.meta.namespace = Some("team-a".into());
    inputs.proxy_targets.push(newer.into());
    let out = compile(&inputs);
    let v = out
        .verdicts
        .iter()
        .find(|v| v.key.name == "web2")
        .expect("verdict");
    assert_eq!(v.reason, Reason::HostnameConflict);
    assert!(v.message.contains("ProxyTarget web"), "{}", v.message);
    assert!(v.lost_claims.is_empty(), "nothing lost to another tenant");
    record(&mut inputs, &out);
    inputs.proxy_targets.retain(|t| t.meta.name != "web");
    let out = compile(&inputs);
    assert!(
        out.verdicts
            .iter()
            .any(|v| v.key.name == "web2" && v.accepted())
    );
}

#[test]
fn a_claim_refused_for_another_reason_still_records_what_it_lost() {
    let mut inputs = contest(&["team-a", "team-b"], "web.localhost", "alice", &policy());
    inputs.secrets.remove(&ObjectKey::new("team-b", "u-proxy"));
    let out = compile(&inputs);
    let v = verdict(&out, Kind::UserUpstream, "team-b");
    assert_eq!(v.reason, Reason::DuplicateUser);
    assert_eq!(v.lost_claims.users, vec!["alice"]);
    record(&mut inputs, &out);
    without_namespace(&mut inputs, "team-a");
    secret_in(&mut inputs, "team-b", "u-proxy", "password");
    let out = compile(&inputs);
    assert_eq!(
        verdict(&out, Kind::UserUpstream, "team-b").reason,
        Reason::DuplicateUser
    );
}

#[test]
fn the_default_policy_lets_any_namespace_claim_but_keeps_lost_claims() {
    let mut inputs = contest(&["x", "y"], "any.example", "ann", &NamePolicy::default());
    let out = compile(&inputs);
    assert!(verdict(&out, Kind::ProxyTarget, "x").accepted());
    assert_eq!(
        verdict(&out, Kind::ProxyTarget, "y").reason,
        Reason::HostnameConflict
    );
    record(&mut inputs, &out);
    without_namespace(&mut inputs, "x");
    let out = compile(&inputs);
    assert_eq!(
        verdict(&out, Kind::ProxyTarget, "y").reason,
        Reason::HostnameConflict
    );
}
