use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta as KubeMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::watcher::Event;
use postern_api::{
    Backend, Condition, ConditionStatus, Kind, ObjectKey, ProxyTargetSpec, ResourceStatus,
};
use postern_crds::{OAuthClient, ProxyTarget, Route, Tunnel, UserUpstream};

use super::Index;

pub(crate) fn meta(name: &str, generation: i64) -> KubeMeta {
    KubeMeta {
        name: Some(name.into()),
        namespace: Some("team".into()),
        generation: Some(generation),
        uid: Some(format!("uid-{name}")),
        creation_timestamp: Some(Time(Timestamp::from_second(1_700_000_000).expect("ts"))),
        ..KubeMeta::default()
    }
}

fn target(name: &str, generation: i64, host: &str) -> ProxyTarget {
    let mut pt = ProxyTarget::new(
        name,
        ProxyTargetSpec {
            hostnames: vec![host.into()],
            backend: Backend {
                url: Some("http://10.0.0.1:80".into()),
                service: None,
                ..Backend::default()
            },
            ..ProxyTargetSpec::default()
        }
        .into(),
    );
    pt.metadata = meta(name, generation);
    pt
}

fn accepted_status() -> ResourceStatus {
    ResourceStatus {
        observed_generation: Some(1),
        conditions: vec![Condition {
            kind: "Accepted".into(),
            status: ConditionStatus::True,
            reason: "Accepted".into(),
            message: String::new(),
            observed_generation: Some(1),
            last_transition_time: None,
        }],
        certificate: None,
        lost_claims: Default::default(),
    }
}

/// An index whose every kind has been listed empty.
pub(crate) fn synced_index() -> Index {
    let mut index = Index::default();
    fn list_empty<K: super::Indexed>(index: &mut Index) {
        index.handle::<K>(Event::Init);
        index.handle::<K>(Event::InitDone);
    }
    list_empty::<ProxyTarget>(&mut index);
    list_empty::<Route>(&mut index);
    list_empty::<UserUpstream>(&mut index);
    list_empty::<Tunnel>(&mut index);
    list_empty::<OAuthClient>(&mut index);
    assert!(!index.synced(), "Secrets and Services not listed yet");
    list_empty::<Secret>(&mut index);
    list_empty::<Service>(&mut index);
    assert!(index.synced());
    index
}

#[test]
fn objects_become_inputs_with_their_metadata() {
    let mut index = synced_index();
    assert!(index.handle(Event::Apply(target("api", 3, "api.example.com"))));
    let inputs = index.inputs();
    assert_eq!(inputs.proxy_targets.len(), 1);
    let pt = &inputs.proxy_targets[0];
    assert_eq!(pt.key(), ObjectKey::new("team", "api"));
    assert_eq!(pt.generation(), 3);
    assert_eq!(
        pt.meta.creation_timestamp.as_deref(),
        Some("2023-11-14T22:13:20Z")
    );
    assert_eq!(pt.spec.hostnames, vec!["api.example.com".to_string()]);
    assert_eq!(
        inputs.services,
        Some(BTreeMap::new()),
        "Services are checked"
    );
}

#[test]
fn status_changes_are_remembered_but_do_not_recompile() {
    let mut index = synced_index();
    index.handle(Event::Apply(target("api", 1, "api.example.com")));
    let mut with_status = target("api", 1, "api.example.com");
    with_status.status = Some(accepted_status());
    assert!(!index.handle(Event::Apply(with_status)));
    let key = ObjectKey::new("team", "api");
    let observed = index.observed(Kind::ProxyTarget, &key).expect("observed");
    assert_eq!(observed.status, Some(accepted_status()));
    assert_eq!(observed.uid.as_deref(), Some("uid-api"));
    assert!(index.handle(Event::Apply(target("api", 2, "api2.example.com"))));
    assert!(index.handle(Event::Delete(target("api", 2, "api2.example.com"))));
    assert!(index.inputs().proxy_targets.is_empty());
    assert!(index.observed(Kind::ProxyTarget, &key).is_none());
}

#[test]
fn lost_claims_in_status_are_compilation_input() {
    let mut index = synced_index();
    let mut lost = target("api", 1, "api.example.com");
    let mut status = accepted_status();
    status.lost_claims.hostnames = vec!["api.example.com".into()];
    lost.status = Some(status);
    index.handle(Event::Apply(lost));
    index.handle(Event::Apply(target("plain", 1, "plain.example.com")));
    let inputs = index.inputs();
    assert_eq!(inputs.lost_claims.len(), 1, "{:?}", inputs.lost_claims);
    let recorded = &inputs.lost_claims[&(Kind::ProxyTarget, ObjectKey::new("team", "api"))];
    assert_eq!(recorded.hostnames, vec!["api.example.com"]);
}

#[test]
fn secrets_keep_type_and_decoded_data() {
    let mut index = synced_index();
    let secret = Secret {
        metadata: meta("creds", 0),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            "password".to_string(),
            ByteString(b"pw1".to_vec()),
        )])),
        string_data: Some(BTreeMap::from([("user".to_string(), "alice".to_string())])),
        ..Secret::default()
    };
    assert!(index.handle(Event::Apply(secret.clone())));
    assert!(!index.handle(Event::Apply(secret.clone())), "unchanged");
    let inputs = index.inputs();
    let data = &inputs.secrets[&ObjectKey::new("team", "creds")];
    assert_eq!(data.kind.as_deref(), Some("Opaque"));
    assert_eq!(data.data["password"], b"pw1");
    assert_eq!(data.data["user"], b"alice");

    let mut rotated = secret;
    rotated.data = Some(BTreeMap::from([(
        "password".to_string(),
        ByteString(b"pw2".to_vec()),
    )]));
    assert!(index.handle(Event::Apply(rotated)), "rotation recompiles");
}

#[test]
fn services_expose_their_ports() {
    let mut index = synced_index();
    let port = |p: i32| ServicePort {
        port: p,
        ..ServicePort::default()
    };
    let service = Service {
        metadata: meta("web", 0),
        spec: Some(ServiceSpec {
            ports: Some(vec![port(8080), port(80), port(8080)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    index.handle(Event::Apply(service));
    let services = index.inputs().services.expect("services");
    assert_eq!(
        services[&ObjectKey::new("team", "web")].ports,
        vec![80, 8080]
    );
}

#[test]
fn relist_drops_objects_deleted_while_disconnected() {
    let mut index = synced_index();
    index.handle(Event::Apply(target("old", 1, "old.example.com")));
    index.handle::<ProxyTarget>(Event::Init);
    index.handle(Event::InitApply(target("new", 1, "new.example.com")));
    assert_eq!(index.inputs().proxy_targets[0].meta.name, "old");
    assert!(index.handle::<ProxyTarget>(Event::InitDone));
    let names: Vec<_> = index
        .inputs()
        .proxy_targets
        .into_iter()
        .map(|o| o.meta.name.clone())
        .collect();
    assert_eq!(names, vec!["new".to_string()]);
}
