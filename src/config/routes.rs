//! `[[route]]` validation: raw routes -> [`RouteConfig`]s.
//!
//! Split from `validate.rs` only for size; the same rules apply: every error recorded under
//! its key (`route[2].path`), nothing built unless the whole route is valid.

use http::Method;
use regex::Regex;

use super::check::{Checker, non_empty};
use super::raw::RawRoute;
use super::types::{
    BearerMode, HostPattern, PathMatch, Policy, Preflight, ProviderId, RouteConfig,
};

/// Metrics labels no route may take: the route of no match, and the built-in endpoints'.
const RESERVED_NAMES: &[&str] = &["default"];

/// A `[providers.NAME]` as routes see it: its name, and its `resource` (`None` where its
/// section failed).
pub(crate) type KnownProvider<'a> = (&'a str, Option<&'a [String]>);

/// What a route may name, each `None` when its section failed (a route's key naming it is
/// then not judged: the section's own errors are reported).
pub(crate) struct Known<'a> {
    /// `oidc.resource`.
    pub resources: Option<&'a [String]>,
    /// The names of `[upstreams.NAME]`.
    pub upstreams: Option<&'a [&'a str]>,
    /// The names of `[providers.NAME]` in name order, each with its `resource` (`None` where
    /// that provider's section failed).
    pub providers: Option<&'a [KnownProvider<'a>]>,
}

pub(crate) fn routes(
    raw: &[Option<RawRoute>],
    known: &Known<'_>,
    c: &mut Checker,
) -> Option<Vec<RouteConfig>> {
    let routes: Vec<_> = (raw.iter().enumerate())
        .map(|(i, r)| r.as_ref().and_then(|r| route(i, r, known, c)))
        .collect();
    let mut routes: Vec<RouteConfig> = routes.into_iter().collect::<Option<_>>()?;
    name_routes(raw, &mut routes, c)?;
    Some(routes)
}

/// Every route's metrics label: a configured `name` must be unique (and not a reserved
/// label); a route without one is named after its host and path (`billing.example.com/api/`,
/// `/api/`), with `#<index>` appended when an earlier route holds that name already.
fn name_routes(
    raw: &[Option<RawRoute>],
    routes: &mut [RouteConfig],
    c: &mut Checker,
) -> Option<()> {
    let mut taken: Vec<(String, usize)> = Vec::new();
    let mut ok = true;
    for (i, raw) in raw.iter().enumerate() {
        let Some(name) = raw.as_ref().and_then(|r| r.name.as_deref()) else {
            continue;
        };
        let key = format!("route[{i}].name");
        let name = name.trim();
        let printable = (name.bytes()).all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
        if name.is_empty() || name.len() > 128 || !printable {
            c.error(
                key,
                "must be 1 to 128 visible ASCII characters, without \" or \\",
            );
            ok = false;
        } else if RESERVED_NAMES.contains(&name) || name.starts_with("/oauth2/") {
            c.error(
                key,
                format!("{name:?} is reserved for the gateway's own series"),
            );
            ok = false;
        } else if let Some((_, first)) = taken.iter().find(|(n, _)| n == name) {
            c.error(
                key,
                format!("{name:?} is already the name of route[{first}]"),
            );
            ok = false;
        } else {
            taken.push((name.to_owned(), i));
            routes[i].name = name.to_owned();
        }
    }
    if !ok {
        return None;
    }
    for (i, route) in routes.iter_mut().enumerate() {
        if !route.name.is_empty() {
            continue;
        }
        let path = match &route.matcher {
            PathMatch::Prefix(p) | PathMatch::Exact(p) => p.clone(),
            PathMatch::Regex(re) => super::types::unanchored(re.as_str()).to_owned(),
        };
        let base = match &route.host {
            Some(host) => format!("{host}{path}"),
            None => path,
        };
        let mut name = base.clone();
        if taken.iter().any(|(n, _)| *n == name) || RESERVED_NAMES.contains(&name.as_str()) {
            name = format!("{base}#{i}");
        }
        taken.push((name.clone(), i));
        route.name = name;
    }
    Some(())
}

fn route(i: usize, raw: &RawRoute, known: &Known<'_>, c: &mut Checker) -> Option<RouteConfig> {
    let key = |field: &str| format!("route[{i}].{field}");
    let matcher = route_matcher(raw, &key, c);
    let host = match non_empty(raw.host.as_deref()) {
        Some(h) => c.check(&key("host"), HostPattern::parse(h)).map(Some),
        None => Some(None),
    };
    let upstream = route_upstream(raw, known.upstreams, &key("upstream"), c);
    let provider = route_provider(raw, known.providers, &key("provider"), c);
    // The route's provider's resources: `bearer_resource` names one of them.
    let resources = match &provider {
        Some((Some(_), id)) => (known.providers)
            .and_then(|p| p.get(id.index().wrapping_sub(1)))
            .and_then(|(_, r)| *r),
        _ => known.resources,
    };
    if raw.strip_prefix
        && let Some(kind) = matcher.as_ref().and_then(|m| match m {
            PathMatch::Prefix(_) => None,
            PathMatch::Exact(_) => Some("exact"),
            PathMatch::Regex(_) => Some("regex"),
        })
    {
        let m = format!("applies to prefix routes only (this route has match = \"{kind}\")");
        c.error(key("strip_prefix"), m);
    }
    let email_domains: Vec<_> = (raw.require_email_domains.iter().enumerate())
        .map(|(j, d)| email_domain(&key(&format!("require_email_domains[{j}]")), d, c))
        .collect();
    let emails: Vec<_> = (raw.require_emails.iter().enumerate())
        .map(|(j, e)| email_address(&key(&format!("require_emails[{j}]")), e, c))
        .collect();
    let acr: Vec<_> = (raw.require_acr.iter().enumerate())
        .map(|(j, a)| acr_value(&key(&format!("require_acr[{j}]")), a, c))
        .collect();
    let max_auth_age = c.opt_duration(&key("max_auth_age"), raw.max_auth_age.as_deref());
    let methods: Vec<_> = (raw.methods.iter().enumerate())
        .map(|(j, m)| method(&format!("route[{i}].methods[{j}]"), m, c))
        .collect();
    let policy = c.choice(
        &key("policy"),
        &raw.policy,
        &[
            ("public", Policy::Public),
            ("authenticated", Policy::Authenticated),
            ("deny", Policy::Deny),
        ],
    );
    let claims = require_claims(raw, &key, c);
    let bearer = c.choice(
        &key("bearer"),
        &raw.bearer,
        &[
            ("off", BearerMode::Off),
            ("passthrough", BearerMode::Passthrough),
        ],
    );
    let bearer_resource = bearer_resource(raw, resources, &key("bearer_resource"), c);
    let preflight = c.choice(
        &key("preflight"),
        &raw.preflight,
        &[
            ("authenticate", Preflight::Authenticate),
            ("forward", Preflight::Forward),
        ],
    );
    let strip_ok = !raw.strip_prefix || matches!(matcher, Some(PathMatch::Prefix(_)));
    Some(RouteConfig {
        name: String::new(),
        host: host?,
        upstream: upstream?,
        provider: provider.clone()?.0,
        provider_id: provider?.1,
        strip_prefix: strip_ok.then_some(raw.strip_prefix)?,
        require_email_domains: email_domains.into_iter().collect::<Option<_>>()?,
        require_emails: emails.into_iter().collect::<Option<_>>()?,
        require_acr: acr.into_iter().collect::<Option<_>>()?,
        max_auth_age: max_auth_age?,
        matcher: matcher?,
        methods: methods.into_iter().collect::<Option<_>>()?,
        policy: policy?,
        api: raw.api,
        require_groups: raw.require_groups.clone(),
        require_claims: claims?,
        bearer: bearer?,
        bearer_resource: bearer_resource?,
        preflight: preflight?,
        preserve_form_posts: raw.preserve_form_posts,
    })
}

fn route_matcher(
    raw: &RawRoute,
    key: &impl Fn(&str) -> String,
    c: &mut Checker,
) -> Option<PathMatch> {
    let kind = c.choice(
        &key("match"),
        &raw.match_,
        &[
            ("prefix", MatchKind::Prefix),
            ("exact", MatchKind::Exact),
            ("regex", MatchKind::Regex),
        ],
    );
    let path = c.required(&key("path"), raw.path.as_deref())?;
    match kind? {
        MatchKind::Regex => {
            // Anchored: a regex must match the whole path.
            let compiled = Regex::new(&format!("^(?:{path})$"))
                .map_err(|e| format!("invalid regex {path:?}: {e}"));
            c.check(&key("path"), compiled).map(PathMatch::Regex)
        }
        _ if !path.starts_with('/') => {
            c.error(key("path"), format!("{path:?} must start with \"/\""));
            None
        }
        MatchKind::Prefix => Some(PathMatch::Prefix(path.to_owned())),
        MatchKind::Exact => Some(PathMatch::Exact(path.to_owned())),
    }
}

#[derive(Debug, Clone, Copy)]
enum MatchKind {
    Prefix,
    Exact,
    Regex,
}

/// Methods are case-insensitive in the config; `http::Method` is case-sensitive, so uppercase.
fn method(key: &str, raw: &str, c: &mut Checker) -> Option<Method> {
    let upper = raw.trim().to_ascii_uppercase();
    let parsed =
        Method::from_bytes(upper.as_bytes()).map_err(|_| format!("invalid method {raw:?}"));
    c.check(key, parsed)
}

fn require_claims(
    raw: &RawRoute,
    key: &impl Fn(&str) -> String,
    c: &mut Checker,
) -> Option<Vec<(String, Vec<String>)>> {
    let mut ok = true;
    for (claim, values) in &raw.require_claims {
        if values.is_empty() {
            // An empty list can never match: the route would answer 403 to everyone.
            c.error(
                key(&format!("require_claims.{claim}")),
                "must list at least one value",
            );
            ok = false;
        }
    }
    ok.then(|| raw.require_claims.clone())
}

fn route_upstream(
    raw: &RawRoute,
    upstreams: Option<&[&str]>,
    key: &str,
    c: &mut Checker,
) -> Option<Option<String>> {
    let Some(wanted) = non_empty(raw.upstream.as_deref()) else {
        return Some(None);
    };
    let known = upstreams?;
    if !known.contains(&wanted) {
        let listed = match known.is_empty() {
            true => "there is no [upstreams.NAME] section".to_owned(),
            false => format!("known: {}", known.join(", ")),
        };
        c.error(
            key,
            format!("{wanted:?} is not an [upstreams.NAME] ({listed})"),
        );
        return None;
    }
    Some(Some(wanted.to_owned()))
}

/// The route's `provider`: its name and id; `(None, DEFAULT)` for `[oidc]`.
fn route_provider(
    raw: &RawRoute,
    providers: Option<&[KnownProvider<'_>]>,
    key: &str,
    c: &mut Checker,
) -> Option<(Option<String>, ProviderId)> {
    let Some(wanted) = non_empty(raw.provider.as_deref()) else {
        return Some((None, ProviderId::DEFAULT));
    };
    let known = providers?;
    let Some(i) = known.iter().position(|(name, _)| *name == wanted) else {
        let listed = match known.is_empty() {
            true => "there is no [providers.NAME] section".to_owned(),
            false => {
                let names: Vec<&str> = known.iter().map(|(n, _)| *n).collect();
                format!("known: {}", names.join(", "))
            }
        };
        c.error(
            key,
            format!("{wanted:?} is not a [providers.NAME] ({listed})"),
        );
        return None;
    };
    let id = ProviderId(u8::try_from(i + 1).ok()?);
    Some((Some(wanted.to_owned()), id))
}

/// An email domain as the rules compare it: lowercase ASCII. A non-ASCII (internationalized)
/// domain is refused here: write its IDNA form (`xn--...`). Claims holding a non-ASCII domain
/// never match, so a look-alike Unicode domain can never pass for an ASCII one.
/// An `acr` value: it travels space-separated in `acr_values` and quoted in a
/// `WWW-Authenticate` challenge, so it is visible ASCII without `"` or a backslash.
fn acr_value(key: &str, raw: &str, c: &mut Checker) -> Option<String> {
    let ok =
        !raw.is_empty() && (raw.bytes()).all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
    if !ok {
        c.error(
            key.to_owned(),
            format!(
                "invalid acr value {raw:?}: visible ASCII without spaces, quotes or backslashes"
            ),
        );
        return None;
    }
    Some(raw.to_owned())
}

fn email_domain(key: &str, raw: &str, c: &mut Checker) -> Option<String> {
    let lower = raw.trim().to_ascii_lowercase();
    if !lower.is_ascii() {
        c.error(
            key,
            format!("{raw:?}: write an internationalized domain in its ASCII (xn--) form"),
        );
        return None;
    }
    match HostPattern::parse(&lower) {
        Ok(HostPattern::Exact(domain)) => Some(domain),
        _ => {
            c.error(
                key,
                format!("{raw:?} is not a domain (\"example.com\", without \"@\")"),
            );
            None
        }
    }
}

/// An address as the rules compare it: lowercase, exactly one `@`, an ASCII domain.
fn email_address(key: &str, raw: &str, c: &mut Checker) -> Option<String> {
    let lower = raw.trim().to_ascii_lowercase();
    let valid = match lower.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.contains('@')
                && local.bytes().all(|b| b.is_ascii_graphic())
                && matches!(HostPattern::parse(domain), Ok(HostPattern::Exact(_)))
        }
        None => false,
    };
    if !valid {
        c.error(
            key,
            format!("{raw:?} is not an email address (one \"@\", an ASCII domain)"),
        );
        return None;
    }
    Some(lower)
}

fn bearer_resource(
    raw: &RawRoute,
    resources: Option<&[String]>,
    key: &str,
    c: &mut Checker,
) -> Option<Option<String>> {
    let Some(wanted) = non_empty(raw.bearer_resource.as_deref()) else {
        return Some(None);
    };
    // When the oidc section itself failed, its errors are reported already: do not guess.
    let resources = resources?;
    if !resources.iter().any(|r| r == wanted) {
        let section = match raw.provider.as_deref().and_then(|p| non_empty(Some(p))) {
            Some(p) => format!("providers.{p}"),
            None => "oidc".to_owned(),
        };
        c.error(key, format!("{wanted:?} is not one of {section}.resource"));
        return None;
    }
    Some(Some(wanted.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(resources: Option<&[String]>) -> Known<'_> {
        Known {
            resources,
            upstreams: None,
            providers: None,
        }
    }

    fn raw(path: &str, kind: &str) -> RawRoute {
        RawRoute {
            path: Some(path.to_owned()),
            match_: kind.to_owned(),
            ..RawRoute::default()
        }
    }

    #[test]
    fn methods_are_uppercased() {
        let mut c = Checker::default();
        assert_eq!(method("k", "get", &mut c), Some(Method::GET));
        assert_eq!(method("k", "Patch", &mut c), Some(Method::PATCH));
        assert!(c.errors.is_empty());
    }

    #[test]
    fn regex_is_anchored_and_alternation_stays_inside() {
        let mut c = Checker::default();
        let route = route(0, &raw("/a|/b", "regex"), &known(Some(&[])), &mut c).unwrap();
        let PathMatch::Regex(re) = route.matcher else {
            panic!("expected a regex")
        };
        assert!(re.is_match("/a") && re.is_match("/b"));
        assert!(!re.is_match("/a/x") && !re.is_match("/x/b"));
    }

    #[test]
    fn defaults_are_prefix_authenticated_off() {
        let mut c = Checker::default();
        let route = route(0, &raw("/x", "prefix"), &known(None), &mut c).unwrap();
        assert!(matches!(route.matcher, PathMatch::Prefix(ref p) if p == "/x"));
        assert_eq!(route.policy, Policy::Authenticated);
        assert_eq!(route.bearer, BearerMode::Off);
        assert_eq!(route.preflight, Preflight::Authenticate);
        assert!(route.methods.is_empty());
    }
}
