//! Request path normalisation, done once before routing; the normalised path is the one matched
//! and the one forwarded, so no spelling of a path can match one rule and reach another handler.
//!
//! - Percent-escapes are decoded once per segment and re-encoded canonically, so `%2e%2e`, `%41`
//!   and `A` are each one thing.
//! - `.` segments are dropped and `..` pops a segment; a `..` above the root is refused.
//! - Empty segments (`//`, a trailing `/`) are dropped.
//! - Refused outright (400): an encoded `/` or `\` (`%2f`, `%5c`), a raw `\`, a `;` (matrix
//!   parameters that servlet containers strip after the gateway has matched), NUL and other
//!   controls, invalid UTF-8 after decoding, a path not starting with `/`, over-long paths.

use std::borrow::Cow;

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

/// Longest path accepted, in bytes.
pub const MAX_PATH_BYTES: usize = 8192;
/// Most segments accepted.
pub const MAX_SEGMENTS: usize = 128;

/// Why a path was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path does not start with `/`")]
    NotAbsolute,
    #[error("the path is too long")]
    TooLong,
    #[error("the path contains an encoded `/` or `\\`")]
    EncodedSeparator,
    #[error("the path contains a `\\`")]
    Backslash,
    #[error("the path contains a `;`")]
    Semicolon,
    #[error("the path contains a control character")]
    Control,
    #[error("the path is not valid UTF-8")]
    NotUtf8,
    #[error("the path climbs above the root")]
    AboveRoot,
}

/// What is escaped when a segment is written back: everything but RFC 3986 `pchar`s, and `%`.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b';')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Normalises the path part of a request target (no query). Borrows when the path is
/// already canonical, the common case.
pub fn normalize(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if raw.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong);
    }
    // Fast path: already canonical (the common case on the hot path).
    if is_canonical(raw) {
        return Ok(Cow::Borrowed(raw));
    }
    rewrite(raw).map(Cow::Owned)
}

/// The full normalisation, segment by segment.
fn rewrite(raw: &str) -> Result<String, PathError> {
    let mut out: Vec<String> = Vec::new();
    for seg in raw.split('/') {
        if seg.contains('\\') {
            return Err(PathError::Backslash);
        }
        if seg.contains(';') {
            return Err(PathError::Semicolon);
        }
        let decoded = percent_decode_str(seg)
            .decode_utf8()
            .map_err(|_| PathError::NotUtf8)?;
        if decoded.contains(['/', '\\']) {
            return Err(PathError::EncodedSeparator);
        }
        if decoded.contains(';') {
            return Err(PathError::Semicolon);
        }
        if decoded.chars().any(char::is_control) {
            return Err(PathError::Control);
        }
        match &*decoded {
            "" | "." => {}
            ".." => {
                out.pop().ok_or(PathError::AboveRoot)?;
            }
            s => {
                if out.len() >= MAX_SEGMENTS {
                    return Err(PathError::TooLong);
                }
                out.push(utf8_percent_encode(s, SEGMENT).to_string());
            }
        }
    }
    let mut path = String::with_capacity(raw.len());
    for s in &out {
        path.push('/');
        path.push_str(s);
    }
    if path.is_empty() {
        path.push('/');
    }
    Ok(path)
}

/// The bytes a canonical segment is made of: RFC 3986 unreserved characters and the
/// sub-delimiters, `:` and `@` that are written back unescaped.
const PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric();
        c += 1;
    }
    let extra = b"-._~!$&'()*+,=:@";
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
};

/// True when normalising would change nothing: plain characters, no empty, `.` or `..`
/// segments, no trailing slash. One pass over the bytes, with a table per byte.
fn is_canonical(raw: &str) -> bool {
    if raw == "/" {
        return true;
    }
    // The segment being read: its length, and how many of its bytes are dots.
    let (mut len, mut dots) = (0u32, 0u32);
    // A segment that is empty, `.` or `..`.
    let void = |len: u32, dots: u32| len == 0 || (dots == len && len <= 2);
    for &b in raw.as_bytes().iter().skip(1) {
        if b == b'/' {
            if void(len, dots) {
                return false;
            }
            (len, dots) = (0, 0);
        } else if PLAIN[usize::from(b)] {
            len += 1;
            dots += u32::from(b == b'.');
        } else {
            return false;
        }
    }
    !void(len, dots)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn canonical_paths_pass_unchanged() {
        for p in ["/", "/v2/orders", "/v2/orders/ord_abc123", "/a/b~c/d-e_f.g"] {
            assert_eq!(normalize(p).as_deref(), Ok(p));
        }
    }

    #[test]
    fn tricks_collapse_to_one_spelling() {
        let cases = [
            ("/v2//orders", "/v2/orders"),
            ("/v2/orders/", "/v2/orders"),
            ("/v2/./orders", "/v2/orders"),
            ("/v2/admin/../orders", "/v2/orders"),
            ("/v2/admin/%2e%2e/orders", "/v2/orders"),
            ("/v2/admin/%2E%2E/orders", "/v2/orders"),
            ("/v2/%6frders", "/v2/orders"),
            ("/v2/orders/%252e%252e", "/v2/orders/%252e%252e"),
            ("/v2/caf%C3%A9", "/v2/caf%C3%A9"),
            ("/v2/a%20b", "/v2/a%20b"),
            ("/v2/a b", "/v2/a%20b"),
            ("//", "/"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        let cases = [
            ("v2/orders", PathError::NotAbsolute),
            ("/v2/orders%2f..%2fadmin", PathError::EncodedSeparator),
            ("/v2/orders%5cadmin", PathError::EncodedSeparator),
            ("/v2\\admin", PathError::Backslash),
            ("/v2/admin;jsessionid=1", PathError::Semicolon),
            ("/v2/admin%3bx", PathError::Semicolon),
            ("/v2/a%00b", PathError::Control),
            ("/v2/%ff", PathError::NotUtf8),
            ("/..", PathError::AboveRoot),
            ("/v2/../../etc/passwd", PathError::AboveRoot),
        ];
        for (raw, err) in cases {
            assert_eq!(normalize(raw), Err(err), "{raw}");
        }
        assert_eq!(
            normalize(&format!("/{}", "a".repeat(MAX_PATH_BYTES))),
            Err(PathError::TooLong)
        );
    }

    proptest! {
        /// Normalising twice changes nothing, and a normalised path never holds a dot segment,
        /// an empty segment or a separator in disguise.
        #[test]
        fn normalize_is_idempotent_and_clean(raw in "/[a-zA-Z0-9%./;\\\\_~-]{0,40}") {
            if let Ok(once) = normalize(&raw) {
                let twice = normalize(&once);
                prop_assert_eq!(twice.as_deref(), Ok(&*once));
                if once != "/" {
                    for seg in once[1..].split('/') {
                        prop_assert!(!seg.is_empty() && seg != "." && seg != "..");
                        let lower = seg.to_ascii_lowercase();
                        prop_assert!(!lower.contains("%2f") && !lower.contains("%5c") && !seg.contains('\\'));
                    }
                }
            }
        }

        /// What the one-pass check calls canonical, the full rewrite gives back unchanged;
        /// without escapes (which it leaves to the rewrite), the converse holds too.
        #[test]
        fn the_fast_check_agrees_with_the_rewrite(
            raw in "/[a-zA-Z0-9%./;:@!$&'()*+,= ~_\\-]{0,30}"
        ) {
            let unchanged = rewrite(&raw).is_ok_and(|p| p == raw);
            prop_assert!(!is_canonical(&raw) || unchanged, "{}", raw);
            if !raw.contains('%') {
                prop_assert_eq!(is_canonical(&raw), unchanged, "{}", raw);
            }
        }
    }
}
