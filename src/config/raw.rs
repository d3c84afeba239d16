//! The configuration exactly as written: serde structs mirroring the TOML file.
//!
//! Every section rejects unknown keys (a typo must not silently disable security) and fills
//! absent keys with their documented defaults (`gateway.toml`). Durations, URLs and names stay strings here so
//! that `validate.rs` can report a bad value together with the key that holds it.
//!
//! These structs are also the schema of the environment overrides: `schema.rs` reads from each
//! field's `Deserialize` whether it holds a string, a list of strings or a table of strings.

use serde::Deserialize;

use super::lenient;

/// The top-level keys of the file, in the order `authgate check` prints them.
pub(crate) const SECTIONS: &[&str] = &[
    "server",
    "upstream",
    "upstreams",
    "oidc",
    "providers",
    "session",
    "headers",
    "route",
];

/// Every section; `None` where the section failed to deserialize (its errors are reported,
/// and validation skips it rather than piling "missing" errors on top).
#[derive(Debug, Default)]
pub(crate) struct RawConfig {
    pub server: Option<RawServer>,
    pub upstream: Option<RawUpstream>,
    /// `[upstreams.NAME]`, in file order; `None` for one that failed to deserialize.
    pub upstreams: Option<Vec<(String, Option<RawUpstream>)>>,
    pub oidc: Option<RawOidc>,
    /// `[providers.NAME]`, in name order; `None` for one that failed to deserialize.
    pub providers: Option<Vec<(String, Option<RawOidc>)>>,
    pub session: Option<RawSession>,
    pub headers: Option<RawHeaders>,
    /// One entry per `[[route]]`, `None` for a route that failed to deserialize.
    pub routes: Option<Vec<Option<RawRoute>>>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawServer {
    pub listen: String,
    pub public_url: Option<String>,
    pub tls_cert_file: Option<String>,
    pub tls_key_file: Option<String>,
    #[serde(deserialize_with = "lenient::string_list")]
    pub trusted_proxies: Vec<String>,
    pub shutdown_grace: String,
    pub log_format: String,
    pub metrics_listen: Option<String>,
    pub admin_listen: Option<String>,
    pub admin_token_file: Option<String>,
    pub header_read_timeout: String,
    pub tls_handshake_timeout: String,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    #[serde(deserialize_with = "lenient::string_list")]
    pub strip_request_headers: Vec<String>,
    pub idle_timeout: String,
    pub max_connections: usize,
    pub forwarded_proto: String,
    #[serde(deserialize_with = "lenient::string_list")]
    pub allowed_redirect_hosts: Vec<String>,
    pub watch_config: bool,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:4180".into(),
            public_url: None,
            tls_cert_file: None,
            tls_key_file: None,
            trusted_proxies: Vec::new(),
            shutdown_grace: "30s".into(),
            log_format: "text".into(),
            metrics_listen: None,
            admin_listen: None,
            admin_token_file: None,
            header_read_timeout: "10s".into(),
            tls_handshake_timeout: "10s".into(),
            max_header_bytes: 65536,
            max_headers: 100,
            strip_request_headers: Vec::new(),
            idle_timeout: "60s".into(),
            max_connections: 10_000,
            forwarded_proto: "auto".into(),
            allowed_redirect_hosts: Vec::new(),
            watch_config: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawUpstream {
    pub url: Option<String>,
    pub timeout: String,
    pub ca_file: Option<String>,
    pub max_connections: usize,
    pub idle_timeout: String,
}

impl Default for RawUpstream {
    fn default() -> Self {
        Self {
            url: None,
            timeout: "60s".into(),
            ca_file: None,
            max_connections: 256,
            idle_timeout: "60s".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawOidc {
    pub issuer: Option<String>,
    #[serde(deserialize_with = "lenient::opt_string")]
    pub client_id: Option<String>,
    #[serde(deserialize_with = "lenient::opt_string")]
    pub client_secret: Option<String>,
    pub client_secret_file: Option<String>,
    #[serde(deserialize_with = "lenient::string_list")]
    pub scopes: Vec<String>,
    #[serde(deserialize_with = "lenient::string_list")]
    pub resource: Vec<String>,
    #[serde(deserialize_with = "lenient::string_pairs")]
    pub extra_auth_params: Vec<(String, String)>,
    pub timeout: String,
    /// Unset = `timeout`.
    pub refresh_timeout: Option<String>,
    pub token_endpoint_auth: String,
    pub post_logout_redirect_uri: Option<String>,
    /// Unset = `resource` when non-empty, else `[client_id]` (decided in validation).
    #[serde(deserialize_with = "lenient::string_list")]
    pub bearer_audiences: Vec<String>,
    pub id_token_max_age: String,
}

impl Default for RawOidc {
    fn default() -> Self {
        Self {
            issuer: None,
            client_id: None,
            client_secret: None,
            client_secret_file: None,
            scopes: ["openid", "profile", "email", "offline_access"]
                .map(String::from)
                .to_vec(),
            resource: Vec::new(),
            extra_auth_params: Vec::new(),
            timeout: "10s".into(),
            refresh_timeout: None,
            token_endpoint_auth: "client_secret_basic".into(),
            post_logout_redirect_uri: None,
            bearer_audiences: Vec::new(),
            id_token_max_age: "10m".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawSession {
    pub cookie_name: String,
    #[serde(deserialize_with = "lenient::string_list")]
    pub cookie_secrets: Vec<String>,
    pub cookie_secrets_file: Option<String>,
    pub cookie_secure: bool,
    pub cookie_samesite: String,
    pub cookie_domain: String,
    pub idle_timeout: String,
    pub absolute_timeout: String,
    pub max_sessions: u64,
    pub refresh_before_expiry: String,
    pub max_token_age: Option<String>,
    pub store: String,
    #[serde(deserialize_with = "lenient::opt_string")]
    pub redis_url: Option<String>,
    pub redis_url_file: Option<String>,
    #[serde(deserialize_with = "lenient::string_list")]
    pub redis_sentinels: Vec<String>,
    pub redis_sentinels_file: Option<String>,
    #[serde(deserialize_with = "lenient::opt_string")]
    pub redis_sentinel_master: Option<String>,
    #[serde(deserialize_with = "lenient::string_list")]
    pub redis_cluster_nodes: Vec<String>,
    pub redis_cluster_nodes_file: Option<String>,
    pub redis_key_prefix: String,
    pub redis_timeout: String,
    pub snapshot_file: Option<String>,
    pub login_timeout: String,
    pub max_pending_logins: u64,
    pub preserve_form_posts: bool,
    pub max_preserved_body: u64,
}

impl Default for RawSession {
    fn default() -> Self {
        Self {
            cookie_name: "authgate_session".into(),
            cookie_secrets: Vec::new(),
            cookie_secrets_file: None,
            cookie_secure: true,
            cookie_samesite: "lax".into(),
            cookie_domain: String::new(),
            idle_timeout: "8h".into(),
            absolute_timeout: "7d".into(),
            max_sessions: 1_000_000,
            refresh_before_expiry: "60s".into(),
            max_token_age: None,
            store: "memory".into(),
            redis_url: None,
            redis_url_file: None,
            redis_sentinels: Vec::new(),
            redis_sentinels_file: None,
            redis_sentinel_master: None,
            redis_cluster_nodes: Vec::new(),
            redis_cluster_nodes_file: None,
            redis_key_prefix: "authgate:".into(),
            redis_timeout: "1s".into(),
            snapshot_file: None,
            login_timeout: "10m".into(),
            max_pending_logins: 10_000,
            preserve_form_posts: true,
            max_preserved_body: 65_536,
        }
    }
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawHeaders {
    pub authorization_bearer: bool,
    /// An empty string disables the header.
    pub user: String,
    pub email: String,
    pub preferred_username: String,
    pub groups: String,
    pub groups_claim: String,
    #[serde(deserialize_with = "lenient::string_pairs")]
    pub claims: Vec<(String, String)>,
}

impl Default for RawHeaders {
    fn default() -> Self {
        Self {
            authorization_bearer: true,
            user: "X-Forwarded-User".into(),
            email: "X-Forwarded-Email".into(),
            preferred_username: "X-Forwarded-Preferred-Username".into(),
            groups: "X-Forwarded-Groups".into(),
            groups_claim: "groups".into(),
            claims: Vec::new(),
        }
    }
}

/// One `[[route]]`.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawRoute {
    /// Required; a regex pattern when `match = "regex"`.
    pub path: Option<String>,
    #[serde(rename = "match")]
    pub match_: String,
    #[serde(deserialize_with = "lenient::string_list")]
    pub methods: Vec<String>,
    pub policy: String,
    pub api: bool,
    #[serde(deserialize_with = "lenient::string_list")]
    pub require_groups: Vec<String>,
    #[serde(deserialize_with = "lenient::string_or_list_pairs")]
    pub require_claims: Vec<(String, Vec<String>)>,
    pub bearer: String,
    pub bearer_resource: Option<String>,
    pub preflight: String,
    /// Metrics label; default derived from `host` and `path`.
    pub name: Option<String>,
    /// `app.example.com` or `*.example.com`; unset = every host.
    pub host: Option<String>,
    /// An `[upstreams.NAME]`; unset = `[upstream]`.
    pub upstream: Option<String>,
    /// A `[providers.NAME]`; unset = `[oidc]`.
    pub provider: Option<String>,
    pub strip_prefix: bool,
    #[serde(deserialize_with = "lenient::string_list")]
    pub require_email_domains: Vec<String>,
    #[serde(deserialize_with = "lenient::string_list")]
    pub require_emails: Vec<String>,
    /// Step-up: the session's `acr` must be one of these.
    #[serde(deserialize_with = "lenient::string_list")]
    pub require_acr: Vec<String>,
    /// Step-up: the session's `auth_time` must be this recent (a duration).
    pub max_auth_age: Option<String>,
    /// `false`: form POSTs to this route are never kept across a login.
    pub preserve_form_posts: bool,
}

impl Default for RawRoute {
    fn default() -> Self {
        Self {
            path: None,
            match_: "prefix".into(),
            methods: Vec::new(),
            policy: "authenticated".into(),
            api: false,
            require_groups: Vec::new(),
            require_claims: Vec::new(),
            bearer: "off".into(),
            bearer_resource: None,
            preflight: "authenticate".into(),
            name: None,
            host: None,
            upstream: None,
            provider: None,
            strip_prefix: false,
            require_email_domains: Vec::new(),
            require_emails: Vec::new(),
            require_acr: Vec::new(),
            max_auth_age: None,
            preserve_form_posts: true,
        }
    }
}
