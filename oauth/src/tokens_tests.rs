//! Token claims and verification, forged and misused tokens, scopes and
//! allowlists.

use super::*;
use crate::keys::fixtures::{es256, rs256};

const ISS: &str = "https://auth.example.com";
const AUD: &str = "https://mcp.example.com";
const NOW: u64 = 1_800_000_000;

fn keys() -> KeySet {
    KeySet::from_snapshot(&[es256("k1"), rs256("k2")]).expect("keys")
}

fn octocat() -> Identity {
    Identity {
        provider: "github".into(),
        subject: "583231".into(),
        login: "octocat".into(),
        email: Some("octocat@github.com".into()),
        name: Some("The Octocat".into()),
        groups: vec!["github".into()],
    }
}

fn access(keys: &KeySet) -> (AccessClaims, String) {
    let ttl = Duration::from_secs(3600);
    let claims = AccessClaims::new(&octocat(), ISS, AUD, "client-1", "mcp read", NOW, ttl);
    let token = claims.sign(keys).expect("sign");
    (claims, token)
}

fn verify(keys: &KeySet, token: &str, now: u64) -> Result<AccessClaims, TokenError> {
    verify_access(keys, token, &[ISS.to_string()], AUD, now)
}

/// A token with these claims, signed with the set's signing key.
fn raw(keys: &KeySet, typ: &str, claims: serde_json::Value) -> String {
    keys.sign(typ, &claims).expect("sign")
}

#[test]
fn access_round_trip() {
    let keys = keys();
    let (claims, token) = access(&keys);
    assert_eq!(claims.sub, "github:583231");
    assert_eq!(claims.exp, NOW + 3600);
    assert_eq!(verify(&keys, &token, NOW), Ok(claims));
    let header = jsonwebtoken::decode_header(&token).expect("header");
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
}

#[test]
fn expiry_and_skew() {
    let keys = keys();
    let (claims, token) = access(&keys);
    let last = claims.exp + CLOCK_SKEW_S - 1;
    assert!(verify(&keys, &token, last).is_ok());
    assert_eq!(verify(&keys, &token, last + 1), Err(TokenError::Expired));
    let early = json_claims(&claims, |c| c["nbf"] = (NOW + 60).into());
    assert_eq!(
        verify(&keys, &raw(&keys, ACCESS_TYP, early), NOW),
        Err(TokenError::NotYetValid)
    );
    let future = json_claims(&claims, |c| c["iat"] = (NOW + 60).into());
    assert_eq!(
        verify(&keys, &raw(&keys, ACCESS_TYP, future), NOW),
        Err(TokenError::NotYetValid)
    );
    let no_exp = json_claims(&claims, |c| c["exp"] = serde_json::Value::Null);
    assert_eq!(
        verify(&keys, &raw(&keys, ACCESS_TYP, no_exp), NOW),
        Err(TokenError::Malformed)
    );
}

fn json_claims(
    claims: &AccessClaims,
    edit: impl FnOnce(&mut serde_json::Value),
) -> serde_json::Value {
    let mut value = serde_json::to_value(claims).expect("json");
    edit(&mut value);
    value
}

#[test]
fn issuer_and_audience_are_byte_exact() {
    let keys = keys();
    let (_, token) = access(&keys);
    let issuers = |i: &str| vec![i.to_string()];
    let check = |iss: &str, aud: &str| verify_access(&keys, &token, &issuers(iss), aud, NOW);
    assert_eq!(
        check("https://auth.example.com/", AUD),
        Err(TokenError::WrongIssuer)
    );
    assert_eq!(
        check("https://other.example.com", AUD),
        Err(TokenError::WrongIssuer)
    );
    assert_eq!(
        check(ISS, "https://mcp.example.com/"),
        Err(TokenError::WrongAudience)
    );
    assert_eq!(
        check(ISS, "https://other.example.com"),
        Err(TokenError::WrongAudience)
    );
    let several = vec!["https://a.test".to_string(), ISS.to_string()];
    assert!(verify_access(&keys, &token, &several, AUD, NOW).is_ok());
}

#[test]
fn audience_arrays() {
    let keys = keys();
    let (claims, _) = access(&keys);
    let many = json_claims(&claims, |c| {
        c["aud"] = serde_json::json!(["https://a.test", AUD])
    });
    let got = verify(&keys, &raw(&keys, ACCESS_TYP, many), NOW).expect("aud in array");
    assert_eq!(got.aud, AUD);
    let other = json_claims(&claims, |c| {
        c["aud"] = serde_json::json!(["https://a.test"])
    });
    let refused = verify(&keys, &raw(&keys, ACCESS_TYP, other), NOW);
    assert_eq!(refused, Err(TokenError::WrongAudience));
}

#[test]
fn a_session_is_not_an_access_token() {
    let keys = keys();
    let ttl = Duration::from_secs(600);
    let session = SessionClaims::new(&octocat(), ISS, AUD, NOW, ttl);
    let cookie = session.sign(&keys).expect("sign");
    let issuers = [ISS.to_string()];
    assert_eq!(
        verify_session(&keys, &cookie, &issuers, AUD, NOW),
        Ok(session)
    );
    assert_eq!(verify(&keys, &cookie, NOW), Err(TokenError::WrongType));
    let (_, token) = access(&keys);
    let as_session = verify_session(&keys, &token, &issuers, AUD, NOW);
    assert_eq!(as_session, Err(TokenError::WrongType));
}

#[test]
fn forged_tokens_fail() {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    let keys = keys();
    let (claims, token) = access(&keys);
    let parts: Vec<&str> = token.split('.').collect();
    let payload = B64.encode(
        serde_json::to_vec(&json_claims(&claims, |c| c["login"] = "admin".into())).expect("json"),
    );
    let tampered = format!("{}.{payload}.{}", parts[0], parts[2]);
    assert_eq!(verify(&keys, &tampered, NOW), Err(TokenError::BadSignature));
    let header = |h: serde_json::Value| B64.encode(h.to_string());
    let none = header(serde_json::json!({"alg": "none", "kid": "k2", "typ": "at+jwt"}));
    assert_eq!(
        verify(&keys, &format!("{none}.{}.", parts[1]), NOW),
        Err(TokenError::BadSignature)
    );
    let es_on_rsa = header(serde_json::json!({"alg": "ES256", "kid": "k2", "typ": "at+jwt"}));
    let swapped = format!("{es_on_rsa}.{}.{}", parts[1], parts[2]);
    assert_eq!(verify(&keys, &swapped, NOW), Err(TokenError::BadSignature));
    // HMAC keyed with the public key (the classic confusion) is refused.
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    (h.kid, h.typ) = (Some("k2".into()), Some(ACCESS_TYP.into()));
    let n = keys.jwks()["keys"][1]["n"].as_str().expect("n");
    let hmac = jsonwebtoken::encode(
        &h,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(n.as_bytes()),
    )
    .expect("hs256");
    assert_eq!(verify(&keys, &hmac, NOW), Err(TokenError::BadSignature));
    let unknown = header(serde_json::json!({"alg": "RS256", "kid": "k9", "typ": "at+jwt"}));
    let wrong_kid = format!("{unknown}.{}.{}", parts[1], parts[2]);
    assert_eq!(verify(&keys, &wrong_kid, NOW), Err(TokenError::UnknownKey));
    let kidless = header(serde_json::json!({"alg": "RS256", "typ": "at+jwt"}));
    assert_eq!(
        verify(&keys, &format!("{kidless}.{}.{}", parts[1], parts[2]), NOW),
        Err(TokenError::UnknownKey)
    );
    let other_keys = KeySet::from_snapshot(&[es256("k2")]).expect("keys");
    assert_eq!(
        verify(&other_keys, &token, NOW),
        Err(TokenError::BadSignature)
    );
    for garbage in ["", "a.b", "a.b.c", "a.b.c.d", &"x".repeat(20_000)] {
        assert_eq!(
            verify(&keys, garbage, NOW),
            Err(TokenError::Malformed),
            "{garbage:.10}"
        );
    }
}

#[test]
fn scopes() {
    let req = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(has_scopes("mcp read", &req(&["read", "mcp"])));
    assert!(has_scopes("", &[]));
    assert!(!has_scopes("mcp", &req(&["mcp", "write"])));
    assert!(!has_scopes("mcp:read", &req(&["mcp"])));
}

#[test]
fn allowlists() {
    let list = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let open = OauthPolicy::default();
    assert!(allowed(&open, "anyone", None, &[]));
    let policy = OauthPolicy {
        allowed_users: list(&["OctoCat"]),
        allowed_orgs: list(&["Postern-Dev"]),
        allowed_emails: list(&["boss@corp.example", "*@example.com"]),
        ..OauthPolicy::default()
    };
    assert!(allowed(&policy, "octocat", None, &[]));
    assert!(allowed(&policy, "someone", None, &list(&["postern-dev"])));
    assert!(allowed(&policy, "someone", Some("Boss@Corp.Example"), &[]));
    assert!(allowed(&policy, "someone", Some("ann@EXAMPLE.com"), &[]));
    assert!(!allowed(
        &policy,
        "someone",
        Some("ann@eu.example.com"),
        &[]
    ));
    assert!(!allowed(
        &policy,
        "someone",
        Some("ann@example.com.evil"),
        &[]
    ));
    assert!(!allowed(
        &policy,
        "someone",
        Some("other@corp.example"),
        &[]
    ));
    assert!(!allowed(&policy, "octocat2", None, &list(&["postern"])));
    assert!(!allowed(&policy, "someone", None, &[]));
}
