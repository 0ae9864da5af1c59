//! Properties of `parse_host_url`: the port as written is the port read.

use postern_api::url::parse_host_url;
use proptest::prelude::*;

const SCHEMES: &[&str] = &["http", "https", "socks5"];

/// Hosts as backends and upstreams are written: names, IPv4, bracketed IPv6.
fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,10}(\\.[a-z][a-z0-9-]{0,10}){0,3}",
        any::<[u8; 4]>().prop_map(|o| std::net::Ipv4Addr::from(o).to_string()),
        any::<[u16; 8]>().prop_map(|s| format!("[{}]", std::net::Ipv6Addr::from(s))),
    ]
}

fn userinfo() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[a-z]{1,6}:[a-z0-9%]{0,6}@"]
}

proptest! {
    /// A port beyond 16 bits is refused, never read as "no port" (which
    /// would send traffic to the scheme's default port).
    #[test]
    fn ports_beyond_16_bits_are_refused(
        scheme in prop::sample::select(SCHEMES),
        info in userinfo(),
        host in host(),
        port in 65_536u64..=u64::from(u32::MAX) * 16,
    ) {
        let raw = format!("{scheme}://{info}{host}:{port}");
        prop_assert!(parse_host_url(&raw, SCHEMES).is_err(), "{raw} was accepted");
    }

    /// A port that fits is read back exactly, with or without a trailing /.
    #[test]
    fn ports_that_fit_are_kept(
        scheme in prop::sample::select(SCHEMES),
        info in userinfo(),
        host in host(),
        port in 1u16..,
        slash in any::<bool>(),
    ) {
        let raw = format!("{scheme}://{info}{host}:{port}{}", if slash { "/" } else { "" });
        let url = parse_host_url(&raw, SCHEMES).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(url.port, Some(port), "{}", raw);
        prop_assert_eq!(url.scheme, scheme);
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        prop_assert_eq!(url.host, bare.to_ascii_lowercase());
    }

    /// No port written, none read.
    #[test]
    fn no_port_is_none(scheme in prop::sample::select(SCHEMES), host in host()) {
        let raw = format!("{scheme}://{host}");
        let url = parse_host_url(&raw, SCHEMES).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(url.port, None);
    }
}
