//! Whether the resources a request becomes would take effect: both servers
//! ask the compiler before they write, so a POST is answered with the
//! compiler's verdict instead of 204 and a refusal later.

use postern_api::{Kind, Object, ObjectKey};
use postern_compile::{Inputs, Reason, SecretData, Verdict, compile};

use crate::UserObjects;

/// Why the resources must not be written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The user name is another UserUpstream's (409).
    #[error("{0}")]
    Taken(String),
    /// The UserUpstream itself would be refused (422).
    #[error("refused ({reason}): {message}")]
    Refused { reason: Reason, message: String },
    /// An object in service today would be refused once they are written,
    /// e.g. a user name already taken (409).
    #[error("{kind} {key} would be refused ({reason}): {message}")]
    Displaces {
        kind: Kind,
        key: ObjectKey,
        reason: Reason,
        message: String,
    },
}

impl Refusal {
    /// Whether it conflicts with what is there (409) rather than being
    /// invalid in itself (422).
    pub fn is_conflict(&self) -> bool {
        !matches!(self, Refusal::Refused { .. })
    }

    /// The status both servers of the API answer with.
    pub fn status(&self) -> http::StatusCode {
        if self.is_conflict() {
            http::StatusCode::CONFLICT
        } else {
            http::StatusCode::UNPROCESSABLE_ENTITY
        }
    }
}

/// Compiles `inputs` (the world as it is) with `objects` written into
/// `namespace`, replacing any objects of the same names, and says whether
/// that may be written.
pub fn check(mut inputs: Inputs, objects: &UserObjects, namespace: &str) -> Result<(), Refusal> {
    let key = ObjectKey {
        namespace: namespace.to_string(),
        name: objects.name.clone(),
    };
    inputs.user_upstreams.retain(|o| o.key() != key);
    let accepted_before: Vec<(Kind, ObjectKey)> = compile(&inputs)
        .verdicts
        .into_iter()
        .filter(Verdict::accepted)
        .map(|v| (v.kind, v.key))
        .collect();
    inputs
        .user_upstreams
        .push(Object::new(namespace, &objects.name, objects.spec.clone()).into());
    let secret = |name: &str, data: &[(&str, &str)]| {
        let key = ObjectKey {
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        let data = data
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect();
        (key, SecretData { kind: None, data })
    };
    let (k, v) = secret(&objects.name, &[("password", &objects.password)]);
    inputs.secrets.insert(k, v);
    if let Some(c) = &objects.credentials {
        let (k, v) = secret(
            &objects.credentials_name(),
            &[("username", &c.username), ("password", &c.password)],
        );
        inputs.secrets.insert(k, v);
    }
    let after = compile(&inputs).verdicts;
    if let Some(v) = after
        .iter()
        .find(|v| v.kind == Kind::UserUpstream && v.key == key && !v.accepted())
    {
        return Err(if v.reason == Reason::DuplicateUser {
            Refusal::Taken(v.message.clone())
        } else {
            Refusal::Refused {
                reason: v.reason,
                message: v.message.clone(),
            }
        });
    }
    match after.into_iter().find(|v| {
        !v.accepted()
            && accepted_before
                .iter()
                .any(|(kind, key)| *kind == v.kind && *key == v.key)
    }) {
        Some(v) => Err(Refusal::Displaces {
            kind: v.kind,
            key: v.key,
            reason: v.reason,
            message: v.message,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use postern_api::UserUpstreamSpec;

    use super::*;
    use crate::{UserRequest, translate};

    fn bob(upstream: &str) -> UserObjects {
        translate(&UserRequest {
            user: "bob".into(),
            password: "pw".into(),
            upstream: upstream.into(),
        })
        .expect("valid request")
    }

    #[test]
    fn a_new_user_is_accepted() {
        assert_eq!(check(Inputs::default(), &bob("direct://"), "users"), Ok(()));
    }

    #[test]
    fn what_the_compiler_refuses_is_refused_with_its_verdict() {
        let mut objects = bob("direct://");
        // Past translate's own checks: the compiler is the last word.
        objects.spec.upstream = "gopher://127.0.0.1:70".into();
        let refusal = check(Inputs::default(), &objects, "users").expect_err("refused");
        assert!(!refusal.is_conflict(), "{refusal:?}");
        assert!(refusal.to_string().contains("gopher"), "{refusal}");
    }

    #[test]
    fn a_user_name_in_service_is_not_displaced() {
        let mut inputs = Inputs::default();
        let spec = UserUpstreamSpec {
            user: "bob".into(),
            password_secret_ref: postern_api::SecretKeyRef {
                name: "bob-pw".into(),
                key: Some("password".into()),
            },
            upstream: "direct://".into(),
            ..UserUpstreamSpec::default()
        };
        let mut existing = Object::new("users", "bob-by-hand", spec);
        existing.meta.creation_timestamp = Some("2026-01-01T00:00:00Z".into());
        inputs.user_upstreams.push(existing.into());
        inputs.secrets.insert(
            ObjectKey {
                namespace: "users".into(),
                name: "bob-pw".into(),
            },
            SecretData {
                kind: None,
                data: [("password".to_string(), b"x".to_vec())].into(),
            },
        );
        let refusal = check(inputs, &bob("direct://"), "users").expect_err("taken");
        assert!(refusal.is_conflict(), "{refusal:?}");
        assert!(refusal.to_string().contains("bob-by-hand"), "{refusal}");
    }
}
