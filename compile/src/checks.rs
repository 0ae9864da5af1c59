//! Checks of single fields that the CRD schema also makes. They are repeated
//! here because standalone mode reads manifests that no API server checked.

use std::sync::LazyLock;

use regex::Regex;

use crate::Reason;
use crate::build::Refusal;

static HOSTNAME: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(postern_api::HOSTNAME_PATTERN).ok());

fn invalid(message: String) -> Refusal {
    (Reason::InvalidSpec, message)
}

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

/// The parts of a `scheme://[user:pass@]host[:port][/]` URL.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct HostUrl {
    pub scheme: String,
    pub host: String,
    pub port: Option<u16>,
    pub userinfo: Option<(String, String)>,
}

/// Parses a URL that must be only a scheme and an authority.
pub(crate) fn host_url(raw: &str, schemes: &[&str]) -> Result<HostUrl, Refusal> {
    let uri: http::Uri = raw
        .parse()
        .map_err(|e| invalid(format!("{raw:?} is not a valid URL: {e}")))?;
    let scheme = uri.scheme_str().unwrap_or_default().to_ascii_lowercase();
    if !schemes.contains(&scheme.as_str()) {
        return Err(invalid(format!(
            "{raw:?}: scheme must be one of {}",
            schemes.join(", ")
        )));
    }
    let has_path = !matches!(uri.path(), "" | "/");
    if has_path || uri.query().is_some() {
        return Err(invalid(format!("{raw:?} must have no path or query")));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| invalid(format!("{raw:?} has no host")))?;
    let userinfo = authority
        .as_str()
        .rsplit_once('@')
        .map(|(info, _)| split_userinfo(info));
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err(invalid(format!("{raw:?} has no host")));
    }
    Ok(HostUrl {
        scheme,
        host: host.to_ascii_lowercase(),
        port: authority.port_u16(),
        userinfo,
    })
}

fn split_userinfo(info: &str) -> (String, String) {
    let (user, pass) = info.split_once(':').unwrap_or((info, ""));
    (percent_decode(user), percent_decode(pass))
}

/// Decodes `%XX` escapes; anything malformed is kept as written.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| {
            std::str::from_utf8(h)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        });
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Formats a host for a URL, bracketing IPv6 literals.
pub(crate) fn url_host(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
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

    #[test]
    fn urls_keep_only_scheme_host_port_and_userinfo() {
        let u = host_url("socks5://bob:p%40ss@Proxy.local:1080", &["socks5"]).expect("parse");
        assert_eq!(u.host, "proxy.local");
        assert_eq!(u.port, Some(1080));
        assert_eq!(u.userinfo, Some(("bob".into(), "p@ss".into())));
        assert!(host_url("ftp://x", &["http"]).is_err());
        assert!(host_url("http://x/path", &["http"]).is_err());
        assert!(host_url("http://x?q=1", &["http"]).is_err());
        let v6 = host_url("http://[::1]:8080", &["http"]).expect("v6");
        assert_eq!(url_host(&v6.host), "[::1]");
    }
}
