//! Kubernetes Events for what users should see: accepted, refused (with the
//! reason), programmed, certificate issued.
//!
//! Derived from the status the writer replaces and the one it has just
//! written, so each transition yields one Event, and a restarted operator
//! (which reads the written status back as `previous`) repeats none.

use kube::runtime::events::{Event, EventType, Recorder};
use postern_api::{Condition, ConditionStatus, ResourceStatus};

use super::conditions::{ACCEPTED, PROGRAMMED, UNSUPPORTED};

/// `CertificateReady`, owned by the certificate manager.
const CERTIFICATE_READY: &str = "CertificateReady";

/// One Event to publish about an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    /// CamelCase: `Accepted`, a refusal's reason, `Programmed`,
    /// `Unsupported`, `Rejected`, `CertificateIssued`.
    pub reason: String,
    pub action: &'static str,
    pub text: String,
}

/// The Events the change from `previous` to `next` calls for.
pub fn transitions(previous: Option<&ResourceStatus>, next: &ResourceStatus) -> Vec<Note> {
    let before = |kind: &str| previous.and_then(|p| find(&p.conditions, kind));
    let mut notes = Vec::new();
    if let Some(now) = find(&next.conditions, ACCEPTED)
        && changed(before(ACCEPTED), now)
    {
        notes.push(Note {
            warning: now.status != ConditionStatus::True,
            reason: now.reason.clone(),
            action: "Compile",
            text: text(now, "accepted into the snapshot"),
        });
    }
    if let Some(now) = find(&next.conditions, PROGRAMMED)
        && changed(before(PROGRAMMED), now)
    {
        let warning = [UNSUPPORTED, "Rejected"].contains(&now.reason.as_str());
        if now.status == ConditionStatus::True || warning {
            notes.push(Note {
                warning,
                reason: now.reason.clone(),
                action: "Program",
                text: text(now, "applied by every data plane"),
            });
        }
    }
    let shown = previous.and_then(|p| p.certificate.as_ref());
    if let Some(cert) = &next.certificate
        && find(&next.conditions, CERTIFICATE_READY)
            .is_some_and(|c| c.status == ConditionStatus::True)
        && shown.is_none_or(|old| old.not_after != cert.not_after)
    {
        notes.push(Note {
            warning: false,
            reason: "CertificateIssued".into(),
            action: "IssueCertificate",
            text: format!(
                "certificate from issuer {} valid until {}",
                cert.issuer, cert.not_after
            ),
        });
    }
    notes
}

/// Publishes `notes` about `reference`; a failure is logged, never retried
/// (the status carries the same facts).
pub async fn publish(
    recorder: &Recorder,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    notes: Vec<Note>,
) {
    for note in notes {
        let event = Event {
            type_: if note.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: note.reason,
            note: Some(note.text),
            action: note.action.into(),
            secondary: None,
        };
        if let Err(error) = recorder.publish(&event, reference).await {
            tracing::warn!(object = ?reference.name, namespace = ?reference.namespace, %error, "cannot write an Event");
        }
    }
}

fn find<'a>(conditions: &'a [Condition], kind: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.kind == kind)
}

fn changed(before: Option<&Condition>, now: &Condition) -> bool {
    before.is_none_or(|b| b.status != now.status || b.reason != now.reason)
}

fn text(condition: &Condition, fallback: &str) -> String {
    if condition.message.is_empty() {
        fallback.to_string()
    } else {
        condition.message.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(accepted: (bool, &str), programmed: (bool, &str)) -> ResourceStatus {
        let condition = |kind: &str, (ok, reason): (bool, &str)| Condition {
            kind: kind.into(),
            status: if ok {
                ConditionStatus::True
            } else {
                ConditionStatus::False
            },
            reason: reason.into(),
            message: format!("{reason} message"),
            observed_generation: Some(1),
            last_transition_time: None,
        };
        ResourceStatus {
            conditions: vec![
                condition(ACCEPTED, accepted),
                condition(PROGRAMMED, programmed),
            ],
            ..ResourceStatus::default()
        }
    }

    fn reasons(notes: &[Note]) -> Vec<(bool, &str)> {
        notes
            .iter()
            .map(|n| (n.warning, n.reason.as_str()))
            .collect()
    }

    #[test]
    fn one_event_per_transition() {
        let refused = status((false, "HostnameConflict"), (false, "Invalid"));
        let notes = transitions(None, &refused);
        assert_eq!(reasons(&notes), vec![(true, "HostnameConflict")]);
        assert_eq!(notes[0].text, "HostnameConflict message");
        assert!(
            transitions(Some(&refused), &refused).is_empty(),
            "no change, no event"
        );

        let pending = status((true, "Accepted"), (false, "Pending"));
        assert_eq!(
            reasons(&transitions(Some(&refused), &pending)),
            vec![(false, "Accepted")]
        );
        let programmed = status((true, "Accepted"), (true, "Programmed"));
        assert_eq!(
            reasons(&transitions(Some(&pending), &programmed)),
            vec![(false, "Programmed")]
        );
        let unsupported = status((true, "Accepted"), (false, UNSUPPORTED));
        assert_eq!(
            reasons(&transitions(Some(&programmed), &unsupported)),
            vec![(true, UNSUPPORTED)]
        );
        let other_refusal = status((false, "NameNotAllowed"), (false, "Invalid"));
        assert_eq!(
            reasons(&transitions(Some(&refused), &other_refusal)),
            vec![(true, "NameNotAllowed")]
        );
    }

    #[test]
    fn a_certificate_is_announced_once_per_issue() {
        let mut issued = status((true, "Accepted"), (true, "Programmed"));
        issued.conditions.push(Condition {
            kind: CERTIFICATE_READY.into(),
            status: ConditionStatus::True,
            reason: "Issued".into(),
            message: String::new(),
            observed_generation: Some(1),
            last_transition_time: None,
        });
        issued.certificate = Some(postern_api::CertificateStatus {
            issuer: "staging".into(),
            not_after: "2026-03-01T00:00:00Z".into(),
            renew_after: "2026-02-01T00:00:00Z".into(),
        });
        let before = status((true, "Accepted"), (true, "Programmed"));
        let notes = transitions(Some(&before), &issued);
        assert_eq!(reasons(&notes), vec![(false, "CertificateIssued")]);
        assert!(notes[0].text.contains("2026-03-01"), "{}", notes[0].text);
        assert!(transitions(Some(&issued), &issued).is_empty());
        let mut renewed = issued.clone();
        if let Some(cert) = renewed.certificate.as_mut() {
            cert.not_after = "2026-06-01T00:00:00Z".into();
        }
        assert_eq!(reasons(&transitions(Some(&issued), &renewed)).len(), 1);
    }
}
