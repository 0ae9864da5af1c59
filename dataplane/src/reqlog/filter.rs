//! The query of the request log, from a URL query string:
//! `host=&ip=&user=&status=&since=&limit=`. Anything else, a parameter
//! given twice, or a value that does not parse is an [`Error::BadQuery`]
//! whose message the admin API answers with 400.

use std::net::IpAddr;
use std::time::Duration;

use super::Error;
use super::record::{Record, parse_rfc3339};

/// Records answered when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 100;
/// The most records one query answers.
pub const MAX_LIMIT: usize = 1000;

/// A status code (`404`) or a class (`5xx`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Code(u16),
    /// The first digit: 5 for `5xx`.
    Class(u16),
}

impl Status {
    fn parse(text: &str) -> Option<Status> {
        let bytes = text.as_bytes();
        match bytes {
            [d @ b'1'..=b'5', b'x' | b'X', b'x' | b'X'] => Some(Status::Class(u16::from(d - b'0'))),
            [b'1'..=b'5', _, _] => text.parse().ok().map(Status::Code),
            _ => None,
        }
    }

    pub fn matches(self, status: Option<u16>) -> bool {
        match (self, status) {
            (Status::Code(c), Some(s)) => c == s,
            (Status::Class(c), Some(s)) => s / 100 == c,
            (_, None) => false,
        }
    }

    /// `404` or `5xx`: the name of its index.
    pub fn key(self) -> String {
        match self {
            Status::Code(c) => c.to_string(),
            Status::Class(c) => format!("{c}xx"),
        }
    }
}

/// Which records a query or a live tail wants. Fields not given match all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    /// Lowercase.
    pub host: Option<String>,
    pub ip: Option<IpAddr>,
    pub user: Option<String>,
    pub status: Option<Status>,
    /// Unix milliseconds: records from then on (`since` resolved against
    /// the clock when parsed).
    pub since: Option<u64>,
    pub limit: usize,
}

impl Default for Filter {
    fn default() -> Self {
        Filter {
            host: None,
            ip: None,
            user: None,
            status: None,
            since: None,
            limit: DEFAULT_LIMIT,
        }
    }
}

impl Filter {
    /// Parses a query string (without the `?`), `since` durations counted
    /// back from `now_ms`.
    pub fn parse(query: Option<&str>, now_ms: u64) -> Result<Filter, Error> {
        let mut filter = Filter::default();
        let mut seen: Vec<String> = Vec::new();
        for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if seen.iter().any(|s| *s == name) {
                return Err(bad(format!("{name} is given more than once")));
            }
            seen.push(name.to_string());
            // An empty value is as good as none: forms send every field.
            if value.is_empty() {
                continue;
            }
            filter.set(&name, &value, now_ms)?;
        }
        Ok(filter)
    }

    fn set(&mut self, name: &str, value: &str, now_ms: u64) -> Result<(), Error> {
        match name {
            "host" => self.host = Some(value.trim_end_matches('.').to_ascii_lowercase()),
            "ip" => {
                let ip = value
                    .parse()
                    .map_err(|_| bad(format!("ip: {value:?} is not an IP address")))?;
                self.ip = Some(ip);
            }
            "user" => self.user = Some(value.to_string()),
            "status" => {
                let status = Status::parse(value).ok_or_else(|| {
                    bad(format!(
                        "status: {value:?} is neither a code (404) nor a class (5xx)"
                    ))
                })?;
                self.status = Some(status);
            }
            "since" => {
                let since = parse_since(value, now_ms).ok_or_else(|| {
                    bad(format!(
                        "since: {value:?} is neither an RFC 3339 time nor a duration such as 15m"
                    ))
                })?;
                self.since = Some(since);
            }
            "limit" => {
                let limit: usize = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        bad(format!(
                            "limit: {value:?} is not a number from 1 to {MAX_LIMIT}"
                        ))
                    })?;
                self.limit = limit;
            }
            other => {
                return Err(bad(format!(
                    "unknown parameter {other:?} (expected host, ip, user, status, since, limit)"
                )));
            }
        }
        Ok(())
    }

    /// Whether `record` is one this filter wants.
    pub fn matches(&self, record: &Record) -> bool {
        self.host.as_deref().is_none_or(|h| h == record.host)
            && self.ip.is_none_or(|ip| ip == record.client)
            && self
                .user
                .as_deref()
                .is_none_or(|u| record.user.as_deref() == Some(u))
            && self.status.is_none_or(|s| s.matches(record.status))
            && self.since.is_none_or(|t| record.time >= t)
    }
}

fn bad(message: String) -> Error {
    Error::BadQuery(message)
}

/// An RFC 3339 time, or a duration ago: `30s`, `15m`, `1h`, `2d`.
fn parse_since(text: &str, now_ms: u64) -> Option<u64> {
    if let Some(ms) = parse_rfc3339(text) {
        return Some(ms);
    }
    let ago = parse_ago(text)?;
    let ago = u64::try_from(ago.as_millis()).ok()?;
    Some(now_ms.saturating_sub(ago))
}

/// `30s`, `15m`, `1h`, `2d`: a whole number and one unit.
pub fn parse_ago(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    Some(Duration::from_secs(n.checked_mul(seconds)?))
}

#[cfg(test)]
mod tests {
    use super::super::record::tests::record;
    use super::*;

    const NOW: u64 = 10_000_000;

    fn parse(q: &str) -> Result<Filter, Error> {
        Filter::parse(Some(q), NOW)
    }

    fn message(q: &str) -> String {
        match parse(q) {
            Err(Error::BadQuery(m)) => m,
            other => panic!("{q}: expected a bad query, got {other:?}"),
        }
    }

    #[test]
    fn every_parameter_parses() {
        let f = parse("host=API.test.&ip=10.0.0.1&user=al%20ice&status=5xx&since=15m&limit=7")
            .expect("parses");
        assert_eq!(f.host.as_deref(), Some("api.test"));
        assert_eq!(f.ip, Some("10.0.0.1".parse().expect("ip")));
        assert_eq!(f.user.as_deref(), Some("al ice"));
        assert_eq!(f.status, Some(Status::Class(5)));
        assert_eq!(f.since, Some(NOW - 15 * 60_000));
        assert_eq!(f.limit, 7);
        assert_eq!(
            parse("status=404").expect("code").status,
            Some(Status::Code(404))
        );
        assert_eq!(
            parse("since=1970-01-01T00:00:02Z").expect("time").since,
            Some(2000)
        );
    }

    #[test]
    fn nothing_means_everything_and_the_default_limit() {
        assert_eq!(Filter::parse(None, NOW).expect("none"), Filter::default());
        assert_eq!(parse("").expect("empty"), Filter::default());
        assert_eq!(parse("host=&status=").expect("blank"), Filter::default());
        assert_eq!(Filter::default().limit, 100);
    }

    #[test]
    fn bad_values_are_typed_errors() {
        assert!(message("colour=red").contains("unknown parameter"));
        assert!(message("host=a&host=b").contains("more than once"));
        assert!(message("ip=10.0.0").contains("ip"));
        for status in ["600", "99", "5x", "abc", "5XXX", "40a"] {
            assert!(
                message(&format!("status={status}")).contains("status"),
                "{status}"
            );
        }
        for since in ["yesterday", "15", "1w", "-1h", "h"] {
            assert!(
                message(&format!("since={since}")).contains("since"),
                "{since}"
            );
        }
        for limit in ["0", "1001", "ten", "-1"] {
            assert!(
                message(&format!("limit={limit}")).contains("limit"),
                "{limit}"
            );
        }
        assert_eq!(parse("limit=1000").expect("max").limit, 1000);
    }

    #[test]
    fn matching_checks_every_given_field() {
        let mut r = record(5000, "a.test", "10.0.0.1", 503);
        r.user = Some("alice".into());
        let yes = [
            "",
            "host=a.test",
            "ip=10.0.0.1",
            "user=alice",
            "status=503",
            "status=5xx",
            "since=1970-01-01T00:00:05Z",
            "host=a.test&ip=10.0.0.1&user=alice&status=5xx",
        ];
        for q in yes {
            assert!(parse(q).expect(q).matches(&r), "{q}");
        }
        let no = [
            "host=b.test",
            "ip=10.0.0.2",
            "user=bob",
            "status=500",
            "status=4xx",
            "since=1970-01-01T00:00:06Z",
            "host=a.test&user=bob",
        ];
        for q in no {
            assert!(!parse(q).expect(q).matches(&r), "{q}");
        }
        r.user = None;
        assert!(!parse("user=alice").expect("user").matches(&r));
        r.status = None;
        assert!(!parse("status=5xx").expect("status").matches(&r));
    }
}
