//! Durations as Gateway API writes them: `30s`, `1m30s`, `250ms`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A duration such as `30s`, `1m30s` or `250ms` (units h, m, s, ms).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Duration(#[schemars(regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))] pub String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {0:?}: expected numbers with units h, m, s or ms, such as 1m30s")]
pub struct DurationError(pub String);

impl Duration {
    pub fn parse(&self) -> Result<std::time::Duration, DurationError> {
        let err = || DurationError(self.0.clone());
        let mut total = std::time::Duration::ZERO;
        let mut rest = self.0.as_str();
        if rest.is_empty() {
            return Err(err());
        }
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 || digits > 5 {
                return Err(err());
            }
            let n: u64 = rest[..digits].parse().map_err(|_| err())?;
            rest = &rest[digits..];
            let (unit, len) = if rest.starts_with("ms") {
                (std::time::Duration::from_millis(1), 2)
            } else {
                match rest.as_bytes().first() {
                    Some(b'h') => (std::time::Duration::from_secs(3600), 1),
                    Some(b'm') => (std::time::Duration::from_secs(60), 1),
                    Some(b's') => (std::time::Duration::from_secs(1), 1),
                    _ => return Err(err()),
                }
            };
            rest = &rest[len..];
            total += unit * u32::try_from(n).map_err(|_| err())?;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Result<std::time::Duration, DurationError> {
        Duration(s.to_string()).parse()
    }

    #[test]
    fn parses_compound_durations() {
        assert_eq!(d("1m30s"), Ok(std::time::Duration::from_secs(90)));
        assert_eq!(d("250ms"), Ok(std::time::Duration::from_millis(250)));
        assert_eq!(d("1h"), Ok(std::time::Duration::from_secs(3600)));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "5", "s", "1x", "1m-3s", "123456s"] {
            assert!(d(bad).is_err(), "{bad} should be rejected");
        }
    }
}
