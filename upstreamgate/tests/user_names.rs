//! One rule for a proxy user name: the CRD schema the API server enforces,
//! compile's check of manifests no API server saw, and the `/upstream` API
//! accept exactly the names `postern_api::user_name::is_valid` accepts.

use postern_api::{Kind, Object, SecretKeyRef, UserUpstreamSpec, user_name};
use postern_compile::{Inputs, Reason, SecretData, compile};
use postern_upstreamgate::{RequestError, UserRequest, translate};

const TRICKY: &[&str] = &[
    "",
    "a",
    "A.b_c~d-1",
    "alice",
    "Bob",
    "-",
    "~",
    "..",
    "a b",
    " a",
    "a ",
    "a:b",
    "a/b",
    "a@b",
    "a%20b",
    "a\n",
    "\na",
    "a\tb",
    "a\0",
    "é",
    "ａ",
    "a+b",
    "a*",
];

/// The `spec.user` schema of the checked-in CRD (a test of `postern-crds`
/// keeps it equal to the generated one).
fn crd_user_schema() -> serde_yaml_ng::Value {
    let text = include_str!("../../crds/yaml/userupstreams.postern.io.yaml");
    let crd: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).expect("CRD YAML");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["user"]
        .clone()
}

fn schema_accepts(schema: &serde_yaml_ng::Value, user: &str) -> bool {
    let pattern = schema["pattern"].as_str().expect("pattern");
    let re = regex::Regex::new(pattern).expect("regex");
    let len = |key: &str| schema[key].as_u64().expect(key) as usize;
    let chars = user.chars().count();
    re.is_match(user) && (len("minLength")..=len("maxLength")).contains(&chars)
}

fn compile_accepts(user: &str) -> bool {
    let mut inputs = Inputs::default();
    inputs.user_upstreams.push(
        Object::new(
            "ns",
            "u",
            UserUpstreamSpec {
                user: user.into(),
                password_secret_ref: SecretKeyRef {
                    name: "pw".into(),
                    key: None,
                },
                upstream: "direct://".into(),
                ..UserUpstreamSpec::default()
            },
        )
        .into(),
    );
    let data = [("password".to_string(), b"x".to_vec())].into();
    inputs.secrets.insert(
        postern_api::ObjectKey::new("ns", "pw"),
        SecretData { kind: None, data },
    );
    let verdict = &compile(&inputs).verdicts[0];
    assert_eq!(verdict.kind, Kind::UserUpstream);
    assert!(
        matches!(verdict.reason, Reason::Accepted | Reason::InvalidSpec),
        "{verdict:?}"
    );
    verdict.accepted()
}

fn api_accepts(user: &str) -> bool {
    let got = translate(&UserRequest {
        user: user.into(),
        password: "x".into(),
        upstream: "direct://".into(),
    });
    assert!(
        matches!(got, Ok(_) | Err(RequestError::User(_))),
        "{user:?}: {got:?}"
    );
    got.is_ok()
}

#[test]
fn the_schema_compile_and_the_api_agree() {
    let schema = crd_user_schema();
    assert_eq!(schema["pattern"].as_str(), Some(user_name::PATTERN));
    let long = [
        "x".repeat(user_name::MAX_LEN),
        "x".repeat(user_name::MAX_LEN + 1),
    ];
    let inputs = TRICKY
        .iter()
        .copied()
        .chain(long.iter().map(String::as_str));
    let mut accepted = 0;
    for user in inputs {
        let expected = user_name::is_valid(user);
        accepted += usize::from(expected);
        assert_eq!(schema_accepts(&schema, user), expected, "schema, {user:?}");
        assert_eq!(compile_accepts(user), expected, "compile, {user:?}");
        assert_eq!(api_accepts(user), expected, "api, {user:?}");
    }
    // Both answers occur, so agreement is not vacuous.
    assert!(accepted > 3 && accepted < TRICKY.len(), "{accepted}");
}
