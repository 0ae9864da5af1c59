//! Checks of single fields that the CRD schema also makes. They are repeated
//! here because standalone mode reads manifests that no API server checked.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use postern_api::url::HostUrl;
use regex::Regex;

use crate::refusal::{Refusal, invalid};

pub(crate) use postern_api::url::url_host;

static HOSTNAME: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(postern_api::HOSTNAME_PATTERN).ok());

/// Lowercases and checks a hostname (`*.` wildcard allowed).
pub(crate) fn hostname(raw: &str) -> Result<String, Refusal> {
    let host = raw.trim_end_matches('.').to_ascii_lowercase();
    let well_formed = host.len() <= 253
        && HOSTNAME.as_ref().is_some_and(|re| re.is_match(&host))
        && host.split('.').all(|label| label.len() <= 63);
    if well_formed {
        Ok(host)
    } else {
        Err(invalid(format!("{raw:?} is not a valid hostname")))
    }
}

/// Lowercases and checks every hostname of a list, without duplicates.
pub(crate) fn hostnames<'a>(
    raw: impl IntoIterator<Item = &'a String>,
) -> Result<BTreeSet<String>, Refusal> {
    raw.into_iter().map(|h| hostname(h)).collect()
}

/// Parses a URL that must be only a scheme and an authority.
pub(crate) fn host_url(raw: &str, schemes: &[&str]) -> Result<HostUrl, Refusal> {
    postern_api::url::parse_host_url(raw, schemes).map_err(|e| invalid(e.0))
}

/// A duration in milliseconds, or the default when absent.
pub(crate) fn millis(d: Option<&postern_api::Duration>, default: u64) -> Result<u64, Refusal> {
    match d {
        None => Ok(default),
        Some(d) => d
            .parse()
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .map_err(|e| invalid(e.to_string())),
    }
}

/// Text of a Secret value that must be UTF-8.
pub(crate) fn utf8<'a>(bytes: &'a [u8], what: &str) -> Result<&'a str, Refusal> {
    std::str::from_utf8(bytes).map_err(|_| invalid(format!("{what} is not UTF-8 text")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_are_lowercased_and_checked() {
        assert_eq!(hostname("API.Example.com."), Ok("api.example.com".into()));
        assert_eq!(hostname("*.example.com"), Ok("*.example.com".into()));
        for bad in ["", "a..b", "-a.com", "a.*.com", "exa mple.com", "a_b.com"] {
            assert!(hostname(bad).is_err(), "{bad}");
        }
    }
}
