//! The version of a snapshot's wire form, checked on the bytes as they came.
//!
//! The operator hashes the snapshot serialised with an empty version and
//! then writes the version into those bytes ([`Snapshot::seal_to_json`]);
//! a data plane takes the version back out of the bytes it received and
//! hashes what is left, so it never serialises a large snapshot again just
//! to check it. Bytes that do not hash to their version are refused.

use sha2::{Digest, Sha256};

use crate::SnapshotError;

/// The version field as `serde_json` writes it, up to the value's first byte.
pub(crate) const VERSION_FIELD: &[u8] = br#""version":""#;

/// A snapshot version: the first 32 hex digits of the SHA-256 of `parts`
/// written one after the other (the unsealed wire form, possibly in pieces
/// around its empty version).
pub(crate) fn version_of(parts: &[&[u8]]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update(part);
    }
    let mut hex = hex::encode(hash.finalize());
    hex.truncate(32);
    hex
}

/// Where `needle` first occurs in `haystack`.
pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Checks that `json`, a sealed snapshot's wire form whose decoded version
/// is `version`, hashes to it. The first version field in the bytes must be
/// the one that carries `version` (the compiler writes `schema` and
/// `version` first); anything else is refused as a mismatch.
pub fn check_wire_version(json: &[u8], version: &str) -> Result<(), SnapshotError> {
    let actual = unsealed_hash(json, version).unwrap_or_default();
    if actual == version {
        Ok(())
    } else {
        Err(SnapshotError::Version {
            claimed: version.to_string(),
            actual,
        })
    }
}

/// The hash of `json` with `version` taken out of its first version field,
/// or `None` when that field does not hold exactly `version`.
fn unsealed_hash(json: &[u8], version: &str) -> Option<String> {
    let value = find(json, VERSION_FIELD)? + VERSION_FIELD.len();
    let (head, rest) = json.split_at(value);
    let rest = rest.strip_prefix(version.as_bytes())?;
    // The value must end here: a longer string holding `version` as its
    // prefix is another version.
    if !rest.starts_with(b"\"") {
        return None;
    }
    Some(version_of(&[head, rest]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Site, Snapshot};

    fn sealed() -> (Snapshot, Vec<u8>) {
        Snapshot {
            sites: vec![Site::new("a/a", &["a.example.com"], "http://127.0.0.1:1")],
            ..Snapshot::default()
        }
        .seal_to_json()
    }

    #[test]
    fn a_sealed_wire_form_hashes_to_its_version() {
        let (snap, json) = sealed();
        assert_eq!(check_wire_version(&json, &snap.version), Ok(()));
    }

    #[test]
    fn tampered_bytes_are_refused() {
        let (snap, json) = sealed();
        let text = String::from_utf8(json).expect("utf8");
        let tampered = text.replace("a.example.com", "b.example.com");
        assert!(matches!(
            check_wire_version(tampered.as_bytes(), &snap.version),
            Err(SnapshotError::Version { .. })
        ));
    }

    #[test]
    fn a_version_the_bytes_do_not_carry_is_refused() {
        let (snap, json) = sealed();
        let other = "0123456789abcdef0123456789abcdef";
        assert!(check_wire_version(&json, other).is_err());
        // A prefix of the real version is not the version.
        assert!(check_wire_version(&json, &snap.version[..31]).is_err());
        assert!(check_wire_version(b"{\"schema\":3}", &snap.version).is_err());
    }
}
