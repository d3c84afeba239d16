//! Header rewriting: pure functions on `HeaderMap`.
//!
//! Order matters and is fixed by the pipeline: strip everything a client could use to spoof
//! identity (always, on every route), then set what the gateway vouches for. Stripping is
//! done on normalized names, so `X_Forwarded_User` cannot slip past a check for
//! `X-Forwarded-User` (servers such as PHP or CGI-style frameworks fold `_` into `-`).

use std::net::{IpAddr, SocketAddr};

use http::header::{AUTHORIZATION, CONNECTION, COOKIE, HOST};
use http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

use crate::config::HeadersConfig;
use crate::session::Identity;

/// Hop-by-hop headers (RFC 9110 section 7.6.1, plus the legacy ones proxies still see), and
/// `Upgrade` (`Connection` first: [`strip_hop_by_hop`] relies on it) (only an upgrade request keeps it, see [`strip_hop_by_hop_for_upgrade`]).
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
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// Remove hop-by-hop headers, every header named in `Connection`, and `Upgrade`. One pass
/// over the message's names finds which are there (most requests carry none; upstream
/// responses typically `Connection: keep-alive`), and only those are looked up and removed.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut present = [false; HOP_BY_HOP.len()];
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|hop| hop == name) {
            present[i] = true;
        }
    }
    if present[0] {
        remove_connection_listed(headers);
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, there)| *there) {
        headers.remove(name);
    }
}

/// Like [`strip_hop_by_hop`] for a request that asked to upgrade: keeps the upgrade handshake.
pub fn strip_hop_by_hop_for_upgrade(headers: &mut HeaderMap) {
    let upgrade = headers.remove(http::header::UPGRADE);
    strip_hop_by_hop(headers);
    if let Some(protocol) = upgrade {
        headers.insert(http::header::UPGRADE, protocol);
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

fn remove_connection_listed(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        // The usual tokens name no header of their own (`keep-alive` is removed anyway).
        .filter(|token| {
            !["keep-alive", "close", "upgrade"]
                .iter()
                .any(|t| token.eq_ignore_ascii_case(t))
        })
        .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
}

/// The header names a client must never set: the identity headers and `Authorization`.
#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    /// Lowercase names with `-`; compared against incoming names with `_` folded to `-`.
    protected: Vec<HeaderName>,
}

// === impl IdentityHeaders ===

impl IdentityHeaders {
    pub fn new(cfg: &HeadersConfig) -> Self {
        let mut protected = vec![AUTHORIZATION];
        let configured = [&cfg.user, &cfg.email, &cfg.preferred_username, &cfg.groups];
        protected.extend(configured.into_iter().flatten().cloned());
        protected.extend(cfg.claims.iter().map(|(name, _)| name.clone()));
        IdentityHeaders { protected }
    }

    /// Remove every protected header, whatever its spelling. Allocates only when a client
    /// actually sent one.
    pub fn strip(&self, headers: &mut HeaderMap) {
        if !headers.keys().any(|name| self.is_protected(name)) {
            return;
        }
        let spoofed: Vec<HeaderName> = headers
            .keys()
            .filter(|name| self.is_protected(name))
            .cloned()
            .collect();
        for name in spoofed {
            tracing::debug!(header = %name, "stripped client-supplied identity header");
            headers.remove(name);
        }
    }

    fn is_protected(&self, name: &HeaderName) -> bool {
        self.protected
            .iter()
            .any(|p| same_after_folding(name.as_str(), p.as_str()))
    }
}

/// `x_forwarded_user` equals `x-forwarded-user`. Header names are already lowercase.
fn same_after_folding(incoming: &str, protected: &str) -> bool {
    incoming.len() == protected.len()
        && incoming
            .bytes()
            .zip(protected.bytes())
            .all(|(a, b)| a == b || (a == b'_' && b == b'-'))
}

/// The value of our session cookie, from any `Cookie` header (HTTP/2 may split them).
pub fn find_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// Every `name=value` pair of every `Cookie` header, as bytes: a pair that is not ASCII
/// neither hides nor is hidden by the others.
pub fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = (&[u8], &[u8])> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .filter_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|b| *b == b'=')?;
            Some((pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii()))
        })
}

/// Remove our cookies (those whose name `ours` accepts) from the `Cookie` headers; other
/// cookies pass untouched. Allocates only when our cookies share a header with other cookies.
pub fn remove_cookies(headers: &mut HeaderMap, ours: impl Fn(&str) -> bool) {
    let pairs = || {
        headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter(|pair| !pair.trim().is_empty())
    };
    let ours = |pair: &str| ours(cookie_name(pair));
    let (mut any_ours, mut all_ours) = (false, true);
    for pair in pairs() {
        let mine = ours(pair);
        any_ours |= mine;
        all_ours &= mine;
    }
    if !any_ours {
        return;
    }
    if all_ours {
        headers.remove(COOKIE);
        return;
    }
    let rebuilt = pairs()
        .map(str::trim)
        .filter(|pair| !ours(pair))
        .collect::<Vec<_>>()
        .join("; ");
    headers.remove(COOKIE);
    if let Ok(value) = HeaderValue::from_str(&rebuilt) {
        headers.insert(COOKIE, value);
    }
}

fn cookie_name(pair: &str) -> &str {
    pair.trim().split('=').next().unwrap_or("").trim()
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

/// Set the identity headers the gateway vouches for (after [`IdentityHeaders::strip`]).
/// The values share the identity's text: no copy, no allocation.
pub fn set_identity(headers: &mut HeaderMap, identity: &Identity) {
    for (name, value) in identity.upstream_headers() {
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

/// Set `X-Forwarded-For/Proto/Host`. A trusted proxy's values are kept and extended; anyone
/// else's are replaced, so the upstream can believe them. `peer_value`: from
/// [`peer_address_value`].
pub fn set_forwarded(headers: &mut HeaderMap, peer: Peer, peer_value: Option<&HeaderValue>) {
    let prior = headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok());
    let xff = match prior {
        Some(prior) if peer.trusted => {
            let ip = canonical(peer.addr.ip());
            HeaderValue::from_str(&format!("{prior}, {ip}")).ok()
        }
        _ => peer_value.cloned(),
    };
    match xff {
        Some(xff) => headers.insert(X_FORWARDED_FOR.clone(), xff),
        None => headers.remove(&X_FORWARDED_FOR),
    };
    if !peer.trusted || !headers.contains_key(&X_FORWARDED_PROTO) {
        let proto = if peer.tls { "https" } else { "http" };
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    }
    if !peer.trusted || !headers.contains_key(&X_FORWARDED_HOST) {
        match headers.get(HOST).cloned() {
            Some(host) => headers.insert(X_FORWARDED_HOST.clone(), host),
            None => headers.remove(&X_FORWARDED_HOST),
        };
    }
    if !peer.trusted {
        headers.remove(&FORWARDED);
    }
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

    fn headers_cfg() -> HeadersConfig {
        HeadersConfig {
            authorization_bearer: true,
            user: Some(HeaderName::from_static("x-forwarded-user")),
            email: Some(HeaderName::from_static("x-forwarded-email")),
            preferred_username: None,
            groups: Some(HeaderName::from_static("x-forwarded-groups")),
            groups_claim: "groups".into(),
            claims: vec![(HeaderName::from_static("x-tenant"), "tenant".into())],
        }
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

    #[test]
    fn strips_identity_headers_in_every_spelling() {
        let rules = IdentityHeaders::new(&headers_cfg());
        let mut h = map(&[
            ("authorization", "Bearer forged"),
            ("x-forwarded-user", "admin"),
            ("x_forwarded_user", "admin"),
            ("X_Forwarded_Email", "a@b"),
            ("x_tenant", "other"),
            ("x-other", "kept"),
        ]);
        rules.strip(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-other"));
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
        set_forwarded(&mut h, untrusted, value.as_ref());
        assert_eq!(h["x-forwarded-for"], "10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "app.example.com");
        let trusted = Peer {
            trusted: true,
            ..untrusted
        };
        let mut h = map(&incoming);
        set_forwarded(&mut h, trusted, value.as_ref());
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "evil.example");
    }

    #[test]
    fn trusted_proxies_match_mapped_ipv4() {
        let nets: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        assert!(is_trusted(&nets, "10.1.2.3".parse().unwrap()));
        assert!(is_trusted(&nets, "::ffff:10.1.2.3".parse().unwrap()));
        assert!(!is_trusted(&nets, "11.1.2.3".parse().unwrap()));
    }
}
