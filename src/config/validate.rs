//! Raw sections -> the typed [`Config`], collecting every problem.
//!
//! Each section is validated on its own (a section that failed to deserialize is skipped, its
//! serde errors already recorded), then the rules that span keys. The typed config is built
//! only when no error at all was found: a half-valid config never starts a server.

use std::net::SocketAddr;

use super::check::{Checker, non_empty};
use super::raw::{RawConfig, RawHeaders, RawOidc, RawServer, RawSession, RawUpstream};
use super::routes::routes;
use super::types::*;
use crate::secret::Secret;

/// Validates every section; `None` when `checker` holds at least one error.
pub(crate) fn validate(raw: &RawConfig, c: &mut Checker) -> Option<Config> {
    let server = raw.server.as_ref().and_then(|s| server(s, c));
    let upstream = raw
        .upstream
        .as_ref()
        .and_then(|u| upstream("upstream", u, c));
    let upstreams = raw.upstreams.as_ref().and_then(|u| upstreams(u, c));
    let oidc = raw.oidc.as_ref().and_then(|o| oidc("oidc", o, c));
    let providers = raw.providers.as_ref().and_then(|p| providers(p, c));
    let session = raw.session.as_ref().and_then(|s| session(s, c));
    let headers = raw.headers.as_ref().and_then(|h| headers(h, c));
    // By provider id: `[oidc]`, then each `[providers.NAME]` (`None` where it failed).
    let provider_names: Option<Vec<super::routes::KnownProvider<'_>>> = (raw.providers.as_ref())
        .map(|p| {
            (p.iter())
                .map(|(name, section)| {
                    (
                        name.as_str(),
                        section.as_ref().map(|s| s.resource.as_slice()),
                    )
                })
                .collect()
        });
    let resources = raw.oidc.as_ref().map(|o| o.resource.as_slice());
    let upstream_names: Option<Vec<&str>> =
        (raw.upstreams.as_ref()).map(|u| u.iter().map(|(name, _)| name.as_str()).collect());
    let known = super::routes::Known {
        resources,
        upstreams: upstream_names.as_deref(),
        providers: provider_names.as_deref(),
    };
    let routes = (raw.routes.as_ref()).and_then(|r| routes(r, &known, c));
    if let (Some(oidc), Some(providers), Some(routes)) = (&oidc, &providers, &routes) {
        passthrough_needs_audiences(oidc, providers, routes, c);
        distinct_clients(oidc, providers, c);
    }
    let config = Config {
        server: server?,
        upstream: upstream?,
        upstreams: upstreams?,
        oidc: oidc?,
        providers: providers?,
        session: session?,
        headers: headers?,
        routes: routes?,
        files_read: {
            let mut files = c.files.clone();
            files.sort();
            files.dedup();
            files
        },
    };
    c.errors.is_empty().then_some(config)
}

// === server ===

fn server(raw: &RawServer, c: &mut Checker) -> Option<ServerConfig> {
    let listen = c.socket_addr("server.listen", &raw.listen);
    let public_url = c
        .required("server.public_url", raw.public_url.as_deref())
        .and_then(|u| public_url(u, c));
    let tls = tls(raw, c);
    let trusted_proxies: Vec<_> = (raw.trusted_proxies.iter().enumerate())
        .map(|(i, p)| c.cidr(&format!("server.trusted_proxies[{i}]"), p))
        .collect();
    let shutdown_grace = c.duration("server.shutdown_grace", &raw.shutdown_grace, false);
    let log_format = c.choice(
        "server.log_format",
        &raw.log_format,
        &[("text", LogFormat::Text), ("json", LogFormat::Json)],
    );
    let metrics_listen = match non_empty(raw.metrics_listen.as_deref()) {
        Some(m) => c.socket_addr("server.metrics_listen", m).map(Some),
        None => Some(None),
    };
    let (admin_listen, admin_token) = admin(raw, c, listen, metrics_listen.flatten());
    let header_read = c.duration("server.header_read_timeout", &raw.header_read_timeout, true);
    let handshake = c.duration(
        "server.tls_handshake_timeout",
        &raw.tls_handshake_timeout,
        true,
    );
    let max_header_bytes = c.positive("server.max_header_bytes", raw.max_header_bytes);
    let max_headers = c.positive("server.max_headers", raw.max_headers);
    let strip: Vec<_> = (raw.strip_request_headers.iter().enumerate())
        .map(|(i, h)| strip_request_header(&format!("server.strip_request_headers[{i}]"), h, c))
        .collect();
    let idle_timeout = c.duration("server.idle_timeout", &raw.idle_timeout, true);
    let max_connections = c.connection_count("server.max_connections", raw.max_connections);
    let forwarded_proto = c.choice(
        "server.forwarded_proto",
        &raw.forwarded_proto,
        &[
            ("auto", ForwardedProto::Auto),
            ("https", ForwardedProto::Https),
            ("http", ForwardedProto::Http),
        ],
    );
    let redirect_hosts: Vec<_> = (raw.allowed_redirect_hosts.iter().enumerate())
        .map(|(i, h)| redirect_host(&format!("server.allowed_redirect_hosts[{i}]"), h, c))
        .collect();
    Some(ServerConfig {
        listen: listen?,
        public_url: public_url?,
        tls: tls?,
        trusted_proxies: trusted_proxies.into_iter().collect::<Option<_>>()?,
        shutdown_grace: shutdown_grace?,
        log_format: log_format?,
        metrics_listen: metrics_listen?,
        admin_listen: admin_listen?,
        admin_token_file: non_empty(raw.admin_token_file.as_deref()).map(str::to_owned),
        admin_token: admin_token?,
        header_read_timeout: header_read?,
        tls_handshake_timeout: handshake?,
        max_header_bytes: max_header_bytes?,
        max_headers: max_headers?,
        strip_request_headers: strip.into_iter().collect::<Option<_>>()?,
        idle_timeout: idle_timeout?,
        max_connections: max_connections?,
        forwarded_proto: forwarded_proto?,
        allowed_redirect_hosts: redirect_hosts.into_iter().collect::<Option<_>>()?,
        watch_config: raw.watch_config,
    })
}

/// Shortest admin token accepted: it is all that guards the admin API.
const MIN_ADMIN_TOKEN: usize = 16;

/// `admin_listen` and `admin_token_file`: both or neither; the admin API never shares a
/// listener with the gateway or the metrics.
#[allow(clippy::type_complexity)]
fn admin(
    raw: &RawServer,
    c: &mut Checker,
    listen: Option<SocketAddr>,
    metrics: Option<SocketAddr>,
) -> (Option<Option<SocketAddr>>, Option<Option<Secret<String>>>) {
    let addr = non_empty(raw.admin_listen.as_deref());
    let file = non_empty(raw.admin_token_file.as_deref());
    match (addr, file) {
        (None, None) => (Some(None), Some(None)),
        (None, Some(_)) => {
            c.error(
                "server.admin_listen",
                "is required when admin_token_file is set",
            );
            (None, None)
        }
        (Some(_), None) => {
            c.error(
                "server.admin_token_file",
                "is required when admin_listen is set",
            );
            (None, None)
        }
        (Some(addr), Some(file)) => {
            let addr = c.socket_addr("server.admin_listen", addr);
            if let Some(a) = addr {
                if Some(a) == listen {
                    c.error("server.admin_listen", "must differ from server.listen");
                } else if Some(a) == metrics {
                    c.error(
                        "server.admin_listen",
                        "must differ from server.metrics_listen",
                    );
                }
            }
            let token = c.secret_file("server.admin_token_file", file);
            let token = token.and_then(|t| {
                if t.len() < MIN_ADMIN_TOKEN || t.chars().any(|ch| ch.is_control() || ch == ' ') {
                    let m = format!(
                        "the token must be at least {MIN_ADMIN_TOKEN} characters, without spaces"
                    );
                    c.error("server.admin_token_file", m);
                    return None;
                }
                Some(Secret::new(t))
            });
            (addr.map(Some), token.map(Some))
        }
    }
}

/// `app.example.com`, or `.example.com` for its subdomains; lowercase, no port, no wildcard.
fn redirect_host(key: &str, raw: &str, c: &mut Checker) -> Option<String> {
    let lower = raw.trim().to_ascii_lowercase();
    let name = lower.strip_prefix('.').unwrap_or(&lower);
    match crate::host::HostPattern::parse(name) {
        Ok(crate::host::HostPattern::Exact(_)) => Some(lower),
        _ => {
            let m = format!(
                "{raw:?} is not a host name (\"app.example.com\", or \".example.com\" for its \
                 subdomains; no scheme, port or \"*\")"
            );
            c.error(key, m);
            None
        }
    }
}

/// A header name to strip from untrusted requests; never one the gateway itself needs to
/// read the request (its `Host`, its framing, the session cookie), in any spelling (names are
/// compared after folding, see `crate::fold`).
fn strip_request_header(key: &str, raw: &str, c: &mut Checker) -> Option<http::HeaderName> {
    let name = c.header_name(key, raw)?;
    let folded = crate::fold::fold_name(name.as_str());
    if ["host", "cookie", "content-length", "transfer-encoding"].contains(&folded.as_str()) {
        c.error(
            key,
            format!("{raw:?} cannot be stripped: the gateway needs it to read the request"),
        );
        return None;
    }
    Some(name)
}

/// The external origin (plus an optional base path), stored without a trailing slash.
fn public_url(raw: &str, c: &mut Checker) -> Option<url::Url> {
    let mut url = c.base_url("server.public_url", raw)?;
    // `url::Url` keeps "/" for a bare origin; only a longer path loses its trailing slash.
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&path);
    Some(url)
}

/// Both TLS files or neither; both must be readable now.
fn tls(raw: &RawServer, c: &mut Checker) -> Option<Option<TlsFiles>> {
    let cert = non_empty(raw.tls_cert_file.as_deref());
    let key = non_empty(raw.tls_key_file.as_deref());
    match (cert, key) {
        (None, None) => Some(None),
        (Some(_), None) => {
            c.error(
                "server.tls_key_file",
                "is required when tls_cert_file is set",
            );
            None
        }
        (None, Some(_)) => {
            c.error(
                "server.tls_cert_file",
                "is required when tls_key_file is set",
            );
            None
        }
        (Some(cert), Some(key)) => {
            let cert = c.readable_file("server.tls_cert_file", cert);
            let key = c.readable_file("server.tls_key_file", key);
            Some(Some(TlsFiles {
                cert: cert?,
                key: key?,
            }))
        }
    }
}

// === upstream ===

/// `[upstream]`, or one `[upstreams.NAME]` (`section` is the key path of either).
fn upstream(section: &str, raw: &RawUpstream, c: &mut Checker) -> Option<UpstreamConfig> {
    let key = |field: &str| format!("{section}.{field}");
    let url = c
        .required(&key("url"), raw.url.as_deref())
        .and_then(|u| c.base_url(&key("url"), u));
    let timeout = c.duration(&key("timeout"), &raw.timeout, true);
    let ca_file = match non_empty(raw.ca_file.as_deref()) {
        Some(path) => c.readable_file(&key("ca_file"), path).map(Some),
        None => Some(None),
    };
    let max_connections = c.connection_count(&key("max_connections"), raw.max_connections);
    let idle_timeout = c.duration(&key("idle_timeout"), &raw.idle_timeout, true);
    Some(UpstreamConfig {
        url: url?,
        timeout: timeout?,
        ca_file: ca_file?,
        max_connections: max_connections?,
        idle_timeout: idle_timeout?,
    })
}

/// `[upstreams.NAME]`: a name is a metrics label and what routes write in `upstream`, so
/// letters, digits, `-` and `_`, and never `default` (the label of `[upstream]`).
fn upstreams(
    raw: &[(String, Option<RawUpstream>)],
    c: &mut Checker,
) -> Option<Vec<(String, UpstreamConfig)>> {
    let checked: Vec<_> = (raw.iter())
        .map(|(name, section)| {
            let key = format!("upstreams.{name}");
            let name_ok = !name.is_empty()
                && name.len() <= 64
                && (name.bytes()).all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !name_ok {
                let m = format!("{name:?} is not an upstream name (letters, digits, - and _)");
                c.error(&key, m);
                return None;
            }
            if name == "default" {
                c.error(
                    &key,
                    "\"default\" is the name of [upstream]: choose another",
                );
                return None;
            }
            let config = upstream(&key, section.as_ref()?, c)?;
            Some((name.clone(), config))
        })
        .collect();
    checked.into_iter().collect()
}

// === oidc ===

fn oidc(section: &str, raw: &RawOidc, c: &mut Checker) -> Option<OidcConfig> {
    let key = |field: &str| format!("{section}.{field}");
    let issuer = c
        .required(&key("issuer"), raw.issuer.as_deref())
        .and_then(|u| c.url(&key("issuer"), u, &["http", "https"], false));
    let client_id = c.required(&key("client_id"), raw.client_id.as_deref());
    let secret = c.inline_or_file(
        &key("client_secret"),
        raw.client_secret.as_deref(),
        raw.client_secret_file.as_deref(),
    );
    let scopes = scopes(&key("scopes"), &raw.scopes, c);
    let timeout = c.duration(&key("timeout"), &raw.timeout, true);
    let refresh_timeout = c.opt_duration(&key("refresh_timeout"), raw.refresh_timeout.as_deref());
    let id_token_max_age = c.duration(&key("id_token_max_age"), &raw.id_token_max_age, true);
    let auth = c.choice(
        &key("token_endpoint_auth"),
        &raw.token_endpoint_auth,
        &[
            ("client_secret_basic", TokenEndpointAuth::ClientSecretBasic),
            ("client_secret_post", TokenEndpointAuth::ClientSecretPost),
        ],
    );
    let post_logout = match non_empty(raw.post_logout_redirect_uri.as_deref()) {
        Some(u) => (c.url(
            &key("post_logout_redirect_uri"),
            u,
            &["http", "https"],
            false,
        ))
        .map(Some),
        None => Some(None),
    };
    let client_id = client_id?.trim().to_owned();
    let timeout = timeout?;
    Some(OidcConfig {
        issuer: issuer?,
        bearer_audiences: raw.bearer_audiences.clone(),
        client_id,
        client_secret: secret?.map(Secret::new),
        scopes: scopes?,
        resource: raw.resource.clone(),
        extra_auth_params: raw.extra_auth_params.clone(),
        timeout,
        refresh_timeout: refresh_timeout?.unwrap_or(timeout),
        token_endpoint_auth: auth?,
        post_logout_redirect_uri: post_logout?,
        id_token_max_age: id_token_max_age?,
    })
}

/// OpenID Connect Core 1.0 section 3.1.2.1: without `openid` it is plain OAuth 2.0.
fn scopes(key: &str, raw: &[String], c: &mut Checker) -> Option<Vec<String>> {
    if !raw.iter().any(|s| s == "openid") {
        c.error(key, "must include \"openid\"");
        return None;
    }
    Some(raw.to_vec())
}

/// Bearer passthrough accepts the audiences the configuration names,
/// never a default. The obvious default, the client id, is the audience of the ID tokens
/// this client gets, so an ID token (which reaches the browser) would pass as a bearer token.
/// Per provider: the passthrough routes of a provider need its `bearer_audiences`.
fn passthrough_needs_audiences(
    oidc: &OidcConfig,
    providers: &[(String, OidcConfig)],
    routes: &[RouteConfig],
    c: &mut Checker,
) {
    let all = std::iter::once(("oidc".to_owned(), oidc))
        .chain(providers.iter().map(|(n, p)| (format!("providers.{n}"), p)));
    for (id, (section, cfg)) in all.enumerate() {
        let key = format!("{section}.bearer_audiences");
        if !cfg.bearer_audiences.iter().all(|a| !a.trim().is_empty()) {
            c.error(&key, "must not hold an empty audience");
        }
        let passthrough = routes
            .iter()
            .position(|r| r.bearer == BearerMode::Passthrough && r.provider_id.index() == id);
        if let (Some(i), true) = (passthrough, cfg.bearer_audiences.is_empty()) {
            let m = format!(
                "must be set when a route has bearer = \"passthrough\" (route[{i}]): the audiences \
                 of the access tokens that route accepts (the client id would also accept ID tokens)"
            );
            c.error(&key, m);
        }
    }
}

/// Two providers with the same issuer and client id would be one client under two names: a
/// login's state, a session or a logout token could not be told apart between them.
fn distinct_clients(oidc: &OidcConfig, providers: &[(String, OidcConfig)], c: &mut Checker) {
    let mut seen: Vec<(&str, &str, String)> = vec![(
        oidc.issuer.as_str().trim_end_matches('/'),
        oidc.client_id.as_str(),
        "[oidc]".to_owned(),
    )];
    for (name, p) in providers {
        let issuer = p.issuer.as_str().trim_end_matches('/');
        if let Some((_, _, other)) = seen
            .iter()
            .find(|(i, id, _)| *i == issuer && *id == p.client_id)
        {
            c.error(
                format!("providers.{name}"),
                format!(
                    "has the issuer and client_id of {other}: each provider must be another client"
                ),
            );
        }
        seen.push((issuer, p.client_id.as_str(), format!("[providers.{name}]")));
    }
}

/// `[providers.NAME]`: a name is what routes write in `provider`, part of a callback path
/// (`/oauth2/callback/NAME`) and a metrics label: 1 to 32 of `a-z`, `0-9`, `-`, `_`, and never
/// `default` (the label of `[oidc]`).
fn providers(
    raw: &[(String, Option<RawOidc>)],
    c: &mut Checker,
) -> Option<Vec<(String, OidcConfig)>> {
    if raw.len() > MAX_PROVIDERS {
        c.error("providers", format!("at most {MAX_PROVIDERS} providers"));
        return None;
    }
    let checked: Vec<_> = (raw.iter())
        .map(|(name, section)| {
            let key = format!("providers.{name}");
            if !provider_name_ok(name) {
                let m = format!("{name:?} is not a provider name (1 to 32 of a-z, 0-9, - and _)");
                c.error(&key, m);
                return None;
            }
            if name == "default" {
                c.error(&key, "\"default\" is the name of [oidc]: choose another");
                return None;
            }
            let config = oidc(&key, section.as_ref()?, c)?;
            Some((name.clone(), config))
        })
        .collect();
    checked.into_iter().collect()
}

/// 1 to 32 bytes of `a-z`, `0-9`, `-`, `_`.
pub(crate) fn provider_name_ok(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && (name.bytes())
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

// === session ===

fn session(raw: &RawSession, c: &mut Checker) -> Option<SessionConfig> {
    let cookie_name = cookie_name(&raw.cookie_name, c);
    let cookie_secrets = cookie_secrets(raw, c);
    let samesite = c.choice(
        "session.cookie_samesite",
        &raw.cookie_samesite,
        &[
            ("lax", SameSite::Lax),
            ("strict", SameSite::Strict),
            ("none", SameSite::None),
        ],
    );
    if samesite == Some(SameSite::None) && !raw.cookie_secure {
        // Browsers drop `SameSite=None` cookies without `Secure`: logins would silently loop.
        c.error(
            "session.cookie_samesite",
            "\"none\" requires cookie_secure = true",
        );
    }
    let idle = c.duration("session.idle_timeout", &raw.idle_timeout, true);
    let absolute = c.duration("session.absolute_timeout", &raw.absolute_timeout, true);
    let refresh = c.duration(
        "session.refresh_before_expiry",
        &raw.refresh_before_expiry,
        false,
    );
    timeouts_agree(idle, absolute, refresh, c);
    let max_token_age = c.opt_duration("session.max_token_age", raw.max_token_age.as_deref());
    let store = store(raw, c);
    let snapshot_file = non_empty(raw.snapshot_file.as_deref()).map(std::path::PathBuf::from);
    if snapshot_file.is_some() && matches!(store, Some(StoreConfig::Redis { .. })) {
        // Sessions in Redis survive a restart already; a second copy would only go stale.
        let m = "is only for session.store = \"memory\": with session.store = \"redis\" the sessions survive a restart in Redis";
        c.error("session.snapshot_file", m);
    }
    let login_timeout = c.duration("session.login_timeout", &raw.login_timeout, true);
    let max_sessions = c.positive("session.max_sessions", raw.max_sessions);
    let max_pending = c.positive("session.max_pending_logins", raw.max_pending_logins);
    let max_preserved_body = max_preserved_body(raw.max_preserved_body, c);
    Some(SessionConfig {
        cookie_name: cookie_name?,
        cookie_secrets: cookie_secrets?,
        cookie_secure: raw.cookie_secure,
        cookie_samesite: samesite?,
        cookie_domain: non_empty(Some(&raw.cookie_domain)).map(|d| d.trim().to_owned()),
        idle_timeout: idle?,
        absolute_timeout: absolute?,
        max_sessions: max_sessions?,
        refresh_before_expiry: refresh?,
        max_token_age: max_token_age?,
        store: store?,
        snapshot_file,
        login_timeout: login_timeout?,
        max_pending_logins: max_pending?,
        preserve_form_posts: raw.preserve_form_posts,
        max_preserved_body: max_preserved_body?,
    })
}

/// Largest form body kept across a login: 1 byte to 1 MiB (every kept body is held in
/// memory or Redis until its login ends).
fn max_preserved_body(n: u64, c: &mut Checker) -> Option<u64> {
    const MAX: u64 = 1 << 20;
    if n == 0 || n > MAX {
        c.error(
            "session.max_preserved_body",
            format!("must be between 1 and {MAX} bytes"),
        );
        return None;
    }
    Some(n)
}

/// RFC 6265 section 4.1.1: a cookie name is an RFC 2616 token.
fn cookie_name(raw: &str, c: &mut Checker) -> Option<String> {
    let is_token = !raw.is_empty() && http::HeaderName::from_bytes(raw.as_bytes()).is_ok();
    if !is_token {
        c.error(
            "session.cookie_name",
            format!("invalid cookie name {raw:?}"),
        );
        return None;
    }
    Some(raw.to_owned())
}

/// Inline list or `cookie_secrets_file` (one a line, blank lines ignored); at least one.
fn cookie_secrets(raw: &RawSession, c: &mut Checker) -> Option<Vec<Secret<Vec<u8>>>> {
    let file = non_empty(raw.cookie_secrets_file.as_deref());
    let (key, lines) = match (raw.cookie_secrets.is_empty(), file) {
        (false, Some(_)) => {
            let m = "set either session.cookie_secrets or session.cookie_secrets_file, not both";
            c.error("session.cookie_secrets", m);
            return None;
        }
        (true, Some(path)) => {
            let contents = c.secret_file("session.cookie_secrets_file", path)?;
            let lines: Vec<String> = contents.lines().map(str::to_owned).collect();
            ("session.cookie_secrets_file", lines)
        }
        (false, None) => ("session.cookie_secrets", raw.cookie_secrets.clone()),
        (true, None) => {
            let m = "at least one secret is required (or session.cookie_secrets_file)";
            c.error("session.cookie_secrets", m);
            return None;
        }
    };
    let secrets: Vec<_> = (lines.iter().map(|l| l.trim()))
        .filter(|l| !l.is_empty())
        .enumerate()
        .map(|(i, s)| c.cookie_secret(&format!("{key}[{i}]"), s))
        .collect();
    secrets.into_iter().collect()
}

fn timeouts_agree(
    idle: Option<std::time::Duration>,
    absolute: Option<std::time::Duration>,
    refresh: Option<std::time::Duration>,
    c: &mut Checker,
) {
    if let (Some(idle), Some(absolute)) = (idle, absolute)
        && absolute < idle
    {
        c.error(
            "session.absolute_timeout",
            "must be at least session.idle_timeout",
        );
    }
    // A refresh window as long as the session would refresh on every request.
    if let (Some(refresh), Some(absolute)) = (refresh, absolute)
        && refresh >= absolute
    {
        let m = "must be less than session.absolute_timeout";
        c.error("session.refresh_before_expiry", m);
    }
}

/// `memory`, or `redis` with exactly one of a `redis://`/`rediss://` URL, a Sentinel list (+ the
/// master's name) or a Cluster seed list (each inline or as a file; a URL may hold a password,
/// so no message repeats it).
fn store(raw: &RawSession, c: &mut Checker) -> Option<StoreConfig> {
    let kind = c.choice(
        "session.store",
        &raw.store,
        &[("memory", false), ("redis", true)],
    );
    let url = c.inline_or_file(
        "session.redis_url",
        raw.redis_url.as_deref(),
        raw.redis_url_file.as_deref(),
    );
    let sentinels = redis_urls(
        "session.redis_sentinels",
        &raw.redis_sentinels,
        raw.redis_sentinels_file.as_deref(),
        c,
    );
    let nodes = redis_urls(
        "session.redis_cluster_nodes",
        &raw.redis_cluster_nodes,
        raw.redis_cluster_nodes_file.as_deref(),
        c,
    );
    let master = non_empty(raw.redis_sentinel_master.as_deref()).map(|m| m.trim().to_owned());
    let timeout = c.duration("session.redis_timeout", &raw.redis_timeout, true);
    let url = match url? {
        Some(u) => Some(c.url("session.redis_url", &u, &["redis", "rediss"], true)?),
        None => None,
    };
    let (sentinels, nodes) = (sentinels?, nodes?);
    if !kind? {
        return Some(StoreConfig::Memory);
    }
    let set: Vec<&str> = [
        (url.is_some(), "session.redis_url"),
        (!sentinels.is_empty(), "session.redis_sentinels"),
        (!nodes.is_empty(), "session.redis_cluster_nodes"),
    ]
    .into_iter()
    .filter_map(|(set, key)| set.then_some(key))
    .collect();
    if set.len() > 1 {
        let m = format!(
            "set only one of {} (one Redis, Sentinel or Cluster)",
            set.join(", ")
        );
        c.error(set[0], m);
        return None;
    }
    if master.is_some() && sentinels.is_empty() {
        let m = "is only used with session.redis_sentinels";
        c.error("session.redis_sentinel_master", m);
        return None;
    }
    let topology = if let Some(url) = url {
        RedisTopology::Single {
            url: Secret::new(url.to_string()),
        }
    } else if !sentinels.is_empty() {
        let Some(master) = master else {
            let m = "is required with session.redis_sentinels (the name the Sentinels monitor)";
            c.error("session.redis_sentinel_master", m);
            return None;
        };
        RedisTopology::Sentinel { sentinels, master }
    } else if !nodes.is_empty() {
        if raw.redis_key_prefix.contains(['{', '}']) {
            let m = "must not contain { or } with session.redis_cluster_nodes (hash tags)";
            c.error("session.redis_key_prefix", m);
            return None;
        }
        RedisTopology::Cluster { nodes }
    } else {
        let m = "is required when session.store = \"redis\" (or session.redis_url_file, \
                 session.redis_sentinels, session.redis_cluster_nodes)";
        c.error("session.redis_url", m);
        return None;
    };
    Some(StoreConfig::Redis {
        topology,
        key_prefix: raw.redis_key_prefix.clone(),
        timeout: timeout?,
    })
}

/// A list of `redis://`/`rediss://` URLs, inline or `<key>_file` (one a line, blank lines
/// ignored); empty when neither is set.
fn redis_urls(
    key: &str,
    inline: &[String],
    file: Option<&str>,
    c: &mut Checker,
) -> Option<Vec<Secret<String>>> {
    let (key, lines) = match (inline.is_empty(), non_empty(file)) {
        (false, Some(_)) => {
            c.error(key, format!("set either {key} or {key}_file, not both"));
            return None;
        }
        (true, Some(path)) => {
            let file_key = format!("{key}_file");
            let contents = c.secret_file(&file_key, path)?;
            (file_key, contents.lines().map(str::to_owned).collect())
        }
        (_, None) => (key.to_owned(), inline.to_vec()),
    };
    let urls: Vec<Option<Secret<String>>> = (lines.iter().map(|l| l.trim()))
        .filter(|l| !l.is_empty())
        .enumerate()
        .map(|(i, line)| {
            let url = c.url(&format!("{key}[{i}]"), line, &["redis", "rediss"], true)?;
            Some(Secret::new(url.to_string()))
        })
        .collect();
    urls.into_iter().collect()
}

// === headers ===

fn headers(raw: &RawHeaders, c: &mut Checker) -> Option<HeadersConfig> {
    let user = optional_header("headers.user", &raw.user, c);
    let email = optional_header("headers.email", &raw.email, c);
    let username = optional_header("headers.preferred_username", &raw.preferred_username, c);
    let groups = optional_header("headers.groups", &raw.groups, c);
    if raw.groups_claim.trim().is_empty() {
        c.error("headers.groups_claim", "must not be empty");
    }
    let claims: Vec<_> = (raw.claims.iter())
        .map(|(header, claim)| {
            let key = format!("headers.claims.{header:?}");
            let name = c.header_name(&key, header);
            if claim.trim().is_empty() {
                c.error(&key, "claim name must not be empty");
                return None;
            }
            Some((name?, claim.trim().to_owned()))
        })
        .collect();
    Some(HeadersConfig {
        authorization_bearer: raw.authorization_bearer,
        user: user?,
        email: email?,
        preferred_username: username?,
        groups: groups?,
        groups_claim: non_empty(Some(&raw.groups_claim))?.trim().to_owned(),
        claims: claims.into_iter().collect::<Option<_>>()?,
    })
}

/// An empty string disables the header (`Some(None)`).
fn optional_header(key: &str, raw: &str, c: &mut Checker) -> Option<Option<http::HeaderName>> {
    match non_empty(Some(raw)) {
        None => Some(None),
        Some(name) => c.header_name(key, name).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_url_loses_its_trailing_slash() {
        let mut c = Checker::default();
        let url = public_url("https://app.example.com/base/", &mut c).unwrap();
        assert_eq!(url.as_str(), "https://app.example.com/base");
        let url = public_url("https://app.example.com", &mut c).unwrap();
        assert_eq!(url.as_str(), "https://app.example.com/");
        assert!(c.errors.is_empty());
    }

    #[test]
    fn scopes_need_openid() {
        let mut c = Checker::default();
        assert!(scopes("oidc.scopes", &["email".to_owned()], &mut c).is_none());
        assert_eq!(
            c.errors[0].to_string(),
            "oidc.scopes: must include \"openid\""
        );
    }
}
