//! The back-channel endpoints: `POST /token` (RFC 6749 §4.1.3 code grant with PKCE, §6
//! refresh grant with Logto-style rotation), `POST /revoke` (RFC 7009) and `GET /userinfo`
//! (OpenID Connect Core §5.3). The token endpoint honours the injected [`TokenFault`]s before
//! doing anything else, so a faulted request still counts and is still recorded.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use percent_encoding::percent_decode_str;
use serde_json::Value;

use super::Shared;
use super::controls::{ClientAuth, TokenFault};
use super::grants::{InvalidGrant, RefreshPolicy};
use super::issue::{self, Issue, has_scope};
use super::web::{self, Body, OAuthError, Params, first};

/// `POST /token`.
pub(crate) async fn token(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let Some(form) = web::read_form(body).await else {
        return web::oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "unreadable form",
        );
    };
    shared.controls.record_token_request(&form);
    let fault = shared.controls.next_token_fault();
    if let Some(TokenFault::SlowAnswer(delay)) = fault {
        // The grant takes effect now (a rotated refresh token is spent); only the answer
        // is late, as with a provider that is slow to respond.
        let response = answer(shared, &parts.headers, &form);
        return match delay_or_shutdown(shared, delay).await {
            Some(shutting_down) => shutting_down,
            None => response,
        };
    }
    if let Some(response) = apply_fault(shared, fault).await {
        return response;
    }
    answer(shared, &parts.headers, &form)
}

fn answer(shared: &Shared, headers: &HeaderMap, form: &Params) -> Response<Body> {
    match grant(shared, headers, form) {
        Ok(body) => web::json(StatusCode::OK, &body),
        Err(error) => error.into_response(),
    }
}

/// `POST /revoke`: authenticates the client, records the token and invalidates it. Unknown
/// tokens are answered 200 too (RFC 7009 §2.2).
pub(crate) async fn revoke(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let Some(form) = web::read_form(body).await else {
        return web::oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "unreadable form",
        );
    };
    if let Err(error) = authenticate(shared, &parts.headers, &form) {
        return error.into_response();
    }
    let Some(token) = first(&form, "token") else {
        return web::oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "token missing");
    };
    shared.controls.record_revocation(token);
    shared.controls.grants.revoke_token(token);
    web::text(StatusCode::OK, "")
}

/// `GET /userinfo`: the user's claims for a valid Bearer access token, else 401.
pub(crate) fn userinfo<B>(shared: &Shared, req: &Request<B>) -> Response<Body> {
    shared.controls.count_userinfo();
    let now = shared.controls.now();
    let grant =
        bearer(req.headers()).and_then(|token| shared.controls.grants.access_grant(token, now));
    let Some(grant) = grant else {
        let mut response = web::oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "no valid access token",
        );
        let challenge = HeaderValue::from_static("Bearer error=\"invalid_token\"");
        response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
        return response;
    };
    let claims = issue::user_claims(&shared.controls.settings(), &grant.user);
    web::json(StatusCode::OK, &serde_json::Value::Object(claims))
}

/// Applies the fault (the next queued or sticky one). `Some` is the response to send instead.
async fn apply_fault(shared: &Shared, fault: Option<TokenFault>) -> Option<Response<Body>> {
    match fault? {
        TokenFault::Status(status, body) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let content_type = if body.trim_start().starts_with('{') {
                "application/json"
            } else {
                "text/plain"
            };
            Some(web::respond(status, content_type, body))
        }
        TokenFault::Hang => {
            shared.shutdown_requested().await;
            Some(web::text(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))
        }
        TokenFault::Delay(delay) | TokenFault::SlowAnswer(delay) => {
            delay_or_shutdown(shared, delay).await
        }
        TokenFault::InvalidGrant => Some(web::oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "injected fault",
        )),
        TokenFault::Close => {
            let mut response = web::text(StatusCode::INTERNAL_SERVER_ERROR, "");
            response.extensions_mut().insert(web::CloseConnection);
            Some(response)
        }
    }
}

async fn delay_or_shutdown(shared: &Shared, delay: Duration) -> Option<Response<Body>> {
    tokio::select! {
        () = tokio::time::sleep(delay) => None,
        () = shared.shutdown_requested() => Some(web::text(StatusCode::SERVICE_UNAVAILABLE, "shutting down")),
    }
}

/// Authenticates the client, then runs the grant `grant_type` names.
fn grant(shared: &Shared, headers: &HeaderMap, form: &Params) -> Result<Value, OAuthError> {
    let auth = authenticate(shared, headers, form)?;
    shared.controls.record_token_client_auth(auth);
    match first(form, "grant_type") {
        Some("authorization_code") => code_grant(shared, form),
        Some("refresh_token") => refresh_grant(shared, form),
        _ => Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be authorization_code or refresh_token",
        )),
    }
}

fn code_grant(shared: &Shared, form: &Params) -> Result<Value, OAuthError> {
    let code = first(form, "code").ok_or_else(|| invalid_request("code missing"))?;
    let grant = shared
        .controls
        .grants
        .redeem_code(
            code,
            first(form, "redirect_uri"),
            first(form, "code_verifier"),
        )
        .map_err(invalid_grant)?;
    let settings = shared.controls.settings();
    let refresh_token = has_scope(&grant.scope, "offline_access")
        .then(|| shared.controls.grants.add_refresh(grant.id));
    let resources = form.get("resource").cloned().unwrap_or_default();
    let issue = Issue {
        grant: &grant,
        settings: &settings,
        resources: &resources,
        refresh_token,
        id_token: true,
    };
    respond_tokens(shared, &issue)
}

/// RFC 6749 §6. Rotation on: the presented token is spent and a new one returned; a spent
/// token presented again revokes the grant. Rotation off: the same token comes back.
fn refresh_grant(shared: &Shared, form: &Params) -> Result<Value, OAuthError> {
    let token =
        first(form, "refresh_token").ok_or_else(|| invalid_request("refresh_token missing"))?;
    let settings = shared.controls.settings();
    let policy = match (settings.refresh_returns_refresh_token, settings.rotation) {
        (false, _) => RefreshPolicy::Omit,
        (true, true) => RefreshPolicy::Rotate,
        (true, false) => RefreshPolicy::Keep,
    };
    let grant = shared
        .controls
        .grants
        .use_refresh(token, policy)
        .map_err(invalid_grant)?;
    let refresh_token = match policy {
        RefreshPolicy::Rotate => Some(shared.controls.grants.add_refresh(grant.id)),
        RefreshPolicy::Keep => Some(token.to_owned()),
        RefreshPolicy::Omit => None,
    };
    let resources = form.get("resource").cloned().unwrap_or_default();
    let id_token = settings.issue_id_token_on_refresh;
    let issue = Issue {
        grant: &grant,
        settings: &settings,
        resources: &resources,
        refresh_token,
        id_token,
    };
    respond_tokens(shared, &issue)
}

fn respond_tokens(shared: &Shared, issue: &Issue<'_>) -> Result<Value, OAuthError> {
    issue::token_response(shared, issue).map_err(|e| {
        OAuthError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            e.to_string(),
        )
    })
}

/// RFC 6749 §2.3.1: HTTP Basic (id and secret form-urlencoded before base64) or the
/// `client_id`/`client_secret` form fields; a public client sends `client_id` alone.
fn authenticate(
    shared: &Shared,
    headers: &HeaderMap,
    form: &Params,
) -> Result<ClientAuth, OAuthError> {
    let (id, secret, method) = match basic_credentials(headers) {
        Some((id, secret)) => (Some(id), Some(secret), ClientAuth::SecretBasic),
        None => match first(form, "client_secret") {
            Some(secret) => (
                first(form, "client_id").map(str::to_owned),
                Some(secret.to_owned()),
                ClientAuth::SecretPost,
            ),
            None => (
                first(form, "client_id").map(str::to_owned),
                None,
                ClientAuth::None,
            ),
        },
    };
    let unauthorized = |why| OAuthError::new(StatusCode::UNAUTHORIZED, "invalid_client", why);
    if id.as_deref() != Some(shared.options.client_id.as_str()) {
        return Err(unauthorized("unknown client"));
    }
    match (&shared.options.client_secret, secret) {
        (None, _) => Ok(method),
        (Some(expected), Some(given)) if *expected == given => Ok(method),
        (Some(_), Some(_)) => Err(unauthorized("wrong client secret")),
        (Some(_), None) => Err(unauthorized("client authentication required")),
    }
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((form_decode(id)?, form_decode(secret)?))
}

/// `application/x-www-form-urlencoded` decoding of one component (`+` is a space).
fn form_decode(text: &str) -> Option<String> {
    percent_decode_str(&text.replace('+', " "))
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn invalid_request(description: &'static str) -> OAuthError {
    OAuthError::new(StatusCode::BAD_REQUEST, "invalid_request", description)
}

fn invalid_grant(error: InvalidGrant) -> OAuthError {
    OAuthError::new(StatusCode::BAD_REQUEST, "invalid_grant", error.0)
}
