//! The gateway's own endpoints, answered before any route is looked at (contract Details 17).

mod auth;
mod login;
mod logout;
mod status;

use std::sync::Arc;

use http::{Method, Request, Response};
use hyper::body::Incoming;

use crate::gateway::Gateway;
use crate::headers::Peer;
use crate::proxy::Body;
use crate::reply::Reply;

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
    /// Any other `/oauth2/...` path: the prefix is reserved.
    UnknownOauth2,
}

impl Builtin {
    pub const ALL: [Builtin; 10] = [
        Builtin::Start,
        Builtin::Callback,
        Builtin::SignOut,
        Builtin::BackchannelLogout,
        Builtin::Userinfo,
        Builtin::Auth,
        Builtin::Healthz,
        Builtin::Readyz,
        Builtin::Metrics,
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
            None if path.starts_with("/oauth2/") => Some(Builtin::UnknownOauth2),
            None => None,
        }
    }
}

/// The answer of a built-in endpoint, or why it refuses (answered by the gateway's rescue).
pub async fn answer(
    gateway: &Arc<Gateway>,
    builtin: Builtin,
    req: Request<Incoming>,
    peer: Peer,
) -> Result<Response<Body>, Reply> {
    let method = req.method();
    let read_only = method == Method::GET || method == Method::HEAD;
    match builtin {
        Builtin::Healthz => Ok(status::healthz()),
        Builtin::Readyz => status::readyz(gateway).await,
        Builtin::Metrics => Ok(status::metrics(gateway)),
        Builtin::Start if read_only => login::start(gateway, &req).await,
        Builtin::Callback if read_only => login::callback(gateway, &req).await,
        Builtin::SignOut if read_only || method == Method::POST => {
            logout::sign_out(gateway, &req).await
        }
        Builtin::BackchannelLogout if method == Method::POST => {
            logout::backchannel(gateway, req).await
        }
        Builtin::Userinfo if read_only => status::userinfo(gateway, &req).await,
        Builtin::Auth => auth::check(gateway, req, peer).await,
        Builtin::UnknownOauth2 => Err(Reply::NotFound),
        _ => Err(Reply::MethodNotAllowed),
    }
}

/// First value of a query parameter, decoded.
pub fn query_param(uri: &http::Uri, name: &str) -> Option<String> {
    url::form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The handler of `server.metrics_listen`: `/metrics` and nothing else.
pub struct MetricsOnly(pub Arc<Gateway>);

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
            "/metrics" => status::metrics(&self.0),
            "/healthz" => status::healthz(),
            _ => Reply::NotFound.into_response(),
        }
    }
}
