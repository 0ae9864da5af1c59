use std::net::SocketAddr;
use std::sync::Arc;

use postern_api::{Backend, ConditionStatus, Kind, Object, ObjectKey, ProxyTargetSpec};
use postern_compile::{Inputs, Reason, Verdict};

use super::*;
use crate::fleet::{Dataplane, Nack};
use crate::publish::Published;

const T0: &str = "2025-01-01T00:00:00Z";
const T1: &str = "2025-01-01T00:01:00Z";

fn snapshot_with(generation: i64) -> Arc<Published> {
    let mut pt = Object::new(
        "team",
        "api",
        ProxyTargetSpec {
            hostnames: vec!["api.example.com".into()],
            backend: Backend {
                url: Some("http://10.0.0.1:80".into()),
                service: None,
                ..Backend::default()
            },
            ..ProxyTargetSpec::default()
        },
    );
    pt.meta.generation = Some(generation);
    let inputs = Inputs {
        proxy_targets: vec![pt.into()],
        ..Inputs::default()
    };
    Arc::new(Published::build(1, &inputs).expect("build"))
}

fn verdict(generation: i64, reason: Reason) -> Verdict {
    Verdict {
        kind: Kind::ProxyTarget,
        key: ObjectKey::new("team", "api"),
        generation,
        reason,
        message: if reason == Reason::Accepted {
            String::new()
        } else {
            "api.example.com is held by team/older".into()
        },
        lost_claims: Default::default(),
    }
}

fn dataplane(id: &str, acked: Option<Arc<Published>>, nack: Option<&str>) -> Dataplane {
    Dataplane {
        id: id.into(),
        addr: SocketAddr::from(([127, 0, 0, 1], 1)),
        conn: 1,
        acked: acked.map(|p| p.coverage.clone()),
        nack: nack.map(|reason| Nack {
            version: "0123456789abcdef".into(),
            reason: reason.into(),
        }),
        agents: Vec::new(),
        capabilities: postern_snapshot::sync::CAPABILITIES
            .map(String::from)
            .to_vec(),
    }
}

fn condition<'a>(status: &'a ResourceStatus, kind: &str) -> &'a Condition {
    status
        .conditions
        .iter()
        .find(|c| c.kind == kind)
        .unwrap_or_else(|| panic!("no {kind} condition in {status:?}"))
}

#[test]
fn programmed_once_every_dataplane_acked_the_generation() {
    let v = verdict(2, Reason::Accepted);
    let current = snapshot_with(2);
    let old = snapshot_with(1);
    let both = [
        dataplane("a", Some(current.clone()), None),
        dataplane("b", Some(current.clone()), None),
    ];
    assert_eq!(programmed(&v, &both).1, "Programmed");

    let one_behind = [
        dataplane("a", Some(current.clone()), None),
        dataplane("b", Some(old), None),
    ];
    let (status, reason, message) = programmed(&v, &one_behind);
    assert_eq!((status, reason), (ConditionStatus::False, "Pending"));
    assert!(message.contains("1 of 2"), "{message}");

    let never_acked = [dataplane("a", None, None)];
    assert_eq!(programmed(&v, &never_acked).1, "Pending");
}

#[test]
fn a_nack_is_reported_with_its_reason() {
    let v = verdict(2, Reason::Accepted);
    let dps = [dataplane(
        "a",
        Some(snapshot_with(1)),
        Some("certificate does not parse"),
    )];
    let (status, reason, message) = programmed(&v, &dps);
    assert_eq!((status, reason), (ConditionStatus::False, "Rejected"));
    assert!(message.contains("certificate does not parse"), "{message}");
    assert!(message.contains("data plane a"), "{message}");
}

#[test]
fn no_dataplanes_and_not_accepted_are_not_pending() {
    assert_eq!(
        programmed(&verdict(1, Reason::Accepted), &[]).1,
        "NoDataplanes"
    );
    let dps = [dataplane("a", Some(snapshot_with(1)), None)];
    assert_eq!(
        programmed(&verdict(1, Reason::HostnameConflict), &dps).1,
        "Invalid"
    );
}

#[test]
fn desired_status_carries_generations_and_verdict() {
    let status = desired(&verdict(3, Reason::HostnameConflict), &[], None, T0);
    assert_eq!(status.observed_generation, Some(3));
    let accepted = condition(&status, "Accepted");
    assert_eq!(accepted.status, ConditionStatus::False);
    assert_eq!(accepted.reason, "HostnameConflict");
    assert!(accepted.message.contains("held by"));
    assert_eq!(accepted.observed_generation, Some(3));
    assert_eq!(accepted.last_transition_time.as_deref(), Some(T0));
    assert_eq!(
        condition(&status, "Programmed").observed_generation,
        Some(3)
    );
}

#[test]
fn transition_time_moves_only_when_the_status_flips() {
    let dps = [dataplane("a", Some(snapshot_with(1)), None)];
    let first = desired(&verdict(1, Reason::Accepted), &[], None, T0);
    assert_eq!(condition(&first, "Programmed").reason, "NoDataplanes");

    let again = desired(&verdict(1, Reason::Accepted), &[], Some(&first), T1);
    assert_eq!(again, first, "nothing changed, nothing to patch");

    let now_programmed = desired(&verdict(1, Reason::Accepted), &dps, Some(&first), T1);
    assert_eq!(
        condition(&now_programmed, "Accepted")
            .last_transition_time
            .as_deref(),
        Some(T0)
    );
    let programmed = condition(&now_programmed, "Programmed");
    assert_eq!(programmed.status, ConditionStatus::True);
    assert_eq!(programmed.last_transition_time.as_deref(), Some(T1));
}

#[test]
fn conditions_owned_by_others_are_kept() {
    let mut previous = desired(&verdict(1, Reason::Accepted), &[], None, T0);
    previous.conditions.push(Condition {
        kind: "CertificateReady".into(),
        status: ConditionStatus::True,
        reason: "Issued".into(),
        message: String::new(),
        observed_generation: Some(1),
        last_transition_time: Some(T0.into()),
    });
    let next = desired(&verdict(2, Reason::Accepted), &[], Some(&previous), T1);
    assert_eq!(condition(&next, "CertificateReady").reason, "Issued");
    assert_eq!(next.conditions.len(), 3);
}

fn reporting(id: &str, agents: u32, refusal: Option<&str>) -> Dataplane {
    let mut dp = dataplane(id, None, None);
    dp.agents = vec![TunnelAgents {
        tunnel: "team/laptop".into(),
        agents,
        remote: (agents > 0).then(|| "10.1.2.3:5555".to_string()),
        agent_version: (agents > 0).then(|| "0.1.0".to_string()),
        last_refusal: refusal.map(String::from),
    }];
    dp
}

#[test]
fn agent_connected_counts_agents_over_data_planes_or_says_why_not() {
    let (status, reason, message) = agent_connected("team/laptop", &[]);
    assert_eq!((status, reason), (ConditionStatus::False, "NoAgent"));
    assert!(message.contains("no agent"));
    let refused = [reporting("dp-1", 0, Some("bad_signature"))];
    let (status, reason, message) = agent_connected("team/laptop", &refused);
    assert_eq!((status, reason), (ConditionStatus::False, "Refused"));
    assert!(
        message.contains("bad_signature") && message.contains("dp-1"),
        "{message}"
    );
    let both = [reporting("dp-1", 0, None), reporting("dp-2", 2, None)];
    let (status, reason, message) = agent_connected("team/laptop", &both);
    assert_eq!((status, reason), (ConditionStatus::True, "Connected"));
    for part in ["2 agent(s)", "10.1.2.3:5555", "0.1.0", "dp-2"] {
        assert!(message.contains(part), "{part}: {message}");
    }
}

#[test]
fn only_accepted_tunnels_get_agent_connected() {
    let mut v = verdict(1, Reason::Accepted);
    v.kind = Kind::Tunnel;
    v.key = ObjectKey::new("team", "laptop");
    let status = desired(&v, &[reporting("dp-1", 1, None)], None, T0);
    let agent = condition(&status, "AgentConnected");
    assert_eq!(agent.status, ConditionStatus::True);
    let pt = desired(&verdict(1, Reason::Accepted), &[], None, T0);
    assert!(pt.conditions.iter().all(|c| c.kind != "AgentConnected"));
}

#[test]
fn programmed_is_never_true_where_a_data_plane_lacks_the_kind() {
    let published = snapshot_with(1);
    let full = dataplane("dp-full", Some(published.clone()), None);
    let mut old = dataplane("dp-old", Some(published.clone()), None);
    old.capabilities = postern_snapshot::sync::BASE_CAPABILITIES
        .map(String::from)
        .to_vec();
    let mut tunnel = verdict(1, Reason::Accepted);
    tunnel.kind = Kind::Tunnel;
    let (status, reason, message) = programmed(&tunnel, &[full.clone(), old.clone()]);
    assert_eq!((status, reason), (ConditionStatus::False, UNSUPPORTED));
    assert!(
        message.contains("dp-old") && !message.contains("dp-full"),
        "{message}"
    );
    assert!(message.contains("Tunnels"), "{message}");
    // The same fleet programs the kinds both implement.
    let target = verdict(1, Reason::Accepted);
    let (status, reason, _) = programmed(&target, &[full.clone(), old]);
    assert_eq!((status, reason), (ConditionStatus::True, PROGRAMMED));
    // With the capability present, the tunnel waits for its ack as usual.
    let (status, reason, _) = programmed(&tunnel, &[full]);
    assert_eq!((status, reason), (ConditionStatus::False, "Pending"));
}
