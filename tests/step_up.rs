//! Per-route step-up (RFC 9470): `require_acr` and `max_auth_age`. A session that does not
//! meet a route's requirement is sent back to the provider with `acr_values` / `max_age`
//! (browsers) or answered 401 `insufficient_user_authentication` (everything else); the new
//! login is checked again (still unmet: 403, never a loop) and upgrades the session in place.
//! The development provider's knobs play a provider that cannot or will not comply.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod support;

use std::time::Duration;

use authgate::config::Config;
use authgate::session::{SessionStore, Store};
use figment::Figment;
use figment::providers::{Format, Toml};
use reqwest::{Client, StatusCode, header};
use serde_json::Value;
use support::{Harness, location, one, query_of, set_cookie};

const SESSION: &str = "authgate_session";
const MFA: &str = "urn:devidp:mfa";

const ROUTES: &str = r#"
[server]
trusted_proxies = ["127.0.0.1/32"]

[[route]]
path = "/admin"
require_acr = ["urn:devidp:mfa", "urn:devidp:hwk"]

[[route]]
path = "/payments"
max_auth_age = "15m"

[[route]]
path = "/api/admin"
api = true
require_acr = ["urn:devidp:mfa"]
"#;

async fn harness() -> Harness {
    Harness::builder().config(ROUTES).start().await
}

/// A browser navigation to `path`.
async fn navigate(h: &Harness, client: &Client, path: &str) -> reqwest::Response {
    (client.get(h.at(path)))
        .header(header::ACCEPT, "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap()
}

async fn live_sessions(h: &Harness) -> u64 {
    let Store::Memory(m) = h.gateway.store().as_ref() else {
        panic!("these tests run on the memory store");
    };
    m.sync().await;
    h.gateway.store().live()
}

/// The `acr` the gateway holds for the session behind `cookie`.
async fn stored_acr(h: &Harness, cookie: &str) -> Option<String> {
    let key = h.gateway.cookies().decode(cookie).expect("a valid cookie");
    let session = (h.gateway.store().load(&key).await.unwrap()).expect("a session");
    let acr = session.identity.claims().get("acr")?;
    Some(acr.as_str().unwrap().to_owned())
}

/// A step-up from a browser navigation to `path`: the 302 to `/oauth2/start`, the
/// authorization URL it leads to (returned), asserting the redirect's shape.
async fn step_up_authorize_url(h: &Harness, client: &Client, path: &str) -> String {
    let r = navigate(h, client, path).await;
    assert_eq!(r.status(), StatusCode::FOUND, "{path}: step-up redirect");
    let rd: String = url::form_urlencoded::byte_serialize(path.as_bytes()).collect();
    assert_eq!(location(&r), h.at(&format!("/oauth2/start?rd={rd}")));
    let r = client.get(location(&r)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND, "start");
    location(&r)
}

/// The provider's answer to `authorize` (auto-login): the callback, followed once.
async fn finish(h: &Harness, client: &Client, authorize: &str) -> reqwest::Response {
    h.idp.controls().set_auto_login(Some("alice".into()));
    let r = client.get(authorize).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND, "authorize");
    let callback = location(&r);
    assert!(
        callback.starts_with(&h.at("/oauth2/callback?")),
        "{callback}"
    );
    client.get(&callback).send().await.unwrap()
}

#[tokio::test]
async fn a_browser_steps_up_to_the_routes_acr_and_keeps_its_session_id() {
    let h = harness().await;
    let client = h.client();
    let cookie = h.login(&client, "alice").await;
    assert_eq!(
        stored_acr(&h, &cookie).await,
        None,
        "a plain login has no acr"
    );
    let hits = h.upstream_hits();

    let authorize = step_up_authorize_url(&h, &client, "/admin?tab=1").await;
    assert_eq!(
        h.upstream_hits(),
        hits,
        "never forwarded before the step-up"
    );
    let q = query_of(&authorize);
    assert_eq!(one(&q, "acr_values"), "urn:devidp:mfa urn:devidp:hwk");
    assert!(!q.contains_key("max_age"), "{authorize}");

    let r = finish(&h, &client, &authorize).await;
    assert_eq!(r.status(), StatusCode::FOUND, "callback");
    assert_eq!(location(&r), "/admin?tab=1");
    assert!(
        set_cookie(&r, SESSION).is_none(),
        "the session keeps its id: no new session cookie"
    );
    assert_eq!(live_sessions(&h).await, 1);
    assert_eq!(stored_acr(&h, &cookie).await.as_deref(), Some(MFA));

    let r = navigate(&h, &client, "/admin?tab=1").await;
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);
    assert_eq!(h.upstream_hits(), hits + 1);
}

#[tokio::test]
async fn anything_but_a_browser_navigation_gets_insufficient_user_authentication() {
    let h = harness().await;
    let client = h.client();
    h.login(&client, "alice").await;
    let hits = h.upstream_hits();
    for (path, html) in [("/admin", false), ("/api/admin", true)] {
        let mut request = client.get(h.at(path));
        if html {
            // An `api` route never redirects, not even a browser navigation.
            request = request.header(header::ACCEPT, "text/html");
        }
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        let challenge = r.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
        assert!(
            challenge.starts_with("Bearer error=\"insufficient_user_authentication\""),
            "{challenge}"
        );
        let acr = if path == "/admin" {
            "urn:devidp:mfa urn:devidp:hwk"
        } else {
            MFA
        };
        assert!(
            challenge.contains(&format!("acr_values=\"{acr}\"")),
            "{challenge}"
        );
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "insufficient_user_authentication");
        assert!(
            body["login_url"]
                .as_str()
                .unwrap()
                .ends_with(path.replace('/', "%2F").as_str())
        );
    }

    // A max_auth_age route: met right after login, then stale.
    client.get(h.at("/payments")).send().await.unwrap();
    h.advance(Duration::from_secs(16 * 60));
    let r = client.get(h.at("/payments")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let challenge = r.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
    assert!(challenge.ends_with(", max_age=900"), "{challenge}");
    assert!(!challenge.contains("acr_values"), "{challenge}");
    assert_eq!(
        h.upstream_hits(),
        hits + 1,
        "only the fresh /payments passed"
    );
}

#[tokio::test]
async fn a_provider_that_does_not_meet_the_step_up_gets_403_never_a_loop() {
    let h = harness().await;
    let client = h.client();
    let cookie = h.login(&client, "alice").await;
    // The provider ignores the requested acr.
    h.idp.controls().set_acr(Some("urn:devidp:pwd".into()));
    let authorize = step_up_authorize_url(&h, &client, "/admin").await;
    let r = finish(&h, &client, &authorize).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.headers().get(header::LOCATION).is_none(), "never a loop");
    assert!(
        set_cookie(&r, SESSION).is_none_or(|v| !v.is_empty()),
        "the session is not cleared"
    );
    // The session is as it was: still logged in, still without the acr.
    assert_eq!(live_sessions(&h).await, 1);
    assert_eq!(stored_acr(&h, &cookie).await, None);
    assert_eq!(navigate(&h, &client, "/").await.status(), StatusCode::OK);
    assert_eq!(
        navigate(&h, &client, "/admin").await.status(),
        StatusCode::FOUND
    );

    // A first login straight to the route, with a provider that cannot comply: 403, no session.
    let fresh = h.client();
    let authorize = step_up_authorize_url(&h, &fresh, "/admin").await;
    let r = finish(&h, &fresh, &authorize).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(&r, SESSION).is_none_or(|v| v.is_empty()));
    assert_eq!(live_sessions(&h).await, 1);

    // The knob was the cause: a complying provider lets the same browser in.
    h.idp.controls().set_acr(None);
    let authorize = step_up_authorize_url(&h, &client, "/admin").await;
    assert_eq!(
        finish(&h, &client, &authorize).await.status(),
        StatusCode::FOUND
    );
    assert_eq!(stored_acr(&h, &cookie).await.as_deref(), Some(MFA));
}

#[tokio::test]
async fn max_auth_age_asks_for_a_fresh_login_and_refuses_a_reused_one() {
    let h = harness().await;
    let client = h.client();
    let cookie = h.login(&client, "alice").await;
    assert_eq!(
        navigate(&h, &client, "/payments").await.status(),
        StatusCode::OK
    );
    h.advance(Duration::from_secs(16 * 60));

    let authorize = step_up_authorize_url(&h, &client, "/payments").await;
    let q = query_of(&authorize);
    assert_eq!(one(&q, "max_age"), "900");
    assert!(!q.contains_key("acr_values"), "{authorize}");

    // The provider reuses an authentication older than max_age: refused.
    h.idp
        .controls()
        .set_authenticated_ago(Duration::from_secs(3600));
    let r = finish(&h, &client, &authorize).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // A real re-authentication passes, under the same session id.
    h.idp.controls().set_authenticated_ago(Duration::ZERO);
    let authorize = step_up_authorize_url(&h, &client, "/payments").await;
    let r = finish(&h, &client, &authorize).await;
    assert_eq!(r.status(), StatusCode::FOUND);
    assert!(set_cookie(&r, SESSION).is_none());
    assert_eq!(
        navigate(&h, &client, "/payments").await.status(),
        StatusCode::OK
    );
    assert!(stored_acr(&h, &cookie).await.is_none());
    assert_eq!(live_sessions(&h).await, 1);
}

#[tokio::test]
async fn the_requirement_comes_from_the_landing_route_never_from_the_query() {
    let h = harness().await;
    let client = h.client();
    let start = |query: &'static str| {
        let client = client.clone();
        let url = h.at(&format!("/oauth2/start?{query}"));
        async move {
            let r = client.get(url).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::FOUND, "{query}");
            query_of(&location(&r))
        }
    };
    let q = start("rd=%2Fadmin&acr_values=urn%3Adevidp%3Apwd&max_age=99999").await;
    assert_eq!(q["acr_values"], vec!["urn:devidp:mfa urn:devidp:hwk"]);
    assert!(!q.contains_key("max_age"));
    let q = start("rd=%2F&acr_values=urn%3Adevidp%3Apwd").await;
    assert!(
        !q.contains_key("acr_values"),
        "no requirement: none asked for"
    );
    // Below the prefix, with a query of its own.
    let q = start("rd=%2Fadmin%2Fx%3Facr_values%3Dnone").await;
    assert_eq!(q["acr_values"], vec!["urn:devidp:mfa urn:devidp:hwk"]);
}

#[tokio::test]
async fn forward_auth_answers_a_step_up_with_the_challenge() {
    let h = harness().await;
    let client = h.client();
    h.login(&client, "alice").await;
    let r = (client.get(h.at("/oauth2/auth")))
        .header(header::ACCEPT, "text/html")
        .header("X-Forwarded-Method", "GET")
        .header("X-Forwarded-Uri", "/admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let challenge = r.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
    assert!(
        challenge.contains("insufficient_user_authentication"),
        "{challenge}"
    );
    let r = (client.get(h.at("/oauth2/auth")))
        .header("X-Forwarded-Method", "GET")
        .header("X-Forwarded-Uri", "/other")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "no requirement elsewhere");
}

fn load(routes: &str) -> Result<Config, String> {
    let toml = format!(
        r#"
        [server]
        public_url = "http://127.0.0.1:1"
        [upstream]
        url = "http://127.0.0.1:3"
        [oidc]
        issuer = "http://127.0.0.1:2"
        client_id = "c"
        client_secret = "s"
        [session]
        cookie_secrets = ["{}"]
        {routes}
        "#,
        support::COOKIE_SECRET_A
    );
    Config::from_figment(Figment::from(Toml::string(&toml))).map_err(|e| e.to_string())
}

#[test]
fn step_up_keys_are_validated_and_printed_back() {
    let cfg =
        load("[[route]]\npath = \"/a\"\nrequire_acr = [\"gold\"]\nmax_auth_age = \"15m\"").unwrap();
    assert_eq!(cfg.routes[0].require_acr, vec!["gold".to_owned()]);
    assert_eq!(cfg.routes[0].max_auth_age, Some(Duration::from_secs(900)));
    let printed = cfg.redacted_toml();
    assert!(printed.contains("require_acr = [\"gold\"]"), "{printed}");
    assert!(printed.contains("max_auth_age = \"15m\""), "{printed}");
    for (bad, key) in [
        ("require_acr = [\"a b\"]", "route[0].require_acr[0]"),
        ("require_acr = [\"a\\\"b\"]", "route[0].require_acr[0]"),
        ("require_acr = [\"\"]", "route[0].require_acr[0]"),
        ("max_auth_age = \"soon\"", "route[0].max_auth_age"),
        ("max_auth_age = \"0s\"", "route[0].max_auth_age"),
    ] {
        let e = load(&format!("[[route]]\npath = \"/a\"\n{bad}")).unwrap_err();
        assert!(e.contains(key), "{bad}: {e}");
    }
}

/// The Redis store upgrades the session in place too (under the same id, shared by replicas).
#[tokio::test]
async fn a_step_up_on_the_redis_store_keeps_the_session_id() {
    let redis = support::redis::RedisServer::start();
    let config = format!(
        "{ROUTES}\n[session]\nstore = \"redis\"\nredis_url = \"{}\"\n",
        redis.url()
    );
    let h = Harness::builder().config(&config).start().await;
    let client = h.client();
    let cookie = h.login(&client, "alice").await;
    let authorize = step_up_authorize_url(&h, &client, "/admin").await;
    let r = finish(&h, &client, &authorize).await;
    assert_eq!(r.status(), StatusCode::FOUND);
    assert!(set_cookie(&r, SESSION).is_none(), "same session id");
    assert_eq!(stored_acr(&h, &cookie).await.as_deref(), Some(MFA));
    assert_eq!(
        navigate(&h, &client, "/admin").await.status(),
        StatusCode::OK
    );
}
