//! The small HTTP toolbox of the oauth endpoints: JSON, HTML and redirect
//! answers, RFC-shaped errors, CORS, cookies, bounded body reading, and
//! the origin a request was addressed to.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Serialize;

use crate::reverse::ProxyBody;

/// Request bodies the endpoints accept (forms, registration JSON).
const MAX_BODY: usize = 64 * 1024;

pub fn body(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A response with no-store, as every OAuth answer must be.
pub fn respond(
    status: StatusCode,
    content_type: &'static str,
    text: impl Into<Bytes>,
) -> Response<ProxyBody> {
    let mut response = Response::new(body(text));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<ProxyBody> {
    let text = serde_json::to_vec(value).unwrap_or_default();
    respond(status, "application/json", text)
}

/// `{"error": code, "error_description": text}` (RFC 6749 §5.2 shape).
pub fn oauth_error(status: StatusCode, code: &str, description: &str) -> Response<ProxyBody> {
    json(
        status,
        &serde_json::json!({"error": code, "error_description": description}),
    )
}

/// The answer when the shared state (Redis) cannot be reached.
pub fn unavailable(what: &str) -> Response<ProxyBody> {
    let mut r = oauth_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        &format!(
            "{what}: the authorization server's state store is unreachable; try again shortly"
        ),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
}

pub fn redirect(location: &str) -> Response<ProxyBody> {
    let mut r = respond(StatusCode::FOUND, "text/plain; charset=utf-8", "");
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// An HTML page that may not be framed (clickjacking on consent).
pub fn page(status: StatusCode, title: &str, inner_html: &str) -> Response<ProxyBody> {
    let text = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{t}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem;color:#222}}\
         button{{font-size:1rem;padding:.5rem 1.2rem;margin-right:.6rem}}code{{background:#f3f3f3;padding:0 .2rem}}</style></head>\
         <body><h1>{t}</h1>{inner_html}</body></html>\n",
        t = escape(title)
    );
    let mut r = respond(status, "text/html; charset=utf-8", text);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self' https:; frame-ancestors 'none'"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// An error page: for a client or redirect URI that cannot be trusted, the
/// user is told here and never sent anywhere (RFC 6749 §4.1.2.1).
pub fn error_page(status: StatusCode, message: &str) -> Response<ProxyBody> {
    page(
        status,
        "Sign-in error",
        &format!("<p>{}</p>", escape(message)),
    )
}

pub(crate) use crate::reverse::errors::escape_html as escape;

/// CORS for browser-based clients on metadata, token and registration
/// endpoints and on the guard's challenges (OAUTH-MCP 6).
pub fn cors(headers: &mut HeaderMap) {
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(
            "Authorization, Content-Type, MCP-Protocol-Version, Mcp-Session-Id, Last-Event-ID",
        ),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("WWW-Authenticate, Mcp-Session-Id, MCP-Protocol-Version"),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
}

pub fn with_cors(mut response: Response<ProxyBody>) -> Response<ProxyBody> {
    cors(response.headers_mut());
    response
}

/// 204 to a CORS preflight.
pub fn preflight() -> Response<ProxyBody> {
    with_cors(respond(StatusCode::NO_CONTENT, "text/plain", ""))
}

/// Reads a request body up to [`MAX_BODY`]; `None` when larger or broken.
pub async fn read_body(incoming: Incoming) -> Option<Bytes> {
    Limited::new(incoming, MAX_BODY)
        .collect()
        .await
        .ok()
        .map(|c| c.to_bytes())
}

/// `application/x-www-form-urlencoded` pairs; a repeated parameter makes
/// the request invalid (RFC 6749 §3.1), so it is reported.
pub fn form(bytes: &[u8]) -> Result<Vec<(String, String)>, String> {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(bytes)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    for (i, (k, _)) in pairs.iter().enumerate() {
        if pairs[..i].iter().any(|(other, _)| other == k) {
            return Err(format!("parameter {k} is repeated"));
        }
    }
    Ok(pairs)
}

pub fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

pub fn query_pairs(uri: &http::Uri) -> Result<Vec<(String, String)>, String> {
    form(uri.query().unwrap_or("").as_bytes())
}

/// Every `name=value` pair of the request's Cookie headers, in order
/// (pairs without `=` included, empty ones not).
pub fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
}

/// The value of cookie `name`.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    cookie_pairs(headers)
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Removes cookie `name` from the request's Cookie headers, keeping the
/// application's own cookies for the backend.
pub fn drop_cookie(headers: &mut HeaderMap, name: &str) {
    let kept: Vec<String> = cookie_pairs(headers)
        .filter(|pair| pair.split_once('=').is_none_or(|(k, _)| k != name))
        .map(String::from)
        .collect();
    headers.remove(header::COOKIE);
    if !kept.is_empty()
        && let Ok(v) = HeaderValue::from_str(&kept.join("; "))
    {
        headers.insert(header::COOKIE, v);
    }
}

/// A `__Host-` cookie: Secure, host-only, Path=/ (so no sibling host or
/// plain-HTTP page can set or read it).
pub fn set_cookie(name: &str, value: &str, max_age_s: u64) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={max_age_s}"
    ))
    .ok()
}

pub fn clear_cookie(name: &str) -> Option<HeaderValue> {
    set_cookie(name, "", 0)
}

/// The port of a `host[:port]` authority, if one is written.
pub fn port_of(raw_host: &str) -> Option<u16> {
    let after_bracket = raw_host.rsplit_once(']').map_or(raw_host, |(_, rest)| rest);
    after_bracket.rsplit_once(':')?.1.parse().ok()
}

/// `https://host[:port]`, as issuers and audiences are written.
pub fn https_origin(host: &str, port: Option<u16>) -> String {
    postern_oauth::resource::origin("https", host, port)
}

/// Percent-encodes a query value.
pub fn enc(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// `url` with `pairs` appended to its query.
pub fn with_query(url: &str, pairs: &[(&str, &str)]) -> String {
    let mut out = url.to_string();
    let mut sep = if url.contains('?') { '&' } else { '?' };
    for (k, v) in pairs {
        out.push(sep);
        out.push_str(&enc(k));
        out.push('=');
        out.push_str(&enc(v));
        sep = '&';
    }
    out
}

/// Seconds since the epoch.
pub use postern_oauth::refresh::unix_now as now;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_origins() {
        assert_eq!(port_of("a.example:8443"), Some(8443));
        assert_eq!(port_of("a.example"), None);
        assert_eq!(port_of("[::1]:9"), Some(9));
        assert_eq!(port_of("[::1]"), None);
    }

    #[test]
    fn cookies_are_found_and_dropped_alone() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-p=tok; b=2"),
        );
        assert_eq!(cookie(&h, "__Host-p"), Some("tok"));
        drop_cookie(&mut h, "__Host-p");
        assert_eq!(
            h.get(header::COOKIE).map(|v| v.to_str().ok()),
            Some(Some("a=1; b=2"))
        );
        drop_cookie(&mut h, "a");
        drop_cookie(&mut h, "b");
        assert!(h.get(header::COOKIE).is_none());
    }

    #[test]
    fn repeated_form_parameters_are_refused() {
        assert!(form(b"a=1&b=2").is_ok());
        assert!(form(b"a=1&a=2").is_err());
    }
}
