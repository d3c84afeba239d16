//! The admin API, served on `server.admin_listen` only (never on `listen`):
//!
//! - `GET /admin/sessions?sub=<sub>`: that user's sessions (a short id, login time, last use,
//!   expiry; never a token), `{"sessions": [..]}`;
//! - `POST /admin/sessions/revoke` with `{"sub": ".."}` or `{"sid": ".."}` (a short id from
//!   the listing): ends those sessions, revokes their refresh tokens at the provider where it
//!   has a revocation endpoint (one after the other, as sign-out does; with Redis, the tokens
//!   of the records' revocation envelopes), and answers `{"revoked": N,
//!   "revoked_at_provider": M}` (M: the tokens the provider accepted). Their tunnels close with
//!   them (`session::tunnels`); with Redis they are dead on every replica within 2 s.
//!
//! Every call needs `Authorization: Bearer <token of admin_token_file>`, compared in constant
//! time (as HMACs of both sides, so the length leaks nothing either); else 401. Bodies are
//! bounded and parsed strictly (unknown fields refused).

use std::sync::Arc;

use hmac::{Hmac, Mac};
use http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::json;
use sha2::Sha256;

use crate::error::Chain;
use crate::headers::Peer;
use crate::logging::log_safe;
use crate::oidc::Providers;
use crate::proxy::Body;
use crate::reply;
use crate::secret::Secret;
use crate::session::Sessions;
use crate::session::admin::{Target, valid_id};

/// Largest request body read.
const MAX_BODY: usize = 4096;
/// Longest `sub` accepted.
const MAX_SUB: usize = 1024;

/// The handler of `server.admin_listen`.
pub struct Admin {
    sessions: Arc<Sessions>,
    providers: Arc<Providers>,
    /// HMAC of the admin token under a per-process random key.
    expected: [u8; 32],
    mac_key: [u8; 32],
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    sub: Option<String>,
    sid: Option<String>,
}

// === impl Admin ===

impl Admin {
    pub fn new(sessions: Arc<Sessions>, providers: Arc<Providers>, token: &Secret<String>) -> Self {
        use rand::RngCore;
        let mut mac_key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut mac_key);
        let expected = mac(&mac_key, token.expose().as_bytes());
        Admin {
            sessions,
            providers,
            expected,
            mac_key,
        }
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<Body> {
        if !self.authorized(&req) {
            let mut r = reply::json(StatusCode::UNAUTHORIZED, &json!({"error": "unauthorized"}));
            r.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/admin/sessions") => self.list(&req).await,
            (&Method::POST, "/admin/sessions/revoke") => self.revoke(req).await,
            (_, "/admin/sessions" | "/admin/sessions/revoke") => {
                error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
            }
            _ => error(StatusCode::NOT_FOUND, "not found"),
        }
    }

    /// `Authorization: Bearer <token>`, compared in constant time.
    fn authorized<B>(&self, req: &Request<B>) -> bool {
        let Some(value) = req.headers().get(AUTHORIZATION) else {
            return false;
        };
        let Some(token) = value.as_bytes().strip_prefix(b"Bearer ") else {
            return false;
        };
        let Ok(mut m) = Hmac::<Sha256>::new_from_slice(&self.mac_key) else {
            return false;
        };
        m.update(token);
        m.verify_slice(&self.expected).is_ok()
    }

    async fn list(&self, req: &Request<Incoming>) -> Response<Body> {
        // Exactly one parameter, `sub`: anything else is refused rather than ignored.
        let query = req.uri().query().unwrap_or_default();
        let mut params = url::form_urlencoded::parse(query.as_bytes());
        let sub = match (params.next(), params.next()) {
            (Some((name, sub)), None) if name == "sub" && valid_sub(&sub) => sub.into_owned(),
            _ => return error(StatusCode::BAD_REQUEST, "the query needs sub=<user>, alone"),
        };
        match self.sessions.store().sessions_of(&sub).await {
            Ok(sessions) => reply::json(StatusCode::OK, &json!({ "sessions": sessions })),
            Err(e) => unavailable(&e),
        }
    }

    async fn revoke(&self, req: Request<Incoming>) -> Response<Body> {
        let json_body = (req.headers().get(CONTENT_TYPE))
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                let v = v.split(';').next().unwrap_or_default().trim();
                v.eq_ignore_ascii_case("application/json")
            });
        if !json_body {
            return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "send application/json");
        }
        let Ok(body) = Limited::new(req.into_body(), MAX_BODY).collect().await else {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body too large or unreadable",
            );
        };
        let target = match serde_json::from_slice::<RevokeRequest>(&body.to_bytes()) {
            Ok(RevokeRequest {
                sub: Some(sub),
                sid: None,
            }) if valid_sub(&sub) => Target::Sub(sub),
            Ok(RevokeRequest {
                sub: None,
                sid: Some(id),
            }) if valid_id(&id) => Target::Id(id),
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "expected {\"sub\": \"<user>\"} or {\"sid\": \"<session id>\"}",
                );
            }
        };
        let revoked = match self.sessions.store().revoke(&target).await {
            Ok(revoked) => revoked,
            Err(e) => return unavailable(&e),
        };
        let mut at_provider: u64 = 0;
        for (provider, refresh_token) in &revoked.refresh_tokens {
            // At the session's own provider (a token is never sent to another).
            if let Some(oidc) = self.providers.get(*provider)
                && oidc.revoke(refresh_token).await
            {
                at_provider += 1;
            }
        }
        tracing::info!(
            revoked = revoked.count,
            revoked_at_provider = at_provider,
            by = match target {
                Target::Sub(_) => "sub",
                Target::Id(_) => "sid",
            },
            "admin revoke"
        );
        reply::json(
            StatusCode::OK,
            &json!({ "revoked": revoked.count, "revoked_at_provider": at_provider }),
        )
    }
}

impl crate::server::Handler for Admin {
    type PerConnection = ();
    type Body = Body;

    fn connection(&self, _peer: &Peer) {}

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        _peer: Peer,
        _connection: Arc<()>,
    ) -> Response<Body> {
        self.answer(req).await
    }
}

fn mac(key: &[u8; 32], data: &[u8]) -> [u8; 32] {
    let Ok(mut m) = Hmac::<Sha256>::new_from_slice(key) else {
        return [0; 32];
    };
    m.update(data);
    m.finalize().into_bytes().into()
}

fn valid_sub(sub: &str) -> bool {
    !sub.is_empty() && sub.len() <= MAX_SUB && !sub.chars().any(char::is_control)
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    reply::json(status, &json!({ "error": message }))
}

fn unavailable(e: &crate::session::StoreError) -> Response<Body> {
    tracing::warn!(error = %log_safe(Chain(e)), "admin API: session store unavailable");
    error(StatusCode::SERVICE_UNAVAILABLE, "session store unavailable")
}
