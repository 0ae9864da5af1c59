//! The dashboard's static files, embedded in the binary (no CDN, no files
//! to ship): a page and its script and style. They hold no data; every
//! figure comes from the authenticated API.

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};

use crate::Gate;
use crate::reply::{self, Body};

/// A login body is a token: anything bigger is not one.
const MAX_LOGIN_BODY: usize = 8 * 1024;

/// What the dashboard needs from an admin port besides the API: its
/// files, `/` → `/ui/`, `POST /ui/login` and `POST /ui/logout`. Gives the
/// request back when it is none of those.
pub async fn serve<B>(gate: &Gate, req: Request<B>) -> Result<Response<Body>, Request<B>>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let path = req.uri().path();
    if let Some(asset) = asset(path) {
        return Ok(asset);
    }
    let method = req.method();
    Ok(match path {
        "/" if method == Method::GET || method == Method::HEAD => redirect_home(),
        "/ui/login" if method == Method::POST => {
            let headers = req.headers().clone();
            match Limited::new(req.into_body(), MAX_LOGIN_BODY)
                .collect()
                .await
            {
                Ok(body) => gate.login(&headers, &body.to_bytes()),
                Err(_) => reply::error(StatusCode::PAYLOAD_TOO_LARGE, "a login is a token"),
            }
        }
        "/ui/logout" if method == Method::POST => gate.logout(method, req.headers()),
        // Whether the login page offers single sign-on.
        "/ui/sso" if method == Method::GET => reply::json(
            StatusCode::OK,
            &serde_json::json!({ "enabled": gate.sso().is_some() }),
        ),
        crate::sso::LOGIN_PATH | crate::sso::CALLBACK_PATH if method == Method::GET => {
            match gate.sso() {
                None => reply::not_found(),
                Some(sso) if path == crate::sso::LOGIN_PATH => sso.start().await,
                Some(sso) => sso.callback(req.uri().query(), gate.sessions()).await,
            }
        }
        "/ui/login" | "/ui/logout" => reply::method_not_allowed("POST"),
        _ => return Err(req),
    })
}

const INDEX: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");
const FAVICON: &str = include_str!("../assets/favicon.svg");

/// Where the dashboard lives on an admin port.
pub const PREFIX: &str = "/ui/";

/// The page's rules: only this origin's script, style and API; no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The static file at `path`, if it is one.
pub fn asset(path: &str) -> Option<Response<Body>> {
    let (content_type, body) = match path {
        "/ui" | "/ui/" | "/ui/index.html" => ("text/html; charset=utf-8", INDEX),
        "/ui/assets/app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "/ui/assets/app.css" => ("text/css; charset=utf-8", APP_CSS),
        "/ui/assets/favicon.svg" => ("image/svg+xml", FAVICON),
        _ => return None,
    };
    let mut resp = reply::bytes(StatusCode::OK, content_type, body);
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Some(resp)
}

/// `/` on an admin port: to the dashboard.
pub fn redirect_home() -> Response<Body> {
    let mut resp = Response::new(reply::full(""));
    *resp.status_mut() = StatusCode::FOUND;
    resp.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(PREFIX));
    resp
}
