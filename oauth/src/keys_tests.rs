//! Key sets: loading, rotation, JWKS, and what a third party holding
//! only the JWKS can verify.

use super::fixtures::{es256, rs256};
use super::*;

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Claims {
    sub: String,
}

fn claims() -> Claims {
    Claims {
        sub: "octocat".into(),
    }
}

#[test]
fn es256_and_rs256_round_trip() {
    for key in [es256("k1"), rs256("k1")] {
        let set = KeySet::from_snapshot(std::slice::from_ref(&key)).expect("keys");
        let token = set.sign("t+jwt", &claims()).expect("sign");
        assert_eq!(
            set.verify::<Claims>("t+jwt", &token),
            Ok(claims()),
            "{:?}",
            key.alg
        );
    }
}

#[test]
fn the_last_kid_signs_and_every_kid_verifies() {
    let (a, b) = (es256("2026-01"), rs256("2026-02"));
    let old = KeySet::from_snapshot(std::slice::from_ref(&a)).expect("old");
    let old_token = old.sign("t", &claims()).expect("sign");
    // Given out of order: sorted by kid, the greatest signs.
    let rotated = KeySet::from_snapshot(&[b, a]).expect("rotated");
    assert_eq!(rotated.signing_kid(), "2026-02");
    assert_eq!(rotated.verify::<Claims>("t", &old_token), Ok(claims()));
    let new_token = rotated.sign("t", &claims()).expect("sign");
    let header = jsonwebtoken::decode_header(&new_token).expect("header");
    assert_eq!(
        (header.alg, header.kid.as_deref()),
        (Algorithm::RS256, Some("2026-02"))
    );
    assert_eq!(
        old.verify::<Claims>("t", &new_token),
        Err(TokenError::UnknownKey)
    );
}

#[test]
fn jwks_has_public_parts_only_and_verifies_tokens() {
    let set = KeySet::from_snapshot(&[es256("a"), rs256("b")]).expect("keys");
    let keys = set.jwks()["keys"].as_array().expect("keys array");
    assert_eq!(keys.len(), 2);
    let ec = &keys[0];
    assert_eq!(
        (ec["kty"].as_str(), ec["crv"].as_str()),
        (Some("EC"), Some("P-256"))
    );
    assert_eq!(
        (ec["kid"].as_str(), ec["alg"].as_str()),
        (Some("a"), Some("ES256"))
    );
    let rsa = &keys[1];
    assert_eq!(
        (rsa["kty"].as_str(), rsa["e"].as_str()),
        (Some("RSA"), Some("AQAB"))
    );
    assert_eq!(
        (rsa["use"].as_str(), rsa["alg"].as_str()),
        (Some("sig"), Some("RS256"))
    );
    for jwk in keys {
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(jwk.get(private).is_none(), "{private} published");
        }
    }
    // A third party holding only the JWKS can verify what we sign.
    let token = set.sign("t", &claims()).expect("sign");
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(set.jwks().clone()).expect("jwks");
    let jwk = jwks.find("b").expect("kid b");
    let key = DecodingKey::from_jwk(jwk).expect("decoding key");
    let mut v = Validation::new(Algorithm::RS256);
    v.required_spec_claims.clear();
    let got = jsonwebtoken::decode::<Claims>(&token, &key, &v).expect("verify");
    assert_eq!(got.claims, claims());
}

#[test]
fn bad_key_sets_are_refused() {
    assert_eq!(KeySet::from_snapshot(&[]).err(), Some(KeyError::Empty));
    let dup = KeySet::from_snapshot(&[es256("k"), rs256("k")]).err();
    assert_eq!(dup, Some(KeyError::DuplicateKid("k".into())));
    let mut swapped = es256("k");
    swapped.alg = SigningAlg::RS256;
    assert!(matches!(
        KeySet::from_snapshot(&[swapped]),
        Err(KeyError::Invalid { .. })
    ));
    let mut garbage = rs256("k");
    garbage.private_key_pem = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----".into();
    assert!(matches!(
        KeySet::from_snapshot(&[garbage]),
        Err(KeyError::Invalid { .. })
    ));
}

#[test]
fn debug_prints_no_secret() {
    let set = KeySet::from_snapshot(&[es256("k1"), rs256("k2")]).expect("keys");
    let shown = format!("{set:?}");
    assert!(shown.contains("k1") && shown.contains("k2"), "{shown}");
    assert!(
        !shown.contains("PRIVATE") && !shown.contains("MII"),
        "{shown}"
    );
}

#[test]
fn generated_pem_loads_with_rcgen_too() {
    let pem = generate_es256_pem().expect("generate");
    assert!(pem.starts_with(PEM_BEGIN) && pem.trim_end().ends_with(PEM_END));
    rcgen::KeyPair::from_pem(&pem).expect("rcgen reads it");
    let rcgen_pem = rcgen::KeyPair::generate()
        .expect("rcgen key")
        .serialize_pem();
    let key = SigningKey {
        kid: "r".into(),
        alg: SigningAlg::ES256,
        private_key_pem: rcgen_pem,
    };
    KeySet::from_snapshot(&[key]).expect("rcgen's PKCS#8 loads");
}
