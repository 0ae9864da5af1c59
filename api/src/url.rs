//! The URL shape of resource fields that name a server, not a page: a
//! backend `url` and a UserUpstream `upstream`, `scheme://[user:pass@]host[:port][/]`.
//!
//! Parsed once here, so compile and the UpstreamGate-compatible API read
//! such a URL the same way. Which schemes and defaults apply is the
//! caller's business.

/// The parts of a `scheme://[user:pass@]host[:port][/]` URL.
#[derive(Debug, PartialEq, Eq)]
pub struct HostUrl {
    /// Lowercase.
    pub scheme: String,
    /// Lowercase, IPv6 literals without brackets (see [`url_host`]).
    pub host: String,
    pub port: Option<u16>,
    /// Percent-decoded user name and password, when the URL carried them.
    pub userinfo: Option<(String, String)>,
}

/// Why a URL was refused: a sentence naming the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UrlError(pub String);

/// Parses a URL that must be only a scheme (one of `schemes`) and an authority.
pub fn parse_host_url(raw: &str, schemes: &[&str]) -> Result<HostUrl, UrlError> {
    let uri: http::Uri = raw
        .parse()
        .map_err(|e| UrlError(format!("{raw:?} is not a valid URL: {e}")))?;
    let scheme = uri.scheme_str().unwrap_or_default().to_ascii_lowercase();
    if !schemes.contains(&scheme.as_str()) {
        return Err(UrlError(format!(
            "{raw:?}: scheme must be one of {}",
            schemes.join(", ")
        )));
    }
    let has_path = !matches!(uri.path(), "" | "/");
    if has_path || uri.query().is_some() {
        return Err(UrlError(format!("{raw:?} must have no path or query")));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| UrlError(format!("{raw:?} has no host")))?;
    let userinfo = authority
        .as_str()
        .rsplit_once('@')
        .map(|(info, _)| split_userinfo(info));
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err(UrlError(format!("{raw:?} has no host")));
    }
    // `http` reads a port it cannot fit in 16 bits as no port at all, which
    // would silently send traffic to the scheme's default port.
    // Port 0 is no port to dial: the connect would fail late, per request.
    if let Some(port) = written_port(authority.as_str())
        && port.parse::<u16>().ok().is_none_or(|p| p == 0)
    {
        return Err(UrlError(format!(
            "{raw:?}: port {port} is not a number from 1 to 65535"
        )));
    }
    Ok(HostUrl {
        scheme,
        host: host.to_ascii_lowercase(),
        port: authority.port_u16(),
        userinfo,
    })
}

/// The port as written after the host (`host:port`, `[v6]:port`), if any.
fn written_port(authority: &str) -> Option<&str> {
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let after_host = match hostport.rfind(']') {
        Some(end) => &hostport[end + 1..],
        None => hostport,
    };
    after_host
        .rsplit_once(':')
        .map(|(_, port)| port)
        .filter(|p| !p.is_empty())
}

/// Formats a host for a URL, bracketing IPv6 literals.
pub fn url_host(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_only_scheme_host_port_and_userinfo() {
        let u = parse_host_url("socks5://bob:p%40ss@Proxy.local:1080", &["socks5"]).expect("parse");
        assert_eq!(u.host, "proxy.local");
        assert_eq!(u.port, Some(1080));
        assert_eq!(u.userinfo, Some(("bob".into(), "p@ss".into())));
        assert!(parse_host_url("ftp://x", &["http"]).is_err());
        assert!(parse_host_url("http://x/path", &["http"]).is_err());
        assert!(parse_host_url("http://x?q=1", &["http"]).is_err());
        for zero in [
            "http://x:0",
            "http://x:00",
            "http://[::1]:0",
            "http://u:p@x:0",
        ] {
            let error = parse_host_url(zero, &["http"]).expect_err(zero);
            assert!(error.0.contains("from 1 to 65535"), "{error}");
        }
        let v6 = parse_host_url("http://[::1]:8080", &["http"]).expect("v6");
        assert_eq!(url_host(&v6.host), "[::1]");
    }

    #[test]
    fn ports_beyond_16_bits_are_refused_not_dropped() {
        for raw in [
            "http://backend:70000",
            "http://[::1]:65536",
            "socks5://u:p@proxy:99999",
        ] {
            let err = parse_host_url(raw, &["http", "socks5"]).expect_err(raw);
            assert!(err.to_string().contains("1 to 65535"), "{raw}: {err}");
        }
        let max = parse_host_url("http://backend:65535", &["http"]).expect("max");
        assert_eq!(max.port, Some(65535));
        let none = parse_host_url("http://backend", &["http"]).expect("no port");
        assert_eq!(none.port, None);
        let v6 = parse_host_url("http://[::1]", &["http"]).expect("v6 without port");
        assert_eq!(v6.port, None);
    }

    #[test]
    fn errors_name_the_url() {
        let err = parse_host_url("ftp://x", &["http", "https"]).expect_err("scheme");
        assert_eq!(
            err.to_string(),
            r#""ftp://x": scheme must be one of http, https"#
        );
    }
}
