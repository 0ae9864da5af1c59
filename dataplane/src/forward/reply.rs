//! The HTTP answers both HTTP inbounds give (CONNECT and absolute-form):
//! refusals counted and logged once, as short plain-text bodies.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

use super::Forward;
use super::errors::ForwardError;

/// The response body of both HTTP inbounds.
pub(super) type Body = BoxBody<Bytes, hyper::Error>;

/// Counts and logs a refusal, then answers it.
pub(super) fn refuse(
    fwd: &Forward,
    (inbound, client): (&'static str, std::net::SocketAddr),
    user: &str,
    dest: &str,
    e: ForwardError,
) -> Response<Body> {
    fwd.refused(inbound, client, user, dest, &e);
    error_response(&e)
}

/// A short plain-text answer; 407 carries the Basic challenge.
fn error_response(e: &ForwardError) -> Response<Body> {
    let body = Full::new(Bytes::from(format!("{e}\n")))
        .map_err(|never| match never {})
        .boxed();
    let mut resp = Response::new(body);
    *resp.status_mut() = e.status();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if e.status() == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
        h.insert(
            header::PROXY_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"postern\""),
        );
    }
    resp
}
