//! Discovery document, JWKS, key rotation and JWT signing.

use std::str::FromStr;

use openidconnect::Nonce;
use openidconnect::core::CoreIdToken;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::*;

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
