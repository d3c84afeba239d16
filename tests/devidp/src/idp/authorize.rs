//! The browser-facing endpoints: `GET /authorize` (RFC 6749 §4.1.1 with PKCE S256 required,
//! RFC 7636), the login form it shows and `POST /login` that completes it, and RP-initiated
//! logout at `GET /end_session` (OpenID Connect RP-Initiated Logout 1.0 §2). Any user name
//! logs in: this is a development provider.

use std::time::UNIX_EPOCH;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::Shared;
use super::controls::ResponseIss;
use super::grants::LoginRequest;
use super::web::{self, Body, Params, first};
use crate::html;

/// An authorization request that passed validation, waiting for a user.
#[derive(Debug)]
struct Pending {
    redirect_uri: String,
    state: Option<String>,
    nonce: Option<String>,
    scope: String,
    code_challenge: String,
    resources: Vec<String>,
    /// `acr_values` as sent (space-separated, OpenID Connect Core 3.1.2.1).
    acr_values: Option<String>,
}

/// Why an authorization request cannot go on.
#[derive(Debug)]
enum Rejection {
    /// Shown to the user: the client or redirect URI is not to be trusted.
    Page(&'static str),
    /// Sent back to the client: a 302 to this URL with `error=`.
    Redirect(String),
}

/// `GET /authorize`: validate, then auto-login or show the form.
pub(crate) fn authorize<B>(shared: &Shared, req: &Request<B>) -> Response<Body> {
    let params = web::parse_params(req.uri().query().unwrap_or_default());
    shared.controls.record_authorize(params.clone());
    let pending = match validate(shared, &params) {
        Ok(pending) => pending,
        Err(rejection) => return reject(shared, rejection),
    };
    match shared.controls.settings().auto_login {
        Some(user) => complete(shared, pending, user),
        None => login_page(shared, &pending, None),
    }
}

/// `POST /login`: the form's user name plus the pending request in hidden fields.
pub(crate) async fn login(shared: &Shared, body: Incoming) -> Response<Body> {
    let Some(params) = web::read_form(body).await else {
        return error_page(shared, StatusCode::BAD_REQUEST, "Unreadable form.");
    };
    let pending = match validate(shared, &params) {
        Ok(pending) => pending,
        Err(rejection) => return reject(shared, rejection),
    };
    match first(&params, "username")
        .map(str::trim)
        .filter(|u| !u.is_empty())
    {
        Some(user) => complete(shared, pending, user.to_owned()),
        None => login_page(shared, &pending, Some("Please enter a user name.")),
    }
}

/// `GET /end_session`: records the call, then 302 to `post_logout_redirect_uri` (with
/// `state`) or a "signed out" page.
pub(crate) fn end_session<B>(shared: &Shared, req: &Request<B>) -> Response<Body> {
    let params = web::parse_params(req.uri().query().unwrap_or_default());
    shared.controls.record_end_session(params.clone());
    match first(&params, "post_logout_redirect_uri") {
        Some(target) => match first(&params, "state") {
            Some(state) => web::redirect(&web::with_query(target, &[("state", state)])),
            None => web::redirect(target),
        },
        None => web::html(
            StatusCode::OK,
            html::page(
                shared.banner(),
                "Signed out",
                "<p>You are signed out of the development provider.</p>",
            ),
        ),
    }
}

/// Client and redirect URI problems are shown to the user (never redirect to an
/// unvalidated URI, RFC 6749 §4.1.2.1); the rest go back to the client as `error=`.
fn validate(shared: &Shared, params: &Params) -> Result<Pending, Rejection> {
    if first(params, "client_id") != Some(shared.options.client_id.as_str()) {
        return Err(Rejection::Page("Unknown client_id."));
    }
    let Some(redirect_uri) = first(params, "redirect_uri") else {
        return Err(Rejection::Page("Missing redirect_uri."));
    };
    let state = first(params, "state").map(str::to_owned);
    let iss = response_iss(shared);
    let reject = |error: &str, description: &str| {
        let mut pairs = vec![("error", error), ("error_description", description)];
        if let Some(state) = state.as_deref() {
            pairs.push(("state", state));
        }
        if let Some(iss) = iss.as_deref() {
            pairs.push(("iss", iss));
        }
        Rejection::Redirect(web::with_query(redirect_uri, &pairs))
    };
    if first(params, "response_type") != Some("code") {
        return Err(reject(
            "unsupported_response_type",
            "only response_type=code",
        ));
    }
    let challenge = first(params, "code_challenge");
    let (Some(code_challenge), Some("S256")) = (challenge, first(params, "code_challenge_method"))
    else {
        return Err(reject(
            "invalid_request",
            "PKCE with code_challenge_method=S256 is required",
        ));
    };
    Ok(Pending {
        redirect_uri: redirect_uri.to_owned(),
        state: state.clone(),
        nonce: first(params, "nonce").map(str::to_owned),
        scope: first(params, "scope").unwrap_or("openid").to_owned(),
        code_challenge: code_challenge.to_owned(),
        resources: params.get("resource").cloned().unwrap_or_default(),
        acr_values: first(params, "acr_values").map(str::to_owned),
    })
}

/// Issues a code for `user` and 302s back to the client.
fn complete(shared: &Shared, pending: Pending, user: String) -> Response<Body> {
    let settings = shared.controls.settings();
    let acr = settings.acr.clone().or_else(|| {
        let requested = pending.acr_values.as_deref().unwrap_or_default();
        requested.split_whitespace().next().map(str::to_owned)
    });
    let authenticated = shared
        .controls
        .now()
        .checked_sub(settings.authenticated_ago)
        .unwrap_or(UNIX_EPOCH);
    let auth_time = authenticated
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let code = shared.controls.grants.issue_code(LoginRequest {
        user,
        scope: pending.scope,
        resources: pending.resources,
        nonce: pending.nonce,
        redirect_uri: pending.redirect_uri.clone(),
        code_challenge: pending.code_challenge,
        acr,
        auth_time,
    });
    let mut pairs = vec![("code", code.as_str())];
    if let Some(state) = pending.state.as_deref() {
        pairs.push(("state", state));
    }
    let iss = response_iss(shared);
    if let Some(iss) = iss.as_deref() {
        pairs.push(("iss", iss));
    }
    web::redirect(&web::with_query(&pending.redirect_uri, &pairs))
}

/// The `iss` parameter of an authorization response (RFC 9207 section 2), as the controls
/// say: the issuer, none, or another provider's.
fn response_iss(shared: &Shared) -> Option<String> {
    match shared.controls.settings().response_iss {
        ResponseIss::Correct => Some(shared.issuer.clone()),
        ResponseIss::Omit => None,
        ResponseIss::Wrong => Some("https://attacker.example".to_owned()),
    }
}

fn login_page(shared: &Shared, pending: &Pending, message: Option<&str>) -> Response<Body> {
    let mut hidden = vec![
        ("client_id", shared.options.client_id.as_str()),
        ("redirect_uri", pending.redirect_uri.as_str()),
        ("response_type", "code"),
        ("code_challenge", pending.code_challenge.as_str()),
        ("code_challenge_method", "S256"),
        ("scope", pending.scope.as_str()),
    ];
    hidden.extend(pending.state.as_deref().map(|s| ("state", s)));
    hidden.extend(pending.nonce.as_deref().map(|n| ("nonce", n)));
    hidden.extend(pending.resources.iter().map(|r| ("resource", r.as_str())));
    hidden.extend(pending.acr_values.as_deref().map(|a| ("acr_values", a)));
    let fields: String = hidden
        .iter()
        .map(|(name, value)| {
            format!(
                "<input type=\"hidden\" name=\"{name}\" value=\"{}\">\n",
                html::escape(value)
            )
        })
        .collect();
    let message = message
        .map(|m| format!("<p style=\"color:#b00020\">{}</p>\n", html::escape(m)))
        .unwrap_or_default();
    let body = format!(
        "{message}<form method=\"post\" action=\"/login\">\n{fields}\
         <label>User name <input name=\"username\" autofocus required></label>\n\
         <button type=\"submit\">Sign in</button>\n</form>\n\
         <p>Any user name is accepted; no password.</p>"
    );
    web::html(
        StatusCode::OK,
        html::page(shared.banner(), "Sign in", &body),
    )
}

fn reject(shared: &Shared, rejection: Rejection) -> Response<Body> {
    match rejection {
        Rejection::Page(message) => error_page(shared, StatusCode::BAD_REQUEST, message),
        Rejection::Redirect(location) => web::redirect(&location),
    }
}

fn error_page(shared: &Shared, status: StatusCode, message: &str) -> Response<Body> {
    let body = format!("<p>{}</p>", html::escape(message));
    web::html(status, html::page(shared.banner(), "Sign-in error", &body))
}
