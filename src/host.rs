//! Host names: a route's `host` pattern, and the host a request is for.
//!
//! Both sides are parsed strictly and compared as lowercase ASCII. A pattern is a DNS name
//! (`billing.example.com`) or a wildcard whose `*` is the whole first label
//! (`*.example.com`: any subdomain on a label boundary, never `example.com` itself, never
//! `badexample.com`). A request's host comes from its URI authority (HTTP/2 `:authority`, an
//! absolute-form HTTP/1.1 target) or else its one `Host` header; the port is ignored, one
//! trailing dot (the DNS root) is dropped, and anything that is not a plain host name or IP
//! literal is [`RequestHost::Malformed`]: the gateway refuses such a request (400) rather
//! than guess which host-bound route it was meant for.

use std::fmt;

use http::HeaderMap;
use http::header::HOST;

/// Longest DNS name (RFC 1035 section 2.3.4), and longest label.
const MAX_NAME: usize = 253;
const MAX_LABEL: usize = 63;

/// A route's `host`: an exact name, or every subdomain of a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `app.example.com` (lowercase).
    Exact(String),
    /// `*.example.com`, stored as `.example.com` (lowercase, with the leading dot).
    Subdomains(String),
}

impl HostPattern {
    /// Parses a configured pattern; the error says what is wrong, for the configuration error.
    pub fn parse(raw: &str) -> Result<HostPattern, String> {
        let lower = raw.trim().to_ascii_lowercase();
        if let Some(parent) = lower.strip_prefix("*.") {
            if !is_dns_name(parent) {
                return Err(format!("{raw:?} is not a host name after \"*.\""));
            }
            return Ok(HostPattern::Subdomains(format!(".{parent}")));
        }
        if lower.contains('*') {
            return Err(format!(
                "{raw:?}: a wildcard must be the whole first label, as in \"*.example.com\""
            ));
        }
        if lower.contains(':') {
            return Err(format!("{raw:?}: give the host without a port"));
        }
        if !is_dns_name(&lower) {
            return Err(format!("{raw:?} is not a host name"));
        }
        Ok(HostPattern::Exact(lower))
    }

    /// Whether `host` (lowercase, as [`RequestHost::of`] gives it) is matched.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => host == name,
            // The leading dot puts the match on a label boundary, and a subdomain needs at
            // least one more label (so `example.com` is not `*.example.com`).
            HostPattern::Subdomains(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Subdomains(suffix) => write!(f, "*{suffix}"),
        }
    }
}

/// The host a request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestHost {
    /// Lowercase, without port or trailing dot; an IPv6 literal keeps its brackets.
    Name(String),
    /// Neither an authority nor a `Host` header (HTTP/1.0): only routes without a host match.
    Absent,
    /// Several `Host` headers, or one that is no host name: refused.
    Malformed,
}

impl RequestHost {
    /// The host of a request: its URI authority, else its one `Host` header. When both
    /// are present they must name the same host: the upstream receives the `Host` header,
    /// so a request routed by its authority (`:authority: public.example.com`) must not
    /// reach the upstream as another host (`Host: admin.example.com`).
    pub fn of(uri: &http::Uri, headers: &HeaderMap) -> RequestHost {
        let mut hosts = headers.get_all(HOST).iter();
        let header = match (hosts.next(), hosts.next()) {
            (None, _) => None,
            (Some(host), None) => Some(Self::parse(host.as_bytes())),
            (Some(_), Some(_)) => return RequestHost::Malformed,
        };
        match (uri.authority(), header) {
            (Some(authority), header) => {
                let host = Self::parse(authority.as_str().as_bytes());
                match header {
                    Some(other) if other != host => RequestHost::Malformed,
                    _ => host,
                }
            }
            (None, Some(host)) => host,
            (None, None) => RequestHost::Absent,
        }
    }

    /// `host[:port]` (RFC 9110 section 7.2) as sent; nothing is decoded, nothing skipped.
    pub fn parse(raw: &[u8]) -> RequestHost {
        let Ok(text) = std::str::from_utf8(raw) else {
            return RequestHost::Malformed;
        };
        let (host, port) = if text.starts_with('[') {
            match text.split_once(']') {
                Some((v6, rest)) => (&text[..v6.len() + 1], rest.strip_prefix(':')),
                None => return RequestHost::Malformed,
            }
        } else {
            match text.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (text, None),
            }
        };
        let port_ok = port
            .is_none_or(|p| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
        let trailing = if text.starts_with('[') {
            &text[host.len()..]
        } else {
            ""
        };
        let rest_ok = trailing.is_empty() || trailing.starts_with(':');
        if !port_ok || !rest_ok {
            return RequestHost::Malformed;
        }
        let mut lower = host.to_ascii_lowercase();
        if let Some(v6) = lower.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            return match v6.parse::<std::net::Ipv6Addr>() {
                Ok(_) => RequestHost::Name(lower),
                Err(_) => RequestHost::Malformed,
            };
        }
        // One trailing dot goes (the same name); the string is kept, not copied again.
        if lower.ends_with('.') {
            lower.pop();
        }
        if is_dns_name(&lower) {
            RequestHost::Name(lower)
        } else {
            RequestHost::Malformed
        }
    }

    /// The name, when there is one.
    pub fn name(&self) -> Option<&str> {
        match self {
            RequestHost::Name(name) => Some(name),
            _ => None,
        }
    }
}

/// Dot-separated labels of letters, digits, `-` and `_` (service names), each 1 to 63
/// bytes and not starting or ending with `-`; 253 bytes at most. Lowercase expected.
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= MAX_LABEL
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(raw: &str) -> RequestHost {
        RequestHost::parse(raw.as_bytes())
    }

    #[test]
    fn patterns_parse_strictly() {
        assert_eq!(
            HostPattern::parse("App.Example.com").unwrap(),
            HostPattern::Exact("app.example.com".into())
        );
        assert_eq!(
            HostPattern::parse("*.Example.com").unwrap(),
            HostPattern::Subdomains(".example.com".into())
        );
        for bad in [
            "*example.com",
            "a.*.example.com",
            "*",
            "*.",
            "",
            "app.example.com:443",
            "app..example.com",
            "app.example.com.",
            "-app.example.com",
            "app example.com",
            "exämple.com",
            "http://app.example.com",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?}");
        }
        assert!(
            HostPattern::parse("*example.com")
                .unwrap_err()
                .contains("whole first label")
        );
    }

    #[test]
    fn wildcards_match_on_label_boundaries_only() {
        let p = HostPattern::parse("*.example.com").unwrap();
        assert!(p.matches("a.example.com"));
        assert!(p.matches("a.b.example.com"));
        assert!(!p.matches("example.com"));
        assert!(!p.matches("badexample.com"));
        assert!(!p.matches(".example.com"));
        assert!(!p.matches("example.com.evil"));
    }

    #[test]
    fn request_hosts_drop_the_port_and_the_case() {
        assert_eq!(host("App.Example.COM:8443").name(), Some("app.example.com"));
        assert_eq!(host("app.example.com.").name(), Some("app.example.com"));
        assert_eq!(host("127.0.0.1:80").name(), Some("127.0.0.1"));
        assert_eq!(host("[::1]:4180").name(), Some("[::1]"));
        assert_eq!(host("[::1]").name(), Some("[::1]"));
    }

    #[test]
    fn hostile_hosts_are_malformed() {
        for bad in [
            "",
            ":80",
            "a.example.com:",
            "a.example.com:x",
            "a.example.com:80:80",
            "a.example.com:123456",
            "user@a.example.com",
            "a.example.com/x",
            "a.example.com\\x",
            "a example.com",
            "a%2eexample.com",
            "a..example.com",
            "a.example.com..",
            "[::1",
            "[::1]x",
            "[evil]",
            "a.example.com\t",
            "exämple.com",
        ] {
            assert_eq!(host(bad), RequestHost::Malformed, "{bad:?}");
        }
        assert_eq!(
            RequestHost::parse(b"\xff.example.com"),
            RequestHost::Malformed
        );
    }

    #[test]
    fn authority_and_host_must_agree_and_two_hosts_are_malformed() {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, "b.example.com".parse().unwrap());
        let uri: http::Uri = "http://a.example.com/x".parse().unwrap();
        assert_eq!(RequestHost::of(&uri, &headers), RequestHost::Malformed);
        let same: http::Uri = "http://B.example.com:443/x".parse().unwrap();
        assert_eq!(
            RequestHost::of(&same, &headers).name(),
            Some("b.example.com")
        );
        assert_eq!(
            RequestHost::of(&uri, &HeaderMap::new()).name(),
            Some("a.example.com")
        );
        let origin: http::Uri = "/x".parse().unwrap();
        assert_eq!(
            RequestHost::of(&origin, &headers).name(),
            Some("b.example.com")
        );
        headers.append(HOST, "c.example.com".parse().unwrap());
        assert_eq!(RequestHost::of(&origin, &headers), RequestHost::Malformed);
        assert_eq!(
            RequestHost::of(&origin, &HeaderMap::new()),
            RequestHost::Absent
        );
    }
}
