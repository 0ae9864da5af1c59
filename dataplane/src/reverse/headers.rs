//! Header rewriting on the way through (hop-by-hop headers are
//! [`crate::net::strip_hop_by_hop`]): X-Forwarded-For/-Proto/-Host and `Forwarded` added, a request id
//! ensured, and each target's own changes applied (compiled once per
//! snapshot into [`HeaderOps`]).

use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use postern_snapshot::HeaderRules;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// Who the request came from, as the backend should hear it.
pub struct Forwarding<'a> {
    pub client: IpAddr,
    pub proto: &'static str,
    /// The Host the client asked for, as received (port included).
    pub host: &'a str,
}

/// Appends the client to X-Forwarded-For and `Forwarded`; sets
/// X-Forwarded-Proto and -Host. (On every request: no more allocations
/// than the values themselves.)
pub fn add_forwarding(headers: &mut HeaderMap, fwd: &Forwarding<'_>) {
    use std::fmt::Write as _;
    let mut value = String::with_capacity(64);
    let _ = write!(value, "{}", fwd.client);
    append_list(headers, &X_FORWARDED_FOR, &value);
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(fwd.proto),
    );
    if let Ok(v) = HeaderValue::from_str(fwd.host) {
        headers.insert(X_FORWARDED_HOST.clone(), v);
    }
    value.clear();
    let _ = match fwd.client {
        IpAddr::V4(ip) => write!(value, "for={ip};host="),
        IpAddr::V6(ip) => write!(value, "for=\"[{ip}]\";host="),
    };
    push_quoted(&mut value, fwd.host);
    value.push_str(";proto=");
    value.push_str(fwd.proto);
    append_list(headers, &FORWARDED, &value);
}

/// Appends a token as is, anything else as a quoted string (RFC 7239 §4).
fn push_quoted(out: &mut String, value: &str) {
    let token = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if token {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        if c == '\\' || c == '"' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// Joins all values of `name` and `item` into one comma-separated value.
fn append_list(headers: &mut HeaderMap, name: &HeaderName, item: &str) {
    let joined = match headers.get(name) {
        None => HeaderValue::from_str(item),
        Some(_) => {
            let mut joined: Vec<&str> = headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            joined.push(item);
            HeaderValue::from_str(&joined.join(", "))
        }
    };
    if let Ok(v) = joined {
        headers.insert(name.clone(), v);
    }
}

/// The request's id: the client's X-Request-Id when it is sane, else new.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID)
        && !v.is_empty()
        && v.len() <= 200
        && v.to_str().is_ok()
    {
        return v.clone();
    }
    HeaderValue::from_bytes(&crate::reqlog::new_id())
        .unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// A target's header changes, parsed once per snapshot.
#[derive(Clone, Debug, Default)]
pub struct HeaderOps {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderOps {
    /// Drops (with a warning) anything the compiler should have refused.
    pub fn compile(rules: &HeaderRules) -> HeaderOps {
        let name = |n: &str| {
            HeaderName::from_bytes(n.as_bytes())
                .map_err(|e| tracing::warn!(header = n, error = %e, "ignoring a header rule"))
                .ok()
        };
        let pair = |p: &postern_snapshot::HeaderPair| {
            let value = HeaderValue::from_str(&p.value)
                .map_err(|e| tracing::warn!(header = %p.name, error = %e, "ignoring a header rule"))
                .ok()?;
            Some((name(&p.name)?, value))
        };
        HeaderOps {
            remove: rules.remove.iter().filter_map(|n| name(n)).collect(),
            set: rules.set.iter().filter_map(pair).collect(),
            add: rules.add.iter().filter_map(pair).collect(),
        }
    }

    /// Remove, then set, then add.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_snapshot::HeaderPair;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn forwarding_appends_and_sets() {
        let mut h = map(&[("x-forwarded-for", "192.0.2.1")]);
        add_forwarding(
            &mut h,
            &Forwarding {
                client: "2001:db8::7".parse().expect("ip"),
                proto: "https",
                host: "api.example.com:8443",
            },
        );
        assert_eq!(h["x-forwarded-for"], "192.0.2.1, 2001:db8::7");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "api.example.com:8443");
        assert_eq!(
            h["forwarded"],
            "for=\"[2001:db8::7]\";host=\"api.example.com:8443\";proto=https"
        );
    }

    #[test]
    fn request_ids_are_kept_or_made() {
        let made = request_id(&HeaderMap::new());
        assert_eq!(made.len(), 32);
        assert_ne!(made, request_id(&HeaderMap::new()));
        let h = map(&[("x-request-id", "abc-123")]);
        assert_eq!(request_id(&h), "abc-123");
    }

    #[test]
    fn ops_remove_then_set_then_add() {
        let ops = HeaderOps::compile(&HeaderRules {
            remove: vec!["x-debug".into()],
            set: vec![HeaderPair {
                name: "x-env".into(),
                value: "prod".into(),
            }],
            add: vec![HeaderPair {
                name: "x-tag".into(),
                value: "b".into(),
            }],
        });
        let mut h = map(&[("x-debug", "1"), ("x-env", "dev"), ("x-tag", "a")]);
        ops.apply(&mut h);
        assert!(!h.contains_key("x-debug"));
        assert_eq!(h["x-env"], "prod");
        let tags: Vec<_> = h.get_all("x-tag").iter().collect();
        assert_eq!(tags, ["a", "b"]);
    }
}
