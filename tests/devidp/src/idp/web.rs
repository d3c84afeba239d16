//! Small HTTP helpers for the provider's handlers: response builders (JSON, HTML, redirect,
//! OAuth error) and parsing of queries and form bodies into multi-maps.

use std::collections::HashMap;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

/// Response body of every handler.
pub(crate) type Body = Full<Bytes>;

/// Parameters of a query or form body; a name may repeat (`resource`).
pub(crate) type Params = HashMap<String, Vec<String>>;

/// Marks a response that is never sent: the connection is closed instead
/// ([`super::controls::TokenFault::Close`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct CloseConnection;

/// Largest form body the provider reads.
const MAX_FORM: usize = 64 * 1024;

/// Parses `application/x-www-form-urlencoded` text (a query or a form body).
pub(crate) fn parse_params(text: &str) -> Params {
    let mut params = Params::new();
    for (name, value) in url::form_urlencoded::parse(text.as_bytes()) {
        params
            .entry(name.into_owned())
            .or_default()
            .push(value.into_owned());
    }
    params
}

/// The first value of `name`, when present and non-empty.
pub(crate) fn first<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    params
        .get(name)
        .and_then(|v| v.first())
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// Reads a form body of at most [`MAX_FORM`] bytes.
pub(crate) async fn read_form(body: Incoming) -> Option<Params> {
    let bytes = Limited::new(body, MAX_FORM)
        .collect()
        .await
        .ok()?
        .to_bytes();
    let text = std::str::from_utf8(&bytes).ok()?;
    Some(parse_params(text))
}

pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    respond(status, "application/json", value.to_string())
}

pub(crate) fn html(status: StatusCode, page: String) -> Response<Body> {
    respond(status, "text/html; charset=utf-8", page)
}

pub(crate) fn text(status: StatusCode, body: &str) -> Response<Body> {
    respond(status, "text/plain; charset=utf-8", body.to_owned())
}

/// 302 to `location`.
pub(crate) fn redirect(location: &str) -> Response<Body> {
    let mut response = respond(
        StatusCode::FOUND,
        "text/plain; charset=utf-8",
        String::new(),
    );
    if let Ok(value) = location.parse() {
        response.headers_mut().insert(LOCATION, value);
    }
    response
}

/// An RFC 6749 §5.2 error, kept small so `Result`s carrying it stay cheap to move.
#[derive(Debug)]
pub(crate) struct OAuthError {
    pub(crate) status: StatusCode,
    pub(crate) error: &'static str,
    pub(crate) description: String,
}

impl OAuthError {
    pub(crate) fn new(
        status: StatusCode,
        error: &'static str,
        description: impl Into<String>,
    ) -> Self {
        Self {
            status,
            error,
            description: description.into(),
        }
    }

    pub(crate) fn into_response(self) -> Response<Body> {
        oauth_error(self.status, self.error, &self.description)
    }
}

/// RFC 6749 §5.2 error response; `invalid_client` also gets `WWW-Authenticate`.
pub(crate) fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": error, "error_description": description });
    let mut response = json(status, &body);
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, http::HeaderValue::from_static("Basic"));
    }
    response
}

/// A response with `Cache-Control: no-store` (RFC 6749 §5.1 asks it of token responses).
pub(crate) fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Ok(value) = content_type.parse() {
        headers.insert(CONTENT_TYPE, value);
    }
    headers.insert(CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    response
}

/// Appends query parameters to a URL that may already have a query.
pub(crate) fn with_query(base: &str, pairs: &[(&str, &str)]) -> String {
    let mut serializer = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        serializer.append_pair(name, value);
    }
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}{}", serializer.finish())
}
