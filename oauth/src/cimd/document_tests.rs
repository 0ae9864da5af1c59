use http::HeaderValue;
use serde_json::json;

use super::*;
use crate::redirect::RedirectError;

const ID: &str = "https://app.example.com/oauth/client.json";

#[test]
fn client_id_urls_accepted() {
    for url in [
        ID,
        "https://app.example.com/c",
        "https://app.example.com:8443/client.json",
        "https://app.example.com/client.json?v=2",
        "https://xn--bcher-kva.example/client",
        "https://app.example.com./client.json",
    ] {
        assert_eq!(
            validate_client_id(url).map(|u| u.to_string()),
            Ok(url.into())
        );
    }
}

#[test]
fn client_id_urls_refused() {
    let long = format!("https://app.example.com/{}", "a".repeat(MAX_URL));
    let table = [
        ("http://app.example.com/client.json", CimdError::NotHttps),
        ("ftp://app.example.com/client.json", CimdError::NotHttps),
        ("app.example.com/client.json", CimdError::Malformed),
        ("https://app.example.com/a b", CimdError::Malformed),
        (" https://app.example.com/a", CimdError::Malformed),
        ("https://app.example.com/a\n", CimdError::Malformed),
        ("https://u@app.example.com/c", CimdError::UserInfo),
        ("https://u:p@app.example.com/c", CimdError::UserInfo),
        ("https://app.example.com/c#frag", CimdError::Fragment),
        ("https://app.example.com/c#", CimdError::Fragment),
        ("https://127.0.0.1/c", CimdError::IpLiteral),
        ("https://[::1]/c", CimdError::IpLiteral),
        ("https://[fd00::1]/c", CimdError::IpLiteral),
        ("https://2130706433/c", CimdError::IpLiteral),
        ("https://0x7f.1/c", CimdError::IpLiteral),
        ("https://169.254.169.254/latest", CimdError::IpLiteral),
        ("https://localhost/c", CimdError::SingleLabel),
        ("https://metadata/c", CimdError::SingleLabel),
        ("https://app.example.com", CimdError::NoPath),
        ("https://app.example.com/", CimdError::NoPath),
        ("https://app.example.com/?x=1", CimdError::NoPath),
        ("https://app.example.com/a/../c", CimdError::DotSegment),
        ("https://app.example.com/./c", CimdError::DotSegment),
        ("https://app.example.com/a/%2E%2e/c", CimdError::DotSegment),
        ("https://app.example.com/c/.", CimdError::DotSegment),
        ("HTTPS://app.example.com/c", CimdError::NotCanonical),
        ("https://App.Example.com/c", CimdError::NotCanonical),
        ("https://app.example.com:443/c", CimdError::NotCanonical),
        ("https://bücher.example/c", CimdError::NotCanonical),
        ("https://app.example.com/a\\c", CimdError::NotCanonical),
        (long.as_str(), CimdError::UrlTooLong),
    ];
    for (url, want) in table {
        assert_eq!(validate_client_id(url), Err(want), "{url}");
    }
}

fn doc(extra: serde_json::Value) -> Vec<u8> {
    let mut base = json!({
        "client_id": ID,
        "client_name": "Example App",
        "redirect_uris": ["https://app.example.com/callback", "http://127.0.0.1/cb"],
    });
    if let (Some(base), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            base.insert(k.clone(), v.clone());
        }
    }
    serde_json::to_vec(&base).expect("test document")
}

#[test]
fn a_minimal_document_is_a_public_client() {
    let parsed = parse_document(ID, &doc(json!({"logo_uri": "https://x.example/l.png"})));
    assert_eq!(
        parsed,
        Ok(ClientDocument {
            client_id: ID.into(),
            client_name: Some("Example App".into()),
            redirect_uris: vec![
                "https://app.example.com/callback".into(),
                "http://127.0.0.1/cb".into()
            ],
            grant_types: vec!["authorization_code".into(), "refresh_token".into()],
            scope: None,
        })
    );
    let explicit = doc(json!({
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code"],
        "scope": "read write",
        "client_name": null,
    }));
    let parsed = parse_document(ID, &explicit).expect("valid");
    assert_eq!(parsed.grant_types, ["authorization_code"]);
    assert_eq!(parsed.scope.as_deref(), Some("read write"));
    assert_eq!(parsed.client_name, None);
}

#[test]
fn documents_refused() {
    let table = [
        (
            json!({"client_id": "https://app.example.com/other.json"}),
            CimdError::ClientIdMismatch,
        ),
        (
            json!({"client_id": format!("{ID}/")}),
            CimdError::ClientIdMismatch,
        ),
        (
            json!({"client_id": ID.to_uppercase()}),
            CimdError::ClientIdMismatch,
        ),
        (json!({"client_id": null}), CimdError::ClientIdMismatch),
        (json!({"client_id": 7}), CimdError::WrongType("client_id")),
        (json!({"client_secret": "s3cret"}), CimdError::ClientSecret),
        (
            json!({"client_secret_expires_at": 0}),
            CimdError::ClientSecret,
        ),
        (
            json!({"token_endpoint_auth_method": "client_secret_basic"}),
            CimdError::AuthMethod,
        ),
        (
            json!({"token_endpoint_auth_method": "client_secret_post"}),
            CimdError::AuthMethod,
        ),
        (
            json!({"token_endpoint_auth_method": "private_key_jwt"}),
            CimdError::AuthMethod,
        ),
        (json!({"redirect_uris": []}), CimdError::NoRedirectUris),
        (json!({"redirect_uris": null}), CimdError::NoRedirectUris),
        (
            json!({"redirect_uris": "https://app.example.com/cb"}),
            CimdError::WrongType("redirect_uris"),
        ),
        (
            json!({"redirect_uris": ["https://app.example.com/cb", 3]}),
            CimdError::WrongType("redirect_uris"),
        ),
        (
            json!({"redirect_uris": ["https://app.example.com/cb", "javascript:alert(1)"]}),
            CimdError::RedirectUri(RedirectError::Scheme("javascript".into())),
        ),
        (
            json!({"redirect_uris": ["http://app.example.com/cb"]}),
            CimdError::RedirectUri(RedirectError::InsecureHttp),
        ),
        (
            json!({"grant_types": ["authorization_code", "client_credentials"]}),
            CimdError::ClientCredentials,
        ),
        (
            json!({"grant_types": ["implicit"]}),
            CimdError::UnsupportedGrant,
        ),
        (
            json!({"grant_types": ["refresh_token"]}),
            CimdError::NoAuthorizationCode,
        ),
        (json!({"grant_types": []}), CimdError::NoAuthorizationCode),
        (
            json!({"client_name": ["x"]}),
            CimdError::WrongType("client_name"),
        ),
        (json!({"scope": 1}), CimdError::WrongType("scope")),
    ];
    for (extra, want) in table {
        assert_eq!(
            parse_document(ID, &doc(extra.clone())),
            Err(want),
            "{extra}"
        );
    }
    assert_eq!(parse_document(ID, b"[1]"), Err(CimdError::NotObject));
    assert_eq!(
        parse_document(ID, b"<html>\n<b>secret</b>"),
        Err(CimdError::NotJson { line: 1, column: 1 })
    );
    let err = parse_document(ID, b"{\"client_id\": \"tok_abc123\"").expect_err("truncated");
    assert!(!err.to_string().contains("tok_abc123"), "{err}");
}

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, HeaderValue::from_static(value));
    }
    map
}

#[test]
fn json_content_types() {
    for ct in [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/oauth-client+json",
    ] {
        assert!(is_json(&headers(&[("content-type", ct)])), "{ct}");
    }
    for ct in [
        "text/html",
        "text/json",
        "application/jsonp",
        "application/json-seq",
    ] {
        assert!(!is_json(&headers(&[("content-type", ct)])), "{ct}");
    }
    assert!(!is_json(&HeaderMap::new()));
}

#[test]
fn cache_lifetime_follows_the_answer_within_bounds() {
    let secs = |pairs: &[(&'static str, &'static str)]| cache_ttl(&headers(pairs)).as_secs();
    assert_eq!(secs(&[]), 3600);
    assert_eq!(secs(&[("cache-control", "public, max-age=7200")]), 7200);
    assert_eq!(secs(&[("cache-control", "Max-Age=600")]), 600);
    assert_eq!(secs(&[("cache-control", "max-age=10")]), 300);
    assert_eq!(secs(&[("cache-control", "max-age=0")]), 300);
    assert_eq!(secs(&[("cache-control", "no-store")]), 300);
    assert_eq!(secs(&[("cache-control", "no-cache, max-age=9000")]), 300);
    assert_eq!(secs(&[("cache-control", "max-age=999999999")]), 86400);
    assert_eq!(secs(&[("cache-control", "max-age=junk")]), 300);
    assert_eq!(
        secs(&[
            ("cache-control", "public"),
            ("cache-control", "max-age=900")
        ]),
        900
    );
    assert_eq!(secs(&[("cache-control", "public")]), 3600);
}
