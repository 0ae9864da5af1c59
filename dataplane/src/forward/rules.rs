//! Destination rules: which `host:port` a user may reach.
//!
//! A rule is a CIDR or an IP (`10.0.0.0/8`, `192.0.2.7`), matching
//! addresses on any port, or a `host:port` glob (`*.example.com:443`,
//! `*:80`, `example.com` for any port, `[::1]:22`) where `*` matches any run
//! of characters, case-insensitively. Deny wins over allow; an empty allow
//! list allows everything not denied.
//!
//! Cloud metadata names (`metadata.google.internal`) are denied unless an
//! allow rule names them exactly, not by a wildcard. Addresses no user
//! reaches by default (loopback, link-local, the gateway itself) are the
//! [`super::guard`]'s to judge; an allow CIDR wholly inside link-local
//! (`169.254.169.254`) still exempts the user there, as it always has
//! ([`Rules::link_local_allows`]).
//!
//! Checking runs in two stages. [`Rules::check`] judges the destination as
//! the client named it. When we resolve the name ourselves (`direct`),
//! [`Rules::admits`] then judges each address before we connect to it, so a
//! name cannot smuggle a client onto a denied network. Through an upstream
//! proxy the upstream resolves, and only the name can be judged.

use std::net::IpAddr;

use ipnet::IpNet;
use postern_snapshot::DestinationRules;

use super::errors::ForwardError;
use super::guard::is_link_local;
use super::target::{Host, Target};

/// Names denied unless allowed by exact name.
const SENSITIVE_NAMES: &[&str] = &["metadata.google.internal", "metadata.goog"];

/// Compiled rules of one user.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    allow: Vec<Rule>,
    deny: Vec<Rule>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Rule {
    Net(IpNet),
    /// A lowercase host glob and a port (`None`: any port).
    HostPort {
        host: String,
        port: Option<u16>,
    },
}

/// What [`Rules::check`] decided about a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameVerdict {
    /// An allow rule (or an empty allow list) admits the name itself; when
    /// false, only an allow CIDR matching a resolved address admits it.
    allowed_by_name: bool,
}

impl Rules {
    pub fn compile(rules: &DestinationRules) -> Rules {
        Rules {
            allow: rules.allow.iter().map(|r| Rule::parse(r)).collect(),
            deny: rules.deny.iter().map(|r| Rule::parse(r)).collect(),
        }
    }

    /// Judges the destination as named. `resolve_here` says whether we will
    /// resolve a name ourselves (and so may judge its addresses later).
    pub fn check(&self, target: &Target, resolve_here: bool) -> Result<NameVerdict, ForwardError> {
        let denied = || Err(ForwardError::Denied(target.to_string()));
        if self.deny.iter().any(|r| r.matches(target)) {
            return denied();
        }
        let sensitive =
            matches!(&target.host, Host::Name(n) if SENSITIVE_NAMES.contains(&n.as_str()));
        if sensitive && !self.explicitly_allows(target) {
            return denied();
        }
        let allowed_by_name = self.allow.is_empty() || self.allow.iter().any(|r| r.matches(target));
        let may_resolve = resolve_here
            && matches!(target.host, Host::Name(_))
            && self.allow.iter().any(|r| matches!(r, Rule::Net(_)));
        if !allowed_by_name && !may_resolve {
            return denied();
        }
        Ok(NameVerdict { allowed_by_name })
    }

    /// Judges one resolved address of a name that passed [`Rules::check`].
    pub fn admits(&self, verdict: NameVerdict, ip: IpAddr, port: u16) -> bool {
        let ip = ip.to_canonical();
        let as_target = Target {
            host: Host::Ip(ip),
            port,
        };
        if self.deny.iter().any(|r| r.matches(&as_target)) {
            return false;
        }
        verdict.allowed_by_name
            || self
                .allow
                .iter()
                .any(|r| matches!(r, Rule::Net(net) if net.contains(&ip)))
    }

    /// An allow rule naming this sensitive destination without a wildcard.
    fn explicitly_allows(&self, target: &Target) -> bool {
        self.allow.iter().any(|rule| match rule {
            Rule::HostPort { host, port } => {
                !host.contains('*')
                    && *host == target.host_str()
                    && port.is_none_or(|p| p == target.port)
            }
            Rule::Net(_) => false,
        })
    }

    /// Allow CIDRs wholly inside link-local (metadata) space: they exempt
    /// the user from the guard's link-local deny, as `allowInternalNetworks`
    /// does.
    pub fn link_local_allows(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.allow.iter().filter_map(|rule| match rule {
            Rule::Net(net) if is_link_local(net.network()) && is_link_local(net.broadcast()) => {
                Some(*net)
            }
            _ => None,
        })
    }
}

impl Rule {
    fn parse(text: &str) -> Rule {
        let text = text.trim();
        if let Ok(net) = text.parse::<IpNet>() {
            return Rule::Net(net);
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Rule::Net(IpNet::from(ip.to_canonical()));
        }
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            match rest.split_once("]:") {
                Some((h, p)) => (h, Some(p)),
                None => (rest.trim_end_matches(']'), None),
            }
        } else {
            match text.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (text, None),
            }
        };
        let port = match port {
            None | Some("*") => None,
            // A port that is not a number matches nothing rather than everything.
            Some(p) => Some(p.parse::<u16>().unwrap_or(0)),
        };
        Rule::HostPort {
            host: host.to_ascii_lowercase(),
            port,
        }
    }

    fn matches(&self, target: &Target) -> bool {
        match (self, &target.host) {
            (Rule::Net(net), Host::Ip(ip)) => net.contains(&ip.to_canonical()),
            (Rule::Net(_), Host::Name(_)) => false,
            (Rule::HostPort { host, port }, _) => {
                port.is_none_or(|p| p == target.port)
                    && glob(host.as_bytes(), target.host_str().as_bytes())
            }
        }
    }
}

/// `*` matches any run of bytes (dots included); everything else literally.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            backtrack = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((bp, bt)) = backtrack {
            p = bp + 1;
            t = bt + 1;
            backtrack = Some((bp, bt + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: &[&str], deny: &[&str]) -> Rules {
        Rules::compile(&DestinationRules {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
        })
    }

    fn t(s: &str) -> Target {
        Target::parse(s, None).expect("target")
    }

    #[test]
    fn globs() {
        assert!(glob(b"*.example.com", b"a.b.example.com"));
        assert!(!glob(b"*.example.com", b"example.com"));
        assert!(glob(b"*", b""));
        assert!(glob(b"a*b*c", b"aXXbYYc"));
        assert!(!glob(b"a*b*c", b"aXXbYY"));
    }

    #[test]
    fn empty_rules_allow_all_but_metadata_names() {
        let r = Rules::default();
        assert!(r.check(&t("example.com:443"), false).is_ok());
        assert!(r.check(&t("10.1.2.3:22"), false).is_ok());
        for bad in ["metadata.google.internal:80", "metadata.goog:80"] {
            assert!(
                matches!(r.check(&t(bad), true), Err(ForwardError::Denied(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn metadata_needs_an_explicit_allow() {
        assert!(
            rules(&["*"], &[])
                .check(&t("metadata.google.internal:80"), false)
                .is_err()
        );
        assert!(
            rules(&["metadata.google.internal:80"], &[])
                .check(&t("metadata.google.internal:80"), false)
                .is_ok()
        );
        // Link-local allow CIDRs exempt the user from the guard; wider ones do not.
        let exempt = |allow: &[&str]| -> Vec<String> {
            rules(allow, &[])
                .link_local_allows()
                .map(|n| n.to_string())
                .collect()
        };
        assert_eq!(exempt(&["169.254.169.254"]), ["169.254.169.254/32"]);
        assert_eq!(
            exempt(&["169.254.0.0/16", "fe80::/10"]),
            ["169.254.0.0/16", "fe80::/10"]
        );
        assert!(exempt(&["0.0.0.0/0", "*", "10.0.0.0/8"]).is_empty());
    }

    #[test]
    fn deny_wins_over_allow() {
        let r = rules(&["*.example.com:443"], &["secret.example.com:*"]);
        assert!(r.check(&t("www.example.com:443"), false).is_ok());
        assert!(r.check(&t("www.example.com:80"), false).is_err());
        assert!(r.check(&t("secret.example.com:443"), false).is_err());
        assert!(r.check(&t("other.org:443"), false).is_err());
        let r = rules(&[], &["10.0.0.0/8"]);
        assert!(r.check(&t("10.2.3.4:443"), false).is_err());
        assert!(r.check(&t("11.2.3.4:443"), false).is_ok());
    }

    #[test]
    fn resolved_addresses_are_judged_too() {
        let r = rules(&[], &["127.0.0.0/8"]);
        let v = r.check(&t("localhost:80"), true).expect("name passes");
        assert!(!r.admits(v, "127.0.0.1".parse().expect("ip"), 80));
        assert!(!r.admits(v, "::ffff:127.0.0.1".parse().expect("ip"), 80));
        assert!(r.admits(v, "192.0.2.1".parse().expect("ip"), 80));
        // A CIDR allow admits a name whose address falls inside it, but only
        // when we resolve the name ourselves.
        let r = rules(&["127.0.0.0/8"], &[]);
        assert!(r.check(&t("localhost:80"), false).is_err());
        let v = r.check(&t("localhost:80"), true).expect("deferred");
        assert!(r.admits(v, "127.0.0.1".parse().expect("ip"), 80));
        assert!(!r.admits(v, "192.0.2.1".parse().expect("ip"), 80));
    }

    #[test]
    fn ports_and_v6() {
        let r = rules(&["*:80", "[::1]:22"], &[]);
        assert!(r.check(&t("a.b:80"), false).is_ok());
        assert!(r.check(&t("a.b:81"), false).is_err());
        assert!(r.check(&t("[::1]:22"), false).is_ok());
        assert!(r.check(&t("[::1]:23"), false).is_err());
        let r = rules(&["example.com:https"], &[]);
        assert!(r.check(&t("example.com:443"), false).is_err());
    }
}
