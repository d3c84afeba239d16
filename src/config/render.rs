//! The effective configuration as TOML, secrets redacted (`authgate check`).
//!
//! Written from the typed config, not the raw one, so the output shows what the gateway will
//! actually use (defaults filled in, `*_file` secrets resolved and hidden). Keys are the file's
//! keys, so the output reads like a config file; durations print in humantime (`"8h"`).
//! Every secret prints as [`REDACTED`]: the client secret, each cookie secret and the Redis URL
//! (it may hold a password).

use std::time::Duration;

use toml::{Table, Value};

use super::types::*;
use crate::secret::REDACTED;

/// The whole config, sections in file order, then `[[route]]`s.
pub(crate) fn redacted_toml(config: &Config) -> String {
    let sections = [
        ("server", Value::Table(server(&config.server))),
        ("upstream", Value::Table(upstream(&config.upstream))),
        ("oidc", Value::Table(oidc(&config.oidc))),
        ("session", Value::Table(session(&config.session))),
        ("headers", Value::Table(headers(&config.headers))),
        (
            "route",
            Value::Array(config.routes.iter().map(route).collect()),
        ),
    ];
    let mut out = String::new();
    for (name, value) in sections {
        if matches!(&value, Value::Array(a) if a.is_empty()) {
            continue;
        }
        // One table per call keeps the sections in this order (`toml::Table` sorts its keys).
        let mut wrapper = Table::new();
        wrapper.insert(name.to_owned(), value);
        match toml::to_string(&wrapper) {
            Ok(text) => out.push_str(&text),
            Err(e) => out.push_str(&format!("# {name}: cannot render: {e}\n")),
        }
        out.push('\n');
    }
    out
}

fn server(s: &ServerConfig) -> Table {
    let mut t = Table::new();
    t.insert("listen".into(), s.listen.to_string().into());
    t.insert("public_url".into(), s.public_url.to_string().into());
    if let Some(tls) = &s.tls {
        t.insert(
            "tls_cert_file".into(),
            tls.cert.display().to_string().into(),
        );
        t.insert("tls_key_file".into(), tls.key.display().to_string().into());
    }
    t.insert("trusted_proxies".into(), strings(s.trusted_proxies.iter()));
    t.insert("shutdown_grace".into(), duration(s.shutdown_grace));
    let log_format = match s.log_format {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    };
    t.insert("log_format".into(), log_format.into());
    if let Some(m) = s.metrics_listen {
        t.insert("metrics_listen".into(), m.to_string().into());
    }
    t.insert(
        "header_read_timeout".into(),
        duration(s.header_read_timeout),
    );
    t.insert(
        "tls_handshake_timeout".into(),
        duration(s.tls_handshake_timeout),
    );
    t.insert("max_header_bytes".into(), count(s.max_header_bytes as u64));
    t.insert("max_headers".into(), count(s.max_headers as u64));
    t.insert(
        "strip_request_headers".into(),
        strings(s.strip_request_headers.iter().map(http::HeaderName::as_str)),
    );
    t.insert("idle_timeout".into(), duration(s.idle_timeout));
    t.insert("max_connections".into(), count(s.max_connections as u64));
    t
}

fn upstream(u: &UpstreamConfig) -> Table {
    let mut t = Table::new();
    t.insert("url".into(), u.url.to_string().into());
    t.insert("timeout".into(), duration(u.timeout));
    if let Some(ca) = &u.ca_file {
        t.insert("ca_file".into(), ca.display().to_string().into());
    }
    t.insert("max_connections".into(), count(u.max_connections as u64));
    t.insert("idle_timeout".into(), duration(u.idle_timeout));
    t
}

fn oidc(o: &OidcConfig) -> Table {
    let mut t = Table::new();
    t.insert("issuer".into(), o.issuer.to_string().into());
    t.insert("client_id".into(), o.client_id.clone().into());
    if o.client_secret.is_some() {
        t.insert("client_secret".into(), REDACTED.into());
    }
    t.insert("scopes".into(), strings(o.scopes.iter()));
    t.insert("resource".into(), strings(o.resource.iter()));
    insert_table(&mut t, "extra_auth_params", pairs(&o.extra_auth_params));
    t.insert("timeout".into(), duration(o.timeout));
    t.insert("refresh_timeout".into(), duration(o.refresh_timeout));
    let auth = match o.token_endpoint_auth {
        TokenEndpointAuth::ClientSecretBasic => "client_secret_basic",
        TokenEndpointAuth::ClientSecretPost => "client_secret_post",
    };
    t.insert("token_endpoint_auth".into(), auth.into());
    if let Some(u) = &o.post_logout_redirect_uri {
        t.insert("post_logout_redirect_uri".into(), u.to_string().into());
    }
    t.insert(
        "bearer_audiences".into(),
        strings(o.bearer_audiences.iter()),
    );
    t
}

fn session(s: &SessionConfig) -> Table {
    let mut t = Table::new();
    t.insert("cookie_name".into(), s.cookie_name.clone().into());
    let secrets = s.cookie_secrets.iter().map(|_| REDACTED);
    t.insert("cookie_secrets".into(), strings(secrets));
    t.insert("cookie_secure".into(), s.cookie_secure.into());
    let samesite = match s.cookie_samesite {
        SameSite::Lax => "lax",
        SameSite::Strict => "strict",
        SameSite::None => "none",
    };
    t.insert("cookie_samesite".into(), samesite.into());
    let domain = s.cookie_domain.clone().unwrap_or_default();
    t.insert("cookie_domain".into(), domain.into());
    t.insert("idle_timeout".into(), duration(s.idle_timeout));
    t.insert("absolute_timeout".into(), duration(s.absolute_timeout));
    t.insert("max_sessions".into(), count(s.max_sessions));
    t.insert(
        "refresh_before_expiry".into(),
        duration(s.refresh_before_expiry),
    );
    if let Some(age) = s.max_token_age {
        t.insert("max_token_age".into(), duration(age));
    }
    match &s.store {
        StoreConfig::Memory => {
            t.insert("store".into(), "memory".into());
        }
        StoreConfig::Redis {
            key_prefix,
            timeout,
            ..
        } => {
            t.insert("store".into(), "redis".into());
            t.insert("redis_url".into(), REDACTED.into());
            t.insert("redis_key_prefix".into(), key_prefix.clone().into());
            t.insert("redis_timeout".into(), duration(*timeout));
        }
    }
    t.insert("login_timeout".into(), duration(s.login_timeout));
    t.insert("max_pending_logins".into(), count(s.max_pending_logins));
    t
}

fn headers(h: &HeadersConfig) -> Table {
    let mut t = Table::new();
    t.insert("authorization_bearer".into(), h.authorization_bearer.into());
    // A disabled header is the empty string, as in the file.
    let name = |n: &Option<http::HeaderName>| -> Value {
        n.as_ref().map(|n| n.as_str()).unwrap_or("").into()
    };
    t.insert("user".into(), name(&h.user));
    t.insert("email".into(), name(&h.email));
    t.insert("preferred_username".into(), name(&h.preferred_username));
    t.insert("groups".into(), name(&h.groups));
    t.insert("groups_claim".into(), h.groups_claim.clone().into());
    let claims: Vec<(String, String)> = (h.claims.iter())
        .map(|(header, claim)| (header.as_str().to_owned(), claim.clone()))
        .collect();
    insert_table(&mut t, "claims", pairs(&claims));
    t
}

fn route(r: &RouteConfig) -> Value {
    let mut t = Table::new();
    let (kind, path) = match &r.matcher {
        PathMatch::Prefix(p) => ("prefix", p.clone()),
        PathMatch::Exact(p) => ("exact", p.clone()),
        // Print the pattern as written, without the anchors added at compile time.
        PathMatch::Regex(re) => ("regex", unanchored(re.as_str())),
    };
    t.insert("path".into(), path.into());
    t.insert("match".into(), kind.into());
    t.insert("methods".into(), strings(r.methods.iter()));
    let policy = match r.policy {
        Policy::Public => "public",
        Policy::Authenticated => "authenticated",
        Policy::Deny => "deny",
    };
    t.insert("policy".into(), policy.into());
    t.insert("api".into(), r.api.into());
    t.insert("require_groups".into(), strings(r.require_groups.iter()));
    let claims: Table = (r.require_claims.iter())
        .map(|(claim, values)| (claim.clone(), strings(values.iter())))
        .collect();
    insert_table(&mut t, "require_claims", claims);
    let bearer = match r.bearer {
        BearerMode::Off => "off",
        BearerMode::Passthrough => "passthrough",
    };
    t.insert("bearer".into(), bearer.into());
    if let Some(res) = &r.bearer_resource {
        t.insert("bearer_resource".into(), res.clone().into());
    }
    let preflight = match r.preflight {
        Preflight::Authenticate => "authenticate",
        Preflight::Forward => "forward",
    };
    t.insert("preflight".into(), preflight.into());
    Value::Table(t)
}

fn unanchored(compiled: &str) -> String {
    (compiled.strip_prefix("^(?:"))
        .and_then(|s| s.strip_suffix(")$"))
        .unwrap_or(compiled)
        .to_owned()
}

fn duration(d: Duration) -> Value {
    humantime::format_duration(d).to_string().into()
}

/// TOML integers are i64; every count here is far below `i64::MAX`, saturate to be total.
fn count(n: u64) -> Value {
    Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

fn strings<T: ToString>(items: impl Iterator<Item = T>) -> Value {
    Value::Array(items.map(|i| Value::String(i.to_string())).collect())
}

fn pairs(items: &[(String, String)]) -> Table {
    (items.iter())
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect()
}

/// An empty sub-table would print as a bare `[section.name]` header: leave it out (empty is
/// the default anyway).
fn insert_table(t: &mut Table, key: &str, table: Table) {
    if !table.is_empty() {
        t.insert(key.to_owned(), Value::Table(table));
    }
}
