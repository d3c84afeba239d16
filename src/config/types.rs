//! The typed configuration: what the rest of the gateway reads.
//!
//! Everything here is already parsed and validated (see `validate.rs`): URLs are URLs, header
//! names are header names, cookie keys are decoded bytes of at least 32 bytes, regexes are
//! compiled. Nothing downstream re-validates.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, Method};
use ipnet::IpNet;
use regex::Regex;
use url::Url;

use crate::secret::Secret;

/// The whole gateway configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    pub oidc: OidcConfig,
    pub session: SessionConfig,
    pub headers: HeadersConfig,
    pub routes: Vec<RouteConfig>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// External origin users see, without a trailing slash (`https://app.example.com`).
    pub public_url: Url,
    pub tls: Option<TlsFiles>,
    pub trusted_proxies: Vec<IpNet>,
    pub shutdown_grace: Duration,
    pub log_format: LogFormat,
    pub metrics_listen: Option<SocketAddr>,
    /// Time a client has to send a complete request head (slowloris guard). Default 10s.
    pub header_read_timeout: Duration,
    /// Time a client has to finish the TLS handshake. Default 10s.
    pub tls_handshake_timeout: Duration,
    /// Largest request head accepted, in bytes. Default 64 KiB.
    pub max_header_bytes: usize,
    /// Most header fields accepted in one request. Default 100.
    pub max_headers: usize,
    /// More request headers removed from every request of an untrusted peer (contract
    /// Details 23), compared in any spelling like the built-in list.
    pub strip_request_headers: Vec<HeaderName>,
    /// A keep-alive connection with no request in flight for this long is closed (HTTP/2:
    /// GOAWAY). Default 60s.
    pub idle_timeout: Duration,
    /// Client connections open at once; beyond it the listener stops accepting until one
    /// closes. Default 10 000.
    pub max_connections: usize,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// `http://` or `https://` origin (a path prefix is allowed and prepended).
    pub url: Url,
    /// Time until the upstream's response head, and the longest pause between body chunks.
    pub timeout: Duration,
    /// Extra CA bundle (PEM) trusted for an `https://` upstream, besides the webpki roots.
    pub ca_file: Option<PathBuf>,
    /// Connections open to the upstream at once, idle ones included. Default 256.
    pub max_connections: usize,
    /// An idle upstream connection is closed after this long. Default 60s.
    pub idle_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct OidcConfig {
    pub issuer: Url,
    pub client_id: String,
    /// `None` = public client (PKCE only).
    pub client_secret: Option<Secret<String>>,
    pub scopes: Vec<String>,
    pub resource: Vec<String>,
    /// In file order; a `prompt` here replaces the default one.
    pub extra_auth_params: Vec<(String, String)>,
    pub timeout: Duration,
    /// Timeout of one refresh call to the token endpoint. Default: `timeout`.
    pub refresh_timeout: Duration,
    pub token_endpoint_auth: TokenEndpointAuth,
    pub post_logout_redirect_uri: Option<Url>,
    /// Audiences accepted on bearer-passthrough routes. No default: required when a route
    /// uses passthrough (contract Details 29).
    pub bearer_audiences: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenEndpointAuth {
    ClientSecretBasic,
    ClientSecretPost,
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub cookie_name: String,
    /// Decoded keys, each at least 32 bytes; the first signs, every one verifies.
    pub cookie_secrets: Vec<Secret<Vec<u8>>>,
    pub cookie_secure: bool,
    pub cookie_samesite: SameSite,
    /// `None` = host-only cookie.
    pub cookie_domain: Option<String>,
    pub idle_timeout: Duration,
    pub absolute_timeout: Duration,
    pub max_sessions: u64,
    pub refresh_before_expiry: Duration,
    /// When a token response has neither `expires_in` nor a JWT `exp`, refresh after this
    /// long. `None` (default): such a token is used until `absolute_timeout`.
    pub max_token_age: Option<Duration>,
    pub store: StoreConfig,
    /// Lifetime of a pending login (from `/oauth2/start` to the callback), so of its login
    /// cookie and of the memory of its used state. Default 10m.
    pub login_timeout: Duration,
    /// Memory store: used login states remembered per replica (pending logins themselves live
    /// in the browser, see `crate::login`). Default 10 000.
    pub max_pending_logins: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Lax,
    Strict,
    None,
}

#[derive(Debug, Clone)]
pub enum StoreConfig {
    Memory,
    Redis {
        url: Secret<String>,
        key_prefix: String,
        /// Bound on every Redis call (`session.redis_timeout`, default 1s): past it the store
        /// counts as down (503 with `Retry-After`, never a logout).
        timeout: Duration,
    },
}

#[derive(Debug, Clone)]
pub struct HeadersConfig {
    pub authorization_bearer: bool,
    /// Each `None` when configured as an empty string (header disabled).
    pub user: Option<HeaderName>,
    pub email: Option<HeaderName>,
    pub preferred_username: Option<HeaderName>,
    pub groups: Option<HeaderName>,
    /// Claim holding the groups (a list, or a comma/space separated string). Default `groups`.
    pub groups_claim: String,
    /// `[headers.claims]`: header name -> claim name, in file order.
    pub claims: Vec<(HeaderName, String)>,
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub matcher: PathMatch,
    /// Empty = every method.
    pub methods: Vec<Method>,
    pub policy: Policy,
    pub api: bool,
    pub require_groups: Vec<String>,
    /// Claim name -> accepted values (any one of them).
    pub require_claims: Vec<(String, Vec<String>)>,
    pub bearer: BearerMode,
    /// Which configured `oidc.resource` token goes upstream on this route (default: the first).
    pub bearer_resource: Option<String>,
    /// What a CORS preflight without credentials gets on an `authenticated` route.
    pub preflight: Preflight,
}

#[derive(Debug, Clone)]
pub enum PathMatch {
    Prefix(String),
    Exact(String),
    /// Compiled as `^(?:<pattern>)$`: always matches the whole path.
    Regex(Regex),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Public,
    Authenticated,
    Deny,
}

/// CORS preflights (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) on an
/// `authenticated` route (contract Details 26).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preflight {
    /// Like any request: without a session, 401 (default).
    Authenticate,
    /// Forwarded upstream without identity, for the app to answer CORS itself.
    Forward,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerMode {
    /// Only sessions authenticate (default).
    Off,
    /// A request with `Authorization: Bearer <JWT>` and no session is accepted when the JWT
    /// verifies against the provider's keys.
    Passthrough,
}
