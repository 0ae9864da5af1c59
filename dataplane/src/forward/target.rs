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
    pub fn parse(text: &str) -> Option<Host> {
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Some(Host::Ip(ip));
        }
        let name = text.strip_suffix('.').unwrap_or(text);
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
