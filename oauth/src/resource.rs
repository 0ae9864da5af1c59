//! RFC 8707 resource indicators and the origins built from them: the one
//! place that decides how a protected resource, an issuer and an audience
//! are spelled, so the authorization server and every guard compare
//! byte-identical strings (MCP clients compare issuers byte for byte; a
//! trailing slash or a default port breaks them).
//!
//! Pure functions; nothing here knows which resources exist.

use url::Url;

/// A resource indicator in its normalised form.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Resource {
    /// `scheme://host[:port]`: lowercase, no default port, no slash. The
    /// audience of tokens issued for this resource.
    pub origin: String,
    /// The whole indicator: the origin, then the path (`/` when empty) and
    /// the query as given.
    pub uri: String,
}

/// Why a `resource` parameter is refused (`invalid_target`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    #[error("resource is not an absolute URI")]
    NotAbsolute,
    #[error("resource scheme must be https (or http on a loopback host)")]
    Scheme,
    #[error("resource has no host")]
    NoHost,
    #[error("resource must not carry a fragment")]
    Fragment,
    #[error("resource must not carry user information")]
    UserInfo,
}

/// Normalises a `resource` parameter (OAUTH-MCP item 15): https only, or
/// http on a loopback host for development; scheme and host lowercase;
/// default port dropped; empty path becomes `/`; no fragment; path and
/// query kept (after the URL standard's own normalisation of percent
/// escapes and dot segments, which both sides apply alike).
pub fn normalise(resource: &str) -> Result<Resource, ResourceError> {
    // The URL parser silently drops surrounding blanks and inner tabs or
    // newlines; an indicator carrying them is not one a client meant.
    if resource
        .chars()
        .any(|c| c.is_ascii_whitespace() || c.is_control())
    {
        return Err(ResourceError::NotAbsolute);
    }
    let url = Url::parse(resource).map_err(|_| ResourceError::NotAbsolute)?;
    let host = url.host_str().filter(|h| !h.is_empty());
    let host = host.ok_or(ResourceError::NoHost)?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback_host(host) => {}
        _ => return Err(ResourceError::Scheme),
    }
    if url.fragment().is_some() {
        return Err(ResourceError::Fragment);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ResourceError::UserInfo);
    }
    let origin = origin(url.scheme(), host, url.port());
    let mut uri = origin.clone();
    uri.push_str(url.path());
    if let Some(query) = url.query() {
        uri.push('?');
        uri.push_str(query);
    }
    Ok(Resource { origin, uri })
}

/// `scheme://host[:port]`, lowercase, without the scheme's default port
/// and without a trailing slash: the spelling of every issuer and audience.
/// An IPv6 literal gets its brackets if it came without them.
pub fn origin(scheme: &str, host: &str, port: Option<u16>) -> String {
    let scheme = scheme.to_ascii_lowercase();
    let host = host.to_ascii_lowercase();
    let default = match scheme.as_str() {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    };
    let bracketed = host.contains(':') && !host.starts_with('[');
    let mut out = format!("{scheme}://");
    if bracketed {
        out.push('[');
    }
    out.push_str(&host);
    if bracketed {
        out.push(']');
    }
    if let Some(port) = port.filter(|p| Some(*p) != default) {
        out.push(':');
        out.push_str(&port.to_string());
    }
    out
}

/// The hosts RFC 8252 calls loopback, as they appear in a URI's authority.
pub fn is_loopback_host(host: &str) -> bool {
    matches!(
        host.to_ascii_lowercase().as_str(),
        "127.0.0.1" | "[::1]" | "localhost"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_table() {
        let table = [
            ("https://mcp.example.com", "https://mcp.example.com", "/"),
            ("https://mcp.example.com/", "https://mcp.example.com", "/"),
            (
                "HTTPS://MCP.Example.COM/mcp",
                "https://mcp.example.com",
                "/mcp",
            ),
            ("https://h.test:443/mcp", "https://h.test", "/mcp"),
            ("https://h.test:8443/mcp", "https://h.test:8443", "/mcp"),
            ("https://h.test/mcp/", "https://h.test", "/mcp/"),
            ("https://h.test/Mcp?x=1", "https://h.test", "/Mcp?x=1"),
            ("https://h.test?", "https://h.test", "/?"),
            ("http://127.0.0.1:8080/mcp", "http://127.0.0.1:8080", "/mcp"),
            ("http://localhost:80", "http://localhost", "/"),
            ("http://[::1]:3000/", "http://[::1]:3000", "/"),
        ];
        for (input, origin, path) in table {
            let r = normalise(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.origin, origin, "{input}");
            assert_eq!(r.uri, format!("{origin}{path}"), "{input}");
        }
    }

    #[test]
    fn refusals() {
        let table = [
            ("mcp.example.com", ResourceError::NotAbsolute),
            ("/mcp", ResourceError::NotAbsolute),
            ("", ResourceError::NotAbsolute),
            (" https://h.test", ResourceError::NotAbsolute),
            ("https://h.test/a\tb", ResourceError::NotAbsolute),
            ("http://h.test/mcp", ResourceError::Scheme),
            ("http://127.0.0.2/mcp", ResourceError::Scheme),
            ("ftp://h.test/", ResourceError::Scheme),
            ("urn:example:mcp", ResourceError::NoHost),
            ("https://h.test/mcp#frag", ResourceError::Fragment),
            ("https://h.test/#", ResourceError::Fragment),
            ("https://user@h.test/", ResourceError::UserInfo),
            ("https://u:p@h.test/", ResourceError::UserInfo),
        ];
        for (input, want) in table {
            assert_eq!(normalise(input), Err(want), "{input}");
        }
    }

    #[test]
    fn origins_are_spelled_one_way() {
        assert_eq!(origin("https", "H.Test", Some(443)), "https://h.test");
        assert_eq!(origin("HTTPS", "h.test", None), "https://h.test");
        assert_eq!(origin("https", "h.test", Some(80)), "https://h.test:80");
        assert_eq!(origin("http", "h.test", Some(80)), "http://h.test");
        assert_eq!(origin("http", "::1", Some(8080)), "http://[::1]:8080");
        assert_eq!(origin("http", "[::1]", Some(8080)), "http://[::1]:8080");
    }

    #[test]
    fn origin_agrees_with_normalise() {
        let r = normalise("https://Auth.Example.com:443").expect("valid");
        assert_eq!(r.origin, origin("https", "auth.example.com", None));
    }
}
