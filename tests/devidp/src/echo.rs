//! A tiny echo upstream for `authgate demo`: every request is answered with what arrived
//! (method, path, query, headers), as HTML for a browser or JSON for tests. HTML shows only
//! the first 12 characters of `Authorization` so a demo screenshot never leaks a whole token;
//! JSON shows everything, because tests need to see the token.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, Request, Response};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Map, Value, json};
use tokio::net::{TcpListener, TcpStream};

use crate::html;
use crate::log_safe;

/// Serves the echo page on `listener` forever (until the task is dropped).
pub async fn serve_echo(listener: TcpListener) {
    serve_echo_counting(listener, Arc::default()).await
}

/// Like [`serve_echo`], counting every request received in `hits` (tests assert that a
/// refused request never reached the upstream).
pub async fn serve_echo_counting(listener: TcpListener, hits: Arc<AtomicUsize>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_connection(stream, hits.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %log_safe(&e), "echo upstream: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_connection(stream: TcpStream, hits: Arc<AtomicUsize>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let service = service_fn(|req| {
        hits.fetch_add(1, Ordering::SeqCst);
        async move { Ok::<_, Infallible>(echo(&req)) }
    });
    if let Err(e) = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(error = %log_safe(&e), "echo upstream: connection error");
    }
}

fn echo<B>(req: &Request<B>) -> Response<Full<Bytes>> {
    let wants_json = req
        .headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    let (content_type, body) = if wants_json {
        ("application/json", echo_json(req).to_string())
    } else {
        ("text/html; charset=utf-8", echo_html(req))
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    response
}

/// `{"method", "path", "query", "headers": {name: [values]}}` with full header values.
fn echo_json<B>(req: &Request<B>) -> Value {
    let mut headers = Map::new();
    for name in req.headers().keys() {
        let values: Vec<Value> = req
            .headers()
            .get_all(name)
            .iter()
            .map(|v| json!(String::from_utf8_lossy(v.as_bytes())))
            .collect();
        headers.insert(name.as_str().to_owned(), Value::Array(values));
    }
    json!({
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "query": req.uri().query().unwrap_or_default(),
        "headers": headers,
    })
}

fn echo_html<B>(req: &Request<B>) -> String {
    let rows: String = header_lines(req.headers())
        .iter()
        .map(|(name, value)| {
            format!(
                "<tr><td><code>{}</code></td><td><code>{}</code></td></tr>\n",
                html::escape(name),
                html::escape(value)
            )
        })
        .collect();
    let body = format!(
        "<p><a href=\"/oauth2/sign_out\">Sign out</a></p>\n\
         <p><code>{method} {path}</code></p>\n<p>Query: <code>{query}</code></p>\n\
         <table border=\"1\" cellpadding=\"4\">\n<tr><th>Header</th><th>Value</th></tr>\n{rows}</table>",
        method = html::escape(req.method().as_str()),
        path = html::escape(req.uri().path()),
        query = html::escape(req.uri().query().unwrap_or_default()),
    );
    html::page(None, "Echo upstream", &body)
}

/// Header lines for display, `Authorization` cut to its first 12 characters.
fn header_lines(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
            let text = if name == AUTHORIZATION {
                truncate(&text)
            } else {
                text
            };
            (name.as_str().to_owned(), text)
        })
        .collect()
}

fn truncate(value: &str) -> String {
    let head: String = value.chars().take(12).collect();
    format!("{head}...")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_never_shows_whole_token() {
        let req = Request::builder()
            .uri("/x?a=1")
            .header(AUTHORIZATION, "Bearer abcdefghijklmnopqrstuvwxyz")
            .body(())
            .unwrap_or_default();
        let page = echo_html(&req);
        assert!(page.contains("Bearer abcde..."));
        assert!(!page.contains("fghijklmnop"));
        assert!(page.contains("/oauth2/sign_out"));
    }

    #[test]
    fn json_shows_full_values() {
        let req = Request::builder()
            .uri("/x?a=1")
            .header(AUTHORIZATION, "Bearer abcdefghijklmnopqrstuvwxyz")
            .body(())
            .unwrap_or_default();
        let value = echo_json(&req);
        assert_eq!(
            value["headers"]["authorization"][0],
            "Bearer abcdefghijklmnopqrstuvwxyz"
        );
        assert_eq!(value["query"], "a=1");
        assert_eq!(value["path"], "/x");
    }
}
