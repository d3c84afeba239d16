//! The development OpenID Connect provider: one hyper server on one listener serving
//! discovery, JWKS, authorize (a plain login form, or auto-login), token (code and refresh
//! grants with PKCE S256, Logto-style refresh token rotation), revocation, userinfo and
//! end-session. `authgate demo` uses it for a human login; the gateway's integration tests
//! use its [`Controls`] to set token lifetimes, inject faults and count calls (mockoidc's
//! knobs, STYLE item 13). Never meant for production: any user name logs in.

mod authorize;
mod controls;
mod discovery;
mod grants;
mod issue;
mod keys;
mod token;
mod web;

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::log_safe;
pub use controls::{
    AccessTokenFormat, ClientAuth, Controls, IdTokenSigner, IdTokenTamper, ResponseIss, TokenFault,
};
use keys::KeyRing;
use web::Body;

/// How long open connections may finish their requests after shutdown.
const DRAIN: Duration = Duration::from_secs(2);

/// A running development provider. Dropping the last handle (or calling
/// [`DevIdp::shutdown`]) stops the server and ends hanging requests.
#[derive(Debug)]
pub struct DevIdp {
    shared: Arc<Shared>,
}

/// How a [`DevIdp`] starts; [`Controls`] change the modes afterwards.
#[derive(Clone, Debug)]
pub struct DevIdpOptions {
    /// The one client the provider knows.
    pub client_id: String,
    /// `None`: a public client (PKCE only, no client authentication).
    pub client_secret: Option<String>,
    /// Initial access token lifetime (demo: 30 s).
    pub access_ttl: Duration,
    /// Initial refresh token rotation mode (demo: true, as Logto).
    pub rotate_refresh_tokens: bool,
    /// Shown on top of every HTML page.
    pub banner: Option<String>,
}

/// State every request handler shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) issuer: String,
    pub(crate) options: DevIdpOptions,
    pub(crate) controls: Controls,
    shutdown: watch::Sender<bool>,
}

// === impl DevIdpOptions ===

impl DevIdpOptions {
    /// The options `authgate demo` uses: 30 s access tokens, rotation on, the banner.
    pub fn demo(client_id: impl Into<String>, client_secret: Option<String>) -> Self {
        Self {
            client_id: client_id.into(),
            client_secret,
            access_ttl: Duration::from_secs(30),
            rotate_refresh_tokens: true,
            banner: Some("Development provider - authgate demo only".to_owned()),
        }
    }
}

// === impl DevIdp ===

impl DevIdp {
    /// Serve on `listener` until the returned handle is dropped or `shutdown()` is called.
    pub async fn start(listener: TcpListener, options: DevIdpOptions) -> io::Result<Arc<DevIdp>> {
        let keys = KeyRing::load()?;
        let issuer = issuer_for(listener.local_addr()?);
        let controls = Controls::new(options.access_ttl, options.rotate_refresh_tokens, keys);
        let (shutdown, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            issuer,
            options,
            controls,
            shutdown,
        });
        tracing::info!(issuer = %shared.issuer, "development OpenID provider listening");
        tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(Arc::new(DevIdp { shared }))
    }

    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub fn issuer(&self) -> String {
        self.shared.issuer.clone()
    }

    /// Knobs and counters.
    pub fn controls(&self) -> &Controls {
        &self.shared.controls
    }

    /// Stops accepting, closes open connections and ends hanging requests.
    pub fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
    }

    /// Signs arbitrary claims with the provider's current key (kid `dev-1`, or `dev-2` after
    /// rotation). RSA signing of a well-formed message does not fail; if it ever did, the
    /// result is an empty string, which no verifier accepts.
    pub fn sign_jwt(&self, claims: &serde_json::Value) -> String {
        self.shared.controls.keys.sign(claims).unwrap_or_else(|e| {
            tracing::error!(error = %e, "signing failed");
            String::new()
        })
    }

    /// Like [`Self::sign_jwt`], with the members of `header` added to the JWS header (`typ`,
    /// `crit`, ...; `alg` and `kid` too, replacing the usual ones).
    pub fn sign_jwt_with_header(
        &self,
        header: &serde_json::Value,
        claims: &serde_json::Value,
    ) -> String {
        self.shared
            .controls
            .keys
            .sign_with_header(claims, header)
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "signing failed");
                String::new()
            })
    }

    /// Signs with a key the provider never publishes, claiming kid `kid`.
    pub fn sign_jwt_with_foreign_key(&self, claims: &serde_json::Value, kid: &str) -> String {
        self.shared
            .controls
            .keys
            .sign_foreign(claims, kid)
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "signing failed");
                String::new()
            })
    }
}

impl Drop for DevIdp {
    fn drop(&mut self) {
        self.shutdown();
    }
}

// === impl Shared ===

impl Shared {
    /// Resolves once shutdown was asked for.
    pub(crate) async fn shutdown_requested(&self) {
        let mut rx = self.shutdown.subscribe();
        // An error means the sender is gone, which is a shutdown too.
        let _ignored = rx.wait_for(|stop| *stop).await;
    }

    pub(crate) fn banner(&self) -> Option<&str> {
        self.options.banner.as_deref()
    }
}

fn issuer_for(addr: SocketAddr) -> String {
    let ip = if addr.ip().is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        addr.ip()
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        tokio::select! {
            () = shared.shutdown_requested() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(serve_connection(stream, Arc::clone(&shared)));
                }
                Err(e) => {
                    tracing::warn!(error = %log_safe(&e), "development provider: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Serves one connection. On shutdown, in-flight requests (hanging ones answer 503 then)
/// get [`DRAIN`] to finish before the connection is dropped.
async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let service = {
        let shared = Arc::clone(&shared);
        service_fn(move |req| route(Arc::clone(&shared), req))
    };
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut connection = pin!(builder.serve_connection(TokioIo::new(stream), service));
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shared.shutdown_requested() => {
            connection.as_mut().graceful_shutdown();
            tokio::time::timeout(DRAIN, connection).await.unwrap_or(Ok(()))
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %log_safe(&e), "development provider: connection error");
    }
}

/// Dispatches on method and path. Unknown paths get 404. A response marked
/// [`web::CloseConnection`] becomes an error: hyper then closes the connection unanswered.
async fn route(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Closed> {
    let response = dispatch(shared, req).await;
    if response
        .extensions()
        .get::<web::CloseConnection>()
        .is_some()
    {
        return Err(Closed);
    }
    Ok(response)
}

/// The error that makes hyper drop a connection ([`TokenFault::Close`]).
#[derive(Debug)]
struct Closed;

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection closed by an injected fault")
    }
}

impl std::error::Error for Closed {}

async fn dispatch(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/.well-known/openid-configuration") => discovery::configuration(&shared),
        (&Method::GET, "/jwks") => discovery::jwks(&shared),
        (&Method::GET, "/authorize") => authorize::authorize(&shared, &req),
        (&Method::POST, "/login") => authorize::login(&shared, req.into_body()).await,
        (&Method::GET, "/end_session") => authorize::end_session(&shared, &req),
        (&Method::POST, "/token") => token::token(&shared, req).await,
        (&Method::POST, "/revoke") => token::revoke(&shared, req).await,
        (&Method::GET | &Method::POST, "/userinfo") => token::userinfo(&shared, &req),
        _ => web::text(StatusCode::NOT_FOUND, "not found"),
    }
}
