//! The names of the objects this API writes: one per user, the same in
//! both modes, unique per user name and always a valid Kubernetes name.

use sha2::{Digest, Sha256};

/// The prefix of every object (and, in standalone mode, file) this API writes.
pub const OBJECT_PREFIX: &str = "upstreamgate-";
/// Suffix of the Secret holding upstream credentials that came inline.
pub const CREDENTIALS_SUFFIX: &str = "-upstream";

/// The Kubernetes object name for `user`: `upstreamgate-<user>` when the
/// user name is already a valid lowercase name; otherwise a hash of the
/// user name is appended, so `Bob` and `bob` stay apart.
pub fn object_name(user: &str) -> String {
    let clean: String = user
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let clean = clean.trim_matches('-');
    if clean == user {
        format!("{OBJECT_PREFIX}{clean}")
    } else {
        let hash = hex::encode(Sha256::digest(user.as_bytes()));
        format!("{OBJECT_PREFIX}{clean}-{}", &hash[..8])
    }
}

/// Name of the upstream credentials Secret beside the object `name`.
pub fn credentials_name(name: &str) -> String {
    format!("{name}{CREDENTIALS_SUFFIX}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_unique_and_valid() {
        assert_eq!(object_name("alice"), "upstreamgate-alice");
        assert_ne!(object_name("Bob"), object_name("bob"));
        assert_ne!(object_name("a.b"), object_name("a-b"));
        assert!(object_name("Bob").starts_with("upstreamgate-bob-"));
        let name = object_name("~");
        assert!(
            name.starts_with("upstreamgate--") && name.len() == 22,
            "{name}"
        );
        let longest = credentials_name(&object_name(&"X".repeat(64)));
        assert!(longest.len() <= 253, "{longest}");
    }

    #[test]
    fn the_hash_is_the_hex_sha256_of_the_user_name() {
        // Names written before this crate existed must keep matching.
        assert_eq!(object_name("Bob"), "upstreamgate-bob-cd9fb1e1");
    }
}
