//! One access token per resource (Logto issues one per API resource): the code exchange asks
//! for the first resource, refresh grants fetch the others, and a route's `bearer_resource`
//! chooses which token goes upstream.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod support;

use std::time::Duration;

use base64::Engine;
use devidp::idp::AccessTokenFormat;
use serde_json::Value;
use support::Harness;

const A: &str = "https://a.example.test";
const B: &str = "https://b.example.test";

fn config() -> String {
    format!(
        r#"
        [oidc]
        resource = ["{A}", "{B}"]
        [[route]]
        path = "/b/"
        bearer_resource = "{B}"
        "#
    )
}

fn audience(bearer: &str) -> String {
    let payload = bearer.split('.').nth(1).expect("a JWT access token");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let claims: Value = serde_json::from_slice(&bytes).unwrap();
    claims["aud"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn each_route_gets_the_token_of_its_resource() {
    let h = Harness::builder().config(&config()).start().await;
    h.idp
        .controls()
        .set_access_token_format(AccessTokenFormat::Jwt);
    let client = h.client();
    h.login(&client, "alice").await;
    // The code exchange named only the first resource; one refresh grant fetched the second.
    assert_eq!(h.idp.controls().code_calls(), 1);
    assert_eq!(h.idp.controls().refresh_calls(), 1);
    assert_eq!(
        h.idp.controls().last_token_request_form()["resource"],
        [B.to_owned()],
        "the second resource is asked for alone"
    );
    let default = h.echo(&client, "/x").await.bearer().unwrap();
    let chosen = h.echo(&client, "/b/x").await.bearer().unwrap();
    assert_eq!(audience(&default), A);
    assert_eq!(audience(&chosen), B);
    assert_ne!(default, chosen);
}

#[tokio::test]
async fn every_resource_token_is_refreshed_with_rotation() {
    let h = Harness::builder()
        .config(&config())
        .idp_options(|o| o.access_ttl = Duration::from_secs(5))
        .start()
        .await;
    h.idp
        .controls()
        .set_access_token_format(AccessTokenFormat::Jwt);
    let client = h.client();
    h.login(&client, "alice").await;
    let before = (
        h.echo(&client, "/x").await.bearer().unwrap(),
        h.echo(&client, "/b/x").await.bearer().unwrap(),
    );
    // Tokens of 5 s are inside the 10 s refresh window: the next request refreshes both,
    // each grant spending the refresh token the previous one returned (rotation is on, and
    // the provider revokes the grant on any reuse).
    h.idp.controls().set_access_ttl(Duration::from_secs(300));
    let calls = h.idp.controls().refresh_calls();
    let after = (
        h.echo(&client, "/x").await.bearer().unwrap(),
        h.echo(&client, "/b/x").await.bearer().unwrap(),
    );
    assert_eq!(
        h.idp.controls().refresh_calls(),
        calls + 2,
        "one grant per resource"
    );
    assert_ne!(before.0, after.0);
    assert_ne!(before.1, after.1);
    assert_eq!(
        (audience(&after.0), audience(&after.1)),
        (A.to_owned(), B.to_owned())
    );
    // Still alive: no reused refresh token revoked the grant.
    let again = h.echo(&client, "/b/x").await.bearer().unwrap();
    assert_eq!(again, after.1);
    assert_eq!(h.idp.controls().refresh_calls(), calls + 2);
}
