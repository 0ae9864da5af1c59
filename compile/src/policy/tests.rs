use super::*;

fn refused(policy: &NamePolicy, kind: NameKind, name: &str, ns: &str) -> String {
    match policy.check(kind, name, ns) {
        Err((Reason::NameNotAllowed, message)) => message,
        other => panic!("{name} in {ns}: {other:?}"),
    }
}

#[test]
fn the_default_lets_everyone_claim_without_takeover() {
    let policy = NamePolicy::default();
    assert_eq!(
        policy.check(NameKind::Hostname, "a.example", "x"),
        Ok(false)
    );
    assert_eq!(policy.check(NameKind::User, "alice", "y"), Ok(false));
}

#[test]
fn rules_are_checked_when_read() {
    let bad = [
        ("rules: [{namespaces: [a]}]", "give hostnames or users"),
        (
            "rules: [{hostnames: [a.example], namespaces: []}]",
            "namespaces",
        ),
        (
            "rules: [{hostnames: [\"a..b\"], namespaces: [a]}]",
            "not a valid hostname",
        ),
        (
            "rules: [{hostnames: [\"*.*.b\"], namespaces: [a]}]",
            "not a valid hostname",
        ),
        (
            "rules: [{users: [\"a b\"], namespaces: [a]}]",
            "user-name prefix",
        ),
        (
            "rules: [{users: [a], namespaces: [Team_A]}]",
            "not a namespace",
        ),
        (
            "rules: [{users: [a], namespaces: [a], takeover: maybe}]",
            "unknown variant",
        ),
        ("rules: [{users: [a], namespace: [a]}]", "unknown field"),
        ("rules: 3", "invalid type"),
    ];
    for (text, expected) in bad {
        let error = NamePolicy::from_yaml(text).expect_err(text).to_string();
        assert!(error.contains(expected), "{text}: {error}");
    }
}

#[test]
fn patterns_match_by_specificity_and_refusals_name_only_the_pattern() {
    let policy = NamePolicy::from_yaml(
        "rules:
  - {hostnames: [\"*.example.com\"], users: [team-], namespaces: [team-a], takeover: allow}
  - {hostnames: [\"API.example.com.\"], namespaces: [team-b]}
  - {hostnames: [\"*.example.com\"], namespaces: [team-c]}
  - {users: [\"team-b-*\"], namespaces: [team-b]}",
    )
    .expect("policy");
    let host = NameKind::Hostname;
    assert_eq!(policy.check(host, "x.example.com", "team-a"), Ok(true));
    assert_eq!(policy.check(host, "x.y.example.com", "team-c"), Ok(false));
    assert_eq!(policy.check(host, "api.example.com", "team-b"), Ok(false));
    let message = refused(&policy, host, "api.example.com", "team-a");
    assert!(message.contains("\"api.example.com\""), "{message}");
    assert!(!message.contains("team-b"), "{message}");
    let message = refused(&policy, host, "example.com", "team-a");
    assert_eq!(message, "no name policy rule covers hostname example.com");
    let user = NameKind::User;
    assert_eq!(policy.check(user, "team-x", "team-a"), Ok(true));
    assert_eq!(policy.check(user, "team-b-bot", "team-b"), Ok(false));
    let message = refused(&policy, user, "team-b-bot", "team-a");
    assert!(message.contains("\"team-b-*\""), "{message}");
}
