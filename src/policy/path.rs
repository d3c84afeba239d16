//! Request path normalization.
//!
//! The route table matches on the normalized path and the upstream receives exactly that same
//! path, so the gateway and the upstream can never disagree about which resource was asked for.
//! Normalization follows RFC 3986 §6.2.2: percent-encoded unreserved characters are decoded
//! (§6.2.2.2), the hex digits of every other percent-encoding are uppercased (§6.2.2.1) and dot
//! segments are removed (§5.2.4, §6.2.2.3); repeated slashes are collapsed as well. An encoded
//! slash, a backslash (raw or encoded) and a NUL (raw or encoded) cannot be normalized without
//! guessing what the upstream makes of them, so they are refused (400 at the gateway).
//!
//! `;` is not special in general (`/a;b` passes), but a segment that starts with `.;` or `..;`
//! (or `.%3B`, `..%3B`) is refused: Tomcat and Spring strip path parameters and then treat
//! `..;` as `..`, so `/public/..;/admin` would reach `/admin` behind a `/public` rule (the
//! well-known `..;/` bypass).
//!
//! This runs on every request: a path that is already normal comes back borrowed, unallocated.

use std::borrow::Cow;

/// Why a request path was refused. Each one is answered 400 by the gateway.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// `%2F` or `%2f`: a slash the upstream may or may not treat as a separator.
    #[error("the path contains an encoded slash")]
    EncodedSlash,
    /// A raw `\` or `%5C`: some servers read it as a separator.
    #[error("the path contains a backslash")]
    Backslash,
    /// A raw or encoded NUL byte.
    #[error("the path contains a NUL byte")]
    Nul,
    /// Not an origin-form path (RFC 9112 §3.2.1), or a malformed percent-encoding.
    #[error("the path is not a valid absolute path")]
    Invalid,
}

/// Normalizes a request path (`uri.path()`: no query, no fragment) once. Routes match on the
/// result and the upstream receives exactly it.
///
/// Returns `Cow::Borrowed(raw_path)` when the path is already normal, which is the common case.
/// The result is a fixed point: normalizing it again returns it unchanged (and borrowed).
pub fn normalize_path(raw_path: &str) -> Result<Cow<'_, str>, PathError> {
    if !raw_path.starts_with('/') {
        // Also refuses the asterisk-form `*` (RFC 9112 §3.2.4) and the empty string.
        return Err(PathError::Invalid);
    }
    let decoded = normalize_percent_encoding(raw_path)?;
    if decoded.split('/').any(is_dot_segment_with_params) {
        return Err(PathError::Invalid);
    }
    Ok(match remove_dot_segments(&decoded) {
        Some(resolved) => Cow::Owned(resolved),
        None => decoded,
    })
}

/// `.;x`, `..;x`, `.%3Bx`, `..%3Bx`: a dot segment in disguise for servers that strip
/// path parameters. (Escapes are uppercased already.)
fn is_dot_segment_with_params(segment: &str) -> bool {
    let rest = segment
        .strip_prefix("..")
        .or_else(|| segment.strip_prefix('.'));
    rest.is_some_and(|r| r.starts_with(';') || r.starts_with("%3B"))
}

// === percent-encoding (RFC 3986 §2.1, §6.2.2.1, §6.2.2.2) ===

/// Decodes percent-encoded unreserved characters and uppercases the hex digits of every other
/// percent-encoding. Refuses encoded slashes, backslashes and NULs, raw backslashes and NULs, and
/// malformed percent-encodings. Borrows when nothing changes.
fn normalize_percent_encoding(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = raw.as_bytes();
    // Allocated on the first change; `raw[copied..i]` is what is still to be copied into it.
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        match byte {
            b'\\' => return Err(PathError::Backslash),
            0 => return Err(PathError::Nul),
            b'%' => {
                let (hi, lo) = escape_digits(bytes, i)?;
                if let Some(replacement) = escape_replacement(hi, lo)? {
                    let out = out.get_or_insert_with(|| String::with_capacity(raw.len()));
                    // `i` and `copied` sit next to ASCII bytes, so both are char boundaries.
                    out.push_str(&raw[copied..i]);
                    out.push_str(&replacement);
                    copied = i + 3;
                }
                i += 3;
            }
            _ => i += 1,
        }
    }
    Ok(match out {
        Some(mut owned) => {
            owned.push_str(&raw[copied..]);
            Cow::Owned(owned)
        }
        None => Cow::Borrowed(raw),
    })
}

/// The two hex digits after the `%` at `at`; `Invalid` when they are missing or not hex.
fn escape_digits(bytes: &[u8], at: usize) -> Result<(u8, u8), PathError> {
    match (bytes.get(at + 1), bytes.get(at + 2)) {
        (Some(&hi), Some(&lo)) if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit() => Ok((hi, lo)),
        _ => Err(PathError::Invalid),
    }
}

/// What a well-formed escape `%<hi><lo>` becomes: `None` when it stays as it is, the decoded
/// character when it encodes an unreserved one (§6.2.2.2), the uppercased escape when its hex
/// digits are lowercase (§6.2.2.1). Refuses the octets that are never allowed.
fn escape_replacement(hi: u8, lo: u8) -> Result<Option<String>, PathError> {
    let octet = hex_value(hi) << 4 | hex_value(lo);
    match octet {
        b'/' => Err(PathError::EncodedSlash),
        b'\\' => Err(PathError::Backslash),
        0 => Err(PathError::Nul),
        _ if is_unreserved(octet) => Ok(Some(char::from(octet).to_string())),
        _ if hi.is_ascii_lowercase() || lo.is_ascii_lowercase() => Ok(Some(format!(
            "%{}{}",
            char::from(hi.to_ascii_uppercase()),
            char::from(lo.to_ascii_uppercase())
        ))),
        _ => Ok(None),
    }
}

/// The value of one hex digit; callers have checked `is_ascii_hexdigit`.
fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        b'A'..=b'F' => digit - b'A' + 10,
        _ => 0,
    }
}

/// RFC 3986 §2.3: `unreserved = ALPHA / DIGIT / "-" / "." / "_" / "~"`.
fn is_unreserved(octet: u8) -> bool {
    octet.is_ascii_alphanumeric() || matches!(octet, b'-' | b'.' | b'_' | b'~')
}

// === dot segments and repeated slashes (RFC 3986 §5.2.4) ===

/// Removes `.` and `..` segments (never climbing above the root) and empty segments (repeated
/// slashes). A trailing slash is kept, and a path ending in a dot segment ends in a slash, as
/// §5.2.4 does (`/a/b/..` is `/a/`). `None` when the path has nothing to remove.
///
/// Empty segments go first, so `/public//../admin` is `/admin`: the `..` removes `public`, as it
/// would once a server merges the slashes. Either reading is safe here, because the upstream
/// receives this result, not the raw path.
fn remove_dot_segments(path: &str) -> Option<String> {
    let rest = path.strip_prefix('/')?;
    if !needs_segment_removal(rest) {
        return None;
    }
    let mut kept: Vec<&str> = Vec::new();
    let mut segments = rest.split('/').peekable();
    let mut trailing_slash = false;
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match segment {
            "" | "." => {}
            ".." => {
                kept.pop();
            }
            name => kept.push(name),
        }
        trailing_slash = last && matches!(segment, "" | "." | "..");
    }
    let mut out = String::with_capacity(path.len());
    for name in &kept {
        out.push('/');
        out.push_str(name);
    }
    if trailing_slash || kept.is_empty() {
        out.push('/');
    }
    Some(out)
}

/// Whether the segments after the leading `/` hold a dot segment or an empty segment other
/// than the last one (the last one being empty is the trailing slash, which stays).
fn needs_segment_removal(rest: &str) -> bool {
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if segment == "." || segment == ".." || (segment.is_empty() && !last) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Every rule and every known trick, with what it must become.
    const NORMALIZED: &[(&str, &str)] = &[
        // already normal
        ("/", "/"),
        ("/a", "/a"),
        ("/a/b", "/a/b"),
        ("/a/", "/a/"),
        ("/public/x", "/public/x"),
        ("/a%20b", "/a%20b"),
        ("/caf%C3%A9", "/caf%C3%A9"),
        ("/%25", "/%25"),
        ("/%252e%252e/admin", "/%252e%252e/admin"),
        ("/a:b@c!$&'()*+,=", "/a:b@c!$&'()*+,="),
        // `;` is not special elsewhere in a segment
        ("/public/a..;/admin", "/public/a..;/admin"),
        ("/a;b/c", "/a;b/c"),
        ("/a;b", "/a;b"),
        // `.;x` is refused (see REFUSED)
        // unreserved characters decoded, in either hex case (§6.2.2.2)
        ("/%64enied", "/denied"),
        ("/%61dmin", "/admin"),
        ("/%41%5a%30%39", "/AZ09"),
        ("/%7Euser", "/~user"),
        ("/%7euser", "/~user"),
        ("/a%2Db%5Fc%2e", "/a-b_c."),
        ("/a%2eb", "/a.b"),
        // other escapes kept, hex uppercased (§6.2.2.1)
        ("/caf%c3%a9", "/caf%C3%A9"),
        ("/a%3fb", "/a%3Fb"),
        ("/a%3Fb", "/a%3Fb"),
        ("/a%23b", "/a%23b"),
        ("/a%2520", "/a%2520"),
        ("/%e2%80%8b", "/%E2%80%8B"),
        // dot segments (§5.2.4), never above the root
        ("/public/../admin", "/admin"),
        ("/a/./b", "/a/b"),
        ("/a/b/..", "/a/"),
        ("/a/b/.", "/a/b/"),
        ("/..", "/"),
        ("/.", "/"),
        ("/../../admin", "/admin"),
        ("/a/../../b", "/b"),
        ("/a/b/../../..", "/"),
        ("/a/.../b", "/a/.../b"),
        ("/a/..b/.c", "/a/..b/.c"),
        // encoded dots are dots
        ("/public/%2e%2e/admin", "/admin"),
        ("/public/%2E%2e/admin", "/admin"),
        ("/public/%2E%2E/admin", "/admin"),
        ("/public/.%2e/admin", "/admin"),
        ("/public/%2e./admin", "/admin"),
        ("/%2e%2e/admin", "/admin"),
        ("/public/%2e/admin", "/public/admin"),
        // repeated slashes
        ("//admin", "/admin"),
        ("//a///b", "/a/b"),
        ("/a//", "/a/"),
        ("//", "/"),
        ("/public//../admin", "/admin"),
        ("/public/.//../admin", "/admin"),
        // raw `?` and `#` never come from hyper; they are ordinary characters here
        ("/a?b", "/a?b"),
        ("/a#b/../c", "/c"),
        // mixed
        ("/%70ublic/%2E%2E/%61dmin/", "/admin/"),
        ("/a/%2e%2e%2e", "/a/..."),
    ];

    const REFUSED: &[(&str, PathError)] = &[
        // the Tomcat/Spring `..;` bypass, raw and encoded
        ("/public/..;/admin", PathError::Invalid),
        ("/public/..;jsessionid=1/admin", PathError::Invalid),
        ("/public/.;/admin", PathError::Invalid),
        ("/public/..%3b/admin", PathError::Invalid),
        ("/public/%2e%2e;/admin", PathError::Invalid),
        ("/a%2fb", PathError::EncodedSlash),
        ("/a%2Fb", PathError::EncodedSlash),
        ("/%2F%2Fevil", PathError::EncodedSlash),
        ("/public/..%2fadmin", PathError::EncodedSlash),
        ("/a%5Cb", PathError::Backslash),
        ("/a%5cb", PathError::Backslash),
        ("/a\\b", PathError::Backslash),
        ("/public/..\\admin", PathError::Backslash),
        ("/a%00b", PathError::Nul),
        ("/a\0b", PathError::Nul),
        ("/a%zz", PathError::Invalid),
        ("/a%G1", PathError::Invalid),
        ("/a%1G", PathError::Invalid),
        ("/a%", PathError::Invalid),
        ("/a%4", PathError::Invalid),
        ("/%%41", PathError::Invalid),
        ("", PathError::Invalid),
        ("*", PathError::Invalid),
        ("a/b", PathError::Invalid),
        ("%2Fadmin", PathError::Invalid),
        (" /a", PathError::Invalid),
        ("http://evil/a", PathError::Invalid),
    ];

    #[test]
    fn normalizes_every_rule_and_trick() {
        for (raw, expected) in NORMALIZED {
            assert_eq!(
                normalize_path(raw).as_deref(),
                Ok(*expected),
                "normalizing {raw:?}"
            );
        }
    }

    #[test]
    fn refuses_slashes_backslashes_nuls_and_malformed_input() {
        for (raw, expected) in REFUSED {
            assert_eq!(
                normalize_path(raw).as_deref(),
                Err(expected),
                "normalizing {raw:?}"
            );
        }
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for raw in [
            "/",
            "/a/b",
            "/a/",
            "/api/v1/items/42",
            "/caf%C3%A9",
            "/public/x;y",
        ] {
            assert!(
                matches!(normalize_path(raw), Ok(Cow::Borrowed(_))),
                "{raw:?} should come back borrowed"
            );
        }
    }

    #[test]
    fn changed_paths_are_owned() {
        for raw in ["/%61", "/a%3f", "//a", "/a/../b"] {
            assert!(
                matches!(normalize_path(raw), Ok(Cow::Owned(_))),
                "{raw:?} should come back owned"
            );
        }
    }

    /// Asserts what every successful normalization guarantees.
    fn assert_normal(raw: &str) {
        let Ok(normal) = normalize_path(raw) else {
            return;
        };
        let again = normalize_path(&normal);
        assert_eq!(again.as_deref(), Ok(&*normal), "not a fixed point: {raw:?}");
        assert!(
            matches!(again, Ok(Cow::Borrowed(_))),
            "a normal path must come back borrowed: {normal:?}"
        );
        assert!(normal.starts_with('/'), "{normal:?}");
        for bad in ["/./", "/../", "//", "\\", "\0"] {
            assert!(!normal.contains(bad), "{raw:?} gave {normal:?}");
        }
        assert!(
            !normal.ends_with("/.") && !normal.ends_with("/.."),
            "{normal:?}"
        );
    }

    /// Pieces that exercise every branch of the normalizer.
    fn tricky_path() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(vec![
            "/", "/", "/", ".", "..", "%2e", "%2E", "%2f", "%5c", "%00", "%61", "%7e", "%c3%a9",
            "%C3", "%25", "%", "%g", "a", "b", ";", ";x", "?", "#", "\\", "~", "é",
        ]);
        prop::collection::vec(piece, 0..16).prop_map(|pieces| format!("/{}", pieces.concat()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn tricky_paths_normalize_to_a_fixed_point(raw in tricky_path()) {
            assert_normal(&raw);
        }

        #[test]
        fn arbitrary_paths_normalize_to_a_fixed_point(raw in "/[a-z./%2eEfFcC5;~]{0,24}") {
            assert_normal(&raw);
        }

        #[test]
        fn arbitrary_strings_never_panic(raw in any::<String>()) {
            assert_normal(&raw);
        }
    }
}
