//! One data plane's lease: its name, the record its annotation carries,
//! and the rule that says when it no longer counts.
//!
//! Each replica keeps a `coordination.k8s.io/v1` Lease per data plane
//! connected to it, in the lease namespace: `holderIdentity` is the
//! replica, `renewTime` moves while the connection lives, and the
//! `postern.io/dataplane` annotation is the data plane's state (id,
//! capabilities, the coverage of its acked snapshot, its last nack, its
//! tunnel agents) as JSON.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use postern_snapshot::sha256_hex;
use postern_snapshot::sync::TunnelAgents;
use serde::{Deserialize, Serialize};

use super::coverage::{Coverage, Wire};
use super::{Dataplane, Nack};

/// The annotation holding the [`Record`].
pub const ANNOTATION: &str = "postern.io/dataplane";
/// The label that marks data-plane leases (the election lease has none).
pub const ROLE_LABEL: &str = "postern.io/role";
pub const ROLE: &str = "dataplane";
/// The selector that lists data-plane leases.
pub const SELECTOR: &str = "postern.io/role=dataplane";
/// Annotations may hold 256 KiB in all; past this the generations are
/// left out (see [`Coverage::without_objects`]) and replicas credit the ack
/// through the snapshot they published ([`Coverage::completed`]). About
/// 5,000 objects fit.
const MAX_RECORD: usize = 200 * 1024;

/// What a lease says about its data plane.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub id: String,
    pub addr: String,
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub acked: Option<Wire>,
    #[serde(default)]
    pub nack: Option<Nack>,
    #[serde(default)]
    pub agents: Vec<TunnelAgents>,
}

impl Record {
    /// The annotation's text for a locally connected data plane.
    pub fn encode(dp: &Dataplane) -> String {
        let least = dp.acked.as_deref().map_or(0, Coverage::generations_min_len);
        // Every ack is recorded: past the limit, skip encoding a large
        // record only to throw it away.
        if least <= MAX_RECORD {
            let full = Record::of(dp, |c| Wire::from(c));
            let text = serde_json::to_string(&full).unwrap_or_default();
            if text.len() <= MAX_RECORD {
                return text;
            }
        }
        tracing::debug!(dataplane = %dp.id, least, "too many objects for the generations in the data plane's lease record: it carries the acked version alone");
        let small = Record::of(dp, |c| Wire::from(&c.without_objects()));
        serde_json::to_string(&small).unwrap_or_default()
    }

    fn of(dp: &Dataplane, wire: impl Fn(&Coverage) -> Wire) -> Record {
        Record {
            id: dp.id.clone(),
            addr: dp.addr.to_string(),
            capabilities: dp.capabilities.clone(),
            acked: dp.acked.as_deref().map(wire),
            nack: dp.nack.clone(),
            agents: dp.agents.clone(),
        }
    }

    /// The data plane a lease describes; `None` for a lease without a
    /// readable record (written by something else).
    pub fn decode(lease: &Lease) -> Option<Dataplane> {
        let text = lease.metadata.annotations.as_ref()?.get(ANNOTATION)?;
        let record: Record = serde_json::from_str(text).ok()?;
        Some(Dataplane {
            id: record.id,
            addr: record
                .addr
                .parse()
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
            conn: 0,
            acked: record.acked.map(|w| Arc::new(Coverage::from(w))),
            nack: record.nack,
            agents: record.agents,
            capabilities: record.capabilities,
        })
    }
}

/// The lease of data plane `id`: readable, and unique by a digest of the
/// id (ids may hold characters a name may not).
pub fn lease_name(id: &str) -> String {
    let readable: String = id
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .take(40)
        .collect();
    let readable = readable.trim_matches('-');
    let digest = &sha256_hex(id.as_bytes())[..10];
    if readable.is_empty() {
        format!("postern-dp-{digest}")
    } else {
        format!("postern-dp-{readable}-{digest}")
    }
}

/// A lease counts while it changed within its duration, as this replica
/// saw it on its own clock (as the election judges, never by another
/// node's `renewTime`).
pub fn live(unchanged_for: Duration, duration: Duration) -> bool {
    unchanged_for < duration
}

/// The duration a lease states, or `fallback`.
pub fn duration_of(lease: &Lease, fallback: Duration) -> Duration {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_duration_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs)
        .unwrap_or(fallback)
}

/// The holder a lease names.
pub fn holder(lease: &Lease) -> Option<&str> {
    lease.spec.as_ref()?.holder_identity.as_deref()
}

/// A data plane's lease as `replica` writes it.
pub struct Draft<'a> {
    pub name: &'a str,
    pub replica: &'a str,
    pub body: &'a str,
    pub duration: Duration,
    pub acquired: &'a MicroTime,
    pub renewed: MicroTime,
    /// The version being replaced; `None` creates.
    pub resource_version: Option<String>,
}

impl Draft<'_> {
    pub fn lease(&self) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(self.name.to_string()),
                resource_version: self.resource_version.clone(),
                labels: Some(
                    [
                        (ROLE_LABEL.to_string(), ROLE.to_string()),
                        (
                            "app.kubernetes.io/managed-by".to_string(),
                            "postern-operator".to_string(),
                        ),
                    ]
                    .into(),
                ),
                annotations: Some([(ANNOTATION.to_string(), self.body.to_string())].into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.replica.to_string()),
                lease_duration_seconds: Some(
                    i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX),
                ),
                acquire_time: Some(self.acquired.clone()),
                renew_time: Some(self.renewed.clone()),
                ..LeaseSpec::default()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn dataplane() -> Dataplane {
        let mut acked = Coverage::default();
        acked.version = "v9".into();
        Dataplane {
            id: "edge-1".into(),
            addr: SocketAddr::from(([10, 0, 0, 7], 4100)),
            conn: 9,
            acked: Some(Arc::new(acked)),
            nack: Some(Nack {
                version: "v10".into(),
                reason: "bad cert".into(),
            }),
            agents: Vec::new(),
            capabilities: vec!["ProxyTarget".into()],
        }
    }

    #[test]
    fn a_lease_carries_its_data_plane_across_replicas() {
        let dp = dataplane();
        let body = Record::encode(&dp);
        let now = MicroTime(Timestamp::now());
        let lease = Draft {
            name: &lease_name(&dp.id),
            replica: "op-2",
            body: &body,
            duration: Duration::from_secs(15),
            acquired: &now,
            renewed: now.clone(),
            resource_version: None,
        }
        .lease();
        assert_eq!(holder(&lease), Some("op-2"));
        assert_eq!(duration_of(&lease, Duration::ZERO), Duration::from_secs(15));
        let back = Record::decode(&lease).expect("a record");
        assert_eq!(back.id, "edge-1");
        assert_eq!(back.addr, dp.addr);
        assert_eq!(back.acked.map(|c| c.version.clone()), Some("v9".into()));
        assert_eq!(back.nack, dp.nack);
        assert_eq!(back.capabilities, dp.capabilities);
        assert_eq!(Record::encode(&dp), body, "stable bytes: no rewrite");
    }

    #[test]
    fn names_are_valid_and_distinct() {
        let a = lease_name("Edge_1.example");
        assert!(a.starts_with("postern-dp-edge-1-example-"), "{a}");
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        assert_ne!(lease_name("edge.1"), lease_name("edge_1"));
        assert!(lease_name("###").starts_with("postern-dp-"));
        assert!(lease_name(&"x".repeat(253)).len() <= 63);
    }

    #[test]
    fn a_lease_counts_only_while_it_changes_within_its_duration() {
        let duration = Duration::from_secs(15);
        assert!(live(Duration::from_secs(14), duration));
        assert!(!live(duration, duration));
    }

    #[test]
    fn a_lease_without_a_record_is_ignored() {
        assert!(Record::decode(&Lease::default()).is_none());
    }
}
