//! `/healthz`, `/readyz`, `/metrics` and `/oauth2/userinfo`.

use std::fmt::Write as _;
use std::sync::Arc;

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response, StatusCode};
use serde_json::json;

use super::Shared;
use crate::auth::{login_url, public_base};
use crate::clock::Clock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::oidc::Providers;
use crate::proxy::Body;
use crate::proxy::{Upstream, Upstreams};
use crate::reply::{self, Reply, Unavailable};
use crate::server::ConnectionStats;
use crate::session::{Lookup, SessionStore, Sessions, Store};

/// What `/readyz`, `/metrics` and `/oauth2/userinfo` read.
pub struct Status {
    providers: Arc<Providers>,
    sessions: Arc<Sessions>,
    metrics: Arc<Metrics>,
    upstreams: Arc<Upstreams>,
    connections: Arc<ConnectionStats>,
    /// Kept form posts and open tunnels: process-wide (they outlive a reload).
    preserved: Arc<crate::login::preserve::Preserved>,
    tunnels: Arc<crate::session::tunnels::Tunnels>,
    /// `server.public_url` without a trailing slash (the login URL of a 401).
    public_url: String,
    clock: Clock,
}

pub fn healthz() -> Response<Body> {
    reply::text(StatusCode::OK, "ok")
}

// === impl Status ===

impl Status {
    pub fn new(cfg: &Config, shared: &Shared) -> Self {
        Status {
            providers: shared.providers.clone(),
            sessions: shared.sessions.clone(),
            metrics: shared.metrics.clone(),
            upstreams: shared.upstreams.clone(),
            connections: shared.connections.clone(),
            preserved: shared.preserved.clone(),
            tunnels: shared.tunnels.clone(),
            public_url: public_base(&cfg.server.public_url),
            clock: shared.clock.clone(),
        }
    }

    /// Ready once discovery has succeeded: this replica can then serve everything it can
    /// serve. The session store's health is reported in the body (and as
    /// `authgate_store_up`), but does not make the replica unready: were every replica
    /// unready during a store outage, the Service would lose all its endpoints and public
    /// routes would fail too, while authenticated requests already answer 503 with
    /// `Retry-After` on their own.
    pub async fn readyz(&self) -> Result<Response<Body>, Reply> {
        // Every provider: a route of one not yet discovered could not log anyone in.
        let provider = self.providers.is_ready();
        let store = self.sessions.store().ready().await;
        if provider {
            Ok(reply::text(
                StatusCode::OK,
                &format!("ready: provider discovered=true, session store answering={store}"),
            ))
        } else {
            Err(Unavailable::NotReady { provider, store }.into())
        }
    }

    /// The connection series of every upstream, labelled `upstream="default"` (`[upstream]`)
    /// or `upstream="<NAME>"` (`[upstreams.NAME]`).
    fn render_upstreams(&self, text: &mut String) {
        type Read = fn(&Upstream) -> u64;
        let series: [(&str, &str, &str, Read); 5] = [
            (
                "authgate_upstream_connections_opened_total",
                "counter",
                "Upstream connections opened.",
                Upstream::connections_opened,
            ),
            (
                "authgate_upstream_connections",
                "gauge",
                "Upstream connections open (or being opened), idle ones included.",
                |u| u.connections_open() as u64,
            ),
            (
                "authgate_upstream_connections_idle",
                "gauge",
                "Idle upstream connections kept for the next requests.",
                |u| u.connections_idle() as u64,
            ),
            (
                "authgate_upstream_connection_waits_total",
                "counter",
                "Requests that found upstream max_connections reached and waited.",
                Upstream::connection_waits,
            ),
            (
                "authgate_upstream_connection_wait_timeouts_total",
                "counter",
                "Requests that waited upstream timeout for a connection in vain (503).",
                Upstream::connection_wait_timeouts,
            ),
        ];
        for (name, kind, help, read) in series {
            let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (upstream, u) in self.upstreams.iter() {
                let _ = writeln!(text, "{name}{{upstream=\"{upstream}\"}} {}", read(u));
            }
        }
    }

    /// The exposition. The session store is asked once (a `PING` to Redis, bounded by
    /// `session.redis_timeout`), so `authgate_store_up` is as of this scrape.
    pub async fn metrics(&self) -> Response<Body> {
        let store = self.sessions.store();
        let store_up = store.ready().await;
        if let Store::Memory(memory) = &**store {
            // moka applies removals lazily: without this, a session signed out a moment ago
            // would still be counted. One maintenance pass per scrape, nothing on the hot path.
            memory.sync().await;
        }
        let mut text = self.metrics.render(store.live());
        if let Store::Memory(memory) = &**store {
            let _ = writeln!(
                text,
                "# HELP authgate_sessions_evicted_total Sessions dropped before their timeouts because session.max_sessions was reached.\n\
                 # TYPE authgate_sessions_evicted_total counter\n\
                 authgate_sessions_evicted_total {}",
                memory.evicted_for_capacity()
            );
        }
        let _ = writeln!(
            text,
            "# HELP authgate_provider_failures_total Failed calls to a provider's discovery document (JWKS included) and JWKS refetches.\n\
             # TYPE authgate_provider_failures_total counter",
        );
        for oidc in self.providers.iter() {
            let provider = oidc.label();
            let _ = writeln!(
                text,
                "authgate_provider_failures_total{{kind=\"discovery\",provider=\"{provider}\"}} {}\n\
                 authgate_provider_failures_total{{kind=\"jwks\",provider=\"{provider}\"}} {}",
                oidc.discovery_failures(),
                oidc.jwks_failures()
            );
        }
        super::process::render(&mut text);
        let _ = writeln!(
            text,
            "# HELP authgate_store_up Whether the session store answered at this scrape (1) or not (0).\n\
             # TYPE authgate_store_up gauge\n\
             authgate_store_up {}",
            u8::from(store_up)
        );
        self.render_upstreams(&mut text);
        let connections = &self.connections;
        let _ = writeln!(
            text,
            "# HELP authgate_client_connections Client connections open on the main listener.\n\
         # TYPE authgate_client_connections gauge\n\
         authgate_client_connections {}\n\
         # HELP authgate_client_connections_closed_total Client connections closed by the gateway, by reason.\n\
         # TYPE authgate_client_connections_closed_total counter\n\
         authgate_client_connections_closed_total{{reason=\"no_request\"}} {}\n\
         authgate_client_connections_closed_total{{reason=\"idle\"}} {}",
            connections.open(),
            connections.closed_without_request(),
            connections.closed_idle(),
        );
        let _ = writeln!(
            text,
            "# HELP authgate_preserved_form_posts Form posts kept by this replica while their logins run.\n\
             # TYPE authgate_preserved_form_posts gauge\n\
             authgate_preserved_form_posts {}\n\
             # HELP authgate_tunnels_open Upgraded connections (WebSocket tunnels) open through this replica.\n\
             # TYPE authgate_tunnels_open gauge\n\
             authgate_tunnels_open {}",
            self.preserved.kept(),
            self.tunnels.open_tunnels(),
        );
        if let Some(store) = store.metrics() {
            store.render(&mut text);
        }
        let mut response = Response::new(Body::full(text));
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        response
    }

    /// The session's identity and expiries. Never a token.
    pub async fn userinfo<B>(&self, req: &Request<B>) -> Result<Response<Body>, Reply> {
        let session = match self.sessions.lookup(req.headers()).await? {
            Lookup::Live(_, session) => session,
            Lookup::Gone(_) | Lookup::NoCookie => {
                let login = login_url(&self.public_url, "/");
                return Err(Reply::unauthenticated(login, false, None));
            }
        };
        // This request just reset the idle timer.
        let session_expires_at = self.sessions.expires_at(&session, self.clock.unix_now());
        let id = &session.identity;
        Ok(reply::json(
            StatusCode::OK,
            &json!({
                "sub": id.sub(),
                "email": id.email(),
                "preferred_username": id.preferred_username(),
                "groups": id.groups().collect::<Vec<_>>(),
                "access_token_expires_at": session.tokens.access_expires_at,
                "session_expires_at": session_expires_at,
            }),
        ))
    }
}
