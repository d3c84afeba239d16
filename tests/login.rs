//! Login: the authorization code flow hop by hop, ID token checks, state binding, session fixation, provider key rotation, userinfo.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod support;

use authgate::session::{SessionStore, Store};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use devidp::idp::{ClientAuth, IdTokenTamper};
use reqwest::{Client, Response, StatusCode, header};
use serde_json::Value;
use sha2::{Digest, Sha256};
use support::{CLIENT_ID, Harness, location, set_cookie, set_cookie_line, userinfo_status};
use support::{bare_client, one, query_of};

const SESSION: &str = "authgate_session";
/// Login cookies are `authgate_session_login_<tag>`, one per login.
const LOGIN_PREFIX: &str = "authgate_session_login_";

// --- helpers ---

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `/oauth2/start?rd=..` -> the provider's authorize URL.
async fn start(h: &Harness, client: &Client, rd: &str) -> String {
    let r = client
        .get(h.at(&format!("/oauth2/start?rd={}", enc(rd))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND, "start");
    let authorize = location(&r);
    assert!(
        authorize.starts_with(&format!("{}/authorize?", h.idp.issuer())),
        "{authorize}"
    );
    authorize
}

/// The provider's authorize URL (auto-login) -> our callback URL.
async fn authorize(h: &Harness, client: &Client, url: &str) -> String {
    let r = client.get(url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND, "authorize");
    let callback = location(&r);
    assert!(
        callback.starts_with(&h.at("/oauth2/callback?")),
        "{callback}"
    );
    callback
}

/// The `Set-Cookie` line of the login cookie a response sets.
fn login_cookie_line(r: &Response) -> Option<String> {
    r.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with(LOGIN_PREFIX) && !v.contains("Max-Age=0"))
}

async fn live_sessions(h: &Harness) -> u64 {
    let Store::Memory(m) = h.gateway.store().as_ref() else {
        panic!("these tests run on the memory store");
    };
    m.sync().await;
    h.gateway.store().live()
}

async fn assert_login_page_400(r: Response, what: &str) -> String {
    let status = r.status();
    assert!(
        set_cookie(&r, SESSION).is_none_or(|v| v.is_empty()),
        "{what}: no session cookie may be set"
    );
    let ctype = r
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = r.text().await.unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {body}");
    assert!(ctype.starts_with("text/html"), "{what}: {ctype}");
    assert!(body.contains("<html"), "{what}: {body}");
    body
}

// --- the round trip ---

#[tokio::test]
async fn login_round_trip_asserts_every_hop() {
    let h = Harness::start().await;
    h.idp.controls().set_auto_login(Some("alice".into()));
    let client = h.client();

    // 1. A browser navigation without a session: 302 to /oauth2/start with the landing URL.
    let r = client
        .get(h.at("/page?x=1"))
        .header(header::ACCEPT, "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    let to_start = location(&r);
    assert!(to_start.starts_with(&h.at("/oauth2/start?")), "{to_start}");
    assert_eq!(one(&query_of(&to_start), "rd"), "/page?x=1");

    // 2. /oauth2/start: 302 to the authorize endpoint, binding cookie set.
    let r = client.get(&to_start).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    let binding = login_cookie_line(&r).expect("login cookie");
    assert!(binding.contains("HttpOnly"), "{binding}");
    assert!(binding.contains("SameSite=Lax"), "{binding}");
    assert!(binding.contains("Path=/oauth2/"), "{binding}");
    assert!(set_cookie(&r, SESSION).is_none(), "no session before login");
    let authorize_url = location(&r);
    assert!(
        authorize_url.starts_with(&format!("{}/authorize?", h.idp.issuer())),
        "{authorize_url}"
    );
    let q = query_of(&authorize_url);
    assert_eq!(one(&q, "response_type"), "code");
    assert_eq!(one(&q, "client_id"), CLIENT_ID);
    assert_eq!(
        one(&q, "redirect_uri"),
        h.at("/oauth2/callback"),
        "redirect_uri = public_url + /oauth2/callback"
    );
    let challenge = one(&q, "code_challenge").to_owned();
    assert_eq!(challenge.len(), 43, "S256 challenge is 43 base64url chars");
    assert!(
        challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{challenge}"
    );
    assert_eq!(one(&q, "code_challenge_method"), "S256");
    let state = one(&q, "state").to_owned();
    assert!(state.len() >= 16, "state {state:?}");
    let nonce = one(&q, "nonce").to_owned();
    assert!(nonce.len() >= 16, "nonce {nonce:?}");
    let mut scopes: Vec<&str> = one(&q, "scope").split(' ').collect();
    scopes.sort_unstable();
    assert_eq!(scopes, ["email", "offline_access", "openid", "profile"]);
    assert_eq!(
        one(&q, "prompt"),
        "consent",
        "offline_access => prompt=consent"
    );
    assert!(!q.contains_key("resource"), "no resource configured");

    // 3. The provider sees exactly that request and sends the browser back with a code.
    let back = client.get(&authorize_url).send().await.unwrap();
    assert_eq!(back.status(), StatusCode::FOUND);
    assert_eq!(h.idp.controls().last_authorize_query(), q);
    let callback = location(&back);
    assert!(callback.starts_with(&h.at("/oauth2/callback?")));
    assert_eq!(one(&query_of(&callback), "state"), state);

    // 4. The callback: exchange (client_secret_basic, PKCE verifier), cookie, landing.
    let done = client.get(&callback).send().await.unwrap();
    assert_eq!(done.status(), StatusCode::FOUND);
    assert_eq!(location(&done), "/page?x=1");
    let line = set_cookie_line(&done, SESSION).expect("session cookie");
    let attrs: Vec<&str> = line.split(';').map(str::trim).collect();
    assert!(attrs.contains(&"HttpOnly"), "{line}");
    assert!(attrs.contains(&"SameSite=Lax"), "{line}");
    assert!(attrs.contains(&"Path=/"), "{line}");
    assert!(!attrs.contains(&"Secure"), "cookie_secure = false: {line}");
    let value = set_cookie(&done, SESSION).unwrap();
    let (id, mac) = value.split_once('.').expect("<id>.<mac>");
    assert_eq!(URL_SAFE_NO_PAD.decode(id).unwrap().len(), 16, "{value}");
    assert_eq!(URL_SAFE_NO_PAD.decode(mac).unwrap().len(), 32, "{value}");

    let controls = h.idp.controls();
    assert_eq!(controls.code_calls(), 1);
    assert_eq!(
        controls.last_token_client_auth(),
        Some(ClientAuth::SecretBasic)
    );
    let form = controls.last_token_request_form();
    assert_eq!(one(&form, "grant_type"), "authorization_code");
    assert_eq!(one(&form, "redirect_uri"), h.at("/oauth2/callback"));
    let verifier = one(&form, "code_verifier");
    assert_eq!(
        URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())),
        challenge,
        "the verifier matches the challenge"
    );
    assert!(!form.contains_key("resource"));

    // 5. The landing page now goes through, with the user's identity.
    let echo = h.echo(&client, "/page?x=1").await;
    assert_eq!(echo.path(), "/page");
    assert_eq!(echo.0["query"], "x=1");
    assert_eq!(echo.header("x-forwarded-user").as_deref(), Some("alice"));
}

#[tokio::test]
async fn secure_cookie_client_secret_post_resource_and_extra_params() {
    let h = Harness::builder()
        .config(
            r#"
            [oidc]
            token_endpoint_auth = "client_secret_post"
            resource = ["https://api.example.test", "https://other.example.test"]
            extra_auth_params = { prompt = "login", ui_locales = "fr" }
            [session]
            cookie_secure = true
            "#,
        )
        .start()
        .await;
    h.idp.controls().set_auto_login(Some("alice".into()));
    // Secure cookies are not sent over plain http by a browser jar: carry them by hand.
    let client = bare_client();
    let r = client
        .get(h.at("/oauth2/start?rd=%2Fx"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    let binding_line = login_cookie_line(&r).unwrap();
    assert!(binding_line.contains("; Secure"), "{binding_line}");
    let binding = binding_line.split(';').next().unwrap().to_owned();
    let q = query_of(&location(&r));
    assert_eq!(
        q["resource"],
        ["https://api.example.test", "https://other.example.test"]
    );
    assert_eq!(
        q["prompt"],
        ["login"],
        "a prompt in extra_auth_params replaces the default"
    );
    assert_eq!(one(&q, "ui_locales"), "fr");

    let back = client.get(location(&r)).send().await.unwrap();
    let done = client
        .get(location(&back))
        .header(header::COOKIE, binding)
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::FOUND);
    assert_eq!(location(&done), "/x");
    let line = set_cookie_line(&done, SESSION).unwrap();
    assert!(
        line.split(';').map(str::trim).any(|a| a == "Secure"),
        "{line}"
    );
    let controls = h.idp.controls();
    assert_eq!(
        controls.last_token_client_auth(),
        Some(ClientAuth::SecretPost)
    );
    // One resource per token request (Logto and oidc-provider refuse several): the code
    // exchange names the first, then one refresh grant fetches the second resource's token.
    assert_eq!((controls.code_calls(), controls.refresh_calls()), (1, 1));
    assert_eq!(controls.token_requests_with_resource(), 2);
    let form = controls.last_token_request_form();
    assert_eq!(form["grant_type"], ["refresh_token"]);
    assert_eq!(form["resource"], ["https://other.example.test"]);
}

#[tokio::test]
async fn no_prompt_without_offline_access() {
    let h = Harness::builder()
        .config(
            r#"[oidc]
            scopes = ["openid", "email"]"#,
        )
        .start()
        .await;
    let authorize = start(&h, &h.client(), "/").await;
    let q = query_of(&authorize);
    assert!(!q.contains_key("prompt"), "{q:?}");
    assert_eq!(one(&q, "scope"), "openid email");
}

// --- unauthenticated API requests ---

#[tokio::test]
async fn api_requests_get_401_json_never_a_redirect() {
    let h = Harness::builder()
        .config(
            r#"
            [[route]]
            path = "/api/"
            api = true
            "#,
        )
        .start()
        .await;
    let client = h.client();
    let html = "text/html,application/xhtml+xml";
    let cases: Vec<(&str, reqwest::RequestBuilder)> = vec![
        ("GET without Accept", client.get(h.at("/page"))),
        (
            "GET Accept: application/json",
            client
                .get(h.at("/page"))
                .header(header::ACCEPT, "application/json"),
        ),
        (
            "POST accepting html",
            client
                .post(h.at("/page"))
                .header(header::ACCEPT, html)
                .body("a=1"),
        ),
        (
            "XHR accepting html",
            client
                .get(h.at("/page"))
                .header(header::ACCEPT, html)
                .header("X-Requested-With", "XMLHttpRequest"),
        ),
        (
            "api route, browser navigation",
            client.get(h.at("/api/things")).header(header::ACCEPT, html),
        ),
        (
            "DELETE accepting html",
            client.delete(h.at("/page")).header(header::ACCEPT, html),
        ),
    ];
    for (what, request) in cases {
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{what}");
        assert!(r.headers().get(header::LOCATION).is_none(), "{what}");
        let challenge = r.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
        assert!(challenge.starts_with("Bearer"), "{what}: {challenge}");
        let body: Value = r.json().await.unwrap();
        let login_url = body["login_url"].as_str().unwrap_or_default();
        assert!(login_url.contains("/oauth2/start"), "{what}: {body}");
    }
    // The control: the same path as a browser navigation is redirected.
    let r = client
        .get(h.at("/page"))
        .header(header::ACCEPT, html)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
}

// --- ID token checks ---

async fn tampered_id_token_is_refused(tamper: IdTokenTamper) {
    let h = Harness::start().await;
    h.idp.controls().set_auto_login(Some("alice".into()));
    h.idp.controls().set_id_token_tamper(Some(tamper));
    let client = h.client();
    let authorize_url = start(&h, &client, "/here").await;
    let callback = authorize(&h, &client, &authorize_url).await;
    let r = client.get(&callback).send().await.unwrap();
    assert_login_page_400(r, &format!("{tamper:?}")).await;
    assert_eq!(h.idp.controls().code_calls(), 1, "the code was exchanged");
    assert_eq!(live_sessions(&h).await, 0, "{tamper:?}: no session");
    assert_eq!(userinfo_status(&h, &client).await, StatusCode::UNAUTHORIZED);

    // The same browser logs in once the provider behaves: the knob was the only cause.
    h.idp.controls().set_id_token_tamper(None);
    let authorize_url = start(&h, &client, "/here").await;
    let callback = authorize(&h, &client, &authorize_url).await;
    let r = client.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND, "{tamper:?}: clean login");
    assert_eq!(userinfo_status(&h, &client).await, StatusCode::OK);
}

#[tokio::test]
async fn id_token_with_bad_signature_is_refused() {
    tampered_id_token_is_refused(IdTokenTamper::ForeignKey).await;
}

#[tokio::test]
async fn id_token_for_another_audience_is_refused() {
    tampered_id_token_is_refused(IdTokenTamper::WrongAudience).await;
}

#[tokio::test]
async fn id_token_with_wrong_nonce_is_refused() {
    tampered_id_token_is_refused(IdTokenTamper::WrongNonce).await;
}

#[tokio::test]
async fn expired_id_token_is_refused() {
    tampered_id_token_is_refused(IdTokenTamper::Expired).await;
}

/// A `crit` header the gateway does not understand (it understands
/// none) refuses the ID token, as every JWT it verifies.
#[tokio::test]
async fn id_token_with_a_critical_header_is_refused() {
    tampered_id_token_is_refused(IdTokenTamper::CriticalHeader).await;
}

// --- state ---

#[tokio::test]
async fn replayed_callback_is_refused_and_creates_no_second_session() {
    let h = Harness::start().await;
    h.idp.controls().set_auto_login(Some("alice".into()));
    let client = h.client();
    let authorize_url = start(&h, &client, "/").await;
    let callback = authorize(&h, &client, &authorize_url).await;
    let first = client.get(&callback).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::FOUND);
    let cookie = set_cookie(&first, SESSION).unwrap();
    let again = client.get(&callback).send().await.unwrap();
    assert_login_page_400(again, "replay").await;
    assert_eq!(
        h.idp.controls().code_calls(),
        1,
        "a replay is not exchanged"
    );
    assert_eq!(live_sessions(&h).await, 1);
    // The first login is untouched.
    let r = bare_client()
        .get(h.at("/oauth2/userinfo"))
        .header(header::COOKIE, format!("{SESSION}={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn unknown_or_missing_state_is_refused() {
    let h = Harness::start().await;
    h.idp.controls().set_auto_login(Some("alice".into()));
    let client = h.client();
    // The browser has a binding cookie: only the state is wrong.
    let authorize_url = start(&h, &client, "/").await;
    let callback = authorize(&h, &client, &authorize_url).await;
    let code = one(&query_of(&callback), "code").to_owned();
    for (what, url) in [
        (
            "unknown state",
            h.at(&format!("/oauth2/callback?code={code}&state=not-a-state")),
        ),
        ("no state", h.at(&format!("/oauth2/callback?code={code}"))),
        ("no code", h.at("/oauth2/callback?state=x")),
        ("nothing", h.at("/oauth2/callback")),
    ] {
        let r = client.get(&url).send().await.unwrap();
        assert_login_page_400(r, what).await;
    }
    assert_eq!(h.idp.controls().code_calls(), 0);
    assert_eq!(live_sessions(&h).await, 0);
}

#[tokio::test]
async fn provider_error_answers_400_with_a_retry_link() {
    let h = Harness::start().await;
    let client = h.client();
    let authorize_url = start(&h, &client, "/").await;
    let state = one(&query_of(&authorize_url), "state").to_owned();
    let r = client
        .get(h.at(&format!(
            "/oauth2/callback?error=access_denied&error_description=user+said+no&state={state}"
        )))
        .send()
        .await
        .unwrap();
    let body = assert_login_page_400(r, "access_denied").await;
    assert!(body.contains("href=\"/oauth2/start"), "{body}");
    assert!(body.contains("access_denied"), "{body}");
    assert_eq!(h.idp.controls().code_calls(), 0);
    assert_eq!(live_sessions(&h).await, 0);
}

#[tokio::test]
async fn state_started_by_another_browser_is_refused() {
    let h = Harness::start().await;
    h.idp.controls().set_auto_login(Some("alice".into()));
    let victim = h.client();
    let authorize_url = start(&h, &victim, "/").await;
    let callback = authorize(&h, &victim, &authorize_url).await;

    // A browser without any binding cookie.
    let stranger = h.client();
    let r = stranger.get(&callback).send().await.unwrap();
    assert_login_page_400(r, "no binding cookie").await;

    // A browser with its own, valid binding cookie (it started a login of its own).
    let attacker = h.client();
    start(&h, &attacker, "/").await;
    let authorize_url = start(&h, &victim, "/").await;
    let callback = authorize(&h, &victim, &authorize_url).await;
    let r = attacker.get(&callback).send().await.unwrap();
    assert_login_page_400(r, "someone else's binding cookie").await;

    assert_eq!(h.idp.controls().code_calls(), 0, "never exchanged");
    assert_eq!(live_sessions(&h).await, 0);
}

#[tokio::test]
async fn two_tabs_log_in_at_once() {
    let h = Harness::start().await;
    h.idp.controls().set_auto_login(Some("alice".into()));
    let client = h.client();
    let first = start(&h, &client, "/one").await;
    let second = start(&h, &client, "/two").await;
    assert_ne!(
        one(&query_of(&first), "state"),
        one(&query_of(&second), "state")
    );
    let second_cb = authorize(&h, &client, &second).await;
    let first_cb = authorize(&h, &client, &first).await;

    let r = client.get(&second_cb).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND, "second tab");
    assert_eq!(location(&r), "/two");
    assert!(set_cookie(&r, SESSION).is_some_and(|v| !v.is_empty()));
    let r = client.get(&first_cb).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND, "first tab");
    assert_eq!(location(&r), "/one");
    assert!(set_cookie(&r, SESSION).is_some_and(|v| !v.is_empty()));
    assert_eq!(h.idp.controls().code_calls(), 2);
    assert_eq!(userinfo_status(&h, &client).await, StatusCode::OK);
}

// --- session fixation ---

#[tokio::test]
async fn every_login_gets_a_new_session_id_and_the_old_one_dies() {
    let h = Harness::start().await;
    let client = h.client();
    let old = h.login(&client, "alice").await;
    let new = h.login(&client, "alice").await;
    assert_ne!(old, new, "a new id at every login");
    let (old_id, _) = old.split_once('.').unwrap();
    let (new_id, _) = new.split_once('.').unwrap();
    assert_ne!(old_id, new_id);

    let bare = bare_client();
    let with = |cookie: &str| {
        bare.get(h.at("/page"))
            .header(header::ACCEPT, "application/json")
            .header(header::COOKIE, format!("{SESSION}={cookie}"))
    };
    let r = with(&old).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "old cookie is dead");
    let r = with(&new).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "new cookie works");
    assert_eq!(live_sessions(&h).await, 1);
}

// --- provider key rotation ---

#[tokio::test]
async fn login_still_works_after_the_provider_rotates_its_key() {
    let h = Harness::start().await;
    let before = h.client();
    h.login(&before, "alice").await;
    let jwks_before = h.idp.controls().jwks_calls();

    h.idp.controls().rotate_signing_key();
    let after = h.client();
    h.login(&after, "bob").await;
    assert!(
        h.idp.controls().jwks_calls() > jwks_before,
        "the gateway refetched the JWKS for the unknown kid"
    );
    let echo = h.echo(&after, "/x").await;
    assert_eq!(echo.header("x-forwarded-user").as_deref(), Some("bob"));
    // The session made before the rotation is unaffected.
    let echo = h.echo(&before, "/x").await;
    assert_eq!(echo.header("x-forwarded-user").as_deref(), Some("alice"));
}

// --- userinfo ---

#[tokio::test]
async fn userinfo_shows_identity_and_expiries_never_a_token() {
    let h = Harness::start().await;
    let client = h.client();
    assert_eq!(userinfo_status(&h, &client).await, StatusCode::UNAUTHORIZED);

    h.idp
        .controls()
        .set_user_claims("alice", serde_json::json!({"groups": ["a", "b"]}));
    h.login(&client, "alice").await;
    let access_token = h.echo(&client, "/x").await.bearer().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let r = client.get(h.at("/oauth2/userinfo")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let text = r.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["sub"], "alice");
    assert_eq!(body["email"], "alice@example.test");
    assert_eq!(body["preferred_username"], "alice");
    assert_eq!(body["groups"], serde_json::json!(["a", "b"]));
    let at = body["access_token_expires_at"].as_u64().unwrap();
    assert!(
        at > now + 200 && at <= now + 310,
        "300 s token: {at} vs {now}"
    );
    let session = body["session_expires_at"].as_u64().unwrap();
    // Defaults: idle 8 h, absolute 7 d: the idle deadline is the earlier one.
    assert!(
        session > now + 8 * 3600 - 60 && session <= now + 8 * 3600 + 5,
        "{session} vs {now}"
    );
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "access_token_expires_at",
            "email",
            "groups",
            "preferred_username",
            "session_expires_at",
            "sub"
        ]
    );
    assert!(!text.contains(&access_token), "no access token in {text}");

    // The refresh and ID tokens become visible at sign-out (revocation, id_token_hint):
    // neither was in the userinfo body.
    let r = client.get(h.at("/oauth2/sign_out")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    let hint = one(&query_of(&location(&r)), "id_token_hint").to_owned();
    let revoked = h.idp.controls().revoked_tokens();
    assert_eq!(revoked.len(), 1);
    assert!(!text.contains(&hint), "no ID token in {text}");
    assert!(!text.contains(&revoked[0]), "no refresh token in {text}");
    assert_eq!(userinfo_status(&h, &client).await, StatusCode::UNAUTHORIZED);
}

// --- the provider failing during the code exchange ---

/// A token endpoint that is down during a login's code exchange (5xx page, closed connection)
/// is the provider's outage, not the user's bad request: 503 with `Retry-After` and a page
/// to try again, no session; the next login succeeds once the provider is back. An OAuth
/// error answer (`invalid_grant`) stays a 400.
#[tokio::test]
async fn a_provider_down_at_the_code_exchange_is_503_and_a_bad_grant_400() {
    use devidp::idp::TokenFault;
    let h = Harness::start().await;
    h.idp.controls().set_auto_login(Some("alice".into()));
    let faults = [
        TokenFault::Status(502, "<html>bad gateway</html>".into()),
        TokenFault::Status(500, "{}".into()),
        TokenFault::Close,
    ];
    for (done, fault) in faults.into_iter().enumerate() {
        let client = h.client();
        let authorize_url = start(&h, &client, "/").await;
        let callback = authorize(&h, &client, &authorize_url).await;
        h.idp.controls().set_token_fault(Some(fault.clone()));
        let r = client.get(&callback).send().await.unwrap();
        h.idp.controls().set_token_fault(None);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{fault:?}");
        assert_eq!(r.headers()[header::RETRY_AFTER], "1", "{fault:?}");
        assert!(
            set_cookie(&r, SESSION).is_none_or(|v| v.is_empty()),
            "{fault:?}"
        );
        let body = r.text().await.unwrap();
        assert!(body.contains("href=\"/oauth2/start\""), "{fault:?}: {body}");
        // Only the sessions of the logins after the earlier faults.
        assert_eq!(live_sessions(&h).await, done as u64, "{fault:?}");

        // The provider is back: a new login from the same browser succeeds.
        let authorize_url = start(&h, &client, "/").await;
        let callback = authorize(&h, &client, &authorize_url).await;
        let r = client.get(&callback).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FOUND, "{fault:?}: after the fault");
        assert!(set_cookie(&r, SESSION).is_some_and(|v| !v.is_empty()));
    }

    let client = h.client();
    let authorize_url = start(&h, &client, "/").await;
    let callback = authorize(&h, &client, &authorize_url).await;
    h.idp
        .controls()
        .set_token_fault(Some(TokenFault::InvalidGrant));
    let r = client.get(&callback).send().await.unwrap();
    h.idp.controls().set_token_fault(None);
    assert_login_page_400(r, "invalid_grant").await;
}
