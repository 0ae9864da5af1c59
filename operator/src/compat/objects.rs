//! The Kubernetes objects the `/upstream` API writes, and how it tells its
//! own objects from others'. Pure: no client, no IO.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::ObjectMeta;
use postern_crds::UserUpstream;
use postern_upstreamgate::{ListedUser, UserObjects, public_upstream};

/// The server-side-apply field manager, and the value of the label that
/// marks an object as written by this API.
pub const FIELD_MANAGER: &str = "postern-upstream-api";
/// The label key; only objects carrying it are changed or deleted.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

fn meta(name: &str, namespace: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        labels: Some([(MANAGED_BY.to_string(), FIELD_MANAGER.to_string())].into()),
        ..ObjectMeta::default()
    }
}

fn secret(name: &str, namespace: &str, data: &[(&str, &str)]) -> Secret {
    let data: BTreeMap<String, ByteString> = data
        .iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
        .collect();
    Secret {
        metadata: meta(name, namespace),
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    }
}

/// The user's proxy password, key `password`.
pub fn password_secret(objects: &UserObjects, namespace: &str) -> Secret {
    secret(&objects.name, namespace, &[("password", &objects.password)])
}

/// The upstream credentials that came inline in the URL, if any.
pub fn credentials_secret(objects: &UserObjects, namespace: &str) -> Option<Secret> {
    objects.credentials.as_ref().map(|c| {
        secret(
            &objects.credentials_name(),
            namespace,
            &[("username", &c.username), ("password", &c.password)],
        )
    })
}

pub fn user_upstream(objects: &UserObjects, namespace: &str) -> UserUpstream {
    UserUpstream {
        metadata: meta(&objects.name, namespace),
        spec: objects.spec.clone().into(),
        status: None,
    }
}

/// Whether this API wrote the object (and so may change or delete it).
pub fn is_managed(meta: &ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .and_then(|labels| labels.get(MANAGED_BY))
        .is_some_and(|v| v == FIELD_MANAGER)
}

/// A `GET /upstream` entry: never a secret.
pub fn listed(object: &UserUpstream) -> ListedUser {
    ListedUser {
        user: object.spec.user.clone(),
        upstream: public_upstream(&object.spec.upstream),
        id: format!(
            "{}/{}",
            object.namespace().unwrap_or_default(),
            object.name_any()
        ),
        managed: is_managed(&object.metadata),
    }
}

/// Who defines a user: this API's own object (at `namespace/name`,
/// labelled), and the ids of every other object that claims the user or
/// the name.
#[derive(Debug, Default)]
pub struct Claims {
    pub ours: Option<UserUpstream>,
    pub others: Vec<String>,
}

pub fn claims(objects: Vec<UserUpstream>, user: &str, namespace: &str, name: &str) -> Claims {
    let mut claims = Claims::default();
    for object in objects {
        let at_our_name =
            object.namespace().as_deref() == Some(namespace) && object.name_any() == name;
        if at_our_name && is_managed(&object.metadata) {
            claims.ours = Some(object);
        } else if at_our_name || object.spec.user == user {
            claims.others.push(listed(&object).id);
        }
    }
    claims.others.sort();
    claims
}

#[cfg(test)]
mod tests {
    use postern_upstreamgate::{UserRequest, translate};

    use super::*;

    fn objects(upstream: &str) -> UserObjects {
        translate(&UserRequest {
            user: "bob".into(),
            password: "pw2".into(),
            upstream: upstream.into(),
        })
        .expect("valid")
    }

    fn existing(namespace: &str, name: &str, user: &str, managed: bool) -> UserUpstream {
        let mut object = user_upstream(&objects("direct://"), namespace);
        object.metadata.name = Some(name.into());
        object.spec.0.user = user.into();
        if !managed {
            object.metadata.labels = None;
        }
        object
    }

    #[test]
    fn objects_are_labelled_and_reference_each_other() {
        let o = objects("http://cu:cp@10.0.0.1:3128");
        let password = password_secret(&o, "ns");
        assert_eq!(password.metadata.name.as_deref(), Some("upstreamgate-bob"));
        assert!(is_managed(&password.metadata));
        let data = password.data.expect("data");
        assert_eq!(data["password"], ByteString(b"pw2".to_vec()));

        let creds = credentials_secret(&o, "ns").expect("inline credentials");
        assert_eq!(
            creds.metadata.name.as_deref(),
            Some("upstreamgate-bob-upstream")
        );
        let data = creds.data.expect("data");
        assert_eq!(data["username"], ByteString(b"cu".to_vec()));
        assert_eq!(data["password"], ByteString(b"cp".to_vec()));

        let uu = user_upstream(&o, "ns");
        assert!(is_managed(&uu.metadata));
        assert_eq!(uu.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(uu.spec.upstream, "http://10.0.0.1:3128");
        let json = serde_json::to_value(&uu).expect("json");
        assert_eq!(json["apiVersion"], "postern.io/v1alpha1");
        assert_eq!(json["kind"], "UserUpstream");
        assert_eq!(
            json["spec"]["upstreamCredentialsSecretRef"]["name"],
            "upstreamgate-bob-upstream"
        );
        assert!(json.get("status").is_none(), "{json}");
        assert!(credentials_secret(&objects("direct://"), "ns").is_none());
    }

    #[test]
    fn listing_strips_credentials() {
        let mut uu = existing("team", "hand", "carol", false);
        uu.spec.0.upstream = "socks5://u:secret@h:1080".into();
        let entry = listed(&uu);
        assert_eq!(
            entry,
            ListedUser {
                user: "carol".into(),
                upstream: "socks5://h:1080".into(),
                id: "team/hand".into(),
                managed: false,
            }
        );
    }

    #[test]
    fn claims_tell_ours_from_others() {
        let name = "upstreamgate-bob";
        let ours = existing("ns", name, "bob", true);
        let got = claims(vec![ours.clone()], "bob", "ns", name);
        assert_eq!(got.ours.map(|o| o.name_any()).as_deref(), Some(name));
        assert!(got.others.is_empty());

        // Hand-written objects for the user, or at our name, are others'.
        let hand = existing("other", "bob", "bob", false);
        let squatter = existing("ns", name, "someone", false);
        let unrelated = existing("ns", "carol", "carol", false);
        let got = claims(vec![hand, unrelated.clone()], "bob", "ns", name);
        assert!(got.ours.is_none());
        assert_eq!(got.others, ["other/bob"]);
        let got = claims(vec![squatter], "bob", "ns", name);
        assert_eq!(got.others, ["ns/upstreamgate-bob"]);
        // Our label in another namespace does not make the object ours.
        let elsewhere = existing("else", name, "bob", true);
        let got = claims(vec![elsewhere, ours, unrelated], "bob", "ns", name);
        assert!(got.ours.is_some());
        assert_eq!(got.others, ["else/upstreamgate-bob"]);
    }
}
