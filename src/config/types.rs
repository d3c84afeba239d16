//! The typed configuration: what the rest of the gateway reads.
//!
//! Everything here is already parsed and validated (see `validate.rs`): URLs are URLs, header
//! names are header names, cookie keys are decoded bytes of at least 32 bytes, regexes are
//! compiled. Nothing downstream re-validates.
//!
//! `Serialize` prints it back under the file's keys for `authgate check` (see `ser.rs`);
//! secrets print `[redacted]`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, Method};
use ipnet::IpNet;
use regex::Regex;
use serde::Serialize;
use serde::ser::{SerializeStruct, Serializer};
use url::Url;

use super::ser;
pub use crate::host::HostPattern;
use crate::secret::Secret;

/// The whole gateway configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    /// `[upstreams.NAME]`, by name (sorted).
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "ser::table")]
    pub upstreams: Vec<(String, UpstreamConfig)>,
    pub oidc: OidcConfig,
    /// `[providers.NAME]`, by name (sorted): more providers besides `[oidc]`, the default.
    /// [`ProviderId`] `n` (n > 0) is the n-th of them.
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "ser::table")]
    pub providers: Vec<(String, OidcConfig)>,
    pub session: SessionConfig,
    pub headers: HeadersConfig,
    #[serde(rename = "route", skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
    /// The files this configuration read besides its own file (`*_file` secrets, TLS and CA
    /// files): what `server.watch_config` watches.
    #[serde(skip)]
    pub files_read: Vec<PathBuf>,
}

/// Which provider: 0 is `[oidc]` (the default), `n` the n-th `[providers.NAME]` in name
/// order. Small and `Copy`, so a session carries it for free and a request compares it with
/// its route's in one instruction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ProviderId(pub u8);

impl ProviderId {
    /// `[oidc]`.
    pub const DEFAULT: ProviderId = ProviderId(0);

    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    pub fn is_default(self) -> bool {
        self.0 == 0
    }
}

/// `[providers.NAME]` tables at most (a [`ProviderId`] is one byte).
pub const MAX_PROVIDERS: usize = 32;

impl Config {
    /// Every provider's configuration by [`ProviderId`]: `[oidc]` first, then the named ones.
    pub fn provider_configs(
        &self,
    ) -> impl Iterator<Item = (ProviderId, Option<&str>, &OidcConfig)> {
        std::iter::once((None, &self.oidc))
            .chain(self.providers.iter().map(|(n, c)| (Some(n.as_str()), c)))
            .enumerate()
            .map(|(i, (name, cfg))| (ProviderId(u8::try_from(i).unwrap_or(u8::MAX)), name, cfg))
    }

    /// Each provider's `resource` by [`ProviderId`] (what routes' `bearer_resource` name).
    pub fn provider_resources(&self) -> Vec<&[String]> {
        self.provider_configs()
            .map(|(_, _, c)| c.resource.as_slice())
            .collect()
    }

    /// The names of `[providers.NAME]` in [`ProviderId`] order (the first is id 1).
    pub fn provider_names(&self) -> Vec<String> {
        self.providers.iter().map(|(n, _)| n.clone()).collect()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerConfig {
    #[serde(serialize_with = "ser::display")]
    pub listen: SocketAddr,
    /// External origin users see, without a trailing slash (`https://app.example.com`).
    #[serde(serialize_with = "ser::display")]
    pub public_url: Url,
    #[serde(flatten)]
    pub tls: Option<TlsFiles>,
    #[serde(serialize_with = "ser::display_list")]
    pub trusted_proxies: Vec<IpNet>,
    #[serde(serialize_with = "ser::duration")]
    pub shutdown_grace: Duration,
    pub log_format: LogFormat,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser::opt_display"
    )]
    pub metrics_listen: Option<SocketAddr>,
    /// The admin API's address (never `listen`); set together with `admin_token_file`.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser::opt_display"
    )]
    pub admin_listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token_file: Option<String>,
    /// The admin token read from `admin_token_file` (trimmed).
    #[serde(skip)]
    pub admin_token: Option<Secret<String>>,
    /// Time a client has to send a complete request head (slowloris guard). Default 10s.
    #[serde(serialize_with = "ser::duration")]
    pub header_read_timeout: Duration,
    /// Time a client has to finish the TLS handshake. Default 10s.
    #[serde(serialize_with = "ser::duration")]
    pub tls_handshake_timeout: Duration,
    /// Largest request head accepted, in bytes. Default 64 KiB.
    #[serde(serialize_with = "ser::count")]
    pub max_header_bytes: usize,
    /// Most header fields accepted in one request. Default 100.
    #[serde(serialize_with = "ser::count")]
    pub max_headers: usize,
    /// More request headers removed from every request of an untrusted peer,
    /// compared in any spelling like the built-in list.
    #[serde(serialize_with = "ser::display_list")]
    pub strip_request_headers: Vec<HeaderName>,
    /// A keep-alive connection with no request in flight for this long is closed (HTTP/2:
    /// GOAWAY). Default 60s.
    #[serde(serialize_with = "ser::duration")]
    pub idle_timeout: Duration,
    /// Client connections open at once; beyond it the listener stops accepting until one
    /// closes. Default 10 000.
    #[serde(serialize_with = "ser::count")]
    pub max_connections: usize,
    /// `X-Forwarded-Proto` sent upstream for a peer not in `trusted_proxies` (and for a
    /// trusted one that sent none).
    pub forwarded_proto: ForwardedProto,
    /// Hosts an absolute `rd` may name besides `public_url`'s (lowercase): `app.example.com`,
    /// or `.example.com` for every subdomain of `example.com`.
    pub allowed_redirect_hosts: Vec<String>,
    /// Reload when the configuration file or a file it names changes (polled).
    pub watch_config: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct TlsFiles {
    #[serde(rename = "tls_cert_file", serialize_with = "ser::path")]
    pub cert: PathBuf,
    #[serde(rename = "tls_key_file", serialize_with = "ser::path")]
    pub key: PathBuf,
}

/// `server.forwarded_proto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ForwardedProto {
    /// The listener's own scheme: `https` with `tls_cert_file`, else `http`.
    Auto,
    /// Always `https`: a TLS-terminating proxy that is not trusted sits in front.
    Https,
    Http,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize)]
pub struct UpstreamConfig {
    /// `http://` or `https://` origin (a path prefix is allowed and prepended).
    #[serde(serialize_with = "ser::display")]
    pub url: Url,
    /// Time until the upstream's response head, and the longest pause between body chunks.
    #[serde(serialize_with = "ser::duration")]
    pub timeout: Duration,
    /// Extra CA bundle (PEM) trusted for an `https://` upstream, besides the webpki roots.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser::opt_path"
    )]
    pub ca_file: Option<PathBuf>,
    /// Connections open to the upstream at once, idle ones included. Default 256.
    #[serde(serialize_with = "ser::count")]
    pub max_connections: usize,
    /// An idle upstream connection is closed after this long. Default 60s.
    #[serde(serialize_with = "ser::duration")]
    pub idle_timeout: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct OidcConfig {
    #[serde(serialize_with = "ser::display")]
    pub issuer: Url,
    pub client_id: String,
    /// `None` = public client (PKCE only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<Secret<String>>,
    pub scopes: Vec<String>,
    pub resource: Vec<String>,
    /// In file order; a `prompt` here replaces the default one.
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "ser::table")]
    pub extra_auth_params: Vec<(String, String)>,
    #[serde(serialize_with = "ser::duration")]
    pub timeout: Duration,
    /// Timeout of one refresh call to the token endpoint. Default: `timeout`.
    #[serde(serialize_with = "ser::duration")]
    pub refresh_timeout: Duration,
    pub token_endpoint_auth: TokenEndpointAuth,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser::opt_display"
    )]
    pub post_logout_redirect_uri: Option<Url>,
    /// Audiences accepted on bearer-passthrough routes. No default: required when a route
    /// uses passthrough (the client id is never assumed).
    pub bearer_audiences: Vec<String>,
    /// An ID token whose `iat` is older than this (plus leeway) is refused. Default 10m.
    #[serde(serialize_with = "ser::duration")]
    pub id_token_max_age: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenEndpointAuth {
    ClientSecretBasic,
    ClientSecretPost,
}

#[derive(Debug, Clone, Serialize)]
pub struct SessionConfig {
    pub cookie_name: String,
    /// Decoded keys, each at least 32 bytes; the first signs, every one verifies.
    pub cookie_secrets: Vec<Secret<Vec<u8>>>,
    pub cookie_secure: bool,
    pub cookie_samesite: SameSite,
    /// `None` = host-only cookie.
    #[serde(serialize_with = "ser::string_or_empty")]
    pub cookie_domain: Option<String>,
    #[serde(serialize_with = "ser::duration")]
    pub idle_timeout: Duration,
    #[serde(serialize_with = "ser::duration")]
    pub absolute_timeout: Duration,
    #[serde(serialize_with = "ser::count")]
    pub max_sessions: u64,
    #[serde(serialize_with = "ser::duration")]
    pub refresh_before_expiry: Duration,
    /// When a token response has neither `expires_in` nor a JWT `exp`, refresh after this
    /// long. `None` (default): such a token is used until `absolute_timeout`.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser::opt_duration"
    )]
    pub max_token_age: Option<Duration>,
    /// Prints as `store = "memory"`, or `store = "redis"` and the `redis_*` keys.
    #[serde(flatten)]
    pub store: StoreConfig,
    /// Memory store: where the live sessions are written at shutdown and read back at start.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser::opt_path"
    )]
    pub snapshot_file: Option<PathBuf>,
    /// Lifetime of a pending login (from `/oauth2/start` to the callback), so of its login
    /// cookie and of the memory of its used state. Default 10m.
    #[serde(serialize_with = "ser::duration")]
    pub login_timeout: Duration,
    /// Memory store: used login states remembered per replica (pending logins themselves live
    /// in the browser, see `crate::login`). Default 10 000.
    #[serde(serialize_with = "ser::count")]
    pub max_pending_logins: u64,
    /// A browser form POST without a session is kept and sent after the login
    /// (`crate::login::preserve`). Default true.
    pub preserve_form_posts: bool,
    /// Largest body (bytes) of a form POST that is kept. Default 65 536.
    #[serde(serialize_with = "ser::count")]
    pub max_preserved_body: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SameSite {
    Lax,
    Strict,
    None,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "store", rename_all = "snake_case")]
pub enum StoreConfig {
    Memory,
    Redis {
        /// One Redis, Sentinel or Cluster (each prints its own `redis_*` keys).
        #[serde(flatten)]
        topology: RedisTopology,
        #[serde(rename = "redis_key_prefix")]
        key_prefix: String,
        /// Bound on every Redis call (`session.redis_timeout`, default 1s): past it the store
        /// counts as down (503 with `Retry-After`, never a logout).
        #[serde(rename = "redis_timeout", serialize_with = "ser::duration")]
        timeout: Duration,
    },
}

/// Where the Redis store lives. Every URL may carry a password: each is a [`Secret`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum RedisTopology {
    /// `redis_url`: one Redis (or a fixed primary address).
    Single {
        #[serde(rename = "redis_url")]
        url: Secret<String>,
    },
    /// `redis_sentinels` + `redis_sentinel_master`: the master those Sentinels name, followed
    /// through failovers.
    Sentinel {
        #[serde(rename = "redis_sentinels")]
        sentinels: Vec<Secret<String>>,
        #[serde(rename = "redis_sentinel_master")]
        master: String,
    },
    /// `redis_cluster_nodes`: seeds of a Redis/Valkey Cluster.
    Cluster {
        #[serde(rename = "redis_cluster_nodes")]
        nodes: Vec<Secret<String>>,
    },
}

impl RedisTopology {
    /// `single`, `sentinel` or `cluster` (the metrics' label).
    pub fn name(&self) -> &'static str {
        match self {
            RedisTopology::Single { .. } => "single",
            RedisTopology::Sentinel { .. } => "sentinel",
            RedisTopology::Cluster { .. } => "cluster",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct HeadersConfig {
    pub authorization_bearer: bool,
    /// Each `None` when configured as an empty string (header disabled).
    #[serde(serialize_with = "ser::header_or_empty")]
    pub user: Option<HeaderName>,
    #[serde(serialize_with = "ser::header_or_empty")]
    pub email: Option<HeaderName>,
    #[serde(serialize_with = "ser::header_or_empty")]
    pub preferred_username: Option<HeaderName>,
    #[serde(serialize_with = "ser::header_or_empty")]
    pub groups: Option<HeaderName>,
    /// Claim holding the groups (a list, or a comma/space separated string). Default `groups`.
    pub groups_claim: String,
    /// `[headers.claims]`: header name -> claim name, in file order.
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "ser::table")]
    pub claims: Vec<(HeaderName, String)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RouteConfig {
    /// Label of the route's metrics series: as configured, else derived from `host` and the
    /// path (made unique with `#<index>`).
    pub name: String,
    /// Only requests for this host match; `None`: every host.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser::opt_display"
    )]
    pub host: Option<HostPattern>,
    /// An `[upstreams.NAME]`; `None`: `[upstream]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// A `[providers.NAME]`; `None`: `[oidc]`. Sessions of another provider do not count here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// `provider`, resolved by validation.
    #[serde(skip)]
    pub provider_id: ProviderId,
    /// Prefix routes: the prefix is removed before forwarding (keeping a leading `/`).
    pub strip_prefix: bool,
    /// Prints as `path` and `match`.
    #[serde(flatten)]
    pub matcher: PathMatch,
    /// Empty = every method.
    #[serde(serialize_with = "ser::display_list")]
    pub methods: Vec<Method>,
    pub policy: Policy,
    pub api: bool,
    pub require_groups: Vec<String>,
    /// Claim name -> accepted values (any one of them).
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "ser::table")]
    pub require_claims: Vec<(String, Vec<String>)>,
    /// Lowercase ASCII domains; the `email` claim must be in one of them.
    pub require_email_domains: Vec<String>,
    /// Lowercase ASCII addresses; the `email` claim must be one of them.
    pub require_emails: Vec<String>,
    /// Step-up: the `acr` claim must be one of these (empty: any).
    pub require_acr: Vec<String>,
    /// Step-up: the `auth_time` claim must be at most this old.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser::opt_duration"
    )]
    pub max_auth_age: Option<Duration>,
    pub bearer: BearerMode,
    /// Which configured `oidc.resource` token goes upstream on this route (default: the first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bearer_resource: Option<String>,
    /// What a CORS preflight without credentials gets on an `authenticated` route.
    pub preflight: Preflight,
    /// `false`: a form POST to this route without a session is answered as before, never
    /// kept for after the login (with `session.preserve_form_posts`; default true).
    pub preserve_form_posts: bool,
}

#[derive(Debug, Clone)]
pub enum PathMatch {
    Prefix(String),
    Exact(String),
    /// Compiled as `^(?:<pattern>)$`: always matches the whole path.
    Regex(Regex),
}

/// `path` and `match`, as a `[[route]]` writes them; the regex as written, without the anchors
/// added at compile time.
impl Serialize for PathMatch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (kind, path) = match self {
            PathMatch::Prefix(p) => ("prefix", p.as_str()),
            PathMatch::Exact(p) => ("exact", p.as_str()),
            PathMatch::Regex(re) => ("regex", unanchored(re.as_str())),
        };
        let mut st = s.serialize_struct("PathMatch", 2)?;
        st.serialize_field("path", path)?;
        st.serialize_field("match", kind)?;
        st.end()
    }
}

pub(crate) fn unanchored(compiled: &str) -> &str {
    (compiled.strip_prefix("^(?:"))
        .and_then(|s| s.strip_suffix(")$"))
        .unwrap_or(compiled)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    Public,
    Authenticated,
    Deny,
}

/// CORS preflights (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) on an
/// `authenticated` route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Preflight {
    /// Like any request: without a session, 401 (default).
    Authenticate,
    /// Forwarded upstream without identity, for the app to answer CORS itself.
    Forward,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BearerMode {
    /// Only sessions authenticate (default).
    Off,
    /// A request with `Authorization: Bearer <JWT>` and no session is accepted when the JWT
    /// verifies against the provider's keys.
    Passthrough,
}
