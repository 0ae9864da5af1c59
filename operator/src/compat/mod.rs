//! The UpstreamGate-compatible `/upstream` API in cluster mode, on the
//! operator's admin port (the data plane answers 501 there in cluster mode).
//! Same routes and status codes as the data plane's standalone version:
//!
//! - `POST /upstream` `{"user","password","upstream"}` → 204; 400 for bad
//!   JSON, a bad user name or an unsupported upstream; 422 with the
//!   compiler's verdict when the user would be refused (nothing written);
//!   409 when the user is defined by a UserUpstream this API did not write
//!   or would displace an object in service;
//! - `GET /upstream` → `[{"user","upstream","id","managed"}]` for every
//!   UserUpstream in the operator's scope, never a secret;
//! - `DELETE /upstream/{user}` → 204; 404 unknown; 409 not written here;
//! - 401 without `Authorization: Bearer <--admin-token-file>` (without that
//!   flag, always), 405 for other methods.
//!
//! A POST only writes resources (see [`store`]); the operator's watches
//! compile them like any others. The request checks and the mapping to
//! resources are shared with the data plane
//! ([`postern_upstreamgate`]); the kube side lives here.

mod objects;
mod store;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use kube::Client;
use postern_api::user_name;
use std::sync::{Arc, Mutex};

use postern_upstreamgate::{UserObjects, UserRequest, check, translate};

use crate::index::Index;

use store::{Deleted, Store, StoreError};

const MAX_BODY: usize = 64 * 1024;

/// The API: who may call it and where it reads and writes.
pub struct UpstreamApi {
    /// Who may call: bearer tokens of the admin role (none configured:
    /// every call is refused).
    gate: Arc<postern_admin::Gate>,
    store: Store,
    /// What the operator watches: a POST is compiled against it first.
    index: Arc<Mutex<Index>>,
}

/// What a request asks for, decided from the method and path alone.
#[derive(Debug, PartialEq, Eq)]
enum Call<'a> {
    List,
    Post,
    Delete(&'a str),
    NotAllowed(&'static str),
}

fn route<'a>(method: &Method, path: &'a str) -> Call<'a> {
    match (path.strip_prefix("/upstream"), method) {
        (Some(""), &Method::GET) => Call::List,
        (Some(""), &Method::POST) => Call::Post,
        (Some(""), _) => Call::NotAllowed("GET, POST"),
        (Some(rest), &Method::DELETE) if rest.len() > 1 => Call::Delete(&rest[1..]),
        _ => Call::NotAllowed("DELETE"),
    }
}

impl UpstreamApi {
    /// `namespace`: where users are written; `scope`: the operator's watch
    /// scope, which GET lists and conflicts are checked against.
    pub fn new(
        gate: Arc<postern_admin::Gate>,
        client: Client,
        namespace: String,
        scope: Option<String>,
        index: Arc<Mutex<Index>>,
    ) -> Self {
        UpstreamApi {
            gate,
            index,
            store: Store {
                client,
                namespace,
                scope,
            },
        }
    }

    /// Whether this API answers `path`.
    pub fn owns(path: &str) -> bool {
        path == "/upstream" || path.starts_with("/upstream/")
    }

    pub async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if !self.authorized(req.headers()) {
            let mut resp = reply(
                StatusCode::UNAUTHORIZED,
                "a bearer token is required (--admin-token-file)\n".into(),
            );
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return resp;
        }
        let path = req.uri().path().to_string();
        match route(req.method(), &path) {
            Call::List => self.list().await,
            Call::Post => self.post(req).await,
            Call::Delete(user) => self.delete(user).await,
            Call::NotAllowed(allow) => {
                let mut resp = reply(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method not allowed\n".into(),
                );
                resp.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
                resp
            }
        }
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        presented.and_then(|t| self.gate.tokens().role_of(t)) == Some(postern_admin::Role::Admin)
    }

    async fn list(&self) -> Response<Full<Bytes>> {
        match self.store.list().await {
            Ok(users) => {
                let body = serde_json::to_vec_pretty(&users).unwrap_or_default();
                let mut resp = Response::new(Full::new(Bytes::from(body)));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                resp
            }
            Err(error) => failed("listing users", error),
        }
    }

    async fn post(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) => {
                return reply(
                    StatusCode::BAD_REQUEST,
                    "body too large or unreadable\n".into(),
                );
            }
        };
        let request: UserRequest = match serde_json::from_slice(&body) {
            Ok(request) => request,
            Err(e) => return reply(StatusCode::BAD_REQUEST, format!("bad JSON: {e}\n")),
        };
        let objects = match translate(&request) {
            Ok(objects) => objects,
            Err(e) => return reply(StatusCode::BAD_REQUEST, format!("{e}\n")),
        };
        if let Some(refused) = self.refusal(&objects) {
            return refused;
        }
        match self.store.post(&objects).await {
            Ok(()) => {
                tracing::info!(user = %request.user, namespace = %self.store.namespace, name = %objects.name, "UpstreamGate API: user written");
                reply(StatusCode::NO_CONTENT, String::new())
            }
            Err(error) => failed("writing the user", error),
        }
    }

    /// The compiler's verdict on the world as watched with `objects`
    /// written (`None`: they may be): 422 when the user would be refused,
    /// 409 when its name is taken or an object in service would be
    /// refused, 503 before the watches have listed everything once.
    fn refusal(&self, objects: &UserObjects) -> Option<Response<Full<Bytes>>> {
        let inputs = {
            let index = crate::publish::lock(&self.index);
            if !index.synced() {
                return Some(reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the operator has not listed its resources yet; retry shortly\n".into(),
                ));
            }
            index.inputs()
        };
        check(inputs, objects, &self.store.namespace)
            .err()
            .map(|refusal| reply(refusal.status(), format!("{refusal}\n")))
    }

    async fn delete(&self, user: &str) -> Response<Full<Bytes>> {
        // Names outside the schema's alphabet cannot exist.
        if !user_name::is_valid(user) {
            return reply(StatusCode::NOT_FOUND, "no such user\n".into());
        }
        match self.store.delete(user).await {
            Ok(Deleted::Done) => {
                tracing::info!(%user, "UpstreamGate API: user deleted");
                reply(StatusCode::NO_CONTENT, String::new())
            }
            Ok(Deleted::NotFound) => reply(StatusCode::NOT_FOUND, "no such user\n".into()),
            Err(error) => failed("deleting the user", error),
        }
    }
}

/// 409 for a conflict; 400 when the API server found the objects invalid;
/// 502 for any other failure of the API server.
fn failed(doing: &str, error: StoreError) -> Response<Full<Bytes>> {
    let status = match &error {
        StoreError::Conflict(_) => StatusCode::CONFLICT,
        StoreError::Kube(kube::Error::Api(s)) if s.code == 400 || s.code == 422 => {
            StatusCode::BAD_REQUEST
        }
        StoreError::Kube(_) => StatusCode::BAD_GATEWAY,
    };
    if status == StatusCode::BAD_GATEWAY {
        tracing::warn!(%error, "UpstreamGate API: {doing} failed");
    }
    reply(status, format!("{doing}: {error}\n"))
}

fn reply(status: StatusCode, msg: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(msg)));
    *resp.status_mut() = status;
    if status != StatusCode::NO_CONTENT {
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_the_data_planes() {
        assert_eq!(route(&Method::GET, "/upstream"), Call::List);
        assert_eq!(route(&Method::POST, "/upstream"), Call::Post);
        assert_eq!(route(&Method::DELETE, "/upstream/bob"), Call::Delete("bob"));
        assert_eq!(
            route(&Method::PUT, "/upstream"),
            Call::NotAllowed("GET, POST")
        );
        assert_eq!(
            route(&Method::DELETE, "/upstream"),
            Call::NotAllowed("GET, POST")
        );
        assert_eq!(
            route(&Method::GET, "/upstream/bob"),
            Call::NotAllowed("DELETE")
        );
        assert_eq!(
            route(&Method::DELETE, "/upstream/"),
            Call::NotAllowed("DELETE")
        );
        assert!(UpstreamApi::owns("/upstream") && UpstreamApi::owns("/upstream/x"));
        assert!(!UpstreamApi::owns("/upstreams") && !UpstreamApi::owns("/api/v1/snapshot"));
    }

    fn bearer(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(header::AUTHORIZATION, v);
        }
        headers
    }

    async fn api(token: Option<&str>) -> UpstreamApi {
        // A client that is never used: authorization comes first.
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("url"));
        let client = Client::try_from(config).expect("client");
        let index = Arc::new(Mutex::new(Index::new(Default::default())));
        UpstreamApi::new(
            Arc::new(postern_admin::Gate::new(postern_admin::Tokens::fixed(
                token, None,
            ))),
            client,
            "ns".into(),
            None,
            index,
        )
    }

    #[tokio::test]
    async fn only_the_bearer_token_opens_the_api() {
        let api = api(Some("s3cret\n")).await;
        assert!(api.authorized(&bearer("Bearer s3cret")));
        assert!(!api.authorized(&bearer("Bearer wrong")));
        assert!(!api.authorized(&bearer("Basic s3cret")));
        assert!(!api.authorized(&bearer("s3cret")));
        assert!(!api.authorized(&HeaderMap::new()));
    }

    #[tokio::test]
    async fn without_a_token_the_api_is_closed() {
        let api = api(None).await;
        assert!(!api.authorized(&bearer("Bearer ")));
        assert!(!api.authorized(&bearer("Bearer anything")));
    }
}
