//! The authorization code flow with PKCE, the login form and client authentication.

use std::str::FromStr;

use devidp::idp::ClientAuth;
use openidconnect::Nonce;
use openidconnect::core::CoreIdToken;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::*;

// === authorization code flow ===

#[tokio::test]
async fn code_flow_with_pkce_issues_verifiable_tokens() {
    let idp = start().await;
    idp.controls().set_user_claims(
        "alice",
        json!({ "groups": ["admins", "dev"], "tenant": "t1" }),
    );
    let login = login(
        &idp,
        "alice",
        "openid profile email offline_access",
        &[("prompt", "consent")],
    )
    .await;
    let query = idp.controls().last_authorize_query();
    assert_eq!(query["code_challenge_method"], vec!["S256"]);
    assert_eq!(query["prompt"], vec!["consent"]);
    assert_eq!(query["nonce"], vec!["nonce-1"]);

    let response = exchange(&idp, &login.code, &login.verifier).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 30);
    assert_eq!(body["scope"], "openid profile email offline_access");
    assert!(body["refresh_token"].is_string());

    let id_token = CoreIdToken::from_str(str_of(&body, "id_token")).unwrap();
    let claims = id_token
        .claims(&verifier(&idp, jwks(&idp).await), &Nonce::new(login.nonce))
        .unwrap();
    assert_eq!(claims.subject().as_str(), "alice");
    assert_eq!(
        claims.email().map(|e| e.as_str()),
        Some("alice@example.test")
    );
    let raw = payload(str_of(&body, "id_token"));
    assert_eq!(raw["groups"], json!(["admins", "dev"]));
    assert_eq!(raw["tenant"], "t1");
    assert_eq!(raw["preferred_username"], "alice");
    assert!(raw["sid"].is_string() && raw["at_hash"].is_string());

    assert_eq!(idp.controls().authorize_calls(), 1);
    assert_eq!(idp.controls().code_calls(), 1);
    assert_eq!(
        idp.controls().last_token_client_auth(),
        Some(ClientAuth::SecretBasic)
    );
    let form = idp.controls().last_token_request_form();
    assert_eq!(form["grant_type"], vec!["authorization_code"]);
    assert!(!form.contains_key("client_secret") && !form.contains_key("client_id"));
}

#[tokio::test]
async fn no_offline_access_means_no_refresh_token() {
    let idp = start().await;
    let login = login(&idp, "carol", "openid email", &[]).await;
    let body: Value = exchange(&idp, &login.code, &login.verifier)
        .await
        .json()
        .await
        .unwrap();
    assert!(body.get("refresh_token").is_none());
    assert!(body["id_token"].is_string());
}

#[tokio::test]
async fn wrong_pkce_verifier_is_invalid_grant() {
    let idp = start().await;
    let login = login(&idp, "alice", "openid", &[]).await;
    let response = exchange(
        &idp,
        &login.code,
        "a-different-verifier-0123456789-0123456789-xyz",
    )
    .await;
    assert_oauth_error(response, StatusCode::BAD_REQUEST, "invalid_grant").await;
}

#[tokio::test]
async fn replayed_code_is_invalid_grant_and_revokes_the_login() {
    let idp = start().await;
    let login = login(&idp, "alice", "openid offline_access", &[]).await;
    let first: Value = exchange(&idp, &login.code, &login.verifier)
        .await
        .json()
        .await
        .unwrap();
    let replay = exchange(&idp, &login.code, &login.verifier).await;
    assert_oauth_error(replay, StatusCode::BAD_REQUEST, "invalid_grant").await;
    let response = refresh(&idp, str_of(&first, "refresh_token")).await;
    assert_oauth_error(response, StatusCode::BAD_REQUEST, "invalid_grant").await;
    assert_eq!(idp.controls().code_calls(), 2);
}

#[tokio::test]
async fn authorize_requires_pkce_and_a_known_client() {
    let idp = start().await;
    idp.controls().set_auto_login(Some("alice".into()));
    let url = authorize_url(&idp, "openid", "c", &[])
        .await
        .replace("code_challenge_method=S256", "code_challenge_method=plain");
    let response = client().get(url).send().await.unwrap();
    let query = query_of(&location(&response));
    assert_eq!(query["error"], "invalid_request");
    assert_eq!(query["state"], "st-1");

    let url = authorize_url(&idp, "openid", "c", &[])
        .await
        .replace("client_id=demo", "client_id=other");
    let response = client().get(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.text().await.unwrap().contains(BANNER));
}

#[tokio::test]
async fn login_form_posts_back_and_redirects_with_a_code() {
    let idp = start().await;
    let (verifier, challenge) = pkce();
    let url = authorize_url(
        &idp,
        "openid",
        &challenge,
        &[("resource", "https://api.test")],
    )
    .await;
    let response = client().get(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.unwrap();
    assert!(page.contains(BANNER) && page.contains("action=\"/login\""));
    assert!(page.contains("name=\"resource\" value=\"https://api.test\""));

    let mut form: Vec<(String, String)> = idp
        .controls()
        .last_authorize_query()
        .into_iter()
        .flat_map(|(k, vs)| vs.into_iter().map(move |v| (k.clone(), v)))
        .collect();
    form.push(("username".into(), "dora".into()));
    let response = client()
        .post(format!("{}/login", idp.issuer()))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    let query = query_of(&location(&response));
    assert_eq!(query["state"], "st-1");
    let body: Value = exchange(&idp, &query["code"], &verifier)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(payload(str_of(&body, "id_token"))["sub"], "dora");
}

// === client authentication ===

#[tokio::test]
async fn wrong_secret_is_invalid_client_and_post_auth_works() {
    let idp = start().await;
    let login = login(&idp, "alice", "openid", &[]).await;
    let response = client()
        .post(format!("{}/token", idp.issuer()))
        .basic_auth(CLIENT_ID, Some("wrong"))
        .form(&[("grant_type", "authorization_code"), ("code", &login.code)])
        .send()
        .await
        .unwrap();
    assert_oauth_error(response, StatusCode::UNAUTHORIZED, "invalid_client").await;

    let form = [
        ("grant_type", "authorization_code"),
        ("code", login.code.as_str()),
        ("code_verifier", login.verifier.as_str()),
        ("redirect_uri", REDIRECT_URI),
        ("client_id", CLIENT_ID),
        ("client_secret", CLIENT_SECRET),
    ];
    let response = client()
        .post(format!("{}/token", idp.issuer()))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        idp.controls().last_token_client_auth(),
        Some(ClientAuth::SecretPost)
    );
    assert!(
        !idp.controls()
            .last_token_request_form()
            .contains_key("client_secret")
    );
}

#[tokio::test]
async fn public_client_needs_only_its_id() {
    let idp = start_with(|o| o.client_secret = None).await;
    let login = login(&idp, "alice", "openid", &[]).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", login.code.as_str()),
        ("code_verifier", login.verifier.as_str()),
        ("redirect_uri", REDIRECT_URI),
        ("client_id", CLIENT_ID),
    ];
    let response = client()
        .post(format!("{}/token", idp.issuer()))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        idp.controls().last_token_client_auth(),
        Some(ClientAuth::None)
    );
}

// === RFC 9207: the authorization response's `iss` ===

#[tokio::test]
async fn authorization_responses_carry_iss_as_the_controls_say() {
    use devidp::idp::ResponseIss;
    let idp = start().await;
    let issuer = idp.issuer();
    idp.controls().set_auto_login(Some("alice".into()));
    let (_, challenge) = pkce();
    let iss_of = |response: &reqwest::Response| query_of(&location(response)).get("iss").cloned();
    let url = authorize_url(&idp, "openid", &challenge, &[]).await;
    let response = client().get(&url).send().await.unwrap();
    assert_eq!(
        iss_of(&response),
        Some(issuer.clone()),
        "default: the issuer"
    );
    // An error response names the issuer too (RFC 9207 section 2).
    let bad = url.replace("response_type=code", "response_type=token");
    let response = client().get(&bad).send().await.unwrap();
    assert!(location(&response).contains("error=unsupported_response_type"));
    assert_eq!(iss_of(&response), Some(issuer.clone()));

    idp.controls().set_response_iss(ResponseIss::Omit);
    let response = client().get(&url).send().await.unwrap();
    assert_eq!(iss_of(&response), None);
    idp.controls().set_response_iss(ResponseIss::Wrong);
    let response = client().get(&url).send().await.unwrap();
    let wrong = iss_of(&response).unwrap();
    assert_ne!(wrong, issuer);
}

#[tokio::test]
async fn discovery_advertises_rfc9207_unless_told_not_to() {
    let idp = start().await;
    let url = format!("{}/.well-known/openid-configuration", idp.issuer());
    let doc: Value = client()
        .get(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["authorization_response_iss_parameter_supported"], true);
    idp.controls().set_advertise_response_iss(false);
    let doc: Value = client()
        .get(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        doc.get("authorization_response_iss_parameter_supported")
            .is_none()
    );
}

// === acr and auth_time (step-up) ===

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The ID token's claims of a fresh login asking for `extra` parameters.
async fn login_claims(idp: &DevIdp, extra: &[(&str, &str)]) -> Value {
    let login = login(idp, "alice", "openid offline_access", extra).await;
    let body: Value = exchange(idp, &login.code, &login.verifier)
        .await
        .json()
        .await
        .unwrap();
    payload(str_of(&body, "id_token"))
}

#[tokio::test]
async fn acr_follows_acr_values_unless_forced_and_auth_time_is_the_login() {
    let idp = start().await;
    let claims = login_claims(&idp, &[]).await;
    assert!(claims.get("acr").is_none(), "{claims}");
    let auth_time = claims["auth_time"].as_u64().unwrap();
    assert!(auth_time.abs_diff(now_unix()) <= 5, "{claims}");

    let asked = [("acr_values", "urn:devidp:mfa urn:devidp:pwd")];
    let claims = login_claims(&idp, &asked).await;
    assert_eq!(claims["acr"], "urn:devidp:mfa", "the first value asked for");
    assert_eq!(idp.controls().last_authorize_query()["acr_values"].len(), 1);

    // A provider that cannot meet the step-up, and one reusing an hour-old authentication.
    idp.controls().set_acr(Some("urn:devidp:pwd".into()));
    idp.controls()
        .set_authenticated_ago(std::time::Duration::from_secs(3600));
    let claims = login_claims(&idp, &asked).await;
    assert_eq!(claims["acr"], "urn:devidp:pwd");
    let auth_time = claims["auth_time"].as_u64().unwrap();
    assert!(auth_time.abs_diff(now_unix() - 3600) <= 5, "{claims}");
}

#[tokio::test]
async fn a_refreshed_id_token_keeps_the_logins_acr_and_auth_time() {
    let idp = start().await;
    let login = login(
        &idp,
        "alice",
        "openid offline_access",
        &[("acr_values", "urn:devidp:mfa")],
    )
    .await;
    let body: Value = exchange(&idp, &login.code, &login.verifier)
        .await
        .json()
        .await
        .unwrap();
    let first = payload(str_of(&body, "id_token"));
    let refreshed: Value = refresh(&idp, str_of(&body, "refresh_token"))
        .await
        .json()
        .await
        .unwrap();
    let second = payload(str_of(&refreshed, "id_token"));
    assert_eq!(second["acr"], "urn:devidp:mfa");
    assert_eq!(second["auth_time"], first["auth_time"]);
}

#[tokio::test]
async fn discovery_lists_acr_values_supported_as_set() {
    let idp = start().await;
    let url = format!("{}/.well-known/openid-configuration", idp.issuer());
    let doc: Value = client()
        .get(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        doc["acr_values_supported"],
        json!(["urn:devidp:pwd", "urn:devidp:mfa"])
    );
    idp.controls().set_acr_values_supported(Vec::new());
    let doc: Value = client()
        .get(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc.get("acr_values_supported").is_none());
}
