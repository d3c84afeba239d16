//! `/oauth2/auth`: forward auth for nginx `auth_request`, Traefik `forwardAuth`, Caddy
//! `forward_auth` and Envoy `ext_authz`.
//!
//! From a peer in `trusted_proxies`, the original request is taken from `X-Forwarded-Method`
//! and `X-Forwarded-Uri` (or `X-Original-URI`), and judged by the same route rules as a
//! proxied request. The check fails closed: a missing or unusable method or URI is answered 400,
//! never judged as some other request. From anyone else those headers are ignored and the
//! check is a plain "is there a valid session", judged as the route of no configured path
//! (`authenticated`, no requirements): neither a `public` route nor a `deny` one can be picked
//! by an untrusted caller. The session is refreshed the same way, and the answer never needs
//! a cookie: 202 with the headers the upstream would get, 401 (JSON with `login_url`) or 403.
//! The access token (`Authorization`) is only ever handed to a trusted proxy.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, SET_COOKIE};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use percent_encoding::{AsciiSet, CONTROLS, percent_encode};

use super::Shared;
use crate::auth::{Authenticator, Navigation, is_preflight};
use crate::config::{BearerMode, Policy, Preflight};
use crate::headers::{self, Peer};
use crate::host::RequestHost;
use crate::metrics::{Decision, Metrics};
use crate::policy::path::normalize_path;
use crate::policy::{Route, RouteTable};
use crate::proxy::Body;
use crate::reply::Reply;

static X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
static X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
static X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Bytes a request-target may not hold (RFC 3986 `pchar`, `/` and `?` are kept, and `%`,
/// whose escapes `normalize_path` checks): controls, space, non-ASCII and `"<>[\]^`{|}`.
/// nginx passes `$request_uri` as the client sent it, raw bytes included.
const NOT_IN_URI: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
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

/// What forward auth needs: the routes, the authenticator, the decision counters.
pub struct ForwardAuth {
    routes: Arc<RouteTable>,
    auth: Arc<Authenticator>,
    metrics: Arc<Metrics>,
}

// === impl ForwardAuth ===

impl ForwardAuth {
    pub fn new(shared: &Shared) -> Self {
        ForwardAuth {
            routes: shared.routes.clone(),
            auth: shared.auth.clone(),
            metrics: shared.metrics.clone(),
        }
    }

    pub async fn check<B>(&self, req: Request<B>, peer: Peer) -> Result<Response<Body>, Reply> {
        let trusted = peer.trusted;
        // Judge the original request: its method and URI, with this request's credentials
        // (its headers are reused as they are, not copied).
        let (mut parts, _) = req.into_parts();
        let (route, path) = if trusted {
            let (method, uri) = match original_request(&parts.headers) {
                Ok(original) => original,
                Err(reason) => {
                    tracing::debug!(reason, "forward auth: original request refused");
                    return Err(Reply::BadRequest(reason));
                }
            };
            let Ok(path) = normalize_path(uri.path()) else {
                return Err(Reply::BadRequest("Bad request: path not accepted"));
            };
            let path = path.into_owned();
            let host = original_host(&parts.uri, &parts.headers);
            if host == RequestHost::Malformed && self.routes.has_hosts() {
                return Err(Reply::BadRequest("Bad request: host not accepted"));
            }
            (parts.method, parts.uri) = (method, uri);
            (self.routes.find(&parts.method, host.name(), &path), path)
        } else {
            (parts.method, parts.uri) = (Method::GET, Uri::from_static("/"));
            (self.routes.fallback(), "/".to_owned())
        };
        let mut vouched = self
            .judge(Request::from_parts(parts, ()), route, &path)
            .await?;
        if !trusted {
            // Only a proxy needs the token. Anyone else calling this directly is most likely a
            // script in the app's own pages (same origin, so it can read response headers):
            // handing it the access token would turn an XSS into token theft.
            vouched.remove(AUTHORIZATION);
        }
        Ok(accepted(StatusCode::ACCEPTED, vouched))
    }

    /// `ANY /oauth2/ext_authz/<original path>`: Envoy's and Istio's HTTP `ext_authz`, which
    /// send the original method, the original path after a configured prefix (with its
    /// query), and the original `Host`; they allow the request only on 200. Trusted proxies
    /// only: anyone else gets 403 (this dialect carries the original request in the request
    /// line itself, so no header could be ignored instead). Same decision, refresh and
    /// headers as `/oauth2/auth`.
    pub async fn ext_authz<B>(
        &self,
        req: Request<B>,
        peer: Peer,
        prefix: &str,
    ) -> Result<Response<Body>, Reply> {
        if !peer.trusted {
            return Err(Reply::Deny);
        }
        let (mut parts, _) = req.into_parts();
        let raw = parts.uri.path_and_query().map_or("", PathAndQuery::as_str);
        // The prefix as sent (an encoded prefix was recognized on the normalized path: its
        // original path cannot be told apart from the prefix, so it is refused).
        let Some(original) = raw.strip_prefix(prefix).filter(|o| o.starts_with('/')) else {
            return Err(Reply::BadRequest(
                "Bad request: the forwarded URI is not a path",
            ));
        };
        let uri = original_uri(original.as_bytes()).map_err(Reply::BadRequest)?;
        let Ok(path) = normalize_path(uri.path()) else {
            return Err(Reply::BadRequest("Bad request: path not accepted"));
        };
        let path = path.into_owned();
        let host = original_host(&parts.uri, &parts.headers);
        if host == RequestHost::Malformed && self.routes.has_hosts() {
            return Err(Reply::BadRequest("Bad request: host not accepted"));
        }
        let route = self.routes.find(&parts.method, host.name(), &path);
        parts.uri = uri;
        let vouched = self
            .judge(Request::from_parts(parts, ()), route, &path)
            .await?;
        Ok(accepted(StatusCode::OK, vouched))
    }

    /// The decision on the original request (`original`: its method, URI and this request's
    /// credentials): the headers the upstream would get, or why not.
    async fn judge(
        &self,
        original: Request<()>,
        route: &Route,
        path: &str,
    ) -> Result<HeaderMap, Reply> {
        match route.rule.policy {
            Policy::Deny => {
                self.metrics.decision(route.id, Decision::Deny);
                return Err(Reply::Deny);
            }
            Policy::Public => {
                self.metrics.decision(route.id, Decision::Allow);
                return Ok(HeaderMap::new());
            }
            // As the gateway would forward it: without identity.
            Policy::Authenticated
                if route.rule.preflight == Preflight::Forward && is_preflight(&original) =>
            {
                self.metrics.decision(route.id, Decision::Allow);
                return Ok(HeaderMap::new());
            }
            Policy::Authenticated => {}
        }
        let offered = match route.rule.bearer {
            BearerMode::Passthrough => headers::bearer_token(original.headers()),
            BearerMode::Off => None,
        };
        // A proxy turns our 401 into a login redirect itself: never answer 302 here.
        let auth = (self.auth)
            .authenticate(&original, route, offered, path, Navigation::Never)
            .await?;
        let identity = auth.identity();
        if let Err(refusal) =
            route.authorize(identity.groups(), identity.email(), identity.claims())
        {
            self.metrics.decision(route.id, Decision::Forbid);
            return Err(refusal.into());
        }
        (self.auth).step_up(&original, route, &auth, path, Navigation::Never)?;
        self.metrics.decision(route.id, Decision::Allow);
        let mut vouched = HeaderMap::new();
        self.auth.vouch(&mut vouched, &auth, route)?;
        Ok(vouched)
    }
}

/// The answer `ok` with the vouched headers: the map `judge` built is the answer's own (no
/// second map, no copy), a vouched header winning over the plain-text defaults as before.
fn accepted(status: StatusCode, mut headers: HeaderMap) -> Response<Body> {
    headers.remove(SET_COOKIE);
    (headers.entry(CONTENT_TYPE)).or_insert(HeaderValue::from_static("text/plain; charset=utf-8"));
    (headers.entry(CACHE_CONTROL)).or_insert(HeaderValue::from_static("no-store"));
    let mut response = Response::new(Body::full(Bytes::from_static(b"ok\n")));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// The request a trusted proxy asks about, or why it cannot be judged (the 400 body).
/// Nothing is guessed: no method, no URI, two of either, or one that is not an origin-form
/// path (`/...`) is refused.
pub(crate) fn original_request(headers: &HeaderMap) -> Result<(Method, Uri), &'static str> {
    let method = single(headers, &X_FORWARDED_METHOD)
        .ok_or("Bad request: X-Forwarded-Method must be sent exactly once")?;
    // A token (RFC 9110 section 9.1), kept as sent: route methods compare case-insensitively.
    let method =
        Method::from_bytes(method).map_err(|_| "Bad request: invalid X-Forwarded-Method")?;
    let uri = if headers.contains_key(&X_FORWARDED_URI) {
        single(headers, &X_FORWARDED_URI)
    } else {
        single(headers, &X_ORIGINAL_URI)
    };
    let uri =
        uri.ok_or("Bad request: X-Forwarded-Uri or X-Original-URI must be sent exactly once")?;
    Ok((method, original_uri(uri)?))
}

/// The host of the request a trusted proxy asks about: its one `X-Forwarded-Host`, else
/// the check request's own host (nginx and Envoy keep the original `Host`).
fn original_host(uri: &Uri, headers: &HeaderMap) -> RequestHost {
    if headers.contains_key(&X_FORWARDED_HOST) {
        return match single(headers, &X_FORWARDED_HOST) {
            Some(host) => RequestHost::parse(host),
            None => RequestHost::Malformed,
        };
    }
    RequestHost::of(uri, headers)
}

/// The value of a header sent exactly once.
fn single<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h [u8]> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => Some(value.as_bytes()),
        _ => None,
    }
}

/// The forwarded URI as an origin-form request target: bytes a URI may not hold are
/// percent-encoded (nginx forwards `$request_uri` raw: `"`, spaces, UTF-8), so the path is
/// judged on what the app receives, `/denied/x?q="` as `/denied/x`. A `#` is refused: no
/// request target holds one, and an app may read it as the end of the path or as part of it.
fn original_uri(raw: &[u8]) -> Result<Uri, &'static str> {
    if raw.first() != Some(&b'/') || raw.contains(&b'#') {
        return Err("Bad request: the forwarded URI is not a path");
    }
    let encoded: Cow<'_, str> = percent_encode(raw, NOT_IN_URI).into();
    let path_and_query = PathAndQuery::try_from(encoded.as_ref())
        .map_err(|_| "Bad request: the forwarded URI is not a path")?;
    Ok(Uri::from(path_and_query))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(raw: &[u8]) -> Result<String, &'static str> {
        original_uri(raw).map(|u| u.to_string())
    }

    #[test]
    fn raw_bytes_are_encoded_before_the_path_is_judged() {
        assert_eq!(uri(b"/denied/x?q=\"").unwrap(), "/denied/x?q=%22");
        assert_eq!(uri(b"/admin/\xc3\xa9").unwrap(), "/admin/%C3%A9");
        assert_eq!(uri(b"/a b/{x}|^`").unwrap(), "/a%20b/%7Bx%7D%7C%5E%60");
        assert_eq!(uri(b"/a\\b").unwrap(), "/a%5Cb");
        assert_eq!(uri(b"/plain?x=1&y=/z").unwrap(), "/plain?x=1&y=/z");
    }

    #[test]
    fn what_is_not_a_path_is_refused() {
        for raw in [
            &b""[..],
            b"*",
            b"admin",
            b"http://evil.example/admin",
            b"/public#/../admin",
        ] {
            assert!(uri(raw).is_err(), "{raw:?}");
        }
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn method_and_uri_are_required_exactly_once() {
        let ok = original_request(&map(&[
            ("x-forwarded-method", "delete"),
            ("x-original-uri", "/x"),
        ]))
        .unwrap();
        assert_eq!((ok.0.as_str(), ok.1.path()), ("delete", "/x"));
        // X-Forwarded-Uri wins over X-Original-URI.
        let ok = original_request(&map(&[
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/a"),
            ("x-original-uri", "/b"),
        ]))
        .unwrap();
        assert_eq!(ok.1.path(), "/a");
        for refused in [
            &[("x-forwarded-uri", "/x")][..],
            &[("x-forwarded-method", "GET")],
            &[("x-forwarded-method", ""), ("x-forwarded-uri", "/x")],
            &[("x-forwarded-method", "G T"), ("x-forwarded-uri", "/x")],
            &[
                ("x-forwarded-method", "GET,POST"),
                ("x-forwarded-uri", "/x"),
            ],
            &[
                ("x-forwarded-method", "GET"),
                ("x-forwarded-method", "POST"),
                ("x-forwarded-uri", "/x"),
            ],
            &[
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/x"),
                ("x-forwarded-uri", "/y"),
            ],
        ] {
            assert!(original_request(&map(refused)).is_err(), "{refused:?}");
        }
    }
}
