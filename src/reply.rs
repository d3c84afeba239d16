//! Every answer the gateway writes itself, and the one place that turns a refusal into one.
//!
//! The pipeline and the endpoints return `Result<Response, Reply>`: a [`Reply`] says why the
//! gateway answers instead of forwarding (a decision, a fault of the upstream, the store or
//! the provider, a request it will not take), and [`Reply::into_response`] is the one match
//! that turns each into its status, headers and body, `Retry-After` included (chosen in
//! [`Reply::retry_after_secs`] only). Success answers (302 after login, 202 forward auth, 200
//! JSON) are built with the constructors below.
//!
//! Bodies are short and never carry internal details: the log line (with a request id)
//! has those.

use http::header::{
    CACHE_CONTROL, CONTENT_TYPE, LOCATION, RETRY_AFTER, SET_COOKIE, WWW_AUTHENTICATE,
};
use http::{HeaderValue, Response, StatusCode};

use crate::policy::Refusal;
use crate::proxy::{Body, ProxyError};
use crate::refresh::Stall;
use crate::session::StoreError;

/// Why the gateway answers a request itself. Decisions (who may pass) and faults (who
/// failed) alike: [`Reply::into_response`] knows the answer to each.
#[derive(Debug)]
pub enum Reply {
    /// No usable session or token.
    Unauthenticated(Box<Unauthenticated>),
    /// Logged in but not as strongly or as recently as the route requires (RFC 9470).
    StepUp(Box<StepUpChallenge>),
    /// A step-up login that still does not meet the route's requirement: 403, never a loop.
    StepUpFailed,
    /// Logged in but not allowed (groups, claims).
    Forbidden(Refusal),
    /// A `deny` route.
    Deny,
    /// A request we refuse to interpret (encoded slash in the path, ...): the 400 body.
    BadRequest(&'static str),
    /// An unknown path under `/oauth2/`.
    NotFound,
    MethodNotAllowed,
    /// A login that cannot finish: a page for people with a link to try again.
    LoginFailed(&'static str),
    /// A back-channel logout request refused (OpenID Back-Channel Logout 1.0 section 2.8).
    InvalidLogoutRequest(&'static str),
    /// The gateway cannot answer now: try again later.
    Unavailable(Unavailable),
    /// The upstream failed.
    Upstream(ProxyError),
    /// This answer, also deleting a cookie of ours.
    Clearing(Box<(Reply, HeaderValue)>),
}

/// Who to send where, when a request has no usable session.
#[derive(Debug)]
pub struct Unauthenticated {
    /// `<public_url>/oauth2/start?rd=<the request>`.
    pub login_url: String,
    /// A browser navigation: 302 to `login_url`. Anything else: 401 JSON naming it.
    pub redirect: bool,
    /// The `error_description` of the `WWW-Authenticate` challenge (a bearer token refused).
    pub bearer_error: Option<&'static str>,
}

/// A session (or bearer token) that must log in again, more strongly or more recently.
#[derive(Debug)]
pub struct StepUpChallenge {
    /// `<public_url>/oauth2/start?rd=<the request>`: the login asks for the route's requirement.
    pub login_url: String,
    /// A browser navigation: 302 to `login_url`. Anything else: 401 with the challenge.
    pub redirect: bool,
    /// The route's `require_acr`, space-separated.
    pub acr_values: Option<String>,
    /// The route's `max_auth_age`, in seconds.
    pub max_age: Option<u64>,
}

/// Why the gateway cannot answer now.
#[derive(Debug)]
pub enum Unavailable {
    /// The provider is not discovered yet: nobody can log in, no token can be verified.
    ProviderNotReady,
    /// The session store failed.
    Store(StoreError),
    /// A login's new session could not be stored.
    SessionNotSaved(StoreError),
    /// A pending login could not be sealed into its cookie (no usable secret).
    LoginNotSealed,
    /// The session's tokens could not be refreshed (yet).
    Refresh(Stall),
    /// The token of the route's resource was not obtained yet (the next refresh tries).
    TokenMissing,
    /// `/readyz`: what is not ready.
    NotReady { provider: bool, store: bool },
    /// A login's code exchange failed for a reason that may pass (the token endpoint
    /// unreachable, timing out, or answering 5xx or an unreadable body): a page for people
    /// with a link to try again.
    LoginProviderDown,
}

// === impl Reply ===

impl Reply {
    /// 302 to login for a browser navigation, else 401.
    pub fn unauthenticated(
        login_url: String,
        redirect: bool,
        bearer_error: Option<&'static str>,
    ) -> Reply {
        Reply::Unauthenticated(Box::new(Unauthenticated {
            login_url,
            redirect,
            bearer_error,
        }))
    }

    /// This answer, with a `Set-Cookie` deleting one of our cookies (when there is one).
    pub fn clearing(self, cookie: Option<HeaderValue>) -> Reply {
        match cookie {
            Some(cookie) => Reply::Clearing(Box::new((self, cookie))),
            None => self,
        }
    }

    /// The upstream's failure, when that is what this is (for the access log and metrics).
    pub fn upstream_error(&self) -> Option<&ProxyError> {
        match self {
            Reply::Upstream(e) => Some(e),
            _ => None,
        }
    }

    /// Every `Retry-After` the gateway sends, in seconds: 5 while the provider is not ready
    /// (discovery retries from 1 s up), the time left of a refresh backoff, 1 for anything
    /// else that may pass on a second try.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Reply::Unavailable(Unavailable::ProviderNotReady | Unavailable::NotReady { .. }) => {
                Some(5)
            }
            Reply::Unavailable(Unavailable::Refresh(Stall::Backoff { secs_left })) => {
                Some((*secs_left).max(1))
            }
            Reply::Unavailable(_) | Reply::Upstream(ProxyError::Busy(_)) => Some(1),
            Reply::Clearing(inner) => inner.0.retry_after_secs(),
            _ => None,
        }
    }

    /// The one place a refusal becomes HTTP.
    pub fn into_response(self) -> Response<Body> {
        let retry_after = self.retry_after_secs();
        let mut response = match self {
            Reply::Unauthenticated(u) if u.redirect => found(&u.login_url),
            Reply::Unauthenticated(u) => unauthorized(&u.login_url, u.bearer_error),
            Reply::StepUp(s) if s.redirect => found(&s.login_url),
            Reply::StepUp(s) => insufficient(&s),
            Reply::StepUpFailed => html_page(
                StatusCode::FORBIDDEN,
                "Stronger login required",
                "This page requires a stronger or more recent login than the identity provider \
                 confirmed.",
                None,
            ),
            Reply::Forbidden(refusal) => text(StatusCode::FORBIDDEN, refusal.message()),
            Reply::Deny => text(StatusCode::FORBIDDEN, "Forbidden"),
            Reply::BadRequest(reason) => text(StatusCode::BAD_REQUEST, reason),
            Reply::NotFound => text(StatusCode::NOT_FOUND, "Not found"),
            Reply::MethodNotAllowed => text(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"),
            Reply::LoginFailed(message) => html_page(
                StatusCode::BAD_REQUEST,
                "Login failed",
                message,
                Some(("/oauth2/start", "Try again")),
            ),
            Reply::InvalidLogoutRequest(description) => json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({"error": "invalid_request", "error_description": description}),
            ),
            Reply::Unavailable(Unavailable::LoginProviderDown) => html_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Login failed",
                "The identity provider did not answer. Try again in a moment.",
                Some(("/oauth2/start", "Try again")),
            ),
            Reply::Unavailable(Unavailable::NotReady { provider, store }) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!(
                    "not ready: provider discovered={provider}, session store answering={store}"
                ),
            ),
            Reply::Unavailable(_) | Reply::Upstream(ProxyError::Busy(_)) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service temporarily unavailable, try again shortly",
            ),
            Reply::Upstream(ProxyError::Timeout(_)) => text(
                StatusCode::GATEWAY_TIMEOUT,
                "Gateway timeout: upstream did not answer in time",
            ),
            Reply::Upstream(_) => {
                text(StatusCode::BAD_GATEWAY, "Bad gateway: upstream unreachable")
            }
            Reply::Clearing(inner) => {
                let (reply, cookie) = *inner;
                let mut response = reply.into_response();
                response.headers_mut().append(SET_COOKIE, cookie);
                return response;
            }
        };
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<StoreError> for Reply {
    fn from(e: StoreError) -> Self {
        Reply::Unavailable(Unavailable::Store(e))
    }
}

impl From<ProxyError> for Reply {
    fn from(e: ProxyError) -> Self {
        Reply::Upstream(e)
    }
}

impl From<Refusal> for Reply {
    fn from(refusal: Refusal) -> Self {
        Reply::Forbidden(refusal)
    }
}

impl From<Stall> for Reply {
    fn from(stall: Stall) -> Self {
        Reply::Unavailable(Unavailable::Refresh(stall))
    }
}

impl From<Unavailable> for Reply {
    fn from(why: Unavailable) -> Self {
        Reply::Unavailable(why)
    }
}

// === constructors ===

/// 302 to `location` (already proven safe by the caller).
pub fn found(location: &str) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::FOUND;
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(LOCATION, value);
    }
    no_store(&mut response);
    response
}

/// 401 with `WWW-Authenticate: Bearer` and a JSON body naming the login URL.
fn unauthorized(login_url: &str, bearer_error: Option<&str>) -> Response<Body> {
    let body = serde_json::json!({
        "error": "unauthenticated",
        "login_url": login_url,
    });
    let mut response = json(StatusCode::UNAUTHORIZED, &body);
    let challenge = match bearer_error {
        Some(description) => format!(
            "Bearer error=\"invalid_token\", error_description=\"{}\"",
            description.replace('"', "'")
        ),
        None => "Bearer".to_owned(),
    };
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response.headers_mut().insert(WWW_AUTHENTICATE, value);
    }
    response
}

/// RFC 9470 section 3: 401 with `WWW-Authenticate: Bearer
/// error="insufficient_user_authentication"` and the requirement (`acr_values`, `max_age`),
/// and a JSON body naming the login URL that asks for it.
fn insufficient(s: &StepUpChallenge) -> Response<Body> {
    let body = serde_json::json!({
        "error": "insufficient_user_authentication",
        "login_url": s.login_url,
    });
    let mut response = json(StatusCode::UNAUTHORIZED, &body);
    let mut challenge = String::from(
        "Bearer error=\"insufficient_user_authentication\", \
         error_description=\"A stronger or more recent authentication is required\"",
    );
    // Configured values: visible ASCII without quotes or backslashes (checked at load).
    if let Some(acr) = &s.acr_values {
        challenge.push_str(&format!(", acr_values=\"{acr}\""));
    }
    if let Some(max_age) = s.max_age {
        challenge.push_str(&format!(", max_age={max_age}"));
    }
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response.headers_mut().insert(WWW_AUTHENTICATE, value);
    }
    response
}

pub fn text(status: StatusCode, message: &str) -> Response<Body> {
    let mut response = Response::new(Body::full(format!("{message}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    no_store(&mut response);
    response
}

pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Body::full(value.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    no_store(&mut response);
    response
}

/// A small HTML page for people (login errors, signed out). `link` is (href, text).
pub fn html_page(
    status: StatusCode,
    title: &str,
    message: &str,
    link: Option<(&str, &str)>,
) -> Response<Body> {
    let link = link
        .map(|(href, label)| {
            format!(
                "<p><a href=\"{}\">{}</a></p>",
                escape_html(href),
                escape_html(label)
            )
        })
        .unwrap_or_default();
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><h1>{title}</h1><p>{message}</p>{link}</body></html>\n",
        title = escape_html(title),
        message = escape_html(message),
    );
    let mut response = Response::new(Body::full(page));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    no_store(&mut response);
    response
}

/// Gateway-made answers depend on the session: never cache them.
fn no_store(response: &mut Response<Body>) {
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape_html("<script>\"x\"&'y'"),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;"
        );
    }

    #[test]
    fn a_backoff_ending_now_still_says_one_second() {
        let r = Reply::from(Stall::Backoff { secs_left: 0 }).into_response();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()[RETRY_AFTER], "1");
        let r = Reply::from(Stall::Backoff { secs_left: 7 }).into_response();
        assert_eq!(r.headers()[RETRY_AFTER], "7");
    }

    /// Kept small: a `Result<Response, Reply>` travels up the pipeline on every request, and
    /// must be no bigger than the response itself.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn replies_stay_small() {
        assert!(size_of::<Reply>() <= 48, "{}", size_of::<Reply>());
        let (result, response) = (
            size_of::<Result<Response<Body>, Reply>>(),
            size_of::<Response<Body>>(),
        );
        assert!(result <= response, "{result} > {response}");
    }
}
