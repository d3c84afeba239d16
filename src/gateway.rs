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

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;

use crate::auth::{Authenticated, Authenticator, Navigation, is_preflight};
use crate::clock::Clock;
use crate::config::{BearerMode, Config, Policy, Preflight, ServerConfig};
use crate::endpoints::{Builtin, Endpoints, Shared};
use crate::headers::{self, InboundHeaders, Peer};
use crate::host::RequestHost;
use crate::login::Logins;
use crate::login::preserve::{self, FormPost, Preserved};
use crate::metrics::{Decision, Metrics, ReloadStats, RouteId};
use crate::oidc::{Oidc, Providers};
use crate::policy::{Route, RouteTable, path::normalize_path};
use crate::proxy::Body;
use crate::proxy::{ProxyError, TunnelEnd, Upstreams, wants_upgrade};
use crate::refresh::Refresher;
use crate::reply::Reply;
use crate::server::ConnectionStats;
use crate::session::identity::IdentityRules;
use crate::session::tunnels::Tunnels;
use crate::session::{CookieCodec, Sessions, Store};
use crate::tls::ServerCert;

mod access;
mod reload;

use access::{RequestIds, Seen, X_REQUEST_ID};
pub use reload::ReloadError;

/// One gateway instance: what lives as long as the process (the session store, the
/// connection counters, the listener's certificate), and the [`Runtime`] built from the
/// configuration, behind one pointer that a reload swaps (`reload.rs`). Each request loads
/// that pointer once at its start and runs on what it got: the old configuration or the
/// new one, never a mix; requests in flight finish on the old one.
pub struct Gateway {
    runtime: ArcSwap<Runtime>,
    store: Arc<Store>,
    clock: Clock,
    /// Client connections of the main listener.
    connections: Arc<ConnectionStats>,
    request_ids: RequestIds,
    /// `authgate_config_reloads_total` and the time of the last good one.
    reloads: Arc<ReloadStats>,
    /// The listener's certificate (with `server.tls_cert_file`): a reload swaps it.
    tls: Option<Arc<ServerCert>>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    /// Open tunnels by session: closed when their session ends (outlive a reload).
    tunnels: Arc<Tunnels>,
    /// Form posts kept across a login (outlive a reload).
    preserved: Arc<Preserved>,
}

/// Everything built from one configuration: the pipeline's parts.
pub struct Runtime {
    config: Arc<Config>,
    server: ServerConfig,
    routes: Arc<RouteTable>,
    auth: Arc<Authenticator>,
    refresher: Arc<Refresher>,
    endpoints: Endpoints,
    inbound: InboundHeaders,
    sessions: Arc<Sessions>,
    logins: Arc<Logins>,
    upstreams: Arc<Upstreams>,
    providers: Arc<Providers>,
    rules: Arc<IdentityRules>,
    metrics: Arc<Metrics>,
    preserved: Arc<Preserved>,
    tunnels: Arc<Tunnels>,
    /// `session.absolute_timeout`: a tunnel never outlives it.
    absolute_timeout: Duration,
}

/// What `dispatch` hands back for metrics and the access log.
struct Outcome {
    route: RouteId,
    /// The answer, or why the gateway answers itself.
    result: Result<Response<Body>, Reply>,
    upstream_time: Option<Duration>,
    /// The built-in endpoint that answered, if one did.
    builtin: Option<Builtin>,
    /// The `sub` of the identity the request was forwarded with (UTF-8, sharing the
    /// identity's text: no copy per request).
    sub: Option<Bytes>,
    /// The upstream the request went to (its index in `Upstreams`), if it went to one.
    upstream: Option<usize>,
}

impl Outcome {
    fn refused(route: RouteId, reply: Reply) -> Self {
        Outcome {
            route,
            result: Err(reply),
            upstream_time: None,
            builtin: None,
            sub: None,
            upstream: None,
        }
    }
}

impl Gateway {
    /// `rules`: built from `cfg` by the caller ([`IdentityRules::for_config`]), which gives
    /// the Redis store the same rules (records read back share their header names).
    /// `tls`: the listener's certificate, loaded from `server.tls_cert_file`.
    pub fn new(
        cfg: Arc<Config>,
        store: Arc<Store>,
        providers: Arc<Providers>,
        upstreams: Upstreams,
        rules: Arc<IdentityRules>,
        clock: Clock,
        tls: Option<Arc<ServerCert>>,
    ) -> Arc<Self> {
        let connections = Arc::<ConnectionStats>::default();
        let reloads = Arc::new(ReloadStats::default());
        let tunnels = Tunnels::new(store.clone(), clock.clone());
        let preserved = Arc::new(Preserved::new(
            &cfg.session,
            &cfg.server.public_url,
            store.clone(),
            clock.clone(),
        ));
        let parts = Parts {
            store: store.clone(),
            providers,
            upstreams: Arc::new(upstreams),
            rules,
            clock: clock.clone(),
            connections: connections.clone(),
            reloads: reloads.clone(),
            tunnels: tunnels.clone(),
            preserved: preserved.clone(),
        };
        Arc::new(Gateway {
            runtime: ArcSwap::from_pointee(Runtime::new(cfg, parts, None)),
            store,
            clock,
            connections,
            request_ids: RequestIds::new(),
            reloads,
            tls,
            reloading: tokio::sync::Mutex::new(()),
            tunnels,
            preserved,
        })
    }

    /// The runtime configuration requests start with now.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// The `[server]` section: what `serve_gateway` listens with.
    pub fn server_config(&self) -> ServerConfig {
        self.runtime.load().server.clone()
    }

    /// The configuration requests start with now.
    pub fn config(&self) -> Arc<Config> {
        self.runtime.load().config.clone()
    }

    /// The default provider's client.
    pub fn oidc(&self) -> Arc<Oidc> {
        self.runtime.load().providers.default_provider().clone()
    }

    /// Every provider (`serve_gateway` runs their discovery).
    pub fn providers(&self) -> Arc<Providers> {
        self.runtime.load().providers.clone()
    }

    /// Whether every provider has been discovered.
    pub fn is_ready(&self) -> bool {
        self.runtime.load().providers.is_ready()
    }

    /// The form posts kept across logins (tests look at what is held).
    pub fn preserved(&self) -> &Arc<Preserved> {
        &self.preserved
    }

    /// Open tunnels by session.
    pub fn tunnels(&self) -> &Arc<Tunnels> {
        &self.tunnels
    }

    /// The handler of `server.admin_listen`, when it is set (taken once at start: the admin
    /// listener and its token need a restart).
    pub fn admin(&self) -> Option<Arc<crate::endpoints::admin::Admin>> {
        self.runtime.load().endpoints.admin().cloned()
    }

    /// The session store (read-only use: tests and benchmarks peek at records).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The session cookie's codec (tests and benchmarks make and read cookies).
    pub fn cookies(&self) -> CookieCodec {
        self.runtime.load().sessions.cookie().clone()
    }

    /// The rules that turn claims into identities (benchmarks build records with them).
    pub fn identity_rules(&self) -> Arc<IdentityRules> {
        self.runtime.load().rules.clone()
    }

    /// Client connection counters of the main listener.
    pub fn connections(&self) -> &Arc<ConnectionStats> {
        &self.connections
    }

    /// The listener's certificate, when it serves TLS.
    pub fn tls(&self) -> Option<&Arc<ServerCert>> {
        self.tls.as_ref()
    }

    /// The handler of `server.metrics_listen`: the metrics of whichever runtime is current.
    pub fn metrics_only(self: &Arc<Self>) -> LiveMetrics {
        LiveMetrics(self.clone())
    }
}

/// What a [`Runtime`] is built with besides its configuration: the parts that outlive it,
/// or that a reload keeps when their configuration did not change.
pub struct Parts {
    pub store: Arc<Store>,
    pub providers: Arc<Providers>,
    pub upstreams: Arc<Upstreams>,
    pub rules: Arc<IdentityRules>,
    pub clock: Clock,
    pub connections: Arc<ConnectionStats>,
    pub reloads: Arc<ReloadStats>,
    pub tunnels: Arc<Tunnels>,
    pub preserved: Arc<Preserved>,
}

impl Runtime {
    /// `previous`: the runtime this one replaces (a reload): its metrics series are kept
    /// when the routes and upstreams are the same, and refreshes in flight stay coalesced.
    pub fn new(cfg: Arc<Config>, parts: Parts, previous: Option<&Runtime>) -> Self {
        let Parts {
            store,
            providers,
            upstreams,
            rules,
            clock,
            connections,
            reloads,
            tunnels,
            preserved,
        } = parts;
        let routes = Arc::new(RouteTable::new(
            &cfg.routes,
            &cfg.provider_resources(),
            &upstreams.names(),
        ));
        let labels: Vec<String> = routes
            .labels()
            .map(str::to_owned)
            .chain(Builtin::ALL.iter().map(|b| b.path().to_owned()))
            .collect();
        let metrics = match previous {
            Some(p) if p.metrics.has_series(&labels, &upstreams.names()) => p.metrics.clone(),
            _ => Arc::new(
                Metrics::new(labels.iter().map(String::as_str))
                    .with_upstreams(upstreams.names())
                    .with_reloads(reloads),
            ),
        };
        let refresher = Refresher::new(
            providers.clone(),
            store.clone(),
            metrics.clone(),
            rules.clone(),
            cfg.session.refresh_before_expiry,
            clock.clone(),
        );
        let refresher = Arc::new(match previous {
            Some(p) => refresher.sharing_flights_with(&p.refresher),
            None => refresher,
        });
        let sessions = Arc::new(Sessions::new(store.clone(), &cfg.session));
        let auth = Arc::new(Authenticator::new(
            &cfg,
            sessions.clone(),
            refresher.clone(),
            providers.clone(),
            rules.clone(),
            metrics.clone(),
            clock.clone(),
        ));
        let shared = Shared {
            routes: routes.clone(),
            auth: auth.clone(),
            sessions: sessions.clone(),
            logins: Arc::new(
                Logins::new(&cfg.session, &cfg.server.public_url, store, clock.clone())
                    .with_redirect_hosts(&cfg.server.allowed_redirect_hosts),
            ),
            preserved: preserved.clone(),
            tunnels: tunnels.clone(),
            forwarded_proto: cfg.server.forwarded_proto,
            providers: providers.clone(),
            identities: rules.clone(),
            metrics: metrics.clone(),
            upstreams,
            connections,
            clock,
        };
        let cfg_absolute_timeout = cfg.session.absolute_timeout;
        Runtime {
            server: cfg.server.clone(),
            endpoints: Endpoints::new(&cfg, &shared),
            inbound: InboundHeaders::new(rules.claim_headers(), &cfg.server.strip_request_headers),
            config: cfg,
            routes,
            auth,
            refresher,
            sessions,
            logins: shared.logins,
            upstreams: shared.upstreams,
            providers,
            rules,
            metrics,
            preserved,
            tunnels,
            absolute_timeout: cfg_absolute_timeout,
        }
    }

    /// The configuration this runtime was built from.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// Every provider.
    pub fn providers(&self) -> &Arc<Providers> {
        &self.providers
    }

    /// The upstreams (their connection pools).
    pub fn upstreams(&self) -> &Arc<Upstreams> {
        &self.upstreams
    }

    /// The rules that turn claims into identities.
    pub fn identity_rules(&self) -> &Arc<IdentityRules> {
        &self.rules
    }

    /// Metrics series of a built-in endpoint (after the routes and the fallback).
    pub fn builtin_route_id(&self, builtin: Builtin) -> RouteId {
        RouteId(self.routes.len_with_fallback() + builtin as usize)
    }

    /// Step 1, then the path is normalized once: built-in endpoints are recognized on the
    /// normalized path too, so `/%6fauth2/start` is the gateway's, never the upstream's.
    /// `uri`: the request's own URI, cloned once by `handle` (for the access log).
    async fn dispatch(
        &self,
        req: Request<Incoming>,
        peer: Peer,
        client: &Arc<ClientConnection>,
        uri: &http::Uri,
    ) -> Outcome {
        if let Some(builtin) = self.endpoints.recognize(req.uri().path()) {
            return self.builtin(builtin, req, peer).await;
        }
        let path = match normalize_path(uri.path()) {
            Ok(path) => path,
            Err(e) => {
                tracing::debug!(error = ?e, "refused request path");
                let reply = Reply::BadRequest("Bad request: path not accepted");
                return Outcome::refused(self.routes.find(req.method(), None, "/").id, reply);
            }
        };
        if let Some(builtin) = self.endpoints.recognize(&path) {
            return self.builtin(builtin, req, peer).await;
        }
        let host = RequestHost::of(req.uri(), req.headers());
        if host == RequestHost::Malformed && self.routes.has_hosts() {
            // Routing by host: a host we cannot read is refused, never routed as another.
            let reply = Reply::BadRequest("Bad request: host not accepted");
            return Outcome::refused(self.routes.fallback().id, reply);
        }
        self.proxy(req, peer, client, host.name(), &path).await
    }

    async fn builtin(&self, builtin: Builtin, req: Request<Incoming>, peer: Peer) -> Outcome {
        Outcome {
            route: self.builtin_route_id(builtin),
            result: self.endpoints.answer(builtin, req, peer).await,
            upstream_time: None,
            builtin: Some(builtin),
            sub: None,
            upstream: None,
        }
    }

    /// Steps 2 to 6 of the pipeline, on the normalized `path`.
    async fn proxy(
        &self,
        mut req: Request<Incoming>,
        peer: Peer,
        client: &Arc<ClientConnection>,
        host: Option<&str>,
        path: &str,
    ) -> Outcome {
        let route = self.routes.find(req.method(), host, path);
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
            // CORS itself, without identity.
            Policy::Authenticated
                if route.rule.preflight == Preflight::Forward && is_preflight(&req) => {}
            Policy::Authenticated => {
                let navigation = Navigation::Allowed;
                let auth = match (self.auth)
                    .authenticate(&req, route, offered_bearer, path, navigation)
                    .await
                {
                    Ok(auth) => auth,
                    // Boxed: keeping a form post reads its body; its future would make
                    // every request's future larger.
                    Err(reply) => {
                        return Box::pin(self.refuse_or_keep(req, peer, route, host, path, reply))
                            .await;
                    }
                };
                let identity = auth.identity();
                if let Err(refusal) =
                    route.authorize(identity.groups(), identity.email(), identity.claims())
                {
                    self.metrics.decision(route.id, Decision::Forbid);
                    return Outcome::refused(route.id, refusal.into());
                }
                if let Err(reply) = self.auth.step_up(&req, route, &auth, path, navigation) {
                    return Outcome::refused(route.id, reply);
                }
                if let Err(reply) = self.auth.vouch(req.headers_mut(), &auth, route) {
                    return Outcome::refused(route.id, reply);
                }
                let sub = auth.identity().sub_shared();
                let end = self.tunnel_end(&auth, upgrade);
                drop(auth);
                self.metrics.decision(route.id, Decision::Allow);
                let mut outcome = self.forward(req, peer, client, route, path, end).await;
                outcome.sub = Some(sub);
                return outcome;
            }
        }
        self.metrics.decision(route.id, Decision::Allow);
        self.forward(req, peer, client, route, path, None).await
    }

    /// An upgrade request with a session: its tunnel is registered under the session and
    /// closes when the session ends (`session::tunnels`).
    fn tunnel_end(&self, auth: &Authenticated, upgrade: bool) -> Option<TunnelEnd> {
        let Authenticated::Session(key, session) = auth else {
            return None;
        };
        if !upgrade {
            return None;
        }
        let deadline = session.absolute_deadline(self.absolute_timeout);
        let mut tunnel = self.tunnels.open(*key, deadline);
        Some(Box::pin(async move { tunnel.ended().await }))
    }

    /// A request without a live session is answered `reply`, unless it is a browser form
    /// post from the app's own origin: that one is kept for after the login, and the browser
    /// sent to log in (`login::preserve`).
    async fn refuse_or_keep(
        &self,
        req: Request<Incoming>,
        peer: Peer,
        route: &Route,
        host: Option<&str>,
        path: &str,
        reply: Reply,
    ) -> Outcome {
        // A browser without a live session (not a refused bearer token): the reply's login URL,
        // and the `Set-Cookie` clearing a dead session's cookie, if it has one.
        let no_session = |r: &Reply| match r {
            Reply::Unauthenticated(u) if u.bearer_error.is_none() => Some(u.login_url.clone()),
            _ => None,
        };
        let (login_url, clear) = match &reply {
            Reply::Clearing(c) => match no_session(&c.0) {
                Some(url) => (url, Some(c.1.clone())),
                None => return Outcome::refused(route.id, reply),
            },
            r => match no_session(r) {
                Some(url) => (url, None),
                None => return Outcome::refused(route.id, reply),
            },
        };
        let server = &self.server;
        if !self.preserved.enabled()
            || !route.rule.preserve_form_posts
            || route.rule.api
            || !preserve::is_form_post(&req, &server.public_url, &server.allowed_redirect_hosts)
        {
            return Outcome::refused(route.id, reply);
        }
        let (parts, body) = req.into_parts();
        let Some(body) = preserve::read_body(body, &parts.headers, self.preserved.max_body()).await
        else {
            return Outcome::refused(route.id, reply);
        };
        let post = FormPost {
            host: host.map(str::to_owned),
            path: path.to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers: preserve::kept_headers(&parts.headers),
            body,
        };
        let client = headers::client_ip(&parts.headers, peer);
        let Some(ticket) = (self.preserved)
            .keep_ticketed(&parts.headers, client, &post)
            .await
        else {
            return Outcome::refused(route.id, reply);
        };
        // To `/oauth2/start`, which sees every login cookie of the browser: the login starts
        // there and takes the post over.
        let mut response = crate::reply::found(&login_url);
        let set = response.headers_mut();
        set.append(http::header::SET_COOKIE, ticket);
        set.extend(clear.map(|c| (http::header::SET_COOKIE, c)));
        Outcome {
            route: route.id,
            result: Ok(response),
            upstream_time: None,
            builtin: None,
            sub: None,
            upstream: None,
        }
    }

    /// Steps 5b and 6: to the route's upstream, without its prefix when it strips it.
    async fn forward(
        &self,
        mut req: Request<Incoming>,
        peer: Peer,
        client: &Arc<ClientConnection>,
        route: &Route,
        path: &str,
        end: Option<TunnelEnd>,
    ) -> Outcome {
        // Our cookies never reach the upstream, on every route, public routes and CORS preflights
        // included. Done here, once, after authentication has read them.
        headers::remove_cookies(req.headers_mut(), |name| {
            name == self.sessions.cookie().name() || self.logins.is_login_cookie(name)
        });
        headers::set_forwarded(
            req.headers_mut(),
            peer,
            client.peer_address.as_ref(),
            self.server.forwarded_proto,
        );
        let started = Instant::now();
        let upstream = self.upstreams.get(route.upstream);
        let result = upstream.forward(req, &route.upstream_path(path), end).await;
        let upstream_time = started.elapsed();
        self.metrics
            .upstream_finished(route.upstream, upstream_time);
        Outcome {
            route: route.id,
            result: result.map_err(Reply::from),
            upstream_time: Some(upstream_time),
            builtin: None,
            sub: None,
            upstream: Some(route.upstream),
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
        // Once per request: everything below runs on this one configuration.
        let rt = self.runtime.load_full();
        rt.metrics.request_started();
        let seen = Seen::of(req.method(), req.uri(), req.headers());
        let request_id = self.request_ids.assign(req.headers_mut(), peer.trusted);
        let outcome = rt.dispatch(req, peer, &client, &seen.uri).await;
        let (mut response, upstream_error) = match outcome.result {
            Ok(response) => (response, None),
            Err(reply) => rt.rescue(reply),
        };
        let elapsed = started.elapsed();
        let status = response.status().as_u16();
        rt.metrics.request_finished(outcome.route, status, elapsed);
        access::Line {
            seen: &seen,
            request_id: &request_id,
            sub: (outcome.sub.as_deref()).and_then(|sub| std::str::from_utf8(sub).ok()),
            route: rt.metrics.route_label(outcome.route),
            upstream: outcome.upstream.map(|i| rt.upstreams.name(i)),
            status,
            elapsed,
            upstream_time: outcome.upstream_time,
            peer: peer.addr,
            probe: access::is_probe(outcome.builtin),
            upstream_error: upstream_error.as_deref(),
        }
        .emit();
        // The answer names the id the logs (ours and the upstream's) know the request by.
        response
            .headers_mut()
            .insert(X_REQUEST_ID.clone(), request_id);
        response
    }
}

/// The handler of `server.metrics_listen`: `/metrics` of the current runtime.
pub struct LiveMetrics(Arc<Gateway>);

impl crate::server::Handler for LiveMetrics {
    type PerConnection = ();
    type Body = Body;

    fn connection(&self, _peer: &Peer) {}

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: Peer,
        connection: Arc<()>,
    ) -> Response<Body> {
        let handler = Arc::new(self.0.runtime.load().endpoints.metrics_only());
        handler.handle(req, peer, connection).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::Handler;

    /// The size of the future `make` would return (never called).
    fn future_size<F: std::future::Future>(_make: impl FnOnce() -> F) -> usize {
        std::mem::size_of::<F>()
    }

    fn never<T>() -> T {
        unreachable!("only the type is looked at")
    }

    /// hyper stores each request's future and moves it whole: its size is copied in memory on
    /// every request. The rare branches (login, logout and status endpoints, the Redis store,
    /// a new upstream connection, a form post kept across a login, a bearer token's
    /// verification) are boxed so that their large futures do not make it larger. Before
    /// they were, it was 9,216 bytes in a debug build.
    #[test]
    fn the_request_future_stays_small() {
        let request = future_size(|| {
            let gateway: Arc<Gateway> = never();
            gateway.handle(never(), never(), never())
        });
        assert!(request <= 6 * 1024, "the request future is {request} bytes");
        let forward_auth = future_size(|| {
            let endpoints: &Endpoints = never();
            endpoints.answer(never(), never(), never())
        });
        assert!(
            forward_auth <= 3 * 1024,
            "the endpoints' future is {forward_auth} bytes"
        );
    }
}
