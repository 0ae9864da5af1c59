//! Who is calling: a bearer token, or a dashboard session cookie (with its
//! CSRF token on unsafe methods). Every admin endpoint except the probes,
//! the scrape, the OpenAPI document and the dashboard's static files asks
//! the gate first.

use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use serde::Serialize;

use crate::reply::{self, Body};
use crate::sessions::{SESSION_TTL, Sessions, csrf_matches};
use crate::tokens::{Role, Tokens};

/// The dashboard's session cookie.
pub const COOKIE: &str = "postern-admin";
/// The header unsafe cookie-authenticated calls carry the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// How the caller proved itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    Bearer,
    Cookie,
}

/// Why a caller was turned away; [`Denied::response`] answers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// No credentials, or wrong ones: 401.
    Unauthorized,
    /// Known, but not allowed this: 403.
    Forbidden(&'static str),
}

impl Denied {
    pub fn response(self) -> Response<Body> {
        match self {
            Denied::Unauthorized => reply::unauthorized(),
            Denied::Forbidden(why) => reply::forbidden(why),
        }
    }
}

/// An authenticated caller.
#[derive(Clone, Debug, Serialize)]
pub struct Principal {
    pub role: Role,
    pub via: Via,
    /// The session's CSRF token (cookie callers only), for the dashboard
    /// to pick up again after a reload.
    pub csrf: Option<String>,
}

pub struct Gate {
    tokens: std::sync::Arc<Tokens>,
    sessions: Sessions,
    sso: Option<std::sync::Arc<crate::sso::Sso>>,
}

/// The session cookie for session `id`.
pub(crate) fn session_cookie(id: &str) -> String {
    format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_TTL.as_secs()
    )
}

impl Gate {
    pub fn new(tokens: impl Into<std::sync::Arc<Tokens>>) -> Self {
        let tokens = tokens.into();
        if !tokens.configured() {
            // (single sign-on, when configured, still opens sessions)
            tracing::info!(
                "no --admin-token-file or --admin-read-token-file: the admin API and dashboard refuse every call"
            );
        }
        Gate {
            tokens,
            sessions: Sessions::default(),
            sso: None,
        }
    }

    /// Also signs users in through an OpenID Connect provider.
    pub fn with_sso(mut self, sso: Option<std::sync::Arc<crate::sso::Sso>>) -> Self {
        self.sso = sso;
        self
    }

    pub fn sso(&self) -> Option<&crate::sso::Sso> {
        self.sso.as_deref()
    }

    pub(crate) fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// The caller, if it may have `role`: 401 without valid credentials,
    /// 403 with a lesser role or a cookie call missing its CSRF token.
    pub fn require(
        &self,
        method: &Method,
        headers: &HeaderMap,
        role: Role,
    ) -> Result<Principal, Denied> {
        let principal = self.identify(method, headers)?;
        if principal.role < role {
            return Err(Denied::Forbidden("this needs the admin token"));
        }
        Ok(principal)
    }

    fn identify(&self, method: &Method, headers: &HeaderMap) -> Result<Principal, Denied> {
        if let Some(auth) = headers.get(header::AUTHORIZATION) {
            // A wrong bearer token is not rescued by a cookie.
            return bearer(auth)
                .and_then(|token| self.tokens.role_of(token))
                .map(|role| Principal {
                    role,
                    via: Via::Bearer,
                    csrf: None,
                })
                .ok_or(Denied::Unauthorized);
        }
        let Some(id) = cookie(headers, COOKIE) else {
            return Err(Denied::Unauthorized);
        };
        let Some(found) = self.sessions.find(id, &self.tokens) else {
            return Err(Denied::Unauthorized);
        };
        if !is_safe(method) {
            let presented = headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !csrf_matches(&found.csrf, presented) || !same_origin(headers) {
                return Err(Denied::Forbidden("missing or wrong CSRF token"));
            }
        }
        Ok(Principal {
            role: found.role,
            via: Via::Cookie,
            csrf: Some(found.csrf),
        })
    }

    /// `POST /ui/login` with `{"token": …}` (JSON) or `token=…` (a form):
    /// sets the session cookie and answers the role and CSRF token.
    pub fn login(&self, headers: &HeaderMap, body: &[u8]) -> Response<Body> {
        if !same_origin(headers) {
            return reply::forbidden("cross-origin login refused");
        }
        let Some(token) = login_token(headers, body) else {
            return reply::error(StatusCode::BAD_REQUEST, "expected a token");
        };
        let Some(role) = self.tokens.role_of(&token) else {
            tracing::info!("dashboard login refused: wrong token");
            return reply::unauthorized();
        };
        let (id, csrf) = self.sessions.open(&token);
        let mut resp = reply::json(
            StatusCode::OK,
            &serde_json::json!({ "role": role, "csrf": csrf }),
        );
        if let Ok(value) = HeaderValue::from_str(&session_cookie(&id)) {
            resp.headers_mut().insert(header::SET_COOKIE, value);
        }
        resp
    }

    /// `POST /ui/logout`: ends the session (cookie and CSRF token required).
    pub fn logout(&self, method: &Method, headers: &HeaderMap) -> Response<Body> {
        if let Err(denied) = self.require(method, headers, Role::Read) {
            return denied.response();
        }
        if let Some(id) = cookie(headers, COOKIE) {
            self.sessions.close(id);
        }
        let mut resp = Response::new(reply::full(""));
        *resp.status_mut() = StatusCode::NO_CONTENT;
        resp.headers_mut().insert(
            header::SET_COOKIE,
            HeaderValue::from_static(
                "postern-admin=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
            ),
        );
        resp
    }
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn bearer(value: &HeaderValue) -> Option<&str> {
    let value = value.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

/// The value of cookie `name`, from any Cookie header.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A browser's unsafe request names its page's origin; it must be this
/// server's (the Host the browser addressed). Non-browser clients send no
/// Origin and are not affected.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    origin_host.is_some_and(|o| o.eq_ignore_ascii_case(host))
}

fn login_token(headers: &HeaderMap, body: &[u8]) -> Option<String> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let token = if content_type.starts_with("application/x-www-form-urlencoded") {
        url::form_urlencoded::parse(body)
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
    } else {
        #[derive(serde::Deserialize)]
        struct Login {
            token: String,
        }
        serde_json::from_slice::<Login>(body).ok().map(|l| l.token)
    }?;
    let token = token.trim().to_string();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_str(v).expect("value"));
        }
        map
    }

    fn gate() -> Gate {
        Gate::new(Tokens::fixed(Some("adm"), Some("rd")))
    }

    fn session(gate: &Gate, token: &str) -> (String, String) {
        let resp = gate.login(
            &headers(&[("content-type", "application/json"), ("host", "h:1")]),
            format!("{{\"token\":\"{token}\"}}").as_bytes(),
        );
        assert_eq!(resp.status(), StatusCode::OK);
        let set = resp.headers()[header::SET_COOKIE]
            .to_str()
            .expect("cookie")
            .to_string();
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"));
        let id = set
            .trim_start_matches("postern-admin=")
            .split(';')
            .next()
            .expect("id")
            .to_string();
        let found = gate.sessions.find(&id, &gate.tokens).expect("session");
        (id, found.csrf)
    }

    #[test]
    fn bearer_tokens_grant_their_role() {
        let gate = gate();
        let get = Method::GET;
        let ok = |t: &str, role| gate.require(&get, &headers(&[("authorization", t)]), role);
        assert_eq!(
            ok("Bearer adm", Role::Admin).expect("admin").role,
            Role::Admin
        );
        assert_eq!(ok("bearer rd", Role::Read).expect("read").role, Role::Read);
        assert_eq!(
            ok("Bearer rd", Role::Admin)
                .expect_err("403")
                .response()
                .status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            ok("Bearer x", Role::Read)
                .expect_err("401")
                .response()
                .status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            ok("Basic adm", Role::Read)
                .expect_err("401")
                .response()
                .status(),
            StatusCode::UNAUTHORIZED
        );
        let none = gate.require(&get, &HeaderMap::new(), Role::Read);
        assert_eq!(
            none.expect_err("401").response().status(),
            StatusCode::UNAUTHORIZED
        );
    }

    #[test]
    fn cookie_calls_need_the_csrf_token_on_unsafe_methods() {
        let gate = gate();
        let (id, csrf) = session(&gate, "adm");
        let cookie = format!("a=b; postern-admin={id}");
        let read = gate.require(&Method::GET, &headers(&[("cookie", &cookie)]), Role::Read);
        assert_eq!(read.expect("read").via, Via::Cookie);
        let post = |extra: &[(&'static str, &str)]| {
            let mut pairs = vec![("cookie", cookie.as_str()), ("host", "h:1")];
            pairs.extend_from_slice(extra);
            gate.require(&Method::POST, &headers(&pairs), Role::Admin)
        };
        assert_eq!(
            post(&[]).expect_err("no csrf").response().status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            post(&[("x-csrf-token", "x")])
                .expect_err("bad")
                .response()
                .status(),
            StatusCode::FORBIDDEN
        );
        assert!(post(&[("x-csrf-token", &csrf)]).is_ok());
        let foreign = post(&[("x-csrf-token", &csrf), ("origin", "http://evil:1")]);
        assert_eq!(
            foreign.expect_err("foreign").response().status(),
            StatusCode::FORBIDDEN
        );
        assert!(post(&[("x-csrf-token", &csrf), ("origin", "http://h:1")]).is_ok());
    }

    #[test]
    fn login_refuses_wrong_tokens_and_logout_ends_the_session() {
        let gate = gate();
        let json = headers(&[("content-type", "application/json")]);
        assert_eq!(
            gate.login(&json, b"{\"token\":\"no\"}").status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            gate.login(&json, b"garbage").status(),
            StatusCode::BAD_REQUEST
        );
        let form = headers(&[("content-type", "application/x-www-form-urlencoded")]);
        assert_eq!(gate.login(&form, b"token=rd").status(), StatusCode::OK);
        let cross = headers(&[
            ("content-type", "application/json"),
            ("host", "h:1"),
            ("origin", "http://evil"),
        ]);
        assert_eq!(
            gate.login(&cross, b"{\"token\":\"adm\"}").status(),
            StatusCode::FORBIDDEN
        );

        let (id, csrf) = session(&gate, "rd");
        let cookie = format!("postern-admin={id}");
        let out = gate.logout(
            &Method::POST,
            &headers(&[("cookie", &cookie), ("x-csrf-token", &csrf)]),
        );
        assert_eq!(out.status(), StatusCode::NO_CONTENT);
        let after = gate.require(&Method::GET, &headers(&[("cookie", &cookie)]), Role::Read);
        assert_eq!(
            after.expect_err("gone").response().status(),
            StatusCode::UNAUTHORIZED
        );
    }
}
