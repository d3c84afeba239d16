//! What a client's request may carry past the gateway.
//!
//! One pass over the request's header names, before the gateway sets any header of its own,
//! removes:
//! - hop-by-hop headers and every header the client's `Connection` names: done first, so
//!   `Connection: close, Authorization` can never remove the `Authorization` the gateway sets
//!   afterwards;
//! - `Authorization` and the identity headers, from everyone;
//! - from a peer outside `trusted_proxies`: the headers that applications and frameworks
//!   believe about the original request or client (`Forwarded`, every `X-Forwarded-*`,
//!   `X-Original-URL`, `X-Real-IP`, method overrides, ...) and `server.strip_request_headers`.
//!   The gateway then sets `X-Forwarded-For/Proto/Host` and `X-Real-IP` itself (`set_forwarded`).
//!
//! Names are compared after folding every character but letters and digits to `-`: servers
//! that hand headers to applications as CGI-style variables (PHP, Rack, WSGI) turn
//! `X-Forwarded-User`, `X_Forwarded_User` and `X.Forwarded.User` into the same
//! `HTTP_X_FORWARDED_USER`, so all of them must go.
//!
//! Most requests carry none of these: the pass then allocates nothing.

use http::header::{AUTHORIZATION, CONNECTION, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue};

use super::{ClaimHeaders, HOP_BY_HOP, connection_listed};
use crate::fold::{fold_name, folds_to};

/// Removed from an untrusted peer's request besides every `X-Forwarded-*` (folded names).
const UNTRUSTED: [&str; 11] = [
    "forwarded",
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

const X_FORWARDED: &[u8] = b"x-forwarded-";

/// The rules of [`InboundHeaders::sanitize`], built once from the configuration.
#[derive(Debug, Clone)]
pub struct InboundHeaders {
    /// Folded names removed from every request: `Authorization` and the identity headers.
    always: Vec<String>,
    /// Folded names removed from an untrusted peer's request (besides `X-Forwarded-*`).
    untrusted: Vec<String>,
}

// === impl InboundHeaders ===

impl InboundHeaders {
    /// `identity`: the headers the gateway sets (the same list strips them); `strip`:
    /// `server.strip_request_headers`.
    pub fn new(identity: &ClaimHeaders, strip: &[HeaderName]) -> Self {
        let always = std::iter::once(&AUTHORIZATION)
            .chain(identity.names().iter())
            .map(|name| fold_name(name.as_str()))
            .collect();
        let untrusted = UNTRUSTED
            .iter()
            .copied()
            .map(str::to_owned)
            .chain(strip.iter().map(|name| fold_name(name.as_str())))
            .collect();
        InboundHeaders { always, untrusted }
    }

    /// Remove what no client may send (see the module docs). `trusted`: the peer is in
    /// `trusted_proxies`. `upgrade`: the request asks for a protocol upgrade (WebSocket), so
    /// `Upgrade` stays and `Connection` becomes `upgrade`. Allocates only for a header that
    /// is neither hop-by-hop nor fine: the usual `Connection: keep-alive` costs no allocation.
    pub fn sanitize(&self, headers: &mut HeaderMap, trusted: bool, upgrade: bool) {
        let mut hop_by_hop = [false; HOP_BY_HOP.len()];
        let mut refused = false;
        for name in headers.keys() {
            match HOP_BY_HOP.iter().position(|hop| hop == name) {
                Some(i) => hop_by_hop[i] = !(upgrade && name == UPGRADE),
                None => refused |= self.is_refused(name.as_str().as_bytes(), trusted),
            }
        }
        if hop_by_hop[0] {
            // `Connection` first: what it names goes before the gateway sets anything.
            for name in connection_listed(headers) {
                headers.remove(name);
            }
        }
        for (name, _) in HOP_BY_HOP
            .iter()
            .zip(hop_by_hop)
            .filter(|(_, there)| *there)
        {
            headers.remove(name);
        }
        if refused {
            let names: Vec<HeaderName> = (headers.keys())
                .filter(|name| self.is_refused(name.as_str().as_bytes(), trusted))
                .cloned()
                .collect();
            for name in names {
                tracing::debug!(header = %name, "stripped a client request header");
                headers.remove(name);
            }
        }
        if upgrade {
            headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        }
    }

    /// Whether the gateway removes a header of this (lowercase) name from this peer.
    fn is_refused(&self, name: &[u8], trusted: bool) -> bool {
        let listed = |list: &[String]| list.iter().any(|p| folds_to(name, p.as_bytes()));
        listed(&self.always)
            || (!trusted
                && (name.len() >= X_FORWARDED.len()
                    && folds_to(&name[..X_FORWARDED.len()], X_FORWARDED)
                    || listed(&self.untrusted)))
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

    fn rules() -> InboundHeaders {
        let cfg = crate::config::HeadersConfig {
            authorization_bearer: true,
            user: Some(HeaderName::from_static("x-forwarded-user")),
            email: Some(HeaderName::from_static("x-forwarded-email")),
            preferred_username: None,
            groups: Some(HeaderName::from_static("x-forwarded-groups")),
            groups_claim: "groups".into(),
            claims: vec![(HeaderName::from_static("x-tenant"), "tenant".into())],
        };
        let identity = ClaimHeaders::new(&cfg);
        InboundHeaders::new(&identity, &[HeaderName::from_static("x-app-secret")])
    }

    fn names(h: &HeaderMap) -> Vec<&str> {
        let mut names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn identity_headers_go_from_everyone_in_every_spelling() {
        for trusted in [false, true] {
            let mut h = map(&[
                ("authorization", "Bearer forged"),
                ("x-forwarded-user", "admin"),
                ("x_forwarded_user", "admin"),
                ("X.Forwarded.Email", "a@b"),
                ("x~tenant", "other"),
                ("x-other", "kept"),
            ]);
            rules().sanitize(&mut h, trusted, false);
            assert_eq!(names(&h), ["x-other"], "trusted: {trusted}");
        }
    }

    #[test]
    fn forwarding_headers_go_from_untrusted_peers_only() {
        let incoming = [
            ("forwarded", "for=1.2.3.4"),
            ("x-forwarded-prefix", "/admin"),
            ("X_Forwarded_Uri", "/admin"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x.forwarded.for", "1.2.3.4"),
            ("x-original-url", "/admin"),
            ("X-Rewrite_URL", "/admin"),
            ("x-real-ip", "1.2.3.4"),
            ("true-client-ip", "1.2.3.4"),
            ("x-http-method-override", "DELETE"),
            ("x_method_override", "DELETE"),
            ("x-app-secret", "1"),
            ("x.app_secret", "1"),
            ("x-forwarded", "kept: not a prefix match"),
            ("accept", "kept"),
        ];
        let mut h = map(&incoming);
        rules().sanitize(&mut h, false, false);
        assert_eq!(names(&h), ["accept", "x-forwarded"]);
        let mut h = map(&incoming);
        rules().sanitize(&mut h, true, false);
        assert_eq!(h.len(), incoming.len(), "a trusted proxy's pass unchanged");
    }

    #[test]
    fn connection_listed_and_hop_by_hop_go_and_upgrade_survives_an_upgrade() {
        let mut h = map(&[
            ("connection", "close, X-Secret, x-kept;bad"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("x-kept", "1"),
        ]);
        rules().sanitize(&mut h, true, false);
        assert_eq!(names(&h), ["x-kept"]);
        let mut h = map(&[
            ("connection", "Upgrade, x-secret"),
            ("x-secret", "1"),
            ("upgrade", "websocket"),
        ]);
        rules().sanitize(&mut h, false, true);
        assert_eq!(names(&h), ["connection", "upgrade"]);
        assert_eq!(h[CONNECTION], "upgrade");
    }

    #[test]
    fn connection_is_parsed_as_bytes() {
        let mut h = HeaderMap::new();
        let value = HeaderValue::from_bytes(b"\xc3\xa9, x-secret").unwrap();
        h.insert(CONNECTION, value);
        h.insert("x-secret", HeaderValue::from_static("1"));
        rules().sanitize(&mut h, true, false);
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn an_ordinary_request_is_left_alone() {
        let mut h = map(&[
            ("accept", "*/*"),
            ("cookie", "a=1"),
            ("x-forwarded-for", "1"),
        ]);
        rules().sanitize(&mut h, true, false);
        assert_eq!(h.len(), 3);
    }
}
