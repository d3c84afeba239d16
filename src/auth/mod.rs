//! Who a request is: its session (loaded, refreshed when near expiry), or on a
//! bearer-passthrough route a machine client's own JWT (`bearer`); and what the upstream is
//! told about it (`vouch`). Serves the pipeline and forward auth alike.

pub mod bearer;

use std::borrow::Cow;
use std::sync::Arc;

use http::header::{ACCEPT, AUTHORIZATION};
use http::{HeaderMap, HeaderValue, Method, Request};

use crate::clock::Clock;
use crate::config::Config;
use crate::error::Chain;
use crate::logging::log_safe;
use crate::metrics::{Decision, Metrics};
use crate::oidc::Providers;
use crate::policy::Route;
use crate::refresh::{Fresh, Refresher};
use crate::reply::{Reply, StepUpChallenge, Unavailable};
use crate::session::identity::IdentityRules;
use crate::session::{Identity, Lookup, Session, SessionKey, SessionStore, Sessions};

/// Who a request is, once authenticated.
pub enum Authenticated {
    Session(SessionKey, Arc<Session>),
    /// A machine client's own JWT on a bearer-passthrough route.
    Bearer(HeaderValue, Box<Identity>),
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

/// What authenticating a request needs: the sessions, their refresh, the provider (bearer
/// tokens), and what the configuration says about identity.
pub struct Authenticator {
    sessions: Arc<Sessions>,
    refresher: Arc<Refresher>,
    providers: Arc<Providers>,
    identities: Arc<IdentityRules>,
    /// Each provider's `bearer_audiences` by provider id: the audiences a passthrough bearer
    /// token of a route of that provider may have.
    bearer_audiences: Vec<Vec<String>>,
    /// `headers.authorization_bearer`: the upstream gets `Authorization: Bearer`.
    authorization_bearer: bool,
    /// `server.public_url` without a trailing slash.
    public_url: String,
    metrics: Arc<Metrics>,
    /// Judges `auth_time` against the route's `max_auth_age`.
    clock: Clock,
}

// === impl Authenticated ===

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

// === impl Authenticator ===

impl Authenticator {
    pub fn new(
        cfg: &Config,
        sessions: Arc<Sessions>,
        refresher: Arc<Refresher>,
        providers: Arc<Providers>,
        identities: Arc<IdentityRules>,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Self {
        Authenticator {
            sessions,
            refresher,
            providers,
            identities,
            bearer_audiences: (cfg.provider_configs())
                .map(|(_, _, p)| p.bearer_audiences.clone())
                .collect(),
            authorization_bearer: cfg.headers.authorization_bearer,
            public_url: public_base(&cfg.server.public_url),
            metrics,
            clock,
        }
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
                tracing::warn!(error = %log_safe(Chain(&e)), "session store unavailable");
                return Err(e.into());
            }
        };
        let had_cookie = match lookup {
            // A session of another provider is none here (its cookie stays: it is still good
            // on its own provider's routes); a login at this route's provider replaces it.
            Lookup::Live(_, session) if session.provider != route.rule.provider_id => false,
            Lookup::Live(key, session) => match self.refresher.ensure_fresh(key, session).await {
                Fresh::Ready(session) => return Ok(Authenticated::Session(key, session)),
                Fresh::Ended => {
                    // Idempotent: a rejected refresh already deleted it; an expired session
                    // without a refresh token is deleted here.
                    // (boxed, as the other rare awaits here: an inline future would make
                    // every request's future larger)
                    if let Err(e) = Box::pin(self.sessions.store().delete(&key)).await {
                        tracing::warn!(
                            error = %log_safe(Chain(&e)),
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
        // While the provider is undiscovered nobody can log in (and no
        // bearer token can be verified), so a request without a live session is told to come
        // back later (503 + Retry-After, as `/oauth2/start` answers) instead of being sent to
        // a login that cannot work (302) or told its credentials are wrong (401).
        let Some(oidc) = self.providers.get(route.rule.provider_id) else {
            return Err(Unavailable::ProviderNotReady.into());
        };
        if !oidc.is_ready() {
            return Err(Unavailable::ProviderNotReady.into());
        }
        if let Some(token) = offered_bearer {
            let verified = Box::pin(bearer::verify(self, oidc, route.rule.provider_id, &token));
            return match verified.await {
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
    /// (never a redirect for a non-GET request or an API client). Counted as a redirect decision when the request is a
    /// browser navigation, whoever turns it into one (forward auth: the proxy).
    fn unauthenticated<B>(
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
        Reply::unauthenticated(
            login_url_at(&self.public_url, &landing, route.rule.provider.as_deref()),
            redirect,
            bearer_error,
        )
        .clearing(clear_cookie.then(|| self.sessions.clear_cookie()))
    }

    /// The route's step-up requirement (RFC 9470), judged on the `acr` and `auth_time` of the
    /// session's (or bearer token's) login. Not met: a browser navigation (when `navigation`
    /// allows it) goes to login again, which asks the provider for the requirement; anything
    /// else gets 401 `insufficient_user_authentication` naming it.
    pub fn step_up<B>(
        &self,
        req: &Request<B>,
        route: &Route,
        auth: &Authenticated,
        path: &str,
        navigation: Navigation,
    ) -> Result<(), Reply> {
        let Some(step_up) = route.step_up() else {
            return Ok(());
        };
        if step_up.met_by(auth.identity().claims(), self.clock.unix_now()) {
            return Ok(());
        }
        // A machine client's own token cannot log in again: never a login page for it.
        let bearer = matches!(auth, Authenticated::Bearer(..));
        let browser = !route.rule.api && !bearer && is_browser_navigation(req);
        let decision = if browser {
            Decision::Redirect
        } else {
            Decision::Unauthorized
        };
        self.metrics.decision(route.id, decision);
        let landing = match req.uri().query() {
            Some(q) => Cow::Owned(format!("{path}?{q}")),
            None => Cow::Borrowed(path),
        };
        Err(Reply::StepUp(Box::new(StepUpChallenge {
            login_url: login_url_at(&self.public_url, &landing, route.rule.provider.as_deref()),
            redirect: browser && navigation == Navigation::Allowed,
            acr_values: step_up.acr_values(),
            max_age: step_up.max_age,
        })))
    }

    /// `Authorization` and identity headers in (our cookies go out when the pipeline
    /// forwards, on every route). The route's `bearer_resource` chooses which resource's
    /// token goes upstream.
    pub fn vouch(
        &self,
        headers: &mut HeaderMap,
        auth: &Authenticated,
        route: &Route,
    ) -> Result<(), Reply> {
        if self.authorization_bearer {
            let Some(bearer) = auth.bearer(route.bearer_index) else {
                // The provider could not be asked for this resource's token yet; the next
                // request's refresh will try again.
                return Err(Unavailable::TokenMissing.into());
            };
            headers.insert(AUTHORIZATION, bearer.clone());
        }
        crate::headers::set_identity(headers, auth.identity().upstream_headers());
        Ok(())
    }
}

/// `server.public_url` as the base of the gateway's own URLs (no trailing slash).
pub fn public_base(public_url: &url::Url) -> String {
    public_url.as_str().trim_end_matches('/').to_owned()
}

/// `<public base>/oauth2/start?rd=<landing>`.
pub fn login_url(public_base: &str, landing: &str) -> String {
    let rd: String = url::form_urlencoded::byte_serialize(landing.as_bytes()).collect();
    format!("{public_base}/oauth2/start?rd={rd}")
}

/// [`login_url`] at a `[providers.NAME]` (`provider`), or at the default provider (`None`).
pub fn login_url_at(public_base: &str, landing: &str, provider: Option<&str>) -> String {
    let url = login_url(public_base, landing);
    match provider {
        // Provider names are URL-safe (a-z, 0-9, -, _).
        Some(name) => format!("{url}&provider={name}"),
        None => url,
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
