//! `/oauth2/start` and `/oauth2/callback`: the authorization code flow with PKCE.
//!
//! Every failure a user or provider can cause answers 400 with a short HTML page and a link
//! to try again, never a 5xx; only "provider not reachable yet" and
//! "store down" are 503.

use std::sync::Arc;

use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderValue, Method, Request, Response};

use url::Url;

use super::{Shared, query_param};
use crate::auth::{Authenticated, Authenticator};
use crate::clock::Clock;
use crate::config::{Config, ForwardedProto, Policy};
use crate::error::Chain;
use crate::headers::{self, Peer};
use crate::logging::log_safe;
use crate::login::preserve::{FormPost, Preserved};
use crate::login::{Logins, PendingLogin};
use crate::metrics::{LoginEvent, Metrics};
use crate::oidc::flows::LoginError;
use crate::oidc::{Oidc, Providers};
use crate::policy::path::normalize_path;
use crate::policy::{Route, RouteTable};
use crate::proxy::{Body, Upstreams};
use crate::redirect::SafeRedirect;
use crate::reply::{self, Reply, Unavailable};
use crate::session::identity::IdentityRules;
use crate::session::{
    LastSeen, Replaced, ResourceToken, Session, SessionKey, SessionStore, Sessions, Tokens,
};

/// What `/oauth2/start` and the callback need: the provider, the login cookies, the
/// sessions, the identity rules, where to land.
pub struct Login {
    providers: Arc<Providers>,
    logins: Arc<Logins>,
    sessions: Arc<Sessions>,
    identities: Arc<IdentityRules>,
    /// The step-up requirement of a login comes from the route its landing page is on.
    routes: Arc<RouteTable>,
    public_url: Url,
    /// `server.allowed_redirect_hosts`.
    redirect_hosts: Vec<String>,
    clock: Clock,
    metrics: Arc<Metrics>,
    /// Form posts kept across a login, and what sending one upstream needs.
    preserved: Arc<Preserved>,
    auth: Arc<Authenticator>,
    upstreams: Arc<Upstreams>,
    forwarded_proto: ForwardedProto,
}

// === impl Login ===

impl Login {
    pub fn new(cfg: &Config, shared: &Shared) -> Self {
        Login {
            providers: shared.providers.clone(),
            logins: shared.logins.clone(),
            sessions: shared.sessions.clone(),
            identities: shared.identities.clone(),
            routes: shared.routes.clone(),
            public_url: cfg.server.public_url.clone(),
            redirect_hosts: cfg.server.allowed_redirect_hosts.clone(),
            clock: shared.clock.clone(),
            metrics: shared.metrics.clone(),
            preserved: shared.preserved.clone(),
            auth: shared.auth.clone(),
            upstreams: shared.upstreams.clone(),
            forwarded_proto: shared.forwarded_proto,
        }
    }

    pub async fn start<B>(&self, req: &Request<B>, peer: Peer) -> Result<Response<Body>, Reply> {
        let rd = query_param(req.uri(), "rd").unwrap_or_else(|| super::home(&self.public_url));
        let landing = SafeRedirect::parse_allowing(&rd, &self.public_url, &self.redirect_hosts);
        // `provider=NAME` chooses; without it, the landing page's route's provider.
        let oidc = match query_param(req.uri(), "provider") {
            Some(name) => (self.providers.by_name(&name))
                .ok_or(Reply::BadRequest("Bad request: unknown provider"))?,
            None => {
                let id = self.landing_route(&landing).map(|r| r.rule.provider_id);
                (id.and_then(|id| self.providers.get(id)))
                    .unwrap_or(self.providers.default_provider())
            }
        };
        let provider = oidc.provider().ok_or(Unavailable::ProviderNotReady)?;
        let auth = oidc.authorize(&provider, &self.step_up_for(&landing));
        let pending = PendingLogin {
            state: auth.state,
            nonce: auth.nonce,
            pkce_verifier: auth.pkce_verifier,
            landing,
            provider: oidc.name.clone(),
        };
        // Nothing is stored here: the browser carries the sealed login (see `crate::login`).
        let Some((cookies, dropped)) = self.logins.begin_dropping(req.headers(), &pending) else {
            tracing::error!("could not seal a pending login");
            return Err(Unavailable::LoginNotSealed.into());
        };
        // A form post waiting for this browser's login is bound to this login now; a login
        // dropped to make room takes its post with it.
        let client = headers::client_ip(req.headers(), peer);
        let adopted = (self.preserved)
            .adopt(req.headers(), &pending.state, client)
            .await;
        for state in dropped {
            self.preserved.forget(&state).await;
        }
        let mut response = reply::found(auth.url.as_str());
        response
            .headers_mut()
            .extend(adopted.map(|c| (SET_COOKIE, c)));
        for cookie in cookies {
            response.headers_mut().append(SET_COOKIE, cookie);
        }
        self.metrics.login(LoginEvent::Started);
        Ok(response)
    }

    /// Step-up (RFC 9470): what the landing page's route requires, never what the query asks
    /// (a client must not choose a weaker login). The callback derives it again from the
    /// sealed landing, so it needs no room in the login cookie.
    fn step_up_for(&self, landing: &SafeRedirect) -> Vec<(&'static str, String)> {
        let mut step_up = Vec::new();
        if let Some(requirement) = self.landing_route(landing).and_then(Route::step_up) {
            step_up.extend(requirement.acr_values().map(|acr| ("acr_values", acr)));
            step_up.extend(requirement.max_age.map(|age| ("max_age", age.to_string())));
        }
        step_up
    }

    /// [`Login::callback_inner`], counted in `authgate_logins_total`. `provider`: what follows
    /// `/oauth2/callback` in the path (empty for `[oidc]`, `/NAME` for `[providers.NAME]`).
    pub async fn callback<B>(
        &self,
        req: &Request<B>,
        peer: Peer,
        provider: &str,
    ) -> Result<Response<Body>, Reply> {
        let oidc = match provider.strip_prefix('/') {
            None if provider.is_empty() => self.providers.default_provider(),
            Some(name) => self.providers.by_name(name).ok_or(Reply::NotFound)?,
            None => return Err(Reply::NotFound),
        };
        let (result, event) = self.callback_inner(req, peer, oidc).await;
        self.metrics.login(event);
        result
    }

    /// The provider's redirect back. The browser binding is checked before anything is consumed:
    /// a callback replayed from another browser is refused and leaves the user's own login
    /// intact.
    async fn callback_inner<B>(
        &self,
        req: &Request<B>,
        peer: Peer,
        oidc: &Oidc,
    ) -> (Result<Response<Body>, Reply>, LoginEvent) {
        use LoginEvent::{InvalidState, ProviderError, Rejected, Succeeded, Unavailable as Down};
        let uri = req.uri();
        let logins = &*self.logins;
        let state = query_param(uri, "state");
        // The login this browser started with this state, if any (a read: nothing consumed).
        let pending = state.as_deref().and_then(|s| logins.find(req.headers(), s));
        if let Some(error) = query_param(uri, "error") {
            let detail = query_param(uri, "error_description").unwrap_or_default();
            tracing::info!(
                error = %log_safe(&error), detail = %log_safe(&detail),
                "provider returned a login error"
            );
            // Its code only, never its free text: the page is on our origin.
            let page = Err(Reply::LoginFailed(provider_error(&error)));
            return (finished(page, pending.as_ref(), logins), ProviderError);
        }
        let (Some(state), Some(code)) = (state, query_param(uri, "code")) else {
            let page = Err(Reply::LoginFailed("The login response is incomplete."));
            return (page, InvalidState);
        };
        let Some(pending) = pending else {
            let page = Err(Reply::LoginFailed(
                "This login has expired, was already used, or was started in another browser.",
            ));
            return (page, InvalidState);
        };
        // The mix-up defence (RFC 9700 section 4.4): a login finishes only at the callback of
        // the provider it was started at, before its code is redeemed anywhere.
        if pending.provider != oidc.name {
            tracing::warn!(
                callback = oidc.label(),
                started_at = pending.provider.as_deref().unwrap_or("default"),
                "login refused: the callback is another provider's than the login's"
            );
            let page = Err(Reply::LoginFailed(
                "The login response did not come from the expected identity provider.",
            ));
            return (finished(page, Some(&pending), logins), Rejected);
        }
        // RFC 9207: the response must come from this provider, before its code is redeemed
        // anywhere.
        let Some(provider) = oidc.provider() else {
            return (Err(Unavailable::ProviderNotReady.into()), Down);
        };
        if let Err(e) = provider.check_response_issuer(&query_values(uri, "iss")) {
            tracing::warn!(reason = %e, "login refused: authorization response issuer");
            let page = Err(Reply::LoginFailed(
                "The login response did not come from the expected identity provider.",
            ));
            return (finished(page, Some(&pending), logins), Rejected);
        }
        let used_up = || Err(Reply::LoginFailed("This login was already used."));
        match logins.was_used(&state).await {
            Ok(false) => {}
            Ok(true) => return (finished(used_up(), Some(&pending), logins), InvalidState),
            Err(e) => {
                tracing::warn!(error = %log_safe(Chain(&e)), "could not check a login's state");
                return (Err(e.into()), Down);
            }
        }
        let tokens = match oidc
            .exchange_code(&code, &pending.pkce_verifier, &pending.nonce)
            .await
        {
            Ok(tokens) => tokens,
            Err(LoginError::NotReady) => {
                return (Err(Unavailable::ProviderNotReady.into()), Down);
            }
            // The provider blipped: 503 (an outage shows as one in the metrics and access
            // log, not as users' bad requests). The pending login is used up either way: the
            // code may have been spent at the provider, so "Try again" starts a new login.
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %log_safe(Chain(&e)), "login failed: provider did not answer");
                let page = Err(Unavailable::LoginProviderDown.into());
                return (finished(page, Some(&pending), logins), Down);
            }
            Err(e) => {
                tracing::warn!(error = %log_safe(Chain(&e)), "login failed");
                let page = Err(Reply::LoginFailed(
                    "The identity provider's answer could not be accepted.",
                ));
                return (finished(page, Some(&pending), logins), Rejected);
            }
        };
        let claims = tokens.claims.as_ref();
        let (Some(identity), Some(bearer)) = (
            claims.and_then(|c| self.identities.identity(c)),
            Tokens::bearer_value(&tokens.access_token),
        ) else {
            let page = Err(Reply::LoginFailed(
                "The identity provider's answer lacks a user or a usable token.",
            ));
            return (finished(page, Some(&pending), logins), Rejected);
        };
        // Step-up: the new login must meet the landing route's requirement. Not met is a 403
        // page, never a loop back to the provider; the session, if any, stays as it was.
        let step_up = self
            .landing_route(&pending.landing)
            .and_then(Route::step_up);
        if let Some(requirement) = step_up
            && !requirement.met_by(identity.claims(), self.clock.unix_now())
        {
            tracing::info!(
                sub = %log_safe(identity.sub()),
                acr = %log_safe(identity.claims().get("acr").and_then(|v| v.as_str()).unwrap_or("")),
                "step-up login refused: the provider did not confirm the required authentication"
            );
            return (
                finished(Err(Reply::StepUpFailed), Some(&pending), logins),
                Rejected,
            );
        }
        // Single use, on every replica: only a login that got this far is recorded.
        match logins.mark_used(&state).await {
            Ok(true) => {}
            Ok(false) => return (finished(used_up(), Some(&pending), logins), InvalidState),
            Err(e) => {
                tracing::warn!(error = %log_safe(Chain(&e)), "could not record a login's state as used");
                return (Err(e.into()), Down);
            }
        }
        let session = Session {
            tokens: Tokens {
                bearer,
                access_expires_at: tokens.access_expires_at,
                refresh_token: tokens.refresh_token.map(Into::into),
                id_token: tokens.id_token.map(Into::into),
                more: ResourceToken::merge(tokens.more, &[]),
            },
            identity: Arc::new(identity),
            login_at: self.clock.unix_now(),
            backoff: None,
            last_seen: LastSeen::default(),
            provider: oidc.id,
        };
        let landing = pending.landing.as_str();
        let session = Arc::new(session);
        let result = match step_up {
            Some(_) => self.upgrade_session(req, session.clone(), landing).await,
            None => self.create_session(req, session.clone(), landing).await,
        };
        let event = if result.is_ok() { Succeeded } else { Down };
        // A form post kept for this login is sent now, once, with the new session.
        let result = match result {
            Ok((response, key)) => match self.preserved.take(&state).await {
                Ok(Some(post)) => self.replay(req, peer, post, key, session, response).await,
                Ok(None) => Ok(response),
                Err(e) => {
                    tracing::warn!(error = %log_safe(Chain(&e)), "could not read a kept form post");
                    Ok(response)
                }
            },
            Err(reply) => Err(reply),
        };
        (finished(result, Some(&pending), logins), event)
    }

    /// Store the session under a NEW id (no session fixation), drop any previous one, set the
    /// cookie and land on the original page.
    async fn create_session<B>(
        &self,
        req: &Request<B>,
        session: Arc<Session>,
        landing: &str,
    ) -> Result<(Response<Body>, SessionKey), Reply> {
        let sub = session.identity.sub().to_owned();
        let (key, cookie) = match self.sessions.create_keyed(session).await {
            Ok(created) => created,
            Err(e) => {
                tracing::error!(error = %log_safe(Chain(&e)), "could not store the new session");
                return Err(Unavailable::SessionNotSaved(e).into());
            }
        };
        // Best effort: the previous session is unreachable once its cookie is replaced.
        let _ = self.sessions.discard(req.headers()).await;
        tracing::info!(sub = %log_safe(&sub), "login succeeded");
        let mut response = reply::found(landing);
        if let Some(cookie) = cookie {
            response.headers_mut().append(SET_COOKIE, cookie);
        }
        Ok((response, key))
    }
}

impl Login {
    /// The route a landing page is on (as a browser GET would find it: on `public_url`'s
    /// host for a path, on its own host for an allowed absolute URL). `None` when its path is
    /// one the gateway refuses anyway.
    fn landing_route(&self, landing: &SafeRedirect) -> Option<&Route> {
        let target = landing.as_str();
        let (host, path) = if target.starts_with('/') {
            let path = target.split(['?', '#']).next().unwrap_or(target);
            (
                self.public_url.host_str().map(str::to_owned),
                path.to_owned(),
            )
        } else {
            let url = Url::parse(target).ok()?;
            (url.host_str().map(str::to_owned), url.path().to_owned())
        };
        let path = normalize_path(&path).ok()?;
        Some(self.routes.find(&Method::GET, host.as_deref(), &path))
    }

    /// A step-up login: the request's live session of the same user keeps its id (and its
    /// login time, so its absolute timeout); its identity and tokens are replaced. Without
    /// one (no session, another user, a session ended meanwhile) this is a new login.
    async fn upgrade_session<B>(
        &self,
        req: &Request<B>,
        session: Arc<Session>,
        landing: &str,
    ) -> Result<(Response<Body>, SessionKey), Reply> {
        let Some(key) = self.sessions.key(req.headers()) else {
            return self.create_session(req, session, landing).await;
        };
        let store = self.sessions.store();
        // Twice at most: a refresh that wrote in between is simply read again.
        for _ in 0..2 {
            let current = match store.load_for_update(&key).await {
                Ok(Some(current)) => current,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %log_safe(Chain(&e)), "could not read the session to upgrade");
                    return Err(Unavailable::SessionNotSaved(e).into());
                }
            };
            if current.session.identity.sub() != session.identity.sub()
                || current.session.provider != session.provider
            {
                break;
            }
            let mut upgraded = Session::clone(&session);
            upgraded.login_at = current.session.login_at;
            match store.replace(&key, &current, Arc::new(upgraded)).await {
                Ok(Replaced::Done) => {
                    let sub = log_safe(session.identity.sub());
                    tracing::info!(sub = %sub, "step-up login succeeded");
                    return Ok((reply::found(landing), key));
                }
                Ok(Replaced::Changed) => {}
                Ok(Replaced::Gone) => break,
                Err(e) => {
                    tracing::warn!(error = %log_safe(Chain(&e)), "could not store the upgraded session");
                    return Err(Unavailable::SessionNotSaved(e).into());
                }
            }
        }
        self.create_session(req, session, landing).await
    }
}

impl Login {
    /// Send a kept form post upstream with the new session and answer with the upstream's
    /// answer, carrying the cookies of `landed` (the new session's). When the post's route
    /// no longer lets this user in, the browser lands as after any login instead (`landed`).
    async fn replay<B>(
        &self,
        req: &Request<B>,
        peer: Peer,
        post: FormPost,
        key: SessionKey,
        session: Arc<Session>,
        landed: Response<Body>,
    ) -> Result<Response<Body>, Reply> {
        let route = self
            .routes
            .find(&Method::POST, post.host.as_deref(), &post.path);
        let auth = Authenticated::Session(key, session);
        let identity = auth.identity();
        let now = self.clock.unix_now();
        let allowed = route.rule.policy == Policy::Authenticated
            && route.rule.preserve_form_posts
            && (route.authorize(identity.groups(), identity.email(), identity.claims())).is_ok()
            && route
                .step_up()
                .is_none_or(|r| r.met_by(identity.claims(), now));
        let target = match &post.query {
            Some(q) => format!("{}?{q}", post.path),
            None => post.path.clone(),
        };
        let Ok(uri) = target.parse::<http::Uri>() else {
            return Ok(landed);
        };
        if !allowed {
            return Ok(landed);
        }
        let mut upstream_req = Request::new(post.body);
        *upstream_req.method_mut() = Method::POST;
        *upstream_req.uri_mut() = uri;
        let headers = upstream_req.headers_mut();
        for (name, value) in post.headers {
            headers.append(name, value);
        }
        // The app's own cookies as the browser sends them now; ours never.
        for cookie in req.headers().get_all(COOKIE) {
            headers.append(COOKIE, cookie.clone());
        }
        let session_cookie = self.sessions.cookie().name();
        headers::remove_cookies(headers, |name| {
            name == session_cookie || self.logins.is_login_cookie(name)
        });
        if self.auth.vouch(headers, &auth, route).is_err() {
            return Ok(landed);
        }
        headers::set_forwarded(
            headers,
            peer,
            headers::peer_address_value(&peer).as_ref(),
            self.forwarded_proto,
        );
        let cookies: Vec<HeaderValue> = landed
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .cloned()
            .collect();
        let upstream = self.upstreams.get(route.upstream);
        match upstream
            .replay(upstream_req, &route.upstream_path(&post.path))
            .await
        {
            Ok(mut response) => {
                for cookie in cookies {
                    response.headers_mut().append(SET_COOKIE, cookie);
                }
                tracing::info!("kept form post sent after the login");
                Ok(response)
            }
            Err(e) => {
                tracing::warn!(error = %log_safe(Chain(&e)), "could not send a kept form post");
                Err(cookies
                    .into_iter()
                    .fold(Reply::from(e), |reply, c| reply.clearing(Some(c))))
            }
        }
    }
}

/// The first two values of the query parameter `name`, decoded (two tell "repeated").
fn query_values(uri: &http::Uri, name: &str) -> Vec<String> {
    let query = uri.query().unwrap_or_default();
    url::form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == name)
        .take(2)
        .map(|(_, v)| v.into_owned())
        .collect()
}

/// `result`, clearing the login cookie of `pending` (a login the callback has used up).
fn finished(
    result: Result<Response<Body>, Reply>,
    pending: Option<&PendingLogin>,
    logins: &Logins,
) -> Result<Response<Body>, Reply> {
    let clear = pending.and_then(|p| logins.clear_for(&p.state));
    match result {
        Ok(mut response) => {
            if let Some(clear) = clear {
                response.headers_mut().append(SET_COOKIE, clear);
            }
            Ok(response)
        }
        Err(reply) => Err(reply.clearing(clear)),
    }
}

/// The page for a provider's `error` code: a short sentence for the codes of RFC 6749 section
/// 4.1.2.1 and OpenID Connect Core section 3.1.2.6, "Login failed." for anything else.
fn provider_error(code: &str) -> &'static str {
    match code {
        "access_denied" => "The identity provider refused the login (access_denied).",
        "invalid_request" => {
            "The identity provider found the login request invalid (invalid_request)."
        }
        "unauthorized_client" => {
            "The identity provider does not let this application log in (unauthorized_client)."
        }
        "unsupported_response_type" => {
            "The identity provider does not support this kind of login (unsupported_response_type)."
        }
        "invalid_scope" => "The identity provider refused the requested scopes (invalid_scope).",
        "server_error" => "The identity provider had an internal error (server_error).",
        "temporarily_unavailable" => {
            "The identity provider is temporarily unavailable (temporarily_unavailable)."
        }
        "interaction_required" => {
            "The identity provider needs you to interact with it (interaction_required)."
        }
        "login_required" => "The identity provider needs you to log in (login_required).",
        "account_selection_required" => {
            "The identity provider needs you to choose an account (account_selection_required)."
        }
        "consent_required" => "The identity provider needs your consent (consent_required).",
        _ => "Login failed.",
    }
}
