//! Same-origin redirect targets: the `rd` parameter of `/oauth2/start` and
//! `/oauth2/sign_out`, and the post-login landing URL.
//!
//! [`SafeRedirect::parse`] turns untrusted input into a path that starts with exactly one `/`,
//! so a browser resolving it as a `Location` (RFC 9110 §10.2.2, RFC 3986 §5.2) can only stay on
//! the gateway's origin. Anything it cannot prove same-origin becomes `/`. It accepts:
//!
//! - a path: starts with `/`, holds no control character, no whitespace and no backslash, and
//!   has only well-formed percent-encodings. Its segments (except a trailing empty one) are not
//!   empty, whitespace-only, `.` or `..`: this refuses `//`, `/ /`, `/./\` and the rest of what
//!   oauth2-proxy's `[/\\](\s*|\.{1,2})[/\\]` refuses (dot segments included: a landing URL
//!   taken from a browser never has one). The same holds after percent-decoding, so `/%2F%2Fevil`,
//!   `/%5Cevil` and `/%09/evil` are refused; control characters are refused in the decoded
//!   query too.
//! - an absolute `http://` or `https://` URL, all ASCII, without userinfo, whose origin (scheme,
//!   host, port; host case and default ports normalized) is exactly `public_url`'s. It is
//!   reduced to its path and query, which must then pass as a path.
//!
//! Decisions:
//!
//! - **At most [`MAX_TARGET_BYTES`] (2048) bytes**, as given and as kept; a longer target
//!   becomes `/`. A pending login carries its landing URL in a cookie (`crate::login`).
//! - **Double encoding is refused.** Decoding is repeated until nothing changes (at most
//!   `MAX_DECODE_ROUNDS` times, beyond that the input is refused), and every layer is checked,
//!   so `/%252F%252Fevil` becomes `/`. A browser decodes nothing, so such a path would in fact
//!   stay on the origin, but an upstream that decodes twice and redirects again would not; a
//!   legitimate landing URL hardly ever holds an encoded `%2F`, and falling back to `/` costs
//!   the user one click.
//! - **The fragment is dropped.** It never reaches a server, so the gateway never sees the
//!   fragment of the page that sent the user to login; and a browser keeps the original
//!   fragment across a redirect whose `Location` has none (RFC 9110 §10.2.2).
//! - **The output is plain ASCII**: non-ASCII characters and ASCII characters that RFC 3986
//!   §3.3/§3.4 do not allow in a path or query (`"`, `<`, `>`, `[`, `]`, `^`, backtick, `{`,
//!   `|`, `}`) are percent-encoded, so the value is always a valid header value and is a fixed
//!   point of `parse`.

use std::{borrow::Cow, fmt};

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use url::Url;

/// Where every rejected target lands.
const ROOT: &str = "/";

/// Longest target kept, in bytes, before and after parsing: a landing
/// URL travels in the browser's login cookie, which must stay small.
pub const MAX_TARGET_BYTES: usize = 2048;

/// How many times a target is percent-decoded before it is refused as too deeply encoded.
const MAX_DECODE_ROUNDS: usize = 4;

/// ASCII characters RFC 3986 §3.3 and §3.4 do not allow raw in a path or query; re-encoded on
/// output (non-ASCII always is). `%` is left alone: every escape has been checked well-formed.
/// Space, controls and `\` never get here, they are refused first; `#` starts the fragment.
const NOT_PATH_OR_QUERY: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// A redirect target proven same-origin: a path starting with exactly one '/', or an absolute
/// URL on a host of `server.allowed_redirect_hosts` ([`SafeRedirect::parse_allowing`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafeRedirect(String);

// === impl SafeRedirect ===

impl SafeRedirect {
    /// `public_url` is the gateway's external origin (e.g. https://app.example.com, no trailing
    /// slash). Anything not provably same-origin becomes "/".
    pub fn parse(raw: &str, public_url: &url::Url) -> SafeRedirect {
        Self::parse_allowing(raw, public_url, &[])
    }

    /// [`SafeRedirect::parse`], also keeping an absolute URL whose host is in
    /// `allowed_hosts` (`server.allowed_redirect_hosts`, lowercase): an entry is a host
    /// (`app.example.com`), or, starting with `.`, every subdomain of the rest on a label
    /// boundary (`.example.com`: `a.example.com`, never `example.com` nor `badexample.com`).
    /// Such a URL must be `https` (`http` only when `public_url` is), without userinfo, and
    /// its path and query pass as a same-origin path would. The result is then that URL.
    pub fn parse_allowing(
        raw: &str,
        public_url: &url::Url,
        allowed_hosts: &[String],
    ) -> SafeRedirect {
        if raw.len() > MAX_TARGET_BYTES {
            return SafeRedirect(ROOT.to_owned());
        }
        let target = if raw.starts_with('/') {
            same_origin_path(raw)
        } else {
            same_origin_url_path(raw, public_url)
                .or_else(|| allowed_host_url(raw, public_url, allowed_hosts))
        };
        // Percent-encoding may have grown it: the bound holds for what is kept, too.
        let target = target.filter(|t| t.len() <= MAX_TARGET_BYTES);
        SafeRedirect(target.unwrap_or_else(|| ROOT.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SafeRedirect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === paths ===

/// `raw` (starting with `/`) as a safe output, or `None`.
fn same_origin_path(raw: &str) -> Option<String> {
    if !raw.chars().all(is_plain) {
        return None;
    }
    // The fragment is dropped (see the module doc).
    let without_fragment = raw.split_once('#').map_or(raw, |(before, _)| before);
    let (path, query) = match without_fragment.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (without_fragment, None),
    };
    let path_ok = escapes_well_formed(path) && every_decoded_layer(path, is_safe_path);
    let query_ok = query.is_none_or(|q| {
        escapes_well_formed(q)
            && every_decoded_layer(q, |layer| !layer.chars().any(char::is_control))
    });
    (path_ok && query_ok)
        .then(|| utf8_percent_encode(without_fragment, NOT_PATH_OR_QUERY).to_string())
}

/// Neither a control character (C0, DEL, C1), nor whitespace (ASCII or Unicode), nor `\`.
fn is_plain(c: char) -> bool {
    !c.is_control() && !c.is_whitespace() && c != '\\'
}

/// A path whose first segment cannot be read as an authority and that holds nothing a browser
/// or a server would strip or reinterpret: it starts with `/`, holds no control character and
/// no `\`, and no segment but a trailing one is empty, whitespace-only, `.` or `..`.
fn is_safe_path(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    if path.chars().any(|c| c.is_control() || c == '\\') {
        return false;
    }
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        let blank = segment.trim().is_empty();
        if (blank && !last) || segment == "." || segment == ".." {
            return false;
        }
    }
    true
}

/// Whether every `%` starts an escape of two hex digits (RFC 3986 §2.1).
fn escapes_well_formed(s: &str) -> bool {
    let bytes = s.as_bytes();
    bytes.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || matches!(
                (bytes.get(i + 1), bytes.get(i + 2)),
                (Some(hi), Some(lo)) if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit()
            )
    })
}

/// Applies `ok` to `s` and to each successive percent-decoding of it, until decoding changes
/// nothing; false when one fails or when it still changes after `MAX_DECODE_ROUNDS`.
/// Undecodable UTF-8 becomes U+FFFD, which none of the checks refuse nor decode further.
fn every_decoded_layer(s: &str, ok: impl Fn(&str) -> bool) -> bool {
    let mut layer = Cow::Borrowed(s);
    for _ in 0..=MAX_DECODE_ROUNDS {
        if !ok(&layer) {
            return false;
        }
        let decoded = percent_decode_str(&layer).decode_utf8_lossy().into_owned();
        if decoded == layer {
            return true;
        }
        layer = Cow::Owned(decoded);
    }
    false
}

// === absolute URLs ===

/// The path and query of `raw` when it is an absolute http(s) URL with exactly the origin of
/// `public_url` (RFC 6454 §4: scheme, host, port), reduced and checked as a path.
fn same_origin_url_path(raw: &str, public_url: &Url) -> Option<String> {
    // Only the plain `scheme://` form: `https:evil.example` and `https:/x` would leave it to
    // the WHATWG parser's guesswork. Non-ASCII (IDN, full-width letters) is refused outright, as
    // is anything that parser strips or rewrites (tabs, newlines, `\`).
    let plain_scheme =
        starts_with_ignore_case(raw, "https://") || starts_with_ignore_case(raw, "http://");
    if !plain_scheme || !raw.is_ascii() || !raw.chars().all(is_plain) {
        return None;
    }
    // Any userinfo is refused, even an empty one (`https://:@host`), which the parser drops.
    if raw_authority(raw).contains('@') {
        return None;
    }
    let url = Url::parse(raw).ok()?;
    // `origin()` lowercases the host and fills in the scheme's default port.
    if url.origin() != public_url.origin() {
        return None;
    }
    let path_and_query = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    };
    same_origin_path(&path_and_query)
}

/// `raw` when it is an absolute URL on one of `allowed` (see [`SafeRedirect::parse_allowing`]),
/// rebuilt from its parts: `scheme://host[:port]` and the checked path and query.
fn allowed_host_url(raw: &str, public_url: &Url, allowed: &[String]) -> Option<String> {
    if allowed.is_empty() {
        return None;
    }
    // The same gate as a same-origin URL: plain `scheme://`, ASCII, nothing stripped or
    // rewritten by the parser, no userinfo.
    let plain_scheme =
        starts_with_ignore_case(raw, "https://") || starts_with_ignore_case(raw, "http://");
    if !plain_scheme || !raw.is_ascii() || !raw.chars().all(is_plain) {
        return None;
    }
    if raw_authority(raw).contains('@') {
        return None;
    }
    let url = Url::parse(raw).ok()?;
    let scheme_ok = match url.scheme() {
        "https" => true,
        "http" => public_url.scheme() == "http",
        _ => false,
    };
    let Some(url::Host::Domain(host)) = url.host() else {
        return None;
    };
    if !scheme_ok || !host_allowed(host, allowed) {
        return None;
    }
    let path_and_query = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    };
    let path = same_origin_path(&path_and_query)?;
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    Some(format!("{}://{host}{port}{path}", url.scheme()))
}

/// Whether `host` (lowercase) is listed, exactly or under a `.parent` entry on a label
/// boundary: the entry's leading dot must be the character before the parent, and at least
/// one label must come before it.
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    allowed.iter().any(|entry| {
        if entry.starts_with('.') {
            host.len() > entry.len() && host.ends_with(entry.as_str())
        } else {
            host == entry
        }
    })
}

/// The authority of an ASCII `scheme://authority/...` holding no `\` (RFC 3986 §3.2: it ends at
/// the first `/`, `?` or `#`).
fn raw_authority(raw: &str) -> &str {
    let after_scheme = raw.split_once("://").map_or("", |(_, rest)| rest);
    after_scheme
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default()
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const PUBLIC: &str = "https://app.example.com";

    fn public_url() -> Url {
        Url::parse(PUBLIC).unwrap()
    }

    fn safe(raw: &str) -> String {
        SafeRedirect::parse(raw, &public_url()).as_str().to_owned()
    }

    /// Every one of these must become "/". The first block mirrors oauth2-proxy's
    /// `pkg/app/redirect/validator_test.go`, the rest its `testdata/openredirects.txt` and more.
    const HOSTILE: &[&str] = &[
        // oauth2-proxy validator_test.go
        "",
        "//redirect",
        "/\\evil.com",
        "/ /evil.com",
        "/ \\evil.com",
        "/\t/evil.com",
        "/\t\\evil.com",
        "/\x0b/evil.com",
        "/\x0b\\evil.com",
        "/\n/evil.com",
        "/\n\\evil.com",
        "/\r/evil.com",
        "/\r\\evil.com",
        "/\t/\t\\evil.com",
        "/\t\t/\t/evil.com",
        "/\t\t\\\t/evil.com",
        "/\t\t/\t\t\\evil.com",
        "/\t\t\\\t\t/evil.com",
        "/./\\evil.com",
        "/./../../\\evil.com",
        "foo.bar/redirect",
        "http://foo.bar.evil.corp/redirect",
        "https://evil.corp:3838/redirect",
        "https://evil.corp/redirect?rd=app.example.com",
        // schemes other than same-origin http(s)
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        "javascript://app.example.com/%0Aalert(1)",
        "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
        "http://evil.example",
        "https://evil.example/x",
        "http://app.example.com/x",
        "https://app.example.com:8443/x",
        "ftp://app.example.com/x",
        "https:evil.example",
        "https:/evil.example",
        "https:app.example.com/x",
        "https:\\\\evil.example",
        // host and userinfo tricks
        "https://app.example.com.evil.com/",
        "https://app.example.com@evil.com/",
        "https://app.example.com:443@evil.com/",
        "https://user@app.example.com/x",
        "https://user:pw@app.example.com/x",
        "https://:@app.example.com/x",
        "https://app.example.com%2eevil.com/",
        "https://app.example.com\\@evil.com/",
        "https://evil.com#@app.example.com/",
        "https://evil.com?@app.example.com/",
        "https://app.example.com./x",
        "https://ａｐｐ.example.com/x",
        "https://\u{0430}pp.example.com/x",
        "https://xn--pp-8kc.example.com/x",
        "\thttps://app.example.com/x",
        "https://app.example.com/x\n",
        // protocol-relative and backslash forms
        "//evil.example",
        "///evil.example",
        "////evil.example/",
        "/\\/evil.example",
        "\\/evil",
        "\\\\evil",
        "/.//evil",
        "/..//evil",
        "/a/b//evil",
        "https://app.example.com//evil.example",
        "https://app.example.com/a/../..//evil.example",
        // leading whitespace and invisible characters
        " /x",
        "\t/x",
        "\r\n/x",
        "\0/x",
        "\u{a0}/x",
        "\u{3000}/x",
        "\u{2028}/x",
        "\u{feff}/x",
        "/\u{85}/evil",
        "/\u{2028}/evil",
        "/\u{3000}/evil",
        // control characters anywhere, header injection
        "/x\0",
        "/x\x7f",
        "/a\r\nSet-Cookie: x=y",
        "/a?b=\r\nSet-Cookie:x=y",
        "/a#\n",
        // the same after percent-decoding
        "/%2F%2Fevil",
        "/%2f%2fevil",
        "/%2f/evil",
        "/%5Cevil",
        "/%5cevil",
        "/%09/evil",
        "/%0d%0a/evil",
        "/%20/evil",
        "/%E3%80%80/evil",
        "/a%00",
        "/a%7F",
        "/a?b=%0d%0aSet-Cookie:x=y",
        "/%2e%2e/%2f/evil",
        "/%68%74%74%70%3a%2f%2f%67%6f%6f%67%6c%65%2e%63%6f%6d",
        "/%2f%5c%2f%67%6f%6f%67%6c%65%2e%63%6f%6d/",
        "/https:/%5cexample.com/",
        "/x:1/:///%01javascript:alert(document.cookie)/",
        "https://app.example.com/%2F%2Fevil",
        "https://app.example.com/%5Cevil",
        // double (and deeper) encoding
        "/%252F%252Fevil",
        "/%255Cevil",
        "/%2509/evil",
        "/a?b=%250A",
        "/%2525252F",
        "/%25252525252F",
        // malformed percent-encoding
        "/a%zz",
        "/a%",
        "/a%4",
        "/a?b=%g0",
    ];

    /// Legitimate targets and what they become.
    const LEGITIMATE: &[(&str, &str)] = &[
        ("/", "/"),
        ("/a/b?c=d", "/a/b?c=d"),
        ("/a/", "/a/"),
        ("/path%20with%20space", "/path%20with%20space"),
        ("/a/b#section", "/a/b"),
        ("/#", "/"),
        ("/search?q=a+b&next=/x", "/search?q=a+b&next=/x"),
        (
            "/back?to=https://other.example/",
            "/back?to=https://other.example/",
        ),
        ("/a?x=%2F%2F&y=%20", "/a?x=%2F%2F&y=%20"),
        ("/a?", "/a?"),
        ("/files/a%2Fb", "/files/a%2Fb"),
        ("/100%25", "/100%25"),
        ("/caf%C3%A9", "/caf%C3%A9"),
        ("/café", "/caf%C3%A9"),
        ("/a<b>\"c\"", "/a%3Cb%3E%22c%22"),
        ("/a:b@c;d=e!$&'()*+,~", "/a:b@c;d=e!$&'()*+,~"),
        ("/..a/.b/...", "/..a/.b/..."),
        ("https://app.example.com/x?y=1", "/x?y=1"),
        ("https://app.example.com/x?y=1#frag", "/x?y=1"),
        ("https://APP.example.com:443/x", "/x"),
        ("HTTPS://app.EXAMPLE.com/x", "/x"),
        ("https://app.example.com", "/"),
        ("https://app.example.com?a=b", "/?a=b"),
        ("https://app.example.com/a/./b/../c", "/a/c"),
    ];

    /// `allowed_redirect_hosts`: the cross-host cases (oauth2-proxy CVE-2021-21291:
    /// `.example.com` matched `badexample.com`).
    #[test]
    fn allowed_redirect_hosts_match_on_label_boundaries() {
        let allowed = ["b.example.com".to_owned(), ".corp.example".to_owned()];
        let parse = |raw: &str| {
            SafeRedirect::parse_allowing(raw, &public_url(), &allowed)
                .as_str()
                .to_owned()
        };
        for (raw, expected) in [
            ("https://b.example.com/x?y=1", "https://b.example.com/x?y=1"),
            ("https://B.Example.COM/x", "https://b.example.com/x"),
            (
                "https://b.example.com:8443/x",
                "https://b.example.com:8443/x",
            ),
            ("https://wiki.corp.example/", "https://wiki.corp.example/"),
            (
                "https://a.b.corp.example/p#frag",
                "https://a.b.corp.example/p",
            ),
            // Still same-origin URLs and paths as before.
            ("https://app.example.com/x", "/x"),
            ("/x", "/x"),
        ] {
            assert_eq!(parse(raw), expected, "{raw}");
        }
        for hostile in [
            "https://corp.example/",
            "https://badcorp.example/",
            "https://evilcorp.example/",
            "https://corp.example.evil.com/",
            "https://b.example.com.evil.com/",
            "https://xb.example.com/",
            "https://evil.com/.corp.example",
            "https://evil.com?.corp.example",
            "https://evil.com#.corp.example",
            "https://b.example.com@evil.com/",
            "https://evil.com\\@b.example.com/",
            "https://user@b.example.com/",
            "http://b.example.com/",
            "ftp://b.example.com/",
            "//b.example.com/",
            "https:b.example.com/",
            "https://b.example.com//evil.com",
            "https://b.example.com/%2F%2Fevil.com",
            "https://b.example.com/\tx",
            "https://wiki.corp.example./",
            "https://127.0.0.1/",
            "https://b.ex\u{0430}mple.com/",
        ] {
            assert_eq!(parse(hostile), "/", "{hostile:?}");
        }
        // No allowed hosts: absolute URLs off the origin are refused, as before.
        assert_eq!(safe("https://b.example.com/x"), "/");
        // A plain-http gateway may name plain-http hosts.
        let http_public = Url::parse("http://app.example.com").unwrap();
        let kept = SafeRedirect::parse_allowing("http://b.example.com/x", &http_public, &allowed);
        assert_eq!(kept.as_str(), "http://b.example.com/x");
        // A fixed point: what is kept parses to itself (it travels in the login cookie).
        let again = SafeRedirect::parse_allowing(kept.as_str(), &http_public, &allowed);
        assert_eq!(again, kept);
    }

    #[test]
    fn hostile_targets_become_root() {
        assert!(HOSTILE.len() >= 40);
        for raw in HOSTILE {
            assert_eq!(safe(raw), "/", "input {raw:?}");
        }
    }

    #[test]
    fn long_targets_become_root() {
        let at_bound = format!("/{}", "a".repeat(MAX_TARGET_BYTES - 1));
        assert_eq!(safe(&at_bound), at_bound);
        assert_eq!(safe(&format!("{at_bound}a")), "/");
        assert_eq!(safe(&format!("/{}", "a".repeat(60 * 1024))), "/");
        // Short as given, too long once non-ASCII is percent-encoded.
        assert_eq!(safe(&format!("/{}", "é".repeat(700))), "/");
    }

    #[test]
    fn legitimate_targets_are_kept() {
        for (raw, expected) in LEGITIMATE {
            assert_eq!(safe(raw), *expected, "input {raw:?}");
        }
    }

    #[test]
    fn dot_segments_in_a_path_fall_back_to_root() {
        // Browsers resolve dot segments before sending a URL, so a real landing URL has none.
        for raw in ["/a/../b", "/a/./b", "/a/..", "/.", "/%2e%2e/b"] {
            assert_eq!(safe(raw), "/", "input {raw:?}");
        }
    }

    #[test]
    fn origin_includes_a_non_default_port() {
        let public = Url::parse("https://app.example.com:8443").unwrap();
        let parse = |raw| SafeRedirect::parse(raw, &public).as_str().to_owned();
        assert_eq!(parse("https://app.example.com:8443/x"), "/x");
        assert_eq!(parse("https://app.example.com/x"), "/");
        assert_eq!(parse("https://app.example.com:443/x"), "/");
    }

    #[test]
    fn plain_http_public_url() {
        let public = Url::parse("http://localhost:4180").unwrap();
        let parse = |raw| SafeRedirect::parse(raw, &public).as_str().to_owned();
        assert_eq!(parse("http://LOCALHOST:4180/x"), "/x");
        assert_eq!(parse("https://localhost:4180/x"), "/");
        assert_eq!(parse("http://localhost/x"), "/");
    }

    #[test]
    fn display_is_the_path() {
        assert_eq!(
            SafeRedirect::parse("/a?b", &public_url()).to_string(),
            "/a?b"
        );
    }

    /// What every output must satisfy, whatever the input.
    fn assert_safe(raw: &str) {
        let out = safe(raw);
        assert!(out.starts_with('/'), "{raw:?} gave {out:?}");
        assert!(!out.starts_with("//"), "{raw:?} gave {out:?}");
        assert!(!out.starts_with("/\\"), "{raw:?} gave {out:?}");
        assert!(out.is_ascii(), "{raw:?} gave {out:?}");
        assert!(
            !out.chars()
                .any(|c| c.is_ascii_control() || c.is_whitespace() || c == '\\'),
            "{raw:?} gave {out:?}"
        );
        assert_eq!(safe(&out), out, "not a fixed point: {raw:?}");
    }

    /// Strings built from the pieces open redirects are made of.
    fn hostile_string() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(vec![
            "/",
            "/",
            "\\",
            "%2F",
            "%2f",
            "%5C",
            "%5c",
            "%25",
            "%",
            "%09",
            "%0A",
            "%00",
            "c",
            ":",
            "@",
            ".",
            "..",
            "\t",
            "\r",
            "\n",
            "\x0b",
            "\x0c",
            "\0",
            "\x7f",
            " ",
            "\u{a0}",
            "\u{3000}",
            "é",
            "?",
            "#",
            "evil",
            "https:",
            "//",
            "https://app.example.com",
            "https://evil.example",
            "javascript:",
        ]);
        prop::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn arbitrary_strings_give_a_safe_path(raw in any::<String>()) {
            assert_safe(&raw);
            assert_safe(&format!("/{raw}"));
            assert_safe(&format!("{PUBLIC}/{raw}"));
        }

        #[test]
        fn hostile_strings_give_a_safe_path(raw in hostile_string()) {
            assert_safe(&raw);
            assert_safe(&format!("/{raw}"));
            assert_safe(&format!("{PUBLIC}{raw}"));
        }

        #[test]
        fn plain_paths_are_kept(raw in "(/[a-zA-Z0-9_~-]{1,8}){1,4}/?(\\?[a-z0-9=&/]{0,12})?") {
            prop_assert_eq!(safe(&raw), raw);
        }
    }
}
