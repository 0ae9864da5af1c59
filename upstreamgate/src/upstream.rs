//! Upstream URLs as this API takes, stores and lists them. A request names
//! `direct://` or `socks5|http|https://[user:pass@]host:port[/]`; the
//! credentials move to a Secret and the URL is stored as
//! [`stored_upstream`] writes it, which is also how either server lists it.

use postern_api::url::{parse_host_url, url_host};

use crate::{RequestError, UpstreamCredentials};

/// The one way this API stores (and lists) a direct upstream.
pub const DIRECT: &str = "direct://";
/// Longest upstream URL the UserUpstream schema takes.
const MAX_UPSTREAM_LEN: usize = 2048;

/// The URL to store (no credentials, scheme and host lowercased, explicit
/// port) and the credentials it carried.
pub(crate) fn split(raw: &str) -> Result<(String, Option<UpstreamCredentials>), RequestError> {
    let bad = |message: String| RequestError::Upstream(message);
    if raw.len() > MAX_UPSTREAM_LEN {
        return Err(bad(format!("longer than {MAX_UPSTREAM_LEN} bytes")));
    }
    if raw.eq_ignore_ascii_case("direct://") || raw.eq_ignore_ascii_case("direct:///") {
        return Ok((DIRECT.into(), None));
    }
    let url = parse_host_url(raw, &["socks5", "http", "https"]).map_err(|e| bad(e.0))?;
    let port = url
        .port
        .filter(|port| *port != 0)
        .ok_or_else(|| bad(format!("{} needs a port", public_upstream(raw))))?;
    let credentials = url
        .userinfo
        .map(|(username, password)| UpstreamCredentials { username, password });
    Ok((stored_upstream(&url.scheme, &url.host, port), credentials))
}

/// `scheme://host:port`, IPv6 literals bracketed: the form a proxy
/// upstream is stored and listed in. A server that knows a user only from
/// a compiled snapshot lists it this way too, so both modes show the same
/// string for a user this API wrote.
pub fn stored_upstream(scheme: &str, host: &str, port: u16) -> String {
    format!("{scheme}://{}:{port}", url_host(host))
}

/// An upstream URL as `GET /upstream` shows it: any `user:pass@` removed.
/// Works on URLs the API never checked (hand-written UserUpstreams).
pub fn public_upstream(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    format!("{scheme}://{host}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_hides_credentials() {
        assert_eq!(public_upstream("socks5://u:p@h:1080"), "socks5://h:1080");
        assert_eq!(public_upstream("http://a@b:c@h:3128/"), "http://h:3128/");
        assert_eq!(public_upstream("direct://"), "direct://");
        assert_eq!(public_upstream("https://h:443"), "https://h:443");
    }

    #[test]
    fn stored_upstreams_bracket_ipv6() {
        assert_eq!(
            stored_upstream("socks5", "::1", 1080),
            "socks5://[::1]:1080"
        );
        assert_eq!(stored_upstream("http", "proxy", 3128), "http://proxy:3128");
    }
}
