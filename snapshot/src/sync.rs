//! The sync protocol: messages between a data plane and the operator.
//!
//! Transport: one TCP connection per data plane, opened by the data plane
//! (TLS over it when the operator has a sync certificate; this crate does not
//! care), carrying frames of a 4-byte big-endian length followed by one JSON
//! message.
//! The data plane speaks first with [`ToOperator::Hello`], carrying its
//! credential (the shared sync token, or its own Kubernetes ServiceAccount
//! token, which the operator verifies with a TokenReview and from which it
//! takes the data plane's id); the operator answers with the current snapshot at once and
//! every new one after it; the data plane acks or nacks each by version.
//! Either side sends `Ping` when idle; a peer silent for [`DEAD_AFTER_SECS`]
//! is dropped and the data plane reconnects with backoff.
//!
//! Versions are negotiated so either side can be upgraded first: the hello
//! lists every protocol the data plane speaks ([`ToOperator::Hello`]'s
//! `protocols`, with `protocol` holding the oldest, which is all an operator
//! from before negotiation compares), and the welcome names the newest both
//! speak ([`negotiate`]). A message is sent only under a protocol that has it.
//!
//! | protocol | adds |
//! | --- | --- |
//! | 1 | hello, welcome, refused, snapshot, ack, nack, ping, pong |
//! | 2 | [`ToOperator::Agents`] |

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{Snapshot, SnapshotError};

/// The newest protocol this build speaks; bumped when a message is added or
/// changed.
pub const PROTOCOL: u32 = 2;
/// The oldest protocol this build still speaks.
pub const MIN_PROTOCOL: u32 = 1;
/// The first protocol with [`ToOperator::Agents`].
pub const AGENTS_PROTOCOL: u32 = 2;
/// The resource kinds a data plane may implement, as its hello names them.
pub const CAPABILITIES: [&str; 5] = [
    "ProxyTarget",
    "Route",
    "UserUpstream",
    "Tunnel",
    "OAuthClient",
];
/// What a data plane whose hello names no capabilities implements: the
/// kinds every data plane has served since protocol 1.
pub const BASE_CAPABILITIES: [&str; 3] = ["ProxyTarget", "Route", "UserUpstream"];
/// Largest hello an operator reads from a peer not yet authenticated: a
/// stranger must not make it buffer [`MAX_FRAME`] bytes.
pub const MAX_HELLO_FRAME: usize = 64 * 1024;
/// Largest frame either side accepts.
pub const MAX_FRAME: usize = 256 * 1024 * 1024;
/// Seconds between pings on an idle connection.
pub const PING_SECS: u64 = 5;
/// Seconds of silence after which a peer is considered gone.
pub const DEAD_AFTER_SECS: u64 = 20;

/// Messages from a data plane.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ToOperator {
    #[serde(rename_all = "camelCase")]
    Hello {
        /// The oldest protocol in `protocols` (an operator from before
        /// negotiation requires it to equal its own).
        protocol: u32,
        /// Every protocol this data plane speaks; empty from a data plane
        /// from before negotiation, which speaks `protocol` only.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        protocols: Vec<u32>,
        /// Stable name of the data plane (its pod name), used in status and metrics.
        dataplane_id: String,
        /// The credential: the shared sync token, or a ServiceAccount token
        /// for the audience `postern-sync`. Both travel in this one field,
        /// so older operators and data planes keep speaking with the shared
        /// token; an operator given a ServiceAccount token requires
        /// `dataplane_id` to be the one the token names.
        token: String,
        /// Snapshot schemas this data plane reads.
        schemas: Vec<u32>,
        /// The version it is serving now, if any.
        current_version: Option<String>,
        /// The resource kinds it implements (of [`CAPABILITIES`]); absent
        /// from a data plane from before capabilities were named, which is
        /// taken to implement [`BASE_CAPABILITIES`]. Older operators ignore
        /// the field, so it needs no new protocol.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        capabilities: Option<Vec<String>>,
    },
    Ack {
        version: String,
    },
    Nack {
        version: String,
        reason: String,
    },
    /// The tunnel agents this data plane holds, whole, whenever it changes
    /// (and once after the hello): what `AgentConnected` is made of.
    Agents {
        tunnels: Vec<TunnelAgents>,
    },
    Ping,
    Pong,
}

/// One programmed Tunnel as one data plane sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TunnelAgents {
    /// `namespace/name`.
    pub tunnel: String,
    /// Agents connected here (the active one and standbys).
    pub agents: u32,
    /// The active agent's address and version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// Why the last agent for this Tunnel was refused here, if one was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refusal: Option<String>,
}

/// Messages from the operator.
#[derive(Clone, Debug, Serialize, Deserialize)]
// Externally tagged: an internally tagged enum buffers its content, which
// `RawValue` cannot pass through.
#[serde(rename_all = "camelCase")]
pub enum ToDataplane {
    #[serde(rename_all = "camelCase")]
    Welcome {
        operator_id: String,
        /// The protocol of the rest of the session; absent from an operator
        /// from before negotiation, which speaks 1.
        #[serde(default = "first_protocol")]
        protocol: u32,
    },
    /// The hello was refused; the connection closes after this.
    Refused {
        reason: String,
    },
    /// A snapshot, kept as raw JSON so a data plane can read `schema` and
    /// `version` and nack a snapshot whose body it cannot parse.
    Snapshot {
        schema: u32,
        version: String,
        body: Box<RawValue>,
    },
    Ping,
    Pong,
}

fn first_protocol() -> u32 {
    1
}

/// The protocols a data plane of this build offers in its hello.
pub fn offered() -> Vec<u32> {
    (MIN_PROTOCOL..=PROTOCOL).collect()
}

/// The newest protocol both this build and a peer offering `protocol` and
/// `protocols` (see [`ToOperator::Hello`]) speak, if any.
pub fn negotiate(protocol: u32, protocols: &[u32]) -> Option<u32> {
    protocols
        .iter()
        .chain(std::iter::once(&protocol))
        .copied()
        .filter(|p| (MIN_PROTOCOL..=PROTOCOL).contains(p))
        .max()
}

impl ToDataplane {
    /// Wraps a serialised snapshot without parsing it again.
    pub fn snapshot(snapshot: &Snapshot, json: Vec<u8>) -> Result<Self, serde_json::Error> {
        let text = String::from_utf8(json).map_err(serde::de::Error::custom)?;
        Ok(ToDataplane::Snapshot {
            schema: snapshot.schema,
            version: snapshot.version.clone(),
            body: RawValue::from_string(text)?,
        })
    }
}

/// The encoded `ToDataplane::Snapshot` message of a sealed snapshot, given
/// its wire form (`json`, from [`Snapshot::to_json`] or
/// [`Snapshot::seal_to_json`]): the bytes `encode` gives for
/// [`ToDataplane::snapshot`], without checking and copying a large body
/// twice more. The body is trusted to be the snapshot's own JSON.
pub fn snapshot_frame(snapshot: &Snapshot, json: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
    let version = serde_json::to_string(&snapshot.version)?;
    let head = format!(
        r#"{{"snapshot":{{"schema":{},"version":{version},"body":"#,
        snapshot.schema
    );
    let mut frame = Vec::with_capacity(head.len() + json.len() + 2);
    frame.extend_from_slice(head.as_bytes());
    frame.extend_from_slice(json);
    frame.extend_from_slice(b"}}");
    Ok(frame)
}

/// Reads a snapshot frame's body, refusing a schema this build cannot read
/// and a body whose bytes do not hash to the version it carries (so the
/// snapshot needs only [`Snapshot::validate_content`] after this).
pub fn decode_snapshot(schema: u32, body: &RawValue) -> Result<Snapshot, SnapshotError> {
    if schema != crate::SCHEMA {
        return Err(SnapshotError::Schema {
            found: schema,
            supported: crate::SCHEMA,
        });
    }
    let snapshot: Snapshot =
        serde_json::from_str(body.get()).map_err(|e| SnapshotError::Decode(e.to_string()))?;
    crate::check_wire_version(body.get().as_bytes(), &snapshot.version)?;
    Ok(snapshot)
}

/// Encodes one message as JSON (the caller adds the length prefix).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(msg)
}

/// Decodes one frame's JSON.
pub fn decode<'a, T: Deserialize<'a>>(frame: &'a [u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_frame_is_the_encoded_message() {
        let (snap, json) = Snapshot::default().seal_to_json();
        let msg = ToDataplane::snapshot(&snap, json.clone()).expect("wrap");
        assert_eq!(
            snapshot_frame(&snap, &json).expect("frame"),
            encode(&msg).expect("encode")
        );
    }

    #[test]
    fn snapshot_frame_round_trips() {
        let snap = Snapshot::default().seal();
        let msg = ToDataplane::snapshot(&snap, snap.to_json().expect("json")).expect("wrap");
        let bytes = encode(&msg).expect("encode");
        let ToDataplane::Snapshot {
            schema,
            version,
            body,
        } = decode(&bytes).expect("decode")
        else {
            panic!("not a snapshot frame");
        };
        assert_eq!(version, snap.version);
        assert_eq!(decode_snapshot(schema, &body), Ok(snap));
    }

    /// What the operator sealed, with its bytes changed in transit.
    fn tampered_frame_body(from: &str, to: &str) -> (Snapshot, Box<RawValue>) {
        let snap = Snapshot {
            sites: vec![crate::Site::new("a/a", &["a.example.com"], "http://b:80")],
            ..Snapshot::default()
        };
        let (snap, json) = snap.seal_to_json();
        let text = String::from_utf8(json).expect("utf8").replacen(from, to, 1);
        (snap, RawValue::from_string(text).expect("raw"))
    }

    #[test]
    fn a_frame_whose_body_does_not_hash_to_its_version_is_refused() {
        let (snap, body) = tampered_frame_body("a.example.com", "b.example.com");
        assert_eq!(
            decode_snapshot(crate::SCHEMA, &body),
            Err(SnapshotError::Version {
                claimed: snap.version.clone(),
                actual: decode_unchecked(&body).content_hash(),
            })
        );
        // Untouched bytes pass.
        let (_, body) = tampered_frame_body("", "");
        assert_eq!(decode_snapshot(crate::SCHEMA, &body), Ok(snap));
    }

    /// `value` sealed as an operator that wrote it would have: hashed with
    /// an empty version, then the version written in.
    fn sealed_as_written(mut value: serde_json::Value) -> Box<RawValue> {
        value["version"] = "".into();
        let unsealed = serde_json::to_string(&value).expect("json");
        let version = &crate::sha256_hex(unsealed.as_bytes())[..32];
        let sealed = unsealed.replacen(r#""version":"""#, &format!(r#""version":"{version}""#), 1);
        RawValue::from_string(sealed).expect("raw")
    }

    /// A field this build does not know would be dropped by decoding and
    /// the snapshot served without it: refused, as when the data plane
    /// hashed what it decoded, even when the sender hashed it in.
    #[test]
    fn a_frame_with_a_field_this_build_does_not_know_is_refused() {
        let snap = Snapshot {
            sites: vec![crate::Site::new("a/a", &["a.example.com"], "http://b:80")],
            ..Snapshot::default()
        }
        .seal();
        let known = serde_json::to_value(&snap).expect("value");
        assert!(decode_snapshot(crate::SCHEMA, &sealed_as_written(known.clone())).is_ok());
        let mut future = known;
        future["sites"][0]["fromTheFuture"] = 1.into();
        assert!(matches!(
            decode_snapshot(crate::SCHEMA, &sealed_as_written(future)),
            Err(SnapshotError::Decode(e)) if e.contains("fromTheFuture")
        ));
    }

    fn decode_unchecked(body: &RawValue) -> Snapshot {
        serde_json::from_str(body.get()).expect("decode")
    }

    #[test]
    fn unknown_schema_is_refused_before_parsing() {
        let body = RawValue::from_string("{\"not\":\"a snapshot\"}".into()).expect("raw");
        assert!(matches!(
            decode_snapshot(99, &body),
            Err(SnapshotError::Schema { found: 99, .. })
        ));
        assert!(matches!(
            decode_snapshot(crate::SCHEMA, &body),
            Err(SnapshotError::Decode(_))
        ));
    }

    #[test]
    fn hello_uses_camel_case_tags() {
        let hello = ToOperator::Hello {
            protocol: MIN_PROTOCOL,
            protocols: offered(),
            dataplane_id: "dp-1".into(),
            token: "t".into(),
            schemas: vec![1],
            current_version: None,
            capabilities: Some(vec!["Tunnel".into()]),
        };
        let text = String::from_utf8(encode(&hello).expect("encode")).expect("utf8");
        assert!(text.starts_with("{\"hello\":"), "{text}");
        assert!(text.contains("\"dataplaneId\":\"dp-1\""), "{text}");
        assert!(text.contains("\"capabilities\":[\"Tunnel\"]"), "{text}");
    }

    #[test]
    fn negotiation_picks_the_newest_common_protocol() {
        assert_eq!(negotiate(MIN_PROTOCOL, &offered()), Some(PROTOCOL));
        // A data plane from before negotiation.
        assert_eq!(negotiate(1, &[]), Some(1));
        // One from the future that still speaks ours.
        assert_eq!(negotiate(1, &[1, 2, 7]), Some(2));
        assert_eq!(negotiate(7, &[7, 8]), None);
        assert_eq!(negotiate(0, &[]), None);
    }

    #[test]
    fn old_peers_read_new_messages_and_the_reverse() {
        // An operator from before negotiation wrote welcomes without a protocol.
        let old: ToDataplane = decode(b"{\"welcome\":{\"operatorId\":\"op\"}}").expect("decode");
        assert!(matches!(old, ToDataplane::Welcome { protocol: 1, .. }));
        // And a hello with an unknown field is still a hello to it (serde
        // ignores unknown fields): `protocol` carries what it checks.
        let text = encode(&ToOperator::Hello {
            protocol: MIN_PROTOCOL,
            protocols: offered(),
            dataplane_id: "dp".into(),
            token: "t".into(),
            schemas: vec![1],
            current_version: None,
            capabilities: None,
        })
        .expect("encode");
        let text = String::from_utf8(text).expect("utf8");
        assert!(text.contains("\"protocol\":1,"), "{text}");
        assert!(text.contains("\"protocols\":[1,2]"), "{text}");
        // A hello from before capabilities: the operator takes the base set.
        assert!(!text.contains("capabilities"), "{text}");
    }
}
