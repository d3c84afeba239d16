//! `/oauth2/sign_out` (RP-initiated) and `/oauth2/backchannel_logout` (provider-initiated).

use std::sync::Arc;
use std::time::Duration;

use http::header::SET_COOKIE;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::Value;
use url::Url;

use super::{Shared, query_param};
use crate::config::Config;
use crate::error::Chain;
use crate::logging::log_safe;
use crate::oidc::jwt::{Expect, JwtError, LEEWAY_SECS, LOGOUT_TOKEN_MAX_AGE_SECS};
use crate::oidc::{Oidc, Providers};
use crate::proxy::Body;
use crate::redirect::SafeRedirect;
use crate::reply::{self, Reply};
use crate::session::{Marker, ProviderId, SessionStore, Sessions};

/// Largest back-channel request body read (a logout token is ~1 KB).
const MAX_LOGOUT_BODY: usize = 64 * 1024;
/// How long a used token is remembered: past this, its `iat` refuses it anyway (the oldest
/// acceptable `iat` is now + leeway at first use; it stays acceptable for the age + leeway).
const REPLAY_MEMORY: Duration = Duration::from_secs(LOGOUT_TOKEN_MAX_AGE_SECS + 2 * LEEWAY_SECS);

/// What sign-out and back-channel logout need: the sessions, the provider (revocation,
/// end-session, the logout token's keys), where to land.
pub struct Logouts {
    sessions: Arc<Sessions>,
    providers: Arc<Providers>,
    public_url: Url,
    /// `server.allowed_redirect_hosts`.
    redirect_hosts: Vec<String>,
}

// === impl Logouts ===

impl Logouts {
    pub fn new(cfg: &Config, shared: &Shared) -> Self {
        Logouts {
            sessions: shared.sessions.clone(),
            providers: shared.providers.clone(),
            public_url: cfg.server.public_url.clone(),
            redirect_hosts: cfg.server.allowed_redirect_hosts.clone(),
        }
    }

    /// Delete the session, revoke its refresh token (RFC 7009: Logto's end-session does not revoke
    /// `offline_access` grants), then log out at the provider.
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
        // The session's own provider revokes its grant and ends its login there.
        if let Some(session) = &session
            && let Some(oidc) = self.providers.get(session.provider)
        {
            tracing::info!(sub = %log_safe(session.identity.sub()), provider = oidc.label(), "sign-out");
            if let Some(refresh_token) = &session.tokens.refresh_token {
                oidc.revoke(refresh_token).await;
            }
            target = oidc
                .end_session_url(session.tokens.id_token.as_deref())
                .map(String::from);
        }
        let target = target.unwrap_or_else(|| {
            let rd = query_param(req.uri(), "rd").unwrap_or_else(|| super::home(&self.public_url));
            SafeRedirect::parse_allowing(&rd, &self.public_url, &self.redirect_hosts)
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
    /// A token is used once: its issuer and `jti` are remembered for as
    /// long as its `iat` keeps it acceptable, in the session store (so, with Redis, by every
    /// replica). The sessions are ended first and the `jti` remembered after, so that a store
    /// failure in between answers 503 and the provider's retry is still honoured; a duplicate
    /// that races the first one only ends the same sessions again.
    pub async fn backchannel(&self, req: Request<Incoming>) -> Result<Response<Body>, Reply> {
        let Some(token) = read_logout_token(req).await else {
            return Err(Reply::InvalidLogoutRequest("missing logout_token"));
        };
        let logout = match self.verify(&token).await {
            Ok(logout) => logout,
            Err(e) => {
                let reason = description(&e);
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
        let store = self.sessions.store();
        if let Err(e) = store.delete_matching(logout.provider, sid, sub).await {
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

impl Logouts {
    /// Verify a logout token against the provider it names in `iss` (and, among providers
    /// sharing an issuer, whose client id is in its `aud`): that provider's keys, issuer and
    /// client id, in full. The claims are read unverified only to choose the provider.
    async fn verify(&self, token: &str) -> Result<Logout, JwtError> {
        let candidates = self.providers.claimed_by(token);
        let Some((first, others)) = candidates.split_first() else {
            // No provider has this issuer: judged by the default provider, which refuses it
            // with the precise reason (wrong issuer, bad signature, ...).
            return verify_logout_token(self.providers.default_provider(), token).await;
        };
        let mut result = verify_logout_token(first, token).await;
        for oidc in others {
            if result.is_ok() {
                break;
            }
            result = verify_logout_token(oidc, token).await;
        }
        result
    }
}

async fn read_logout_token(req: Request<Incoming>) -> Option<String> {
    let body = Limited::new(req.into_body(), MAX_LOGOUT_BODY)
        .collect()
        .await
        .ok()?
        .to_bytes();
    logout_token_from_form(&body)
}

/// The `logout_token` of an `application/x-www-form-urlencoded` body.
pub(crate) fn logout_token_from_form(body: &[u8]) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == "logout_token")
        .map(|(_, v)| v.into_owned())
}

/// What a verified logout token asks for.
struct Logout {
    /// The provider whose keys verified it: only its sessions end.
    provider: ProviderId,
    sid: Option<String>,
    sub: Option<String>,
    /// Its single-use marker: SHA-256 of its issuer and `jti`.
    once: Marker,
}

/// Back-Channel Logout 1.0 section 2.6, but for single use (the
/// caller's): see [`Expect::LogoutToken`].
async fn verify_logout_token(oidc: &Oidc, token: &str) -> Result<Logout, JwtError> {
    let claims = oidc.verify_jwt(token, Expect::LogoutToken).await?;
    // Verified: `iss` and `jti` are strings, `sid` and `sub` strings when present.
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    let (Some(issuer), Some(jti)) = (text("iss"), text("jti")) else {
        return Err(JwtError::Claim("no jti"));
    };
    Ok(Logout {
        provider: oidc.id,
        sid: text("sid").map(str::to_owned),
        sub: text("sub").map(str::to_owned),
        once: Marker {
            kind: "once",
            id: single_use_id(issuer, jti),
        },
    })
}

/// The 400 answer's `error_description` (and the log's reason) for a refused logout token.
fn description(e: &JwtError) -> &'static str {
    match e {
        JwtError::NotReady => "provider not available",
        JwtError::UnknownKey => "unknown signing key",
        JwtError::Critical => "unsupported critical header",
        JwtError::Malformed | JwtError::Algorithm | JwtError::Signature => "invalid signature",
        JwtError::Issuer => "wrong issuer",
        JwtError::Audience => "wrong audience",
        JwtError::Expired => "expired",
        JwtError::NotYetValid => "not valid yet",
        JwtError::IssuedInFuture => "issued in the future",
        JwtError::TooOld => "issued too long ago",
        JwtError::NotANumericDate => "a time claim is not a whole number of seconds",
        JwtError::NotAnAccessToken => "not a logout token",
        JwtError::Claim(what) => what,
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

    #[test]
    fn single_use_ids_separate_issuer_and_jti() {
        assert_ne!(single_use_id("ab", "c"), single_use_id("a", "bc"));
        assert_eq!(single_use_id("i", "j"), single_use_id("i", "j"));
    }
}
