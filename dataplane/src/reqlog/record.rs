//! One request-log record: its fields (the admin API's `Record`, camelCase
//! JSON) and the times it carries.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// What the record is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// An HTTP request through the reverse proxy (tunnels' http included).
    Http,
    /// A forward-proxy connection: CONNECT, SOCKS5 or absolute-form HTTP.
    Connect,
    /// A stream through a tcp Tunnel's public port.
    Tunnel,
}

/// One request, forward-proxy connection or tunnel stream, once it ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// When it ended (when the record was made, as nginx's access log),
    /// in Unix milliseconds; RFC 3339 in JSON. It began `durationMs` earlier.
    #[serde(serialize_with = "to_rfc3339", deserialize_with = "from_rfc3339")]
    pub time: u64,
    pub kind: Kind,
    pub request_id: String,
    /// The real client (the PROXY header's source when trusted).
    pub client: IpAddr,
    /// The Host (lowercase, no port) or the destination host.
    pub host: String,
    pub method: Option<String>,
    pub path: Option<String>,
    pub status: Option<u16>,
    /// Body bytes from the client (HTTP), or stream bytes up.
    pub bytes_in: u64,
    /// Body bytes to the client (HTTP), or stream bytes down.
    pub bytes_out: u64,
    pub duration_ms: u64,
    pub site: Option<String>,
    pub route: Option<String>,
    /// The backend, tunnel or upstream proxy that took it (no credentials).
    pub upstream: Option<String>,
    pub user: Option<String>,
    /// `ok`, or the error's metric label, or how a stream ended.
    pub outcome: String,
}

impl Record {
    /// Counted in the dashboard's errors per minute: a 5xx, or a refusal
    /// by (or no answer from) the upstream.
    pub fn is_error(&self) -> bool {
        self.status.is_some_and(|s| s >= 500)
            || matches!(
                self.outcome.as_str(),
                "refused" | "backend_refused" | "unreachable" | "failed"
            )
    }
}

/// A fresh request id: 32 lowercase hex digits.
pub fn new_id() -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let id: [u8; 16] = rand::random();
    let mut hex = [0u8; 32];
    for (i, b) in id.iter().enumerate() {
        hex[2 * i] = HEX[usize::from(b >> 4)];
        hex[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
    hex
}

/// [`new_id`] as a string.
pub fn new_id_string() -> String {
    new_id().iter().map(|&b| char::from(b)).collect()
}

/// Unix milliseconds of `t` (0 before the epoch).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The wall clock in Unix milliseconds.
pub fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

/// `2026-12-07T10:01:00.123Z` (no fraction on a whole second).
pub fn rfc3339(ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms);
    OffsetDateTime::from(t).format(&Rfc3339).unwrap_or_default()
}

/// An RFC 3339 date-time with any offset, as Unix milliseconds.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let t = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    let ms = t.unix_timestamp_nanos() / 1_000_000;
    u64::try_from(ms).ok()
}

fn to_rfc3339<S: Serializer>(ms: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*ms))
}

fn from_rfc3339<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    parse_rfc3339(&text).ok_or_else(|| serde::de::Error::custom("expected an RFC 3339 time"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A record with the given fields and plain defaults for the rest.
    pub fn record(time: u64, host: &str, client: &str, status: u16) -> Record {
        Record {
            time,
            kind: Kind::Http,
            request_id: "r1".into(),
            client: client.parse().expect("ip"),
            host: host.into(),
            method: Some("GET".into()),
            path: Some("/".into()),
            status: Some(status),
            bytes_in: 0,
            bytes_out: 5,
            duration_ms: 1,
            site: Some("default/site".into()),
            route: None,
            upstream: Some("http://127.0.0.1:1".into()),
            user: None,
            outcome: "ok".into(),
        }
    }

    #[test]
    fn json_is_the_contract_shape() {
        let r = record(1_796_637_660_123, "a.test", "10.0.0.1", 200);
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(json["time"], "2026-12-07T10:01:00.123Z");
        assert_eq!(json["kind"], "http");
        assert_eq!(json["requestId"], "r1");
        assert_eq!(json["client"], "10.0.0.1");
        assert_eq!(json["bytesOut"], 5);
        assert_eq!(json["durationMs"], 1);
        assert_eq!(json["user"], serde_json::Value::Null);
        let back: Record = serde_json::from_value(json).expect("back");
        assert_eq!(back, r);
    }

    #[test]
    fn times_parse_with_offsets() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(parse_rfc3339("1970-01-01T01:00:01.5+01:00"), Some(1500));
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn errors_are_5xx_or_refusals() {
        let mut r = record(0, "a", "::1", 503);
        assert!(r.is_error());
        r.status = Some(404);
        assert!(!r.is_error());
        r.status = None;
        r.outcome = "refused".into();
        assert!(r.is_error());
    }
}
