//! The UpstreamGate-compatible user API on the admin port, so that its
//! users' scripts keep working:
//!
//! - `POST /upstream` `{"user","password","upstream"}` → 204 (400 for bad
//!   JSON, a bad name or an unsupported scheme);
//! - `GET /upstream` → the users and their upstreams, never a secret;
//! - `DELETE /upstream/{user}` → 204 (404 unknown, 409 when the user is
//!   defined by a manifest this API did not write);
//! - every call needs `Authorization: Bearer <token>` (401), other methods
//!   get 405.
//!
//! Resources stay the only source of truth: in standalone mode a POST
//! writes `upstreamgate-<user>.yaml` (a Secret and a UserUpstream) into the
//! manifests folder, which the watcher applies within a second and which
//! survives a restart; a DELETE removes that file. Inline upstream
//! credentials (`socks5://u:p@host:port`) go into the Secret, not the URL.
//! In cluster mode the operator serves this API (it writes the resources);
//! the data plane answers 501.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use postern_snapshot::sha256_hex;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use postern_compile::upstreamgate::object_name;

use super::Forward;
use super::table::upstream_label;

/// The prefix of every object and file this API writes (shared with the
/// operator's side of the API).
const PREFIX: &str = postern_compile::upstreamgate::OBJECT_PREFIX;
const MAX_BODY: usize = 64 * 1024;

/// The API's state: who may call it and where it writes.
pub struct UpstreamApi {
    /// Hex SHA-256 of the bearer token; `None`: the API refuses every call.
    token_sha256: Option<String>,
    /// The manifests folder (standalone mode); `None` in cluster mode.
    manifests: Option<PathBuf>,
    forward: Arc<Forward>,
}

#[derive(Deserialize)]
struct Post {
    user: String,
    password: String,
    upstream: String,
}

#[derive(Serialize)]
struct Listed {
    user: String,
    upstream: String,
    /// `namespace/name` of the UserUpstream.
    id: String,
    /// Written by this API (and so deletable through it).
    managed: bool,
}

impl UpstreamApi {
    pub fn new(token: Option<String>, manifests: Option<PathBuf>, forward: Arc<Forward>) -> Self {
        UpstreamApi {
            token_sha256: token.map(|t| sha256_hex(t.trim().as_bytes())),
            manifests,
            forward,
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

    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let Some(expected) = &self.token_sha256 else {
            return false;
        };
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| sha256_hex(t.trim().as_bytes()));
        presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(expected.as_bytes())))
    }

    fn list(&self) -> Response<Full<Bytes>> {
        let table = self.forward.registry().table();
        let mut users: Vec<Listed> = table
            .users()
            .map(|u| Listed {
                user: u.user.clone(),
                upstream: upstream_label(&u.upstream),
                id: u.id.clone(),
                managed: is_managed(&u.id),
            })
            .collect();
        users.sort_by(|a, b| a.user.cmp(&b.user));
        let body = serde_json::to_vec_pretty(&users).unwrap_or_default();
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
        let post: Post = match serde_json::from_slice(&body) {
            Ok(p) => p,
            Err(e) => return reply_owned(StatusCode::BAD_REQUEST, format!("bad JSON: {e}\n")),
        };
        let yaml = match manifest(&post) {
            Ok(y) => y,
            Err(msg) => return reply_owned(StatusCode::BAD_REQUEST, format!("{msg}\n")),
        };
        match write_atomically(&dir.join(file_name(&post.user)), &yaml) {
            Ok(()) => {
                tracing::info!(user = %post.user, "UpstreamGate API: user written to the manifests folder");
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
        let path = dir.join(file_name(user));
        match std::fs::remove_file(&path) {
            Ok(()) => {
                tracing::info!(%user, "UpstreamGate API: user removed from the manifests folder");
                empty(StatusCode::NO_CONTENT)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match self.forward.registry().table().get(user) {
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

/// The Secret and UserUpstream for a POST, or why it is refused.
fn manifest(post: &Post) -> Result<String, String> {
    let user = &post.user;
    let valid_user = !user.is_empty()
        && user.len() <= 64
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b));
    if !valid_user {
        return Err(format!("{user:?} is not a valid user name"));
    }
    if post.password.is_empty() {
        return Err("the password is empty".into());
    }
    let (upstream, creds) = split_credentials(post.upstream.trim())?;
    let name = object_name(user);
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let mut yaml = format!(
        "# Written by the UpstreamGate-compatible API (POST /upstream).\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\nstringData:\n  password: {}\n---\n",
        q(&post.password)
    );
    let mut creds_ref = String::new();
    if let Some((u, p)) = creds {
        yaml.push_str(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}-upstream}}\nstringData:\n  username: {}\n  password: {}\n---\n",
            q(&u),
            q(&p)
        ));
        creds_ref = format!("  upstreamCredentialsSecretRef: {{name: {name}-upstream}}\n");
    }
    yaml.push_str(&format!(
        "apiVersion: postern.io/v1alpha1\nkind: UserUpstream\nmetadata: {{name: {name}}}\nspec:\n  user: {}\n  \
         passwordSecretRef: {{name: {name}, key: password}}\n  upstream: {}\n{creds_ref}",
        q(user),
        q(&upstream)
    ));
    Ok(yaml)
}

/// The upstream URL without inline credentials, and the credentials.
type Split = (String, Option<(String, String)>);

fn split_credentials(url: &str) -> Result<Split, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{url:?} is not a URL (direct://, socks5://, http://, https://)"))?;
    let scheme = scheme.to_ascii_lowercase();
    if !["direct", "socks5", "http", "https"].contains(&scheme.as_str()) {
        return Err(format!("unsupported upstream scheme {scheme:?}"));
    }
    if scheme == "direct" {
        return Ok(("direct://".into(), None));
    }
    let rest = rest.trim_end_matches('/');
    let (userinfo, host) = match rest.rsplit_once('@') {
        Some((ui, host)) => (Some(ui), host),
        None => (None, rest),
    };
    if host.is_empty() || host.contains(['/', '?', '#', ' ']) {
        return Err(format!("{url:?} has no valid host"));
    }
    let creds = userinfo.map(|ui| match ui.split_once(':') {
        Some((u, p)) => (u.to_string(), p.to_string()),
        None => (ui.to_string(), String::new()),
    });
    Ok((format!("{scheme}://{host}"), creds))
}

fn file_name(user: &str) -> String {
    format!("{}.yaml", object_name(user))
}

fn is_managed(id: &str) -> bool {
    id.split_once('/')
        .is_some_and(|(_, name)| name.starts_with(PREFIX))
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

    fn post(user: &str, upstream: &str) -> Post {
        Post {
            user: user.into(),
            password: "p\"w\n".into(),
            upstream: upstream.into(),
        }
    }

    #[test]
    fn manifests_compile_and_keep_credentials_out_of_the_url() {
        let yaml = manifest(&post("Alice.x", "socks5://su:sp@127.0.0.1:1080")).expect("valid");
        assert!(
            yaml.contains("upstream: \"socks5://127.0.0.1:1080\""),
            "{yaml}"
        );
        let mut inputs = postern_compile::Inputs::default();
        for resource in postern_compile::manifest::parse_documents(&yaml).expect("parses") {
            inputs.push(resource);
        }
        let out = postern_compile::compile(&inputs);
        assert!(
            out.verdicts.iter().all(|v| v.accepted()),
            "{:?}",
            out.verdicts
        );
        let user = &out.snapshot.users[0];
        assert_eq!(user.user, "Alice.x");
        assert_eq!(
            user.password,
            postern_snapshot::PasswordHash::new(&user.password.salt, b"p\"w\n")
        );
        match &user.upstream {
            postern_snapshot::Upstream::Socks5 {
                credentials: Some(c),
                ..
            } => {
                assert_eq!((c.username.as_str(), c.password.as_str()), ("su", "sp"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refusals() {
        assert!(manifest(&post("a b", "direct://")).is_err());
        assert!(manifest(&post("alice", "ftp://x:1")).is_err());
        assert!(manifest(&post("alice", "socks5://")).is_err());
        assert!(manifest(&post("alice", "nonsense")).is_err());
        assert!(manifest(&post("alice", "direct://")).is_ok());
    }

    #[test]
    fn names_stay_unique_and_valid() {
        assert_eq!(object_name("alice"), "upstreamgate-alice");
        assert_ne!(object_name("Bob"), object_name("bob"));
        assert!(object_name("Bob").starts_with("upstreamgate-bob-"));
        assert!(is_managed("default/upstreamgate-alice"));
        assert!(!is_managed("default/alice"));
    }
}
