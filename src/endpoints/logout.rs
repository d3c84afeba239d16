//! `/oauth2/sign_out` (RP-initiated) and `/oauth2/backchannel_logout` (provider-initiated).

use std::sync::Arc;
use std::time::Duration;

use http::header::SET_COOKIE;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{Map, Value};

use url::Url;

use super::{Shared, query_param};
use crate::clock::Clock;
use crate::config::Config;
use crate::logging::{Chain, log_safe};
use crate::oidc::Oidc;
use crate::oidc::jwt::{self, JwtError};
use crate::proxy::Body;
use crate::redirect::SafeRedirect;
use crate::reply::{self, Reply};
use crate::session::{Marker, SessionStore, Sessions};

/// The OpenID Back-Channel Logout event (section 2.4).
const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// Largest back-channel request body read (a logout token is ~1 KB).
const MAX_LOGOUT_BODY: usize = 64 * 1024;
const LEEWAY_SECS: u64 = 60;
/// A logout token is accepted only this long after its `iat` (plus leeway): Details 30.
const MAX_AGE_SECS: u64 = 600;
/// How long a used token is remembered: past this, its `iat` refuses it anyway (the oldest
/// acceptable `iat` is now + leeway at first use; it stays acceptable for the age + leeway).
const REPLAY_MEMORY: Duration = Duration::from_secs(MAX_AGE_SECS + 2 * LEEWAY_SECS);

/// What sign-out and back-channel logout need: the sessions, the provider (revocation,
/// end-session, the logout token's keys), where to land.
pub struct Logouts {
    sessions: Arc<Sessions>,
    oidc: Arc<Oidc>,
    public_url: Url,
    clock: Clock,
}

// === impl Logouts ===

impl Logouts {
    pub fn new(cfg: &Config, shared: &Shared) -> Self {
        Logouts {
            sessions: shared.sessions.clone(),
            oidc: shared.oidc.clone(),
            public_url: cfg.server.public_url.clone(),
            clock: shared.clock.clone(),
        }
    }

    /// Delete the session, revoke its refresh token (RFC 7009: Logto's end-session does not revoke
    /// `offline_access` grants), then log out at the provider (contract Details 13).
    pub async fn sign_out<B>(&self, req: &Request<B>) -> Result<Response<Body>, Reply> {
        // A store that cannot be read or written is answered 503: telling the user "signed out"
        // (and clearing the cookie) while the session lives on would be a lie, and the session
        // could still be used with a copy of the cookie. The user can simply try again.
        let session = match self.sessions.end(req.headers()).await {
            Ok(session) => session,
            Err(e) => {
                tracing::warn!(error = %log_safe(Chain(&e)), "could not end the session at sign-out");
                return Err(e.into());
            }
        };
        let mut target = None;
        if let Some(session) = &session {
            tracing::info!(sub = %log_safe(session.identity.sub()), "sign-out");
            if let Some(refresh_token) = &session.tokens.refresh_token {
                self.oidc.revoke(refresh_token).await;
            }
            target = self
                .oidc
                .end_session_url(session.tokens.id_token.as_deref())
                .map(String::from);
        }
        let target = target.unwrap_or_else(|| {
            let rd = query_param(req.uri(), "rd").unwrap_or_else(|| "/".into());
            SafeRedirect::parse(&rd, &self.public_url)
                .as_str()
                .to_owned()
        });
        let mut response = reply::found(&target);
        response
            .headers_mut()
            .append(SET_COOKIE, self.sessions.clear_cookie());
        Ok(response)
    }

    /// Receive a `logout_token` and end the sessions of its `sid` (or of its `sub`).
    ///
    /// A token is used once (contract Details 30): its issuer and `jti` are remembered for as
    /// long as its `iat` keeps it acceptable, in the session store (so, with Redis, by every
    /// replica). The sessions are ended first and the `jti` remembered after, so that a store
    /// failure in between answers 503 and the provider's retry is still honoured; a duplicate
    /// that races the first one only ends the same sessions again.
    pub async fn backchannel(&self, req: Request<Incoming>) -> Result<Response<Body>, Reply> {
        let Some(token) = read_logout_token(req).await else {
            return Err(Reply::InvalidLogoutRequest("missing logout_token"));
        };
        let logout = match verify_logout_token(&self.oidc, &token, self.clock.unix_now()).await {
            Ok(logout) => logout,
            Err(reason) => {
                tracing::info!(reason = %log_safe(reason), "back-channel logout token rejected");
                return Err(Reply::InvalidLogoutRequest(reason));
            }
        };
        match self.sessions.store().is_claimed(&logout.once).await {
            Ok(false) => {}
            Ok(true) => {
                tracing::info!("back-channel logout token replayed: rejected");
                return Err(Reply::InvalidLogoutRequest("logout token already used"));
            }
            Err(e) => {
                tracing::warn!(error = %log_safe(Chain(&e)), "back-channel logout could not reach the store");
                return Err(e.into());
            }
        }
        let (sid, sub) = (logout.sid.as_deref(), logout.sub.as_deref());
        if let Err(e) = self.sessions.store().delete_matching(sid, sub).await {
            tracing::warn!(error = %log_safe(Chain(&e)), "back-channel logout could not reach the store");
            return Err(e.into());
        }
        if let Err(e) = self
            .sessions
            .store()
            .claim_once(&logout.once, REPLAY_MEMORY)
            .await
        {
            tracing::warn!(error = %log_safe(Chain(&e)), "back-channel logout token could not be remembered");
            return Err(e.into());
        }
        tracing::info!(
            sid = %log_safe(sid.unwrap_or("-")),
            sub = %log_safe(sub.unwrap_or("-")),
            "back-channel logout"
        );
        let mut ok = reply::text(StatusCode::OK, "ok");
        ok.headers_mut().remove(http::header::CONTENT_TYPE);
        Ok(ok)
    }
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

/// What a verified logout token asks for.
struct Logout {
    sid: Option<String>,
    sub: Option<String>,
    /// Its single-use marker: SHA-256 of its issuer and `jti`.
    once: Marker,
}

/// Back-Channel Logout 1.0 section 2.6, plus contract Details 30: signature (no `crit`),
/// iss, aud, a recent `iat`, a `jti`, the back-channel event as a JSON object, a sid or sub
/// (strings), and no nonce.
async fn verify_logout_token(oidc: &Oidc, token: &str, now: u64) -> Result<Logout, &'static str> {
    let provider = oidc.provider().ok_or("provider not available")?;
    let verified = match jwt::verify_signature(token, provider.jwks(), &provider.algorithms) {
        Err(JwtError::UnknownKey) => {
            let refreshed = oidc.refetch_jwks().await.ok_or("unknown signing key")?;
            jwt::verify_signature(token, refreshed.jwks(), &refreshed.algorithms)
        }
        other => other,
    };
    let claims = match verified {
        Ok(verified) => verified.claims,
        Err(JwtError::Critical) => return Err("unsupported critical header"),
        Err(_) => return Err("invalid signature"),
    };
    if claims.get("iss").and_then(Value::as_str) != Some(provider.issuer()) {
        return Err("wrong issuer");
    }
    let client_id = Value::String(oidc.cfg.client_id.clone());
    let aud_ok = match claims.get("aud") {
        Some(Value::Array(list)) => list.contains(&client_id),
        Some(aud) => *aud == client_id,
        None => false,
    };
    if !aud_ok {
        return Err("wrong audience");
    }
    check_times(&claims, now)?;
    let jti = match claims.get("jti") {
        Some(Value::String(jti)) if !jti.is_empty() => jti,
        _ => return Err("no jti"),
    };
    let event = claims
        .get("events")
        .and_then(Value::as_object)
        .ok_or("events is not a JSON object")?
        .get(BACKCHANNEL_EVENT)
        .ok_or("not a back-channel logout event")?;
    if !event.is_object() {
        return Err("the back-channel logout event is not a JSON object");
    }
    if claims.contains_key("nonce") {
        return Err("a logout token must not carry a nonce");
    }
    let (sid, sub) = (text_claim(&claims, "sid")?, text_claim(&claims, "sub")?);
    if sid.is_none() && sub.is_none() {
        return Err("neither sid nor sub");
    }
    Ok(Logout {
        sid,
        sub,
        once: Marker {
            kind: "once",
            id: single_use_id(provider.issuer(), jti),
        },
    })
}

/// `iat` within the last [`MAX_AGE_SECS`] (and not in the future), with leeway; an `exp`,
/// when present, not past.
fn check_times(claims: &Map<String, Value>, now: u64) -> Result<(), &'static str> {
    let iat = claims.get("iat").and_then(Value::as_u64).ok_or("no iat")?;
    if iat > now + LEEWAY_SECS {
        return Err("issued in the future");
    }
    if iat + MAX_AGE_SECS + LEEWAY_SECS < now {
        return Err("issued too long ago");
    }
    if claims
        .get("exp")
        .and_then(Value::as_u64)
        .is_some_and(|exp| exp.saturating_add(LEEWAY_SECS) < now)
    {
        return Err("expired");
    }
    Ok(())
}

/// A claim that must be a string when present.
fn text_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<String>, &'static str> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err("sid and sub must be strings"),
    }
}

/// The single-use id of a logout token: SHA-256 over its issuer and `jti`, each
/// length-prefixed (so no two pairs hash alike), whatever their size.
fn single_use_id(issuer: &str, jti: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for part in [issuer, jti] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    hash.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn times(iat: u64, exp: Option<u64>) -> Map<String, Value> {
        let mut claims = json!({"iat": iat});
        if let Some(exp) = exp {
            claims["exp"] = json!(exp);
        }
        claims.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn logout_tokens_are_recent() {
        let now = 1_800_000_000;
        assert_eq!(check_times(&times(now, None), now), Ok(()));
        assert_eq!(check_times(&times(now - 660, None), now), Ok(()));
        assert!(check_times(&times(now - 661, None), now).is_err());
        assert!(check_times(&times(now - 365 * 86400, None), now).is_err());
        assert_eq!(check_times(&times(now + 60, None), now), Ok(()));
        assert!(check_times(&times(now + 61, None), now).is_err());
        assert!(check_times(&times(now, Some(now - 61)), now).is_err());
        assert!(check_times(&Map::new(), now).is_err());
    }

    #[test]
    fn single_use_ids_separate_issuer_and_jti() {
        assert_ne!(single_use_id("ab", "c"), single_use_id("a", "bc"));
        assert_eq!(single_use_id("i", "j"), single_use_id("i", "j"));
    }
}
