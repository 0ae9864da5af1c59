//! Fuzzes destinations (`host:port`), Host headers and the URLs of backends
//! and upstreams (`postern_api::url`): a port that does not fit 16 bits is
//! refused, never dropped.
#![no_main]

use postern_api::url::parse_host_url;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    postern::fuzzing::authority(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(url) = parse_host_url(text, &["http", "https", "socks5"]) {
        assert!(!url.host.is_empty(), "{text:?} has no host");
        assert_eq!(url.host, url.host.to_ascii_lowercase(), "{text:?}");
    }
});
