//! Bearer passthrough (`bearer = "passthrough"` on a route): a machine client's own JWT,
//! verified against the provider's JWKS (an advertised asymmetric algorithm, `iss`, `aud` in
//! `oidc.bearer_audiences`, `exp`, `nbf`, 60 s leeway), is forwarded as it came, with identity
//! headers from its claims; anything else is 401 with
//! `WWW-Authenticate: Bearer error="invalid_token", error_description="..."`. Only access
//! tokens: an ID token (or a token shaped like one) is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use devidp::idp::AccessTokenFormat;
use hmac::{Hmac, Mac};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};
use sha2::Sha256;
use support::{CLIENT_ID, Echo, Harness, location, one, query_of};

const ROUTES: &str = r#"
[[route]]
path = "/api/"
api = true
bearer = "passthrough"

[[route]]
path = "/admin-api/"
api = true
bearer = "passthrough"
require_groups = ["admins"]

[[route]]
path = "/mixed/"
bearer = "passthrough"

[[route]]
path = "/other/"
api = true
"#;

/// The audience of the machine clients' access tokens.
const API: &str = "https://api.example.test";

async fn start() -> Harness {
    Harness::builder()
        .config(ROUTES)
        .config(&format!("[oidc]\nbearer_audiences = [\"{API}\"]"))
        .start()
        .await
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Valid claims for the harness's provider and client; `patch` is merged over them (a `null`
/// removes the claim).
fn claims(h: &Harness, patch: Value) -> Value {
    let mut claims = json!({
        "iss": h.idp.issuer(),
        "aud": API,
        "sub": "svc-robot",
        "email": "robot@example.test",
        "iat": now(),
        "exp": now() + 300,
    });
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact JWS with this header, HS256-signed with `secret`.
fn hs256(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let message = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(message.as_bytes());
    format!("{message}.{}", b64(&mac.finalize().into_bytes()))
}

async fn call(h: &Harness, path: &str, token: &str) -> reqwest::Response {
    h.client()
        .get(h.at(path))
        .header(header::ACCEPT, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .send()
        .await
        .unwrap()
}

async fn accepted(h: &Harness, path: &str, token: &str) -> Echo {
    let r = call(h, path, token).await;
    let status = r.status();
    let body = r.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    Echo(serde_json::from_str(&body).unwrap())
}

/// Asserts a 401 with an `invalid_token` challenge whose description contains `why`.
async fn rejected(h: &Harness, path: &str, token: &str, why: &str) {
    let r = call(h, path, token).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{why}");
    assert!(r.headers().get(header::LOCATION).is_none());
    let challenge = r.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
    assert!(
        challenge.starts_with("Bearer ") && challenge.contains("error=\"invalid_token\""),
        "{challenge}"
    );
    assert!(
        challenge.contains("error_description=\"") && challenge.contains(why),
        "expected {why:?} in {challenge}"
    );
}

#[tokio::test]
async fn a_valid_token_is_forwarded_as_it_came_with_identity_headers() {
    let h = start().await;
    let token = h
        .idp
        .sign_jwt(&claims(&h, json!({"groups": ["dev", "ml"]})));
    let r = h
        .client()
        .get(h.at("/api/v1/items"))
        .header(header::ACCEPT, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        // Spoofed identity is still stripped.
        .header("X-Forwarded-User", "mallory")
        .header("X-Forwarded-Groups", "admins")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let echo = Echo(r.json().await.unwrap());
    assert_eq!(echo.path(), "/api/v1/items");
    assert_eq!(
        echo.header_values("authorization"),
        [format!("Bearer {token}")]
    );
    assert_eq!(echo.header_values("x-forwarded-user"), ["svc-robot"]);
    assert_eq!(
        echo.header("x-forwarded-email").as_deref(),
        Some("robot@example.test")
    );
    assert_eq!(echo.header_values("x-forwarded-groups"), ["dev,ml"]);
    // `aud` as a list containing the client id.
    let token = h.idp.sign_jwt(&claims(&h, json!({"aud": ["other", API]})));
    accepted(&h, "/api/x", &token).await;
    // The scheme is case-insensitive.
    let r = h
        .client()
        .get(h.at("/api/x"))
        .header(header::ACCEPT, "application/json")
        .header(header::AUTHORIZATION, format!("bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn time_claims_are_checked_with_leeway() {
    let h = start().await;
    let t = now();
    for patch in [
        json!({"exp": t - 10}),
        json!({"nbf": t + 10}),
        json!({"nbf": t - 10}),
    ] {
        let token = h.idp.sign_jwt(&claims(&h, patch.clone()));
        let r = call(&h, "/api/x", &token).await;
        assert_eq!(r.status(), StatusCode::OK, "{patch}");
    }
    for (patch, why) in [
        (json!({"exp": t - 120}), "expired"),
        (json!({"exp": t - 3600}), "expired"),
        (json!({"nbf": t + 300}), "not valid yet"),
        (json!({"exp": Value::Null}), "required claim"),
    ] {
        let token = h.idp.sign_jwt(&claims(&h, patch));
        rejected(&h, "/api/x", &token, why).await;
    }
}

/// Sends a token made of `claims(h, patch(t))`, `t` being the second it is sent in, and
/// returns the answer. The gateway reads the same clock: should a second tick over during the
/// call, the edge moved under the test, so it tries again (a bounded number of times).
async fn call_within_one_second(h: &Harness, patch: impl Fn(i64) -> Value) -> reqwest::Response {
    for _ in 0..20 {
        let t = now();
        let token = h.idp.sign_jwt(&claims(h, patch(t)));
        let r = call(h, "/api/x", &token).await;
        if now() == t {
            return r;
        }
    }
    panic!("a second ticked over during each of 20 calls");
}

/// Claims made for the second `t` they are sent in, and the refusal expected (`None`: accepted).
type EdgeCase = (fn(i64) -> Value, Option<&'static str>);

/// The leeway is the common 60 s (it was 30 s): one second inside the edge passes, one second
/// outside is refused, for `exp` and `nbf` alike.
#[tokio::test]
async fn the_leeway_is_60_seconds_at_the_edge() {
    let h = start().await;
    let cases: [EdgeCase; 4] = [
        (|t| json!({"exp": t - 59}), None),
        (|t| json!({"exp": t - 61}), Some("expired")),
        (|t| json!({"nbf": t + 59}), None),
        (|t| json!({"nbf": t + 61}), Some("not valid yet")),
    ];
    for (patch, refused) in cases {
        let r = call_within_one_second(&h, patch).await;
        let challenge = r.headers().get(header::WWW_AUTHENTICATE).cloned();
        match refused {
            None => assert_eq!(r.status(), StatusCode::OK, "{}", patch(0)),
            Some(why) => {
                assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{}", patch(0));
                let challenge = challenge.unwrap();
                assert!(challenge.to_str().unwrap().contains(why), "{challenge:?}");
            }
        }
    }
}

/// Huge times are far away, not an overflow; a time claim that is not a whole number of
/// seconds is refused, never ignored (an `nbf` the gateway could not read used to count as
/// no `nbf`).
#[tokio::test]
async fn huge_or_unreadable_time_claims() {
    let h = start().await;
    let token = h.idp.sign_jwt(&claims(&h, json!({"exp": u64::MAX})));
    accepted(&h, "/api/x", &token).await;
    let token = h.idp.sign_jwt(&claims(&h, json!({"nbf": u64::MAX})));
    rejected(&h, "/api/x", &token, "not valid yet").await;
    for nbf in [
        json!("tomorrow"),
        json!(1e300),
        json!(-5),
        json!(now() as f64 + 0.5),
    ] {
        let token = h.idp.sign_jwt(&claims(&h, json!({ "nbf": nbf })));
        rejected(&h, "/api/x", &token, "not a number").await;
    }
    let token = h.idp.sign_jwt(&claims(&h, json!({"exp": "never"})));
    rejected(&h, "/api/x", &token, "not a number").await;
}

#[tokio::test]
async fn wrong_issuer_audience_or_subject_are_rejected() {
    let h = start().await;
    for (patch, why) in [
        (json!({"aud": "someone-else"}), "audience"),
        (json!({"aud": ["a", "b"]}), "audience"),
        (json!({"aud": Value::Null}), "audience"),
        (json!({"iss": "https://evil.example"}), "issuer"),
        (json!({"iss": format!("{}/", h.idp.issuer())}), "issuer"),
        (json!({"iss": Value::Null}), "issuer"),
        (json!({"sub": Value::Null}), "subject"),
        (json!({"sub": ""}), "subject"),
    ] {
        let token = h.idp.sign_jwt(&claims(&h, patch));
        rejected(&h, "/api/x", &token, why).await;
    }
}

#[tokio::test]
async fn forged_signatures_and_algorithms_are_rejected() {
    let h = start().await;
    let good = claims(&h, json!({}));
    // A key the provider never published, under an unknown kid and under the real one.
    let unknown_kid = h.idp.sign_jwt_with_foreign_key(&good, "nope");
    rejected(&h, "/api/x", &unknown_kid, "unknown key").await;
    let fake_dev1 = h.idp.sign_jwt_with_foreign_key(&good, "dev-1");
    rejected(&h, "/api/x", &fake_dev1, "signature").await;
    // A real token with its payload swapped.
    let real = h.idp.sign_jwt(&good);
    let parts: Vec<&str> = real.split('.').collect();
    let forged_payload = b64(claims(&h, json!({"sub": "admin"})).to_string().as_bytes());
    let swapped = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
    rejected(&h, "/api/x", &swapped, "signature").await;

    // alg=none, with and without a kid, with an empty signature.
    let payload = b64(good.to_string().as_bytes());
    for header in [
        json!({"alg": "none"}),
        json!({"alg": "none", "typ": "JWT", "kid": "dev-1"}),
        json!({"alg": "None", "kid": "dev-1"}),
    ] {
        let token = format!("{}.{payload}.", b64(header.to_string().as_bytes()));
        rejected(&h, "/api/x", &token, "algorithm").await;
    }

    // HS256 with the provider's PUBLIC key as the HMAC secret (the classic key confusion).
    let jwks: Value = h
        .client()
        .get(format!("{}/jwks", h.idp.issuer()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == "dev-1")
        .unwrap();
    let n = jwk["n"].as_str().unwrap();
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": "dev-1"});
    let secrets: [Vec<u8>; 3] = [
        n.as_bytes().to_vec(),
        URL_SAFE_NO_PAD.decode(n).unwrap(),
        jwk.to_string().into_bytes(),
    ];
    for secret in &secrets {
        let token = hs256(&header, &good, secret);
        rejected(&h, "/api/x", &token, "algorithm").await;
    }
    let token = hs256(&json!({"alg": "HS256"}), &good, n.as_bytes());
    rejected(&h, "/api/x", &token, "algorithm").await;

    // The real token still passes: the rejections above were about the forgeries.
    accepted(&h, "/api/x", &real).await;
}

#[tokio::test]
async fn garbage_is_rejected() {
    let h = start().await;
    for garbage in [
        "garbage",
        "a.b",
        "a.b.c",
        "a.b.c.d",
        "eyJhbGciOiJSUzI1NiJ9.e30",
        "!!!.???.***",
        "eyJhbGciOiJSUzI1NiIsImtpZCI6ImRldi0xIn0.bm90IGpzb24.c2ln",
    ] {
        rejected(&h, "/api/x", garbage, "").await;
    }
    // No token at all: the plain challenge, without an error.
    let r = h
        .client()
        .get(h.at("/api/x"))
        .header(header::ACCEPT, "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
}

#[tokio::test]
async fn unknown_kids_refetch_the_jwks_at_most_once_per_interval() {
    let h = start().await;
    let good = claims(&h, json!({}));
    let before = h.idp.controls().jwks_calls();
    for _ in 0..5 {
        let token = h.idp.sign_jwt_with_foreign_key(&good, "nope");
        rejected(&h, "/api/x", &token, "unknown key").await;
    }
    let refetches = h.idp.controls().jwks_calls() - before;
    assert!(
        refetches <= 1,
        "{refetches} JWKS fetches for 5 unknown-kid tokens"
    );
}

#[tokio::test]
async fn a_rotated_signing_key_is_accepted_after_a_jwks_refetch() {
    let h = start().await;
    let good = claims(&h, json!({}));
    accepted(&h, "/api/x", &h.idp.sign_jwt(&good)).await;
    let before = h.idp.controls().jwks_calls();
    h.idp.controls().rotate_signing_key();
    let rotated = h.idp.sign_jwt(&good);
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(rotated.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["kid"], "dev-2");
    let echo = accepted(&h, "/api/x", &rotated).await;
    assert_eq!(echo.bearer().as_deref(), Some(rotated.as_str()));
    assert_eq!(h.idp.controls().jwks_calls(), before + 1);
    // Known from now on: no further fetch.
    accepted(&h, "/api/y", &rotated).await;
    assert_eq!(h.idp.controls().jwks_calls(), before + 1);
}

#[tokio::test]
async fn routes_without_passthrough_ignore_bearer_tokens() {
    let h = start().await;
    let token = h.idp.sign_jwt(&claims(&h, json!({})));
    for path in ["/other/x", "/private"] {
        let r = call(&h, path, &token).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        // Not evaluated, so not an invalid_token challenge.
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer", "{path}");
    }
}

#[tokio::test]
async fn passthrough_identity_is_subject_to_the_route_rules() {
    let h = start().await;
    let admin = h.idp.sign_jwt(&claims(&h, json!({"groups": ["admins"]})));
    let echo = accepted(&h, "/admin-api/x", &admin).await;
    assert_eq!(echo.header("x-forwarded-groups").as_deref(), Some("admins"));
    let plain = h.idp.sign_jwt(&claims(&h, json!({"groups": ["dev"]})));
    let r = call(&h, "/admin-api/x", &plain).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_bad_token_on_a_browser_route_is_401_not_a_login_redirect() {
    let h = start().await;
    // No token: a browser navigation on a non-api route goes to login ...
    let r = h
        .client()
        .get(h.at("/mixed/page"))
        .header(header::ACCEPT, "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    location(&r);
    // ... but a client that sent a bearer token is a machine: 401 with the challenge.
    let r = h
        .client()
        .get(h.at("/mixed/page"))
        .header(header::ACCEPT, "text/html")
        .header(header::AUTHORIZATION, "Bearer not-a-jwt")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        r.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    let good = h.idp.sign_jwt(&claims(&h, json!({})));
    accepted(&h, "/mixed/page", &good).await;
}

/// Even when the operator lists the client id among the audiences (its
/// own access tokens carry it), an ID token is no bearer credential: the one the gateway
/// hands the browser at sign-out (`id_token_hint`) is refused, and so is anything shaped like
/// an ID token. The provider's real access token for the same client still passes.
#[tokio::test]
async fn id_tokens_are_not_bearer_tokens() {
    let h = Harness::builder()
        .config(ROUTES)
        .config(&format!(
            "[oidc]\nbearer_audiences = [\"{CLIENT_ID}\", \"{API}\"]"
        ))
        .start()
        .await;
    h.idp
        .controls()
        .set_access_token_format(AccessTokenFormat::Jwt);
    let browser = h.client();
    h.login(&browser, "alice").await;
    let out = browser.get(h.at("/oauth2/sign_out")).send().await.unwrap();
    let id_token = one(&query_of(&location(&out)), "id_token_hint").to_owned();
    rejected(&h, "/api/x", &id_token, "not an access token").await;

    let as_client = |patch: Value| {
        let mut patch = patch;
        patch["aud"] = json!(CLIENT_ID);
        claims(&h, patch)
    };
    for claim in ["nonce", "at_hash", "c_hash"] {
        let token = h.idp.sign_jwt(&as_client(json!({ claim: "x" })));
        rejected(&h, "/api/x", &token, "not an access token").await;
    }
    let plain = as_client(json!({}));
    for typ in [
        "id_token+jwt",
        "logout+jwt",
        "JOSE",
        "application/jwt; x",
        "jwt+at",
    ] {
        let token = h.idp.sign_jwt_with_header(&json!({ "typ": typ }), &plain);
        rejected(&h, "/api/x", &token, "not an access token").await;
    }
    for typ in [
        "at+jwt",
        "AT+JWT",
        "application/at+jwt",
        "JWT",
        "jwt",
        "Application/JWT",
    ] {
        let token = h.idp.sign_jwt_with_header(&json!({ "typ": typ }), &plain);
        accepted(&h, "/api/x", &token).await;
    }
    // A `crit` header is refused (the gateway understands none).
    for crit in [json!(["urn:example:x"]), json!(["exp"])] {
        let token = h.idp.sign_jwt_with_header(&json!({ "crit": crit }), &plain);
        rejected(&h, "/api/x", &token, "critical header").await;
    }
    // The provider's own JWT access token (its audience is the client id) passes.
    let machine = h.client();
    h.login(&machine, "robot").await;
    let access = h
        .echo(&machine, "/other/x")
        .await
        .bearer()
        .expect("a token");
    let echo = accepted(&h, "/api/x", &access).await;
    assert_eq!(echo.header("x-forwarded-user").as_deref(), Some("robot"));
}

#[tokio::test]
async fn only_the_configured_audiences_are_accepted() {
    let h = Harness::builder()
        .config(ROUTES)
        .config("[oidc]\nbearer_audiences = [\"aud-a\", \"aud-b\"]")
        .start()
        .await;
    let for_client = h.idp.sign_jwt(&claims(&h, json!({})));
    rejected(&h, "/api/x", &for_client, "audience").await;
    let for_b = h.idp.sign_jwt(&claims(&h, json!({"aud": "aud-b"})));
    accepted(&h, "/api/x", &for_b).await;
}
