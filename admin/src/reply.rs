//! Response helpers: one body type for every admin answer (fixed bytes or a
//! stream such as the request log's live tail), JSON and error shapes.

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use serde::Serialize;

/// The body of every admin response.
pub type Body = BoxBody<Bytes, Infallible>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// Boxes a fixed response built elsewhere.
pub fn boxed(resp: Response<Full<Bytes>>) -> Response<Body> {
    resp.map(BodyExt::boxed)
}

pub fn bytes(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

pub fn text(status: StatusCode, msg: impl Into<Bytes>) -> Response<Body> {
    bytes(status, "text/plain; charset=utf-8", msg)
}

pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(body) => bytes(status, "application/json", body),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the answer",
        ),
    }
}

/// `{"error": msg}` with `status`.
pub fn error(status: StatusCode, msg: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": msg }).to_string();
    bytes(status, "application/json", body)
}

pub fn unauthorized() -> Response<Body> {
    let mut resp = error(StatusCode::UNAUTHORIZED, "unauthorized");
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"postern-admin\""),
    );
    resp
}

pub fn forbidden(msg: &str) -> Response<Body> {
    error(StatusCode::FORBIDDEN, msg)
}

pub fn not_found() -> Response<Body> {
    error(StatusCode::NOT_FOUND, "not found")
}

pub fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut resp = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}
