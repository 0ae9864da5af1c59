//! Request paths in one canonical form, computed once before routing and
//! authentication, so that a Route's match (and the auth it carries) sees
//! the path the backend will act on, however the client spelled it.
//!
//! The form (RFC 3986 §6.2.2, as Envoy's `normalize_path` +
//! `merge_slashes`): percent-encoded unreserved characters decoded, other
//! percent-encodings kept with upper-case hex, runs of `/` merged, and dot
//! segments removed (§5.2.4). Ambiguous paths are refused, never guessed
//! at: an encoded `/` or `\`, a literal `\`, NUL, or a path whose decoded
//! form is not UTF-8. Matching stays case-sensitive.

use std::borrow::Cow;

/// Why a path is refused (400). The text is [`PathError::as_str`], which
/// the 400's body quotes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.as_str())]
pub enum PathError {
    NotAbsolute,
    EncodedSeparator,
    Nul,
    BadEscape,
    NotUtf8,
}

impl PathError {
    /// The reason a 400 gives.
    pub fn as_str(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "the path does not start with /",
            PathError::EncodedSeparator => "ambiguous path: an encoded / or \\, or a backslash",
            PathError::Nul => "ambiguous path: a NUL byte",
            PathError::BadEscape => "malformed percent-encoding in the path",
            PathError::NotUtf8 => "the decoded path is not UTF-8",
        }
    }
}

/// The canonical form of `raw` (a path without its query); borrowed when
/// `raw` already is canonical, as almost every path is.
pub fn normalise(raw: &str) -> Result<Cow<'_, str>, PathError> {
    // `OPTIONS *` names the server, not a path.
    if raw == "*" {
        return Ok(Cow::Borrowed(raw));
    }
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_canonical(raw) {
        return Ok(Cow::Borrowed(raw));
    }
    let decoded = decode_unreserved(raw)?;
    Ok(Cow::Owned(remove_dot_segments(&merge_slashes(&decoded))))
}

/// True when nothing in `raw` could change: no escape, backslash or NUL,
/// no empty segment and no segment starting with a dot.
fn is_canonical(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    !bytes.iter().any(|b| matches!(b, b'%' | b'\\' | 0))
        && !bytes
            .windows(2)
            .any(|w| w[0] == b'/' && matches!(w[1], b'/' | b'.'))
}

/// Whether a byte is RFC 3986 `unreserved`.
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes unreserved escapes, upper-cases the others, refuses what is
/// ambiguous, and checks the fully decoded form is UTF-8. Works on bytes:
/// a literal non-ASCII character is copied as its UTF-8 bytes, never
/// re-encoded one `char` per byte.
fn decode_unreserved(raw: &str) -> Result<String, PathError> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut full = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'\\' => return Err(PathError::EncodedSeparator),
            0 => return Err(PathError::Nul),
            b'%' => {
                let (hi, lo) = match (bytes.get(i + 1), bytes.get(i + 2)) {
                    (Some(&h), Some(&l)) => (hex(h), hex(l)),
                    _ => (None, None),
                };
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(PathError::BadEscape);
                };
                let value = hi << 4 | lo;
                match value {
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    0 => return Err(PathError::Nul),
                    v if unreserved(v) => out.push(v),
                    v => out.extend_from_slice(&[
                        b'%',
                        HEX[usize::from(v >> 4)],
                        HEX[usize::from(v & 15)],
                    ]),
                }
                full.push(value);
                i += 3;
                continue;
            }
            _ => {
                out.push(b);
                full.push(b);
            }
        }
        i += 1;
    }
    std::str::from_utf8(&full).map_err(|_| PathError::NotUtf8)?;
    // UTF-8: `raw` was, and only ASCII escapes were rewritten.
    String::from_utf8(out).map_err(|_| PathError::NotUtf8)
}

fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut last_slash = false;
    for c in path.chars() {
        if c == '/' && last_slash {
            continue;
        }
        last_slash = c == '/';
        out.push(c);
    }
    out
}

/// RFC 3986 §5.2.4 on an absolute path whose slashes are already merged.
fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let mut parts = path.split('/').skip(1).peekable();
    let mut trailing = false;
    while let Some(segment) = parts.next() {
        let last = parts.peek().is_none();
        match segment {
            "." => trailing = last,
            ".." => {
                segments.pop();
                trailing = last;
            }
            s => {
                segments.push(s);
                trailing = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing || out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_path_meet() {
        for raw in [
            "/admin/",
            "/x/../admin/",
            "/./admin/",
            "//admin//",
            "/%61dmin/",
            "/%61%64%6D%69%6E/",
            "/admin/x/..",
            "/admin/.",
            "/x/%2e%2e/admin/",
            "/x/.%2E/admin/",
            "/../admin/",
            "/a/b/../../admin/",
        ] {
            assert_eq!(normalise(raw).as_deref(), Ok("/admin/"), "{raw}");
        }
    }

    #[test]
    fn what_is_not_unreserved_stays_encoded_in_upper_case() {
        assert_eq!(normalise("/a%20b").as_deref(), Ok("/a%20b"));
        assert_eq!(normalise("/a%3fb").as_deref(), Ok("/a%3Fb"));
        assert_eq!(normalise("/caf%c3%a9").as_deref(), Ok("/caf%C3%A9"));
        assert_eq!(normalise("/Admin").as_deref(), Ok("/Admin"), "case is kept");
        assert_eq!(normalise("/").as_deref(), Ok("/"));
        assert_eq!(normalise("/a/b").as_deref(), Ok("/a/b"));
        assert_eq!(normalise("/a/b/").as_deref(), Ok("/a/b/"));
        assert_eq!(normalise("/..").as_deref(), Ok("/"));
    }

    /// Caught by the path_normalise fuzz target's idempotence check: a
    /// literal non-ASCII character next to an escape came out as one
    /// `char` per UTF-8 byte (`/café/%20` → `/cafÃ©/%20`), and again on
    /// every pass.
    #[test]
    fn literal_non_ascii_is_kept_as_written() {
        assert_eq!(normalise("/caf\u{e9}/%20").as_deref(), Ok("/caf\u{e9}/%20"));
        assert_eq!(
            normalise("//\u{1f600}/./%7e").as_deref(),
            Ok("/\u{1f600}/~")
        );
    }

    #[test]
    fn canonical_paths_are_borrowed() {
        for raw in [
            "/",
            "/a/b",
            "/a/b/",
            "/a.b/c-d_e~f",
            "/v1/users",
            "/a/b.",
            "/a./b",
        ] {
            assert!(
                matches!(normalise(raw), Ok(Cow::Borrowed(p)) if p == raw),
                "{raw}"
            );
        }
        for raw in ["/a//b", "/a/./b", "/.hidden", "/a%20b"] {
            assert!(matches!(normalise(raw), Ok(Cow::Owned(_))), "{raw}");
        }
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for (raw, why) in [
            ("/a%2fb", PathError::EncodedSeparator),
            ("/a%2Fadmin", PathError::EncodedSeparator),
            ("/a%5cb", PathError::EncodedSeparator),
            ("/a\\b", PathError::EncodedSeparator),
            ("/a%00b", PathError::Nul),
            ("/a%zz", PathError::BadEscape),
            ("/a%4", PathError::BadEscape),
            ("/a%ff", PathError::NotUtf8),
            ("/a%c3", PathError::NotUtf8),
            ("admin", PathError::NotAbsolute),
        ] {
            assert_eq!(normalise(raw), Err(why), "{raw}");
        }
    }
}
