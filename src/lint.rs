//! What `authgate check` says beyond "valid": files the configuration names that the gateway
//! could not use at start (errors), and settings that are valid but almost certainly not what
//! was meant (warnings).
//!
//! Warnings never change the exit code: each of them has a legitimate (if rare) use.

use std::fmt;

use http::Method;

use crate::config::{Config, HostPattern, PathMatch, RouteConfig, SameSite};
use crate::error::Chain;
use crate::policy::path_matches;

/// One finding, keyed like configuration errors (`route[2].path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

fn finding(key: impl Into<String>, message: impl Into<String>) -> Finding {
    Finding {
        key: key.into(),
        message: message.into(),
    }
}

/// Authorization request parameters the gateway sets itself: one in `extra_auth_params`
/// would be sent twice (providers take either, or refuse the request) or break the flow.
const PROTOCOL_PARAMS: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "response_mode",
    "resource",
    "request",
    "request_uri",
];

/// Methods of RFC 9110, PATCH (RFC 5789) and WebDAV's: anything else in a route is most
/// likely a typo, and the route then never matches.
const KNOWN_METHODS: &[&str] = &[
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "CONNECT",
    "OPTIONS",
    "TRACE",
    "PATCH",
    "PROPFIND",
    "PROPPATCH",
    "MKCOL",
    "COPY",
    "MOVE",
    "LOCK",
    "UNLOCK",
    "REPORT",
    "SEARCH",
    "MKCALENDAR",
];

/// The TLS files the configuration names, read and parsed as the gateway would at start.
pub fn file_errors(config: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Some(files) = &config.server.tls
        && let Err(e) = crate::tls::server_config(&files.cert, &files.key)
    {
        out.push(finding("server.tls_cert_file", Chain(&e).to_string()));
    }
    if let Some(ca) = &config.upstream.ca_file
        && let Err(e) = crate::tls::client_config(Some(ca))
    {
        out.push(finding("upstream.ca_file", Chain(&e).to_string()));
    }
    out
}

/// Settings that are valid but almost certainly a mistake.
pub fn warnings(config: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    for (_, name, oidc) in config.provider_configs() {
        let section = match name {
            Some(name) => format!("providers.{name}"),
            None => "oidc".to_owned(),
        };
        for (key, _) in &oidc.extra_auth_params {
            if PROTOCOL_PARAMS.contains(&key.as_str()) {
                out.push(finding(
                    format!("{section}.extra_auth_params.{key}"),
                    format!(
                        "`{key}` is set by the gateway itself (the login flow owns it); remove it"
                    ),
                ));
            }
        }
    }
    if config.session.cookie_samesite == SameSite::Strict {
        out.push(finding(
            "session.cookie_samesite",
            "\"strict\": browsers withhold the session cookie on the first page after login \
             (that navigation started at the provider, another site), so users land logged \
             out or loop; use \"lax\"",
        ));
    }
    for (i, route) in config.routes.iter().enumerate() {
        for method in &route.methods {
            if !KNOWN_METHODS.contains(&method.as_str().to_ascii_uppercase().as_str()) {
                out.push(finding(
                    format!("route[{i}].methods"),
                    format!("`{method}` is not an HTTP method this route can expect (a typo?)"),
                ));
            }
        }
        if let Some(earlier) = (0..i).find(|&e| shadows(&config.routes[e], route)) {
            out.push(finding(
                format!("route[{i}]"),
                format!(
                    "never matches: every request it would match is taken by route[{earlier}] \
                     (first match wins; put the more specific route first)"
                ),
            ));
        }
    }
    out
}

/// Whether every request `later` matches is matched by `earlier` (decided only where it can
/// be: a regex against a prefix or another regex is not compared, except for the same
/// pattern).
fn shadows(earlier: &RouteConfig, later: &RouteConfig) -> bool {
    hosts_cover(earlier.host.as_ref(), later.host.as_ref())
        && methods_cover(&earlier.methods, &later.methods)
        && match (&earlier.matcher, &later.matcher) {
            // Every path of `later` extends its own path at a segment boundary (or is it):
            // if that path is matched by the prefix, so is every extension.
            (PathMatch::Prefix(_), PathMatch::Prefix(p) | PathMatch::Exact(p)) => {
                path_matches(&earlier.matcher, p)
            }
            (PathMatch::Exact(a), PathMatch::Exact(b)) => a == b,
            (PathMatch::Regex(_), PathMatch::Exact(p)) => path_matches(&earlier.matcher, p),
            (PathMatch::Regex(a), PathMatch::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
}

/// Whether every host `later` matches is matched by `earlier` (none: every host).
fn hosts_cover(earlier: Option<&HostPattern>, later: Option<&HostPattern>) -> bool {
    match (earlier, later) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(e), Some(HostPattern::Exact(host))) => e.matches(host),
        (Some(HostPattern::Subdomains(e)), Some(HostPattern::Subdomains(l))) => {
            l.ends_with(e.as_str())
        }
        (Some(HostPattern::Exact(_)), Some(HostPattern::Subdomains(_))) => false,
    }
}

/// Whether `earlier`'s methods include all of `later`'s (empty: every method).
fn methods_cover(earlier: &[Method], later: &[Method]) -> bool {
    earlier.is_empty()
        || (!later.is_empty()
            && later.iter().all(|m| {
                earlier
                    .iter()
                    .any(|e| e.as_str().eq_ignore_ascii_case(m.as_str()))
            }))
}
