//! Every response the gateway writes itself, and the one place that turns a decision
//! (`Halt`) into one.
//!
//! Bodies are short and never carry internal details: the log line (with a request id)
//! has those.

use http::header::{
    CACHE_CONTROL, CONTENT_TYPE, LOCATION, RETRY_AFTER, SET_COOKIE, WWW_AUTHENTICATE,
};
use http::{HeaderValue, Response, StatusCode};

use crate::proxy::Body;

/// A final answer decided by the pipeline instead of forwarding. Not an error: logged at debug.
#[derive(Debug)]
pub enum Halt {
    /// No usable session. Browsers are sent to `login_url`; everything else gets 401 JSON.
    Unauthenticated {
        login_url: String,
        redirect: bool,
        clear_cookie: Option<HeaderValue>,
        /// `WWW-Authenticate` error description (bearer passthrough rejections).
        bearer_error: Option<&'static str>,
    },
    /// Logged in but not allowed (groups, claims).
    Forbidden(&'static str),
    /// A `deny` route.
    Deny,
    /// Provider or store unavailable and no usable token: try again later.
    Unavailable { retry_after_secs: u64 },
    /// A request we refuse to interpret (encoded slash in the path, ...).
    BadRequest(&'static str),
}

impl Halt {
    pub fn into_response(self) -> Response<Body> {
        match self {
            Halt::Unauthenticated {
                login_url,
                redirect,
                clear_cookie,
                bearer_error,
            } => {
                let mut response = if redirect {
                    found(&login_url)
                } else {
                    unauthorized(&login_url, bearer_error)
                };
                if let Some(cookie) = clear_cookie {
                    response.headers_mut().append(SET_COOKIE, cookie);
                }
                response
            }
            Halt::Forbidden(reason) => text(StatusCode::FORBIDDEN, reason),
            Halt::Deny => text(StatusCode::FORBIDDEN, "Forbidden"),
            Halt::Unavailable { retry_after_secs } => unavailable(retry_after_secs),
            Halt::BadRequest(reason) => text(StatusCode::BAD_REQUEST, reason),
        }
    }
}

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
pub fn unauthorized(login_url: &str, bearer_error: Option<&str>) -> Response<Body> {
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

pub fn unavailable(retry_after_secs: u64) -> Response<Body> {
    let mut response = text(
        StatusCode::SERVICE_UNAVAILABLE,
        "Service temporarily unavailable, try again shortly",
    );
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs.max(1)));
    response
}

pub fn bad_gateway() -> Response<Body> {
    text(StatusCode::BAD_GATEWAY, "Bad gateway: upstream unreachable")
}

pub fn gateway_timeout() -> Response<Body> {
    text(
        StatusCode::GATEWAY_TIMEOUT,
        "Gateway timeout: upstream did not answer in time",
    )
}

pub fn not_found() -> Response<Body> {
    text(StatusCode::NOT_FOUND, "Not found")
}

pub fn method_not_allowed() -> Response<Body> {
    text(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
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
    fn unavailable_has_retry_after() {
        let r = unavailable(0);
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()[RETRY_AFTER], "1");
    }
}
