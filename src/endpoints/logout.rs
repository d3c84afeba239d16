//! `/oauth2/sign_out` (RP-initiated) and `/oauth2/backchannel_logout` (provider-initiated).

use std::sync::Arc;

use http::header::SET_COOKIE;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{Map, Value, json};

use super::query_param;
use crate::body::Body;
use crate::gateway::Gateway;
use crate::logging::log_safe;
use crate::oidc::jwt::{self, JwtError};
use crate::redirect::SafeRedirect;
use crate::response;
use crate::session::{SessionStore, unix_now};

/// The OpenID Back-Channel Logout event (section 2.4).
const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// Largest back-channel request body read (a logout token is ~1 KB).
const MAX_LOGOUT_BODY: usize = 64 * 1024;
const LEEWAY_SECS: u64 = 60;

/// Delete the session, revoke its refresh token (RFC 7009: Logto's end-session does not revoke
/// `offline_access` grants), then log out at the provider (contract Details 13).
pub async fn sign_out<B>(gateway: &Arc<Gateway>, req: &Request<B>) -> Response<Body> {
    let key = gateway.cookies.session_key(req.headers());
    let session = match key {
        Some(key) => {
            let session = gateway.store.load(&key).await.ok().flatten();
            if let Err(e) = gateway.store.delete(&key).await {
                tracing::warn!(error = %log_safe(&e), "could not delete session at sign-out");
            }
            session
        }
        None => None,
    };
    let mut target = None;
    if let Some(session) = &session {
        tracing::info!(sub = %log_safe(session.identity.sub()), "sign-out");
        if let Some(refresh_token) = &session.tokens.refresh_token {
            gateway.oidc.revoke(refresh_token).await;
        }
        target = gateway
            .oidc
            .end_session_url(session.tokens.id_token.as_deref())
            .map(String::from);
    }
    let target = target.unwrap_or_else(|| {
        let rd = query_param(req.uri(), "rd").unwrap_or_else(|| "/".into());
        SafeRedirect::parse(&rd, &gateway.cfg.server.public_url)
            .as_str()
            .to_owned()
    });
    let mut response = response::found(&target);
    response
        .headers_mut()
        .append(SET_COOKIE, gateway.cookies.clear_cookie());
    response
}

/// Receive a `logout_token` and end the sessions of its `sid` (or of its `sub`).
pub async fn backchannel(gateway: &Arc<Gateway>, req: Request<Incoming>) -> Response<Body> {
    let Some(token) = read_logout_token(req).await else {
        return invalid_request("missing logout_token");
    };
    let claims = match verify_logout_token(gateway, &token).await {
        Ok(claims) => claims,
        Err(reason) => {
            tracing::info!(reason = %log_safe(reason), "back-channel logout token rejected");
            return invalid_request(reason);
        }
    };
    let sid = claims.get("sid").and_then(Value::as_str);
    let sub = claims.get("sub").and_then(Value::as_str);
    if let Err(e) = gateway.store.delete_matching(sid, sub).await {
        tracing::warn!(error = %log_safe(&e), "back-channel logout could not reach the store");
        return response::unavailable(1);
    }
    tracing::info!(
        sid = %log_safe(sid.unwrap_or("-")),
        sub = %log_safe(sub.unwrap_or("-")),
        "back-channel logout"
    );
    let mut ok = response::text(StatusCode::OK, "ok");
    ok.headers_mut().remove(http::header::CONTENT_TYPE);
    ok
}

async fn read_logout_token(req: Request<Incoming>) -> Option<String> {
    let body = Limited::new(req.into_body(), MAX_LOGOUT_BODY)
        .collect()
        .await
        .ok()?
        .to_bytes();
    url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "logout_token")
        .map(|(_, v)| v.into_owned())
}

/// Back-Channel Logout 1.0 section 2.6: signature, iss, aud, iat, the event, a sid or sub,
/// and no nonce.
async fn verify_logout_token(
    gateway: &Gateway,
    token: &str,
) -> Result<Map<String, Value>, &'static str> {
    let provider = gateway.oidc.provider().ok_or("provider not available")?;
    let claims = match jwt::verify_signature(token, provider.jwks(), &provider.algorithms) {
        Err(JwtError::UnknownKey) => {
            let refreshed = gateway
                .oidc
                .refetch_jwks()
                .await
                .ok_or("unknown signing key")?;
            jwt::verify_signature(token, refreshed.jwks(), &refreshed.algorithms)
        }
        other => other,
    }
    .map_err(|_| "invalid signature")?;
    let now = unix_now();
    if claims.get("iss").and_then(Value::as_str) != Some(provider.issuer()) {
        return Err("wrong issuer");
    }
    let client_id = Value::String(gateway.cfg.oidc.client_id.clone());
    let aud_ok = match claims.get("aud") {
        Some(Value::Array(list)) => list.contains(&client_id),
        Some(aud) => *aud == client_id,
        None => false,
    };
    if !aud_ok {
        return Err("wrong audience");
    }
    let iat = claims.get("iat").and_then(Value::as_u64).ok_or("no iat")?;
    if iat > now + LEEWAY_SECS {
        return Err("issued in the future");
    }
    if claims
        .get("exp")
        .and_then(Value::as_u64)
        .is_some_and(|exp| exp + LEEWAY_SECS < now)
    {
        return Err("expired");
    }
    let has_event = claims
        .get("events")
        .and_then(Value::as_object)
        .is_some_and(|events| events.contains_key(BACKCHANNEL_EVENT));
    if !has_event {
        return Err("not a back-channel logout event");
    }
    if claims.contains_key("nonce") {
        return Err("a logout token must not carry a nonce");
    }
    if !claims.contains_key("sid") && !claims.contains_key("sub") {
        return Err("neither sid nor sub");
    }
    Ok(claims)
}

fn invalid_request(description: &str) -> Response<Body> {
    response::json(
        StatusCode::BAD_REQUEST,
        &json!({"error": "invalid_request", "error_description": description}),
    )
}
