//! The pure half of the UpstreamGate-compatible `/upstream` API: the JSON
//! shapes, the checks on a request, and the resources a valid request
//! becomes. Both servers of that API use it (the data plane in standalone
//! mode writes the resources as a manifest file, the operator in cluster
//! mode writes them to the API server), so a user posted in either mode is
//! accepted or refused alike and gets the same object names, Secret keys,
//! spec and listing.
//!
//! Nothing here does IO or knows about kube or the snapshot; the compiler
//! is asked only for its verdict on what would be written ([`check`]).
//! How the resources are stored, and who may call the API, is the
//! server's business.

mod manifest;
mod names;
mod upstream;
mod verdict;

use postern_api::{LocalRef, SecretKeyRef, UserUpstreamSpec};
use serde::{Deserialize, Serialize};

pub use manifest::manifest;
pub use names::{CREDENTIALS_SUFFIX, OBJECT_PREFIX, credentials_name, object_name};
/// The user name rule, for servers that check a name outside [`translate`]
/// (`DELETE /upstream/{user}`).
pub use postern_api::user_name;
pub use upstream::{DIRECT, public_upstream, stored_upstream};
pub use verdict::{Refusal, check};

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
    #[error("{0:?} is not a valid user name ({rule})", rule = user_name::RULE)]
    User(String),
    #[error("the password is empty")]
    EmptyPassword,
    #[error("upstream: {0}")]
    Upstream(String),
}

/// Checks a request and maps it to the resources it stands for. The user
/// name rule is the UserUpstream schema's ([`postern_api::user_name`]).
pub fn translate(request: &UserRequest) -> Result<UserObjects, RequestError> {
    if !user_name::is_valid(&request.user) {
        return Err(RequestError::User(request.user.clone()));
    }
    if request.password.is_empty() {
        return Err(RequestError::EmptyPassword);
    }
    let (upstream, credentials) = upstream::split(request.upstream.trim())?;
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

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn request(user: &str, upstream: &str) -> UserRequest {
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
        let too_big = translate(&request("a", "socks5://proxy:70000"));
        assert!(
            matches!(&too_big, Err(RequestError::Upstream(m)) if m.contains("port 70000")),
            "{too_big:?}"
        );
        let empty = UserRequest {
            password: String::new(),
            ..request("a", "direct://")
        };
        assert_eq!(translate(&empty), Err(RequestError::EmptyPassword));
    }

    #[test]
    fn a_refused_name_says_the_rule() {
        let err = translate(&request("a b", "direct://")).expect_err("bad name");
        assert_eq!(
            err.to_string(),
            r#""a b" is not a valid user name (1 to 64 of A-Z a-z 0-9 . _ ~ -)"#
        );
    }
}
