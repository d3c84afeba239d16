//! Per-route policies: the `[[route]]` table compiled once, matched on the normalized path.
//!
//! First match wins; a request no route matches is `authenticated`.
//! Pure: no I/O, no session access; the pipeline asks "which route?" and later "may a user
//! with these groups and claims pass?".

pub mod path;

use std::collections::HashMap;

use http::Method;

use serde_json::{Map, Value};

use crate::claims::claim_text;
use crate::config::{
    BearerMode, HostPattern, PathMatch, Policy, Preflight, ProviderId, RouteConfig,
};
use crate::metrics::RouteId;

/// A compiled route: the validated `[[route]]` entry plus what is derived from it once.
#[derive(Debug, Clone)]
pub struct Route {
    pub id: RouteId,
    /// Metrics label: the route's `name`, or `default`.
    pub label: String,
    pub rule: RouteConfig,
    /// Index of `rule.bearer_resource` in `oidc.resource` (0: the first, the default).
    pub bearer_index: usize,
    /// Which upstream the route forwards to: 0 is `[upstream]`, `n` the n-th
    /// `[upstreams.NAME]` in the order given to [`RouteTable::new`], plus one.
    pub upstream: usize,
}

/// Why an authenticated user is turned away (a short, clear 403 body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    MissingGroup,
    MissingClaim,
    /// `require_email_domains` / `require_emails` not met, or the email is not verified.
    Email,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Refusal::MissingGroup => {
                "Forbidden: you are not a member of a group this page requires"
            }
            Refusal::MissingClaim => {
                "Forbidden: your account lacks an attribute this page requires"
            }
            Refusal::Email => "Forbidden: this page requires a verified email address it accepts",
        }
    }
}

pub struct RouteTable {
    routes: Vec<Route>,
    /// Indexes into `routes`, ascending: the routes a request for this exact host (lowercase)
    /// may match besides `any_host`. A table of many host routes costs a request one lookup,
    /// not a comparison per route.
    by_host: HashMap<String, Vec<usize>>,
    /// Indexes into `routes`, ascending: routes without a host or with a `*.` pattern.
    any_host: Vec<usize>,
    /// Some route has a `host`: a request whose host cannot be read is refused.
    has_hosts: bool,
    /// Used when nothing matches: authenticated, no requirements.
    fallback: Route,
}

impl RouteTable {
    /// `resources`: each provider's `resource` by provider id (`oidc.resource` first), to
    /// resolve each route's `bearer_resource` once; `upstreams`: the names of
    /// `[upstreams.NAME]`, to resolve each route's `upstream`.
    pub fn new(configs: &[RouteConfig], resources: &[&[String]], upstreams: &[&str]) -> Self {
        let routes = configs
            .iter()
            .enumerate()
            .map(|(i, cfg)| Route::from_config(RouteId(i), cfg, resources, upstreams))
            .collect();
        // Never matched against (`find` only searches `routes`): its matcher is moot.
        let fallback = Route {
            id: RouteId(configs.len()),
            label: "default".into(),
            rule: RouteConfig {
                name: "default".into(),
                host: None,
                upstream: None,
                provider: None,
                provider_id: ProviderId::DEFAULT,
                strip_prefix: false,
                require_email_domains: Vec::new(),
                require_emails: Vec::new(),
                require_acr: Vec::new(),
                max_auth_age: None,
                matcher: PathMatch::Prefix("/".into()),
                methods: Vec::new(),
                policy: Policy::Authenticated,
                api: false,
                require_groups: Vec::new(),
                require_claims: Vec::new(),
                bearer: BearerMode::Off,
                bearer_resource: None,
                preflight: Preflight::Authenticate,
                preserve_form_posts: true,
            },
            bearer_index: 0,
            upstream: 0,
        };
        let has_hosts = configs.iter().any(|c| c.host.is_some());
        let mut by_host: HashMap<String, Vec<usize>> = HashMap::new();
        let mut any_host = Vec::new();
        for (i, cfg) in configs.iter().enumerate() {
            match &cfg.host {
                Some(HostPattern::Exact(name)) => by_host.entry(name.clone()).or_default().push(i),
                _ => any_host.push(i),
            }
        }
        RouteTable {
            routes,
            by_host,
            any_host,
            has_hosts,
            fallback,
        }
    }

    /// The first route matching `method`, the request's `host` (lowercase, without port, as
    /// `crate::host::RequestHost` reads it; `None`: no host, only routes without one match)
    /// and the normalized `path`, else the fallback.
    pub fn find(&self, method: &Method, host: Option<&str>, path: &str) -> &Route {
        let exact = match host {
            Some(h) if !self.by_host.is_empty() => {
                self.by_host.get(h).map_or(&[][..], Vec::as_slice)
            }
            _ => &[],
        };
        // The two candidate lists merged in table order: the first route that matches wins,
        // exactly as a scan of the whole table would find it.
        let (mut general, mut exact) = (self.any_host.iter().peekable(), exact.iter().peekable());
        loop {
            let next = match (general.peek(), exact.peek()) {
                (Some(&&g), Some(&&e)) if e < g => exact.next(),
                (Some(_), _) => general.next(),
                (None, Some(_)) => exact.next(),
                (None, None) => return &self.fallback,
            };
            if let Some(route) = next.and_then(|&i| self.routes.get(i))
                && route.matches(method, host, path)
            {
                return route;
            }
        }
    }

    /// Whether some route has a `host` (then a request whose host cannot be read must be
    /// refused, not routed as if it had none).
    pub fn has_hosts(&self) -> bool {
        self.has_hosts
    }

    /// The route of a request no route matches: `authenticated`, no requirements. Forward
    /// auth judges an untrusted caller's request by it (a plain "valid session" check).
    pub fn fallback(&self) -> &Route {
        &self.fallback
    }

    /// Metrics labels in `RouteId` order (routes, then the fallback).
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.routes
            .iter()
            .chain(std::iter::once(&self.fallback))
            .map(|r| r.label.as_str())
    }

    pub fn len_with_fallback(&self) -> usize {
        self.routes.len() + 1
    }
}

impl Route {
    fn from_config(
        id: RouteId,
        cfg: &RouteConfig,
        resources: &[&[String]],
        upstreams: &[&str],
    ) -> Self {
        let resources = resources
            .get(cfg.provider_id.index())
            .copied()
            .unwrap_or_default();
        Route {
            id,
            label: cfg.name.clone(),
            // Validation guarantees the name is configured; unknown would mean the default.
            upstream: (cfg.upstream.as_deref())
                .and_then(|u| upstreams.iter().position(|x| *x == u))
                .map_or(0, |i| i + 1),
            rule: cfg.clone(),
            // Validation guarantees the resource is configured; unknown would mean the first.
            bearer_index: cfg
                .bearer_resource
                .as_ref()
                .and_then(|r| resources.iter().position(|x| x == r))
                .unwrap_or(0),
        }
    }

    /// A route that restricts access (`deny`, `authenticated`) also matches the path as a
    /// server that strips path parameters sees it: Tomcat, Jetty and Spring cut every segment
    /// at its first `;`, so for them `/admin;x=1` IS `/admin`, and `/admin;a/users` is
    /// `/admin/users`. Without this, a `deny` on `/admin` (prefix or exact) let `/admin;x=1`
    /// through to such an upstream. A `public` route matches the path as sent only: treating
    /// `/public;x/y` as public could open a different resource on an upstream that keeps `;`,
    /// while asking for a login there costs a Tomcat user nothing.
    fn matches(&self, method: &Method, host: Option<&str>, path: &str) -> bool {
        let rule = &self.rule;
        if !rule.methods.is_empty() && !rule.methods.iter().any(|m| same_method(m, method)) {
            return false;
        }
        if let Some(pattern) = &rule.host
            && !host.is_some_and(|h| pattern.matches(h))
        {
            return false;
        }
        let matcher = &rule.matcher;
        path_matches(matcher, path)
            || (rule.policy != Policy::Public
                && path.contains(';')
                && path_matches(matcher, &without_path_parameters(path)))
    }

    /// The path the upstream receives: with `strip_prefix`, `path` without the route's
    /// prefix, keeping a leading `/` (`/billing/x` -> `/x`, `/billing` -> `/`).
    pub fn upstream_path<'p>(&self, path: &'p str) -> std::borrow::Cow<'p, str> {
        use std::borrow::Cow;
        let PathMatch::Prefix(prefix) = &self.rule.matcher else {
            return Cow::Borrowed(path);
        };
        if !self.rule.strip_prefix {
            return Cow::Borrowed(path);
        }
        // A route that matched through `;` parameters (see `matches`) does not start with
        // its prefix as sent: it is forwarded unchanged rather than cut at a wrong place.
        let Some(rest) = path.strip_prefix(prefix.trim_end_matches('/')) else {
            return Cow::Borrowed(path);
        };
        if rest.starts_with('/') {
            Cow::Borrowed(rest)
        } else if rest.is_empty() {
            Cow::Borrowed("/")
        } else {
            // The prefix matched inside a segment: only possible through `;` parameters.
            Cow::Borrowed(path)
        }
    }

    /// `require_groups` (any one of them), `require_claims` (every claim, any listed value)
    /// and the email rules, judged on the user's `groups`, `email` and `claims` (which hold
    /// `email_verified` when a route has email rules).
    pub fn authorize<'a>(
        &self,
        mut groups: impl Iterator<Item = &'a str>,
        email: Option<&str>,
        claims: &Map<String, Value>,
    ) -> Result<(), Refusal> {
        let rule = &self.rule;
        let email_rules = !rule.require_email_domains.is_empty() || !rule.require_emails.is_empty();
        if email_rules && !email_accepted(rule, email, claims.get("email_verified")) {
            return Err(Refusal::Email);
        }
        if !rule.require_groups.is_empty()
            && !groups.any(|g| rule.require_groups.iter().any(|r| r == g))
        {
            return Err(Refusal::MissingGroup);
        }
        let claims_ok = rule.require_claims.iter().all(|(name, accepted)| {
            claims
                .get(name)
                .is_some_and(|value| claim_satisfies(value, accepted))
        });
        if claims_ok {
            Ok(())
        } else {
            Err(Refusal::MissingClaim)
        }
    }
}

/// How far ahead of our clock a provider's `auth_time` may be (clock skew) and still count as
/// now; further ahead, it is not believed.
const AUTH_TIME_LEEWAY_SECS: u64 = 60;

impl Route {
    /// What this route asks of a login beyond a session (RFC 9470): `None` for none.
    pub fn step_up(&self) -> Option<StepUp<'_>> {
        let rule = &self.rule;
        if rule.require_acr.is_empty() && rule.max_auth_age.is_none() {
            return None;
        }
        Some(StepUp {
            acr: &rule.require_acr,
            max_age: rule.max_auth_age.map(|d| d.as_secs()),
        })
    }
}

/// A route's step-up requirement: an `acr` among `acr` (when not empty), an `auth_time` at
/// most `max_age` seconds old (when set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepUp<'r> {
    pub acr: &'r [String],
    pub max_age: Option<u64>,
}

impl StepUp<'_> {
    /// Whether a login with these claims (`acr`, `auth_time`) meets it at unix time `now`.
    /// An absent or malformed claim does not: the requirement is never assumed met.
    pub fn met_by(&self, claims: &Map<String, Value>, now: u64) -> bool {
        let acr_ok = self.acr.is_empty()
            || (claims.get("acr").and_then(Value::as_str))
                .is_some_and(|acr| self.acr.iter().any(|a| a == acr));
        let age_ok = match self.max_age {
            None => true,
            Some(max_age) => auth_time(claims).is_some_and(|at| {
                at <= now.saturating_add(AUTH_TIME_LEEWAY_SECS) && now.saturating_sub(at) <= max_age
            }),
        };
        acr_ok && age_ok
    }

    /// `acr_values` as the authorization request and the challenge send it: space-separated.
    pub fn acr_values(&self) -> Option<String> {
        (!self.acr.is_empty()).then(|| self.acr.join(" "))
    }
}

/// The `auth_time` claim: a JSON number of seconds (an integer; a fraction is cut).
fn auth_time(claims: &Map<String, Value>) -> Option<u64> {
    match claims.get("auth_time")? {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| f as u64)
        }),
        _ => None,
    }
}

/// Methods compare case-insensitively: `http::Method` keeps a client's
/// `delete` as an extension method distinct from `DELETE`, but servers and frameworks that
/// uppercase the method would run it as `DELETE`, so a `methods = ["GET"]` route must not
/// match it and a rule for `DELETE` must. Configured methods are uppercase already.
fn same_method(configured: &Method, request: &Method) -> bool {
    configured == request || configured.as_str().eq_ignore_ascii_case(request.as_str())
}

/// A prefix matches on segment boundaries: `/public` matches `/public` and `/public/x`, not
/// `/publicity`; `/public/` matches `/public/x`, not `/public`. Regexes are anchored at
/// compile time (`^(?:..)$`) and never see the query.
pub fn path_matches(matcher: &PathMatch, path: &str) -> bool {
    match matcher {
        PathMatch::Exact(p) => path == p,
        PathMatch::Regex(r) => r.is_match(path),
        PathMatch::Prefix(p) => {
            path.starts_with(p.as_str())
                && (p.ends_with('/') || path.len() == p.len() || path.as_bytes()[p.len()] == b'/')
        }
    }
}

/// `path` with every segment cut at its first `;` and the segments left empty dropped (but a
/// trailing slash kept), as parameter-stripping servers see it: `/admin;x=1` is `/admin`,
/// `/admin;a/users` is `/admin/users`, `/;x/admin` is `/admin`.
fn without_path_parameters(path: &str) -> String {
    let Some(rest) = path.strip_prefix('/') else {
        return path.to_owned();
    };
    let mut out = String::with_capacity(path.len());
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        let name = segment.split(';').next().unwrap_or_default();
        if name.is_empty() && segments.peek().is_some() {
            continue;
        }
        out.push('/');
        out.push_str(name);
    }
    out
}

/// The email rules: `email_verified` not false, exactly one `@`, a non-empty local part of
/// visible ASCII, and a domain (compared lowercase, ASCII only: a Unicode look-alike never
/// equals an ASCII domain) in `require_email_domains`, or the whole address (lowercase) in
/// `require_emails`. Either list matching is enough when both are set.
fn email_accepted(rule: &RouteConfig, email: Option<&str>, verified: Option<&Value>) -> bool {
    // Absent: the provider does not say (accepted). Anything but true is refused: some
    // providers send the string "false".
    let verified_ok = match verified {
        None | Some(Value::Bool(true)) => true,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        Some(_) => false,
    };
    let Some(email) = email.filter(|_| verified_ok) else {
        return false;
    };
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    if local.is_empty() || domain.contains('@') || !email.bytes().all(|b| b.is_ascii_graphic()) {
        return false;
    }
    let domain = domain.to_ascii_lowercase();
    let address = email.to_ascii_lowercase();
    rule.require_email_domains.contains(&domain) || rule.require_emails.contains(&address)
}

/// A claim satisfies a requirement when it equals one accepted value, or, for a list claim,
/// when one of its items does.
fn claim_satisfies(value: &Value, accepted: &[String]) -> bool {
    match value {
        Value::Array(items) => items.iter().any(|v| claim_satisfies(v, accepted)),
        other => claim_text(other).is_some_and(|text| accepted.contains(&text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;
    use serde_json::json;

    fn route(matcher: PathMatch, policy: Policy) -> RouteConfig {
        RouteConfig {
            name: String::new(),
            host: None,
            upstream: None,
            provider: None,
            provider_id: ProviderId::DEFAULT,
            strip_prefix: false,
            require_email_domains: vec![],
            require_emails: vec![],
            require_acr: vec![],
            max_auth_age: None,
            matcher,
            methods: vec![],
            policy,
            api: false,
            require_groups: vec![],
            require_claims: vec![],
            bearer: BearerMode::Off,
            bearer_resource: None,
            preflight: Preflight::Authenticate,
            preserve_form_posts: true,
        }
    }

    #[test]
    fn prefix_matches_on_segment_boundaries() {
        let slashless = PathMatch::Prefix("/public".into());
        assert!(path_matches(&slashless, "/public"));
        assert!(path_matches(&slashless, "/public/x"));
        assert!(!path_matches(&slashless, "/publicity"));
        let slashed = PathMatch::Prefix("/public/".into());
        assert!(path_matches(&slashed, "/public/x"));
        assert!(!path_matches(&slashed, "/public"));
        let root = PathMatch::Prefix("/".into());
        assert!(path_matches(&root, "/anything"));
    }

    /// The host index finds what a scan of the whole table finds: the first matching route
    /// in table order, exact-host, wildcard and host-less routes interleaved.
    #[test]
    fn the_host_index_keeps_table_order() {
        let with_host = |host: Option<HostPattern>, prefix: &str| {
            let mut r = route(PathMatch::Prefix(prefix.into()), Policy::Public);
            r.host = host;
            r
        };
        let exact = |h: &str| Some(HostPattern::Exact(h.into()));
        let wild = |h: &str| Some(HostPattern::Subdomains(h.into()));
        let configs = [
            with_host(exact("a.test"), "/x/"),
            with_host(None, "/x/y/"),
            with_host(wild(".a.test"), "/"),
            with_host(exact("a.test"), "/"),
            with_host(exact("b.a.test"), "/"),
            with_host(None, "/x/"),
            with_host(exact("c.test"), "/"),
        ];
        let table = RouteTable::new(&configs, &[], &[]);
        let scan = |host: Option<&str>, path: &str| {
            (table.routes.iter())
                .find(|r| r.matches(&Method::GET, host, path))
                .map_or(table.fallback.id, |r| r.id)
        };
        for host in [
            None,
            Some("a.test"),
            Some("b.a.test"),
            Some("c.test"),
            Some("d.test"),
        ] {
            for path in ["/", "/x/", "/x/y/z", "/q"] {
                let found = table.find(&Method::GET, host, path).id;
                assert_eq!(found, scan(host, path), "{host:?} {path}");
            }
        }
        // Spot checks of the order itself.
        assert_eq!(
            table.find(&Method::GET, Some("a.test"), "/x/y/z").id,
            RouteId(0)
        );
        assert_eq!(
            table.find(&Method::GET, Some("b.a.test"), "/x/y/z").id,
            RouteId(1)
        );
        assert_eq!(
            table.find(&Method::GET, Some("b.a.test"), "/q").id,
            RouteId(2)
        );
        assert_eq!(
            table.find(&Method::GET, Some("c.test"), "/x/1").id,
            RouteId(5)
        );
        assert_eq!(
            table.find(&Method::GET, Some("c.test"), "/q").id,
            RouteId(6)
        );
        assert_eq!(
            table.find(&Method::GET, None, "/q").id,
            RouteId(7),
            "the fallback"
        );
    }

    #[test]
    fn first_match_wins_and_methods_filter() {
        let mut get_only = route(PathMatch::Exact("/a".into()), Policy::Public);
        get_only.methods = vec![Method::GET];
        let table = RouteTable::new(
            &[
                get_only,
                route(PathMatch::Prefix("/a".into()), Policy::Deny),
                route(
                    PathMatch::Regex(Regex::new("^(?:/r/[0-9]+)$").unwrap()),
                    Policy::Public,
                ),
            ],
            &[],
            &[],
        );
        assert_eq!(
            table.find(&Method::GET, None, "/a").rule.policy,
            Policy::Public
        );
        assert_eq!(
            table.find(&Method::POST, None, "/a").rule.policy,
            Policy::Deny
        );
        assert_eq!(
            table.find(&Method::GET, None, "/r/12").rule.policy,
            Policy::Public
        );
        let fallback = table.find(&Method::GET, None, "/r/12x");
        assert_eq!(
            (fallback.rule.policy, fallback.id),
            (Policy::Authenticated, RouteId(3))
        );
        assert_eq!(table.labels().collect::<Vec<_>>(), ["", "", "", "default"]);
    }

    #[test]
    fn methods_compare_case_insensitively() {
        let mut get_only = route(PathMatch::Prefix("/a".into()), Policy::Public);
        get_only.methods = vec![Method::GET];
        let mut delete = route(PathMatch::Prefix("/b".into()), Policy::Deny);
        delete.methods = vec![Method::DELETE];
        let table = RouteTable::new(&[get_only, delete], &[], &[]);
        let method = |m: &str| Method::from_bytes(m.as_bytes()).unwrap();
        for m in ["delete", "Delete", "post", "gEt2", "GETX"] {
            let r = table.find(&method(m), None, "/a");
            assert_eq!(r.rule.policy, Policy::Authenticated, "{m} /a");
        }
        for m in ["get", "Get", "GET"] {
            assert_eq!(
                table.find(&method(m), None, "/a").rule.policy,
                Policy::Public,
                "{m}"
            );
        }
        for m in ["delete", "Delete", "DELETE"] {
            assert_eq!(
                table.find(&method(m), None, "/b").rule.policy,
                Policy::Deny,
                "{m}"
            );
        }
    }

    #[test]
    fn path_parameters_cannot_escape_restricting_routes() {
        assert_eq!(without_path_parameters("/admin;x=1"), "/admin");
        assert_eq!(without_path_parameters("/admin;a/users;b"), "/admin/users");
        assert_eq!(without_path_parameters("/;x/admin"), "/admin");
        assert_eq!(without_path_parameters("/admin/;x"), "/admin/");
        assert_eq!(without_path_parameters("/"), "/");
        let mut exact = route(PathMatch::Exact("/secret".into()), Policy::Deny);
        exact.methods = vec![Method::GET];
        let table = RouteTable::new(
            &[
                route(PathMatch::Prefix("/admin".into()), Policy::Deny),
                exact,
                route(
                    PathMatch::Regex(Regex::new("^(?:/r/[0-9]+)$").unwrap()),
                    Policy::Deny,
                ),
                route(PathMatch::Prefix("/public/".into()), Policy::Public),
            ],
            &[],
            &[],
        );
        for denied in [
            "/admin;x=1",
            "/admin;",
            "/admin;a/users",
            "/secret;x",
            "/r/1;x",
        ] {
            assert_eq!(
                table.find(&Method::GET, None, denied).rule.policy,
                Policy::Deny,
                "{denied}"
            );
        }
        // Methods still apply; `;` elsewhere in a name is no boundary; public routes match
        // the path as sent only.
        assert_eq!(
            table.find(&Method::POST, None, "/secret;x").rule.policy,
            Policy::Authenticated
        );
        assert_eq!(
            table.find(&Method::GET, None, "/adminx;y").rule.policy,
            Policy::Authenticated
        );
        assert_eq!(
            table.find(&Method::GET, None, "/public;x/a").rule.policy,
            Policy::Authenticated
        );
        assert_eq!(
            table.find(&Method::GET, None, "/public/a;x").rule.policy,
            Policy::Public
        );
    }

    /// `authorize` on these groups and claims.
    fn judge(route: &Route, groups: &[&str], claims: Value) -> Result<(), Refusal> {
        route.authorize(groups.iter().copied(), None, claims.as_object().unwrap())
    }

    #[test]
    fn groups_and_claims() {
        let mut cfg = route(PathMatch::Prefix("/admin".into()), Policy::Authenticated);
        cfg.require_groups = vec!["admins".into(), "ops".into()];
        cfg.require_claims = vec![
            ("tier".into(), vec!["gold".into(), "platinum".into()]),
            ("verified".into(), vec!["true".into()]),
        ];
        let table = RouteTable::new(&[cfg], &[], &[]);
        let r = table.find(&Method::GET, None, "/admin");
        let ok = json!({"tier": "gold", "verified": true});
        assert_eq!(judge(r, &["ops"], ok.clone()), Ok(()));
        assert_eq!(judge(r, &["users"], ok), Err(Refusal::MissingGroup));
        let list = json!({"tier": ["silver", "platinum"], "verified": true});
        assert_eq!(judge(r, &["admins"], list), Ok(()));
        let wrong = json!({"tier": "silver", "verified": true});
        assert_eq!(judge(r, &["admins"], wrong), Err(Refusal::MissingClaim));
        let missing = json!({"tier": "gold"});
        assert_eq!(judge(r, &["admins"], missing), Err(Refusal::MissingClaim));
    }

    #[test]
    fn email_rules() {
        let mut cfg = route(PathMatch::Prefix("/m".into()), Policy::Authenticated);
        cfg.require_email_domains = vec!["example.com".into()];
        cfg.require_emails = vec!["boss@corp.test".into()];
        let table = RouteTable::new(&[cfg], &[], &[]);
        let r = table.find(&Method::GET, None, "/m");
        let judge = |email: Option<&str>, verified: Value| {
            let claims = match verified {
                Value::Null => json!({}),
                v => json!({ "email_verified": v }),
            };
            r.authorize(std::iter::empty(), email, claims.as_object().unwrap())
        };
        let ok = Ok(());
        let no = Err(Refusal::Email);
        for (email, verified, expected) in [
            (Some("a@example.com"), Value::Null, ok),
            (Some("A@EXAMPLE.COM"), json!(true), ok),
            (Some("a@example.com"), json!("true"), ok),
            (Some("Boss@Corp.Test"), Value::Null, ok),
            (Some("a@example.com"), json!(false), no),
            (Some("a@example.com"), json!("false"), no),
            (Some("a@example.com"), json!(0), no),
            (Some("a@evil.com@example.com"), Value::Null, no),
            (Some("\"a@b\"@example.com"), Value::Null, no),
            (Some("a@ex\u{0430}mple.com"), Value::Null, no),
            (Some("a@sub.example.com"), Value::Null, no),
            (Some("@example.com"), Value::Null, no),
            (Some("a b@example.com"), Value::Null, no),
            (Some("a@example.com\n"), Value::Null, no),
            (Some("example.com"), Value::Null, no),
            (None, Value::Null, no),
        ] {
            assert_eq!(
                judge(email, verified.clone()),
                expected,
                "{email:?} {verified}"
            );
        }
    }

    #[test]
    fn step_up_is_met_only_by_the_claims_it_names() {
        let mut cfg = route(PathMatch::Prefix("/".into()), Policy::Authenticated);
        let table = RouteTable::new(std::slice::from_ref(&cfg), &[], &[]);
        assert!(table.find(&Method::GET, None, "/").step_up().is_none());
        cfg.require_acr = vec!["mfa".into(), "hwk".into()];
        cfg.max_auth_age = Some(std::time::Duration::from_secs(600));
        let table = RouteTable::new(std::slice::from_ref(&cfg), &[], &[]);
        let step_up = table.find(&Method::GET, None, "/").step_up().unwrap();
        assert_eq!(step_up.acr_values().as_deref(), Some("mfa hwk"));
        let now = 1_000_000;
        let met = |claims: serde_json::Value| step_up.met_by(claims.as_object().unwrap(), now);
        assert!(met(json!({"acr": "hwk", "auth_time": now - 600})));
        assert!(met(
            json!({"acr": "mfa", "auth_time": (now - 10) as f64 + 0.5})
        ));
        assert!(
            !met(json!({"acr": "mfa", "auth_time": now - 601})),
            "too old"
        );
        assert!(!met(json!({"acr": "pwd", "auth_time": now})), "another acr");
        assert!(
            !met(json!({"acr": ["mfa"], "auth_time": now})),
            "acr is a string"
        );
        assert!(!met(json!({"auth_time": now})), "no acr");
        assert!(!met(json!({"acr": "mfa"})), "no auth_time");
        assert!(
            !met(json!({"acr": "mfa", "auth_time": "1000000"})),
            "not a number"
        );
        assert!(!met(json!({"acr": "mfa", "auth_time": -5})), "negative");
        assert!(met(json!({"acr": "mfa", "auth_time": now + 60})), "skew");
        assert!(
            !met(json!({"acr": "mfa", "auth_time": now + 61})),
            "in the future"
        );
    }
}
