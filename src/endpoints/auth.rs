//! `/oauth2/auth`: forward auth for nginx `auth_request`, Traefik `forwardAuth` and Envoy
//! `ext_authz` (contract Details 12).
//!
//! The original request is taken from `X-Forwarded-Method` + `X-Forwarded-Uri`, or
//! `X-Original-URI`, believed only from `trusted_proxies`; from anyone else those headers are
//! ignored and the check is a plain "is there a valid session". The same route policies
//! apply, the session is refreshed the same way, and the answer never needs a cookie: 202
//! with the headers the upstream would get, 401 (JSON with `login_url`) or 403. The access
//! token (`Authorization`) is only ever handed to a trusted proxy.

use std::sync::Arc;

use http::header::{AUTHORIZATION, SET_COOKIE};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};

use crate::body::Body;
use crate::config::{BearerMode, Policy};
use crate::gateway::Gateway;
use crate::headers::{self, Peer};
use crate::metrics::Decision;
use crate::policy::path::normalize_path;
use crate::response::{self, Halt};

pub async fn check<B>(gateway: &Arc<Gateway>, req: Request<B>, peer: Peer) -> Response<Body> {
    let trusted = peer.trusted;
    let (method, uri) = original_request(req.headers(), trusted);
    // Judge the original request: its method and URI, with this request's credentials
    // (its headers are reused as they are, not copied).
    let (mut parts, _) = req.into_parts();
    parts.method = method;
    parts.uri = uri;
    let original = Request::from_parts(parts, ());
    let Ok(path) = normalize_path(original.uri().path()) else {
        return Halt::BadRequest("Bad request: path not accepted").into_response();
    };
    let route = gateway.routes.find(original.method(), &path);
    match route.rule.policy {
        Policy::Deny => {
            gateway.metrics.decision(route.id, Decision::Deny);
            return Halt::Deny.into_response();
        }
        Policy::Public => {
            gateway.metrics.decision(route.id, Decision::Allow);
            return accepted(HeaderMap::new());
        }
        Policy::Authenticated => {}
    }
    let offered = match route.rule.bearer {
        BearerMode::Passthrough => headers::bearer_token(original.headers()),
        BearerMode::Off => None,
    };
    let auth = match gateway.authenticate(&original, route, offered, &path).await {
        Ok(auth) => auth,
        Err(mut halt) => {
            // A proxy turns our 401 into a login redirect itself: never answer 302 here.
            if let Halt::Unauthenticated { redirect, .. } = &mut halt {
                *redirect = false;
            }
            return halt.into_response();
        }
    };
    if let Err(refusal) = route.authorize(auth.identity()) {
        gateway.metrics.decision(route.id, Decision::Forbid);
        return response::text(StatusCode::FORBIDDEN, refusal.message());
    }
    gateway.metrics.decision(route.id, Decision::Allow);
    let mut vouched = HeaderMap::new();
    if let Err(halt) = gateway.vouch(&mut vouched, &auth, route) {
        return halt.into_response();
    }
    if !trusted {
        // Only a proxy needs the token. Anyone else calling this directly is most likely a
        // script in the app's own pages (same origin, so it can read response headers):
        // handing it the access token would turn an XSS into token theft.
        vouched.remove(AUTHORIZATION);
    }
    accepted(vouched)
}

fn accepted(headers: HeaderMap) -> Response<Body> {
    let mut response = response::text(StatusCode::ACCEPTED, "ok");
    response.headers_mut().extend(headers);
    response.headers_mut().remove(SET_COOKIE);
    response
}

/// The request the proxy is asking about.
fn original_request(headers: &HeaderMap, trusted: bool) -> (Method, Uri) {
    let fallback = (Method::GET, Uri::from_static("/"));
    if !trusted {
        return fallback;
    }
    let method = headers
        .get("x-forwarded-method")
        .and_then(|v| Method::from_bytes(v.as_bytes()).ok())
        .unwrap_or(Method::GET);
    let uri = headers
        .get("x-forwarded-uri")
        .or_else(|| headers.get("x-original-uri"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Uri>().ok())
        .filter(|uri| uri.path().starts_with('/'));
    match uri {
        Some(uri) => (method, uri),
        None => fallback,
    }
}
