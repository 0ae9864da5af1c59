//! The UpstreamGate-compatible user API on the admin port, so that its
//! users' scripts keep working:
//!
//! - `POST /upstream` `{"user","password","upstream"}` → 204 (400 for bad
//!   JSON, a bad name or an unsupported upstream; 422 with the compiler's
//!   verdict when the user would be refused; 409 when it would displace an
//!   object in service, or the folder does not compile); nothing is
//!   written unless the folder with it compiles and accepts it;
//! - `GET /upstream` → `[{"user","upstream","id","managed"}]`, never a secret;
//! - `DELETE /upstream/{user}` → 204 (404 unknown, 409 when the user is
//!   defined by a manifest this API did not write);
//! - every call needs `Authorization: Bearer <token>` (401), other methods
//!   get 405.
//!
//! Resources stay the only source of truth: in standalone mode a POST
//! writes `upstreamgate-<user>.yaml` (Secrets and a UserUpstream) into the
//! manifests folder, which the watcher applies within a second and which
//! survives a restart; a DELETE removes that file. Which requests are valid
//! and what they become is [`postern_upstreamgate`]'s, shared with the
//! operator, which serves this API in cluster mode (the data plane answers
//! 501 there). Users are listed from the snapshot in service; this module
//! reads the runtime and never writes it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use postern_snapshot::{ProxyUser, Upstream};
use postern_upstreamgate::{
    DIRECT, ListedUser, OBJECT_PREFIX, UserObjects, UserRequest, check, manifest, object_name,
    stored_upstream, translate, user_name,
};

use crate::runtime::Runtime;
use crate::standalone;

const MAX_BODY: usize = 64 * 1024;

/// The API's state: who may call it, where it writes, what it lists.
pub struct UpstreamApi {
    /// Who may call: the admin role of the admin API's tokens (without
    /// an admin token the API refuses every call).
    gate: Arc<postern_admin::Gate>,
    /// The manifests folder (standalone mode); `None` in cluster mode.
    manifests: Option<PathBuf>,
    runtime: Arc<Runtime>,
}

impl UpstreamApi {
    pub fn new(
        gate: Arc<postern_admin::Gate>,
        manifests: Option<PathBuf>,
        runtime: Arc<Runtime>,
    ) -> Self {
        UpstreamApi {
            gate,
            manifests,
            runtime,
        }
    }

    /// Whether this API answers `path`.
    pub fn owns(path: &str) -> bool {
        path == "/upstream" || path.starts_with("/upstream/")
    }

    pub async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if !self.authorized(&req) {
            let mut resp = reply(
                StatusCode::UNAUTHORIZED,
                "a bearer token is required (--admin-token-file)\n",
            );
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return resp;
        }
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        match (path.strip_prefix("/upstream"), &method) {
            (Some(""), &Method::GET) => self.list(),
            (Some(""), &Method::POST) => self.post(req).await,
            (Some(rest), &Method::DELETE) if rest.len() > 1 => self.delete(&rest[1..]),
            (Some(""), _) => not_allowed("GET, POST"),
            _ => not_allowed("DELETE"),
        }
    }

    /// Bearer tokens only (scripts call this API, not the dashboard), with
    /// the admin role.
    fn authorized(&self, req: &Request<Incoming>) -> bool {
        req.headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .and_then(|t| self.gate.tokens().role_of(t))
            == Some(postern_admin::Role::Admin)
    }

    /// The users of the snapshot in service (none before the first).
    fn users(&self) -> Vec<ListedUser> {
        let mut users: Vec<ListedUser> = self
            .runtime
            .snapshot()
            .map(|s| s.users.iter().map(listed).collect())
            .unwrap_or_default();
        users.sort_by(|a, b| (&a.user, &a.id).cmp(&(&b.user, &b.id)));
        users
    }

    fn list(&self) -> Response<Full<Bytes>> {
        let body = serde_json::to_vec_pretty(&self.users()).unwrap_or_default();
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        resp
    }

    async fn post(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let Some(dir) = &self.manifests else {
            return cluster_mode();
        };
        let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return reply(StatusCode::BAD_REQUEST, "body too large or unreadable\n"),
        };
        let request: UserRequest = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return reply_owned(StatusCode::BAD_REQUEST, format!("bad JSON: {e}\n")),
        };
        let objects = match translate(&request) {
            Ok(objects) => objects,
            Err(e) => return reply_owned(StatusCode::BAD_REQUEST, format!("{e}\n")),
        };
        let file = file_name(&objects.name);
        let text = manifest(&objects);
        // The folder compiled with this file in it must accept the user:
        // otherwise the write would be answered 204 and then refused.
        if let Some(refusal) = refusal_with(dir, &file, &objects) {
            return refusal;
        }
        let path = dir.join(&file);
        match write_atomically(&path, &text) {
            Ok(()) => {
                tracing::info!(user = %request.user, "UpstreamGate API: user written to the manifests folder");
                empty(StatusCode::NO_CONTENT)
            }
            Err(e) => reply_owned(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot write the manifest: {e}\n"),
            ),
        }
    }

    fn delete(&self, user: &str) -> Response<Full<Bytes>> {
        let Some(dir) = &self.manifests else {
            return cluster_mode();
        };
        // Names outside the schema's alphabet cannot exist.
        if !user_name::is_valid(user) {
            return reply(StatusCode::NOT_FOUND, "no such user\n");
        }
        let path = dir.join(file_name(&object_name(user)));
        match std::fs::remove_file(&path) {
            Ok(()) => {
                tracing::info!(%user, "UpstreamGate API: user removed from the manifests folder");
                empty(StatusCode::NO_CONTENT)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match self.users().into_iter().find(|u| u.user == user) {
                    Some(u) => reply_owned(
                        StatusCode::CONFLICT,
                        format!(
                            "user {user} is defined by UserUpstream {}, not by this API\n",
                            u.id
                        ),
                    ),
                    None => reply(StatusCode::NOT_FOUND, "no such user\n"),
                }
            }
            Err(e) => reply_owned(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot remove the manifest: {e}\n"),
            ),
        }
    }
}

/// A `GET /upstream` entry for a compiled user.
/// Asks the compiler about the manifests folder with `file` written for
/// `objects` (`None`: it may be written). 422 with the verdict when the
/// user would be refused; 409 when an object in service would be (a user
/// name already taken), or when the folder does not compile at all (another
/// file is broken, so nothing written here would take effect).
fn refusal_with(dir: &Path, file: &str, objects: &UserObjects) -> Option<Response<Full<Bytes>>> {
    let mut files = match standalone::read_files(dir, standalone::Limits::NONE) {
        Ok(files) => files,
        Err(e) => {
            return Some(reply_owned(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read the manifests folder: {e}\n"),
            ));
        }
    };
    // The file is this API's own: what it holds now is replaced.
    files.retain(|f| f.name != file);
    let inputs = match standalone::file_inputs(&files, standalone::Limits::NONE) {
        Ok(inputs) => inputs,
        Err(e) => {
            return Some(reply_owned(
                StatusCode::CONFLICT,
                format!(
                    "the manifests folder does not compile, so no user can be added until it is fixed: {e}\n"
                ),
            ));
        }
    };
    check(
        inputs,
        objects,
        postern_compile::manifest::DEFAULT_NAMESPACE,
    )
    .err()
    .map(|refusal| reply_owned(refusal.status(), format!("{refusal}\n")))
}

fn listed(user: &ProxyUser) -> ListedUser {
    ListedUser {
        user: user.user.clone(),
        upstream: listed_upstream(&user.upstream),
        id: user.id.clone(),
        managed: is_managed(&user.id),
    }
}

/// The upstream as this API stores it, so a user it wrote lists with the
/// string it was stored with, as the operator lists it.
fn listed_upstream(upstream: &Upstream) -> String {
    match upstream {
        Upstream::Direct => DIRECT.to_string(),
        Upstream::Socks5 { host, port, .. } => stored_upstream("socks5", host, *port),
        Upstream::Http { host, port, .. } => stored_upstream("http", host, *port),
        Upstream::Https { host, port, .. } => stored_upstream("https", host, *port),
    }
}

/// The manifest of the objects named `name`.
fn file_name(name: &str) -> String {
    format!("{name}.yaml")
}

/// Whether the UserUpstream `namespace/name` is one this API writes.
fn is_managed(id: &str) -> bool {
    id.split_once('/')
        .is_some_and(|(_, name)| name.starts_with(OBJECT_PREFIX))
}

/// Writes via a hidden temporary name the folder watcher ignores.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("upstreamgate.yaml");
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

fn cluster_mode() -> Response<Full<Bytes>> {
    reply(
        StatusCode::NOT_IMPLEMENTED,
        "in cluster mode the operator serves this API: create UserUpstreams there\n",
    )
}

fn not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut resp = reply(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    resp.headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(allow));
    resp
}

fn reply(status: StatusCode, msg: &'static str) -> Response<Full<Bytes>> {
    reply_owned(status, msg.to_string())
}

fn reply_owned(status: StatusCode, msg: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(msg)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn empty(status: StatusCode) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = status;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The snapshot user the file this API writes for `upstream` compiles into.
    fn compiled(upstream: &str) -> (String, ProxyUser) {
        let objects = translate(&UserRequest {
            user: "bob".into(),
            password: "pw".into(),
            upstream: upstream.into(),
        })
        .expect("valid");
        let mut inputs = postern_compile::Inputs::default();
        let text = manifest(&objects);
        for resource in postern_compile::manifest::parse_documents(&text).expect("parses") {
            inputs.push(resource);
        }
        let out = postern_compile::compile(&inputs);
        (objects.spec.upstream, out.snapshot.users[0].clone())
    }

    #[test]
    fn a_user_lists_with_the_upstream_it_was_stored_with() {
        for raw in [
            "direct://",
            "socks5://su:sp@Proxy.local:1080",
            "http://10.0.0.1:3128/",
            "https://[::1]:8443",
        ] {
            let (stored, user) = compiled(raw);
            let entry = listed(&user);
            assert_eq!(entry.upstream, stored, "{raw}");
            assert_eq!(entry.id, "default/upstreamgate-bob");
            assert!(entry.managed);
        }
        assert_eq!(listed_upstream(&Upstream::Direct), "direct://");
    }

    #[test]
    fn managed_users_are_the_ones_this_api_names() {
        assert_eq!(file_name(&object_name("alice")), "upstreamgate-alice.yaml");
        assert!(is_managed("default/upstreamgate-alice"));
        assert!(!is_managed("default/alice"));
    }
}
