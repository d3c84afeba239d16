//! Per-route policies through the real gateway: matching (prefix on segment boundaries, exact,
//! anchored regex that never sees the query, methods), first match wins, `public`, `deny`,
//! `require_groups`, `require_claims`, `api = true`, CORS preflights (`preflight`), built-in
//! endpoints before routes, and the decision metrics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use reqwest::{Client, Method, StatusCode, header};
use serde_json::{Value, json};
use support::{Echo, Harness, location};

/// Every kind of route; the fallback (no match) is `authenticated`.
const ROUTES: &str = r#"
[[route]]
path = "/public"
policy = "public"

[[route]]
path = "/static/"
policy = "public"

[[route]]
path = "/exact"
match = "exact"
policy = "public"

[[route]]
path = "/r/[0-9]+"
match = "regex"
policy = "public"

[[route]]
path = "/admin"
policy = "deny"

[[route]]
path = "/order/open"
policy = "public"

[[route]]
path = "/order"
policy = "deny"

[[route]]
path = "/shadowed"
policy = "deny"

[[route]]
path = "/shadowed"
policy = "public"

[[route]]
path = "/writes"
methods = ["post", "Put"]
policy = "deny"

[[route]]
path = "/writes"
policy = "public"

[[route]]
path = "/ops"
require_groups = ["ops", "admins"]

[[route]]
path = "/gold"
require_claims = { tier = "gold" }

[[route]]
path = "/multi"
require_claims = { tier = ["gold", "platinum"], region = "eu" }

[[route]]
path = "/api/"
api = true

[[route]]
path = "/cors/"
preflight = "forward"
"#;

async fn start() -> Harness {
    Harness::builder().config(ROUTES).start().await
}

/// A request as an API client (`Accept: application/json`).
async fn send(client: &Client, method: Method, url: String) -> reqwest::Response {
    client
        .request(method, url)
        .header(header::ACCEPT, "application/json")
        .send()
        .await
        .unwrap()
}

async fn status(h: &Harness, client: &Client, path: &str) -> StatusCode {
    send(client, Method::GET, h.at(path)).await.status()
}

/// A browser navigation.
async fn browse(client: &Client, url: String) -> reqwest::Response {
    client
        .get(url)
        .header(header::ACCEPT, "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap()
}

async fn echo_of(response: reqwest::Response) -> Echo {
    let status = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    Echo(serde_json::from_str(&body).unwrap())
}

/// `authgate_decisions_total{route,decision}`, 0 when the series is absent.
async fn decisions(h: &Harness, route: &str, decision: &str) -> u64 {
    let series = format!("authgate_decisions_total{{route=\"{route}\",decision=\"{decision}\"}}");
    support::metric(&h.metrics().await, &series).map_or(0, |n| n as u64)
}

#[tokio::test]
async fn prefix_matches_on_segment_boundaries() {
    let h = start().await;
    let c = h.client();
    // `/public` (no trailing slash): itself and below, not `/publicity`.
    assert_eq!(status(&h, &c, "/public").await, StatusCode::OK);
    assert_eq!(status(&h, &c, "/public/").await, StatusCode::OK);
    assert_eq!(status(&h, &c, "/public/x/y").await, StatusCode::OK);
    assert_eq!(status(&h, &c, "/publicity").await, StatusCode::UNAUTHORIZED);
    assert_eq!(status(&h, &c, "/public-x").await, StatusCode::UNAUTHORIZED);
    // `/static/` (trailing slash): below it, not `/static` itself.
    assert_eq!(status(&h, &c, "/static/app.js").await, StatusCode::OK);
    assert_eq!(status(&h, &c, "/static/").await, StatusCode::OK);
    assert_eq!(status(&h, &c, "/static").await, StatusCode::UNAUTHORIZED);
    assert_eq!(status(&h, &c, "/staticx/a").await, StatusCode::UNAUTHORIZED);
    // Case-sensitive.
    assert_eq!(status(&h, &c, "/Public/x").await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn exact_matches_only_that_path() {
    let h = start().await;
    let c = h.client();
    assert_eq!(status(&h, &c, "/exact").await, StatusCode::OK);
    assert_eq!(status(&h, &c, "/exact?q=1").await, StatusCode::OK);
    for other in ["/exact/", "/exact/x", "/exactly"] {
        assert_eq!(
            status(&h, &c, other).await,
            StatusCode::UNAUTHORIZED,
            "{other}"
        );
    }
}

#[tokio::test]
async fn regex_is_anchored_and_never_sees_the_query() {
    let h = start().await;
    let c = h.client();
    assert_eq!(status(&h, &c, "/r/12").await, StatusCode::OK);
    assert_eq!(status(&h, &c, "/r/0").await, StatusCode::OK);
    // Anchored at both ends.
    for other in ["/r/12x", "/x/r/1", "/r/", "/r/1/2"] {
        assert_eq!(
            status(&h, &c, other).await,
            StatusCode::UNAUTHORIZED,
            "{other}"
        );
    }
    // The query is not part of what the regex matches (anchored `$` would fail on it), and it
    // still reaches the upstream.
    let echo = echo_of(send(&c, Method::GET, h.at("/r/12?x=abc&y=%2F")).await).await;
    assert_eq!(echo.path(), "/r/12");
    assert_eq!(echo.0["query"], "x=abc&y=%2F");
}

#[tokio::test]
async fn first_match_wins() {
    let h = start().await;
    let c = h.client();
    // A public `/order/open` listed before a deny `/order`.
    assert_eq!(status(&h, &c, "/order/open/42").await, StatusCode::OK);
    assert_eq!(status(&h, &c, "/order/42").await, StatusCode::FORBIDDEN);
    assert_eq!(status(&h, &c, "/order").await, StatusCode::FORBIDDEN);
    // A deny listed before a public route on the same path: the deny wins.
    assert_eq!(status(&h, &c, "/shadowed/x").await, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn methods_are_case_insensitive_and_filter_the_route() {
    let h = start().await;
    let c = h.client();
    // `methods = ["post", "Put"]` deny, then the same path public for every other method.
    for (method, expected) in [
        (Method::GET, StatusCode::OK),
        (Method::POST, StatusCode::FORBIDDEN),
        (Method::PUT, StatusCode::FORBIDDEN),
        (Method::DELETE, StatusCode::OK),
        (Method::PATCH, StatusCode::OK),
    ] {
        let r = send(&c, method.clone(), h.at("/writes/1")).await;
        assert_eq!(r.status(), expected, "{method}");
        if expected == StatusCode::OK {
            assert_eq!(echo_of(r).await.method(), method.as_str());
        }
    }
}

#[tokio::test]
async fn deny_answers_403_with_or_without_a_session() {
    let h = start().await;
    let anonymous = h.client();
    // Never a login redirect, not even for a browser navigation.
    let r = browse(&anonymous, h.at("/admin/users")).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.headers().get(header::LOCATION).is_none());
    assert_eq!(
        status(&h, &anonymous, "/admin").await,
        StatusCode::FORBIDDEN
    );

    let alice = h.client();
    h.login(&alice, "alice").await;
    let r = send(&alice, Method::GET, h.at("/admin/users")).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("Forbidden"));
    let r = send(&alice, Method::POST, h.at("/admin")).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // The same session passes elsewhere: the 403 was the route, not the session.
    assert_eq!(h.echo(&alice, "/elsewhere").await.path(), "/elsewhere");
}

#[tokio::test]
async fn require_groups_accepts_any_one_of_the_groups() {
    let h = start().await;
    h.idp
        .controls()
        .set_user_claims("olga", json!({"groups": ["dev", "ops"]}));
    h.idp
        .controls()
        .set_user_claims("dave", json!({"groups": ["dev"]}));

    let olga = h.client();
    h.login(&olga, "olga").await;
    let echo = h.echo(&olga, "/ops/panel").await;
    assert_eq!(echo.header("x-forwarded-user").as_deref(), Some("olga"));
    assert_eq!(
        echo.header("x-forwarded-groups").as_deref(),
        Some("dev,ops")
    );

    let dave = h.client();
    h.login(&dave, "dave").await;
    let r = send(&dave, Method::GET, h.at("/ops/panel")).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body = r.text().await.unwrap();
    assert!(body.contains("group"), "a short, clear body: {body}");
    assert!(body.len() < 200, "{body}");

    // No groups at all (the provider's default `[]`).
    let nobody = h.client();
    h.login(&nobody, "nobody").await;
    let r = browse(&nobody, h.at("/ops")).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.headers().get(header::LOCATION).is_none());

    // Not logged in: the usual unauthenticated answer, not 403.
    let anonymous = h.client();
    assert_eq!(
        status(&h, &anonymous, "/ops").await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn require_groups_reads_a_comma_separated_groups_string() {
    let h = start().await;
    h.idp
        .controls()
        .set_user_claims("carol", json!({"groups": "dev,admins"}));
    h.idp
        .controls()
        .set_user_claims("erin", json!({"groups": "dev,opsy"}));
    let carol = h.client();
    h.login(&carol, "carol").await;
    let echo = h.echo(&carol, "/ops").await;
    assert_eq!(
        echo.header("x-forwarded-groups").as_deref(),
        Some("dev,admins")
    );
    let erin = h.client();
    h.login(&erin, "erin").await;
    assert_eq!(status(&h, &erin, "/ops").await, StatusCode::FORBIDDEN);
}

/// A comma (or `%`) inside one group name is percent-encoded in
/// `X-Forwarded-Groups`, so `users,admins` never reads as the two groups `users` and
/// `admins` upstream, nor to `require_groups`, and `/oauth2/userinfo` keeps the names as
/// they are. The same header reaches forward auth.
#[tokio::test]
async fn a_group_name_with_a_comma_stays_one_group() {
    let h = start().await;
    h.idp.controls().set_user_claims(
        "mallory",
        json!({"groups": ["users,admins", "50%off", "%2C", "dev"]}),
    );
    let mallory = h.client();
    h.login(&mallory, "mallory").await;
    let echo = h.echo(&mallory, "/elsewhere").await;
    assert_eq!(
        echo.header_values("x-forwarded-groups"),
        ["users%2Cadmins,50%25off,%252C,dev"]
    );
    let groups: Vec<String> = echo.header_values("x-forwarded-groups")[0]
        .split(',')
        .map(|g| {
            percent_encoding::percent_decode_str(g)
                .decode_utf8()
                .unwrap()
                .into_owned()
        })
        .collect();
    assert_eq!(
        groups,
        ["users,admins", "50%off", "%2C", "dev"],
        "decodes back"
    );
    assert_eq!(status(&h, &mallory, "/ops").await, StatusCode::FORBIDDEN);
    let info: serde_json::Value = (mallory.get(h.at("/oauth2/userinfo")).send().await)
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        info["groups"],
        json!(["users,admins", "50%off", "%2C", "dev"])
    );

    h.idp
        .controls()
        .set_user_claims("ann", json!({"groups": ["users,admins"]}));
    let ann = h.client();
    h.login(&ann, "ann").await;
    let echo = h.echo(&ann, "/elsewhere").await;
    assert_eq!(echo.header_values("x-forwarded-groups"), ["users%2Cadmins"]);
    assert_eq!(status(&h, &ann, "/ops").await, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn require_groups_uses_the_configured_groups_claim() {
    let h = Harness::builder()
        .config(ROUTES)
        .config("[headers]\ngroups_claim = \"roles\"")
        .start()
        .await;
    h.idp
        .controls()
        .set_user_claims("rita", json!({"roles": ["admins"], "groups": ["none"]}));
    h.idp
        .controls()
        .set_user_claims("gus", json!({"groups": ["admins"]}));
    let rita = h.client();
    h.login(&rita, "rita").await;
    let echo = h.echo(&rita, "/ops").await;
    assert_eq!(echo.header("x-forwarded-groups").as_deref(), Some("admins"));
    // `groups` is no longer the groups claim.
    let gus = h.client();
    h.login(&gus, "gus").await;
    assert_eq!(status(&h, &gus, "/ops").await, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn require_claims_with_one_value() {
    let h = start().await;
    let controls = h.idp.controls();
    controls.set_user_claims("goldie", json!({"tier": "gold"}));
    controls.set_user_claims("silvia", json!({"tier": "silver"}));
    controls.set_user_claims("listy", json!({"tier": ["silver", "gold"]}));
    controls.set_user_claims("casey", json!({"tier": "Gold"}));

    for (user, expected) in [
        ("goldie", StatusCode::OK),
        ("silvia", StatusCode::FORBIDDEN),
        // A list claim matches when any item does.
        ("listy", StatusCode::OK),
        // Exact comparison.
        ("casey", StatusCode::FORBIDDEN),
        // No such claim.
        ("plain", StatusCode::FORBIDDEN),
    ] {
        let c = h.client();
        h.login(&c, user).await;
        let r = send(&c, Method::GET, h.at("/gold/x")).await;
        assert_eq!(r.status(), expected, "{user}");
        if expected == StatusCode::FORBIDDEN {
            let body = r.text().await.unwrap();
            assert!(body.contains("Forbidden"), "{user}: {body}");
            assert!(body.len() < 200, "{body}");
        }
    }
}

#[tokio::test]
async fn require_claims_needs_every_claim_with_one_of_its_values() {
    let h = start().await;
    let controls = h.idp.controls();
    controls.set_user_claims("pat", json!({"tier": "platinum", "region": "eu"}));
    controls.set_user_claims("gina", json!({"tier": "gold", "region": ["us", "eu"]}));
    controls.set_user_claims("ursula", json!({"tier": "platinum", "region": "us"}));
    controls.set_user_claims("noreg", json!({"tier": "gold"}));
    controls.set_user_claims("bronze", json!({"tier": "bronze", "region": "eu"}));
    for (user, expected) in [
        ("pat", StatusCode::OK),
        ("gina", StatusCode::OK),
        ("ursula", StatusCode::FORBIDDEN),
        ("noreg", StatusCode::FORBIDDEN),
        ("bronze", StatusCode::FORBIDDEN),
    ] {
        let c = h.client();
        h.login(&c, user).await;
        assert_eq!(status(&h, &c, "/multi").await, expected, "{user}");
    }
}

#[tokio::test]
async fn api_routes_answer_401_json_never_a_redirect() {
    let h = start().await;
    let c = h.client();
    // A browser navigation on an `api = true` route: 401 JSON.
    let r = browse(&c, h.at("/api/items?page=2")).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get(header::LOCATION).is_none());
    assert!(
        r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let body: Value = r.json().await.unwrap();
    let login_url = body["login_url"].as_str().unwrap();
    assert!(
        login_url.starts_with(&h.at("/oauth2/start?rd=")),
        "{login_url}"
    );
    // The same navigation elsewhere is redirected to login ...
    let r = browse(&c, h.at("/page")).await;
    assert_eq!(r.status(), StatusCode::FOUND);
    let to = location(&r);
    assert!(
        to.starts_with(&h.idp.issuer()) || to.contains("/oauth2/start"),
        "{to}"
    );
    // ... but never a non-GET request.
    let r = client_post_html(&c, h.at("/page")).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Logged in, the api route is an ordinary authenticated route.
    h.login(&c, "alice").await;
    let echo = h.echo(&c, "/api/items").await;
    assert!(echo.bearer().is_some());
}

async fn client_post_html(c: &Client, url: String) -> reqwest::Response {
    c.post(url)
        .header(header::ACCEPT, "text/html")
        .body("a=1")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn public_routes_strip_identity_and_never_touch_the_session() {
    let h = start().await;
    // Access tokens that are always within `refresh_before_expiry` (10 s in the harness):
    // any request that loads the session refreshes it.
    h.idp.controls().set_access_ttl(Duration::from_secs(5));
    let c = h.client();
    let session = h.login(&c, "alice").await;
    let refreshes = h.idp.controls().refresh_calls();

    let r = c
        .get(h.at("/public/page"))
        .header(header::ACCEPT, "application/json")
        .header(header::AUTHORIZATION, "Bearer forged")
        .header("X-Forwarded-User", "mallory")
        .header("X_Forwarded_Email", "mallory@evil.test")
        .header("X-Forwarded-Groups", "admins")
        // An explicit `Cookie` replaces the jar's: send the session cookie ourselves.
        .header(
            header::COOKIE,
            format!("theme=dark; authgate_session={session}"),
        )
        .send()
        .await
        .unwrap();
    let echo = echo_of(r).await;
    for name in [
        "authorization",
        "x-forwarded-user",
        "x_forwarded_email",
        "x-forwarded-email",
        "x-forwarded-groups",
        "x-forwarded-preferred-username",
    ] {
        assert_eq!(echo.header(name), None, "{name} reached the upstream");
    }
    // The session cookie is not forwarded, even on a public route; other cookies are.
    let cookies = echo.header_values("cookie").join("; ");
    assert!(!cookies.contains("authgate_session"), "{cookies}");
    assert!(cookies.contains("theme=dark"), "{cookies}");
    assert_eq!(
        h.idp.controls().refresh_calls(),
        refreshes,
        "a public request must not load (and refresh) the session"
    );

    // The control: the same session on an authenticated route does refresh.
    let echo = h.echo(&c, "/private").await;
    assert!(echo.bearer().is_some());
    assert_eq!(echo.header("x-forwarded-user").as_deref(), Some("alice"));
    assert_eq!(h.idp.controls().refresh_calls(), refreshes + 1);
}

#[tokio::test]
async fn cors_preflight_is_authenticated_unless_the_route_forwards_it() {
    let h = start().await;
    let preflight = |c: &Client, path: &str| {
        c.request(Method::OPTIONS, h.at(path))
            .header(header::ORIGIN, "https://other.example")
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "PUT")
            .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "content-type")
            .header(header::ACCEPT, "application/json")
    };
    // By default a preflight is a request like any other: no session, 401,
    // never the app's answer.
    let anonymous = h.client();
    let r = preflight(&anonymous, "/private/thing")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = preflight(&anonymous, "/ops/thing").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // `preflight = "forward"`: the app answers it, without a session.
    let r = preflight(&anonymous, "/cors/thing").send().await.unwrap();
    let echo = echo_of(r).await;
    assert_eq!(echo.method(), "OPTIONS");
    assert_eq!(echo.path(), "/cors/thing");
    assert_eq!(echo.header("authorization"), None);

    // With a session and spoofed identity: still no identity upstream.
    let alice = h.client();
    h.login(&alice, "alice").await;
    let r = preflight(&alice, "/cors/thing")
        .header(header::AUTHORIZATION, "Bearer forged")
        .header("X-Forwarded-User", "mallory")
        .send()
        .await
        .unwrap();
    let echo = echo_of(r).await;
    assert_eq!(echo.header("authorization"), None);
    assert_eq!(echo.header("x-forwarded-user"), None);
    assert_eq!(echo.header("x-forwarded-email"), None);
    let cookies = echo.header_values("cookie").join("; ");
    assert!(!cookies.contains("authgate_session"), "{cookies}");
    // On an authenticated route, alice's preflight is forwarded as she is.
    let r = preflight(&alice, "/private/thing").send().await.unwrap();
    let echo = echo_of(r).await;
    assert!(echo.bearer().is_some());

    // Not a preflight (no Access-Control-Request-Method): authenticated as usual.
    let r = anonymous
        .request(Method::OPTIONS, h.at("/cors/thing"))
        .header(header::ORIGIN, "https://other.example")
        .header(header::ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // A preflight on a deny route is still denied.
    let r = preflight(&anonymous, "/admin").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn builtin_endpoints_are_answered_before_routes() {
    let h = Harness::builder()
        .config(
            r#"
            [[route]]
            path = "/"
            policy = "deny"
            "#,
        )
        .start()
        .await;
    let c = h.client();
    assert_eq!(status(&h, &c, "/anything").await, StatusCode::FORBIDDEN);
    assert_eq!(status(&h, &c, "/").await, StatusCode::FORBIDDEN);
    assert_eq!(status(&h, &c, "/healthz").await, StatusCode::OK);
    assert_eq!(status(&h, &c, "/readyz").await, StatusCode::OK);
    assert_eq!(status(&h, &c, "/metrics").await, StatusCode::OK);
    assert_eq!(
        status(&h, &c, "/oauth2/userinfo").await,
        StatusCode::UNAUTHORIZED
    );
    let r = c.get(h.at("/oauth2/start?rd=/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert!(location(&r).starts_with(&h.idp.issuer()));
    // Unknown `/oauth2/*`: 404 from the gateway, never the route and never the upstream.
    for unknown in ["/oauth2/nope", "/oauth2/", "/oauth2/start/x"] {
        let r = send(&c, Method::GET, h.at(unknown)).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{unknown}");
    }
    // A login still works through a deny-everything route table.
    h.login(&c, "alice").await;
    let r = send(&c, Method::GET, h.at("/oauth2/userinfo")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["sub"], "alice");
}

#[tokio::test]
async fn unknown_oauth2_paths_are_404_on_a_default_config() {
    let h = Harness::start().await;
    let c = h.client();
    h.login(&c, "alice").await;
    let r = send(&c, Method::GET, h.at("/oauth2/whatever")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = send(&c, Method::POST, h.at("/oauth2/whatever")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn decisions_are_counted_by_route() {
    let h = start().await;
    h.idp
        .controls()
        .set_user_claims("dave", json!({"groups": ["dev"]}));
    let anonymous = h.client();
    // denied x2 on /admin
    assert_eq!(
        status(&h, &anonymous, "/admin").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(&h, &anonymous, "/admin/x").await,
        StatusCode::FORBIDDEN
    );
    // allowed x3 on /public
    for p in ["/public", "/public/a", "/public/b"] {
        assert_eq!(status(&h, &anonymous, p).await, StatusCode::OK);
    }
    // redirected x1 and unauthorized x2 on the fallback
    assert_eq!(
        browse(&anonymous, h.at("/page")).await.status(),
        StatusCode::FOUND
    );
    assert_eq!(
        status(&h, &anonymous, "/page").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(&h, &anonymous, "/page2").await,
        StatusCode::UNAUTHORIZED
    );
    // unauthorized x1 on the api route (a browser, still not redirected)
    assert_eq!(
        browse(&anonymous, h.at("/api/x")).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // forbidden x1 and allowed x1 on /ops... by groups
    let dave = h.client();
    h.login(&dave, "dave").await;
    assert_eq!(status(&h, &dave, "/ops").await, StatusCode::FORBIDDEN);
    assert_eq!(h.echo(&dave, "/page").await.path(), "/page");

    assert_eq!(decisions(&h, "/admin", "denied").await, 2);
    assert_eq!(decisions(&h, "/public", "allowed").await, 3);
    assert_eq!(decisions(&h, "default", "redirected").await, 1);
    assert_eq!(decisions(&h, "default", "unauthorized").await, 2);
    assert_eq!(decisions(&h, "default", "allowed").await, 1);
    assert_eq!(decisions(&h, "/api/", "unauthorized").await, 1);
    assert_eq!(decisions(&h, "/api/", "redirected").await, 0);
    assert_eq!(decisions(&h, "/ops", "forbidden").await, 1);
    assert_eq!(decisions(&h, "/ops", "allowed").await, 0);
    assert_eq!(decisions(&h, "/public", "denied").await, 0);
}
