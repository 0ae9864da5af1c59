//! RFC 7636 PKCE with the S256 method only (OAuth 2.1 and MCP refuse
//! `plain`), and the two primitives the rest of the crate reuses for its
//! own secrets: 32 random bytes in base64url, and SHA-256 in base64url.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Whether `verifier` hashes to `challenge`; the comparison takes the same
/// time wherever the strings differ. A malformed verifier never matches.
pub fn verify_s256(verifier: &str, challenge: &str) -> bool {
    if !valid_verifier(verifier) {
        return false;
    }
    let computed = challenge_s256(verifier);
    computed.as_bytes().ct_eq(challenge.as_bytes()).into()
}

/// An S256 challenge is the base64url (unpadded) SHA-256 of the verifier:
/// exactly 43 characters that decode to 32 bytes.
pub fn valid_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && URL_SAFE_NO_PAD
            .decode(challenge)
            .is_ok_and(|bytes| bytes.len() == 32)
}

/// RFC 7636 §4.1: 43 to 128 characters of ALPHA / DIGIT / `-._~`.
pub fn valid_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// `BASE64URL(SHA256(verifier))`.
pub fn challenge_s256(verifier: &str) -> String {
    digest(verifier)
}

/// A fresh verifier: 32 random bytes, 43 characters.
pub fn random_verifier() -> String {
    random_secret()
}

/// 256 bits from the thread's CSPRNG in base64url: authorization codes,
/// refresh tokens, family ids, token ids.
pub(crate) fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The base64url SHA-256 of a secret: what the store keeps in its place.
pub(crate) fn digest(secret: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert_eq!(challenge_s256(verifier), challenge);
        assert!(verify_s256(verifier, challenge));
        assert!(valid_challenge(challenge));
    }

    #[test]
    fn mismatches_fail() {
        let v = random_verifier();
        let c = challenge_s256(&v);
        assert!(verify_s256(&v, &c));
        assert!(!verify_s256(&random_verifier(), &c));
        assert!(!verify_s256(&v, &c[..42]));
        assert!(!verify_s256(&v, ""));
        // `plain` (challenge = verifier) never passes as S256.
        assert!(!verify_s256(&v, &v));
    }

    #[test]
    fn verifier_grammar() {
        assert!(valid_verifier(&"a".repeat(43)));
        assert!(valid_verifier(&"Az09-._~".repeat(16)));
        assert!(!valid_verifier(&"a".repeat(42)));
        assert!(!valid_verifier(&"a".repeat(129)));
        assert!(!valid_verifier(&format!("{}+", "a".repeat(43))));
        assert!(!valid_verifier(&format!("{}/", "a".repeat(43))));
        assert!(!valid_verifier(&format!("{} ", "a".repeat(43))));
        assert!(!valid_verifier(&format!("{}é", "a".repeat(42))));
        let short_bad = "a".repeat(42) + "=";
        assert!(!verify_s256(&short_bad, &challenge_s256(&short_bad)));
    }

    #[test]
    fn challenge_grammar() {
        assert!(!valid_challenge(&"a".repeat(42)));
        assert!(!valid_challenge(&"a".repeat(44)));
        assert!(!valid_challenge(&format!("{}=", "a".repeat(42))));
        assert!(!valid_challenge(&format!("{}+", "a".repeat(42))));
        // 43 characters whose last one carries bits past the 32 bytes.
        assert!(!valid_challenge(&"_".repeat(43)));
        assert!(valid_challenge(&challenge_s256(&random_verifier())));
    }

    #[test]
    fn random_verifiers_are_valid_and_distinct() {
        let a = random_verifier();
        assert!(valid_verifier(&a));
        assert_eq!(a.len(), 43);
        assert_ne!(a, random_verifier());
    }
}
