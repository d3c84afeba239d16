//! Time is one clock the tests can move (`Harness::advance`): session timeouts, token expiry
//! and refresh, the login cookie's age and a logout token's age are judged by it, so these
//! cases take milliseconds instead of minutes of sleeping.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use reqwest::{Response, StatusCode, header};
use support::{Harness, bare_client, location, logout_token, post_logout_token};

const MINUTE: Duration = Duration::from_secs(60);

async fn api(h: &Harness, cookie: &str) -> Response {
    bare_client()
        .get(h.at("/page"))
        .header(header::ACCEPT, "application/json")
        .header(header::COOKIE, format!("authgate_session={cookie}"))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_unused_session_ends_after_idle_timeout_and_use_keeps_it() {
    let h = Harness::builder()
        .config("[session]\nidle_timeout = \"10m\"\nabsolute_timeout = \"1h\"")
        .start()
        .await;
    let cookie = h.login(&h.client(), "alice").await;
    for _ in 0..3 {
        h.advance(8 * MINUTE);
        assert_eq!(
            api(&h, &cookie).await.status(),
            StatusCode::OK,
            "used in time"
        );
    }
    h.advance(11 * MINUTE);
    assert_eq!(
        api(&h, &cookie).await.status(),
        StatusCode::UNAUTHORIZED,
        "idle for 11 minutes"
    );
}

#[tokio::test]
async fn a_session_in_use_ends_at_its_absolute_timeout() {
    let h = Harness::builder()
        .config("[session]\nidle_timeout = \"10m\"\nabsolute_timeout = \"30m\"")
        .idp_options(|o| o.access_ttl = Duration::from_secs(3600))
        .start()
        .await;
    let cookie = h.login(&h.client(), "bob").await;
    for _ in 0..3 {
        h.advance(9 * MINUTE);
        assert_eq!(api(&h, &cookie).await.status(), StatusCode::OK);
    }
    h.advance(4 * MINUTE); // 31 minutes after the login
    assert_eq!(api(&h, &cookie).await.status(), StatusCode::UNAUTHORIZED);
}

/// The provider's clock moves with the gateway's: the token is refreshed ahead of its expiry,
/// and the new ID token (iat, exp) verifies against the moved time.
#[tokio::test]
async fn a_token_is_refreshed_once_time_reaches_its_refresh_window() {
    let h = Harness::builder()
        .config("[session]\nidle_timeout = \"2h\"\nabsolute_timeout = \"1d\"")
        .start()
        .await;
    let client = h.client();
    let cookie = h.login(&client, "carol").await;
    let first = h.echo(&client, "/page").await.bearer().unwrap();
    assert_eq!(h.idp.controls().refresh_calls(), 0);
    h.advance(Duration::from_secs(295)); // access tokens live 300 s; refresh 10 s ahead
    let second = h.echo(&client, "/page").await.bearer().unwrap();
    assert_eq!(h.idp.controls().refresh_calls(), 1);
    assert_ne!(first, second, "the upstream gets the new token");
    h.advance(Duration::from_secs(3600)); // long past the new token's expiry
    assert_eq!(api(&h, &cookie).await.status(), StatusCode::OK);
    assert_eq!(h.idp.controls().refresh_calls(), 2);
}

#[tokio::test]
async fn a_login_cookie_older_than_login_timeout_is_refused() {
    let h = Harness::builder()
        .config("[session]\nlogin_timeout = \"5m\"")
        .start()
        .await;
    let client = h.client();
    h.idp.controls().set_auto_login(Some("dave".into()));
    let start = client.get(h.at("/oauth2/start")).send().await.unwrap();
    let back = client.get(location(&start)).send().await.unwrap();
    h.advance(6 * MINUTE);
    let callback = client.get(location(&back)).send().await.unwrap();
    assert_eq!(callback.status(), StatusCode::BAD_REQUEST);
    assert!(callback.text().await.unwrap().contains("expired"));
}

#[tokio::test]
async fn a_logout_token_issued_too_long_ago_is_refused() {
    let h = Harness::start().await;
    h.login(&h.client(), "erin").await;
    let sid = h.idp.controls().last_issued_sid().unwrap();
    let token = logout_token(&h.idp, &sid); // `iat`: now, by the system clock
    h.advance(15 * MINUTE); // logout tokens are accepted for 10 minutes (+ 1 of leeway)
    assert_eq!(post_logout_token(&h, &token).await, StatusCode::BAD_REQUEST);
}
