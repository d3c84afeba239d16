//! Revocation, userinfo, end-session, stopping on drop, and the echo upstream.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::*;

// === revocation, userinfo, end session, lifecycle ===

#[tokio::test]
async fn revoked_refresh_token_is_invalid_grant() {
    let idp = start().await;
    let body = tokens(&idp, "alice").await;
    let token = str_of(&body, "refresh_token");
    let response = client()
        .post(format!("{}/revoke", idp.issuer()))
        .header("authorization", basic_auth())
        .form(&[("token", token), ("token_type_hint", "refresh_token")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(idp.controls().revocations(), 1);
    assert_eq!(idp.controls().revoked_tokens(), vec![token.to_owned()]);
    assert_oauth_error(
        refresh(&idp, token).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
}

#[tokio::test]
async fn userinfo_needs_a_live_access_token() {
    let idp = start().await;
    let body = tokens(&idp, "erin").await;
    let url = format!("{}/userinfo", idp.issuer());
    let access = str_of(&body, "access_token");
    let info: Value = client()
        .get(&url)
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["sub"], "erin");
    assert_eq!(info["email"], "erin@example.test");
    assert_eq!(info["groups"], json!([]));
    let response = client().get(&url).bearer_auth("nope").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    idp.controls().revoke_grants_of("erin");
    let response = client().get(&url).bearer_auth(access).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let refreshed = refresh(&idp, str_of(&body, "refresh_token")).await;
    assert_oauth_error(refreshed, StatusCode::BAD_REQUEST, "invalid_grant").await;
    assert_eq!(idp.controls().userinfo_calls(), 3);
}

#[tokio::test]
async fn end_session_redirects_or_shows_a_page() {
    let idp = start().await;
    let url = format!(
        "{}/end_session?id_token_hint=abc&client_id=x&post_logout_redirect_uri={}&state=s",
        idp.issuer(),
        form_encode("http://app.test/")
    );
    let response = client().get(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(location(&response), "http://app.test/?state=s");
    assert_eq!(
        idp.controls().last_end_session_query()["id_token_hint"],
        vec!["abc"]
    );

    let response = client()
        .get(format!("{}/end_session", idp.issuer()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.unwrap();
    assert!(page.contains(BANNER) && page.contains("Signed out"));
    assert_eq!(idp.controls().end_session_calls(), 2);
}

#[tokio::test]
async fn dropping_the_handle_stops_the_server() {
    let idp = start().await;
    let url = format!("{}/jwks", idp.issuer());
    assert_eq!(
        client().get(&url).send().await.unwrap().status(),
        StatusCode::OK
    );
    drop(idp);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(client().get(&url).send().await.is_err());
}

// === echo upstream ===

#[tokio::test]
async fn echo_shows_full_headers_as_json_and_truncates_in_html() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/some/path?a=1&b=2",
        listener.local_addr().unwrap()
    );
    let server = tokio::spawn(devidp::echo::serve_echo(listener));
    let token = "Bearer abcdefghijklmnopqrstuvwxyz0123456789";
    let request = client().get(&url).header("authorization", token);
    let json: Value = request
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(json["method"], "GET");
    assert_eq!(json["path"], "/some/path");
    assert_eq!(json["query"], "a=1&b=2");
    assert_eq!(json["headers"]["authorization"], json!([token]));

    let page = client()
        .get(&url)
        .header("authorization", token)
        .send()
        .await
        .unwrap();
    let page = page.text().await.unwrap();
    assert!(page.contains("Bearer abcde...") && !page.contains("0123456789"));
    assert!(page.contains("href=\"/oauth2/sign_out\""));
    server.abort();
}
