//! Agent identity: the JWT an agent presents, checked against the key of
//! the Tunnel it names, and the signing half used by `postern tunnel token`.
//!
//! The algorithm comes from the key, never from the token's header: a PEM
//! public key is EdDSA (Ed25519) or ES256, anything else is an HS256 shared
//! secret (trailing whitespace trimmed on both sides, so a secret written
//! with `echo` still matches). A token is good for a tunnel only when it
//! names it (`sub` or `tunnels`), carries `exp` and `jti`, has not expired
//! and was signed by that tunnel's key. What the agent may then serve is
//! the Tunnel object's hostnames, prefix or port, never the token's.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Seconds of clock skew tolerated on `exp`.
const LEEWAY_SECS: u64 = 30;

/// What an agent token says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The first tunnel, `namespace/name`.
    pub sub: String,
    /// Every tunnel the token covers (may repeat `sub`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tunnels: Vec<String>,
    pub exp: u64,
    #[serde(default)]
    pub iat: u64,
    /// The token's id, logged instead of the token.
    pub jti: String,
}

impl Claims {
    /// Whether the token names `tunnel`.
    pub fn names(&self, tunnel: &str) -> bool {
        self.sub == tunnel || self.tunnels.iter().any(|t| t == tunnel)
    }

    /// Every tunnel named, `sub` first, without repeats.
    pub fn all(&self) -> Vec<String> {
        let mut all = vec![self.sub.clone()];
        for t in &self.tunnels {
            if !all.contains(t) {
                all.push(t.clone());
            }
        }
        all
    }
}

/// Why an agent may not serve a tunnel. [`AuthError::reason`] is the word
/// in metrics, logs, the agent's status line and `AgentConnected`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no such tunnel is programmed")]
    UnknownTunnel,
    #[error("the token does not name this tunnel")]
    WrongTunnel,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not signed by this tunnel's key")]
    BadSignature,
    #[error("the token is malformed: {0}")]
    Malformed(String),
    #[error("the tunnel's key is unusable: {0}")]
    BadKey(String),
    #[error("too many failed attempts from this address; try later")]
    RateLimited,
}

impl AuthError {
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::UnknownTunnel => "unknown_tunnel",
            AuthError::WrongTunnel => "wrong_tunnel",
            AuthError::Expired => "expired",
            AuthError::BadSignature => "bad_signature",
            AuthError::Malformed(_) => "malformed",
            AuthError::BadKey(_) => "bad_key",
            AuthError::RateLimited => "rate_limited",
        }
    }
}

/// A tunnel's verification key, parsed once per snapshot.
#[derive(Clone)]
pub struct AgentKey {
    alg: Algorithm,
    key: DecodingKey,
}

impl std::fmt::Debug for AgentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AgentKey({:?})", self.alg)
    }
}

impl AgentKey {
    /// A PEM public key (Ed25519 or P-256), else an HS256 secret.
    pub fn parse(material: &str) -> Result<AgentKey, AuthError> {
        if material.contains("-----BEGIN") {
            let pem = material.trim().as_bytes();
            if let Ok(key) = DecodingKey::from_ed_pem(pem) {
                return Ok(AgentKey {
                    alg: Algorithm::EdDSA,
                    key,
                });
            }
            return DecodingKey::from_ec_pem(pem)
                .map(|key| AgentKey {
                    alg: Algorithm::ES256,
                    key,
                })
                .map_err(|e| {
                    AuthError::BadKey(format!("not an Ed25519 or P-256 public key: {e}"))
                });
        }
        let secret = material.trim_end();
        if secret.len() < 16 {
            return Err(AuthError::BadKey(
                "an HS256 secret needs at least 16 bytes".into(),
            ));
        }
        Ok(AgentKey {
            alg: Algorithm::HS256,
            key: DecodingKey::from_secret(secret.as_bytes()),
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// Checks `token` for `tunnel`.
    pub fn verify(&self, token: &str, tunnel: &str) -> Result<Claims, AuthError> {
        let mut validation = Validation::new(self.alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &validation).map_err(|e| {
            match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidSignature
                | ErrorKind::InvalidAlgorithm
                | ErrorKind::InvalidEcdsaKey
                | ErrorKind::InvalidKeyFormat => AuthError::BadSignature,
                _ => AuthError::Malformed(e.to_string()),
            }
        })?;
        let claims = data.claims;
        if claims.jti.is_empty() {
            return Err(AuthError::Malformed("no jti".into()));
        }
        if !claims.names(tunnel) {
            return Err(AuthError::WrongTunnel);
        }
        Ok(claims)
    }

    /// Whether `claims` (verified earlier) have expired by `now` (Unix seconds).
    pub fn expired(claims: &Claims, now: u64) -> bool {
        claims.exp.saturating_add(LEEWAY_SECS) < now
    }
}

/// Signs claims with a private key file's contents: a PKCS#8 PEM (Ed25519
/// or P-256) or the HS256 secret.
pub fn sign(claims: &Claims, material: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(material).unwrap_or("");
    let (alg, key) = if text.contains("-----BEGIN") {
        let pem = text.trim().as_bytes();
        match EncodingKey::from_ed_pem(pem) {
            Ok(key) => (Algorithm::EdDSA, key),
            Err(_) => {
                let key = EncodingKey::from_ec_pem(pem)
                    .map_err(|e| format!("not an Ed25519 or P-256 private key: {e}"))?;
                (Algorithm::ES256, key)
            }
        }
    } else {
        let secret = text.trim_end();
        if secret.len() < 16 {
            return Err("an HS256 secret needs at least 16 bytes".into());
        }
        (
            Algorithm::HS256,
            EncodingKey::from_secret(secret.as_bytes()),
        )
    };
    jsonwebtoken::encode(&Header::new(alg), claims, &key).map_err(|e| e.to_string())
}

/// The tunnels a token names and its `jti`, read *without* checking the
/// signature: only to know which keys to check it with, and what to log.
pub fn peek(token: &str) -> Option<(Vec<String>, String)> {
    #[derive(Deserialize)]
    struct Named {
        #[serde(default)]
        sub: String,
        #[serde(default)]
        tunnels: Vec<String>,
        #[serde(default)]
        jti: String,
    }
    let payload = token.split('.').nth(1)?;
    let bytes = base64::Engine::decode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        payload.trim_end_matches('='),
    )
    .ok()?;
    let named: Named = serde_json::from_slice(&bytes).ok()?;
    let mut all: Vec<String> = Vec::new();
    for t in std::iter::once(named.sub).chain(named.tunnels) {
        if !t.is_empty() && !all.contains(&t) {
            all.push(t);
        }
    }
    // At most a handful: a token cannot make the data plane check thousands.
    all.truncate(16);
    let mut jti = named.jti;
    jti.truncate(64);
    Some((all, jti))
}

/// Now, in Unix seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::keys::{KeyAlg, generate};

    fn claims(sub: &str, exp: u64) -> Claims {
        Claims {
            sub: sub.into(),
            tunnels: vec![],
            exp,
            iat: 0,
            jti: "j1".into(),
        }
    }

    #[test]
    fn each_kind_of_key_verifies_its_own_tokens_only() {
        let later = unix_now() + 3600;
        for alg in [KeyAlg::Ed25519, KeyAlg::Es256, KeyAlg::Hs256] {
            let pair = generate(alg).expect("keygen");
            let key = AgentKey::parse(&pair.public).expect("parse");
            let token = sign(&claims("ns/a", later), pair.private.as_bytes()).expect("sign");
            assert_eq!(key.verify(&token, "ns/a").map(|c| c.jti), Ok("j1".into()));
            assert_eq!(key.verify(&token, "ns/b"), Err(AuthError::WrongTunnel));
            let other = generate(alg).expect("keygen");
            let forged = sign(&claims("ns/a", later), other.private.as_bytes()).expect("sign");
            assert_eq!(key.verify(&forged, "ns/a"), Err(AuthError::BadSignature));
        }
    }

    #[test]
    fn expired_and_algorithm_swapped_tokens_are_refused() {
        let pair = generate(KeyAlg::Ed25519).expect("keygen");
        let key = AgentKey::parse(&pair.public).expect("parse");
        let old = sign(&claims("ns/a", unix_now() - 120), pair.private.as_bytes()).expect("sign");
        assert_eq!(key.verify(&old, "ns/a"), Err(AuthError::Expired));
        // HS256 signed with the public key's text: the classic confusion.
        let hs = sign(&claims("ns/a", unix_now() + 60), b"0123456789abcdef0123").expect("sign");
        assert_eq!(key.verify(&hs, "ns/a"), Err(AuthError::BadSignature));
        assert!(matches!(
            key.verify("not.a.jwt", "ns/a"),
            Err(AuthError::Malformed(_) | AuthError::BadSignature)
        ));
    }

    #[test]
    fn shared_secrets_ignore_a_trailing_newline_and_must_be_long() {
        let key = AgentKey::parse("0123456789abcdef\n").expect("parse");
        let token = sign(&claims("ns/a", unix_now() + 60), b"0123456789abcdef").expect("sign");
        assert!(key.verify(&token, "ns/a").is_ok());
        assert!(matches!(
            AgentKey::parse("short"),
            Err(AuthError::BadKey(_))
        ));
    }

    #[test]
    fn peek_reads_names_without_verifying() {
        let pair = generate(KeyAlg::Hs256).expect("keygen");
        let mut c = claims("ns/a", unix_now() + 60);
        c.tunnels = vec!["ns/a".into(), "ns/b".into()];
        let token = sign(&c, pair.private.as_bytes()).expect("sign");
        assert_eq!(
            peek(&token),
            Some((vec!["ns/a".into(), "ns/b".into()], "j1".into()))
        );
        assert_eq!(peek("garbage"), None);
    }

    #[test]
    fn several_tunnels_in_one_token() {
        let mut c = claims("ns/a", unix_now() + 60);
        c.tunnels = vec!["ns/a".into(), "ns/b".into()];
        assert!(c.names("ns/b"));
        assert_eq!(c.all(), ["ns/a", "ns/b"]);
    }
}
