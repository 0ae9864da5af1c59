//! The pure half of the UpstreamGate-compatible `/upstream` API: the JSON
//! shapes, the checks on a request, and the resources a valid request
//! becomes. Both servers of that API use it (the data plane in standalone
//! mode writes the resources as a manifest file, the operator in cluster
//! mode writes them to the API server), so a user posted in either mode gets
//! the same object names, Secret keys and spec.
//!
//! Nothing here does IO or knows about kube; how the resources are stored,
//! and who may call the API, is the server's business.

use postern_api::{LocalRef, SecretKeyRef, UserUpstreamSpec};
use serde::{Deserialize, Serialize};

use crate::checks;

/// The prefix of every object this API writes.
pub const OBJECT_PREFIX: &str = "upstreamgate-";
/// Suffix of the Secret holding upstream credentials that came inline.
pub const CREDENTIALS_SUFFIX: &str = "-upstream";
/// Longest upstream URL the UserUpstream schema takes.
const MAX_UPSTREAM_LEN: usize = 2048;

/// `POST /upstream`: the body UpstreamGate's scripts send.
#[derive(Clone, Debug, Deserialize)]
pub struct UserRequest {
    pub user: String,
    pub password: String,
    pub upstream: String,
}

/// One entry of `GET /upstream`. Never a secret: the upstream is shown
/// without inline credentials.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedUser {
    pub user: String,
    pub upstream: String,
    /// `namespace/name` of the UserUpstream.
    pub id: String,
    /// Written by this API, and so deletable through it.
    pub managed: bool,
}

/// Credentials that came inline in the upstream URL (percent-decoded).
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamCredentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for UpstreamCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UpstreamCredentials({}, ..)", self.username)
    }
}

/// What a valid request becomes: a password Secret, optionally a Secret of
/// upstream credentials, and a UserUpstream referencing them, all named
/// after the user. The password stays out of `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct UserObjects {
    /// Name of the UserUpstream and of the password Secret (key `password`).
    pub name: String,
    pub password: String,
    /// For the Secret [`UserObjects::credentials_name`] (keys `username`
    /// and `password`), when the URL carried them.
    pub credentials: Option<UpstreamCredentials>,
    pub spec: UserUpstreamSpec,
}

impl std::fmt::Debug for UserObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserObjects")
            .field("name", &self.name)
            .field("credentials", &self.credentials)
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl UserObjects {
    /// Name of the upstream credentials Secret (written only when needed).
    pub fn credentials_name(&self) -> String {
        credentials_name(&self.name)
    }
}

/// Why a request is refused (400).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("{0:?} is not a valid user name (1 to 64 of A-Z a-z 0-9 . _ ~ -)")]
    User(String),
    #[error("the password is empty")]
    EmptyPassword,
    #[error("upstream: {0}")]
    Upstream(String),
}

/// Checks a request and maps it to the resources it stands for.
pub fn translate(request: &UserRequest) -> Result<UserObjects, RequestError> {
    if !valid_user(&request.user) {
        return Err(RequestError::User(request.user.clone()));
    }
    if request.password.is_empty() {
        return Err(RequestError::EmptyPassword);
    }
    let (upstream, credentials) = split_upstream(request.upstream.trim())?;
    let name = object_name(&request.user);
    let spec = UserUpstreamSpec {
        user: request.user.clone(),
        password_secret_ref: SecretKeyRef {
            name: name.clone(),
            key: Some("password".into()),
        },
        upstream,
        upstream_credentials_secret_ref: credentials.as_ref().map(|_| LocalRef {
            name: credentials_name(&name),
        }),
        ..UserUpstreamSpec::default()
    };
    Ok(UserObjects {
        name,
        password: request.password.clone(),
        credentials,
        spec,
    })
}

/// The UserUpstream schema's rule for `spec.user`: `^[A-Za-z0-9._~-]{1,64}$`.
pub fn valid_user(user: &str) -> bool {
    (1..=64).contains(&user.len())
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b))
}

/// `direct://`, or `socks5|http|https://[user:pass@]host:port[/]`: the URL
/// to store (no credentials, scheme lowercased) and the credentials.
fn split_upstream(raw: &str) -> Result<(String, Option<UpstreamCredentials>), RequestError> {
    let bad = |message: String| RequestError::Upstream(message);
    if raw.len() > MAX_UPSTREAM_LEN {
        return Err(bad(format!("longer than {MAX_UPSTREAM_LEN} bytes")));
    }
    if raw.eq_ignore_ascii_case("direct://") || raw.eq_ignore_ascii_case("direct:///") {
        return Ok(("direct://".into(), None));
    }
    let url = checks::host_url(raw, &["socks5", "http", "https"]).map_err(|(_, m)| bad(m))?;
    let port = url
        .port
        .filter(|port| *port != 0)
        .ok_or_else(|| bad(format!("{} needs a port", public_upstream(raw))))?;
    let credentials = url
        .userinfo
        .map(|(username, password)| UpstreamCredentials { username, password });
    let stored = format!("{}://{}:{port}", url.scheme, checks::url_host(&url.host));
    Ok((stored, credentials))
}

/// The Kubernetes object name for `user`: `upstreamgate-<user>` when the
/// user name is already a valid lowercase name; otherwise a hash of the
/// user name is appended, so `Bob` and `bob` stay apart.
pub fn object_name(user: &str) -> String {
    let clean: String = user
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let clean = clean.trim_matches('-');
    if clean == user {
        format!("{OBJECT_PREFIX}{clean}")
    } else {
        let hash = postern_snapshot::sha256_hex(user.as_bytes());
        format!("{OBJECT_PREFIX}{clean}-{}", &hash[..8])
    }
}

/// Name of the upstream credentials Secret beside the object `name`.
pub fn credentials_name(name: &str) -> String {
    format!("{name}{CREDENTIALS_SUFFIX}")
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

    fn request(user: &str, upstream: &str) -> UserRequest {
        UserRequest {
            user: user.into(),
            password: "pw".into(),
            upstream: upstream.into(),
        }
    }

    #[test]
    fn inline_credentials_leave_the_url() {
        let objects =
            translate(&request("bob", "SOCKS5://su:s%40p@Proxy.local:1080/")).expect("valid");
        assert_eq!(objects.name, "upstreamgate-bob");
        assert_eq!(objects.spec.upstream, "socks5://proxy.local:1080");
        assert_eq!(
            objects.credentials,
            Some(UpstreamCredentials {
                username: "su".into(),
                password: "s@p".into()
            })
        );
        assert_eq!(
            objects.spec.upstream_credentials_secret_ref,
            Some(LocalRef {
                name: "upstreamgate-bob-upstream".into()
            })
        );
        assert_eq!(objects.spec.password_secret_ref.name, "upstreamgate-bob");
        assert_eq!(objects.spec.password_secret_ref.key_or("x"), "password");
        assert!(!format!("{objects:?}").contains("s@p"));
    }

    #[test]
    fn the_resources_compile_into_the_user() {
        let objects = translate(&request("Alice.x", "socks5://su:sp@127.0.0.1:1080")).expect("ok");
        let secret = |name: &str, data: serde_json::Value| {
            serde_json::json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name}, "stringData": data})
        };
        let creds = objects.credentials.clone().expect("inline credentials");
        let docs = [
            secret(&objects.name, serde_json::json!({"password": "pw"})),
            secret(
                &objects.credentials_name(),
                serde_json::json!({"username": creds.username, "password": creds.password}),
            ),
            serde_json::json!({"apiVersion": postern_api::API_VERSION, "kind": "UserUpstream",
                "metadata": {"name": objects.name}, "spec": objects.spec}),
        ];
        let yaml = docs.map(|d| d.to_string()).join("\n---\n");
        let mut inputs = crate::Inputs::default();
        for resource in crate::manifest::parse_documents(&yaml).expect("parses") {
            inputs.push(resource);
        }
        let out = crate::compile(&inputs);
        assert!(
            out.verdicts.iter().all(|v| v.accepted()),
            "{:?}",
            out.verdicts
        );
        let user = &out.snapshot.users[0];
        assert_eq!(user.user, "Alice.x");
        match &user.upstream {
            postern_snapshot::Upstream::Socks5 {
                port: 1080,
                credentials: Some(c),
                ..
            } => assert_eq!((c.username.as_str(), c.password.as_str()), ("su", "sp")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_scheme_keeps_host_and_port() {
        for (raw, stored) in [
            ("direct://", "direct://"),
            ("http://10.0.0.1:3128", "http://10.0.0.1:3128"),
            (
                "https://proxy.example.com:443/",
                "https://proxy.example.com:443",
            ),
            ("socks5://[::1]:1080", "socks5://[::1]:1080"),
        ] {
            let objects = translate(&request("a", raw)).expect(raw);
            assert_eq!(objects.spec.upstream, stored);
            assert_eq!(objects.credentials, None);
            assert_eq!(objects.spec.upstream_credentials_secret_ref, None);
        }
    }

    #[test]
    fn refusals() {
        let user = |u: &str| translate(&request(u, "direct://"));
        assert!(matches!(user(""), Err(RequestError::User(_))));
        assert!(matches!(user("a b"), Err(RequestError::User(_))));
        assert!(matches!(user("a/b"), Err(RequestError::User(_))));
        assert!(matches!(user(&"x".repeat(65)), Err(RequestError::User(_))));
        assert!(user(&"x".repeat(64)).is_ok());
        assert!(user("A.b_c~d-1").is_ok());
        for bad in [
            "ftp://127.0.0.1:21",
            "nonsense",
            "socks5://",
            "http://proxy",
            "http://proxy:0",
            "http://proxy:3128/path",
            "http://proxy:3128?q",
        ] {
            let got = translate(&request("a", bad));
            assert!(
                matches!(got, Err(RequestError::Upstream(_))),
                "{bad}: {got:?}"
            );
        }
        let empty = UserRequest {
            password: String::new(),
            ..request("a", "direct://")
        };
        assert_eq!(translate(&empty), Err(RequestError::EmptyPassword));
    }

    #[test]
    fn names_stay_unique_and_valid() {
        assert_eq!(object_name("alice"), "upstreamgate-alice");
        assert_ne!(object_name("Bob"), object_name("bob"));
        assert_ne!(object_name("a.b"), object_name("a-b"));
        assert!(object_name("Bob").starts_with("upstreamgate-bob-"));
        let name = object_name("~");
        assert!(
            name.starts_with("upstreamgate--") && name.len() == 22,
            "{name}"
        );
        let longest = credentials_name(&object_name(&"X".repeat(64)));
        assert!(longest.len() <= 253, "{longest}");
    }

    #[test]
    fn listing_hides_credentials() {
        assert_eq!(public_upstream("socks5://u:p@h:1080"), "socks5://h:1080");
        assert_eq!(public_upstream("http://a@b:c@h:3128/"), "http://h:3128/");
        assert_eq!(public_upstream("direct://"), "direct://");
        assert_eq!(public_upstream("https://h:443"), "https://h:443");
    }
}
