//! Named ACME issuers: the built-in Let's Encrypt directories and those the
//! configuration adds. Targets name an issuer; only the operator's (or the
//! standalone process's) flags say where it points, so a namespace user
//! cannot send the operator to an arbitrary URL.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::policy::Policy;
use crate::{Error, Result};

pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// The ACME flags, shared by `postern standalone` and the operator.
#[derive(Args, Clone, Debug, Default)]
pub struct AcmeArgs {
    /// Another issuer, NAME=DIRECTORY_URL (repeatable); `production` and
    /// `staging` are Let's Encrypt's unless redefined.
    #[arg(long = "acme-issuer", value_name = "NAME=URL")]
    pub issuers: Vec<String>,
    /// PEM CA certificate that verifies issuer NAME's server (a private ACME
    /// server), NAME=PATH (repeatable).
    #[arg(long = "acme-ca-file", value_name = "NAME=PATH")]
    pub ca_files: Vec<String>,
    /// Contact address registered with every issuer's account.
    #[arg(long = "acme-email", env = "POSTERN_ACME_EMAIL")]
    pub email: Option<String>,
    /// External Account Binding of issuer NAME: NAME=KEY_ID (repeatable),
    /// with the HMAC key from --acme-eab-hmac-file.
    #[arg(long = "acme-eab-kid", value_name = "NAME=KEY_ID")]
    pub eab_kids: Vec<String>,
    /// File holding the base64url HMAC key of issuer NAME's External
    /// Account Binding, NAME=PATH (repeatable).
    #[arg(long = "acme-eab-hmac-file", value_name = "NAME=PATH")]
    pub eab_hmac_files: Vec<String>,
    /// Renew when this share of a certificate's lifetime is left.
    #[arg(long = "acme-renew-fraction", default_value_t = 1.0 / 3.0)]
    pub renew_fraction: f64,
    /// First wait after a failed order, doubling per failure.
    #[arg(long = "acme-retry-base", value_parser = parse_secs, default_value = "60")]
    pub retry_base: Duration,
    /// Longest wait between two attempts after failures.
    #[arg(long = "acme-retry-cap", value_parser = parse_secs, default_value = "21600")]
    pub retry_cap: Duration,
}

fn parse_secs(raw: &str) -> std::result::Result<Duration, String> {
    raw.trim_end_matches('s')
        .parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|e| format!("seconds: {e}"))
}

/// One issuer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issuer {
    pub name: String,
    pub directory: String,
    pub ca_file: Option<PathBuf>,
    pub eab: Option<Eab>,
}

/// An External Account Binding: key id and the decoded HMAC key.
#[derive(Clone, PartialEq, Eq)]
pub struct Eab {
    pub kid: String,
    pub hmac: Vec<u8>,
}

impl std::fmt::Debug for Eab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Eab")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// Every issuer by name, the contact and the renewal policy.
#[derive(Clone, Debug)]
pub struct AcmeConfig {
    pub issuers: BTreeMap<String, Issuer>,
    pub email: Option<String>,
    pub policy: Policy,
}

impl AcmeConfig {
    /// Reads the flags; a malformed one is a usage error.
    pub fn from_args(args: &AcmeArgs) -> Result<Self> {
        let mut issuers = BTreeMap::new();
        for (name, url) in [
            ("production", LETS_ENCRYPT),
            ("staging", LETS_ENCRYPT_STAGING),
        ] {
            issuers.insert(name.to_string(), issuer(name, url));
        }
        for raw in &args.issuers {
            let (name, url) = pair(raw, "--acme-issuer")?;
            check_name(name)?;
            if !url.starts_with("https://") {
                return Err(Error::Config(format!(
                    "--acme-issuer {name}: the directory must be https://"
                )));
            }
            issuers.insert(name.to_string(), issuer(name, url));
        }
        for raw in &args.ca_files {
            let (name, path) = pair(raw, "--acme-ca-file")?;
            known(&mut issuers, name, "--acme-ca-file")?.ca_file = Some(PathBuf::from(path));
        }
        for raw in &args.eab_kids {
            let (name, kid) = pair(raw, "--acme-eab-kid")?;
            let hmac = eab_hmac(args, name)?;
            known(&mut issuers, name, "--acme-eab-kid")?.eab = Some(Eab {
                kid: kid.to_string(),
                hmac,
            });
        }
        let fraction = args.renew_fraction;
        if !(fraction > 0.0 && fraction < 1.0) {
            return Err(Error::Config(
                "--acme-renew-fraction must be between 0 and 1".into(),
            ));
        }
        Ok(AcmeConfig {
            issuers,
            email: args.email.clone(),
            policy: Policy {
                renew_fraction: fraction,
                retry_base: args.retry_base,
                retry_cap: args.retry_cap.max(args.retry_base),
            },
        })
    }

    /// The names targets may use (compile's `Options::acme_issuers`).
    pub fn names(&self) -> std::collections::BTreeSet<String> {
        self.issuers.keys().cloned().collect()
    }
}

fn issuer(name: &str, url: &str) -> Issuer {
    Issuer {
        name: name.to_string(),
        directory: url.to_string(),
        ca_file: None,
        eab: None,
    }
}

fn pair<'a>(raw: &'a str, flag: &str) -> Result<(&'a str, &'a str)> {
    raw.split_once('=')
        .filter(|(n, v)| !n.is_empty() && !v.is_empty())
        .ok_or_else(|| Error::Config(format!("{flag} wants NAME=VALUE, not {raw:?}")))
}

fn check_name(name: &str) -> Result<()> {
    let ok = (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "{name:?} is not an issuer name (a-z, 0-9, -)"
        )))
    }
}

fn known<'a>(
    issuers: &'a mut BTreeMap<String, Issuer>,
    name: &str,
    flag: &str,
) -> Result<&'a mut Issuer> {
    issuers.get_mut(name).ok_or_else(|| {
        Error::Config(format!(
            "{flag}: no issuer {name:?} (define it with --acme-issuer)"
        ))
    })
}

fn eab_hmac(args: &AcmeArgs, name: &str) -> Result<Vec<u8>> {
    use base64::Engine;
    let path = args
        .eab_hmac_files
        .iter()
        .filter_map(|raw| raw.split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, p)| p)
        .ok_or_else(|| {
            Error::Config(format!(
                "--acme-eab-kid {name}: needs --acme-eab-hmac-file {name}=PATH"
            ))
        })?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("--acme-eab-hmac-file {path}: {e}")))?;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim().trim_end_matches('='))
        .map_err(|e| Error::Config(format!("--acme-eab-hmac-file {path}: not base64url: {e}")))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        acme: AcmeArgs,
    }

    fn config(args: &[&str]) -> Result<AcmeConfig> {
        let cli = Cli::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .map_err(|e| Error::Config(e.to_string()))?;
        AcmeConfig::from_args(&cli.acme)
    }

    #[test]
    fn built_ins_and_named_issuers() {
        let c = config(&[
            "--acme-issuer",
            "pebble=https://127.0.0.1:14000/dir",
            "--acme-ca-file",
            "pebble=/ca.pem",
        ])
        .expect("config");
        assert_eq!(
            c.names().into_iter().collect::<Vec<_>>(),
            ["pebble", "production", "staging"]
        );
        assert_eq!(c.issuers["production"].directory, LETS_ENCRYPT);
        assert_eq!(c.issuers["pebble"].ca_file, Some(PathBuf::from("/ca.pem")));
    }

    #[test]
    fn malformed_flags_are_refused() {
        assert!(config(&["--acme-issuer", "Bad=https://x"]).is_err());
        assert!(config(&["--acme-issuer", "x=http://x"]).is_err());
        assert!(config(&["--acme-ca-file", "nope=/ca.pem"]).is_err());
        assert!(config(&["--acme-eab-kid", "production=kid"]).is_err());
        assert!(config(&["--acme-renew-fraction", "1.5"]).is_err());
    }
}
