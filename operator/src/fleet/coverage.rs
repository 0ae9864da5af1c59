//! What an ack proves: the generation of every object a snapshot carries
//! and the ACME challenges it answers, in a form that crosses replicas.
//!
//! A data plane's lease carries its acked snapshot's coverage in full
//! rather than the version alone. Compile is deterministic, so a version
//! names one content, but the leader cannot always map a version back to
//! generations: another replica may have compiled an index state the
//! leader never published (its debounce saw a later state), and a new
//! leader has no history at all. Past the annotation's room (about 5,000
//! objects) the lease carries the version alone, credited only when it is
//! the snapshot the reading replica published itself. Challenges travel as
//! digests, so a lease never carries a key authorization or a TLS-ALPN key.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use postern_api::{Kind, ObjectKey};
use postern_snapshot::{AcmeChallenge, Snapshot, sha256_hex};
use serde::{Deserialize, Serialize};

/// The objects (at their generations) and challenges of one snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    pub version: String,
    objects: HashMap<(Kind, ObjectKey), i64>,
    challenges: BTreeSet<String>,
    /// The lease record had no room for the generations: this ack credits
    /// no object (the data plane stays Pending, never falsely Programmed).
    pub truncated: bool,
}

impl Coverage {
    pub fn of(snapshot: &Snapshot) -> Coverage {
        let objects = snapshot
            .objects
            .iter()
            .filter_map(|o| {
                let kind = Kind::parse(&o.kind)?;
                Some(((kind, ObjectKey::new(&o.namespace, &o.name)), o.generation))
            })
            .collect();
        Coverage {
            version: snapshot.version.clone(),
            objects,
            challenges: snapshot.acme_challenges.iter().map(digest).collect(),
            truncated: false,
        }
    }

    /// Whether the snapshot carries the object at this generation: an ack
    /// of it means that generation is programmed.
    pub fn contains(&self, kind: Kind, key: &ObjectKey, generation: i64) -> bool {
        self.objects.get(&(kind, key.clone())) == Some(&generation)
    }

    /// Whether the snapshot answers this challenge.
    pub fn answers(&self, challenge: &AcmeChallenge) -> bool {
        self.challenges.contains(&digest(challenge))
    }

    /// What an ack proves, read against the snapshot this replica published:
    /// a lease with no room for its generations (past about 5,000 objects)
    /// carries the version alone, and when that is the published version,
    /// the published coverage is the same content (a version is the hash of
    /// its snapshot). Any other truncated ack still credits no object.
    pub fn completed(acked: &Arc<Coverage>, published: &Arc<Coverage>) -> Arc<Coverage> {
        if acked.truncated && acked.version == published.version {
            published.clone()
        } else {
            acked.clone()
        }
    }

    /// Bytes the generations take in a [`Wire`] at the least: each one's
    /// quoted `namespace/name`, a colon, a digit and a comma. Counting is
    /// far cheaper than encoding thousands of them to find out.
    pub fn generations_min_len(&self) -> usize {
        self.objects
            .keys()
            .map(|(_, key)| key.namespace.len() + key.name.len() + 6)
            .sum()
    }

    /// The same ack with no generations, for a record that must shrink.
    pub fn without_objects(&self) -> Coverage {
        Coverage {
            version: self.version.clone(),
            objects: HashMap::new(),
            challenges: self.challenges.clone(),
            truncated: true,
        }
    }
}

/// A challenge's identity: every field, hashed.
fn digest(challenge: &AcmeChallenge) -> String {
    let bytes = serde_json::to_vec(challenge).unwrap_or_default();
    sha256_hex(&bytes)[..32].to_string()
}

/// The serialised form: generations by kind, then `namespace/name`, sorted
/// so an unchanged ack encodes to the same bytes (and is not rewritten).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Wire {
    version: String,
    #[serde(default)]
    generations: BTreeMap<String, BTreeMap<String, i64>>,
    #[serde(default)]
    challenges: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
}

impl From<&Coverage> for Wire {
    fn from(coverage: &Coverage) -> Wire {
        let mut generations: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
        for ((kind, key), generation) in &coverage.objects {
            generations
                .entry(kind.as_str().to_string())
                .or_default()
                .insert(key.to_string(), *generation);
        }
        Wire {
            version: coverage.version.clone(),
            generations,
            challenges: coverage.challenges.iter().cloned().collect(),
            truncated: coverage.truncated,
        }
    }
}

impl From<Wire> for Coverage {
    /// Kinds this build does not know are dropped: they cannot be credited.
    fn from(wire: Wire) -> Coverage {
        let mut objects = HashMap::new();
        for (kind, keys) in wire.generations {
            let Some(kind) = Kind::parse(&kind) else {
                continue;
            };
            for (key, generation) in keys {
                if let Some((namespace, name)) = key.split_once('/') {
                    objects.insert((kind, ObjectKey::new(namespace, name)), generation);
                }
            }
        }
        Coverage {
            version: wire.version,
            objects,
            challenges: wire.challenges.into_iter().collect(),
            truncated: wire.truncated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coverage() -> Coverage {
        let mut objects = HashMap::new();
        objects.insert((Kind::ProxyTarget, ObjectKey::new("team", "api")), 4);
        objects.insert((Kind::Route, ObjectKey::new("team", "v1")), 2);
        let challenge = AcmeChallenge::Http01 {
            hostname: "a.example.com".into(),
            token: "tok".into(),
            key_authorization: "tok.thumb".into(),
        };
        Coverage {
            version: "v1".into(),
            objects,
            challenges: [digest(&challenge)].into(),
            truncated: false,
        }
    }

    #[test]
    fn a_truncated_ack_is_credited_only_for_the_published_version() {
        let published = Arc::new(coverage());
        let key = ObjectKey::new("team", "api");
        let same = Arc::new(published.without_objects());
        assert!(!same.contains(Kind::ProxyTarget, &key, 4));
        let read = Coverage::completed(&same, &published);
        assert!(read.contains(Kind::ProxyTarget, &key, 4));
        let mut older = published.without_objects();
        older.version = "v0".into();
        let read = Coverage::completed(&Arc::new(older), &published);
        assert!(!read.contains(Kind::ProxyTarget, &key, 4));
        let full = Arc::new(coverage());
        assert!(Arc::ptr_eq(&Coverage::completed(&full, &published), &full));
    }

    #[test]
    fn the_wire_form_round_trips_and_credits_the_same_generations() {
        let original = coverage();
        let json = serde_json::to_string(&Wire::from(&original)).expect("encode");
        let back = Coverage::from(serde_json::from_str::<Wire>(&json).expect("decode"));
        assert_eq!(back, original);
        let key = ObjectKey::new("team", "api");
        assert!(back.contains(Kind::ProxyTarget, &key, 4));
        assert!(!back.contains(Kind::ProxyTarget, &key, 3));
        assert!(
            !json.contains("tok.thumb"),
            "challenges travel as digests: {json}"
        );
    }

    /// The record skips encoding on this bound, so it must never exceed
    /// what the generations really take.
    #[test]
    fn the_least_length_of_the_generations_is_a_lower_bound() {
        let generations = |c: &Coverage| {
            let wire = serde_json::to_value(Wire::from(c)).expect("encode");
            serde_json::to_string(&wire["generations"]).expect("encode")
        };
        let mut c = coverage();
        c.objects.insert((Kind::Route, ObjectKey::new("t", "r")), 1);
        assert!(c.generations_min_len() <= generations(&c).len());
        assert_eq!(c.without_objects().generations_min_len(), 0);
    }

    #[test]
    fn a_challenge_is_answered_only_with_every_field_equal() {
        let c = coverage();
        let same = AcmeChallenge::Http01 {
            hostname: "a.example.com".into(),
            token: "tok".into(),
            key_authorization: "tok.thumb".into(),
        };
        let other = AcmeChallenge::Http01 {
            hostname: "a.example.com".into(),
            token: "tok".into(),
            key_authorization: "tok.other".into(),
        };
        assert!(c.answers(&same));
        assert!(!c.answers(&other));
    }

    #[test]
    fn a_truncated_ack_credits_nothing_but_still_answers_challenges() {
        let c = coverage();
        let small = c.without_objects();
        assert!(small.truncated);
        assert!(!small.contains(Kind::ProxyTarget, &ObjectKey::new("team", "api"), 4));
        assert_eq!(small.challenges, c.challenges);
    }

    #[test]
    fn unknown_kinds_and_malformed_keys_are_dropped() {
        let wire: Wire = serde_json::from_value(serde_json::json!({
            "version": "v",
            "generations": {"Gizmo": {"a/b": 1}, "Route": {"nokey": 1, "ns/r": 3}}
        }))
        .expect("decode");
        let c = Coverage::from(wire);
        assert_eq!(c.objects.len(), 1);
        assert!(c.contains(Kind::Route, &ObjectKey::new("ns", "r"), 3));
    }
}
