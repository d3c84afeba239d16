//! Refresh grants (rotation on and off, JWT access tokens) and injected token faults.

use std::sync::Arc;
use std::time::Duration;

use devidp::idp::{AccessTokenFormat, TokenFault};
use reqwest::StatusCode;
use serde_json::Value;

use crate::*;

// === refresh ===

#[tokio::test]
async fn rotation_returns_new_token_and_reuse_kills_the_grant() {
    let idp = start().await;
    let first = tokens(&idp, "alice").await;
    let old = str_of(&first, "refresh_token");
    let second: Value = refresh(&idp, old).await.json().await.unwrap();
    let new = str_of(&second, "refresh_token");
    assert_ne!(old, new);
    let id_token = payload(str_of(&second, "id_token"));
    assert!(id_token.get("nonce").is_none());
    assert_eq!(id_token["sid"], payload(str_of(&first, "id_token"))["sid"]);

    assert_oauth_error(
        refresh(&idp, old).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    assert_oauth_error(
        refresh(&idp, new).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    assert_eq!(idp.controls().refresh_calls(), 3);
}

#[tokio::test]
async fn rotation_off_keeps_the_refresh_token() {
    let idp = start_with(|o| o.rotate_refresh_tokens = false).await;
    let first = tokens(&idp, "alice").await;
    let token = str_of(&first, "refresh_token");
    for _ in 0..2 {
        let body: Value = refresh(&idp, token).await.json().await.unwrap();
        assert_eq!(body["refresh_token"], token);
    }
    idp.controls().set_refresh_returns_refresh_token(false);
    idp.controls().set_issue_id_token_on_refresh(false);
    let body: Value = refresh(&idp, token).await.json().await.unwrap();
    assert!(body.get("refresh_token").is_none() && body.get("id_token").is_none());
    assert!(body["access_token"].is_string());
}

#[tokio::test]
async fn jwt_access_tokens_carry_resource_audience_and_expiry() {
    let idp = start().await;
    idp.controls()
        .set_access_token_format(AccessTokenFormat::Jwt);
    idp.controls().set_access_ttl(Duration::from_secs(5));
    idp.controls().set_omit_expires_in(true);
    let login = login(
        &idp,
        "alice",
        "openid offline_access",
        &[("resource", "https://api.test")],
    )
    .await;
    let body: Value = exchange(&idp, &login.code, &login.verifier)
        .await
        .json()
        .await
        .unwrap();
    assert!(body.get("expires_in").is_none());
    let access = payload(str_of(&body, "access_token"));
    assert_eq!(access["aud"], "https://api.test");
    assert_eq!(access["iss"], idp.issuer());
    assert_eq!(access["client_id"], CLIENT_ID);
    assert_eq!(access["sub"], "alice");
    assert_eq!(
        access["exp"].as_u64().unwrap() - access["iat"].as_u64().unwrap(),
        5
    );

    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", str_of(&body, "refresh_token")),
        ("resource", "https://other.test"),
    ];
    let body: Value = token_request(&idp, &form).await.json().await.unwrap();
    assert_eq!(
        payload(str_of(&body, "access_token"))["aud"],
        "https://other.test"
    );
    assert_eq!(idp.controls().token_requests_with_resource(), 1);
    assert_eq!(
        idp.controls().last_token_request_form()["resource"],
        vec!["https://other.test"]
    );
}

// === faults ===

#[tokio::test]
async fn queued_faults_are_consumed_one_per_request() {
    let idp = start().await;
    let first = tokens(&idp, "alice").await;
    let token = str_of(&first, "refresh_token");
    idp.controls()
        .push_token_fault(TokenFault::Status(500, "oops".into()));
    idp.controls().push_token_fault(TokenFault::InvalidGrant);
    let response = refresh(&idp, token).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(response.text().await.unwrap(), "oops");
    assert_oauth_error(
        refresh(&idp, token).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    // The faults never touched the grant: the token still works.
    assert_eq!(refresh(&idp, token).await.status(), StatusCode::OK);
    assert_eq!(idp.controls().refresh_calls(), 3);
}

#[tokio::test]
async fn sticky_fault_holds_until_cleared() {
    let idp = start().await;
    let first = tokens(&idp, "alice").await;
    let token = str_of(&first, "refresh_token");
    let body = r#"{"error":"invalid_grant"}"#;
    idp.controls()
        .set_token_fault(Some(TokenFault::Status(400, body.into())));
    for _ in 0..2 {
        assert_oauth_error(
            refresh(&idp, token).await,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        )
        .await;
    }
    idp.controls().set_token_fault(None);
    assert_eq!(refresh(&idp, token).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn hang_times_out_the_client_and_ends_on_shutdown() {
    let idp = start().await;
    let first = tokens(&idp, "alice").await;
    let token = str_of(&first, "refresh_token").to_owned();
    idp.controls().set_token_fault(Some(TokenFault::Hang));
    let timed = client()
        .post(format!("{}/token", idp.issuer()))
        .header("authorization", basic_auth())
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", token.as_str()),
        ])
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(timed.unwrap_err().is_timeout());

    let hanging = {
        let idp = Arc::clone(&idp);
        tokio::spawn(async move { refresh(&idp, &token).await.status() })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!hanging.is_finished());
    idp.shutdown();
    let status = tokio::time::timeout(Duration::from_secs(5), hanging)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn delay_answers_normally_afterwards() {
    let idp = start().await;
    let first = tokens(&idp, "alice").await;
    idp.controls()
        .push_token_fault(TokenFault::Delay(Duration::from_millis(300)));
    let started = std::time::Instant::now();
    let response = refresh(&idp, str_of(&first, "refresh_token")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));
}
