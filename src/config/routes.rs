//! `[[route]]` validation: raw routes -> [`RouteConfig`]s.
//!
//! Split from `validate.rs` only for size; the same rules apply: every error recorded under
//! its key (`route[2].path`), nothing built unless the whole route is valid.

use http::Method;
use regex::Regex;

use super::check::{Checker, non_empty};
use super::raw::RawRoute;
use super::types::{BearerMode, PathMatch, Policy, Preflight, RouteConfig};

pub(crate) fn routes(
    raw: &[Option<RawRoute>],
    resources: Option<&[String]>,
    c: &mut Checker,
) -> Option<Vec<RouteConfig>> {
    let routes: Vec<_> = (raw.iter().enumerate())
        .map(|(i, r)| r.as_ref().and_then(|r| route(i, r, resources, c)))
        .collect();
    routes.into_iter().collect()
}

fn route(
    i: usize,
    raw: &RawRoute,
    resources: Option<&[String]>,
    c: &mut Checker,
) -> Option<RouteConfig> {
    let key = |field: &str| format!("route[{i}].{field}");
    let matcher = route_matcher(raw, &key, c);
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
    Some(RouteConfig {
        matcher: matcher?,
        methods: methods.into_iter().collect::<Option<_>>()?,
        policy: policy?,
        api: raw.api,
        require_groups: raw.require_groups.clone(),
        require_claims: claims?,
        bearer: bearer?,
        bearer_resource: bearer_resource?,
        preflight: preflight?,
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
        c.error(key, format!("{wanted:?} is not one of oidc.resource"));
        return None;
    }
    Some(Some(wanted.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let route = route(0, &raw("/a|/b", "regex"), Some(&[]), &mut c).unwrap();
        let PathMatch::Regex(re) = route.matcher else {
            panic!("expected a regex")
        };
        assert!(re.is_match("/a") && re.is_match("/b"));
        assert!(!re.is_match("/a/x") && !re.is_match("/x/b"));
    }

    #[test]
    fn defaults_are_prefix_authenticated_off() {
        let mut c = Checker::default();
        let route = route(0, &raw("/x", "prefix"), None, &mut c).unwrap();
        assert!(matches!(route.matcher, PathMatch::Prefix(ref p) if p == "/x"));
        assert_eq!(route.policy, Policy::Authenticated);
        assert_eq!(route.bearer, BearerMode::Off);
        assert_eq!(route.preflight, Preflight::Authenticate);
        assert!(route.methods.is_empty());
    }
}
