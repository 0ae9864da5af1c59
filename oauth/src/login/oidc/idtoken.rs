//! Verifying an OpenID Connect ID token against the provider's JWKS: key
//! choice by `kid` and algorithm, the signature, then the claims OIDC Core
//! §3.1.3.7 asks a client to check (iss, aud, azp, exp, iat, nonce).
//!
//! Only asymmetric algorithms are accepted: `none` cannot even be parsed,
//! and HMAC would make the published key set a shared secret. The token's
//! `alg` must be one the key was made for (its `alg` when it has one,
//! otherwise its type and curve), so a key can never be used with an
//! algorithm its owner did not intend.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;
use serde_json::Value;
use subtle::ConstantTimeEq;

/// Clock skew tolerated on `exp`, `nbf` and a future `iat`.
const LEEWAY_S: u64 = 60;
/// An ID token fresh from the token endpoint was issued moments ago; one
/// issued longer ago than this is being replayed or the clocks are broken.
const MAX_AGE_S: f64 = 600.0;

/// One usable verification key from a JWKS.
pub(crate) struct Key {
    kid: Option<String>,
    /// The algorithm the key was published for, if it said.
    alg: Option<Algorithm>,
    /// The algorithms its type and curve allow.
    fits: &'static [Algorithm],
    key: DecodingKey,
}

/// The usable keys of a JWKS; keys of unknown or symmetric types, or meant
/// for encryption, are left out rather than failing the whole set.
#[derive(Default)]
pub(crate) struct KeySet {
    keys: Vec<Key>,
}

impl KeySet {
    /// Parses a JWKS document (`{"keys": [...]}`).
    pub(crate) fn parse(doc: &Value) -> Result<Self, String> {
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("the JWKS has no keys array")?;
        Ok(KeySet {
            keys: keys.iter().filter_map(usable_key).collect(),
        })
    }

    pub(crate) fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// Keys that may verify a token with this `kid` and `alg`: the one with
    /// that kid, or every fitting key when the token names none.
    fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> impl Iterator<Item = &Key> {
        self.keys.iter().filter(move |k| {
            let kid_ok = kid.is_none() || k.kid.as_deref() == kid;
            let alg_ok = match k.alg {
                Some(a) => a == alg,
                None => k.fits.contains(&alg),
            };
            kid_ok && alg_ok && k.fits.contains(&alg)
        })
    }
}

fn usable_key(value: &Value) -> Option<Key> {
    let jwk: Jwk = serde_json::from_value(value.clone()).ok()?;
    if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let fits: &'static [Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => &[
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => &[Algorithm::ES256],
            EllipticCurve::P384 => &[Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            &[Algorithm::EdDSA]
        }
        _ => return None,
    };
    // An `alg` naming no signature algorithm (an encryption one) disqualifies.
    let alg = match jwk.common.key_algorithm {
        Some(a) => Some(a.to_string().parse::<Algorithm>().ok()?),
        None => None,
    };
    Some(Key {
        kid: jwk.common.key_id.clone(),
        alg,
        fits,
        key: DecodingKey::from_jwk(&jwk).ok()?,
    })
}

/// The token's `alg` and `kid`, from its header, refusing anything but the
/// asymmetric signatures.
pub(crate) fn header(token: &str) -> Result<(Algorithm, Option<String>), String> {
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| "the ID token is not a signed JWT with a known algorithm".to_owned())?;
    if matches!(
        header.alg,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
    ) {
        return Err(format!(
            "the ID token is signed with {:?}, not a public key",
            header.alg
        ));
    }
    Ok((header.alg, header.kid))
}

/// What the ID token must say.
pub(crate) struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
    /// Seconds since the epoch.
    pub now: u64,
}

/// The claims Postern reads; the rest are ignored.
#[derive(Debug, Deserialize)]
pub(crate) struct Claims {
    pub sub: String,
    #[serde(default)]
    pub aud: Value,
    #[serde(default)]
    pub azp: Option<String>,
    #[serde(default)]
    pub iat: Option<f64>,
    #[serde(default)]
    pub nonce: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub email_verified: Option<Value>,
    #[serde(default)]
    pub preferred_username: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub groups: Option<Value>,
}

/// Why verification failed, and whether fetching the JWKS again could help.
pub(crate) enum Failure {
    /// No key in the set has the token's kid (the provider may have rotated).
    UnknownKey,
    Invalid(String),
}

/// Checks the signature with the keys and then the claims.
pub(crate) fn verify(keys: &KeySet, token: &str, expected: &Expected) -> Result<Claims, Failure> {
    let (alg, kid) = header(token).map_err(Failure::Invalid)?;
    if let Some(kid) = kid.as_deref()
        && !keys.has_kid(kid)
    {
        return Err(Failure::UnknownKey);
    }
    let mut validation = Validation::new(alg);
    validation.leeway = LEEWAY_S;
    validation.validate_nbf = true;
    validation.set_issuer(&[expected.issuer]);
    validation.set_audience(&[expected.client_id]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let mut last = format!("no key in the JWKS fits a {alg:?} ID token");
    for key in keys.candidates(kid.as_deref(), alg) {
        match jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
            Ok(data) => return check_claims(data.claims, expected).map_err(Failure::Invalid),
            Err(e) => last = describe(e.kind()),
        }
    }
    Err(Failure::Invalid(last))
}

/// The checks jsonwebtoken does not do: iat, nonce, azp.
fn check_claims(claims: Claims, expected: &Expected) -> Result<Claims, String> {
    let now = expected.now as f64;
    match claims.iat {
        None => return Err("the ID token has no iat".into()),
        Some(iat) if iat > now + LEEWAY_S as f64 => {
            return Err("the ID token was issued in the future".into());
        }
        Some(iat) if iat < now - MAX_AGE_S => {
            return Err("the ID token was issued too long ago".into());
        }
        Some(_) => {}
    }
    let nonce_ok = claims
        .nonce
        .as_deref()
        .is_some_and(|n| bool::from(n.as_bytes().ct_eq(expected.nonce.as_bytes())));
    if !nonce_ok {
        return Err("the ID token's nonce is not this login's".into());
    }
    let audiences = claims.aud.as_array().map_or(1, Vec::len);
    match claims.azp.as_deref() {
        Some(azp) if azp != expected.client_id => {
            Err("the ID token was issued to another party (azp)".into())
        }
        None if audiences > 1 => Err("the ID token has several audiences and no azp".into()),
        _ => Ok(claims),
    }
}

fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::InvalidSignature => "the ID token's signature does not verify".into(),
        ErrorKind::ExpiredSignature => "the ID token has expired".into(),
        ErrorKind::ImmatureSignature => "the ID token is not valid yet (nbf)".into(),
        ErrorKind::InvalidIssuer => "the ID token is from another issuer".into(),
        ErrorKind::InvalidAudience => "the ID token is for another client (aud)".into(),
        ErrorKind::MissingRequiredClaim(c) => format!("the ID token has no {c}"),
        ErrorKind::InvalidAlgorithm => "the ID token's algorithm does not fit the key".into(),
        other => format!("the ID token does not decode ({other:?})"),
    }
}

#[cfg(test)]
#[path = "idtoken_tests.rs"]
mod tests;
