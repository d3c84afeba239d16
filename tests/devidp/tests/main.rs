//! Black-box tests of the development OpenID Connect provider: discovery, the code flow with
//! PKCE, ID token verification with openidconnect, refresh rotation, faults, revocation,
//! end-session and the counters, all over real HTTP with reqwest. This file is the harness;
//! the tests live in the modules below (one test binary).

// clippy.toml's allow-*-in-tests covers `#[test]` functions only, not this file's harness.
#![allow(clippy::unwrap_used, clippy::panic)]

mod code_flow;
mod discovery;
mod lifecycle;
mod refresh;

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use devidp::idp::{DevIdp, DevIdpOptions};
use openidconnect::core::{CoreIdTokenVerifier, CoreJsonWebKeySet};
use openidconnect::{ClientId, ClientSecret, IssuerUrl};
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

const CLIENT_ID: &str = "demo client";
/// Needs form-urlencoding before base64 (RFC 6749 §2.3.1).
const CLIENT_SECRET: &str = "s3cr+t/%:x";
const REDIRECT_URI: &str = "http://127.0.0.1:1/oauth2/callback";
const BANNER: &str = "Development provider - authgate demo only";

// === harness ===

pub(crate) async fn start() -> Arc<DevIdp> {
    start_with(|_| {}).await
}

pub(crate) async fn start_with(change: impl FnOnce(&mut DevIdpOptions)) -> Arc<DevIdp> {
    let mut options = DevIdpOptions::demo(CLIENT_ID, Some(CLIENT_SECRET.to_owned()));
    change(&mut options);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    DevIdp::start(listener, options).await.unwrap()
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A PKCE pair: (verifier, S256 challenge).
pub(crate) fn pkce() -> (String, String) {
    let verifier = format!(
        "verifier-{}-0123456789abcdefghijklmnopqrstuvwxyz",
        rand_suffix()
    );
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

pub(crate) fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

pub(crate) fn form_encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

pub(crate) fn basic_auth() -> String {
    let pair = format!("{}:{}", form_encode(CLIENT_ID), form_encode(CLIENT_SECRET));
    format!("Basic {}", STANDARD.encode(pair))
}

pub(crate) fn query_of(location: &str) -> HashMap<String, String> {
    let url = url::Url::parse(location).unwrap();
    url.query_pairs().into_owned().collect()
}

pub(crate) fn location(response: &reqwest::Response) -> String {
    response.headers()["location"].to_str().unwrap().to_owned()
}

/// Completed login: the code, the verifier that goes with it, and the nonce sent.
pub(crate) struct Login {
    pub(crate) code: String,
    pub(crate) verifier: String,
    pub(crate) nonce: String,
}

pub(crate) async fn authorize_url(
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
pub(crate) async fn login(idp: &DevIdp, user: &str, scope: &str, extra: &[(&str, &str)]) -> Login {
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

pub(crate) async fn token_request(idp: &DevIdp, form: &[(&str, &str)]) -> reqwest::Response {
    client()
        .post(format!("{}/token", idp.issuer()))
        .header("authorization", basic_auth())
        .form(form)
        .send()
        .await
        .unwrap()
}

pub(crate) async fn exchange(idp: &DevIdp, code: &str, verifier: &str) -> reqwest::Response {
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("code_verifier", verifier),
        ("redirect_uri", REDIRECT_URI),
    ];
    token_request(idp, &form).await
}

pub(crate) async fn refresh(idp: &DevIdp, refresh_token: &str) -> reqwest::Response {
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
pub(crate) async fn tokens(idp: &DevIdp, user: &str) -> Value {
    let login = login(idp, user, "openid profile email offline_access", &[]).await;
    let response = exchange(idp, &login.code, &login.verifier).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

pub(crate) async fn assert_oauth_error(
    response: reqwest::Response,
    status: StatusCode,
    error: &str,
) {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], error, "{body}");
}

pub(crate) async fn jwks(idp: &DevIdp) -> CoreJsonWebKeySet {
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

pub(crate) fn verifier(idp: &DevIdp, keys: CoreJsonWebKeySet) -> CoreIdTokenVerifier<'static> {
    CoreIdTokenVerifier::new_confidential_client(
        ClientId::new(CLIENT_ID.into()),
        ClientSecret::new(CLIENT_SECRET.into()),
        IssuerUrl::new(idp.issuer()).unwrap(),
        keys,
    )
}

/// The payload of a JWT, without verifying it.
pub(crate) fn payload(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

pub(crate) fn header(jwt: &str) -> Value {
    let part = jwt.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

pub(crate) fn str_of<'a>(value: &'a Value, name: &str) -> &'a str {
    value[name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} missing in {value}"))
}
