//! Which addresses a fetch on a client's behalf may connect to: public
//! unicast only. Everything a gateway can reach but the internet cannot
//! (loopback, private and unique-local networks, link-local with the cloud
//! metadata endpoint 169.254.169.254, CGNAT, multicast, documentation and
//! other special-purpose ranges) is refused, and addresses that embed an
//! IPv4 address (mapped, NAT64, 6to4) are judged by the one they embed.
//!
//! Pure functions; the resolver applies them to every address a name has.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The special-purpose range `ip` falls in, named for error messages;
/// `None` when it is an ordinary public address.
pub fn forbidden_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_range(v4),
        IpAddr::V6(v6) => v6_range(v6),
    }
}

fn v4_range(ip: Ipv4Addr) -> Option<&'static str> {
    const RANGES: &[([u8; 4], u8, &str)] = &[
        ([0, 0, 0, 0], 8, "unspecified (this network)"),
        ([10, 0, 0, 0], 8, "private (RFC 1918)"),
        ([100, 64, 0, 0], 10, "shared address space (CGNAT)"),
        ([127, 0, 0, 0], 8, "loopback"),
        ([169, 254, 0, 0], 16, "link-local"),
        ([172, 16, 0, 0], 12, "private (RFC 1918)"),
        ([192, 0, 0, 0], 24, "IETF protocol assignments"),
        ([192, 0, 2, 0], 24, "documentation"),
        ([192, 88, 99, 0], 24, "6to4 relay anycast"),
        ([192, 168, 0, 0], 16, "private (RFC 1918)"),
        ([198, 18, 0, 0], 15, "benchmarking"),
        ([198, 51, 100, 0], 24, "documentation"),
        ([203, 0, 113, 0], 24, "documentation"),
        ([224, 0, 0, 0], 4, "multicast"),
        ([240, 0, 0, 0], 4, "reserved (and broadcast)"),
    ];
    let bits = u32::from(ip);
    RANGES
        .iter()
        .find(|(net, len, _)| in_prefix(bits, u32::from(Ipv4Addr::from(*net)), *len))
        .map(|(_, _, name)| *name)
}

fn in_prefix(bits: u32, net: u32, len: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    bits & mask == net & mask
}

fn v6_range(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = embedded_v4(ip) {
        return v4_range(v4);
    }
    const RANGES: &[(u128, u8, &str)] = &[
        (0, 96, "unspecified, loopback or IPv4-compatible"),
        (0x0064_ff9b_0001 << 80, 48, "local-use NAT64"),
        (0x0100 << 112, 64, "discard-only"),
        (
            0x2001 << 112,
            23,
            "IETF protocol assignments (Teredo, ORCHID, ...)",
        ),
        (0x2001_0db8 << 96, 32, "documentation"),
        (0x3fff << 112, 20, "documentation"),
        (0xfc00 << 112, 7, "unique local (ULA)"),
        (0xfe80 << 112, 10, "link-local"),
        (0xfec0 << 112, 10, "site-local"),
        (0xff00 << 112, 8, "multicast"),
    ];
    let bits = u128::from(ip);
    RANGES
        .iter()
        .find(|(net, len, _)| {
            let mask = u128::MAX.checked_shl(128 - u32::from(*len)).unwrap_or(0);
            bits & mask == net & mask
        })
        .map(|(_, _, name)| *name)
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`), well-known
/// NAT64 (`64:ff9b::a.b.c.d`) or 6to4 (`2002:aabb:ccdd::`) address, which
/// reach that IPv4 address and so are only as public as it is.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    let low32 = Ipv4Addr::from((bits & 0xffff_ffff) as u32);
    if bits >> 32 == 0xffff || bits >> 32 == 0x0064_ff9b_0000_0000_0000_0000 {
        return Some(low32);
    }
    if bits >> 112 == 0x2002 {
        return Some(Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(text: &str) -> Option<&'static str> {
        forbidden_range(text.parse().expect("test address"))
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.215.14",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "169.253.255.255",
            "192.169.0.1",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001:81c::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(range(ip), None, "{ip}");
        }
    }

    #[test]
    fn every_special_range_is_refused() {
        let table = [
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("::1", "unspecified, loopback or IPv4-compatible"),
            ("10.0.0.1", "private (RFC 1918)"),
            ("10.255.255.255", "private (RFC 1918)"),
            ("172.16.0.1", "private (RFC 1918)"),
            ("172.31.255.255", "private (RFC 1918)"),
            ("192.168.1.1", "private (RFC 1918)"),
            ("fc00::1", "unique local (ULA)"),
            ("fd12:3456::1", "unique local (ULA)"),
            ("169.254.169.254", "link-local"),
            ("169.254.0.1", "link-local"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("0.0.0.0", "unspecified (this network)"),
            ("0.1.2.3", "unspecified (this network)"),
            ("::", "unspecified, loopback or IPv4-compatible"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("ff02::1", "multicast"),
            ("100.64.0.1", "shared address space (CGNAT)"),
            ("100.127.255.255", "shared address space (CGNAT)"),
            ("192.0.2.1", "documentation"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.9", "documentation"),
            ("2001:db8::1", "documentation"),
            ("3fff::1", "documentation"),
            ("198.18.0.1", "benchmarking"),
            ("192.0.0.8", "IETF protocol assignments"),
            ("240.0.0.1", "reserved (and broadcast)"),
            ("255.255.255.255", "reserved (and broadcast)"),
            ("fec0::1", "site-local"),
            ("100::1", "discard-only"),
            ("2001::1", "IETF protocol assignments (Teredo, ORCHID, ...)"),
            ("64:ff9b:1::a", "local-use NAT64"),
        ];
        for (ip, want) in table {
            assert_eq!(range(ip), Some(want), "{ip}");
        }
    }

    #[test]
    fn embedded_ipv4_is_judged_by_what_it_reaches() {
        assert_eq!(range("::ffff:127.0.0.1"), Some("loopback"));
        assert_eq!(range("::ffff:169.254.169.254"), Some("link-local"));
        assert_eq!(range("64:ff9b::10.0.0.1"), Some("private (RFC 1918)"));
        assert_eq!(range("64:ff9b::a9fe:a9fe"), Some("link-local"));
        assert_eq!(range("2002:7f00:1::"), Some("loopback"));
        assert_eq!(range("2002:c0a8:101::1"), Some("private (RFC 1918)"));
        assert_eq!(
            range("::127.0.0.1"),
            Some("unspecified, loopback or IPv4-compatible")
        );
    }
}
