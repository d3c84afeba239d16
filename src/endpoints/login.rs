//! `/oauth2/start` and `/oauth2/callback`: the authorization code flow with PKCE.
//!
//! Every failure a user or provider can cause answers 400 with a short HTML page and a link
//! to try again (contract Details 14), never a 5xx; only "provider not reachable yet" and
//! "store down" are 503.

use std::sync::Arc;

use http::header::SET_COOKIE;
use http::{Request, Response, StatusCode};

use super::query_param;
use crate::body::Body;
use crate::gateway::Gateway;
use crate::headers::find_cookie;
use crate::login::PendingLogin;
use crate::redirect::SafeRedirect;
use crate::response::{self, html_page};
use crate::session::{ResourceToken, Session, SessionStore, Tokens, new_key, unix_now};

pub async fn start<B>(gateway: &Arc<Gateway>, req: &Request<B>) -> Response<Body> {
    let Some(provider) = gateway.oidc.provider() else {
        return response::unavailable(5);
    };
    let rd = query_param(req.uri(), "rd").unwrap_or_else(|| "/".into());
    let landing = SafeRedirect::parse(&rd, &gateway.cfg.server.public_url);
    let logins = &gateway.logins;
    let cookie = find_cookie(req.headers(), logins.cookie_name());
    // Reuse the browser id so that several tabs can be logging in at once.
    let browser = logins.browser_id(cookie).unwrap_or_else(new_key);
    let auth = gateway.oidc.authorize(&provider);
    let pending = PendingLogin {
        browser,
        nonce: auth.nonce,
        pkce_verifier: auth.pkce_verifier,
        landing,
    };
    if let Err(e) = logins.remember(auth.state, pending).await {
        tracing::warn!(error = %e, "could not store a pending login");
        return response::unavailable(1);
    }
    let mut response = response::found(auth.url.as_str());
    if let Some(binding) = logins.binding_cookie(&browser) {
        response.headers_mut().append(SET_COOKIE, binding);
    }
    response
}

pub async fn callback<B>(gateway: &Arc<Gateway>, req: &Request<B>) -> Response<Body> {
    let uri = req.uri();
    if let Some(error) = query_param(uri, "error") {
        let detail = query_param(uri, "error_description").unwrap_or_default();
        tracing::info!(%error, %detail, "provider returned a login error");
        return login_failed(&format!("The identity provider said: {error}. {detail}"));
    }
    let (Some(state), Some(code)) = (query_param(uri, "state"), query_param(uri, "code")) else {
        return login_failed("The login response is incomplete.");
    };
    let logins = &gateway.logins;
    let browser = logins.browser_id(find_cookie(req.headers(), logins.cookie_name()));
    let pending = match logins.take(&state, browser).await {
        Ok(Some(pending)) => pending,
        Ok(None) => {
            return login_failed(
                "This login has expired, was already used, or was started in another browser.",
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not read a pending login");
            return response::unavailable(1);
        }
    };
    let tokens = match gateway
        .oidc
        .exchange_code(&code, &pending.pkce_verifier, &pending.nonce)
        .await
    {
        Ok(tokens) => tokens,
        Err(crate::oidc::flows::LoginError::NotReady) => return response::unavailable(5),
        Err(e) => {
            tracing::warn!(error = %e, "login failed");
            return login_failed("The identity provider's answer could not be accepted.");
        }
    };
    let claims = tokens.claims.as_ref();
    let (Some(identity), Some(bearer)) = (
        claims.and_then(|c| gateway.rules.identity(c)),
        Tokens::bearer_value(&tokens.access_token),
    ) else {
        return login_failed("The identity provider's answer lacks a user or a usable token.");
    };
    let session = Session {
        tokens: Tokens {
            bearer,
            access_expires_at: tokens.access_expires_at,
            refresh_token: tokens.refresh_token.map(Into::into),
            id_token: tokens.id_token.map(Into::into),
            more: ResourceToken::merge(tokens.more, &[]),
        },
        identity: Arc::new(identity),
        login_at: unix_now(),
        backoff: None,
    };
    create_session(gateway, req, session, pending.landing.as_str()).await
}

/// Store the session under a NEW id (no session fixation), drop any previous one, set the
/// cookie and land on the original page.
async fn create_session<B>(
    gateway: &Arc<Gateway>,
    req: &Request<B>,
    session: Session,
    landing: &str,
) -> Response<Body> {
    let sub = session.identity.sub().to_owned();
    let key = new_key();
    if let Err(e) = gateway.store.save(key, Arc::new(session)).await {
        tracing::error!(error = %e, "could not store the new session");
        return response::unavailable(2);
    }
    let previous =
        find_cookie(req.headers(), gateway.cookies.name()).and_then(|v| gateway.cookies.decode(v));
    if let Some(previous) = previous {
        let _ = gateway.store.delete(&previous).await;
    }
    tracing::info!(%sub, "login succeeded");
    let mut response = response::found(landing);
    let max_age = gateway.cfg.session.absolute_timeout.as_secs();
    if let Some(cookie) = gateway.cookies.set_cookie(&key, max_age) {
        response.headers_mut().append(SET_COOKIE, cookie);
    }
    response
}

fn login_failed(message: &str) -> Response<Body> {
    html_page(
        StatusCode::BAD_REQUEST,
        "Login failed",
        message,
        Some(("/oauth2/start", "Try again")),
    )
}
