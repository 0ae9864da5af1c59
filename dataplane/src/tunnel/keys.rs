//! `postern tunnel keygen` and `postern tunnel token`: key pairs for the
//! Tunnel's `agentKeySecretRef` and the agent tokens they sign.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use clap::{Args, Subcommand, ValueEnum};
use rand::RngCore;

use super::auth::{Claims, sign, unix_now};

/// `postern tunnel ...`.
#[derive(Debug, Subcommand)]
pub enum TunnelCommand {
    /// Makes a key: PREFIX.key (private; the agent's side) and, for key
    /// pairs, PREFIX.pub (public; what the Tunnel's Secret holds). For
    /// hs256 the Secret holds the same bytes as PREFIX.key.
    Keygen(KeygenArgs),
    /// Prints an agent token for one or more Tunnels on stdout.
    Token(TokenArgs),
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    #[arg(long, value_enum, default_value = "ed25519")]
    pub alg: KeyAlg,
    /// Files are written as PREFIX.key and PREFIX.pub.
    #[arg(long, value_name = "PREFIX")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// `namespace/name` of a Tunnel the token covers (repeatable).
    #[arg(long = "tunnel", value_name = "NS/NAME", required = true, value_parser = parse_tunnel_id)]
    pub tunnels: Vec<String>,
    /// The private key (PEM) or the HS256 secret.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// How long the token is good for: 30d, 12h, 15m, 60s.
    #[arg(long, default_value = "30d", value_parser = parse_ttl)]
    pub ttl: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KeyAlg {
    /// EdDSA over Ed25519 (the default).
    Ed25519,
    /// ECDSA P-256 with SHA-256.
    Es256,
    /// A shared secret.
    Hs256,
}

/// A new key: `private` for the agent's side, `public` for the Secret (the
/// same as `private` for HS256).
pub struct KeyPair {
    pub private: String,
    pub public: String,
}

pub fn generate(alg: KeyAlg) -> Result<KeyPair, String> {
    let pair = |algorithm| {
        let key = rcgen::KeyPair::generate_for(algorithm).map_err(|e| e.to_string())?;
        Ok(KeyPair {
            private: key.serialize_pem(),
            public: key.public_key_pem(),
        })
    };
    match alg {
        KeyAlg::Ed25519 => pair(&rcgen::PKCS_ED25519),
        KeyAlg::Es256 => pair(&rcgen::PKCS_ECDSA_P256_SHA256),
        KeyAlg::Hs256 => {
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
            Ok(KeyPair {
                private: secret.clone(),
                public: secret,
            })
        }
    }
}

/// A fresh token for `tunnels`, valid for `ttl`.
pub fn token(tunnels: &[String], key: &[u8], ttl: Duration) -> Result<String, String> {
    let now = unix_now();
    let mut jti = [0u8; 12];
    rand::rng().fill_bytes(&mut jti);
    let claims = Claims {
        sub: tunnels.first().cloned().ok_or("no tunnel")?,
        tunnels: if tunnels.len() > 1 {
            tunnels.to_vec()
        } else {
            Vec::new()
        },
        exp: now.saturating_add(ttl.as_secs()),
        iat: now,
        jti: hex_of(&jti),
    };
    sign(&claims, key)
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs a `postern tunnel` subcommand; the text is for stdout.
pub fn run(command: &TunnelCommand) -> Result<String, String> {
    match command {
        TunnelCommand::Keygen(args) => {
            let pair = generate(args.alg)?;
            let private = with_ext(&args.out, "key");
            write_private(&private, &pair.private)?;
            if args.alg == KeyAlg::Hs256 {
                return Ok(format!(
                    "wrote {} (the Secret's key holds the same bytes)\n",
                    private.display()
                ));
            }
            let public = with_ext(&args.out, "pub");
            std::fs::write(&public, &pair.public)
                .map_err(|e| format!("writing {}: {e}", public.display()))?;
            Ok(format!(
                "wrote {} (keep it with the agent) and {} (put it in the Tunnel's agentKeySecretRef Secret)\n",
                private.display(),
                public.display()
            ))
        }
        TunnelCommand::Token(args) => {
            let key = std::fs::read(&args.key)
                .map_err(|e| format!("reading {}: {e}", args.key.display()))?;
            Ok(format!("{}\n", token(&args.tunnels, &key, args.ttl)?))
        }
    }
}

fn with_ext(prefix: &Path, ext: &str) -> PathBuf {
    let mut name = prefix.as_os_str().to_os_string();
    name.push(".");
    name.push(ext);
    PathBuf::from(name)
}

fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    file.write_all(text.as_bytes())
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

/// `namespace/name`.
pub fn parse_tunnel_id(text: &str) -> Result<String, String> {
    match text.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(text.to_string())
        }
        _ => Err(format!("{text}: expected namespace/name")),
    }
}

/// `30d`, `12h`, `15m`, `60s`.
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let err = || format!("{text}: expected a duration such as 30d, 12h, 15m or 60s");
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().map_err(|_| err())?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(err()),
    };
    match n.checked_mul(secs) {
        Some(0) | None => Err(err()),
        Some(total) => Ok(Duration::from_secs(total)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::auth::AgentKey;

    #[test]
    fn ttls_and_ids() {
        assert_eq!(parse_ttl("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_ttl("15m"), Ok(Duration::from_secs(900)));
        for bad in ["", "0d", "5", "1w", "-1d"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
        assert!(parse_tunnel_id("default/laptop").is_ok());
        for bad in ["laptop", "/x", "x/", "a/b/c"] {
            assert!(parse_tunnel_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_token_covers_every_tunnel_it_names() {
        let pair = generate(KeyAlg::Es256).expect("keygen");
        let ids = vec!["ns/a".to_string(), "ns/b".to_string()];
        let t = token(&ids, pair.private.as_bytes(), Duration::from_secs(60)).expect("token");
        let key = AgentKey::parse(&pair.public).expect("key");
        assert!(key.verify(&t, "ns/a").is_ok());
        assert!(key.verify(&t, "ns/b").is_ok());
        assert!(key.verify(&t, "ns/c").is_err());
    }
}
