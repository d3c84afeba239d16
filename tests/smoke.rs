//! The harness itself: login round trip, identity headers upstream, userinfo.
mod support;

use support::Harness;

#[tokio::test]
async fn login_then_proxy_with_bearer_and_identity() {
    let h = Harness::start().await;
    let client = h.client();
    h.login(&client, "alice").await;
    let echo = h.echo(&client, "/hello").await;
    assert_eq!(echo.path(), "/hello");
    assert!(echo.bearer().is_some_and(|t| !t.is_empty()));
    assert_eq!(echo.header("x-forwarded-user").as_deref(), Some("alice"));
    assert_eq!(
        echo.header("x-forwarded-email").as_deref(),
        Some("alice@example.test")
    );
    assert!(
        echo.header("cookie").is_none(),
        "session cookie must not reach the upstream"
    );
}
