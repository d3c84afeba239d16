//! Sign-out (RP-initiated) and back-channel logout (OpenID Back-Channel Logout 1.0).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use devidp::idp::TokenFault;
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use support::{CLIENT_ID, CLIENT_SECRET, Harness, location, set_cookie, set_cookie_line};
use support::{bare_client, one, query_of};

const SESSION: &str = "authgate_session";
const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn jwt_payload(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// Status of an API request carrying exactly this session cookie.
async fn status_with(h: &Harness, cookie: &str) -> StatusCode {
    bare_client()
        .get(h.at("/page"))
        .header(header::ACCEPT, "application/json")
        .header(header::COOKIE, format!("{SESSION}={cookie}"))
        .send()
        .await
        .unwrap()
        .status()
}

/// A refresh grant with `refresh_token`, straight at the provider.
async fn provider_refresh(h: &Harness, refresh_token: &str) -> (StatusCode, Value) {
    let r = bare_client()
        .post(format!("{}/token", h.idp.issuer()))
        .header(
            header::AUTHORIZATION,
            format!(
                "Basic {}",
                STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
            ),
        )
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=refresh_token&refresh_token={refresh_token}"
        ))
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap_or(Value::Null))
}

fn assert_cleared(response: &reqwest::Response, what: &str) {
    let line = set_cookie_line(response, SESSION).unwrap_or_else(|| panic!("{what}: no clear"));
    assert!(line.starts_with(&format!("{SESSION}=;")), "{what}: {line}");
    assert!(
        line.split(';').map(str::trim).any(|a| a == "Max-Age=0"),
        "{what}: {line}"
    );
    assert!(line.contains("Path=/"), "{what}: {line}");
}

// --- RP-initiated sign-out ---

async fn sign_out_with_session(method: Method, config: &str) {
    let h = Harness::builder().config(config).start().await;
    let client = h.client();
    let cookie = h.login(&client, "alice").await;
    let sid = h
        .idp
        .controls()
        .last_issued_sid()
        .expect("a sid was issued");
    assert_eq!(h.idp.controls().revocations(), 0);

    let r = client
        .request(method.clone(), h.at("/oauth2/sign_out?rd=%2Felsewhere"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND, "{method}");
    assert_cleared(&r, "sign-out");
    let to = location(&r);
    assert!(
        to.starts_with(&format!("{}/end_session?", h.idp.issuer())),
        "{to}"
    );
    let q = query_of(&to);
    assert_eq!(one(&q, "client_id"), CLIENT_ID);
    assert_eq!(one(&q, "post_logout_redirect_uri"), h.at("/"));
    let hint = jwt_payload(one(&q, "id_token_hint"));
    assert_eq!(hint["sub"], "alice");
    assert_eq!(hint["aud"], CLIENT_ID);
    assert_eq!(
        hint["sid"],
        sid.as_str(),
        "the hint is this login's ID token"
    );

    // The refresh token was revoked: the provider refuses it from now on.
    let controls = h.idp.controls();
    assert_eq!(controls.revocations(), 1, "one revocation");
    let revoked = controls.revoked_tokens().remove(0);
    let (status, body) = provider_refresh(&h, &revoked).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_grant");

    // The old cookie is dead, for APIs and browsers alike.
    assert_eq!(status_with(&h, &cookie).await, StatusCode::UNAUTHORIZED);
    let r = bare_client()
        .get(h.at("/page"))
        .header(header::ACCEPT, "text/html")
        .header(header::COOKIE, format!("{SESSION}={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert!(location(&r).contains("/oauth2/start"));
    assert_eq!(
        client
            .get(h.at("/oauth2/userinfo"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn sign_out_get_revokes_and_logs_out_at_the_provider() {
    sign_out_with_session(Method::GET, "").await;
}

#[tokio::test]
async fn sign_out_post_revokes_and_logs_out_at_the_provider() {
    sign_out_with_session(Method::POST, "").await;
}

#[tokio::test]
async fn sign_out_revokes_with_client_secret_post_too() {
    sign_out_with_session(
        Method::POST,
        r#"[oidc]
        token_endpoint_auth = "client_secret_post""#,
    )
    .await;
}

#[tokio::test]
async fn sign_out_without_a_session_goes_to_rd_same_origin_only() {
    let h = Harness::start().await;
    let client = h.client();
    let public = h.at("/abs/path?q=1");
    let public_enc: String = url::form_urlencoded::byte_serialize(public.as_bytes()).collect();
    for (query, expected) in [
        ("", "/"),
        ("?rd=%2Fsomewhere%3Fa%3Db", "/somewhere?a=b"),
        (&format!("?rd={public_enc}")[..], "/abs/path?q=1"),
        ("?rd=https%3A%2F%2Fevil.example", "/"),
        ("?rd=%2F%2Fevil.example", "/"),
    ] {
        for method in [Method::GET, Method::POST] {
            let r = client
                .request(method.clone(), h.at(&format!("/oauth2/sign_out{query}")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::FOUND, "{method} {query}");
            assert_eq!(location(&r), expected, "{method} {query}");
            assert_cleared(&r, query);
        }
    }
    assert_eq!(h.idp.controls().revocations(), 0);
    assert_eq!(h.idp.controls().end_session_calls(), 0);
}

#[tokio::test]
async fn sign_out_with_an_invalid_cookie_only_clears_it() {
    let h = Harness::start().await;
    let r = bare_client()
        .get(h.at("/oauth2/sign_out?rd=%2Fbye"))
        .header(header::COOKIE, format!("{SESSION}=garbage.value"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(location(&r), "/bye");
    assert_cleared(&r, "invalid cookie");
    assert_eq!(h.idp.controls().revocations(), 0);
}

// --- back-channel logout ---

struct User {
    cookie: String,
    sid: String,
}

async fn login(h: &Harness, user: &str) -> User {
    let cookie = h.login(&h.client(), user).await;
    let sid = h.idp.controls().last_issued_sid().unwrap();
    User { cookie, sid }
}

fn logout_claims(h: &Harness) -> serde_json::Map<String, Value> {
    let Value::Object(map) = json!({
        "iss": h.idp.issuer(),
        "aud": CLIENT_ID,
        "iat": now(),
        "exp": now() + 120,
        "jti": format!("jti-{}", rand_suffix()),
        "events": { BACKCHANNEL_EVENT: {} },
    }) else {
        unreachable!()
    };
    map
}

fn rand_suffix() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

async fn backchannel(h: &Harness, token: &str) -> (StatusCode, String) {
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("logout_token", token)
        .finish();
    let r = bare_client()
        .post(h.at("/oauth2/backchannel_logout"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    assert!(
        set_cookie(&r, SESSION).is_none(),
        "the provider is not a browser"
    );
    (status, r.text().await.unwrap())
}

#[tokio::test]
async fn backchannel_logout_by_sid_ends_that_session_only() {
    let h = Harness::start().await;
    let alice = login(&h, "alice").await;
    let alice_other = login(&h, "alice").await;
    let bob = login(&h, "bob").await;
    assert_ne!(alice.sid, alice_other.sid, "one sid per login");
    for u in [&alice, &alice_other, &bob] {
        assert_eq!(status_with(&h, &u.cookie).await, StatusCode::OK);
    }

    let mut claims = logout_claims(&h);
    claims.insert("sid".into(), json!(alice.sid));
    let (status, body) = backchannel(&h, &h.idp.sign_jwt(&Value::Object(claims))).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    assert_eq!(
        status_with(&h, &alice.cookie).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status_with(&h, &alice_other.cookie).await,
        StatusCode::OK,
        "another login of the same user has another sid"
    );
    assert_eq!(status_with(&h, &bob.cookie).await, StatusCode::OK);
}

#[tokio::test]
async fn backchannel_logout_by_sub_ends_every_session_of_the_user() {
    let h = Harness::start().await;
    let alice1 = login(&h, "alice").await;
    let alice2 = login(&h, "alice").await;
    let bob = login(&h, "bob").await;

    let mut claims = logout_claims(&h);
    claims.insert("sub".into(), json!("alice"));
    let (status, body) = backchannel(&h, &h.idp.sign_jwt(&Value::Object(claims))).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    assert_eq!(
        status_with(&h, &alice1.cookie).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status_with(&h, &alice2.cookie).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(status_with(&h, &bob.cookie).await, StatusCode::OK);
}

#[tokio::test]
async fn backchannel_logout_after_key_rotation_is_accepted() {
    let h = Harness::start().await;
    let alice = login(&h, "alice").await;
    h.idp.controls().rotate_signing_key();
    let mut claims = logout_claims(&h);
    claims.insert("sid".into(), json!(alice.sid));
    let (status, body) = backchannel(&h, &h.idp.sign_jwt(&Value::Object(claims))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        status_with(&h, &alice.cookie).await,
        StatusCode::UNAUTHORIZED
    );
}

/// A logout token is used once. A replay is refused (400) and ends
/// nothing, so a captured token cannot end the user's later sessions; another token (another
/// `jti`) for the same user still works. `exp` is optional: a recent `iat` is what counts.
#[tokio::test]
async fn a_logout_token_is_used_once() {
    let h = Harness::start().await;
    let first = login(&h, "alice").await;
    let mut claims = logout_claims(&h);
    claims.insert("sub".into(), json!("alice"));
    claims.remove("exp");
    let token = h.idp.sign_jwt(&Value::Object(claims.clone()));
    let (status, body) = backchannel(&h, &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        status_with(&h, &first.cookie).await,
        StatusCode::UNAUTHORIZED
    );

    let again = login(&h, "alice").await;
    for _ in 0..2 {
        let (status, body) = backchannel(&h, &token).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "a replay: {body}");
        assert!(body.contains("already used"), "{body}");
        assert_eq!(
            status_with(&h, &again.cookie).await,
            StatusCode::OK,
            "a replay ends nothing"
        );
    }
    // The same claims with another jti are another logout.
    claims.insert("jti".into(), json!(format!("jti-{}", rand_suffix())));
    let (status, body) = backchannel(&h, &h.idp.sign_jwt(&Value::Object(claims))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        status_with(&h, &again.cookie).await,
        StatusCode::UNAUTHORIZED
    );
}

// --- a logout during a refresh flight ---

/// How a session is ended while its refresh is at the provider.
#[derive(Clone, Copy, Debug)]
enum Ending {
    SignOut,
    BackChannel,
}

/// Logs alice in with an access token that needs a refresh at once, and starts a request
/// whose refresh the provider answers only after 3 s (the grant itself, with its rotation,
/// is done at once). Returns the cookie, the provider session, and the pending request.
async fn request_inside_a_slow_refresh(
    h: &Harness,
) -> (String, String, tokio::task::JoinHandle<StatusCode>) {
    let controls = h.idp.controls();
    controls.set_access_ttl(std::time::Duration::from_secs(5)); // < refresh_before_expiry
    let alice = login(h, "alice").await;
    // The refreshed token lasts: a session brought back would not refresh (and meet the
    // revoked grant) again.
    controls.set_access_ttl(std::time::Duration::from_secs(300));
    controls.push_token_fault(TokenFault::SlowAnswer(std::time::Duration::from_secs(3)));
    let in_flight = tokio::spawn({
        let (url, cookie) = (h.at("/page"), alice.cookie.clone());
        async move {
            bare_client()
                .get(url)
                .header(header::ACCEPT, "application/json")
                .header(header::COOKIE, format!("{SESSION}={cookie}"))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    let at_provider = support::eventually(std::time::Duration::from_secs(5), || async {
        controls.refresh_calls() == 1
    })
    .await;
    assert!(at_provider, "the refresh reached the provider");
    (alice.cookie, alice.sid, in_flight)
}

async fn end_session(h: &Harness, how: Ending, cookie: &str, sid: &str) {
    match how {
        Ending::SignOut => {
            let r = bare_client()
                .post(h.at("/oauth2/sign_out"))
                .header(header::COOKIE, format!("{SESSION}={cookie}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::FOUND);
        }
        Ending::BackChannel => {
            let token = support::logout_token(&h.idp, sid);
            assert_eq!(support::post_logout_token(h, &token).await, StatusCode::OK);
        }
    }
}

async fn logout_during_refresh_is_final(how: Ending) {
    let h = Harness::start().await;
    let (cookie, sid, in_flight) = request_inside_a_slow_refresh(&h).await;
    end_session(&h, how, &cookie, &sid).await;
    assert_eq!(
        status_with(&h, &cookie).await,
        StatusCode::UNAUTHORIZED,
        "{how:?}: ended at once"
    );
    // The flight comes back with new tokens: they are dropped, and so is its request.
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), in_flight)
        .await
        .expect("the request in flight is answered")
        .unwrap();
    for _ in 0..3 {
        assert_eq!(
            status_with(&h, &cookie).await,
            StatusCode::UNAUTHORIZED,
            "{how:?}: the refresh brought the session back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "{how:?}: request in flight"
    );
    assert_eq!(h.idp.controls().refresh_calls(), 1);
    // The refresh token the dropped refresh brought back is revoked at the provider (it
    // would stay live there otherwise), besides the used-up one sign-out revoked.
    let revoked = h.idp.controls().revoked_tokens();
    let expected = match how {
        Ending::SignOut => 2,
        Ending::BackChannel => 1,
    };
    assert_eq!(revoked.len(), expected, "{how:?}: {revoked:?}");
    let last = revoked.last().unwrap();
    assert_eq!(revoked.iter().filter(|t| *t == last).count(), 1);
}

#[tokio::test]
async fn sign_out_during_a_refresh_is_final() {
    logout_during_refresh_is_final(Ending::SignOut).await;
}

#[tokio::test]
async fn backchannel_logout_during_a_refresh_is_final() {
    logout_during_refresh_is_final(Ending::BackChannel).await;
}

/// Posts a logout token made of `logout_claims` patched with `patch(t)` (a `null` removes a
/// claim), `t` being the second it is sent in. The gateway reads the same clock: should a
/// second tick over during the call, the edge moved under the test, so it tries again (a
/// bounded number of times). Each try is a new token (a new `jti`).
async fn backchannel_within_one_second(
    h: &Harness,
    patch: impl Fn(u64) -> Value,
) -> (StatusCode, String) {
    for _ in 0..20 {
        let t = now();
        let mut claims = logout_claims(h);
        claims.insert("sub".into(), json!("nobody-logged-in"));
        for (k, v) in patch(t).as_object().unwrap() {
            match v {
                Value::Null => drop(claims.remove(k)),
                v => drop(claims.insert(k.clone(), v.clone())),
            }
        }
        let answer = backchannel(h, &h.idp.sign_jwt(&Value::Object(claims))).await;
        if now() == t {
            return answer;
        }
    }
    panic!("a second ticked over during each of 20 calls");
}

/// Claims made for the second `t` they are sent in, and the refusal expected (`None`: accepted).
type EdgeCase = (fn(u64) -> Value, Option<&'static str>);

/// A logout token's `iat` within 10 minutes, with the common 60 s leeway, at its edges: one second inside is
/// accepted, one outside refused (with today's descriptions). `nbf` is honoured too (RFC 7519
/// section 4.1.5), and a huge time is far away, not an overflow.
#[tokio::test]
async fn logout_token_times_have_60_seconds_of_leeway() {
    let h = Harness::start().await;
    let cases: [EdgeCase; 11] = [
        (|t| json!({"iat": t + 59}), None),
        (|t| json!({"iat": t + 61}), Some("issued in the future")),
        (|t| json!({"iat": t - 659}), None),
        (|t| json!({"iat": t - 661}), Some("issued too long ago")),
        (|t| json!({"exp": t - 59}), None),
        (|t| json!({"exp": t - 61}), Some("expired")),
        (|t| json!({"nbf": t + 59}), None),
        (|t| json!({"nbf": t + 61}), Some("not valid yet")),
        (|_| json!({"exp": u64::MAX}), None),
        (|_| json!({"iat": u64::MAX}), Some("issued in the future")),
        (
            |_| json!({"nbf": "tomorrow"}),
            Some("a time claim is not a whole number of seconds"),
        ),
    ];
    for (patch, refused) in cases {
        let (status, body) = backchannel_within_one_second(&h, patch).await;
        match refused {
            None => assert_eq!(status, StatusCode::OK, "{}: {body}", patch(0)),
            Some(why) => {
                assert_eq!(status, StatusCode::BAD_REQUEST, "{}: {body}", patch(0));
                let answer: Value = serde_json::from_str(&body).unwrap();
                assert_eq!(answer["error_description"], why, "{}", patch(0));
            }
        }
    }
}

#[tokio::test]
async fn invalid_logout_tokens_are_refused_and_touch_nothing() {
    let h = Harness::start().await;
    let alice = login(&h, "alice").await;
    let bob = login(&h, "bob").await;

    let with = |f: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut claims = logout_claims(&h);
        claims.insert("sid".into(), json!(alice.sid));
        claims.insert("sub".into(), json!("alice"));
        f(&mut claims);
        Value::Object(claims)
    };
    let mut cases: Vec<(&str, String)> = vec![
        (
            "foreign key",
            h.idp.sign_jwt_with_foreign_key(&with(&|_| {}), "dev-1"),
        ),
        (
            "foreign key, unknown kid",
            h.idp.sign_jwt_with_foreign_key(&with(&|_| {}), "nobody"),
        ),
        (
            "wrong aud",
            h.idp.sign_jwt(&with(&|c| {
                c.insert("aud".into(), json!("another-client"));
            })),
        ),
        (
            "wrong iss",
            h.idp.sign_jwt(&with(&|c| {
                c.insert("iss".into(), json!("https://evil.example"));
            })),
        ),
        (
            "with a nonce",
            h.idp.sign_jwt(&with(&|c| {
                c.insert("nonce".into(), json!("n-0S6_WzA2Mj"));
            })),
        ),
        (
            "without events",
            h.idp.sign_jwt(&with(&|c| {
                c.remove("events");
            })),
        ),
        (
            "another event",
            h.idp.sign_jwt(&with(&|c| {
                c.insert(
                    "events".into(),
                    json!({"http://schemas.openid.net/event/other": {}}),
                );
            })),
        ),
        (
            "without sid and sub",
            h.idp.sign_jwt(&with(&|c| {
                c.remove("sid");
                c.remove("sub");
            })),
        ),
        (
            "expired",
            h.idp.sign_jwt(&with(&|c| {
                c.insert("iat".into(), json!(now() - 7200));
                c.insert("exp".into(), json!(now() - 3600));
            })),
        ),
        (
            "without iat",
            h.idp.sign_jwt(&with(&|c| {
                c.remove("iat");
            })),
        ),
        (
            "a year old, no exp",
            h.idp.sign_jwt(&with(&|c| {
                c.insert("iat".into(), json!(now() - 365 * 86400));
                c.remove("exp");
            })),
        ),
        (
            "issued 12 minutes ago, exp in the future",
            h.idp.sign_jwt(&with(&|c| {
                c.insert("iat".into(), json!(now() - 12 * 60));
                c.insert("exp".into(), json!(now() + 3600));
            })),
        ),
        (
            "without jti",
            h.idp.sign_jwt(&with(&|c| {
                c.remove("jti");
            })),
        ),
        (
            "an empty jti",
            h.idp.sign_jwt(&with(&|c| {
                c.insert("jti".into(), json!(""));
            })),
        ),
        (
            "a jti that is not a string",
            h.idp.sign_jwt(&with(&|c| {
                c.insert("jti".into(), json!(42));
            })),
        ),
        (
            "events a string",
            h.idp.sign_jwt(&with(&|c| {
                c.insert("events".into(), json!(BACKCHANNEL_EVENT));
            })),
        ),
        (
            "events a list",
            h.idp.sign_jwt(&with(&|c| {
                c.insert("events".into(), json!([BACKCHANNEL_EVENT]));
            })),
        ),
        (
            "the event member a string",
            h.idp.sign_jwt(&with(&|c| {
                c.insert("events".into(), json!({ BACKCHANNEL_EVENT: "yes" }));
            })),
        ),
        (
            "the event member true",
            h.idp.sign_jwt(&with(&|c| {
                c.insert("events".into(), json!({ BACKCHANNEL_EVENT: true }));
            })),
        ),
        (
            "the event member null",
            h.idp.sign_jwt(&with(&|c| {
                c.insert("events".into(), json!({ BACKCHANNEL_EVENT: null }));
            })),
        ),
        (
            "a sid that is not a string",
            h.idp.sign_jwt(&with(&|c| {
                c.insert("sid".into(), json!(["x"]));
            })),
        ),
        (
            "an unknown crit header",
            h.idp.sign_jwt_with_header(
                &json!({"crit": ["urn:example:unknown"], "urn:example:unknown": 1}),
                &with(&|_| {}),
            ),
        ),
        (
            "a crit header naming a registered parameter",
            h.idp
                .sign_jwt_with_header(&json!({"crit": ["exp"]}), &with(&|_| {})),
        ),
        ("not a JWT", "not-a-jwt".to_owned()),
    ];
    // An unsigned (alg none) token with valid claims.
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(with(&|_| {}).to_string());
    cases.push(("alg none", format!("{header}.{payload}.")));

    for (what, token) in &cases {
        let (status, body) = backchannel(&h, token).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {body}");
    }
    // No logout_token at all.
    let r = bare_client()
        .post(h.at("/oauth2/backchannel_logout"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body("something=else")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    assert_eq!(status_with(&h, &alice.cookie).await, StatusCode::OK);
    assert_eq!(status_with(&h, &bob.cookie).await, StatusCode::OK);

    // The control: the very same claims, properly signed, do end alice's session.
    let (status, body) = backchannel(&h, &h.idp.sign_jwt(&with(&|_| {}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        status_with(&h, &alice.cookie).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(status_with(&h, &bob.cookie).await, StatusCode::OK);
}
