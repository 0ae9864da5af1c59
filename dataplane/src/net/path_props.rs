//! Properties of [`normalise`]: what its canonical form promises, for any
//! spelling a client may send (escapes, dot segments, runs of slashes,
//! literal non-ASCII).

use proptest::prelude::*;

use super::path::{PathError, normalise};
use crate::fuzzing::assert_canonical;

/// Path pieces that exercise every rule, joined in any order.
fn raw_path() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_string()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just("%2e".to_string()),
        Just("%2E%2e".to_string()),
        Just("%2f".to_string()),
        Just("%5C".to_string()),
        Just("\\".to_string()),
        Just("%00".to_string()),
        Just("é".to_string()),
        "[a-zA-Z0-9._~-]{1,4}",
        "%[0-9a-fA-F]{2}",
        "%[0-9a-zA-Z]{0,2}",
    ];
    prop::collection::vec(piece, 0..12).prop_map(|p| format!("/{}", p.concat()))
}

/// Hex digits of `%XX` escapes, decoded.
fn decoded(path: &str) -> Vec<u8> {
    let b = path.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Normalising twice gives what normalising once gave.
    #[test]
    fn normalising_is_idempotent(raw in raw_path()) {
        if let Ok(once) = normalise(&raw) {
            let twice = normalise(&once);
            prop_assert_eq!(twice.as_deref(), Ok(&*once), "{}", raw);
        }
    }

    /// An accepted path is absolute, has no empty or dot segment (so it
    /// never climbs above the root) and hides no separator in an escape.
    #[test]
    fn accepted_paths_are_canonical(raw in raw_path()) {
        if let Ok(path) = normalise(&raw) {
            assert_canonical(&path);
            let bytes = decoded(&path);
            prop_assert!(!bytes.contains(&b'\\') && !bytes.contains(&0), "{}", path);
            // Decoding adds no separator: the segments are the ones routed.
            let slashes = |b: &[u8]| b.iter().filter(|&&c| c == b'/').count();
            prop_assert_eq!(slashes(&bytes), slashes(path.as_bytes()), "{}", path);
        }
    }

    /// Any encoded separator or NUL is refused, wherever it is.
    #[test]
    fn encoded_separators_are_refused(
        before in raw_path(),
        sep in prop::sample::select(&["%2f", "%2F", "%5c", "%5C", "\\"][..]),
        after in "[a-z/]{0,6}",
    ) {
        let raw = format!("{before}{sep}{after}");
        prop_assert!(normalise(&raw).is_err(), "{} was accepted", raw);
    }

    /// Dot segments never leave the root: `/..` as often as you like.
    #[test]
    fn climbing_stops_at_the_root(ups in 1usize..8, rest in "[a-z]{1,5}") {
        let raw = format!("{}{rest}", "/..".repeat(ups) + "/");
        let got = normalise(&raw).map(|p| p.into_owned());
        prop_assert_eq!(got, Ok(format!("/{rest}")));
    }

    /// A path that does not start with `/` (and is not `*`) is refused.
    #[test]
    fn relative_paths_are_refused(raw in "[^/*][a-z/]{0,8}") {
        prop_assert_eq!(normalise(&raw), Err(PathError::NotAbsolute));
    }
}
