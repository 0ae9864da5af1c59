//! The shared secret a data plane presents in its hello.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The sync token. Its `Debug` never shows the value, so it cannot leak
/// through a logged config.
#[derive(Clone)]
pub struct SyncToken(String);

impl SyncToken {
    /// Trims surrounding whitespace (a file mounted from a Secret often ends
    /// in a newline); `None` when nothing is left.
    pub fn new(raw: &str) -> Option<Self> {
        let token = raw.trim();
        (!token.is_empty()).then(|| SyncToken(token.to_string()))
    }

    /// Compares in constant time. Both sides are hashed first so the
    /// comparison does not even reveal the token's length.
    pub fn matches(&self, presented: &str) -> bool {
        let expected = Sha256::digest(self.0.as_bytes());
        let presented = Sha256::digest(presented.as_bytes());
        expected.ct_eq(&presented).into()
    }
}

impl fmt::Debug for SyncToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SyncToken(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_the_same_token() {
        let token = SyncToken::new("s3cret\n").expect("token");
        assert!(token.matches("s3cret"));
        assert!(!token.matches("s3cre"));
        assert!(!token.matches("s3cret "));
        assert!(!token.matches(""));
    }

    #[test]
    fn blank_token_is_refused_and_debug_hides_it() {
        assert!(SyncToken::new(" \n").is_none());
        let token = SyncToken::new("hunter2").expect("token");
        assert!(!format!("{token:?}").contains("hunter2"));
    }
}
