//! Signing keys: the snapshot's PKCS#8 keys turned into a [`KeySet`] that
//! signs with the newest key, verifies with all of them, and publishes
//! their public halves as a JWKS. Rotation is adding a key with a greater
//! kid: tokens signed by the old one stay valid until they expire.
//!
//! It knows JWS, not claims: what a token says is checked in `tokens`.
//! Private key material never leaves this module, not even through `Debug`.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use postern_snapshot::{SigningAlg, SigningKey};
use ring::rand::SystemRandom;
use ring::rsa::PublicKeyComponents;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RsaKeyPair};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::tokens::TokenError;

/// Tokens longer than this are refused before any parsing: ours are well
/// under 2 KiB, and a header full of groups stays far below it.
const MAX_TOKEN_LEN: usize = 16 * 1024;

const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";

/// Why a key set cannot be built, or a token not signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("no signing key")]
    Empty,
    #[error("two signing keys share the kid {0:?}")]
    DuplicateKid(String),
    #[error("signing key {kid:?}: {reason}")]
    Invalid { kid: String, reason: String },
    #[error("signing failed: {0}")]
    Sign(String),
    #[error("generating a key failed")]
    Generate,
}

/// The keys of one authorization server. Cheap to clone.
#[derive(Clone)]
pub struct KeySet {
    inner: Arc<Inner>,
}

struct Inner {
    /// Sorted by kid; the last one signs.
    keys: Vec<Key>,
    jwks: Value,
}

struct Key {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// Signature only: claims are checked by the caller with its own clock.
    validation: Validation,
}

/// The part of a JWS header this module decides on, read before the
/// signature is checked so that the key can be picked.
#[derive(serde::Deserialize)]
struct PeekedHeader {
    alg: String,
    kid: Option<String>,
    typ: Option<String>,
    crit: Option<Value>,
}

impl KeySet {
    /// Loads PKCS#8 PEM keys (ES256: EC P-256; RS256: RSA of 2048 bits or
    /// more). The key with the greatest kid signs.
    pub fn from_snapshot(keys: &[SigningKey]) -> Result<KeySet, KeyError> {
        let mut sorted: Vec<&SigningKey> = keys.iter().collect();
        sorted.sort_by(|a, b| a.kid.cmp(&b.kid));
        if let Some(pair) = sorted.windows(2).find(|w| w[0].kid == w[1].kid) {
            return Err(KeyError::DuplicateKid(pair[0].kid.clone()));
        }
        let mut loaded = Vec::with_capacity(sorted.len());
        let mut jwks = Vec::with_capacity(sorted.len());
        for key in sorted {
            let (key, jwk) = load(key)?;
            loaded.push(key);
            jwks.push(jwk);
        }
        if loaded.is_empty() {
            return Err(KeyError::Empty);
        }
        let jwks = json!({ "keys": jwks });
        Ok(KeySet {
            inner: Arc::new(Inner { keys: loaded, jwks }),
        })
    }

    /// RFC 7517 `{"keys": [...]}`: every key's public half, with kid, alg
    /// and `use: sig`.
    pub fn jwks(&self) -> &Value {
        &self.inner.jwks
    }

    /// The kid new tokens are signed with.
    pub fn signing_kid(&self) -> &str {
        &self.signer().kid
    }

    /// Signs `claims` as a compact JWS whose header carries alg, kid and
    /// `typ` (which [`KeySet::verify`] insists on, so one kind of token
    /// cannot stand in for another).
    pub fn sign<T: Serialize>(&self, typ: &str, claims: &T) -> Result<String, KeyError> {
        let key = self.signer();
        let mut header = Header::new(key.alg);
        header.kid = Some(key.kid.clone());
        header.typ = Some(typ.to_string());
        jsonwebtoken::encode(&header, claims, &key.encoding)
            .map_err(|e| KeyError::Sign(e.to_string()))
    }

    /// Checks a token's signature with the key its kid names and that its
    /// header `typ` is `typ` byte for byte, then returns its claims. The
    /// header's alg must be that key's: `none`, HMAC and a swapped
    /// algorithm all fail as [`TokenError::BadSignature`]. Claims (issuer,
    /// audience, times) are the caller's to check.
    pub fn verify<T: DeserializeOwned>(&self, typ: &str, token: &str) -> Result<T, TokenError> {
        let header = peek_header(token)?;
        if header.crit.is_some() {
            // No extension is understood here, so none can be critical.
            return Err(TokenError::Malformed);
        }
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let key = self.find(&kid).ok_or(TokenError::UnknownKey)?;
        if header.alg != alg_name(key.alg) {
            return Err(TokenError::BadSignature);
        }
        let data = jsonwebtoken::decode::<T>(token, &key.decoding, &key.validation).map_err(
            |e| match e.kind() {
                ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => {
                    TokenError::BadSignature
                }
                _ => TokenError::Malformed,
            },
        )?;
        if header.typ.as_deref() != Some(typ) {
            return Err(TokenError::WrongType);
        }
        Ok(data.claims)
    }

    fn signer(&self) -> &Key {
        // from_snapshot refuses an empty set, so there is a last key.
        &self.inner.keys[self.inner.keys.len() - 1]
    }

    fn find(&self, kid: &str) -> Option<&Key> {
        self.inner.keys.iter().find(|k| k.kid == kid)
    }
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<&str> = self.inner.keys.iter().map(|k| k.kid.as_str()).collect();
        f.debug_struct("KeySet")
            .field("kids", &kids)
            .field("signing", &self.signing_kid())
            .finish()
    }
}

/// A fresh EC P-256 key as PKCS#8 PEM: what the operator stores in a
/// Secret, and what standalone mode signs with when given no key.
pub fn generate_es256_pem() -> Result<String, KeyError> {
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .map_err(|_| KeyError::Generate)?;
    let b64 = STANDARD.encode(doc.as_ref());
    let mut pem = format!("{PEM_BEGIN}\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str(PEM_END);
    pem.push('\n');
    Ok(pem)
}

/// The halves of one key and its JWK before kid, alg and use are added.
type Parts = (EncodingKey, DecodingKey, Value);

/// One key: its signing and verification halves, and its JWK.
fn load(key: &SigningKey) -> Result<(Key, Value), KeyError> {
    let invalid = |reason: String| KeyError::Invalid {
        kid: key.kid.clone(),
        reason,
    };
    let der = pem_der(&key.private_key_pem)
        .ok_or_else(|| invalid("not a PKCS#8 PEM private key".into()))?;
    let (alg, parts) = match key.alg {
        SigningAlg::ES256 => (Algorithm::ES256, ec_parts(&der)),
        SigningAlg::RS256 => (Algorithm::RS256, rsa_parts(&der, &key.private_key_pem)),
    };
    let (encoding, decoding, mut jwk) = parts.map_err(invalid)?;
    jwk["kid"] = json!(key.kid);
    jwk["alg"] = json!(alg_name(alg));
    jwk["use"] = json!("sig");
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let kid = key.kid.clone();
    let key = Key {
        kid,
        alg,
        encoding,
        decoding,
        validation,
    };
    Ok((key, jwk))
}

fn ec_parts(der: &[u8]) -> Result<Parts, String> {
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &SystemRandom::new())
            .map_err(|e| format!("not an EC P-256 key ({e})"))?;
    // An uncompressed point: 0x04, then x and y of 32 bytes each.
    let point = pair
        .public_key()
        .as_ref()
        .get(1..)
        .filter(|p| p.len() == 64);
    let (x, y) = point.ok_or("bad EC point")?.split_at(32);
    let (x, y) = (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y));
    let decoding = DecodingKey::from_ec_components(&x, &y).map_err(|e| e.to_string())?;
    let jwk = json!({ "kty": "EC", "crv": "P-256", "x": x, "y": y });
    Ok((EncodingKey::from_ec_der(der), decoding, jwk))
}

fn rsa_parts(der: &[u8], pem: &str) -> Result<Parts, String> {
    let pair = RsaKeyPair::from_pkcs8(der).map_err(|e| format!("not an RSA key ({e})"))?;
    let public: PublicKeyComponents<Vec<u8>> = pair.public().into();
    let n = URL_SAFE_NO_PAD.encode(&public.n);
    let e = URL_SAFE_NO_PAD.encode(&public.e);
    let decoding = DecodingKey::from_rsa_components(&n, &e).map_err(|e| e.to_string())?;
    // jsonwebtoken signs RSA from PKCS#1; its PEM reader finds that
    // inside the PKCS#8 wrapping.
    let encoding = EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| e.to_string())?;
    let jwk = json!({ "kty": "RSA", "n": n, "e": e });
    Ok((encoding, decoding, jwk))
}

fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::ES256 => "ES256",
        Algorithm::RS256 => "RS256",
        // load() builds no other kind of key.
        _ => "unsupported",
    }
}

/// The DER inside a `PRIVATE KEY` PEM block (PKCS#8, as the compiler
/// accepts it).
fn pem_der(pem: &str) -> Option<Vec<u8>> {
    let body = pem.trim().strip_prefix(PEM_BEGIN)?.strip_suffix(PEM_END)?;
    let b64: String = body.split_ascii_whitespace().collect();
    STANDARD.decode(b64).ok()
}

fn peek_header(token: &str) -> Result<PeekedHeader, TokenError> {
    if token.len() > MAX_TOKEN_LEN || token.split('.').count() != 3 {
        return Err(TokenError::Malformed);
    }
    let encoded = token.split('.').next().unwrap_or_default();
    let bytes = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

/// Keys for tests: ring cannot generate RSA keys, so one generated once
/// with `openssl genpkey -algorithm RSA` lives here.
#[cfg(test)]
pub(crate) mod fixtures {
    use postern_snapshot::{SigningAlg, SigningKey};

    pub const RSA_PEM: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCNFgSn6ZyqIoTy\n\
mSKJxnxL1Ch6ebMtmT2+cfvVyuZP1Uvcg9w9CGR8IQ5nxJxlTgBdaRTAusQ05TmC\n\
xo9eRUXpqd6KopoVbbkTf+2mzpIMWXV43Ob4MtfOn+HI8j7X+/xGbGYdmY05DXCO\n\
Hn9ooAFr40U66BwP09OY4c/l4GVTE5E7OwG8BkZfLQsAA4txWcKTYokWDkOOE+Da\n\
MfcXGxS4LwBPZiwbITOhTH9d/3mw1C9T5n/vg0skvqh2NPZc9OV5h0PGhnnZqbhC\n\
ii+wtEJusJzsTvyKpL2+AJyEpj4YRjG3YPt3yQ7ZwhwiAIjgsiMh8DNoKL1eAioE\n\
AYiM9IB7AgMBAAECggEALq0kKTE+pYL6HRDQvmguYx/zrGFrCCD0rncjbB3OiIb2\n\
rCPrzz1hkTeWfnori9B8imrjdMfVdfKITl3GvNeKQ73xZEhbVc+RNYRTaaZZ50AJ\n\
f00GFQMtJqz6k/KhG+/ADMR8HDra4A80N7CbUk/taHYuR0jXT90y2heLInBU1WDc\n\
G6yCQ08gpkEOG1k6gJMAD+gNUVio0LPUaxHm9GYHlwB8ENHpJ2B0Zc4PqCywTnBQ\n\
tJZ5sIovHQ5ALfqrrQbO+TTPxxqBUmMc/PLUVAri60jlsX+FwbQ4l+c73LQuPGml\n\
++egPZPG1D+ty03Plp6Sbhsukzsc67NKhe50G3iH0QKBgQDBotQuXPi2+x8onPBZ\n\
WcsxUbpqFRGdaYJpHO9wNX+C/qLoqX+ynKPeD4OqPfemskWn91AdFUGjlGeVr6dU\n\
dsYK4RcAh9Qa73cLMKovz4V7WsQEk9qbGiSoV4kjNYRETxd1P2sZosllr49yUk5S\n\
I1xHVzmV8a4QYD7K2LnA4BoLlwKBgQC6hninr/xMedRzX2AbwWUkDeq+2sGKhZ1I\n\
/xeSlx4Je61ySXmjQI32EjdIJXs4bVKtXqC/2znjvc4AtUgFshu5+/ls1IxY2+4P\n\
nE2BpvWw7QKppmPoJKb48aBaQeJ9c2rsezNA3Ul5Ol4WzVzu1GeIeTPC9QHLKRGg\n\
SD5JY1vevQKBgQCCOKkNTQUOua9otrKExHh8AISnVufzvsMvQYBdK/1G8UxJv8Pb\n\
MLCbZD+du/LSrk1d+lpsVKFCC0nmRqz3hrEFG/9GIhKo0qZyZhXt9VfFb3MnyO9Z\n\
I6nHdKcLgLAk6DPUbAPwx6M9uWV08pktcA5dA/H8Pv5akP9pl3rElXGunQKBgBzC\n\
iS4J45QDIO/dH9uHuUmS38QnxLnQGk1cD81pgZciu76od5nlZT4w1tdH+DTeHmZe\n\
9dg/PDDSXkYbrYw7Ry0pHe9a4nz9BDrh9c1s6esq0ENKRZNQu3IdB4WDLSH8vtrR\n\
sDhrJl4L0uAfMBofJAuV7JY94tXpci9NlFUKferdAoGAAoh2oE+6XUIqb9aq9VxG\n\
S/uYsfM7gHlJ3z+bqW1QIy4Uqpwl1UX8qBoZt9ME24uEYUs8Nzttcu8LRgZzwshC\n\
9YMG1SuWQpq3ohL9sWNztuxwO933n0XejX8oWdHozvoCoPO9RbLzGc48WkNg3ten\n\
CN/gQzyus0907Ef2V78KTNU=\n\
-----END PRIVATE KEY-----\n\
";

    pub fn es256(kid: &str) -> SigningKey {
        let pem = super::generate_es256_pem().expect("generate");
        SigningKey {
            kid: kid.into(),
            alg: SigningAlg::ES256,
            private_key_pem: pem,
        }
    }

    pub fn rs256(kid: &str) -> SigningKey {
        SigningKey {
            kid: kid.into(),
            alg: SigningAlg::RS256,
            private_key_pem: RSA_PEM.into(),
        }
    }
}

#[cfg(test)]
#[path = "keys_tests.rs"]
mod tests;
