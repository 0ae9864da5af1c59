//! A destination as a client names it: a host (a DNS name or an IP literal)
//! and a port. Parsing is strict because the host is written into requests
//! to upstream proxies: nothing but name characters gets through.

use std::fmt;
use std::net::IpAddr;

use super::errors::ForwardError;

/// The host part of a destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// A lowercase DNS name, resolved by whoever connects (us for `direct`,
    /// the upstream proxy otherwise).
    Name(String),
    Ip(IpAddr),
}

/// Where a client wants to go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub host: Host,
    pub port: u16,
}

impl Target {
    /// Parses `host:port`, `[v6]:port`; `default_port` applies when the port is absent.
    pub fn parse(authority: &str, default_port: Option<u16>) -> Result<Target, ForwardError> {
        let bad = || ForwardError::BadRequest(format!("{authority:?} is not a valid host:port"));
        let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
            let (v6, after) = rest.split_once(']').ok_or_else(bad)?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(bad()),
            };
            (v6, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let port = match port {
            Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?,
            None => default_port.ok_or_else(bad)?,
        };
        let host = Host::parse(host).ok_or_else(bad)?;
        Ok(Target { host, port })
    }

    /// The host as written in rules, logs and upstream requests (no brackets).
    pub fn host_str(&self) -> String {
        match &self.host {
            Host::Name(n) => n.clone(),
            Host::Ip(ip) => ip.to_string(),
        }
    }
}

impl Host {
    /// An IP literal or a valid DNS name (lowercased); `None` otherwise.
    /// The shorthand IPv4 forms resolvers accept (`127.1`, `2130706433`,
    /// `0x7f.0.0.1`, `0177.0.0.1`) are IPs too, so that an upstream which
    /// resolves them cannot be handed loopback as a "name"; all-numeric
    /// names that are no IPv4 address (`1.2.3.4.5`) are refused.
    pub fn parse(text: &str) -> Option<Host> {
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Some(Host::Ip(ip));
        }
        let name = text.strip_suffix('.').unwrap_or(text);
        if !name.is_empty() && name.split('.').all(is_number_form) {
            return shorthand_ipv4(name).map(|v4| Host::Ip(IpAddr::V4(v4)));
        }
        let valid = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        valid.then(|| Host::Name(name.to_ascii_lowercase()))
    }
}

/// A label `inet_aton` reads as a number: decimal, `0x` hex or `0` octal.
fn is_number_form(label: &str) -> bool {
    let lower = label.to_ascii_lowercase();
    match lower.strip_prefix("0x") {
        Some(hex) => hex.bytes().all(|b| b.is_ascii_hexdigit()),
        None => !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// `a`, `a.b`, `a.b.c` or `a.b.c.d` as `inet_aton` reads them: the last part
/// fills the remaining bytes.
fn shorthand_ipv4(text: &str) -> Option<std::net::Ipv4Addr> {
    let parts = text
        .split('.')
        .map(|p| {
            let lower = p.to_ascii_lowercase();
            if let Some(hex) = lower.strip_prefix("0x") {
                if hex.is_empty() {
                    return Some(0);
                }
                u32::from_str_radix(hex, 16).ok()
            } else if p.len() > 1 && p.starts_with('0') {
                u32::from_str_radix(&p[1..], 8).ok()
            } else {
                p.parse::<u32>().ok()
            }
        })
        .collect::<Option<Vec<u32>>>()?;
    let (last, leading) = parts.split_last()?;
    if leading.len() > 3 || leading.iter().any(|&p| p > 255) {
        return None;
    }
    let last_bytes = 4 - leading.len();
    if last_bytes < 4 && *last >= 1 << (8 * last_bytes) {
        return None;
    }
    let value = leading
        .iter()
        .enumerate()
        .fold(*last, |acc, (i, &p)| acc | (p << (8 * (3 - i))));
    Some(std::net::Ipv4Addr::from(value))
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            _ => write!(f, "{}:{}", self.host_str(), self.port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_ips_and_defaults() {
        let t = Target::parse("Example.COM:443", None).expect("valid");
        assert_eq!(t.host, Host::Name("example.com".into()));
        assert_eq!(t.port, 443);
        let t = Target::parse("[::1]:8080", None).expect("valid");
        assert_eq!(t.to_string(), "[::1]:8080");
        let t = Target::parse("10.0.0.1", Some(80)).expect("valid");
        assert_eq!(t.to_string(), "10.0.0.1:80");
    }

    #[test]
    fn shorthand_ipv4_is_an_ip() {
        for (text, ip) in [
            ("127.1", "127.0.0.1"),
            ("2130706433", "127.0.0.1"),
            ("0x7f.0.0.1", "127.0.0.1"),
            ("0x7F000001", "127.0.0.1"),
            ("0177.0.0.1", "127.0.0.1"),
            ("127.0.1", "127.0.0.1"),
            ("0", "0.0.0.0"),
            ("169.254.43518", "169.254.169.254"),
        ] {
            let t = Target::parse(&format!("{text}:80"), None).expect(text);
            assert_eq!(t.host, Host::Ip(ip.parse().expect("ip")), "{text}");
        }
        for bad in [
            "1.2.3.4.5:80",
            "256.1:80",
            "4294967296:80",
            "127.16777216:80",
            "09:80",
        ] {
            assert!(Target::parse(bad, None).is_err(), "{bad}");
        }
        assert_eq!(
            Target::parse("1.example:80", None).map(|t| t.host),
            Ok(Host::Name("1.example".into()))
        );
    }

    #[test]
    fn refuses_what_is_not_a_host() {
        for bad in [
            "a b:80",
            "host:0",
            "host:99999",
            "host",
            "[::1",
            ":80",
            "a..b:1",
            "x\r\n:1",
        ] {
            assert!(Target::parse(bad, None).is_err(), "{bad}");
        }
    }
}
