//! Proxy authentication: `Basic` credentials (from `Proxy-Authorization` or
//! a SOCKS5 RFC 1929 sub-negotiation) checked against the snapshot.
//!
//! The snapshot holds a salted SHA-256 per user, never the password. A check
//! costs one SHA-256 of the presented password and a constant-time
//! comparison (`subtle`); an unknown user costs the same, so timing tells
//! nothing about which users exist. The HTTP inbound checks once per
//! connection and re-checks only when the header changes, so keep-alive
//! requests cost a byte comparison. The password is never logged or kept.

use std::sync::Arc;

use base64::Engine as _;
use postern_snapshot::salted_sha256;
use subtle::ConstantTimeEq;

use super::errors::ForwardError;
use super::table::{Table, UserEntry};

/// The one answer for a wrong password and an unknown user.
const WRONG: ForwardError = ForwardError::Auth("wrong user or password");
/// Hashed for unknown users so that they cost as much as known ones.
const DUMMY_SALT: &str = "postern-no-such-user";

/// A user name and password as presented.
pub struct Presented {
    pub user: String,
    pub password: Vec<u8>,
}

/// Decodes a `Proxy-Authorization` value (`Basic base64(user:password)`).
pub fn parse_basic(value: Option<&[u8]>) -> Result<Presented, ForwardError> {
    let value = value.ok_or(ForwardError::Auth("no credentials"))?;
    let malformed = ForwardError::Auth("malformed credentials");
    let text = std::str::from_utf8(value).map_err(|_| malformed.clone())?;
    let (scheme, encoded) = text.trim().split_once(' ').ok_or(malformed.clone())?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(ForwardError::Auth("only Basic credentials are accepted"));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| malformed.clone())?;
    let colon = decoded
        .iter()
        .position(|&b| b == b':')
        .ok_or(malformed.clone())?;
    let user = std::str::from_utf8(&decoded[..colon]).map_err(|_| malformed)?;
    Ok(Presented {
        user: user.to_string(),
        password: decoded[colon + 1..].to_vec(),
    })
}

/// The user these credentials prove, or a 407-kind error.
pub fn authenticate(table: &Table, presented: &Presented) -> Result<Arc<UserEntry>, ForwardError> {
    let Some(entry) = table.get(&presented.user) else {
        let _ = salted_sha256(DUMMY_SALT, &presented.password);
        return Err(WRONG);
    };
    let hash = salted_sha256(&entry.password.salt, &presented.password);
    if bool::from(hash.as_bytes().ct_eq(entry.password.sha256.as_bytes())) {
        Ok(entry.clone())
    } else {
        Err(WRONG)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_snapshot::{DestinationRules, PasswordHash, ProxyUser, Snapshot, Upstream};

    fn table() -> Table {
        let snap = Snapshot {
            users: vec![ProxyUser {
                id: "default/alice".into(),
                user: "alice".into(),
                password: PasswordHash::new("salt", b"s3cret:with:colons"),
                upstream: Upstream::Direct,
                destinations: DestinationRules::default(),
                allow_internal_networks: Vec::new(),
                max_connections: None,
                revision: "r1".into(),
            }],
            ..Snapshot::default()
        };
        Table::build(&snap)
    }

    fn basic(s: &str) -> Vec<u8> {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
        .into_bytes()
    }

    #[test]
    fn right_password_passes() {
        let p = parse_basic(Some(&basic("alice:s3cret:with:colons"))).expect("parses");
        assert_eq!(authenticate(&table(), &p).expect("ok").user, "alice");
    }

    #[test]
    fn every_failure_is_an_auth_error() {
        let t = table();
        assert_eq!(
            parse_basic(None).err(),
            Some(ForwardError::Auth("no credentials"))
        );
        for bad in [
            &b"Basic !!!"[..],
            b"Bearer abc",
            b"Basic",
            &basic("no-colon"),
        ] {
            assert!(matches!(parse_basic(Some(bad)), Err(ForwardError::Auth(_))));
        }
        for creds in ["alice:wrong", "bob:s3cret:with:colons", "alice:"] {
            let p = parse_basic(Some(&basic(creds))).expect("parses");
            assert_eq!(authenticate(&t, &p).err(), Some(WRONG), "{creds}");
        }
    }
}
