//! The request pipeline. Every request flows one way:
//!
//! 1. built-in endpoints (`/oauth2/*`, `/healthz`, `/readyz`, `/metrics`) are answered first;
//! 2. the path is normalized once and the route is found (`policy`);
//! 3. what no client may send is removed (`headers::InboundHeaders`): hop-by-hop and
//!    `Connection`-listed headers, identity headers and `Authorization` (always), forwarding
//!    headers such as `X-Original-URL` (from untrusted peers);
//! 4. on an authenticated route: the session is loaded (`session`) and refreshed when near
//!    expiry (`refresh`), or a bearer JWT is verified on passthrough routes; the route's
//!    group/claim rules are applied;
//! 5. headers are rewritten (`headers`): our cookies out, `Authorization` and identity in,
//!    `X-Forwarded-*` (and `X-Real-IP`) set. Nothing the client sent is looked at after
//!    step 3 to decide what to remove, so `Connection` cannot remove what the gateway sets;
//! 6. the request is forwarded upstream and the answer streamed back (`proxy`).
//!
//! Any step can stop the request with a [`Reply`] (why the gateway answers itself); the
//! gateway's handler turns it into the answer in one place (`Gateway::rescue`).

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::header::{ACCEPT, AUTHORIZATION};
use http::{HeaderName, HeaderValue, Method, Request, Response};
use hyper::body::Incoming;

use crate::config::{BearerMode, Config, Policy, Preflight};
use crate::endpoints::{self, Builtin};
use crate::headers::{self, InboundHeaders, Peer};
use crate::logging::log_safe;
use crate::login::Logins;
use crate::metrics::{Decision, Metrics, RouteId};
use crate::oidc::Oidc;
use crate::policy::{Route, RouteTable, path::normalize_path};
use crate::proxy::Body;
use crate::proxy::{ProxyError, Upstream, wants_upgrade};
use crate::refresh::{Fresh, Refresher};
use crate::reply::{Reply, Unavailable};
use crate::server::ConnectionStats;
use crate::session::identity::IdentityRules;
use crate::session::{
    CookieCodec, Identity, Lookup, Session, SessionKey, SessionStore, Sessions, Store,
};

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Shared state of one gateway instance.
pub struct Gateway {
    pub cfg: Arc<Config>,
    pub routes: RouteTable,
    pub store: Arc<Store>,
    pub cookies: CookieCodec,
    /// Request -> session: the one way there.
    pub sessions: Sessions,
    pub logins: Logins,
    pub oidc: Arc<Oidc>,
    pub refresher: Arc<Refresher>,
    pub rules: Arc<IdentityRules>,
    pub inbound: InboundHeaders,
    pub upstream: Upstream,
    pub metrics: Arc<Metrics>,
    /// Client connections of the main listener.
    pub connections: Arc<ConnectionStats>,
    request_ids: AtomicU64,
}

/// Who a request is, once authenticated.
pub enum Authenticated {
    Session(SessionKey, Arc<Session>),
    /// A machine client's own JWT on a bearer-passthrough route.
    Bearer(HeaderValue, Box<Identity>),
}

impl Authenticated {
    pub fn identity(&self) -> &Identity {
        match self {
            Authenticated::Session(_, s) => &s.identity,
            Authenticated::Bearer(_, identity) => identity,
        }
    }

    /// The `Authorization` value for the upstream: the token of resource `index` for a
    /// session (`None` while that resource's token is missing), the client's own token for a
    /// passthrough bearer.
    pub fn bearer(&self, index: usize) -> Option<&HeaderValue> {
        match self {
            Authenticated::Session(_, s) => s.tokens.bearer_for(index),
            Authenticated::Bearer(token, _) => Some(token),
        }
    }
}

/// What `dispatch` hands back for metrics and the access log.
struct Outcome {
    route: RouteId,
    /// The answer, or why the gateway answers itself.
    result: Result<Response<Body>, Reply>,
    upstream_time: Option<Duration>,
}

impl Outcome {
    fn refused(route: RouteId, reply: Reply) -> Self {
        Outcome {
            route,
            result: Err(reply),
            upstream_time: None,
        }
    }
}

/// Whether an unauthenticated request may be sent to the login page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Navigation {
    /// A browser navigation goes to login (302); anything else gets 401.
    Allowed,
    /// Always 401: a machine client's bearer token was refused, or forward auth (the proxy
    /// turns our 401 into a login redirect itself).
    Never,
}

impl Gateway {
    /// `rules`: built from `cfg` by the caller ([`IdentityRules::for_config`]), which gives
    /// the Redis store the same rules (records read back share their header names).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: Arc<Config>,
        store: Arc<Store>,
        oidc: Arc<Oidc>,
        upstream: Upstream,
        rules: Arc<IdentityRules>,
    ) -> Arc<Self> {
        let routes = RouteTable::new(&cfg.routes, &cfg.oidc.resource);
        let labels: Vec<String> = routes
            .labels()
            .map(str::to_owned)
            .chain(Builtin::ALL.iter().map(|b| b.path().to_owned()))
            .collect();
        let metrics = Arc::new(Metrics::new(labels.iter().map(String::as_str)));
        let refresher = Arc::new(Refresher::new(
            oidc.clone(),
            store.clone(),
            metrics.clone(),
            rules.clone(),
            cfg.session.refresh_before_expiry,
        ));
        Arc::new(Gateway {
            routes,
            cookies: CookieCodec::new(&cfg.session),
            sessions: Sessions::new(store.clone(), &cfg.session),
            logins: Logins::new(&cfg.session, &cfg.server.public_url, store.clone()),
            inbound: InboundHeaders::new(rules.claim_headers(), &cfg.server.strip_request_headers),
            store,
            oidc,
            refresher,
            rules,
            upstream,
            metrics,
            connections: Arc::default(),
            request_ids: AtomicU64::new(rand::random::<u32>() as u64 * 1_000_000),
            cfg,
        })
    }

    /// Metrics series of a built-in endpoint (after the routes and the fallback).
    pub fn builtin_route_id(&self, builtin: Builtin) -> RouteId {
        RouteId(self.routes.len_with_fallback() + builtin as usize)
    }

    /// Step 1, then the path is normalized once: built-in endpoints are recognized on the
    /// normalized path too, so `/%6fauth2/start` is the gateway's, never the upstream's.
    /// `uri`: the request's own URI, cloned once by `handle` (for the access log).
    async fn dispatch(
        self: &Arc<Self>,
        req: Request<Incoming>,
        peer: Peer,
        client: &Arc<ClientConnection>,
        uri: &http::Uri,
    ) -> Outcome {
        let metrics_elsewhere = self.cfg.server.metrics_listen.is_some();
        if let Some(builtin) = Builtin::recognize(req.uri().path(), metrics_elsewhere) {
            return self.builtin(builtin, req, peer).await;
        }
        let path = match normalize_path(uri.path()) {
            Ok(path) => path,
            Err(e) => {
                tracing::debug!(error = ?e, "refused request path");
                let reply = Reply::BadRequest("Bad request: path not accepted");
                return Outcome::refused(self.routes.find(req.method(), "/").id, reply);
            }
        };
        if let Some(builtin) = Builtin::recognize(&path, metrics_elsewhere) {
            return self.builtin(builtin, req, peer).await;
        }
        self.proxy(req, peer, client, &path).await
    }

    async fn builtin(
        self: &Arc<Self>,
        builtin: Builtin,
        req: Request<Incoming>,
        peer: Peer,
    ) -> Outcome {
        Outcome {
            route: self.builtin_route_id(builtin),
            result: endpoints::answer(self, builtin, req, peer).await,
            upstream_time: None,
        }
    }

    /// Steps 2 to 6 of the pipeline, on the normalized `path`.
    async fn proxy(
        self: &Arc<Self>,
        mut req: Request<Incoming>,
        peer: Peer,
        client: &Arc<ClientConnection>,
        path: &str,
    ) -> Outcome {
        let route = self.routes.find(req.method(), path);
        let offered_bearer = match route.rule.bearer {
            BearerMode::Passthrough => headers::bearer_token(req.headers()),
            BearerMode::Off => None,
        };
        let upgrade = wants_upgrade(&req);
        self.inbound
            .sanitize(req.headers_mut(), peer.trusted, upgrade);
        match route.rule.policy {
            Policy::Deny => {
                self.metrics.decision(route.id, Decision::Deny);
                return Outcome::refused(route.id, Reply::Deny);
            }
            Policy::Public => {}
            // Browsers send no credentials on a preflight: a route may let the app answer
            // CORS itself, without identity (contract Details 26).
            Policy::Authenticated
                if route.rule.preflight == Preflight::Forward && is_preflight(&req) => {}
            Policy::Authenticated => {
                let navigation = Navigation::Allowed;
                let auth = match self
                    .authenticate(&req, route, offered_bearer, path, navigation)
                    .await
                {
                    Ok(auth) => auth,
                    Err(reply) => return Outcome::refused(route.id, reply),
                };
                if let Err(refusal) =
                    route.authorize(auth.identity().groups(), auth.identity().claims())
                {
                    self.metrics.decision(route.id, Decision::Forbid);
                    return Outcome::refused(route.id, refusal.into());
                }
                if let Err(reply) = self.vouch(req.headers_mut(), &auth, route) {
                    return Outcome::refused(route.id, reply);
                }
            }
        }
        self.metrics.decision(route.id, Decision::Allow);
        self.forward(req, peer, client, route.id, path).await
    }

    /// Load (and refresh) the session, or verify a passthrough bearer token.
    pub async fn authenticate<B>(
        &self,
        req: &Request<B>,
        route: &Route,
        offered_bearer: Option<String>,
        path: &str,
        navigation: Navigation,
    ) -> Result<Authenticated, Reply> {
        let lookup = match self.sessions.lookup(req.headers()).await {
            Ok(lookup) => lookup,
            Err(e) => {
                tracing::warn!(error = %log_safe(&e), "session store unavailable");
                return Err(e.into());
            }
        };
        let had_cookie = match lookup {
            Lookup::Live(key, session) => match self.refresher.ensure_fresh(key, session).await {
                Fresh::Ready(session) => return Ok(Authenticated::Session(key, session)),
                Fresh::Ended => {
                    // Idempotent: a rejected refresh already deleted it; an expired session
                    // without a refresh token is deleted here.
                    if let Err(e) = self.store.delete(&key).await {
                        tracing::warn!(
                            error = %log_safe(&e),
                            "could not delete an ended session"
                        );
                    }
                    return Err(self.unauthenticated(req, route, path, true, None, navigation));
                }
                Fresh::Stalled(stall) => return Err(stall.into()),
            },
            Lookup::Gone(_) => true,
            Lookup::NoCookie => false,
        };
        // Contract Details 5: while the provider is undiscovered nobody can log in (and no
        // bearer token can be verified), so a request without a live session is told to come
        // back later (503 + Retry-After, as `/oauth2/start` answers) instead of being sent to
        // a login that cannot work (302) or told its credentials are wrong (401).
        if !self.oidc.is_ready() {
            return Err(Unavailable::ProviderNotReady.into());
        }
        if let Some(token) = offered_bearer {
            return match crate::bearer::verify(self, &token).await {
                Ok(auth) => Ok(auth),
                // A machine client: never a login page.
                Err(e) => Err(self.unauthenticated(
                    req,
                    route,
                    path,
                    false,
                    Some(e.description()),
                    Navigation::Never,
                )),
            };
        }
        // A cookie that verified but names no live session is cleared.
        Err(self.unauthenticated(req, route, path, had_cookie, None, navigation))
    }

    /// 302 to login for a browser navigation (when `navigation` allows it), else 401
    /// (contract Behaviour, Details 9). Counted as a redirect decision when the request is a
    /// browser navigation, whoever turns it into one (forward auth: the proxy).
    pub fn unauthenticated<B>(
        &self,
        req: &Request<B>,
        route: &Route,
        path: &str,
        clear_cookie: bool,
        bearer_error: Option<&'static str>,
        navigation: Navigation,
    ) -> Reply {
        let redirect = !route.rule.api && is_browser_navigation(req);
        let decision = if redirect {
            Decision::Redirect
        } else {
            Decision::Unauthorized
        };
        self.metrics.decision(route.id, decision);
        let landing = match req.uri().query() {
            Some(q) => Cow::Owned(format!("{path}?{q}")),
            None => Cow::Borrowed(path),
        };
        let redirect = redirect && navigation == Navigation::Allowed;
        Reply::unauthenticated(self.login_url(&landing), redirect, bearer_error)
            .clearing(clear_cookie.then(|| self.sessions.clear_cookie()))
    }

    /// `<public_url>/oauth2/start?rd=<landing>`.
    pub fn login_url(&self, landing: &str) -> String {
        let base = self.cfg.server.public_url.as_str().trim_end_matches('/');
        let rd: String = url::form_urlencoded::byte_serialize(landing.as_bytes()).collect();
        format!("{base}/oauth2/start?rd={rd}")
    }

    /// Step 5a: `Authorization` and identity headers in (our cookies go out in `forward`,
    /// on every route). The route's `bearer_resource` chooses which resource's token goes
    /// upstream.
    pub fn vouch(
        &self,
        headers: &mut http::HeaderMap,
        auth: &Authenticated,
        route: &Route,
    ) -> Result<(), Reply> {
        if self.cfg.headers.authorization_bearer {
            let Some(bearer) = auth.bearer(route.bearer_index) else {
                // The provider could not be asked for this resource's token yet; the next
                // request's refresh will try again.
                return Err(Unavailable::TokenMissing.into());
            };
            headers.insert(AUTHORIZATION, bearer.clone());
        }
        headers::set_identity(headers, auth.identity().upstream_headers());
        Ok(())
    }

    /// Steps 5b and 6.
    async fn forward(
        &self,
        mut req: Request<Incoming>,
        peer: Peer,
        client: &Arc<ClientConnection>,
        route: RouteId,
        path: &str,
    ) -> Outcome {
        // Our cookies never reach the upstream, on every route (contract Behaviour: "the
        // session cookie is not forwarded upstream"), public routes and CORS preflights
        // included. Done here, once, after authentication has read them.
        headers::remove_cookies(req.headers_mut(), |name| {
            name == self.sessions.cookie().name() || self.logins.is_login_cookie(name)
        });
        headers::set_forwarded(req.headers_mut(), peer, client.peer_address.as_ref());
        let started = Instant::now();
        let result = self.upstream.forward(req, path).await;
        Outcome {
            route,
            result: result.map_err(Reply::from),
            upstream_time: Some(started.elapsed()),
        }
    }

    /// The one rescue point: every refusal of the pipeline and of the endpoints becomes its
    /// answer here (`Reply::into_response`). Upstream failures are counted, and returned for
    /// the access log line; the rest is a decision or already logged where it happened.
    fn rescue(&self, reply: Reply) -> (Response<Body>, Option<String>) {
        let upstream_error = reply.upstream_error().map(|e: &ProxyError| {
            match e {
                ProxyError::Timeout(_) => self.metrics.upstream_timeout(),
                // Counted by the upstream's own connection metrics.
                ProxyError::Busy(_) => {}
                ProxyError::Unreachable(_) | ProxyError::Failed(_) | ProxyError::BadUri(_) => {
                    self.metrics.upstream_unreachable()
                }
            }
            crate::oidc::error_chain(e as &dyn std::error::Error)
        });
        if upstream_error.is_none() {
            tracing::debug!(?reply, "request answered by the gateway");
        }
        (reply.into_response(), upstream_error)
    }

    /// Keep a client's `X-Request-Id`, or make one, so logs on both sides correlate. Kept
    /// only when it is one value of at most 128 visible ASCII characters (what the log line
    /// can show); anything else is replaced, every line of it.
    fn request_id(&self, req: &mut Request<Incoming>) -> HeaderValue {
        let mut ids = req.headers().get_all(&X_REQUEST_ID).iter();
        if let (Some(id), None) = (ids.next(), ids.next())
            && (1..=128).contains(&id.len())
            && id.to_str().is_ok()
        {
            return id.clone();
        }
        let n = self.request_ids.fetch_add(1, Ordering::Relaxed);
        let id = HeaderValue::from(n);
        req.headers_mut().insert(X_REQUEST_ID.clone(), id.clone());
        id
    }
}

/// What the gateway keeps per client connection.
pub struct ClientConnection {
    /// `X-Forwarded-For` for an untrusted peer, formatted once.
    peer_address: Option<HeaderValue>,
}

impl crate::server::Handler for Gateway {
    type PerConnection = ClientConnection;
    type Body = Body;

    fn connection(&self, peer: &Peer) -> ClientConnection {
        ClientConnection {
            peer_address: headers::peer_address_value(peer),
        }
    }

    async fn handle(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        peer: Peer,
        client: Arc<ClientConnection>,
    ) -> Response<Body> {
        let started = Instant::now();
        self.metrics.request_started();
        let method = req.method().clone();
        let uri = req.uri().clone();
        let request_id = self.request_id(&mut req);
        let outcome = self.dispatch(req, peer, &client, &uri).await;
        let (response, upstream_error) = match outcome.result {
            Ok(response) => (response, None),
            Err(reply) => self.rescue(reply),
        };
        let elapsed = started.elapsed();
        let status = response.status().as_u16();
        self.metrics
            .request_finished(outcome.route, status, elapsed);
        let request_id = request_id.to_str().unwrap_or("-");
        let upstream_us = outcome.upstream_time.map(|d| d.as_micros() as u64);
        let latency_us = elapsed.as_micros() as u64;
        match &upstream_error {
            None => tracing::info!(
                target: "authgate::access",
                request_id = %log_safe(request_id), %method, path = %log_safe(uri.path()),
                status, latency_us, upstream_us, peer = %peer.addr,
            ),
            Some(error) => tracing::warn!(
                target: "authgate::access",
                request_id = %log_safe(request_id), %method, path = %log_safe(uri.path()),
                status, latency_us, upstream_us, peer = %peer.addr,
                upstream_error = %log_safe(error),
            ),
        }
        response
    }
}

/// A browser navigation: GET or HEAD that accepts HTML and is not an XHR.
pub fn is_browser_navigation<B>(req: &Request<B>) -> bool {
    let method_ok = req.method() == Method::GET || req.method() == Method::HEAD;
    let accepts_html = req
        .headers()
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"));
    let xhr = req
        .headers()
        .get("x-requested-with")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"xmlhttprequest"));
    method_ok && accepts_html && !xhr
}

/// A CORS preflight: `OPTIONS` (exactly: browsers send it uppercase, and anything else is
/// judged like any request) with `Origin` and `Access-Control-Request-Method`.
pub fn is_preflight<B>(req: &Request<B>) -> bool {
    req.method() == Method::OPTIONS
        && req.headers().contains_key(http::header::ORIGIN)
        && req
            .headers()
            .contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
}
