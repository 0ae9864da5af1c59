//! A cookie-keeping client over curl that plays a user agent and an OAuth
//! client by hand: it registers, sends `/authorize`, follows every 302 (a
//! user is chosen at the GitHub stand-in with `login`, at the OIDC provider
//! with `login_hint`), approves the consent page, stops at the client's
//! redirect URI, and calls `/token`. Every hostname resolves to one
//! address, as `curl --resolve` says.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use crate::curl::{Curl, curl};
use crate::dirs::tmp_dir;

/// How many hops a login may take before the test gives up.
const MAX_HOPS: usize = 12;

/// A user agent: a cookie jar, a CA and a name resolution.
#[derive(Clone, Debug)]
pub struct Flow {
    ca: PathBuf,
    ip: String,
    port: u16,
    hosts: Vec<String>,
    jar: PathBuf,
}

/// A PKCE pair (RFC 7636, S256).
#[derive(Clone, Debug)]
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

/// A redirect to the client's redirect URI, with its query parameters.
#[derive(Clone, Debug)]
pub struct Redirected {
    pub url: String,
    pub params: Vec<(String, String)>,
}

impl Redirected {
    /// A redirect URL and its decoded query.
    pub fn parse(url: &str) -> Redirected {
        let query = url.split_once('?').map_or("", |(_, q)| q);
        Redirected {
            url: url.to_string(),
            params: query_pairs(query),
        }
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        let found = self.params.iter().find(|(k, _)| k == name);
        found.map(|(_, v)| v.as_str())
    }

    /// The code; panics with the redirect when there is none.
    pub fn code(&self) -> &str {
        let code = self.param("code");
        code.unwrap_or_else(|| panic!("no code in {}", self.url))
    }
}

impl Pkce {
    pub fn new() -> Pkce {
        let verifier = random();
        let challenge = URL_SAFE_NO_PAD.encode(sha256(verifier.as_bytes()));
        Pkce {
            verifier,
            challenge,
        }
    }
}

impl Default for Pkce {
    fn default() -> Self {
        Pkce::new()
    }
}

impl Flow {
    pub fn new(ca: &Path, ip: &str, port: u16, hosts: &[String]) -> Flow {
        let jar = tmp_dir("oauth-flow").join("cookies");
        std::fs::write(&jar, "").unwrap_or_else(|e| panic!("cookie jar: {e}"));
        Flow {
            ca: ca.to_path_buf(),
            ip: ip.into(),
            port,
            hosts: hosts.to_vec(),
            jar,
        }
    }

    /// The same name resolution and CA with an empty cookie jar.
    pub fn fresh(&self) -> Flow {
        Flow::new(&self.ca, &self.ip, self.port, &self.hosts)
    }

    /// Runs curl with this agent's CA, resolution and cookies.
    pub async fn curl(&self, args: &[&str]) -> Curl {
        let jar = self.jar.display().to_string();
        let mut all = vec![
            "--cacert".to_string(),
            self.ca.display().to_string(),
            "-b".into(),
            jar.clone(),
            "-c".into(),
            jar,
        ];
        for host in &self.hosts {
            all.push("--resolve".into());
            all.push(format!("{host}:{}:{}", self.port, self.ip));
        }
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        curl(&all).await
    }

    /// `GET url` (no redirects followed) with extra curl arguments.
    pub async fn get(&self, url: &str, extra: &[&str]) -> Curl {
        let mut args = extra.to_vec();
        args.push(url);
        self.curl(&args).await
    }

    /// `GET url` with `Authorization: Bearer token`.
    pub async fn bearer(&self, url: &str, token: &str) -> Curl {
        let header = format!("Authorization: Bearer {token}");
        self.get(url, &["-H", &header]).await
    }

    /// `POST url` with a form body.
    pub async fn post_form(&self, url: &str, pairs: &[(&str, &str)], extra: &[&str]) -> Curl {
        let body = form(pairs);
        let mut args = extra.to_vec();
        args.extend(["-H", "Content-Type: application/x-www-form-urlencoded"]);
        args.extend(["--data-raw", &body, url]);
        self.curl(&args).await
    }

    /// `POST url` with a JSON body.
    pub async fn post_json(&self, url: &str, json: &Value) -> Curl {
        let body = json.to_string();
        let args = [
            "-H",
            "Content-Type: application/json",
            "--data-raw",
            &body,
            url,
        ];
        self.curl(&args).await
    }

    /// Registers a public client (RFC 7591, no auth method, as the mcp SDK
    /// does) and returns its `client_id`.
    pub async fn register(&self, issuer: &str, redirect_uris: &[&str]) -> String {
        let body = serde_json::json!({
            "redirect_uris": redirect_uris,
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "client_name": "postern test client",
        });
        let r = self.post_json(&format!("{issuer}/register"), &body).await;
        assert_eq!(r.status, 201, "registration: {r:?}");
        let id = r.json()["client_id"].as_str().map(String::from);
        id.unwrap_or_else(|| panic!("no client_id: {}", r.body))
    }

    /// Follows a login from `start` as a browser would, as `user`,
    /// approving the consent page, until a Location starts with `stop`:
    /// that redirect, or `Err` with the answer where it stopped.
    pub async fn follow(&self, start: &str, user: &str, stop: &str) -> Result<Redirected, Curl> {
        let mut url = start.to_string();
        for _ in 0..MAX_HOPS {
            if url.starts_with(stop) {
                return Ok(Redirected::parse(&url));
            }
            let r = self.get(&with_user(&url, user), &[]).await;
            let r = match consent_form(&r.body).filter(|_| r.status == 200) {
                Some((id, csrf)) => {
                    let pairs = [
                        ("id", id.as_str()),
                        ("csrf", &csrf),
                        ("decision", "approve"),
                    ];
                    self.post_form(&join(&url, "/consent"), &pairs, &[]).await
                }
                None => r,
            };
            match r.header("location") {
                Some(next) if (300..400).contains(&r.status) => url = join(&url, next),
                _ => return Err(r),
            }
        }
        panic!("the login from {start} took more than {MAX_HOPS} hops");
    }

    /// A code flow as `user` for a registered client: S256, a state, and
    /// `resource` when given. The redirect (with `code`, or `error`) and
    /// the PKCE pair.
    pub async fn code_flow(
        &self,
        issuer: &str,
        client_id: &str,
        redirect_uri: &str,
        resource: Option<&str>,
        user: &str,
    ) -> (Result<Redirected, Curl>, Pkce) {
        let pkce = Pkce::new();
        let state = random();
        let mut pairs = vec![
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", redirect_uri),
            ("state", &state),
            ("code_challenge", &pkce.challenge),
            ("code_challenge_method", "S256"),
        ];
        if let Some(resource) = resource {
            pairs.push(("resource", resource));
        }
        let url = format!("{issuer}/authorize?{}", form(&pairs));
        let result = self.follow(&url, user, redirect_uri).await;
        if let Ok(redirected) = &result {
            assert_eq!(
                redirected.param("state"),
                Some(state.as_str()),
                "{redirected:?}"
            );
        }
        (result, pkce)
    }

    /// `POST /token` with `pairs`.
    pub async fn token(&self, issuer: &str, pairs: &[(&str, &str)]) -> Curl {
        self.post_form(&format!("{issuer}/token"), pairs, &[]).await
    }

    /// Redeems a code for a public client.
    pub async fn exchange(
        &self,
        issuer: &str,
        client_id: &str,
        redirect_uri: &str,
        code: &str,
        verifier: &str,
    ) -> Curl {
        let pairs = [
            ("grant_type", "authorization_code"),
            ("client_id", client_id),
            ("redirect_uri", redirect_uri),
            ("code", code),
            ("code_verifier", verifier),
        ];
        self.token(issuer, &pairs).await
    }

    /// Refreshes for a public client.
    pub async fn refresh(&self, issuer: &str, client_id: &str, refresh_token: &str) -> Curl {
        let pairs = [
            ("grant_type", "refresh_token"),
            ("client_id", client_id),
            ("refresh_token", refresh_token),
        ];
        self.token(issuer, &pairs).await
    }

    /// A whole login of `user` for `resource`: the token response (200).
    pub async fn login(
        &self,
        issuer: &str,
        client_id: &str,
        redirect_uri: &str,
        resource: &str,
        user: &str,
    ) -> Value {
        let (result, pkce) = self
            .code_flow(issuer, client_id, redirect_uri, Some(resource), user)
            .await;
        let redirected = result.unwrap_or_else(|r| panic!("login of {user} stopped at {r:?}"));
        let r = self
            .exchange(
                issuer,
                client_id,
                redirect_uri,
                redirected.code(),
                &pkce.verifier,
            )
            .await;
        assert_eq!(r.status, 200, "code exchange: {r:?}");
        r.json()
    }
}

/// Adds the user's choice at the identity provider's authorize step.
fn with_user(url: &str, user: &str) -> String {
    let path = url.split('?').next().unwrap_or(url);
    let param = if path.ends_with("/login/oauth/authorize") {
        "login"
    } else if url.starts_with("http://127.0.0.1:") && path.ends_with("/authorize") {
        "login_hint"
    } else {
        return url.to_string();
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{param}={}", enc(user))
}

/// The `id` and `csrf` of a consent form.
fn consent_form(html: &str) -> Option<(String, String)> {
    let value = |name: &str| {
        let at = html.find(&format!("name=\"{name}\" value=\""))?;
        let rest = &html[at + name.len() + 15..];
        Some(rest[..rest.find('"')?].to_string())
    };
    Some((value("id")?, value("csrf")?))
}

/// `location` resolved against `base` (absolute, or a path on its origin).
fn join(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let origin_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    format!("{}{location}", &base[..origin_end])
}

/// `k=v&...`, percent-encoded.
pub fn form(pairs: &[(&str, &str)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect();
    parts.join("&")
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn enc(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// 256 bits from the clock, a counter and the process's hasher seeds,
/// base64url: unique per call, unguessable enough for a test.
fn random() -> String {
    use std::hash::{BuildHasher, Hasher};
    static N: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(N.fetch_add(1, Ordering::Relaxed));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seed = format!("{}:{nanos}:{}", hasher.finish(), std::process::id());
    URL_SAFE_NO_PAD.encode(sha256(seed.as_bytes()))
}

/// SHA-256 through rustls's provider (the one crypto library here).
fn sha256(data: &[u8]) -> Vec<u8> {
    let rustls::SupportedCipherSuite::Tls13(suite) =
        rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
    else {
        panic!("TLS13_AES_128_GCM_SHA256 is a TLS 1.3 suite");
    };
    suite.common.hash_provider.hash(data).as_ref().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s256_matches_rfc_7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = URL_SAFE_NO_PAD.encode(sha256(verifier.as_bytes()));
        assert_eq!(challenge, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    }

    #[test]
    fn queries_locations_and_forms() {
        let r = Redirected::parse("http://127.0.0.1:9/cb?code=a%2Bb&state=s+t&iss=https%3A%2F%2Fx");
        assert_eq!(r.param("code"), Some("a+b"));
        assert_eq!(r.param("state"), Some("s t"));
        assert_eq!(r.param("iss"), Some("https://x"));
        assert_eq!(
            join("https://a:1/authorize?x", "/consent?id=1"),
            "https://a:1/consent?id=1"
        );
        assert_eq!(join("https://a:1/x", "http://b/y"), "http://b/y");
        assert_eq!(form(&[("a b", "c&d")]), "a%20b=c%26d");
        let html = r#"<input type="hidden" name="id" value="I1"><input type="hidden" name="csrf" value="C2">"#;
        assert_eq!(consent_form(html), Some(("I1".into(), "C2".into())));
    }
}
