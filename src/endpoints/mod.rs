//! The gateway's own endpoints, answered before any route is looked at.
//!
//! Each endpoint module gets a context of its own with what it needs (the sessions, the
//! provider, the login cookies, ...), built once by [`Endpoints::new`], never the gateway.

pub mod admin;
mod auth;
mod login;
mod logout;
mod process;
mod status;

// The parsers the fuzz targets reach through `crate::fuzzing`.
#[cfg(feature = "fuzzing")]
pub(crate) use auth::original_request;
#[cfg(feature = "fuzzing")]
pub(crate) use logout::logout_token_from_form;

use std::sync::Arc;

use http::{Method, Request, Response};
use hyper::body::Incoming;

use crate::auth::Authenticator;
use crate::clock::Clock;
use crate::config::Config;
use crate::headers::Peer;
use crate::login::Logins;
use crate::login::preserve::Preserved;
use crate::metrics::Metrics;
use crate::oidc::Providers;
use crate::policy::RouteTable;
use crate::policy::path::normalize_path;
use crate::proxy::Body;
use crate::proxy::Upstreams;
use crate::reply::Reply;
use crate::server::ConnectionStats;
use crate::session::Sessions;
use crate::session::identity::IdentityRules;

/// The callback of a `[providers.NAME]`: the name follows it.
const CALLBACK_PREFIX: &str = "/oauth2/callback/";

/// Envoy's and Istio's `ext_authz` path prefix: the original path follows it.
const EXT_AUTHZ_PREFIX: &str = "/oauth2/ext_authz/";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    Start = 0,
    Callback,
    SignOut,
    BackchannelLogout,
    Userinfo,
    Auth,
    Healthz,
    Readyz,
    Metrics,
    /// `/oauth2/ext_authz/<original path>`.
    ExtAuthz,
    /// Any other `/oauth2/...` path: the prefix is reserved.
    UnknownOauth2,
}

impl Builtin {
    pub const ALL: [Builtin; 11] = [
        Builtin::Start,
        Builtin::Callback,
        Builtin::SignOut,
        Builtin::BackchannelLogout,
        Builtin::Userinfo,
        Builtin::Auth,
        Builtin::Healthz,
        Builtin::Readyz,
        Builtin::Metrics,
        Builtin::ExtAuthz,
        Builtin::UnknownOauth2,
    ];

    pub fn path(self) -> &'static str {
        match self {
            Builtin::Start => "/oauth2/start",
            Builtin::Callback => "/oauth2/callback",
            Builtin::SignOut => "/oauth2/sign_out",
            Builtin::BackchannelLogout => "/oauth2/backchannel_logout",
            Builtin::Userinfo => "/oauth2/userinfo",
            Builtin::Auth => "/oauth2/auth",
            Builtin::Healthz => "/healthz",
            Builtin::Readyz => "/readyz",
            Builtin::Metrics => "/metrics",
            Builtin::ExtAuthz => "/oauth2/ext_authz/*",
            Builtin::UnknownOauth2 => "/oauth2/*",
        }
    }

    /// `metrics_elsewhere`: `/metrics` is served on `metrics_listen` instead, so on the main
    /// listener it is an ordinary (proxied) path.
    pub fn recognize(path: &str, metrics_elsewhere: bool) -> Option<Builtin> {
        let found = Builtin::ALL[..9].iter().copied().find(|b| b.path() == path);
        match found {
            Some(Builtin::Metrics) if metrics_elsewhere => None,
            Some(b) => Some(b),
            None if path.starts_with(EXT_AUTHZ_PREFIX) => Some(Builtin::ExtAuthz),
            // `/oauth2/callback/NAME`: a `[providers.NAME]`'s callback.
            None if path.starts_with(CALLBACK_PREFIX) => Some(Builtin::Callback),
            None if path.starts_with("/oauth2/") => Some(Builtin::UnknownOauth2),
            None => None,
        }
    }
}

/// What the endpoints share with the pipeline (built once by `Gateway::new`).
pub struct Shared {
    pub routes: Arc<RouteTable>,
    pub auth: Arc<Authenticator>,
    pub sessions: Arc<Sessions>,
    pub logins: Arc<Logins>,
    /// Form posts kept across a login.
    pub preserved: Arc<Preserved>,
    /// Open tunnels by session (`authgate_tunnels_open`).
    pub tunnels: Arc<crate::session::tunnels::Tunnels>,
    /// `server.forwarded_proto` (a kept post is forwarded by the callback).
    pub forwarded_proto: crate::config::ForwardedProto,
    pub providers: Arc<Providers>,
    pub identities: Arc<IdentityRules>,
    pub metrics: Arc<Metrics>,
    pub upstreams: Arc<Upstreams>,
    /// Client connections of the main listener.
    pub connections: Arc<ConnectionStats>,
    pub clock: Clock,
}

/// Every built-in endpoint, each with its own context.
pub struct Endpoints {
    login: login::Login,
    logout: logout::Logouts,
    status: Arc<status::Status>,
    forward_auth: auth::ForwardAuth,
    /// `server.metrics_listen` is set: `/metrics` is served there, not here.
    metrics_elsewhere: bool,
    /// The admin API (`server.admin_listen`), when configured.
    admin: Option<Arc<admin::Admin>>,
    /// The path of `public_url` without a trailing slash (`/app`; empty for none): the
    /// `/oauth2/` endpoints live below it.
    base_path: String,
}

// === impl Endpoints ===

impl Endpoints {
    pub fn new(cfg: &Config, shared: &Shared) -> Self {
        Endpoints {
            login: login::Login::new(cfg, shared),
            logout: logout::Logouts::new(cfg, shared),
            status: Arc::new(status::Status::new(cfg, shared)),
            forward_auth: auth::ForwardAuth::new(shared),
            metrics_elsewhere: cfg.server.metrics_listen.is_some(),
            admin: (cfg.server.admin_token.as_ref()).map(|token| {
                Arc::new(admin::Admin::new(
                    shared.sessions.clone(),
                    shared.providers.clone(),
                    token,
                ))
            }),
            base_path: cfg
                .server
                .public_url
                .path()
                .trim_end_matches('/')
                .to_owned(),
        }
    }

    /// The built-in endpoint at `path`, if any. With a base path (`public_url` =
    /// `https://example.com/app`), the `/oauth2/` endpoints are at `/app/oauth2/...` (and
    /// `/oauth2/...` is an ordinary path of the upstream); `/healthz`, `/readyz` and
    /// `/metrics` stay at the root, where probes and scrapers look for them.
    pub fn recognize(&self, path: &str) -> Option<Builtin> {
        if self.base_path.is_empty() {
            return Builtin::recognize(path, self.metrics_elsewhere);
        }
        match path.strip_prefix(self.base_path.as_str()) {
            Some(below) if below.starts_with("/oauth2/") => {
                Builtin::recognize(below, self.metrics_elsewhere)
            }
            _ if path.starts_with("/oauth2/") => None,
            _ => Builtin::recognize(path, self.metrics_elsewhere),
        }
    }

    /// The handler of `server.admin_listen`, when it is set.
    pub fn admin(&self) -> Option<&Arc<admin::Admin>> {
        self.admin.as_ref()
    }

    /// What follows `/oauth2/callback` in a callback's path, normalized (base path removed):
    /// empty for `[oidc]`'s, `/NAME` for a `[providers.NAME]`'s.
    fn callback_provider(&self, path: &str) -> String {
        let path = normalize_path(path).unwrap_or_default();
        let below = path.strip_prefix(self.base_path.as_str()).unwrap_or(&path);
        below
            .strip_prefix(Builtin::Callback.path())
            .unwrap_or("/")
            .to_owned()
    }

    /// The handler of `server.metrics_listen`.
    pub fn metrics_only(&self) -> MetricsOnly {
        MetricsOnly(self.status.clone())
    }

    /// The answer of a built-in endpoint, or why it refuses (answered by the gateway's
    /// rescue).
    pub async fn answer(
        &self,
        builtin: Builtin,
        req: Request<Incoming>,
        peer: Peer,
    ) -> Result<Response<Body>, Reply> {
        let method = req.method();
        let read_only = method == Method::GET || method == Method::HEAD;
        // The futures of the login, logout and status endpoints are boxed: they are large
        // (token endpoint calls, the store), and an unboxed one would make every request's
        // future as large, moved in memory on every request. Forward auth, the endpoint on
        // the hot path, stays inline.
        match builtin {
            Builtin::Healthz => Ok(status::healthz()),
            Builtin::Readyz => Box::pin(self.status.readyz()).await,
            Builtin::Metrics => Ok(Box::pin(self.status.metrics()).await),
            Builtin::Start if read_only => Box::pin(self.login.start(&req, peer)).await,
            Builtin::Callback if read_only => {
                let provider = self.callback_provider(req.uri().path());
                Box::pin(self.login.callback(&req, peer, &provider)).await
            }
            Builtin::SignOut if read_only || method == Method::POST => {
                Box::pin(self.logout.sign_out(&req)).await
            }
            Builtin::BackchannelLogout if method == Method::POST => {
                Box::pin(self.logout.backchannel(req)).await
            }
            Builtin::Userinfo if read_only => Box::pin(self.status.userinfo(&req)).await,
            Builtin::Auth => self.forward_auth.check(req, peer).await,
            Builtin::ExtAuthz => {
                let prefix = format!("{}/oauth2/ext_authz", self.base_path);
                self.forward_auth.ext_authz(req, peer, &prefix).await
            }
            Builtin::UnknownOauth2 => Err(Reply::NotFound),
            _ => Err(Reply::MethodNotAllowed),
        }
    }
}

/// Where a login or sign-out without `rd` lands: the root of `public_url`, base path
/// included (`/app/` for `https://example.com/app`).
pub fn home(public_url: &url::Url) -> String {
    format!("{}/", public_url.path().trim_end_matches('/'))
}

/// First value of a query parameter, decoded.
pub fn query_param(uri: &http::Uri, name: &str) -> Option<String> {
    url::form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The handler of `server.metrics_listen`: `/metrics` and nothing else.
pub struct MetricsOnly(Arc<status::Status>);

impl crate::server::Handler for MetricsOnly {
    type PerConnection = ();
    type Body = Body;

    fn connection(&self, _peer: &Peer) {}

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        _peer: Peer,
        _connection: Arc<()>,
    ) -> Response<Body> {
        match req.uri().path() {
            "/metrics" => self.0.metrics().await,
            "/healthz" => status::healthz(),
            _ => Reply::NotFound.into_response(),
        }
    }
}
