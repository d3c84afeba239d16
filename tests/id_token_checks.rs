//! The authorization response's `iss` parameter (RFC 9207) and the ID-token checks beyond
//! signature, iss, aud, exp and nonce: `azp`, `at_hash`, the age of `iat`
//! (`oidc.id_token_max_age`). Each fault comes from the development provider and goes
//! through the real login flow (or a real refresh).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod support;

use std::time::Duration;

use authgate::session::{SessionStore, Store};
use devidp::idp::{IdTokenTamper, ResponseIss};
use reqwest::{Client, StatusCode, header};
use support::{Harness, location, set_cookie, start_idp, userinfo_status};

const SESSION: &str = "authgate_session";

/// `/oauth2/start` -> provider (auto-login) -> the callback URL the provider sends back.
async fn callback_url(h: &Harness, client: &Client) -> String {
    h.idp.controls().set_auto_login(Some("alice".into()));
    let r = client.get(h.at("/oauth2/start?rd=/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND, "start");
    let r = client.get(location(&r)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND, "authorize");
    let callback = location(&r);
    assert!(
        callback.starts_with(&h.at("/oauth2/callback?")),
        "{callback}"
    );
    callback
}

async fn live_sessions(h: &Harness) -> u64 {
    let Store::Memory(m) = h.gateway.store().as_ref() else {
        panic!("these tests run on the memory store");
    };
    m.sync().await;
    h.gateway.store().live()
}

/// The callback answers 400 (the login page), sets no session and leaves no session.
async fn assert_refused(h: &Harness, client: &Client, r: reqwest::Response, what: &str) {
    assert!(
        set_cookie(&r, SESSION).is_none_or(|v| v.is_empty()),
        "{what}: no session cookie"
    );
    let status = r.status();
    let body = r.text().await.unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {body}");
    assert_eq!(live_sessions(h).await, 0, "{what}: no session");
    assert_eq!(userinfo_status(h, client).await, StatusCode::UNAUTHORIZED);
}

/// A provider that does (or does not) advertise RFC 9207, and a gateway in front of it that
/// discovered it so.
async fn harness(advertise_iss: bool, config: &str) -> Harness {
    let idp = start_idp().await;
    idp.controls().set_advertise_response_iss(advertise_iss);
    // Only the harness holds the provider: it stops when the harness is dropped.
    Harness::builder().idp(idp).config(config).start().await
}

// --- RFC 9207: the authorization response's `iss` ---

#[tokio::test]
async fn a_response_naming_another_issuer_is_refused_and_its_code_never_redeemed() {
    for advertised in [true, false] {
        let h = harness(advertised, "").await;
        h.idp.controls().set_response_iss(ResponseIss::Wrong);
        let client = h.client();
        let callback = callback_url(&h, &client).await;
        assert!(
            callback.contains("iss=https%3A%2F%2Fattacker.example"),
            "{callback}"
        );
        let r = client.get(&callback).send().await.unwrap();
        assert_refused(&h, &client, r, &format!("advertised={advertised}")).await;
        assert_eq!(h.idp.controls().code_calls(), 0, "the code was redeemed");

        // The knob was the only cause: the same browser logs in with the right `iss`.
        h.idp.controls().set_response_iss(ResponseIss::Correct);
        let callback = callback_url(&h, &client).await;
        let r = client.get(&callback).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FOUND, "advertised={advertised}");
        assert_eq!(userinfo_status(&h, &client).await, StatusCode::OK);
    }
}

#[tokio::test]
async fn a_response_without_iss_is_refused_when_the_provider_advertises_it() {
    let h = harness(true, "").await;
    h.idp.controls().set_response_iss(ResponseIss::Omit);
    let client = h.client();
    let callback = callback_url(&h, &client).await;
    assert!(!callback.contains("iss="), "{callback}");
    let r = client.get(&callback).send().await.unwrap();
    assert_refused(&h, &client, r, "missing iss").await;
    assert_eq!(h.idp.controls().code_calls(), 0, "the code was redeemed");
}

#[tokio::test]
async fn a_response_without_iss_is_accepted_when_the_provider_does_not_advertise_it() {
    let h = harness(false, "").await;
    h.idp.controls().set_response_iss(ResponseIss::Omit);
    let client = h.client();
    let callback = callback_url(&h, &client).await;
    let r = client.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(userinfo_status(&h, &client).await, StatusCode::OK);
}

#[tokio::test]
async fn a_response_with_two_iss_parameters_is_refused() {
    let h = harness(true, "").await;
    let client = h.client();
    let callback = callback_url(&h, &client).await;
    // The right issuer, then another one: which would count? Neither.
    let doubled = format!("{callback}&iss=https%3A%2F%2Fattacker.example");
    let r = client.get(&doubled).send().await.unwrap();
    assert_refused(&h, &client, r, "two iss").await;
    assert_eq!(h.idp.controls().code_calls(), 0, "the code was redeemed");
}

// --- ID-token claims ---

async fn refused_at_login(tamper: IdTokenTamper) {
    let h = Harness::start().await;
    h.idp.controls().set_id_token_tamper(Some(tamper));
    let client = h.client();
    let callback = callback_url(&h, &client).await;
    let r = client.get(&callback).send().await.unwrap();
    assert_refused(&h, &client, r, &format!("{tamper:?}")).await;
    assert_eq!(
        h.idp.controls().code_calls(),
        1,
        "{tamper:?}: exchanged once"
    );

    // The same browser logs in once the provider behaves: the knob was the only cause.
    h.idp.controls().set_id_token_tamper(None);
    let callback = callback_url(&h, &client).await;
    let r = client.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND, "{tamper:?}: clean login");
    assert_eq!(userinfo_status(&h, &client).await, StatusCode::OK);
}

#[tokio::test]
async fn an_azp_naming_another_client_is_refused() {
    refused_at_login(IdTokenTamper::AuthorizedPartyOther).await;
}

/// OpenID Connect Core 3.1.3.7: several audiences need an `azp`. (openidconnect already
/// refuses an audience it was not told to trust, so this pins the outcome through the flow;
/// the gateway's own `azp` rule is unit-tested in `oidc::checks`.)
#[tokio::test]
async fn two_audiences_without_azp_are_refused() {
    refused_at_login(IdTokenTamper::TwoAudiencesNoAzp).await;
}

#[tokio::test]
async fn a_wrong_at_hash_is_refused() {
    refused_at_login(IdTokenTamper::WrongAtHash).await;
}

#[tokio::test]
async fn an_id_token_issued_a_week_ago_is_refused_though_not_expired() {
    refused_at_login(IdTokenTamper::IssuedLongAgo).await;
}

#[tokio::test]
async fn id_token_max_age_sets_how_old_an_iat_may_be() {
    let h = Harness::builder()
        .config("[oidc]\nid_token_max_age = \"8d\"")
        .start()
        .await;
    h.idp
        .controls()
        .set_id_token_tamper(Some(IdTokenTamper::IssuedLongAgo));
    let client = h.client();
    let callback = callback_url(&h, &client).await;
    let r = client.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND, "a week is within 8 days");
    assert_eq!(userinfo_status(&h, &client).await, StatusCode::OK);
}

/// The checks hold for a refreshed ID token too: a wrong `at_hash` there is not accepted, so
/// the access token it came with never reaches the upstream.
#[tokio::test]
async fn a_refreshed_id_token_with_a_wrong_at_hash_is_not_accepted() {
    let h = Harness::start().await;
    h.idp.controls().set_rotation(false);
    let client = h.client();
    h.login(&client, "alice").await;
    let first = h.echo(&client, "/x").await.bearer().unwrap();

    h.idp
        .controls()
        .set_id_token_tamper(Some(IdTokenTamper::WrongAtHash));
    // Inside refresh_before_expiry (10 s) of the 300 s access token, not past it.
    h.advance(Duration::from_secs(295));
    let echo = h.echo(&client, "/x").await;
    assert!(h.idp.controls().refresh_calls() >= 1, "a refresh was tried");
    assert_eq!(
        echo.bearer().as_deref(),
        Some(first.as_str()),
        "the refreshed tokens were not taken"
    );
    let r = client
        .get(h.at("/oauth2/userinfo"))
        .header(header::ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "the session is kept");
}

/// Status of an API request (no redirect) with the client's session.
async fn api_status(h: &Harness, client: &Client) -> StatusCode {
    client
        .get(h.at("/x"))
        .header(header::ACCEPT, "application/json")
        .send()
        .await
        .unwrap()
        .status()
}

/// A refresh whose new ID token cannot be checked right now (the provider signs with a new
/// key while its JWKS is down) is transient, and with refresh token rotation the session
/// keeps the refresh token that came with it: the one it presented is spent, and presenting
/// it again would revoke the grant. Once the keys can be fetched, the next refresh works and
/// nobody was logged out. (Found by the fault run, `bench/faults.sh`, row `jwks_down`.)
#[tokio::test]
async fn a_refresh_whose_id_token_cannot_be_checked_keeps_the_rotated_refresh_token() {
    let h = Harness::start().await; // rotation on, 300 s access tokens
    let client = h.client();
    h.login(&client, "alice").await;
    h.idp.controls().set_jwks_unavailable(true);
    h.idp.controls().rotate_signing_key();
    h.advance(Duration::from_secs(301)); // the access token has expired
    assert_eq!(
        api_status(&h, &client).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "the new ID token cannot be checked: try again later, not a logout"
    );
    assert_eq!(h.idp.controls().refresh_calls(), 1);

    h.idp.controls().set_jwks_unavailable(false);
    // Past the backoff (1 s) and the JWKS refetch interval (10 s).
    h.advance(Duration::from_secs(11));
    assert_eq!(
        api_status(&h, &client).await,
        StatusCode::OK,
        "session kept"
    );
    assert_eq!(h.idp.controls().refresh_calls(), 2);
    assert_eq!(userinfo_status(&h, &client).await, StatusCode::OK);
}

/// The same with an ID token that fails a claim check (a wrong `at_hash`): its tokens are not
/// used, but the rotated refresh token is kept, so the next refresh, once the provider
/// behaves, succeeds.
#[tokio::test]
async fn a_refreshed_id_token_failing_a_check_keeps_the_rotated_refresh_token() {
    let h = Harness::start().await;
    let client = h.client();
    h.login(&client, "alice").await;
    let first = h.echo(&client, "/x").await.bearer().unwrap();
    h.idp
        .controls()
        .set_id_token_tamper(Some(IdTokenTamper::WrongAtHash));
    h.advance(Duration::from_secs(295)); // inside refresh_before_expiry, still valid
    let echo = h.echo(&client, "/x").await;
    assert_eq!(echo.bearer().as_deref(), Some(first.as_str()), "not taken");
    assert_eq!(h.idp.controls().refresh_calls(), 1);

    h.idp.controls().set_id_token_tamper(None);
    h.advance(Duration::from_secs(2)); // past the 1 s backoff
    let echo = h.echo(&client, "/x").await;
    assert_ne!(echo.bearer().as_deref(), Some(first.as_str()), "refreshed");
    assert_eq!(h.idp.controls().refresh_calls(), 2);
}
