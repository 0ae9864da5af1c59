//! The one rule for a forward-proxy user name (`UserUpstream.spec.user`).
//!
//! The CRD schema declares it from these constants, compile checks it again
//! for manifests no API server saw, and the UpstreamGate-compatible API
//! refuses a request with [`is_valid`]: a name is accepted everywhere or
//! nowhere. The alphabet keeps names safe in `Proxy-Authorization`, in a URL
//! path (`DELETE /upstream/{user}`) and in log lines.

/// The schema's pattern; the length is checked by [`MIN_LEN`] and [`MAX_LEN`].
pub const PATTERN: &str = r"^[A-Za-z0-9._~-]+$";
/// Shortest user name, in bytes (the alphabet is ASCII).
pub const MIN_LEN: usize = 1;
/// Longest user name, in bytes.
pub const MAX_LEN: usize = 64;
/// The rule in words, for error messages.
pub const RULE: &str = "1 to 64 of A-Z a-z 0-9 . _ ~ -";

/// Whether `user` is a valid proxy user name.
pub fn is_valid(user: &str) -> bool {
    (MIN_LEN..=MAX_LEN).contains(&user.len())
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alphabet_and_the_length() {
        assert!(is_valid("A.b_c~d-1"));
        assert!(is_valid(&"x".repeat(MAX_LEN)));
        for bad in ["", "a b", "a:b", "a/b", "é", "a\n"] {
            assert!(!is_valid(bad), "{bad:?}");
        }
        assert!(!is_valid(&"x".repeat(MAX_LEN + 1)));
    }
}
