//! `authgate sessions list --sub X` and `authgate sessions revoke --sub X | --sid Y`: calls
//! to the running gateway's admin API, with the address (`server.admin_listen`, a wildcard
//! reached on loopback) and the token (`server.admin_token_file`) of the same configuration.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::ServerConfig;

/// The whole call (connect, request, answer) must finish within this.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read.
const MAX_ANSWER: usize = 4 * 1024 * 1024;

/// What to ask the admin API.
#[derive(Debug, Clone)]
pub enum Call {
    List { sub: String },
    RevokeSub(String),
    RevokeSid(String),
}

/// Why a call failed, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("the admin API is off: set server.admin_listen and server.admin_token_file")]
    Off,
    #[error(
        "the admin API at {0} refused the token (401): server.admin_token_file does not hold the running gateway's admin token"
    )]
    Unauthorized(SocketAddr),
    #[error("cannot reach the admin API at {addr}: {source}")]
    Unreachable {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("no answer from the admin API at {0} within {TIMEOUT:?}")]
    Timeout(SocketAddr),
    #[error("HTTP exchange with {addr}: {source}")]
    Http {
        addr: SocketAddr,
        source: hyper::Error,
    },
    #[error("the admin API answered {status}: {body}")]
    Refused { status: StatusCode, body: String },
}

/// Make the call; the answer's JSON body.
pub async fn call(server: &ServerConfig, what: &Call) -> Result<String, CallError> {
    let (Some(listen), Some(token)) = (server.admin_listen, server.admin_token.as_ref()) else {
        return Err(CallError::Off);
    };
    let addr = crate::healthcheck::targets(listen)
        .into_iter()
        .next()
        .unwrap_or(listen);
    let request = request(what, token.expose());
    match tokio::time::timeout(TIMEOUT, exchange(addr, request)).await {
        Ok(result) => result,
        Err(_) => Err(CallError::Timeout(addr)),
    }
}

fn request(what: &Call, token: &str) -> Request<Full<Bytes>> {
    let (method, uri, body) = match what {
        Call::List { sub } => {
            let q: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("sub", sub)
                .finish();
            (Method::GET, format!("/admin/sessions?{q}"), None)
        }
        Call::RevokeSub(sub) => (
            Method::POST,
            "/admin/sessions/revoke".to_owned(),
            Some(serde_json::json!({ "sub": sub })),
        ),
        Call::RevokeSid(sid) => (
            Method::POST,
            "/admin/sessions/revoke".to_owned(),
            Some(serde_json::json!({ "sid": sid })),
        ),
    };
    let mut builder = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, "authgate-admin")
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    let body = match body {
        Some(json) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            Full::new(Bytes::from(json.to_string()))
        }
        None => Full::new(Bytes::new()),
    };
    builder
        .body(body)
        .unwrap_or_else(|_| Request::new(Full::new(Bytes::new())))
}

async fn exchange(addr: SocketAddr, req: Request<Full<Bytes>>) -> Result<String, CallError> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|source| CallError::Unreachable { addr, source })?;
    let http = |source| CallError::Http { addr, source };
    let (mut sender, conn) = http1::handshake(TokioIo::new(tcp)).await.map_err(http)?;
    tokio::spawn(conn);
    let response = sender.send_request(req).await.map_err(http)?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    match status {
        StatusCode::OK => Ok(body),
        StatusCode::UNAUTHORIZED => Err(CallError::Unauthorized(addr)),
        status => Err(CallError::Refused { status, body }),
    }
}
