//! What standalone mode writes for a user compiles into that user: the
//! manifest goes through the same reader and compiler as any other.

use postern_compile::{Inputs, compile, manifest::parse_documents};
use postern_snapshot::{PasswordHash, ProxyUser, Upstream};
use postern_upstreamgate::{UserRequest, manifest, translate};

fn compiled(user: &str, password: &str, upstream: &str) -> (String, ProxyUser) {
    let objects = translate(&UserRequest {
        user: user.into(),
        password: password.into(),
        upstream: upstream.into(),
    })
    .expect("valid");
    let text = manifest(&objects);
    let mut inputs = Inputs::default();
    for resource in parse_documents(&text).expect("parses") {
        inputs.push(resource);
    }
    let out = compile(&inputs);
    assert!(
        out.verdicts.iter().all(|v| v.accepted()),
        "{:?}",
        out.verdicts
    );
    assert_eq!(out.verdicts.len(), 1);
    (text, out.snapshot.users[0].clone())
}

#[test]
fn the_resources_compile_into_the_user() {
    let (text, user) = compiled("Alice.x", "p\"w\n", "socks5://su:sp@127.0.0.1:1080");
    assert!(
        text.contains(r#""upstream": "socks5://127.0.0.1:1080""#),
        "{text}"
    );
    assert_eq!(user.user, "Alice.x");
    assert_eq!(
        user.password,
        PasswordHash::new(&user.password.salt, b"p\"w\n")
    );
    match &user.upstream {
        Upstream::Socks5 {
            port: 1080,
            credentials: Some(c),
            ..
        } => assert_eq!((c.username.as_str(), c.password.as_str()), ("su", "sp")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn without_inline_credentials_there_is_one_secret() {
    let (text, user) = compiled("bob", "pw", "direct://");
    assert_eq!(text.matches(r#""kind": "Secret""#).count(), 1, "{text}");
    assert_eq!(user.upstream, Upstream::Direct);
}
