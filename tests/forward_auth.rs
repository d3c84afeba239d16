//! `/oauth2/auth`, the forward-auth check for nginx `auth_request`, Traefik `forwardAuth` and
//! Envoy `ext_authz`: 202 with the upstream's headers, 401 JSON with
//! `login_url` (never a redirect), 403; route rules applied to the ORIGINAL request, which is
//! believed only from `trusted_proxies`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use authgate::session::SessionStore;
use reqwest::{Client, StatusCode, header};
use serde_json::{Value, json};
use support::Harness;

const ROUTES: &str = r#"
[server]
trusted_proxies = ["127.0.0.1/32"]

[[route]]
path = "/admin"
policy = "deny"

[[route]]
path = "/public/"
policy = "public"

[[route]]
path = "/items"
methods = ["POST"]
policy = "deny"

[[route]]
path = "/ops"
require_groups = ["ops"]
"#;

async fn trusted() -> Harness {
    Harness::builder().config(ROUTES).start().await
}

/// Asks `/oauth2/auth` about `headers` (the proxy's view of the original request), with
/// `X-Forwarded-Method: GET` unless `headers` name a method (every proxy sends one).
async fn check(h: &Harness, client: &Client, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut headers = headers.to_vec();
    if !headers
        .iter()
        .any(|(name, _)| *name == "X-Forwarded-Method")
    {
        headers.push(("X-Forwarded-Method", "GET"));
    }
    check_exact(h, client, &headers).await
}

/// Asks `/oauth2/auth` with exactly these headers.
async fn check_exact(h: &Harness, client: &Client, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = client
        .get(h.at("/oauth2/auth"))
        .header(header::ACCEPT, "text/html,application/xhtml+xml");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

fn text(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

async fn assert_401_json(r: reqwest::Response, h: &Harness, landing_enc: &str) {
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        r.headers().get(header::LOCATION).is_none(),
        "forward auth never redirects"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["login_url"].as_str().unwrap(),
        h.at(&format!("/oauth2/start?rd={landing_enc}"))
    );
}

/// The current `Authorization` value of the session behind `cookie`.
async fn stored_bearer(h: &Harness, cookie: &str) -> String {
    let key = h.gateway.cookies().decode(cookie).expect("a valid cookie");
    let session = h
        .gateway
        .store()
        .load(&key)
        .await
        .unwrap()
        .expect("a session");
    session.tokens.bearer.to_str().unwrap().to_owned()
}

#[tokio::test]
async fn without_a_session_401_json_with_login_url_never_a_redirect() {
    let h = trusted().await;
    let c = h.client();
    let r = check(
        &h,
        &c,
        &[
            ("X-Forwarded-Method", "GET"),
            ("X-Forwarded-Uri", "/app/page?x=1"),
        ],
    )
    .await;
    assert_401_json(r, &h, "%2Fapp%2Fpage%3Fx%3D1").await;
    // Without an original request, a trusted proxy's question cannot be answered: never
    // judged as `GET /`.
    let r = check_exact(&h, &c, &[]).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = check_exact(&h, &c, &[("X-Forwarded-Uri", "/app")]).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn with_a_session_202_with_the_upstream_headers_and_no_cookie() {
    let h = trusted().await;
    h.idp
        .controls()
        .set_user_claims("alice", json!({"groups": ["dev", "ops"]}));
    let c = h.client();
    h.login(&c, "alice").await;
    let r = check(
        &h,
        &c,
        &[
            ("X-Forwarded-Uri", "/app/page"),
            // A client-supplied identity never comes back vouched.
            ("X-Forwarded-User", "mallory"),
            ("Authorization", "Bearer forged"),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(r.headers().get(header::SET_COOKIE).is_none());
    let authorization = text(&r, "authorization").unwrap();
    assert!(authorization.starts_with("Bearer "), "{authorization}");
    assert_ne!(authorization, "Bearer forged");
    assert_eq!(text(&r, "x-forwarded-user").as_deref(), Some("alice"));
    assert_eq!(
        text(&r, "x-forwarded-email").as_deref(),
        Some("alice@example.test")
    );
    assert_eq!(
        text(&r, "x-forwarded-preferred-username").as_deref(),
        Some("alice")
    );
    assert_eq!(text(&r, "x-forwarded-groups").as_deref(), Some("dev,ops"));
    // Exactly what the upstream gets when the gateway proxies itself.
    let echo = h.echo(&c, "/app/page").await;
    assert_eq!(
        echo.header("authorization").as_deref(),
        Some(authorization.as_str())
    );
    // A route with a group requirement the user meets.
    let r = check(&h, &c, &[("X-Forwarded-Uri", "/ops/x")]).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_near_expiry_session_is_refreshed_and_the_new_token_returned() {
    let h = trusted().await;
    // Within refresh_before_expiry (10 s in the harness) from the start.
    h.idp.controls().set_access_ttl(Duration::from_secs(5));
    let c = h.client();
    let cookie = h.login(&c, "alice").await;
    let before = stored_bearer(&h, &cookie).await;
    let refreshes = h.idp.controls().refresh_calls();

    let r = check(&h, &c, &[("X-Forwarded-Uri", "/app")]).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(r.headers().get(header::SET_COOKIE).is_none());
    let returned = text(&r, "authorization").unwrap();
    assert_eq!(h.idp.controls().refresh_calls(), refreshes + 1);
    assert_ne!(returned, before, "the old access token was returned");
    assert_eq!(returned, stored_bearer(&h, &cookie).await);
}

#[tokio::test]
async fn route_rules_apply_to_the_original_request() {
    let h = trusted().await;
    let anonymous = h.client();
    let alice = h.client();
    h.login(&alice, "alice").await;

    // deny: 403 with or without a session.
    for c in [&anonymous, &alice] {
        let r = check(&h, c, &[("X-Forwarded-Uri", "/admin/users")]).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        // The original URI is normalized like a proxied one.
        let r = check(&h, c, &[("X-Forwarded-Uri", "/public/%2e%2e/admin")]).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let r = check(&h, c, &[("X-Original-URI", "/admin")]).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }

    // public: 202 without a session, and no identity to pass on.
    let r = check(&h, &anonymous, &[("X-Forwarded-Uri", "/public/x?y=1")]).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = check(&h, &anonymous, &[("X-Original-URI", "/public/x")]).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = check(&h, &alice, &[("X-Original-URI", "/public/x")]).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(text(&r, "authorization").is_none());
    assert!(text(&r, "x-forwarded-user").is_none());

    // X-Original-URI (nginx) on an authenticated route.
    let r = check(&h, &anonymous, &[("X-Original-URI", "/app?q=1")]).await;
    assert_401_json(r, &h, "%2Fapp%3Fq%3D1").await;
    let r = check(&h, &alice, &[("X-Original-URI", "/app")]).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    // X-Forwarded-Method: a POST-only deny route.
    let post = [
        ("X-Forwarded-Method", "POST"),
        ("X-Forwarded-Uri", "/items/1"),
    ];
    assert_eq!(
        check(&h, &alice, &post).await.status(),
        StatusCode::FORBIDDEN
    );
    let get = [
        ("X-Forwarded-Method", "GET"),
        ("X-Forwarded-Uri", "/items/1"),
    ];
    assert_eq!(check(&h, &alice, &get).await.status(), StatusCode::ACCEPTED);
    let r = check(&h, &anonymous, &get).await;
    assert_401_json(r, &h, "%2Fitems%2F1").await;

    // require_groups: a logged-in user without the group gets 403, not 401.
    let r = check(&h, &alice, &[("X-Forwarded-Uri", "/ops")]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // A path the gateway would refuse is refused here too.
    let r = check(&h, &alice, &[("X-Forwarded-Uri", "/a%2fb")]).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn original_request_headers_from_an_untrusted_peer_are_ignored() {
    // No trusted_proxies: whatever the headers say, the question is "is there a valid
    // session" (login lands on `/`).
    let h = Harness::builder()
        .config(
            r#"
            [[route]]
            path = "/admin"
            policy = "deny"
            [[route]]
            path = "/public/"
            policy = "public"
            "#,
        )
        .start()
        .await;
    let anonymous = h.client();
    for spoofed in [
        [
            ("X-Forwarded-Method", "GET"),
            ("X-Forwarded-Uri", "/public/x"),
        ],
        [
            ("X-Forwarded-Method", "GET"),
            ("X-Original-URI", "/public/x"),
        ],
    ] {
        let r = check(&h, &anonymous, &spoofed).await;
        assert_401_json(r, &h, "%2F").await;
    }
    // With a session, a spoofed deny target does not matter either: the session is valid.
    let alice = h.client();
    h.login(&alice, "alice").await;
    let r = check(&h, &alice, &[("X-Forwarded-Uri", "/admin")]).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(text(&r, "x-forwarded-user").as_deref(), Some("alice"));
}

#[tokio::test]
async fn a_peer_outside_the_trusted_range_is_not_believed() {
    // A trusted range that does not contain 127.0.0.1.
    let h = Harness::builder()
        .config(
            r#"
            [server]
            trusted_proxies = ["10.0.0.0/8", "::1/128"]
            [[route]]
            path = "/public/"
            policy = "public"
            "#,
        )
        .start()
        .await;
    let anonymous = h.client();
    let r = check(&h, &anonymous, &[("X-Forwarded-Uri", "/public/x")]).await;
    assert_401_json(r, &h, "%2F").await;
}
