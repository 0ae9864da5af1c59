//! ID token checks with locally signed tokens (the OIDC integration test
//! covers a real provider's keys and tokens).

use super::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

const NOW: u64 = 1_900_000_000;

struct Signer {
    key: EncodingKey,
    jwk: Value,
}

fn ec_signer(kid: &str) -> Signer {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("test setup");
    let raw = pair.public_key_raw();
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
        "x": B64.encode(&raw[1..33]), "y": B64.encode(&raw[33..65]),
    });
    Signer {
        key: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("test setup"),
        jwk,
    }
}

fn claims() -> Value {
    json!({
        "iss": "https://idp.example", "sub": "u1", "aud": "client",
        "exp": NOW + 300, "iat": NOW - 5, "nonce": "n-1",
        "email": "U1@Example.com", "preferred_username": "user1",
    })
}

fn sign(s: &Signer, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &s.key).expect("test setup")
}

fn expected() -> Expected<'static> {
    Expected {
        issuer: "https://idp.example",
        client_id: "client",
        nonce: "n-1",
        now: NOW,
    }
}

fn keys(jwks: &[&Value]) -> KeySet {
    KeySet::parse(&json!({ "keys": jwks })).expect("test setup")
}

fn refusal(keys: &KeySet, token: &str, expected: &Expected) -> String {
    match verify(keys, token, expected) {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(Failure::UnknownKey) => "unknown key".into(),
        Err(Failure::Invalid(why)) => why,
    }
}

// jsonwebtoken checks exp against the real clock, so tokens here expire
// far in the future unless a test wants otherwise; `now` drives iat only.
fn live(mut c: Value) -> Value {
    c["exp"] = json!(jsonwebtoken::get_current_timestamp() + 300);
    c
}

#[test]
fn a_good_token_verifies_with_and_without_kid() {
    let s = ec_signer("k1");
    let set = keys(&[&s.jwk]);
    for kid in [Some("k1"), None] {
        let got = verify(&set, &sign(&s, kid, &live(claims())), &expected());
        let got = got.ok().expect("verifies");
        assert_eq!(got.sub, "u1");
        assert_eq!(got.preferred_username.as_deref(), Some("user1"));
    }
}

#[test]
fn claims_are_checked() {
    let s = ec_signer("k1");
    let set = keys(&[&s.jwk]);
    let cases: [(&str, Value, &str); 8] = [
        ("nonce", json!("other"), "nonce"),
        ("aud", json!("someone-else"), "another client"),
        ("iss", json!("https://evil.example"), "another issuer"),
        ("exp", json!(1_000), "expired"),
        ("iat", json!(NOW - 3600), "too long ago"),
        ("iat", json!(NOW + 3600), "future"),
        ("azp", json!("someone-else"), "azp"),
        ("aud", json!(["client", "other"]), "no azp"),
    ];
    for (claim, value, why) in cases {
        let mut c = live(claims());
        c[claim] = value;
        let got = refusal(&set, &sign(&s, Some("k1"), &c), &expected());
        assert!(got.contains(why), "{claim}: {got}");
    }
    let mut c = live(claims());
    c["aud"] = json!(["other", "client"]);
    c["azp"] = json!("client");
    assert!(verify(&set, &sign(&s, Some("k1"), &c), &expected()).is_ok());
    let mut c = live(claims());
    c.as_object_mut().expect("test setup").remove("nonce");
    assert!(refusal(&set, &sign(&s, Some("k1"), &c), &expected()).contains("nonce"));
}

#[test]
fn signature_and_key_choice() {
    let s = ec_signer("k1");
    let other = ec_signer("k1");
    // Same kid, another key: the signature must not verify.
    let got = refusal(
        &keys(&[&other.jwk]),
        &sign(&s, Some("k1"), &live(claims())),
        &expected(),
    );
    assert!(got.contains("signature"), "{got}");
    // A kid the set does not have asks for a refetch.
    let got = refusal(
        &keys(&[&s.jwk]),
        &sign(&s, Some("k2"), &live(claims())),
        &expected(),
    );
    assert_eq!(got, "unknown key");
    // A key published for another algorithm is not used for ES256.
    let mut es384 = s.jwk.clone();
    es384["alg"] = json!("ES384");
    let got = refusal(
        &keys(&[&es384]),
        &sign(&s, Some("k1"), &live(claims())),
        &expected(),
    );
    assert!(got.contains("no key"), "{got}");
    // Nor one meant for encryption.
    let mut enc = s.jwk.clone();
    enc["use"] = json!("enc");
    assert!(keys(&[&enc]).keys.is_empty());
}

#[test]
fn symmetric_and_unsigned_tokens_are_refused() {
    let oct = json!({"kty": "oct", "k": B64.encode(b"shared"), "kid": "h"});
    assert!(keys(&[&oct]).keys.is_empty());
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &live(claims()),
        &EncodingKey::from_secret(b"shared"),
    )
    .expect("test setup");
    assert!(header(&hs).expect_err("HS256").contains("HS256"));
    let none = format!(
        "{}.{}.",
        B64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        B64.encode(live(claims()).to_string())
    );
    assert!(header(&none).is_err());
    let s = ec_signer("k1");
    assert!(refusal(&keys(&[&s.jwk]), &none, &expected()).contains("not a signed JWT"));
}

#[test]
fn unparsable_keys_are_skipped_not_fatal() {
    let s = ec_signer("k1");
    let odd = json!({"kty": "weird", "kid": "w"});
    let set = keys(&[&odd, &s.jwk]);
    assert_eq!(set.keys.len(), 1);
    assert!(KeySet::parse(&json!({"nokeys": []})).is_err());
}
