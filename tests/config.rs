//! The configuration loader through its public API: files, environment overrides (under
//! `figment::Jail`, never `std::env::set_var`), `*_file` secrets, every error class, redaction.

// A test crate: helpers outside `#[test]` fns panic on purpose, and `Jail` closures return
// figment's (large) error type by its API.
#![allow(clippy::panic, clippy::result_large_err)]

use std::path::Path;
use std::time::Duration;

use authgate::config::{
    BearerMode, Config, ConfigErrors, EnvOverrides, LogFormat, PathMatch, Policy, Preflight,
    RedisTopology, SameSite, StoreConfig, TokenEndpointAuth,
};
use figment::providers::{Format, Toml};
use figment::{Figment, Jail};

/// base64 of 32 bytes: the smallest valid cookie secret.
const SECRET_A: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
/// URL-safe base64 of 40 bytes, without padding.
const SECRET_B: &str = "yMnKy8zNzs_Q0dLT1NXW19jZ2tvc3d7f4OHi4-Tl5ufo6err7O3u7w";
const CLIENT_SECRET: &str = "s3cr3t-client-value";

/// The required keys and nothing else.
fn minimal() -> String {
    format!(
        r#"
[server]
public_url = "https://app.example.com"
[upstream]
url = "http://127.0.0.1:8080"
[oidc]
issuer = "https://idp.example.com/oidc"
client_id = "client-1"
[session]
cookie_secrets = ["{SECRET_A}"]
"#
    )
}

fn from_toml(toml: &str) -> Result<Config, ConfigErrors> {
    Config::from_figment(Figment::from(Toml::string(toml)))
}

fn load_ok(toml: &str) -> Config {
    from_toml(toml).unwrap_or_else(|e| panic!("expected a valid config, got:\n{e}"))
}

fn load_err(toml: &str) -> ConfigErrors {
    match from_toml(toml) {
        Ok(_) => panic!("expected errors for:\n{toml}"),
        Err(e) => e,
    }
}

/// `minimal()` with `extra` lines appended to `[section]` (TOML allows no repeated header,
/// so the lines are inserted right after the existing one, or a new section is added).
fn with(section: &str, extra: &str) -> String {
    let base = minimal();
    let header = format!("[{section}]\n");
    match base.find(&header) {
        Some(at) => {
            let at = at + header.len();
            format!("{}{extra}\n{}", &base[..at], &base[at..])
        }
        None => format!("{base}\n{header}{extra}\n"),
    }
}

/// Asserts the error for `key` exists and its message contains `needle`.
fn assert_error(errors: &ConfigErrors, key: &str, needle: &str) {
    let found = errors
        .find(key)
        .unwrap_or_else(|| panic!("no error for {key}; got:\n{errors}"));
    assert!(
        found.message.contains(needle),
        "error for {key} is {:?}, expected it to contain {needle:?}",
        found.message
    );
}

// === valid configs ===

#[test]
fn minimal_config_gets_the_documented_defaults() {
    let c = load_ok(&minimal());
    assert_eq!(c.server.listen.to_string(), "0.0.0.0:4180");
    assert_eq!(c.server.public_url.as_str(), "https://app.example.com/");
    assert!(c.server.tls.is_none());
    assert!(c.server.trusted_proxies.is_empty());
    assert_eq!(c.server.shutdown_grace, Duration::from_secs(30));
    assert_eq!(c.server.log_format, LogFormat::Text);
    assert!(c.server.metrics_listen.is_none());
    assert_eq!(c.server.header_read_timeout, Duration::from_secs(10));
    assert_eq!(c.server.tls_handshake_timeout, Duration::from_secs(10));
    assert_eq!(c.server.max_header_bytes, 65536);
    assert_eq!(c.server.max_headers, 100);
    assert!(c.server.strip_request_headers.is_empty());
    assert_eq!(c.server.idle_timeout, Duration::from_secs(60));
    assert_eq!(c.server.max_connections, 10_000);

    assert_eq!(c.upstream.timeout, Duration::from_secs(60));
    assert!(c.upstream.ca_file.is_none());
    assert_eq!(c.upstream.max_connections, 256);
    assert_eq!(c.upstream.idle_timeout, Duration::from_secs(60));

    assert_eq!(
        c.oidc.scopes,
        ["openid", "profile", "email", "offline_access"]
    );
    assert!(c.oidc.client_secret.is_none());
    assert!(c.oidc.resource.is_empty());
    assert!(c.oidc.extra_auth_params.is_empty());
    assert_eq!(c.oidc.timeout, Duration::from_secs(10));
    assert_eq!(c.oidc.refresh_timeout, Duration::from_secs(10));
    assert_eq!(c.oidc.id_token_max_age, Duration::from_secs(600));
    assert_eq!(
        c.oidc.token_endpoint_auth,
        TokenEndpointAuth::ClientSecretBasic
    );
    assert!(c.oidc.post_logout_redirect_uri.is_none());
    assert!(c.oidc.bearer_audiences.is_empty(), "no default");

    let s = &c.session;
    assert_eq!(s.cookie_name, "authgate_session");
    assert_eq!(s.cookie_secrets.len(), 1);
    assert_eq!(
        s.cookie_secrets[0].expose(),
        b"0123456789abcdef0123456789abcdef"
    );
    assert!(s.cookie_secure);
    assert_eq!(s.cookie_samesite, SameSite::Lax);
    assert!(s.cookie_domain.is_none());
    assert_eq!(s.idle_timeout, Duration::from_secs(8 * 3600));
    assert_eq!(s.absolute_timeout, Duration::from_secs(7 * 86400));
    assert_eq!(s.max_sessions, 1_000_000);
    assert_eq!(s.refresh_before_expiry, Duration::from_secs(60));
    assert!(s.max_token_age.is_none());
    assert!(matches!(s.store, StoreConfig::Memory));
    assert_eq!(s.login_timeout, Duration::from_secs(600));
    assert_eq!(s.max_pending_logins, 10_000);

    let h = &c.headers;
    assert!(h.authorization_bearer);
    assert_eq!(h.user.as_ref().unwrap().as_str(), "x-forwarded-user");
    assert_eq!(h.email.as_ref().unwrap().as_str(), "x-forwarded-email");
    let username = h.preferred_username.as_ref().unwrap();
    assert_eq!(username.as_str(), "x-forwarded-preferred-username");
    assert_eq!(h.groups.as_ref().unwrap().as_str(), "x-forwarded-groups");
    assert_eq!(h.groups_claim, "groups");
    assert!(h.claims.is_empty());
    assert!(c.routes.is_empty());
}

#[test]
fn full_config_every_key() {
    Jail::expect_with(|jail| {
        jail.create_file("tls.crt", "cert")?;
        jail.create_file("tls.key", "key")?;
        jail.create_file("ca.pem", "ca")?;
        jail.create_file(
            "full.toml",
            &format!(
                r#"
[server]
listen = "127.0.0.1:8443"
public_url = "https://app.example.com/base/"
tls_cert_file = "tls.crt"
tls_key_file = "tls.key"
trusted_proxies = ["10.0.0.0/8", "192.168.1.7", "::1"]
shutdown_grace = "5s"
log_format = "json"
metrics_listen = "127.0.0.1:9090"
header_read_timeout = "3s"
tls_handshake_timeout = "4s"
max_header_bytes = 32768
max_headers = 50
strip_request_headers = ["X-Legacy-User", "X_Debug"]
idle_timeout = "90s"
max_connections = 500

[upstream]
url = "https://backend.internal:9000/app"
timeout = "2m"
ca_file = "ca.pem"
max_connections = 32
idle_timeout = "5s"

[oidc]
issuer = "https://tenant.logto.app/oidc"
client_id = "abc"
client_secret = "{CLIENT_SECRET}"
scopes = ["openid", "email"]
resource = ["https://api.example.com", "https://other.example.com"]
extra_auth_params = {{ prompt = "login", max_age = 300 }}
timeout = "7s"
refresh_timeout = "3s"
token_endpoint_auth = "client_secret_post"
post_logout_redirect_uri = "https://app.example.com/bye"
bearer_audiences = ["aud-1"]

[session]
cookie_name = "sid"
cookie_secrets = ["{SECRET_A}", "{SECRET_B}"]
cookie_secure = false
cookie_samesite = "strict"
cookie_domain = "example.com"
idle_timeout = "1h"
absolute_timeout = "1d"
max_sessions = 500
refresh_before_expiry = "30s"
max_token_age = "15m"
store = "redis"
redis_url = "redis://:hunter2@redis:6379/0"
redis_key_prefix = "ag:"
redis_timeout = "250ms"
login_timeout = "5m"
max_pending_logins = 20

[headers]
authorization_bearer = false
user = "X-User"
email = ""
preferred_username = "X-Name"
groups = "X-Groups"
groups_claim = "roles"
[headers.claims]
"X-Tenant" = "tenant_id"

[[route]]
path = "/public/"
policy = "public"

[[route]]
path = "/admin"
match = "exact"
methods = ["get", "Post"]
api = true
require_groups = ["admins"]
require_claims = {{ tier = "gold", region = ["eu", "us"] }}
bearer = "passthrough"
bearer_resource = "https://other.example.com"
preflight = "forward"

[[route]]
path = "/files/[0-9]+"
match = "regex"
policy = "deny"
"#
            ),
        )?;
        let c = Config::load(Path::new("full.toml")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8443");
        assert_eq!(c.server.public_url.as_str(), "https://app.example.com/base");
        let tls = c.server.tls.as_ref().unwrap();
        assert_eq!(
            (tls.cert.to_str(), tls.key.to_str()),
            (Some("tls.crt"), Some("tls.key"))
        );
        let proxies: Vec<String> = c
            .server
            .trusted_proxies
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(proxies, ["10.0.0.0/8", "192.168.1.7/32", "::1/128"]);
        assert_eq!(c.server.log_format, LogFormat::Json);
        assert_eq!(
            c.server.metrics_listen.unwrap().to_string(),
            "127.0.0.1:9090"
        );
        assert_eq!(c.server.max_headers, 50);
        let strip: Vec<&str> = (c.server.strip_request_headers.iter())
            .map(|h| h.as_str())
            .collect();
        assert_eq!(strip, ["x-legacy-user", "x_debug"]);
        assert_eq!(c.server.idle_timeout, Duration::from_secs(90));
        assert_eq!(c.server.max_connections, 500);
        assert_eq!(c.upstream.url.as_str(), "https://backend.internal:9000/app");
        assert_eq!(c.upstream.timeout, Duration::from_secs(120));
        assert!(c.upstream.ca_file.is_some());
        assert_eq!(c.upstream.max_connections, 32);
        assert_eq!(c.upstream.idle_timeout, Duration::from_secs(5));
        assert_eq!(
            c.oidc.client_secret.as_ref().unwrap().expose(),
            CLIENT_SECRET
        );
        assert_eq!(c.oidc.refresh_timeout, Duration::from_secs(3));
        assert_eq!(
            c.oidc.token_endpoint_auth,
            TokenEndpointAuth::ClientSecretPost
        );
        assert!(
            c.oidc
                .extra_auth_params
                .contains(&("max_age".into(), "300".into()))
        );
        assert_eq!(c.oidc.bearer_audiences, ["aud-1"]);
        assert_eq!(c.session.cookie_secrets.len(), 2);
        assert_eq!(c.session.cookie_secrets[1].expose().len(), 40);
        assert_eq!(c.session.cookie_samesite, SameSite::Strict);
        assert_eq!(c.session.cookie_domain.as_deref(), Some("example.com"));
        assert_eq!(c.session.max_token_age, Some(Duration::from_secs(900)));
        match &c.session.store {
            StoreConfig::Redis {
                topology: RedisTopology::Single { url },
                key_prefix,
                timeout,
            } => {
                assert_eq!(url.expose(), "redis://:hunter2@redis:6379/0");
                assert_eq!(key_prefix, "ag:");
                assert_eq!(*timeout, Duration::from_millis(250));
            }
            _ => panic!("expected redis with redis_url"),
        }
        assert!(!c.headers.authorization_bearer);
        assert!(c.headers.email.is_none());
        assert_eq!(c.headers.groups_claim, "roles");
        assert_eq!(c.headers.claims[0].0.as_str(), "x-tenant");
        assert_eq!(c.headers.claims[0].1, "tenant_id");

        assert_eq!(c.routes.len(), 3);
        assert!(matches!(&c.routes[0].matcher, PathMatch::Prefix(p) if p == "/public/"));
        assert_eq!(c.routes[0].policy, Policy::Public);
        let admin = &c.routes[1];
        assert!(matches!(&admin.matcher, PathMatch::Exact(p) if p == "/admin"));
        assert_eq!(admin.methods, [http::Method::GET, http::Method::POST]);
        assert_eq!(admin.policy, Policy::Authenticated);
        assert!(admin.api);
        assert!(
            admin
                .require_claims
                .contains(&("tier".into(), vec!["gold".into()]))
        );
        assert!(
            admin
                .require_claims
                .contains(&("region".into(), vec!["eu".into(), "us".into()]))
        );
        assert_eq!(admin.bearer, BearerMode::Passthrough);
        assert_eq!(admin.preflight, Preflight::Forward);
        assert_eq!(c.routes[0].preflight, Preflight::Authenticate);
        assert_eq!(
            admin.bearer_resource.as_deref(),
            Some("https://other.example.com")
        );
        let PathMatch::Regex(re) = &c.routes[2].matcher else {
            panic!("expected a regex")
        };
        assert!(re.is_match("/files/42"));
        assert!(!re.is_match("/files/42/x"), "regex is anchored");
        assert!(!re.is_match("/x/files/42"), "regex is anchored");
        assert_eq!(c.routes[2].policy, Policy::Deny);
        Ok(())
    });
}

/// A passthrough route needs `oidc.bearer_audiences`, said explicitly;
/// the client id (what ID tokens carry as `aud`) or a resource is never assumed.
#[test]
fn passthrough_routes_need_explicit_bearer_audiences() {
    let routes = r#"
[[route]]
path = "/web/"
[[route]]
path = "/api/"
bearer = "passthrough"
"#;
    for oidc in ["", r#"resource = ["https://api.example.com"]"#] {
        let errors = load_err(&format!("{}{routes}", with("oidc", oidc)));
        assert_error(&errors, "oidc.bearer_audiences", "route[1]");
        assert_error(&errors, "oidc.bearer_audiences", "passthrough");
    }
    let errors = load_err(&format!(
        "{}{routes}",
        with("oidc", r#"bearer_audiences = ["https://api", " "]"#)
    ));
    assert_error(&errors, "oidc.bearer_audiences", "empty");
    let c = load_ok(&format!(
        "{}{routes}",
        with("oidc", r#"bearer_audiences = ["https://api"]"#)
    ));
    assert_eq!(c.oidc.bearer_audiences, ["https://api"]);
    // Without a passthrough route nothing is required.
    assert!(load_ok(&minimal()).oidc.bearer_audiences.is_empty());
}

#[test]
fn empty_header_name_disables_the_header() {
    let c = load_ok(&with("headers", "user = \"\"\ngroups = \"\""));
    assert!(c.headers.user.is_none());
    assert!(c.headers.groups.is_none());
    assert!(c.headers.email.is_some());
}

#[test]
fn cookie_secure_with_http_public_url_is_fine() {
    let toml = minimal().replace("https://app.example.com", "http://localhost:4180");
    assert!(load_ok(&toml).session.cookie_secure);
}

#[test]
fn repository_gateway_toml_loads_with_secrets_from_env() {
    Jail::expect_with(|jail| {
        jail.set_env("AUTHGATE_OIDC__CLIENT_SECRET", CLIENT_SECRET);
        jail.set_env("AUTHGATE_SESSION__COOKIE_SECRETS", format!("[{SECRET_A}]"));
        jail.set_env("AUTHGATE_CONFIG", "/nonexistent/elsewhere.toml");
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.toml");
        let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.oidc.client_secret.as_ref().unwrap().expose(),
            CLIENT_SECRET
        );
        assert_eq!(c.session.cookie_secrets.len(), 1);
        assert_eq!(c.routes.len(), 1);
        assert_eq!(c.routes[0].policy, Policy::Public);
        assert_eq!(c.session.idle_timeout, Duration::from_secs(8 * 3600));
        Ok(())
    });
}

// === missing, unknown, wrong type ===

#[test]
fn required_keys_are_each_reported() {
    let errors = load_err("");
    for key in [
        "server.public_url",
        "upstream.url",
        "oidc.issuer",
        "oidc.client_id",
        "session.cookie_secrets",
    ] {
        assert!(errors.find(key).is_some(), "no error for {key}:\n{errors}");
    }
    assert_error(&errors, "server.public_url", "required");
    assert_error(&errors, "session.cookie_secrets", "at least one secret");
}

#[test]
fn unknown_keys_are_rejected_with_their_path() {
    let errors = load_err(&with("session", "cookie_secret = \"x\""));
    assert_error(&errors, "session.cookie_secret", "unknown field");
    let errors = load_err(&format!("{}\n[sesion]\nidle_timeout = \"1h\"\n", minimal()));
    assert_error(&errors, "sesion", "unknown section");
    let errors = load_err(&with("route", "path = \"/a\"\nmatchh = \"exact\""));
    assert_error(&errors, "route", "expected an array of tables");
}

#[test]
fn wrong_types_name_the_key() {
    let errors = load_err(&with("server", "max_headers = \"many\""));
    assert_error(&errors, "server.max_headers", "invalid type");
    let errors = load_err(&with("session", "cookie_secure = \"yes please\""));
    assert_error(&errors, "session.cookie_secure", "invalid type");
}

#[test]
fn every_section_reports_its_errors_at_once() {
    let toml = format!(
        r#"{}
[[route]]
path = "/ok"
[[route]]
path = "/a"
matchh = "exact"
[[route]]
path = "no-slash"
"#,
        minimal()
            .replace("[server]\n", "[server]\nlistn = \"x\"\n")
            .replace("[oidc]\n", "[oidc]\ntimeout = \"soon\"\n")
            .replace("[session]\n", "[session]\nmax_sessions = \"lots\"\n")
    );
    let errors = load_err(&toml);
    assert_error(&errors, "server.listn", "unknown field");
    assert_error(&errors, "oidc.timeout", "invalid duration \"soon\"");
    assert_error(&errors, "session.max_sessions", "invalid type");
    assert_error(&errors, "route[1].matchh", "unknown field");
    assert_error(&errors, "route[2].path", "must start with \"/\"");
    assert_eq!(errors.0.len(), 5, "{errors}");
    // Display: one error per line.
    assert_eq!(errors.to_string().lines().count(), 5);
}

#[test]
fn missing_config_file_is_an_error() {
    Jail::expect_with(|_| {
        let errors = Config::load(Path::new("nope.toml")).err().unwrap();
        assert_error(&errors, "config", "nope.toml");
        assert_eq!(errors.0.len(), 1);
        assert!(!errors.to_string().contains('\n'), "{errors}");
        Ok(())
    });
}

// === field validation ===

#[test]
fn url_errors() {
    let toml = minimal()
        .replace("https://app.example.com", "ftp://app.example.com")
        .replace("https://idp.example.com/oidc", "not a url")
        .replace("http://127.0.0.1:8080", "http://up/?q=1");
    let errors = load_err(&toml);
    assert_error(
        &errors,
        "server.public_url",
        "must start with http:// or https://",
    );
    assert_error(&errors, "oidc.issuer", "invalid URL");
    assert_error(
        &errors,
        "upstream.url",
        "must not have a query or a fragment",
    );
    let errors = load_err(&minimal().replace("https://app.example.com", "https://a/#frag"));
    assert_error(
        &errors,
        "server.public_url",
        "must not have a query or a fragment",
    );
}

#[test]
fn socket_addresses_and_cidrs() {
    let toml = with(
        "server",
        "listen = \"localhost\"\nmetrics_listen = \"9090\"\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.300\"]",
    );
    let errors = load_err(&toml);
    assert_error(&errors, "server.listen", "invalid socket address");
    assert_error(&errors, "server.metrics_listen", "invalid socket address");
    assert_error(
        &errors,
        "server.trusted_proxies[1]",
        "not an IP address or CIDR",
    );
}

#[test]
fn header_names() {
    let toml = format!(
        "{}\n[headers]\nuser = \"X User\"\n[headers.claims]\n\"X-Bad Name\" = \"c\"\n\"X-Ok\" = \"\"\n",
        minimal()
    );
    let errors = load_err(&toml);
    assert_error(&errors, "headers.user", "invalid header name \"X User\"");
    assert_error(
        &errors,
        "headers.claims.\"X-Bad Name\"",
        "invalid header name",
    );
    assert_error(
        &errors,
        "headers.claims.\"X-Ok\"",
        "claim name must not be empty",
    );
}

#[test]
fn strip_request_headers_are_header_names_the_gateway_can_spare() {
    let errors = load_err(&with(
        "server",
        r#"strip_request_headers = ["X Bad", "Host", "cookie", "Content_Length", "transfer.encoding", "X-Fine"]"#,
    ));
    assert_error(
        &errors,
        "server.strip_request_headers[0]",
        "invalid header name",
    );
    for i in 1..=4 {
        let key = format!("server.strip_request_headers[{i}]");
        assert_error(&errors, &key, "the gateway needs it to read the request");
    }
    let message = errors.to_string();
    assert!(!message.contains("strip_request_headers[5]"), "{message}");
}

#[test]
fn enumerations() {
    let errors = load_err(
        &with("server", "log_format = \"xml\"")
            .replace(
                "[oidc]\n",
                "[oidc]\ntoken_endpoint_auth = \"private_key_jwt\"\n",
            )
            .replace(
                "[session]\n",
                "[session]\ncookie_samesite = \"loose\"\nstore = \"disk\"\n",
            ),
    );
    assert_error(
        &errors,
        "server.log_format",
        "must be one of text, json, got \"xml\"",
    );
    assert_error(
        &errors,
        "oidc.token_endpoint_auth",
        "client_secret_basic, client_secret_post",
    );
    assert_error(&errors, "session.cookie_samesite", "lax, strict, none");
    assert_error(&errors, "session.store", "memory, redis");
}

#[test]
fn durations_must_parse_and_be_positive() {
    let toml = with(
        "session",
        "idle_timeout = \"0s\"\nlogin_timeout = \"ten minutes\"",
    )
    .replace("[upstream]\n", "[upstream]\ntimeout = \"0\"\n");
    let errors = load_err(&toml);
    assert_error(&errors, "session.idle_timeout", "must be greater than 0");
    assert_error(&errors, "session.login_timeout", "invalid duration");
    assert_error(&errors, "upstream.timeout", "must be greater than 0");
    let errors = load_err(&with("oidc", "id_token_max_age = \"0s\""));
    assert_error(&errors, "oidc.id_token_max_age", "must be greater than 0");
    // Zero grace is a valid choice: exit at once.
    let c = load_ok(&with("server", "shutdown_grace = \"0s\""));
    assert_eq!(c.server.shutdown_grace, Duration::ZERO);
}

#[test]
fn connection_limits_must_be_in_range() {
    let toml = with("server", "max_connections = 0\nidle_timeout = \"0s\"").replace(
        "[upstream]\n",
        "[upstream]\nmax_connections = 2000000\nidle_timeout = \"soon\"\n",
    );
    let errors = load_err(&toml);
    assert_error(&errors, "server.max_connections", "between 1 and 1000000");
    assert_error(&errors, "server.idle_timeout", "must be greater than 0");
    assert_error(&errors, "upstream.max_connections", "between 1 and 1000000");
    assert_error(&errors, "upstream.idle_timeout", "invalid duration");
}

#[test]
fn route_errors() {
    let toml = format!(
        r#"{}
[[route]]
policy = "public"
[[route]]
path = "/a"
match = "glob"
policy = "allow"
bearer = "on"
preflight = "allow"
[[route]]
path = "/(unclosed"
match = "regex"
methods = ["GET", "BAD METHOD"]
[[route]]
path = "/b"
bearer_resource = "https://unknown.example.com"
require_claims = {{ tier = [] }}
"#,
        minimal()
    );
    let errors = load_err(&toml);
    assert_error(&errors, "route[0].path", "required");
    assert_error(&errors, "route[1].match", "prefix, exact, regex");
    assert_error(&errors, "route[1].policy", "public, authenticated, deny");
    assert_error(&errors, "route[1].bearer", "off, passthrough");
    assert_error(&errors, "route[1].preflight", "authenticate, forward");
    assert_error(&errors, "route[2].path", "invalid regex");
    assert_error(&errors, "route[2].methods[1]", "invalid method");
    assert_error(
        &errors,
        "route[3].bearer_resource",
        "is not one of oidc.resource",
    );
    assert_error(
        &errors,
        "route[3].require_claims.tier",
        "at least one value",
    );
}

#[test]
fn exact_route_path_must_start_with_slash() {
    let toml = format!(
        "{}\n[[route]]\npath = \"x\"\nmatch = \"exact\"\n",
        minimal()
    );
    assert_error(&load_err(&toml), "route[0].path", "must start with \"/\"");
}

// === cross-key rules ===

#[test]
fn samesite_none_requires_secure() {
    let errors = load_err(&with(
        "session",
        "cookie_samesite = \"none\"\ncookie_secure = false",
    ));
    assert_error(
        &errors,
        "session.cookie_samesite",
        "requires cookie_secure = true",
    );
    load_ok(&with("session", "cookie_samesite = \"none\""));
}

#[test]
fn redis_store_needs_a_redis_url() {
    let errors = load_err(&with("session", "store = \"redis\""));
    assert_error(
        &errors,
        "session.redis_url",
        "required when session.store = \"redis\"",
    );
    let errors = load_err(&with(
        "session",
        "store = \"redis\"\nredis_url = \"http://:pw@host\"",
    ));
    assert_error(
        &errors,
        "session.redis_url",
        "must start with redis:// or rediss://",
    );
    assert!(!errors.to_string().contains("pw@host"));
    let c = load_ok(&with(
        "session",
        "store = \"redis\"\nredis_url = \"rediss://h:6380\"",
    ));
    assert!(matches!(
        c.session.store,
        StoreConfig::Redis { timeout, .. } if timeout == Duration::from_secs(1)
    ));
    let errors = load_err(&with(
        "session",
        "store = \"redis\"\nredis_url = \"redis://h\"\nredis_timeout = \"0s\"",
    ));
    assert_error(&errors, "session.redis_timeout", "greater than 0");
}

#[test]
fn redis_sentinel_and_cluster_topologies() {
    let c = load_ok(&with(
        "session",
        "store = \"redis\"\nredis_sentinels = [\"redis://:s3cret@10.0.0.1:26379\", \"redis://10.0.0.2:26379\"]\nredis_sentinel_master = \"authgate\"",
    ));
    let StoreConfig::Redis {
        topology: RedisTopology::Sentinel { sentinels, master },
        ..
    } = &c.session.store
    else {
        panic!("expected sentinel")
    };
    assert_eq!(master, "authgate");
    assert_eq!(sentinels.len(), 2);
    assert_eq!(sentinels[0].expose(), "redis://:s3cret@10.0.0.1:26379");
    // Every URL redacted in `check` and in Debug output.
    let out = c.redacted_toml();
    assert!(
        !out.contains("s3cret") && !out.contains("10.0.0.2"),
        "{out}"
    );
    let parsed: toml::Table = toml::from_str(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert_eq!(
        parsed["session"]["redis_sentinels"][1].as_str(),
        Some("[redacted]")
    );
    assert_eq!(
        parsed["session"]["redis_sentinel_master"].as_str(),
        Some("authgate")
    );
    assert!(parsed["session"].get("redis_url").is_none());
    assert!(!format!("{c:?}").contains("s3cret"));

    let c = load_ok(&with(
        "session",
        "store = \"redis\"\nredis_cluster_nodes = [\"redis://:pw9@10.0.0.1:6379\", \"rediss://10.0.0.2:6379\"]",
    ));
    assert!(matches!(
        &c.session.store,
        StoreConfig::Redis { topology: RedisTopology::Cluster { nodes }, .. } if nodes.len() == 2
    ));
    let out = c.redacted_toml();
    assert!(!out.contains("pw9"), "{out}");
    let parsed: toml::Table = toml::from_str(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert_eq!(
        parsed["session"]["redis_cluster_nodes"][0].as_str(),
        Some("[redacted]")
    );
    assert!(!format!("{c:?}").contains("pw9"));
}

#[test]
fn redis_topology_errors() {
    // Two topologies at once.
    let errors = load_err(&with(
        "session",
        "store = \"redis\"\nredis_url = \"redis://h\"\nredis_cluster_nodes = [\"redis://h2\"]",
    ));
    assert_error(&errors, "session.redis_url", "set only one of");
    let errors = load_err(&with(
        "session",
        "store = \"redis\"\nredis_sentinels = [\"redis://h:26379\"]\nredis_sentinel_master = \"m\"\nredis_cluster_nodes = [\"redis://h2\"]",
    ));
    assert_error(&errors, "session.redis_sentinels", "set only one of");
    // Sentinels without the master's name; a master name without Sentinels.
    let errors = load_err(&with(
        "session",
        "store = \"redis\"\nredis_sentinels = [\"redis://h:26379\"]",
    ));
    assert_error(&errors, "session.redis_sentinel_master", "is required");
    let errors = load_err(&with(
        "session",
        "store = \"redis\"\nredis_url = \"redis://h\"\nredis_sentinel_master = \"m\"",
    ));
    assert_error(&errors, "session.redis_sentinel_master", "only used with");
    // A bad URL in a list: named by its index, its password never repeated.
    let errors = load_err(&with(
        "session",
        "store = \"redis\"\nredis_cluster_nodes = [\"redis://h\", \"http://:pw7@h\"]",
    ));
    assert_error(
        &errors,
        "session.redis_cluster_nodes[1]",
        "must start with redis://",
    );
    assert!(!errors.to_string().contains("pw7"));
    // A Cluster's hash tags need a prefix without braces.
    let errors = load_err(&with(
        "session",
        "store = \"redis\"\nredis_cluster_nodes = [\"redis://h\"]\nredis_key_prefix = \"{ag}:\"",
    ));
    assert_error(&errors, "session.redis_key_prefix", "must not contain {");
}

#[test]
fn redis_url_lists_from_files() {
    Jail::expect_with(|jail| {
        jail.create_file("sentinels", "redis://:pw@s1:26379\n\nredis://s2:26379\n")?;
        jail.create_file("nodes", "redis://n1:6379\n")?;
        let base = with("session", "store = \"redis\"");
        let toml = base.replace(
            "store = \"redis\"",
            "store = \"redis\"\nredis_sentinels_file = \"sentinels\"\nredis_sentinel_master = \"ag\"",
        );
        jail.create_file("gateway.toml", &toml)?;
        let c = Config::load(Path::new("gateway.toml")).unwrap_or_else(|e| panic!("{e}"));
        let StoreConfig::Redis {
            topology: RedisTopology::Sentinel { sentinels, .. },
            ..
        } = &c.session.store
        else {
            panic!("expected sentinel")
        };
        assert_eq!(sentinels.len(), 2);
        assert_eq!(sentinels[1].expose(), "redis://s2:26379");
        let toml = base.replace(
            "store = \"redis\"",
            "store = \"redis\"\nredis_cluster_nodes_file = \"nodes\"\nredis_cluster_nodes = [\"redis://x\"]",
        );
        jail.create_file("gateway.toml", &toml)?;
        let errors = Config::load(Path::new("gateway.toml")).unwrap_err();
        assert_error(&errors, "session.redis_cluster_nodes", "not both");
        Ok(())
    });
}

#[test]
fn tls_files_come_in_pairs_and_must_be_readable() {
    let errors = load_err(&with("server", "tls_cert_file = \"/tmp/x.crt\""));
    assert_error(
        &errors,
        "server.tls_key_file",
        "required when tls_cert_file is set",
    );
    let errors = load_err(&with("server", "tls_key_file = \"/tmp/x.key\""));
    assert_error(
        &errors,
        "server.tls_cert_file",
        "required when tls_key_file is set",
    );
    let errors = load_err(&with(
        "server",
        "tls_cert_file = \"/nonexistent/a.crt\"\ntls_key_file = \"/nonexistent/a.key\"",
    ));
    assert_error(
        &errors,
        "server.tls_cert_file",
        "cannot read \"/nonexistent/a.crt\"",
    );
    assert_error(
        &errors,
        "server.tls_key_file",
        "cannot read \"/nonexistent/a.key\"",
    );
}

#[test]
fn session_timeouts_must_agree() {
    let errors = load_err(&with(
        "session",
        "idle_timeout = \"2d\"\nabsolute_timeout = \"1d\"\nrefresh_before_expiry = \"1d\"",
    ));
    assert_error(
        &errors,
        "session.absolute_timeout",
        "at least session.idle_timeout",
    );
    assert_error(
        &errors,
        "session.refresh_before_expiry",
        "less than session.absolute_timeout",
    );
}

// === cookie secrets ===

#[test]
fn cookie_secrets_must_be_long_base64() {
    let toml = minimal().replace(
        &format!("[\"{SECRET_A}\"]"),
        &format!("[\"c2hvcnQgc2VjcmV0\", \"{SECRET_A}!\", \"{SECRET_B}\"]"),
    );
    let errors = load_err(&toml);
    assert_eq!(
        errors
            .find("session.cookie_secrets[0]")
            .unwrap()
            .to_string(),
        "session.cookie_secrets[0]: must decode to at least 32 bytes, got 12"
    );
    assert_error(&errors, "session.cookie_secrets[1]", "not valid base64");
    assert!(errors.find("session.cookie_secrets[2]").is_none());
    let text = errors.to_string();
    assert!(
        !text.contains("c2hvcnQgc2VjcmV0") && !text.contains(SECRET_A),
        "{text}"
    );
}

// === environment ===

fn write_minimal(jail: &mut Jail) -> figment::error::Result<()> {
    jail.create_file("gateway.toml", &minimal()).map(|_| ())
}

#[test]
fn env_string_keys_stay_strings() {
    Jail::expect_with(|jail| {
        write_minimal(jail)?;
        jail.set_env("AUTHGATE_OIDC__CLIENT_SECRET", "007");
        jail.set_env("AUTHGATE_OIDC__CLIENT_ID", "true");
        let c = Config::load(Path::new("gateway.toml")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.oidc.client_secret.as_ref().unwrap().expose(), "007");
        assert_eq!(c.oidc.client_id, "true");
        jail.set_env("AUTHGATE_OIDC__CLIENT_SECRET", "true");
        let c = Config::load(Path::new("gateway.toml")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.oidc.client_secret.as_ref().unwrap().expose(), "true");
        Ok(())
    });
}

#[test]
fn env_parses_lists_numbers_and_booleans() {
    Jail::expect_with(|jail| {
        write_minimal(jail)?;
        jail.set_env("AUTHGATE_OIDC__SCOPES", "[openid, email]");
        jail.set_env(
            "AUTHGATE_SESSION__COOKIE_SECRETS",
            format!("[{SECRET_A}, {SECRET_B}]"),
        );
        jail.set_env("AUTHGATE_SESSION__MAX_SESSIONS", "42");
        jail.set_env("AUTHGATE_SESSION__COOKIE_SECURE", "false");
        jail.set_env("authgate_server__log_format", "json");
        jail.set_env("AUTHGATE_SERVER__MAX_CONNECTIONS", "500");
        jail.set_env("AUTHGATE_UPSTREAM__MAX_CONNECTIONS", "16");
        jail.set_env("AUTHGATE_UPSTREAM__IDLE_TIMEOUT", "5s");
        let c = Config::load(Path::new("gateway.toml")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.server.max_connections, 500);
        assert_eq!(c.upstream.max_connections, 16);
        assert_eq!(c.upstream.idle_timeout, Duration::from_secs(5));
        assert_eq!(c.oidc.scopes, ["openid", "email"]);
        assert_eq!(c.session.cookie_secrets.len(), 2);
        assert_eq!(c.session.max_sessions, 42);
        assert!(!c.session.cookie_secure);
        assert_eq!(c.server.log_format, LogFormat::Json);
        Ok(())
    });
}

#[test]
fn env_number_looking_cookie_secret_is_a_string() {
    // 44 decimal digits: valid base64 (33 bytes) and a number to figment's parser.
    let digits = "12345678901234567890123456789012345678901234";
    let figment = Figment::from(Toml::string(&minimal())).merge(EnvOverrides::from_vars([(
        "AUTHGATE_SESSION__COOKIE_SECRETS",
        format!("[{digits}]"),
    )]));
    let c = Config::from_figment(figment).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.session.cookie_secrets[0].expose().len(), 33);
}

#[test]
fn env_config_path_and_other_names_are_ignored() {
    Jail::expect_with(|jail| {
        write_minimal(jail)?;
        jail.set_env("AUTHGATE_CONFIG", "/somewhere/else.toml");
        jail.set_env("AUTHGATE_FOO", "bar");
        jail.set_env("AUTHGATE_LOG", "debug");
        assert!(Config::load(Path::new("gateway.toml")).is_ok());
        Ok(())
    });
}

#[test]
fn env_errors_name_the_variable() {
    Jail::expect_with(|jail| {
        write_minimal(jail)?;
        jail.set_env("AUTHGATE_SESSION__COOKIE_SECRET", "oops");
        jail.set_env("AUTHGATE_SERVER__MAX_HEADERS", "many");
        jail.set_env("AUTHGATE_OIDC__TIMEOUT", "soon");
        let errors = Config::load(Path::new("gateway.toml")).err().unwrap();
        assert_error(
            &errors,
            "session.cookie_secret",
            "AUTHGATE_SESSION__COOKIE_SECRET",
        );
        assert_error(
            &errors,
            "server.max_headers",
            "AUTHGATE_SERVER__MAX_HEADERS",
        );
        assert_error(
            &errors,
            "oidc.timeout",
            "invalid duration \"soon\": expected number at 0 in environment variable AUTHGATE_OIDC__TIMEOUT",
        );
        Ok(())
    });
}

// === *_file secrets ===

#[test]
fn secrets_from_files_are_trimmed() {
    Jail::expect_with(|jail| {
        jail.create_file("client_secret", &format!("  {CLIENT_SECRET}\n\n"))?;
        jail.create_file(
            "cookie_secrets",
            &format!("\n{SECRET_A}\n\n   \n  {SECRET_B}  \n"),
        )?;
        jail.create_file("redis_url", "redis://:pw@redis:6379\n")?;
        let toml = minimal()
            .replace(&format!("cookie_secrets = [\"{SECRET_A}\"]"), "")
            .replace(
                "[session]\n",
                "[session]\ncookie_secrets_file = \"cookie_secrets\"\nstore = \"redis\"\nredis_url_file = \"redis_url\"\n",
            )
            .replace("[oidc]\n", "[oidc]\nclient_secret_file = \"client_secret\"\n");
        jail.create_file("gateway.toml", &toml)?;
        let c = Config::load(Path::new("gateway.toml")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.oidc.client_secret.as_ref().unwrap().expose(),
            CLIENT_SECRET
        );
        assert_eq!(c.session.cookie_secrets.len(), 2);
        assert_eq!(c.session.cookie_secrets[1].expose().len(), 40);
        let StoreConfig::Redis {
            topology: RedisTopology::Single { url },
            ..
        } = &c.session.store
        else {
            panic!("expected redis")
        };
        assert_eq!(url.expose(), "redis://:pw@redis:6379");
        Ok(())
    });
}

#[test]
fn bad_secret_in_cookie_secrets_file_names_the_file_line() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "cookie_secrets",
            &format!("{SECRET_A}\n\nc2hvcnQgc2VjcmV0\n"),
        )?;
        let toml = minimal().replace(
            &format!("cookie_secrets = [\"{SECRET_A}\"]"),
            "cookie_secrets_file = \"cookie_secrets\"",
        );
        jail.create_file("gateway.toml", &toml)?;
        let errors = Config::load(Path::new("gateway.toml")).err().unwrap();
        assert_error(
            &errors,
            "session.cookie_secrets_file[1]",
            "at least 32 bytes, got 12",
        );
        Ok(())
    });
}

#[test]
fn value_and_file_together_is_an_error() {
    let toml = with("oidc", "client_secret = \"x\"\nclient_secret_file = \"/f\"")
        .replace("[session]\n", "[session]\ncookie_secrets_file = \"/f\"\nredis_url = \"redis://h\"\nredis_url_file = \"/f\"\n");
    let errors = load_err(&toml);
    assert_error(&errors, "oidc.client_secret", "not both");
    assert_error(&errors, "session.cookie_secrets", "not both");
    assert_error(&errors, "session.redis_url", "not both");
}

#[test]
fn missing_secret_files_name_key_and_path() {
    let toml = with("oidc", "client_secret_file = \"/nonexistent/cs\"")
        .replace(&format!("cookie_secrets = [\"{SECRET_A}\"]"), "")
        .replace(
            "[session]\n",
            "[session]\ncookie_secrets_file = \"/nonexistent/ck\"\nredis_url_file = \"/nonexistent/ru\"\n",
        );
    let errors = load_err(&toml);
    assert_error(
        &errors,
        "oidc.client_secret_file",
        "cannot read \"/nonexistent/cs\"",
    );
    assert_error(
        &errors,
        "session.cookie_secrets_file",
        "cannot read \"/nonexistent/ck\"",
    );
    assert_error(
        &errors,
        "session.redis_url_file",
        "cannot read \"/nonexistent/ru\"",
    );
}

// === redaction ===

fn config_with_every_secret() -> Config {
    load_ok(
        &with("oidc", &format!("client_secret = \"{CLIENT_SECRET}\"")).replace(
            "[session]\n",
            "[session]\nstore = \"redis\"\nredis_url = \"redis://:hunter2@redis:6379\"\n",
        ),
    )
}

#[test]
fn redacted_toml_hides_every_secret() {
    let c = config_with_every_secret();
    let out = c.redacted_toml();
    for secret in [CLIENT_SECRET, SECRET_A, "hunter2"] {
        assert!(!out.contains(secret), "{secret} leaked:\n{out}");
    }
    let parsed: toml::Table = toml::from_str(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert_eq!(parsed["oidc"]["client_secret"].as_str(), Some("[redacted]"));
    assert_eq!(
        parsed["session"]["cookie_secrets"][0].as_str(),
        Some("[redacted]")
    );
    assert_eq!(parsed["session"]["redis_url"].as_str(), Some("[redacted]"));
    assert_eq!(parsed["session"]["idle_timeout"].as_str(), Some("8h"));
    assert_eq!(parsed["server"]["shutdown_grace"].as_str(), Some("30s"));
}

#[test]
fn debug_output_hides_every_secret() {
    let debug = format!("{:?}", config_with_every_secret());
    for secret in [CLIENT_SECRET, "hunter2"] {
        assert!(!debug.contains(secret), "{secret} leaked:\n{debug}");
    }
    // The decoded key bytes of SECRET_A are ASCII: check they do not show either.
    assert!(!debug.contains("0123456789abcdef"), "{debug}");
    assert!(debug.contains("[redacted]"));
}

#[test]
fn redacted_toml_loads_again_once_secrets_are_supplied() {
    let toml = format!(
        "{}\n[[route]]\npath = \"/files/[0-9]+\"\nmatch = \"regex\"\nmethods = [\"get\"]\nrequire_claims = {{ tier = [\"a\", \"b\"] }}\npreflight = \"forward\"\n",
        with("headers", "email = \"\"").replace(
            "[server]\n",
            "[server]\nstrip_request_headers = [\"X-A\"]\n"
        )
    );
    let first = load_ok(&toml);
    let out = first.redacted_toml();
    let figment = Figment::from(Toml::string(&out)).merge(EnvOverrides::from_vars([(
        "AUTHGATE_SESSION__COOKIE_SECRETS",
        format!("[{SECRET_A}]"),
    )]));
    let second = Config::from_figment(figment).unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert_eq!(second.redacted_toml(), out);
    assert!(second.headers.email.is_none());
}

// === printout parity ===

/// Every key set (most to a non-default value), with three `[[route]]`s, `[headers.claims]`,
/// `extra_auth_params` and the Redis store. `secrets` are the lines that give the client secret,
/// the cookie secrets and the Redis URL (inline or as `*_file`), inserted at the top of
/// `[oidc]` / `[session]`.
fn every_key(oidc_secret: &str, session_secrets: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:8443"
public_url = "https://app.example.com/base/"
tls_cert_file = "tls.crt"
tls_key_file = "tls.key"
trusted_proxies = ["10.0.0.0/8", "192.168.1.7", "::1"]
shutdown_grace = "5s"
log_format = "json"
metrics_listen = "127.0.0.1:9090"
header_read_timeout = "3s"
tls_handshake_timeout = "4s"
max_header_bytes = 32768
max_headers = 50
strip_request_headers = ["X-Legacy-User", "X_Debug"]
idle_timeout = "90s"
max_connections = 500
forwarded_proto = "https"

[upstream]
url = "https://backend.internal:9000/app"
timeout = "2m"
ca_file = "ca.pem"
max_connections = 32
idle_timeout = "1m 30s"

[oidc]
{oidc_secret}
issuer = "https://tenant.logto.app/oidc"
client_id = "abc"
scopes = ["openid", "email"]
resource = ["https://api.example.com", "https://other.example.com"]
extra_auth_params = {{ prompt = "login", max_age = 300 }}
timeout = "7s"
refresh_timeout = "3s"
token_endpoint_auth = "client_secret_post"
post_logout_redirect_uri = "https://app.example.com/bye"
bearer_audiences = ["aud-1", "aud-2"]
id_token_max_age = "15m"

[session]
{session_secrets}
cookie_name = "sid"
cookie_secure = false
cookie_samesite = "strict"
cookie_domain = "example.com"
idle_timeout = "1h"
absolute_timeout = "1d"
max_sessions = 500
refresh_before_expiry = "30s"
max_token_age = "15m"
store = "redis"
redis_key_prefix = "ag:"
redis_timeout = "250ms"
login_timeout = "5m"
max_pending_logins = 20

[headers]
authorization_bearer = false
user = "X-User"
email = ""
preferred_username = "X-Name"
groups = "X-Groups"
groups_claim = "roles"
[headers.claims]
"X-Tenant" = "tenant_id"
"X-Org" = "org"

[[route]]
path = "/public/"
policy = "public"

[[route]]
path = "/admin"
match = "exact"
methods = ["get", "Post"]
api = true
require_groups = ["admins", "ops"]
require_claims = {{ tier = "gold", region = ["eu", "us"] }}
bearer = "passthrough"
bearer_resource = "https://other.example.com"
preflight = "forward"

[[route]]
path = "/files/[0-9]+"
match = "regex"
policy = "deny"
"#
    )
}

/// Loads `every_key` in a jail holding the TLS, CA and secret files.
fn load_every_key(jail: &mut Jail, oidc_secret: &str, session_secrets: &str) -> Config {
    for (name, contents) in [
        ("tls.crt", "cert"),
        ("tls.key", "key"),
        ("ca.pem", "ca"),
        ("client_secret", CLIENT_SECRET),
        ("cookie_secrets", &format!("{SECRET_A}\n{SECRET_B}\n")),
        ("redis_url", "redis://:hunter2@redis:6379/0"),
    ] {
        jail.create_file(name, contents)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    jail.create_file("every.toml", &every_key(oidc_secret, session_secrets))
        .unwrap_or_else(|e| panic!("{e}"));
    Config::load(Path::new("every.toml")).unwrap_or_else(|e| panic!("{e}"))
}

const INLINE_OIDC_SECRET: &str = "client_secret = \"s3cr3t-client-value\"";
const FILE_OIDC_SECRET: &str = "client_secret_file = \"client_secret\"";
fn inline_session_secrets() -> String {
    format!(
        "cookie_secrets = [\"{SECRET_A}\", \"{SECRET_B}\"]\nredis_url = \"redis://:hunter2@redis:6379/0\""
    )
}
const FILE_SESSION_SECRETS: &str =
    "cookie_secrets_file = \"cookie_secrets\"\nredis_url_file = \"redis_url\"";

/// What `authgate check` printed for `every_key` before the printout was derived from the
/// typed config through `Serialize` (the hand-written `render.rs`, main at d98886e). Compared
/// as parsed TOML: that printout had each section's keys sorted (`toml::Table` is a BTreeMap),
/// the derived one keeps the typed config's field order.
const EVERY_KEY_PRINTOUT: &str = r#"
[server]
forwarded_proto = "https"
allowed_redirect_hosts = []
watch_config = false
header_read_timeout = "3s"
idle_timeout = "1m 30s"
listen = "127.0.0.1:8443"
log_format = "json"
max_connections = 500
max_header_bytes = 32768
max_headers = 50
metrics_listen = "127.0.0.1:9090"
public_url = "https://app.example.com/base"
shutdown_grace = "5s"
strip_request_headers = ["x-legacy-user", "x_debug"]
tls_cert_file = "tls.crt"
tls_handshake_timeout = "4s"
tls_key_file = "tls.key"
trusted_proxies = ["10.0.0.0/8", "192.168.1.7/32", "::1/128"]

[upstream]
ca_file = "ca.pem"
idle_timeout = "1m 30s"
max_connections = 32
timeout = "2m"
url = "https://backend.internal:9000/app"

[oidc]
bearer_audiences = ["aud-1", "aud-2"]
client_id = "abc"
client_secret = "[redacted]"
id_token_max_age = "15m"
issuer = "https://tenant.logto.app/oidc"
post_logout_redirect_uri = "https://app.example.com/bye"
refresh_timeout = "3s"
resource = ["https://api.example.com", "https://other.example.com"]
scopes = ["openid", "email"]
timeout = "7s"
token_endpoint_auth = "client_secret_post"

[oidc.extra_auth_params]
max_age = "300"
prompt = "login"

[session]
absolute_timeout = "1day"
cookie_domain = "example.com"
cookie_name = "sid"
cookie_samesite = "strict"
cookie_secrets = ["[redacted]", "[redacted]"]
cookie_secure = false
idle_timeout = "1h"
login_timeout = "5m"
max_pending_logins = 20
preserve_form_posts = true
max_preserved_body = 65536
max_sessions = 500
max_token_age = "15m"
redis_key_prefix = "ag:"
redis_timeout = "250ms"
redis_url = "[redacted]"
refresh_before_expiry = "30s"
store = "redis"

[headers]
authorization_bearer = false
email = ""
groups = "x-groups"
groups_claim = "roles"
preferred_username = "x-name"
user = "x-user"

[headers.claims]
x-org = "org"
x-tenant = "tenant_id"

[[route]]
api = false
bearer = "off"
match = "prefix"
methods = []
path = "/public/"
policy = "public"
preflight = "authenticate"
preserve_form_posts = true
require_groups = []
name = "/public/"
require_email_domains = []
require_emails = []
require_acr = []
strip_prefix = false

[[route]]
api = true
bearer = "passthrough"
bearer_resource = "https://other.example.com"
match = "exact"
methods = ["GET", "POST"]
path = "/admin"
policy = "authenticated"
preflight = "forward"
preserve_form_posts = true
require_groups = ["admins", "ops"]
name = "/admin"
require_email_domains = []
require_emails = []
require_acr = []
strip_prefix = false

[route.require_claims]
region = ["eu", "us"]
tier = ["gold"]

[[route]]
api = false
bearer = "off"
match = "regex"
methods = []
path = "/files/[0-9]+"
policy = "deny"
preflight = "authenticate"
preserve_form_posts = true
require_groups = []
name = "/files/[0-9]+"
require_email_domains = []
require_emails = []
require_acr = []
strip_prefix = false
"#;

/// Same for the repository's `gateway.toml`, secrets from the environment.
const GATEWAY_TOML_PRINTOUT: &str = r#"
[server]
forwarded_proto = "auto"
allowed_redirect_hosts = []
watch_config = false
header_read_timeout = "10s"
idle_timeout = "1m"
listen = "0.0.0.0:4180"
log_format = "text"
max_connections = 10000
max_header_bytes = 65536
max_headers = 100
public_url = "https://app.example.com/"
shutdown_grace = "30s"
strip_request_headers = []
tls_handshake_timeout = "10s"
trusted_proxies = []

[upstream]
idle_timeout = "1m"
max_connections = 256
timeout = "1m"
url = "http://127.0.0.1:8080/"

[oidc]
bearer_audiences = []
client_id = "authgate-example-client"
client_secret = "[redacted]"
id_token_max_age = "10m"
issuer = "https://tenant.logto.app/oidc"
refresh_timeout = "10s"
resource = []
scopes = ["openid", "profile", "email", "offline_access"]
timeout = "10s"
token_endpoint_auth = "client_secret_basic"

[session]
absolute_timeout = "7days"
cookie_domain = ""
cookie_name = "authgate_session"
cookie_samesite = "lax"
cookie_secrets = ["[redacted]"]
cookie_secure = true
idle_timeout = "8h"
login_timeout = "10m"
max_pending_logins = 10000
preserve_form_posts = true
max_preserved_body = 65536
max_sessions = 1000000
refresh_before_expiry = "1m"
store = "memory"

[headers]
authorization_bearer = true
email = "x-forwarded-email"
groups = "x-forwarded-groups"
groups_claim = "groups"
preferred_username = "x-forwarded-preferred-username"
user = "x-forwarded-user"

[[route]]
api = false
bearer = "off"
match = "prefix"
methods = []
path = "/public/"
policy = "public"
preflight = "authenticate"
preserve_form_posts = true
require_groups = []
name = "/public/"
require_email_domains = []
require_emails = []
require_acr = []
strip_prefix = false
"#;

/// Every `path = value` of a TOML document, one a line, sorted (tables flattened, so a
/// mismatch names the key rather than dumping two whole documents).
fn toml_lines(text: &str) -> Vec<String> {
    fn walk(prefix: &str, value: &toml::Value, out: &mut Vec<String>) {
        match value {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    walk(&format!("{prefix}.{k}"), v, out);
                }
            }
            toml::Value::Array(items)
                if items.iter().all(toml::Value::is_table) && !items.is_empty() =>
            {
                for (i, v) in items.iter().enumerate() {
                    walk(&format!("{prefix}[{i}]"), v, out);
                }
            }
            other => out.push(format!("{prefix} = {other}")),
        }
    }
    let table: toml::Table = toml::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let mut out = Vec::new();
    walk("", &toml::Value::Table(table), &mut out);
    out.sort();
    out
}

fn assert_same_toml(printout: &str, expected: &str) {
    let (got, want) = (toml_lines(printout), toml_lines(expected));
    let missing: Vec<_> = want.iter().filter(|l| !got.contains(l)).collect();
    let extra: Vec<_> = got.iter().filter(|l| !want.contains(l)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing: {missing:#?}\nextra: {extra:#?}\nprintout:\n{printout}"
    );
}

#[test]
fn printout_of_every_key_is_unchanged() {
    Jail::expect_with(|jail| {
        let inline = load_every_key(jail, INLINE_OIDC_SECRET, &inline_session_secrets());
        assert_same_toml(&inline.redacted_toml(), EVERY_KEY_PRINTOUT);
        // Secrets read from files print exactly as inline ones.
        let from_files = load_every_key(jail, FILE_OIDC_SECRET, FILE_SESSION_SECRETS);
        assert_eq!(from_files.redacted_toml(), inline.redacted_toml());
        Ok(())
    });
}

#[test]
fn printout_of_gateway_toml_is_unchanged() {
    Jail::expect_with(|jail| {
        jail.set_env("AUTHGATE_OIDC__CLIENT_SECRET", CLIENT_SECRET);
        jail.set_env("AUTHGATE_SESSION__COOKIE_SECRETS", format!("[{SECRET_A}]"));
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.toml");
        let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_same_toml(&c.redacted_toml(), GATEWAY_TOML_PRINTOUT);
        Ok(())
    });
}

/// Every secret key, given inline, as `*_file` and from the environment: no value, no base64
/// body and no decoded key bytes in the printout; each secret key prints `[redacted]`.
#[test]
fn printout_never_shows_a_secret() {
    Jail::expect_with(|jail| {
        let inline = load_every_key(jail, INLINE_OIDC_SECRET, &inline_session_secrets());
        let from_files = load_every_key(jail, FILE_OIDC_SECRET, FILE_SESSION_SECRETS);
        jail.set_env("AUTHGATE_OIDC__CLIENT_SECRET", CLIENT_SECRET);
        jail.set_env(
            "AUTHGATE_SESSION__COOKIE_SECRETS",
            format!("[{SECRET_A}, {SECRET_B}]"),
        );
        jail.set_env(
            "AUTHGATE_SESSION__REDIS_URL",
            "redis://:hunter2@redis:6379/0",
        );
        let from_env = load_every_key(jail, "", "");
        for c in [inline, from_files, from_env] {
            let out = c.redacted_toml();
            for leak in [
                CLIENT_SECRET,
                SECRET_A,
                SECRET_A.trim_end_matches('='),
                SECRET_B,
                "0123456789abcdef",
                "hunter2",
                "redis://",
            ] {
                assert!(!out.contains(leak), "{leak} leaked:\n{out}");
            }
            let parsed: toml::Table = toml::from_str(&out).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(parsed["oidc"]["client_secret"].as_str(), Some("[redacted]"));
            let cookie = parsed["session"]["cookie_secrets"].as_array().unwrap();
            assert_eq!(cookie.len(), 2, "{out}");
            assert!(
                cookie.iter().all(|s| s.as_str() == Some("[redacted]")),
                "{out}"
            );
            assert_eq!(parsed["session"]["redis_url"].as_str(), Some("[redacted]"));
            for file_key in [
                "client_secret_file",
                "cookie_secrets_file",
                "redis_url_file",
            ] {
                assert!(!out.contains(file_key), "{out}");
            }
        }
        Ok(())
    });
}

/// The printout of every key is itself a valid config: loaded back (secrets supplied again
/// from the environment) it prints the same.
#[test]
fn printout_of_every_key_loads_again() {
    Jail::expect_with(|jail| {
        let first = load_every_key(jail, FILE_OIDC_SECRET, FILE_SESSION_SECRETS);
        let out = first.redacted_toml();
        jail.create_file("printout.toml", &out)?;
        jail.set_env(
            "AUTHGATE_SESSION__COOKIE_SECRETS",
            format!("[{SECRET_A}, {SECRET_B}]"),
        );
        jail.set_env(
            "AUTHGATE_SESSION__REDIS_URL",
            "redis://:hunter2@redis:6379/0",
        );
        let second =
            Config::load(Path::new("printout.toml")).unwrap_or_else(|e| panic!("{e}\n{out}"));
        assert_eq!(second.redacted_toml(), out);
        Ok(())
    });
}

/// The printout stays valid TOML where the typed config holds what TOML cannot say: a count
/// beyond `i64::MAX` (saturated, as an environment value can set it) and two claim headers
/// that differ only in case (one header name: the later one prints).
#[test]
fn printout_is_valid_toml_at_the_edges() {
    let toml = with(
        "headers",
        "[headers.claims]\n\"X-Tenant\" = \"a\"\n\"x-tenant\" = \"b\"",
    );
    let figment = Figment::from(Toml::string(&toml)).merge(EnvOverrides::from_vars([(
        "AUTHGATE_SESSION__MAX_SESSIONS",
        u64::MAX.to_string(),
    )]));
    let c = Config::from_figment(figment).unwrap_or_else(|e| panic!("{e}"));
    let out = c.redacted_toml();
    let parsed: toml::Table = toml::from_str(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert_eq!(
        parsed["session"]["max_sessions"].as_integer(),
        Some(i64::MAX)
    );
    assert_eq!(parsed["headers"]["claims"]["x-tenant"].as_str(), Some("b"));
}
