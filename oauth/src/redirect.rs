//! Redirect URIs: which ones a client may register (dynamic registration
//! and `OAuthClient`), and when a presented one matches a registered one.
//! Matching is byte-exact, with the single exception RFC 8252 §7.3 makes
//! for loopback redirects, whose port native clients pick at run time.
//!
//! Pure functions over strings; never normalises what it compares, since
//! a normalising matcher is how open redirects creep in.

use url::Url;

use crate::resource::is_loopback_host;

/// Why a redirect URI cannot be registered (`invalid_redirect_uri`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedirectError {
    #[error("redirect_uri is not an absolute URI")]
    NotAbsolute,
    #[error("redirect_uri must not carry a fragment")]
    Fragment,
    #[error("redirect_uri has no host")]
    NoHost,
    #[error("redirect_uri must not carry user information")]
    UserInfo,
    #[error("http redirect_uri is allowed only on 127.0.0.1, [::1] or localhost")]
    InsecureHttp,
    #[error(
        "redirect_uri scheme {0:?} is neither https, loopback http, nor a private-use scheme (reverse domain name, e.g. com.example.app)"
    )]
    Scheme(String),
}

/// Checks a redirect URI a client asks to register: https with a host,
/// http on a loopback host, or an RFC 8252 §7.1 private-use scheme (one
/// that contains a `.`, a reverse domain name). `javascript:`, `data:`,
/// `file:` and every other dotless scheme are refused, as is a fragment.
pub fn validate_registered(uri: &str) -> Result<(), RedirectError> {
    // The URL parser drops blanks and tabs it finds; the byte-exact match
    // later would then compare against something the parser never saw.
    if uri
        .chars()
        .any(|c| c.is_ascii_whitespace() || c.is_control())
    {
        return Err(RedirectError::NotAbsolute);
    }
    let url = Url::parse(uri).map_err(|_| RedirectError::NotAbsolute)?;
    if url.fragment().is_some() {
        return Err(RedirectError::Fragment);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(RedirectError::UserInfo);
    }
    let host = url.host_str().filter(|h| !h.is_empty());
    match url.scheme() {
        "https" => host.map(|_| ()).ok_or(RedirectError::NoHost),
        "http" => match host {
            Some(h) if is_loopback_host(h) => Ok(()),
            _ => Err(RedirectError::InsecureHttp),
        },
        scheme if scheme.contains('.') => Ok(()),
        scheme => Err(RedirectError::Scheme(scheme.to_string())),
    }
}

/// Whether the `redirect_uri` of a request matches a registered one:
/// byte-exact, except that an `http` loopback URI matches with any port
/// (or none) as long as its host, path and query are the same bytes.
pub fn matches(registered: &str, presented: &str) -> bool {
    if registered == presented {
        return true;
    }
    match (loopback_parts(registered), loopback_parts(presented)) {
        (Some(r), Some(p)) => r == p,
        _ => false,
    }
}

/// An `http://` loopback URI split into its host and what follows the
/// authority, with the port left out; `None` for anything else.
fn loopback_parts(uri: &str) -> Option<(&str, &str)> {
    let rest = uri.strip_prefix("http://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if tail.contains('#') {
        return None;
    }
    let (host, port) = match authority.rfind(':') {
        // An IPv6 literal's own colons sit before its closing bracket.
        Some(i) if !authority[i..].contains(']') => (&authority[..i], Some(&authority[i + 1..])),
        _ => (authority, None),
    };
    let port_ok =
        port.is_none_or(|p| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
    (port_ok && is_loopback_host(host)).then_some((host, tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrable() {
        for uri in [
            "https://app.example.com/callback",
            "https://app.example.com/cb?x=1",
            "http://127.0.0.1/callback",
            "http://127.0.0.1:33418/callback",
            "http://[::1]:8080/cb",
            "http://localhost:6274/oauth/callback",
            "com.example.app:/oauth2redirect",
            "com.example.app://callback",
            "cursor.mcp:/callback",
        ] {
            assert_eq!(validate_registered(uri), Ok(()), "{uri}");
        }
    }

    #[test]
    fn refused() {
        let table = [
            (
                "javascript:alert(1)",
                RedirectError::Scheme("javascript".into()),
            ),
            ("data:text/html,hi", RedirectError::Scheme("data".into())),
            ("file:///etc/passwd", RedirectError::Scheme("file".into())),
            ("myapp:/cb", RedirectError::Scheme("myapp".into())),
            ("http://app.example.com/cb", RedirectError::InsecureHttp),
            ("http://127.0.0.2/cb", RedirectError::InsecureHttp),
            ("http://localhost.evil.com/cb", RedirectError::InsecureHttp),
            ("https://app.example.com/cb#x", RedirectError::Fragment),
            ("https://u:p@app.example.com/cb", RedirectError::UserInfo),
            ("/callback", RedirectError::NotAbsolute),
            ("", RedirectError::NotAbsolute),
            (" https://app.example.com/cb", RedirectError::NotAbsolute),
            ("https://app.example.com/c\nb", RedirectError::NotAbsolute),
        ];
        for (uri, want) in table {
            assert_eq!(validate_registered(uri), Err(want), "{uri}");
        }
    }

    #[test]
    fn exact_match_elsewhere() {
        let reg = "https://app.example.com/callback";
        assert!(matches(reg, reg));
        for other in [
            "https://app.example.com/callback/",
            "https://app.example.com/Callback",
            "https://APP.example.com/callback",
            "https://app.example.com:443/callback",
            "https://app.example.com/callback?x=1",
            "https://app.example.com:8443/callback",
        ] {
            assert!(!matches(reg, other), "{other}");
        }
        assert!(!matches("com.example.app:/cb", "com.example.app:/cb2"));
    }

    #[test]
    fn loopback_port_is_free() {
        let reg = "http://127.0.0.1/callback";
        assert!(matches(reg, "http://127.0.0.1:51234/callback"));
        assert!(matches("http://127.0.0.1:3000/callback", reg));
        assert!(matches(
            "http://localhost:1/cb?a=b",
            "http://localhost:65535/cb?a=b"
        ));
        assert!(matches("http://[::1]:80/cb", "http://[::1]:9999/cb"));
        assert!(matches("http://[::1]/cb", "http://[::1]:9999/cb"));
    }

    #[test]
    fn loopback_everything_else_is_exact() {
        let reg = "http://127.0.0.1:3000/callback";
        for other in [
            "http://127.0.0.1:3000/callback2",
            "http://127.0.0.1:3000/callback?x=1",
            "http://127.0.0.1:3000/callback#x",
            "http://localhost:3000/callback",
            "https://127.0.0.1:3000/callback",
            "http://127.0.0.1:30a0/callback",
            "http://127.0.0.1:/callback",
            "http://127.0.0.1:123456/callback",
            "http://evil@127.0.0.1:3000/callback",
            "http://127.0.0.1.evil.com:3000/callback",
        ] {
            assert!(!matches(reg, other), "{other}");
        }
        // Port freedom is for loopback only.
        assert!(!matches(
            "http://app.example.com/cb",
            "http://app.example.com:81/cb"
        ));
    }
}
