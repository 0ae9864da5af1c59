//! The gateway's guard: destinations no user reaches by default, judged on
//! the address actually connected to, so a name that resolves (or is
//! rebound) to loopback is caught after resolution, not before.
//!
//! Guarded: loopback, unspecified (`0.0.0.0/8`, `::`), link-local and the
//! cloud metadata addresses, and the `--proxy-deny-cidr` networks; a user's
//! `allowInternalNetworks` punches holes in those. The gateway's own
//! listeners stay denied to everyone: reaching them is a loop, or the
//! unauthenticated admin API. IPv4-mapped and IPv4-compatible IPv6 forms are
//! judged as the IPv4 address they carry.
//!
//! Through an upstream proxy the upstream resolves, so only what the client
//! named can be judged ([`Guard::judge_named`]): IP literals, and
//! `localhost` names taken as loopback (the upstream's loopback is ours when
//! it runs beside us). The upstream proxy's own address is the admin's
//! choice and may well be loopback (a local sidecar); only a loop back into
//! this gateway is refused there ([`Guard::judge_upstream`]).
//!
//! This module decides; it never connects or logs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;

use ipnet::IpNet;

use super::target::{Host, Target};

/// Why the guard refused an address; each has its own metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// One of this gateway's listening sockets.
    Gateway,
    Loopback,
    Unspecified,
    /// Link-local, cloud metadata included.
    LinkLocal,
    /// A `--proxy-deny-cidr` network.
    Network,
}

impl Reason {
    /// The `kind` label of the error counter.
    pub fn metric_label(self) -> &'static str {
        match self {
            Reason::Gateway => "denied_gateway",
            Reason::Loopback => "denied_loopback",
            Reason::Unspecified => "denied_unspecified",
            Reason::LinkLocal => "denied_link_local",
            Reason::Network => "denied_network",
        }
    }

    /// For the log line (never sent to the client).
    pub fn describe(self) -> &'static str {
        match self {
            Reason::Gateway => "a listener of this gateway",
            Reason::Loopback => "a loopback address",
            Reason::Unspecified => "an unspecified address",
            Reason::LinkLocal => "a link-local or metadata address",
            Reason::Network => "in a --proxy-deny-cidr network",
        }
    }
}

/// The guard of one process: the deny list and, once bound, its listeners.
#[derive(Debug, Default)]
pub struct Guard {
    deny: Vec<IpNet>,
    own: OnceLock<Vec<SocketAddr>>,
}

impl Guard {
    pub fn new(deny: &[IpNet]) -> Guard {
        Guard {
            deny: deny.iter().map(|n| canonical_net(n.trunc())).collect(),
            own: OnceLock::new(),
        }
    }

    /// Every listener the process bound (set once, before serving).
    pub fn set_listeners(&self, addrs: Vec<SocketAddr>) {
        let _ = self.own.set(addrs);
    }

    /// Judges an address about to be connected to; `exempt` is the user's
    /// `allowInternalNetworks`.
    pub fn judge(&self, addr: SocketAddr, exempt: &[IpNet]) -> Result<(), Reason> {
        let ip = canonical(addr.ip());
        if self.is_own(ip, addr.port()) {
            return Err(Reason::Gateway);
        }
        match self.internal(ip) {
            Some(reason) if !exempt.iter().any(|n| n.contains(&ip)) => Err(reason),
            _ => Ok(()),
        }
    }

    /// Judges the destination as the client named it. `resolve_here`: we
    /// resolve names ourselves (`direct`), and judge their addresses later.
    pub fn judge_named(
        &self,
        target: &Target,
        exempt: &[IpNet],
        resolve_here: bool,
    ) -> Result<(), Reason> {
        match &target.host {
            Host::Ip(ip) => self.judge(SocketAddr::new(*ip, target.port), exempt),
            Host::Name(name) if !resolve_here && is_localhost(name) => {
                let v4 = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), target.port);
                let v6 = SocketAddr::new(Ipv6Addr::LOCALHOST.into(), target.port);
                self.judge(v4, exempt).and(self.judge(v6, exempt))
            }
            Host::Name(_) => Ok(()),
        }
    }

    /// Judges an upstream proxy's address: only a loop into this gateway.
    pub fn judge_upstream(&self, addr: SocketAddr) -> Result<(), Reason> {
        if self.is_own(canonical(addr.ip()), addr.port()) {
            return Err(Reason::Gateway);
        }
        Ok(())
    }

    fn internal(&self, ip: IpAddr) -> Option<Reason> {
        let fixed = match ip {
            IpAddr::V4(v4) if v4.is_loopback() => Some(Reason::Loopback),
            // 0.0.0.0/8 is "this host on this network": Linux connects 0.0.0.0 to loopback.
            IpAddr::V4(v4) if v4.octets()[0] == 0 => Some(Reason::Unspecified),
            IpAddr::V6(v6) if v6.is_loopback() => Some(Reason::Loopback),
            IpAddr::V6(v6) if v6.is_unspecified() => Some(Reason::Unspecified),
            ip if is_link_local(ip) => Some(Reason::LinkLocal),
            _ => None,
        };
        fixed.or_else(|| {
            self.deny
                .iter()
                .any(|n| n.contains(&ip))
                .then_some(Reason::Network)
        })
    }

    /// A listener of ours answers at `ip:port`: bound there exactly, or bound
    /// to a wildcard on that port while `ip` is an address of this host.
    fn is_own(&self, ip: IpAddr, port: u16) -> bool {
        self.own.get().into_iter().flatten().any(|l| {
            l.port() == port
                && (canonical(l.ip()) == ip || (l.ip().is_unspecified() && is_local(ip)))
        })
    }
}

/// The EC2 IPv6 instance metadata address.
const AWS_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

/// An address as the network treats it: IPv4-mapped (`::ffff:a.b.c.d`) and
/// IPv4-compatible (`::a.b.c.d`, deprecated but still routed by some
/// stacks) forms become the IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4() {
            // `::` and `::1` are IPv6's own unspecified and loopback.
            Some(v4) if !v6.is_unspecified() && !v6.is_loopback() => IpAddr::V4(v4),
            _ => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// A network written in IPv4-mapped form (`::ffff:10.0.0.0/104`) as IPv4,
/// so it matches [`canonical`] addresses.
pub fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match canonical(IpAddr::V6(v6.network())) {
            IpAddr::V4(v4) => IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).unwrap_or(net),
            IpAddr::V6(_) => net,
        },
        other => other,
    }
}

/// Link-local (169.254.0.0/16, fe80::/10) or a cloud metadata address
/// (fd00:ec2::254). `ip` is [`canonical`].
pub fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80 || v6 == AWS_METADATA_V6,
    }
}

/// `localhost` and its subdomains, which resolvers answer with loopback (RFC 6761).
fn is_localhost(name: &str) -> bool {
    name == "localhost" || name.ends_with(".localhost")
}

/// `ip` is assigned to this host: binding to it succeeds. Only asked when a
/// destination's port is one a wildcard listener of ours holds.
fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().expect("net")).collect()
    }

    #[test]
    fn internal_addresses_in_every_spelling_are_refused() {
        let g = Guard::new(&nets(&["10.96.0.0/12"]));
        for (a, reason) in [
            ("127.0.0.1:80", Reason::Loopback),
            ("127.1.2.3:80", Reason::Loopback),
            ("[::1]:80", Reason::Loopback),
            ("[::ffff:127.0.0.1]:80", Reason::Loopback),
            ("[::127.0.0.1]:80", Reason::Loopback),
            ("0.0.0.0:80", Reason::Unspecified),
            ("[::]:80", Reason::Unspecified),
            ("[::ffff:0.0.0.0]:80", Reason::Unspecified),
            ("169.254.169.254:80", Reason::LinkLocal),
            ("[::ffff:169.254.1.1]:80", Reason::LinkLocal),
            ("[fe80::1]:80", Reason::LinkLocal),
            ("[fd00:ec2::254]:80", Reason::LinkLocal),
            ("10.96.0.1:443", Reason::Network),
            ("[::ffff:10.100.0.1]:443", Reason::Network),
        ] {
            assert_eq!(g.judge(addr(a), &[]), Err(reason), "{a}");
        }
        for a in ["192.0.2.1:80", "10.0.0.1:80", "[2001:db8::1]:80"] {
            assert_eq!(g.judge(addr(a), &[]), Ok(()), "{a}");
        }
    }

    #[test]
    fn exemptions_punch_holes_but_never_into_our_listeners() {
        let g = Guard::new(&nets(&["10.96.0.0/12"]));
        g.set_listeners(vec![addr("127.0.0.1:9000"), addr("0.0.0.0:8090")]);
        let exempt = nets(&["127.0.0.0/8", "10.96.0.10/32"]);
        assert_eq!(g.judge(addr("127.0.0.1:5000"), &exempt), Ok(()));
        assert_eq!(g.judge(addr("[::ffff:127.0.0.1]:5000"), &exempt), Ok(()));
        assert_eq!(g.judge(addr("10.96.0.10:53"), &exempt), Ok(()));
        assert_eq!(
            g.judge(addr("10.96.0.11:53"), &exempt),
            Err(Reason::Network)
        );
        assert_eq!(g.judge(addr("[::1]:5000"), &exempt), Err(Reason::Loopback));
        for own in [
            "127.0.0.1:9000",
            "[::ffff:127.0.0.1]:9000",
            "127.0.0.1:8090",
            "127.0.0.5:8090",
        ] {
            assert_eq!(g.judge(addr(own), &exempt), Err(Reason::Gateway), "{own}");
        }
        // Port 8090 elsewhere is someone else's.
        assert_eq!(g.judge(addr("192.0.2.1:8090"), &exempt), Ok(()));
        // An upstream proxy may be on loopback, but not be us.
        assert_eq!(g.judge_upstream(addr("127.0.0.1:3128")), Ok(()));
        assert_eq!(
            g.judge_upstream(addr("127.0.0.1:8090")),
            Err(Reason::Gateway)
        );
    }

    #[test]
    fn named_destinations_are_judged_where_we_cannot_resolve() {
        let g = Guard::new(&[]);
        let t = |s: &str| Target::parse(s, None).expect("target");
        assert_eq!(
            g.judge_named(&t("localhost:80"), &[], false),
            Err(Reason::Loopback)
        );
        assert_eq!(
            g.judge_named(&t("a.localhost:80"), &[], false),
            Err(Reason::Loopback)
        );
        // Resolved here: judged on its addresses instead.
        assert_eq!(g.judge_named(&t("localhost:80"), &[], true), Ok(()));
        assert_eq!(
            g.judge_named(&t("[::ffff:127.0.0.1]:80"), &[], true),
            Err(Reason::Loopback)
        );
        let exempt = nets(&["127.0.0.0/8", "::1/128"]);
        assert_eq!(g.judge_named(&t("localhost:80"), &exempt, false), Ok(()));
        assert_eq!(g.judge_named(&t("example.com:80"), &[], false), Ok(()));
    }

    #[test]
    fn mapped_networks_are_written_as_ipv4() {
        let net: IpNet = "::ffff:10.0.0.0/104".parse().expect("net");
        assert_eq!(canonical_net(net).to_string(), "10.0.0.0/8");
        let net: IpNet = "2001:db8::/32".parse().expect("net");
        assert_eq!(canonical_net(net), net);
    }
}
