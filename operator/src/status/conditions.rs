//! What an object's status should say: pure, so every rule is unit-tested.

use postern_api::{Condition, ConditionStatus, Kind, ResourceStatus};
use postern_compile::Verdict;
use postern_snapshot::sync::TunnelAgents;

use crate::fleet::Dataplane;

pub const ACCEPTED: &str = "Accepted";
pub const PROGRAMMED: &str = "Programmed";
pub const AGENT_CONNECTED: &str = "AgentConnected";
/// Programmed's reason when a data plane does not implement the kind.
pub const UNSUPPORTED: &str = "Unsupported";

/// The status `verdict` calls for, given the data planes' acks (and, for a
/// Tunnel, their agents). Conditions this writer does not own
/// (CertificateReady) are kept from
/// `previous`, and a condition's lastTransitionTime is kept from `previous`
/// unless its status flipped, so an unchanged object compares equal and is
/// not patched.
pub fn desired(
    verdict: &Verdict,
    dataplanes: &[Dataplane],
    previous: Option<&ResourceStatus>,
    now: &str,
) -> ResourceStatus {
    let generation = Some(verdict.generation);
    let accepted = Condition {
        kind: ACCEPTED.into(),
        status: bool_status(verdict.accepted()),
        reason: verdict.reason.as_str().into(),
        message: verdict.message.clone(),
        observed_generation: generation,
        last_transition_time: None,
    };
    let (status, reason, message) = programmed(verdict, dataplanes);
    let programmed = Condition {
        kind: PROGRAMMED.into(),
        status,
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: None,
    };
    let previous_conditions = previous.map(|p| p.conditions.as_slice()).unwrap_or(&[]);
    let agent = (verdict.kind == Kind::Tunnel && verdict.accepted()).then(|| {
        let (status, reason, message) = agent_connected(&verdict.key.to_string(), dataplanes);
        Condition {
            kind: AGENT_CONNECTED.into(),
            status,
            reason: reason.into(),
            message,
            observed_generation: generation,
            last_transition_time: None,
        }
    });
    let mut conditions: Vec<Condition> = [accepted, programmed]
        .into_iter()
        .chain(agent)
        .map(|c| with_transition_time(c, previous_conditions, now))
        .collect();
    conditions.extend(
        previous_conditions
            .iter()
            .filter(|c| ![ACCEPTED, PROGRAMMED, AGENT_CONNECTED].contains(&c.kind.as_str()))
            .cloned(),
    );
    ResourceStatus {
        observed_generation: generation,
        conditions,
        certificate: None,
        lost_claims: verdict.lost_claims.clone(),
    }
}

/// Folds the certificate manager's latest word into `status`: its
/// `CertificateReady` replaces the one kept from `previous` (the transition
/// time kept unless the status flipped), and `status.certificate` is the
/// report's or else the one shown, since a failed renewal leaves the old
/// certificate serving.
pub fn with_certificate(
    mut status: ResourceStatus,
    report: Option<&crate::acme::CertReport>,
    previous: Option<&ResourceStatus>,
    now: &str,
) -> ResourceStatus {
    let shown = previous.and_then(|p| p.certificate.clone());
    let Some(report) = report else {
        status.certificate = shown;
        return status;
    };
    let mut condition = report.condition.clone();
    condition.observed_generation = status.observed_generation;
    let previous_conditions = previous.map(|p| p.conditions.as_slice()).unwrap_or(&[]);
    let condition = with_transition_time(condition, previous_conditions, now);
    status.conditions.retain(|c| c.kind != condition.kind);
    status.conditions.push(condition);
    status.certificate = report.certificate.clone().or(shown);
    status
}

/// Programmed: True once every data plane in the fleet (whichever replica
/// it is connected to, as its lease says) acked a snapshot that holds this
/// generation of the object; a data plane whose lease expired is no longer
/// in the fleet; never True while a data plane does
/// not implement the object's kind (`Unsupported`), since acking a snapshot
/// says nothing about a part the data plane cannot serve.
pub fn programmed(
    verdict: &Verdict,
    dataplanes: &[Dataplane],
) -> (ConditionStatus, &'static str, String) {
    if !verdict.accepted() {
        let message = "not in any snapshot: the object was not accepted".to_string();
        return (ConditionStatus::False, "Invalid", message);
    }
    if dataplanes.is_empty() {
        let message = "no data plane is connected".to_string();
        return (ConditionStatus::False, "NoDataplanes", message);
    }
    let kind = verdict.kind.as_str();
    let lacking: Vec<&str> = dataplanes
        .iter()
        .filter(|dp| !dp.capabilities.iter().any(|c| c == kind))
        .map(|dp| dp.id.as_str())
        .collect();
    if !lacking.is_empty() {
        let message = format!(
            "{} of {} data plane(s) do not implement {kind}s: {}",
            lacking.len(),
            dataplanes.len(),
            lacking.join(", ")
        );
        return (ConditionStatus::False, UNSUPPORTED, message);
    }
    let pending: Vec<&Dataplane> = dataplanes
        .iter()
        .filter(|dp| {
            !dp.acked
                .as_ref()
                .is_some_and(|p| p.contains(verdict.kind, &verdict.key, verdict.generation))
        })
        .collect();
    if pending.is_empty() {
        let message = format!(
            "generation {} applied by {} data plane(s)",
            verdict.generation,
            dataplanes.len()
        );
        return (ConditionStatus::True, PROGRAMMED, message);
    }
    if let Some((dp, nack)) = pending
        .iter()
        .find_map(|dp| dp.nack.as_ref().map(|n| (dp, n)))
    {
        let message = format!(
            "data plane {} rejected snapshot {}: {}",
            dp.id,
            short(&nack.version),
            nack.reason
        );
        return (ConditionStatus::False, "Rejected", message);
    }
    let message = format!(
        "waiting for {} of {} data plane(s) to apply generation {}",
        pending.len(),
        dataplanes.len(),
        verdict.generation
    );
    (ConditionStatus::False, "Pending", message)
}

/// AgentConnected: True with the agent count (over every data plane), the
/// active agent's address, version and data plane; False with the last
/// refusal reason, if any data plane saw one.
pub fn agent_connected(
    tunnel: &str,
    dataplanes: &[Dataplane],
) -> (ConditionStatus, &'static str, String) {
    let reports: Vec<(&Dataplane, &TunnelAgents)> = dataplanes
        .iter()
        .filter_map(|dp| {
            dp.agents
                .iter()
                .find(|a| a.tunnel == tunnel)
                .map(|a| (dp, a))
        })
        .collect();
    let count: u32 = reports.iter().map(|(_, a)| a.agents).sum();
    if let Some((dp, active)) = reports.iter().find(|(_, a)| a.agents > 0) {
        let message = format!(
            "{count} agent(s) connected; active {} (agent {}) on data plane {}",
            active.remote.as_deref().unwrap_or("-"),
            active.agent_version.as_deref().unwrap_or("-"),
            dp.id
        );
        return (ConditionStatus::True, "Connected", message);
    }
    match reports
        .iter()
        .find_map(|(dp, a)| a.last_refusal.as_deref().map(|r| (dp, r)))
    {
        Some((dp, reason)) => (
            ConditionStatus::False,
            "Refused",
            format!(
                "no agent connected; the last was refused by data plane {}: {reason}",
                dp.id
            ),
        ),
        None => (
            ConditionStatus::False,
            "NoAgent",
            "no agent connected".to_string(),
        ),
    }
}

fn with_transition_time(mut condition: Condition, previous: &[Condition], now: &str) -> Condition {
    let unchanged = previous
        .iter()
        .find(|p| p.kind == condition.kind)
        .filter(|p| p.status == condition.status);
    condition.last_transition_time = match unchanged {
        Some(p) => p.last_transition_time.clone().or_else(|| Some(now.into())),
        None => Some(now.into()),
    };
    condition
}

fn bool_status(value: bool) -> ConditionStatus {
    if value {
        ConditionStatus::True
    } else {
        ConditionStatus::False
    }
}

/// Versions are long hashes; a prefix is enough for people.
fn short(version: &str) -> &str {
    version.get(..12).unwrap_or(version)
}

#[cfg(test)]
mod tests;
