//! Header rewriting: pure functions on `HeaderMap`.
//!
//! Order matters and is fixed by the pipeline: first remove everything a client may not send
//! (`inbound`: hop-by-hop and `Connection`-listed headers, identity headers on every route,
//! forwarding headers from untrusted peers), then set what the gateway vouches for. Header
//! values are read as bytes: a value that is not visible ASCII is still parsed, never
//! skipped (skipping one would let it hide what comes after it).

mod identity;
mod inbound;

use std::net::{IpAddr, SocketAddr};

use http::header::{AUTHORIZATION, CONNECTION, COOKIE, HOST};
use http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

use crate::config::ForwardedProto;

pub use identity::ClaimHeaders;
pub use inbound::InboundHeaders;

/// Hop-by-hop headers (RFC 9110 section 7.6.1, plus the legacy ones proxies still see), and
/// `Upgrade` (only an upgrade request keeps it, see [`InboundHeaders::sanitize`]).
/// `HeaderName`s, not strings: a `&str` would be parsed into a name at every lookup.
static HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::PROXY_AUTHENTICATE,
    http::header::PROXY_AUTHORIZATION,
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
];

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Remove hop-by-hop headers, every header named in `Connection`, and `Upgrade` from an
/// upstream's response. One pass over the message's names finds which are there (upstream
/// responses typically carry `Connection: keep-alive`), and only those are looked up and
/// removed. (Requests go through [`InboundHeaders::sanitize`].)
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut present = [false; HOP_BY_HOP.len()];
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|hop| hop == name) {
            present[i] = true;
        }
    }
    if present[0] {
        for name in connection_listed(headers) {
            headers.remove(name);
        }
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, there)| *there) {
        headers.remove(name);
    }
}

/// The header names listed in `Connection`, read as bytes (a value with a non-ASCII byte
/// still names its other headers). The usual tokens name no header of their own:
/// `keep-alive` is removed anyway, `upgrade` is decided by the caller. A token that is no
/// valid header name cannot name a header that is present, so it is skipped.
fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(trim_ows)
        .filter(|token| {
            ![&b"keep-alive"[..], b"close", b"upgrade"]
                .iter()
                .any(|t| token.eq_ignore_ascii_case(t))
        })
        .filter_map(|token| HeaderName::from_bytes(token).ok())
        .collect()
}

/// Without leading and trailing spaces and tabs (RFC 9110 OWS).
fn trim_ows(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !matches!(b, b' ' | b'\t'));
    let end = bytes.iter().rposition(|b| !matches!(b, b' ' | b'\t'));
    match (start, end) {
        (Some(start), Some(end)) => &bytes[start..=end],
        _ => &[],
    }
}

// === cookies ===

/// Every `name=value` pair of every `Cookie` header (HTTP/2 may split them), parsed as
/// bytes: one cookie holding `José` must not hide the ones beside it. A pair without `=`
/// has an empty name (RFC 6265bis section 5.7) and matches none of ours.
pub fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = (&[u8], &[u8])> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .map(trim_ows)
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (trim_ows(&pair[..eq]), trim_ows(&pair[eq + 1..])),
            None => (&[][..], pair),
        })
}

/// Every value of cookie `name`, in order (a browser sends the most specific first; another
/// app on the domain may have set one of the same name). Values that are not ASCII are
/// skipped: none of our cookies holds such a value.
pub fn cookie_values<'h>(headers: &'h HeaderMap, name: &'h str) -> impl Iterator<Item = &'h str> {
    cookie_pairs(headers)
        .filter(move |(n, _)| *n == name.as_bytes())
        .filter_map(|(_, v)| std::str::from_utf8(v).ok().filter(|v| v.is_ascii()))
}

/// The first value of cookie `name`.
pub fn find_cookie<'h>(headers: &'h HeaderMap, name: &'h str) -> Option<&'h str> {
    cookie_values(headers, name).next()
}

/// Remove our cookies (those whose name `ours` accepts: an exact name, a name prefix...) from
/// the `Cookie` headers, whatever bytes the others hold; other cookies pass untouched, joined
/// into one header. A name that is not UTF-8 is never ours. Allocates only when our cookies
/// share a header with other cookies.
pub fn remove_cookies(headers: &mut HeaderMap, ours: impl Fn(&str) -> bool) {
    let ours = |name: &[u8]| std::str::from_utf8(name).is_ok_and(&ours);
    let (mut any_ours, mut all_ours) = (false, true);
    for (name, _) in cookie_pairs(headers) {
        let mine = ours(name);
        any_ours |= mine;
        all_ours &= mine;
    }
    if !any_ours {
        return;
    }
    let rebuilt = (!all_ours).then(|| {
        let mut kept = Vec::new();
        for (name, value) in cookie_pairs(headers).filter(|(name, _)| !ours(name)) {
            if !kept.is_empty() {
                kept.extend_from_slice(b"; ");
            }
            // A pair read without a name is written back so that it reads the same again:
            // `=a=b` stays nameless (as `a=b` it would be a cookie named `a`, maybe ours).
            if !name.is_empty() || value.is_empty() || value.contains(&b'=') {
                kept.extend_from_slice(name);
                kept.push(b'=');
            }
            kept.extend_from_slice(value);
        }
        kept
    });
    headers.remove(COOKIE);
    // Every byte kept came from a valid header value: this cannot fail, and if it did the
    // other cookies would be lost, never ours kept.
    if let Some(Ok(value)) =
        rebuilt.map(|kept| HeaderValue::from_maybe_shared(bytes::Bytes::from(kept)))
    {
        headers.insert(COOKIE, value);
    }
}

/// The token of `Authorization: Bearer <token>`, if that is what the client sent.
pub fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// Set the identity headers the gateway vouches for (after [`InboundHeaders::sanitize`]
/// removed every client's): `(name, value)` pairs, such as a session identity's upstream
/// headers, whose values share its text (no copy, no allocation).
pub fn set_identity<'n>(
    headers: &mut HeaderMap,
    pairs: impl IntoIterator<Item = (&'n HeaderName, HeaderValue)>,
) {
    for (name, value) in pairs {
        headers.insert(name.clone(), value);
    }
}

/// Who is talking to us, for `X-Forwarded-*`: worked out once per connection.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub addr: SocketAddr,
    pub tls: bool,
    /// Whether `addr` is one of `server.trusted_proxies` (whose `X-Forwarded-*` we believe).
    pub trusted: bool,
}

/// The `X-Forwarded-For` value for a connection whose peer is not trusted: its address,
/// formatted once per connection instead of once per request.
pub fn peer_address_value(peer: &Peer) -> Option<HeaderValue> {
    HeaderValue::from_str(&canonical(peer.addr.ip()).to_string()).ok()
}

/// Set `X-Forwarded-For/Proto/Host`, and `X-Real-IP` for an untrusted peer (nginx's
/// convention: the address the gateway took the request from). A trusted proxy's values are
/// kept (`X-Forwarded-For` extended with its address); anyone else's are replaced (their other
/// spellings are gone already, [`InboundHeaders::sanitize`]), so the upstream can believe
/// them. `peer_value`: from [`peer_address_value`]. `proto`: `server.forwarded_proto`, the
/// `X-Forwarded-Proto` of a peer whose own is not believed.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    peer: Peer,
    peer_value: Option<&HeaderValue>,
    proto: ForwardedProto,
) {
    let xff = match peer.trusted {
        true if headers.contains_key(&X_FORWARDED_FOR) => {
            extended_xff(headers, peer).or_else(|| peer_value.cloned())
        }
        _ => peer_value.cloned(),
    };
    match xff {
        Some(xff) => headers.insert(X_FORWARDED_FOR.clone(), xff),
        None => headers.remove(&X_FORWARDED_FOR),
    };
    if !peer.trusted {
        match peer_value {
            Some(ip) => headers.insert(X_REAL_IP.clone(), ip.clone()),
            None => headers.remove(&X_REAL_IP),
        };
    }
    if !peer.trusted || !headers.contains_key(&X_FORWARDED_PROTO) {
        let https = match proto {
            ForwardedProto::Auto => peer.tls,
            ForwardedProto::Https => true,
            ForwardedProto::Http => false,
        };
        let proto = if https { "https" } else { "http" };
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    }
    if !peer.trusted || !headers.contains_key(&X_FORWARDED_HOST) {
        match headers.get(HOST).cloned() {
            Some(host) => headers.insert(X_FORWARDED_HOST.clone(), host),
            None => headers.remove(&X_FORWARDED_HOST),
        };
    }
}

/// A trusted proxy's `X-Forwarded-For` (every line of it, as bytes) plus its own address.
fn extended_xff(headers: &HeaderMap, peer: Peer) -> Option<HeaderValue> {
    let mut joined = Vec::new();
    for value in headers.get_all(&X_FORWARDED_FOR) {
        joined.extend_from_slice(value.as_bytes());
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(canonical(peer.addr.ip()).to_string().as_bytes());
    HeaderValue::from_bytes(&joined).ok()
}

/// The client's address: a trusted proxy's last `X-Forwarded-For` entry (the address it saw)
/// when it is one, else the peer's own.
pub fn client_ip(headers: &HeaderMap, peer: Peer) -> IpAddr {
    let forwarded = || {
        let last = headers.get_all(&X_FORWARDED_FOR).iter().next_back()?;
        let entry = last.to_str().ok()?.rsplit(',').next()?.trim();
        entry.parse::<IpAddr>().ok()
    };
    let ip = if peer.trusted { forwarded() } else { None };
    canonical(ip.unwrap_or(peer.addr.ip()))
}

/// Whether `ip` is inside one of the `trusted_proxies` CIDRs.
pub fn is_trusted(trusted_proxies: &[IpNet], ip: IpAddr) -> bool {
    let ip = canonical(ip);
    trusted_proxies.iter().any(|net| net.contains(&ip))
}

/// An IPv4 peer seen on a dual-stack socket arrives as `::ffff:a.b.c.d`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_found_in_any_position_and_upgrade_stripped() {
        let mut h = map(&[("x-a", "1"), ("x-b", "2"), ("upgrade", "websocket")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
        let mut h = map(&[("connection", "close, x-b"), ("x-a", "1"), ("x-b", "2")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-a"));
        let mut untouched = map(&[("x-a", "1"), ("cookie", "c=1")]);
        strip_hop_by_hop(&mut untouched);
        assert_eq!(untouched.len(), 2);
    }

    #[test]
    fn strips_connection_listed_and_hop_by_hop() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-kept"], "yes");
    }

    /// A map with one `Cookie` header holding exactly these bytes.
    fn cookie_bytes(bytes: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_bytes(bytes).unwrap());
        h
    }

    #[test]
    fn cookies_are_parsed_as_bytes() {
        let h = cookie_bytes(b"name=Jos\xc3\xa9; authgate_session=s.1; q=\"a b\"");
        assert_eq!(find_cookie(&h, "authgate_session"), Some("s.1"));
        let mut h = h;
        remove_cookies(&mut h, |name| name == "authgate_session");
        assert_eq!(h[COOKIE].as_bytes(), b"name=Jos\xc3\xa9; q=\"a b\"");
        // Our cookie with a non-ASCII value is not ours to read, but still never forwarded.
        let mut h = cookie_bytes(b"authgate_session=\xff; authgate_session=ok; x=\xfe");
        assert_eq!(
            cookie_values(&h, "authgate_session").collect::<Vec<_>>(),
            ["ok"]
        );
        remove_cookies(&mut h, |name| name == "authgate_session");
        assert_eq!(h[COOKIE].as_bytes(), b"x=\xfe");
        // Spacing, tabs and nameless pairs.
        let mut h = cookie_bytes(b"\tauthgate_session = v ;;noequals; a=1");
        assert_eq!(find_cookie(&h, "authgate_session"), Some("v"));
        remove_cookies(&mut h, |name| name == "authgate_session");
        assert_eq!(h[COOKIE], "noequals; a=1");
    }

    #[test]
    fn cookies_removed_by_any_rule() {
        let mut h = cookie_bytes(b"authgate_session_login_1=a; keep=1; authgate_session_login_2=b");
        remove_cookies(&mut h, |name| name.starts_with("authgate_session_login"));
        assert_eq!(h[COOKIE], "keep=1");
    }

    #[test]
    fn removes_only_our_cookies() {
        let mut h = map(&[
            ("cookie", "a=1; authgate_session=xyz; b=2"),
            ("cookie", "authgate_session=dup"),
        ]);
        assert_eq!(find_cookie(&h, "authgate_session"), Some("xyz"));
        remove_cookies(&mut h, |name| name == "authgate_session");
        assert_eq!(h.get_all(COOKIE).iter().count(), 1);
        assert_eq!(h[COOKIE], "a=1; b=2");
        let mut only = map(&[("cookie", "authgate_session=xyz")]);
        remove_cookies(&mut only, |name| name == "authgate_session");
        assert!(!only.contains_key(COOKIE));
    }

    #[test]
    fn an_ipv4_peer_on_a_dual_stack_listener_is_forwarded_as_ipv4() {
        let peer = Peer {
            addr: "[::ffff:10.0.0.9]:1234".parse().unwrap(),
            tls: false,
            trusted: false,
        };
        assert_eq!(peer_address_value(&peer).unwrap(), "10.0.0.9");
    }

    #[test]
    fn forwarded_headers_replaced_unless_trusted() {
        let untrusted = Peer {
            addr: "10.0.0.9:1234".parse().unwrap(),
            tls: false,
            trusted: false,
        };
        let value = peer_address_value(&untrusted);
        let incoming = [
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("host", "app.example.com"),
        ];
        let mut h = map(&incoming);
        set_forwarded(&mut h, untrusted, value.as_ref(), ForwardedProto::Auto);
        assert_eq!(h["x-forwarded-for"], "10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "app.example.com");
        assert_eq!(h["x-real-ip"], "10.0.0.9");
        let trusted = Peer {
            trusted: true,
            ..untrusted
        };
        let mut h = map(&incoming);
        h.append("x-forwarded-for", HeaderValue::from_static("5.6.7.8"));
        h.insert("x-real-ip", HeaderValue::from_static("1.2.3.4"));
        set_forwarded(&mut h, trusted, value.as_ref(), ForwardedProto::Http);
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 5.6.7.8, 10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "evil.example");
        assert_eq!(h["x-real-ip"], "1.2.3.4");
    }

    #[test]
    fn forwarded_proto_as_configured_unless_a_trusted_proxy_said() {
        let plain = Peer {
            addr: "10.0.0.9:1234".parse().unwrap(),
            tls: false,
            trusted: false,
        };
        let tls = Peer { tls: true, ..plain };
        let trusted = Peer {
            trusted: true,
            ..plain
        };
        let proto = |peer: Peer, incoming: &[(&str, &str)], configured| {
            let mut h = map(incoming);
            set_forwarded(&mut h, peer, None, configured);
            h["x-forwarded-proto"].to_str().unwrap().to_owned()
        };
        let spoofed = [("x-forwarded-proto", "ftp")];
        assert_eq!(proto(plain, &spoofed, ForwardedProto::Auto), "http");
        assert_eq!(proto(tls, &spoofed, ForwardedProto::Auto), "https");
        assert_eq!(proto(plain, &spoofed, ForwardedProto::Https), "https");
        assert_eq!(proto(tls, &[], ForwardedProto::Http), "http");
        // A trusted proxy's own value is kept; without one, the configured value.
        let said = [("x-forwarded-proto", "http")];
        assert_eq!(proto(trusted, &said, ForwardedProto::Https), "http");
        assert_eq!(proto(trusted, &[], ForwardedProto::Https), "https");
    }

    #[test]
    fn trusted_proxies_match_mapped_ipv4() {
        let nets: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        assert!(is_trusted(&nets, "10.1.2.3".parse().unwrap()));
        assert!(is_trusted(&nets, "::ffff:10.1.2.3".parse().unwrap()));
        assert!(!is_trusted(&nets, "11.1.2.3".parse().unwrap()));
    }
}
