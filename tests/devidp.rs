//! Black-box tests of the development OpenID Connect provider: discovery, the code flow with
//! PKCE, ID token verification with openidconnect, refresh rotation, faults, revocation,
//! end-session and the counters, all over real HTTP with reqwest.

// clippy.toml's allow-*-in-tests covers `#[test]` functions only, not this file's harness.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use authgate::demo::idp::{AccessTokenFormat, ClientAuth, DevIdp, DevIdpOptions, TokenFault};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use openidconnect::core::{CoreIdToken, CoreIdTokenVerifier, CoreJsonWebKeySet};
use openidconnect::{ClientId, ClientSecret, IssuerUrl, Nonce};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

const CLIENT_ID: &str = "demo client";
/// Needs form-urlencoding before base64 (RFC 6749 §2.3.1).
const CLIENT_SECRET: &str = "s3cr+t/%:x";
const REDIRECT_URI: &str = "http://127.0.0.1:1/oauth2/callback";
const BANNER: &str = "Development provider - authgate demo only";

// === harness ===

async fn start() -> Arc<DevIdp> {
    start_with(|_| {}).await
}

async fn start_with(change: impl FnOnce(&mut DevIdpOptions)) -> Arc<DevIdp> {
    let mut options = DevIdpOptions::demo(CLIENT_ID, Some(CLIENT_SECRET.to_owned()));
    change(&mut options);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    DevIdp::start(listener, options).await.unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A PKCE pair: (verifier, S256 challenge).
fn pkce() -> (String, String) {
    let verifier = format!(
        "verifier-{}-0123456789abcdefghijklmnopqrstuvwxyz",
        rand_suffix()
    );
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn form_encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn basic_auth() -> String {
    let pair = format!("{}:{}", form_encode(CLIENT_ID), form_encode(CLIENT_SECRET));
    format!("Basic {}", STANDARD.encode(pair))
}

fn query_of(location: &str) -> HashMap<String, String> {
    let url = url::Url::parse(location).unwrap();
    url.query_pairs().into_owned().collect()
}

fn location(response: &reqwest::Response) -> String {
    response.headers()["location"].to_str().unwrap().to_owned()
}

/// Completed login: the code, the verifier that goes with it, and the nonce sent.
struct Login {
    code: String,
    verifier: String,
    nonce: String,
}

async fn authorize_url(
    idp: &DevIdp,
    scope: &str,
    challenge: &str,
    extra: &[(&str, &str)],
) -> String {
    let mut url = url::Url::parse(&format!("{}/authorize", idp.issuer())).unwrap();
    url.query_pairs_mut()
        .append_pair("client_id", CLIENT_ID)
        .append_pair("redirect_uri", REDIRECT_URI)
        .append_pair("response_type", "code")
        .append_pair("scope", scope)
        .append_pair("state", "st-1")
        .append_pair("nonce", "nonce-1")
        .append_pair("code_challenge", challenge)
        .append_pair("code_challenge_method", "S256");
    for (name, value) in extra {
        url.query_pairs_mut().append_pair(name, value);
    }
    url.to_string()
}

/// Auto-login as `user` and return the code.
async fn login(idp: &DevIdp, user: &str, scope: &str, extra: &[(&str, &str)]) -> Login {
    idp.controls().set_auto_login(Some(user.to_owned()));
    let (verifier, challenge) = pkce();
    let url = authorize_url(idp, scope, &challenge, extra).await;
    let response = client().get(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    let location = location(&response);
    assert!(location.starts_with(REDIRECT_URI), "{location}");
    let query = query_of(&location);
    assert_eq!(query["state"], "st-1");
    Login {
        code: query["code"].clone(),
        verifier,
        nonce: "nonce-1".into(),
    }
}

async fn token_request(idp: &DevIdp, form: &[(&str, &str)]) -> reqwest::Response {
    client()
        .post(format!("{}/token", idp.issuer()))
        .header("authorization", basic_auth())
        .form(form)
        .send()
        .await
        .unwrap()
}

async fn exchange(idp: &DevIdp, code: &str, verifier: &str) -> reqwest::Response {
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("code_verifier", verifier),
        ("redirect_uri", REDIRECT_URI),
    ];
    token_request(idp, &form).await
}

async fn refresh(idp: &DevIdp, refresh_token: &str) -> reqwest::Response {
    token_request(
        idp,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

/// Logs in with `offline_access` and returns the token response.
async fn tokens(idp: &DevIdp, user: &str) -> Value {
    let login = login(idp, user, "openid profile email offline_access", &[]).await;
    let response = exchange(idp, &login.code, &login.verifier).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn assert_oauth_error(response: reqwest::Response, status: StatusCode, error: &str) {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], error, "{body}");
}

async fn jwks(idp: &DevIdp) -> CoreJsonWebKeySet {
    let url = format!("{}/jwks", idp.issuer());
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn verifier(idp: &DevIdp, keys: CoreJsonWebKeySet) -> CoreIdTokenVerifier<'static> {
    CoreIdTokenVerifier::new_confidential_client(
        ClientId::new(CLIENT_ID.into()),
        ClientSecret::new(CLIENT_SECRET.into()),
        IssuerUrl::new(idp.issuer()).unwrap(),
        keys,
    )
}

/// The payload of a JWT, without verifying it.
fn payload(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn header(jwt: &str) -> Value {
    let part = jwt.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn str_of<'a>(value: &'a Value, name: &str) -> &'a str {
    value[name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} missing in {value}"))
}

// === discovery and keys ===

#[tokio::test]
async fn discovery_document_advertises_every_endpoint() {
    let idp = start().await;
    let issuer = idp.issuer();
    assert!(issuer.starts_with("http://127.0.0.1:") && !issuer.ends_with('/'));
    let url = format!("{issuer}/.well-known/openid-configuration");
    let doc: Value = client()
        .get(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["issuer"], issuer);
    for (field, path) in [
        ("authorization_endpoint", "/authorize"),
        ("token_endpoint", "/token"),
        ("jwks_uri", "/jwks"),
        ("userinfo_endpoint", "/userinfo"),
        ("revocation_endpoint", "/revoke"),
        ("end_session_endpoint", "/end_session"),
    ] {
        assert_eq!(doc[field], format!("{issuer}{path}"), "{field}");
    }
    assert_eq!(doc["response_types_supported"], json!(["code"]));
    assert_eq!(doc["subject_types_supported"], json!(["public"]));
    assert_eq!(
        doc["id_token_signing_alg_values_supported"],
        json!(["RS256"])
    );
    assert_eq!(
        doc["grant_types_supported"],
        json!(["authorization_code", "refresh_token"])
    );
    assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(
        doc["token_endpoint_auth_methods_supported"],
        json!(["client_secret_basic", "client_secret_post", "none"])
    );
    assert!(
        doc["scopes_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("offline_access"))
    );
    assert_eq!(doc["backchannel_logout_supported"], true);
    assert_eq!(doc["backchannel_logout_session_supported"], true);

    idp.controls().set_discovery_unavailable(true);
    let response = client().get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(idp.controls().discovery_calls(), 2);
}

#[tokio::test]
async fn discovery_parses_with_openidconnect() {
    let idp = start().await;
    let http = openidconnect::reqwest::Client::builder()
        .redirect(openidconnect::reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let issuer = IssuerUrl::new(idp.issuer()).unwrap();
    let meta = openidconnect::core::CoreProviderMetadata::discover_async(issuer, &http)
        .await
        .unwrap();
    assert_eq!(meta.jwks().keys().len(), 1);
    assert_eq!(idp.controls().jwks_calls(), 1);
}

#[tokio::test]
async fn key_rotation_publishes_both_keys_and_signs_with_dev_2() {
    let idp = start().await;
    let before = tokens(&idp, "alice").await;
    assert_eq!(header(str_of(&before, "id_token"))["kid"], "dev-1");
    let old_keys = jwks(&idp).await;
    idp.controls().rotate_signing_key();
    let after = tokens(&idp, "alice").await;
    let id_token = str_of(&after, "id_token");
    assert_eq!(header(id_token)["kid"], "dev-2");
    let parsed = CoreIdToken::from_str(id_token).unwrap();
    let nonce = Nonce::new("nonce-1".into());
    assert!(
        parsed.claims(&verifier(&idp, old_keys), &nonce).is_err(),
        "old JWKS must not know dev-2"
    );
    let new_keys = jwks(&idp).await;
    assert_eq!(new_keys.keys().len(), 2);
    assert!(parsed.claims(&verifier(&idp, new_keys), &nonce).is_ok());
}

#[tokio::test]
async fn sign_jwt_verifies_and_foreign_key_does_not() {
    let idp = start().await;
    let now = rand_suffix() / 1_000_000_000;
    let claims = json!({
        "iss": idp.issuer(), "aud": CLIENT_ID, "sub": "bob",
        "iat": now as u64, "exp": now as u64 + 300,
    });
    let keys = jwks(&idp).await;
    let accept = |nonce: Option<&Nonce>| {
        if nonce.is_none() {
            Ok(())
        } else {
            Err("nonce".to_owned())
        }
    };
    let good = CoreIdToken::from_str(&idp.sign_jwt(&claims)).unwrap();
    let verified = good.claims(&verifier(&idp, keys.clone()), accept).unwrap();
    assert_eq!(verified.subject().as_str(), "bob");
    let forged = idp.sign_jwt_with_foreign_key(&claims, "dev-1");
    assert_eq!(header(&forged)["kid"], "dev-1");
    let forged = CoreIdToken::from_str(&forged).unwrap();
    assert!(forged.claims(&verifier(&idp, keys), accept).is_err());
}

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
    let server = tokio::spawn(authgate::demo::echo::serve_echo(listener));
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
