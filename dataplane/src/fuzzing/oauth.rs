//! The OAuth inputs a client controls: form bodies and queries, cookies,
//! resource indicators, redirect URIs and bearer tokens. Oracles: a
//! normalised resource normalises to itself; a redirect URI that may be
//! registered matches itself; dropping our cookie removes it and keeps every
//! other cookie as it was;
//! a token of arbitrary bytes is refused, never accepted or a panic.

use std::sync::LazyLock;

use http::{HeaderMap, HeaderValue, header};
use postern_oauth::keys::KeySet;
use postern_oauth::{redirect, resource, tokens};

use crate::oauth::web;

/// A key set made once: fuzzed tokens are checked against it.
static KEYS: LazyLock<KeySet> = LazyLock::new(|| {
    let pem = postern_oauth::keys::generate_es256_pem().expect("a generated key");
    let key = postern_snapshot::SigningKey {
        kid: "fuzz".into(),
        alg: postern_snapshot::SigningAlg::ES256,
        private_key_pem: pem,
    };
    KeySet::from_snapshot(&[key]).expect("a key set")
});

pub fn oauth_inputs(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = web::form(data);
    if let Ok(r) = resource::normalise(&text) {
        let again = resource::normalise(&r.uri).expect("a normalised resource normalises");
        assert_eq!(again, r, "normalising is idempotent");
        assert!(r.uri.starts_with(&r.origin), "{r:?}");
    }
    if redirect::validate_registered(&text).is_ok() {
        assert!(
            redirect::matches(&text, &text),
            "a registered URI matches itself: {text:?}"
        );
    }
    if let Ok(value) = HeaderValue::from_bytes(data) {
        const OURS: &str = "__Host-postern-session";
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, value);
        headers.append(header::COOKIE, HeaderValue::from_static("keep=1"));
        let before: Vec<String> = web::cookie_pairs(&headers).map(String::from).collect();
        web::drop_cookie(&mut headers, OURS);
        assert_eq!(web::cookie(&headers, OURS), None);
        let kept: Vec<String> = before
            .into_iter()
            .filter(|p| p.split_once('=').is_none_or(|(name, _)| name != OURS))
            .collect();
        assert_eq!(
            web::cookie_pairs(&headers).collect::<Vec<_>>(),
            kept,
            "only our cookie is dropped"
        );
    }
    let issuers = ["https://auth.example".to_string()];
    assert!(
        tokens::verify_access(&KEYS, &text, &issuers, "https://api.example", 1_000).is_err(),
        "arbitrary bytes are not a token"
    );
}
