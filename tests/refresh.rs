//! Transparent token refresh (the issue the product exists for): refresh ahead of expiry,
//! one flight per session (also under rotation), parallel across sessions, never blocking
//! other sessions, surviving a disconnected client, `invalid_grant` ends the session,
//! transient failures keep it (forward while valid, 503 + `Retry-After` after), backoff,
//! expiry sources (`expires_in`, JWT `exp`, `max_token_age`), identity updates from the
//! refreshed ID token, no refresh token, `resource` re-sent, `/oauth2/auth`.
//!
//! Timing: the harness sets `refresh_before_expiry = "10s"`. A token issued with a lifetime
//! of 10 s or less is therefore "near expiry" from the moment it is issued, so most tests log
//! in with a short `access_ttl` and raise it to 300 s before the refresh: the first request
//! refreshes at once and the refreshed token does not need another one. No test sleeps for
//! the refresh window, an expiry or a backoff to arrive: they move the gateway's clock (and
//! its provider's) with `Harness::advance`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use authgate::session::{Session, SessionStore};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use devidp::idp::{AccessTokenFormat, TokenFault};
use futures_util::future::join_all;
use reqwest::{Client, StatusCode, header};
use serde_json::{Value, json};
use support::bare_client;
use support::{Echo, Harness, location, set_cookie, set_cookie_line};

const SHORT: Duration = Duration::from_secs(5);
const LONG: Duration = Duration::from_secs(300);
const HTML: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
const JSON: &str = "application/json";

// --- helpers ---

/// A harness whose provider issues 5 s access tokens (near expiry at once), plus `config`.
async fn short_lived(config: &str) -> Harness {
    Harness::builder()
        .config(config)
        .idp_options(|o| o.access_ttl = SHORT)
        .start()
        .await
}

/// The record the gateway holds for this cookie (test-only peek at the store).
async fn stored(h: &Harness, cookie: &str) -> Option<Arc<Session>> {
    let key = h.gateway.cookies().decode(cookie).expect("cookie verifies");
    h.gateway.store().load(&key).await.unwrap()
}

/// The access token the gateway currently holds for this cookie.
async fn stored_token(h: &Harness, cookie: &str) -> String {
    let session = stored(h, cookie).await.expect("session exists");
    String::from_utf8(session.tokens.access_token().to_vec()).unwrap()
}

async fn get(client: &Client, url: String, accept: &str) -> reqwest::Response {
    client
        .get(url)
        .header(header::ACCEPT, accept)
        .send()
        .await
        .unwrap()
}

async fn get_with_cookie(h: &Harness, cookie: &str, path: &str) -> reqwest::Response {
    bare_client()
        .get(h.at(path))
        .header(header::ACCEPT, JSON)
        .header(header::COOKIE, format!("authgate_session={cookie}"))
        .send()
        .await
        .unwrap()
}

/// GET `path`; `Some(echo)` on 200, `None` otherwise.
async fn try_echo(h: &Harness, client: &Client, path: &str) -> Option<Echo> {
    let response = get(client, h.at(path), JSON).await;
    if response.status() != StatusCode::OK {
        return None;
    }
    Some(Echo(response.json().await.unwrap()))
}

async fn userinfo(h: &Harness, client: &Client) -> Value {
    let response = get(client, h.at("/oauth2/userinfo"), JSON).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// Value of the sample named exactly `series` (name plus labels), 0 when absent.
fn metric(text: &str, series: &str) -> f64 {
    support::metric(text, series).unwrap_or(0.0)
}

/// Unix seconds by the gateway's clock.
fn unix_now(h: &Harness) -> u64 {
    h.unix_millis() / 1000
}

/// Move the clock (the whole-second way the gateway counts) until the session's access token
/// expired.
async fn advance_past_token_expiry(h: &Harness, client: &Client) {
    let exp = userinfo(h, client).await["access_token_expires_at"]
        .as_u64()
        .expect("an expiry");
    h.advance_to(exp);
}

fn jwt_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn retry_after(response: &reqwest::Response) -> u64 {
    response
        .headers()
        .get(header::RETRY_AFTER)
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in whole seconds")
}

// --- refresh ahead of expiry ---

#[tokio::test]
async fn near_expiry_token_is_refreshed_before_forwarding() {
    let h = short_lived("").await;
    let client = h.client();
    let cookie = h.login(&client, "alice").await;
    let old = stored_token(&h, &cookie).await;
    h.idp.controls().set_access_ttl(LONG);

    let echo = h.echo(&client, "/a").await;
    let new = echo.bearer().unwrap();
    assert_ne!(new, old, "the upstream must see the refreshed token");
    assert_eq!(h.idp.controls().refresh_calls(), 1);
    assert_eq!(
        stored_token(&h, &cookie).await,
        new,
        "the new token is stored"
    );

    // The refreshed token is far from expiry: no further refresh, same bearer.
    let again = h.echo(&client, "/b").await;
    assert_eq!(again.bearer().unwrap(), new);
    assert_eq!(h.idp.controls().refresh_calls(), 1);
}

#[tokio::test]
async fn token_far_from_expiry_is_not_refreshed() {
    let h = Harness::start().await; // 300 s tokens, 10 s refresh window
    let client = h.client();
    let cookie = h.login(&client, "alice").await;
    let old = stored_token(&h, &cookie).await;
    for path in ["/a", "/b", "/c"] {
        assert_eq!(h.echo(&client, path).await.bearer().unwrap(), old);
    }
    assert_eq!(h.idp.controls().refresh_calls(), 0);
}

#[tokio::test]
async fn token_refreshed_once_it_enters_the_window() {
    // 12 s tokens, 10 s window: fine right after login, refreshed ~2 s later.
    let h = Harness::builder()
        .idp_options(|o| o.access_ttl = Duration::from_secs(12))
        .start()
        .await;
    let client = h.client();
    let cookie = h.login(&client, "alice").await;
    let old = stored_token(&h, &cookie).await;
    assert_eq!(h.echo(&client, "/early").await.bearer().unwrap(), old);
    assert_eq!(h.idp.controls().refresh_calls(), 0);

    let exp = userinfo(&h, &client).await["access_token_expires_at"]
        .as_u64()
        .unwrap();
    h.advance_to(exp - 11); // one second before the window: still no refresh
    assert_eq!(h.echo(&client, "/before").await.bearer().unwrap(), old);
    assert_eq!(h.idp.controls().refresh_calls(), 0);
    h.advance_to(exp - 10);
    let echo = h.echo(&client, "/late").await;
    assert_ne!(echo.bearer().unwrap(), old);
    assert_eq!(h.idp.controls().refresh_calls(), 1);
}

// --- single flight ---

async fn storm_of_one_session(rotation: bool) {
    let h = Harness::builder()
        .idp_options(|o| {
            o.access_ttl = SHORT;
            o.rotate_refresh_tokens = rotation;
        })
        .start()
        .await;
    let client = h.client();
    let cookie = h.login(&client, "alice").await;
    let old = stored_token(&h, &cookie).await;
    let controls = h.idp.controls();
    controls.set_access_ttl(LONG);
    controls.push_token_fault(TokenFault::Delay(Duration::from_millis(300)));

    let requests = (0..100).map(|i| {
        let client = client.clone();
        let url = h.at(&format!("/storm/{i}"));
        tokio::spawn(async move {
            let response = get(&client, url, JSON).await;
            let status = response.status();
            let body = response.text().await.unwrap();
            (status, body)
        })
    });
    let results = join_all(requests).await;

    let mut bearers = Vec::new();
    for result in results {
        let (status, body) = result.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        let echo = Echo(serde_json::from_str(&body).unwrap());
        bearers.push(echo.bearer().unwrap());
    }
    assert_eq!(bearers.len(), 100);
    assert_eq!(
        controls.refresh_calls(),
        1,
        "100 concurrent requests of one session share one refresh"
    );
    let new = &bearers[0];
    assert_ne!(new, &old);
    assert!(
        bearers.iter().all(|b| b == new),
        "every request carries the same new token"
    );

    // The session is alive (with rotation a second use of the old refresh token would have
    // revoked the grant) and holds the new token.
    assert_eq!(h.echo(&client, "/after").await.bearer().as_ref(), Some(new));
    assert_eq!(controls.refresh_calls(), 1);

    let text = h.metrics().await;
    assert!(
        metric(&text, "authgate_refresh_coalesced_total") > 0.0,
        "{text}"
    );
    assert!(metric(&text, "authgate_refresh_duration_seconds_count") >= 1.0);
    assert_eq!(metric(&text, "authgate_refresh_total{outcome=\"ok\"}"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_requests_one_refresh_with_rotation() {
    storm_of_one_session(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_requests_one_refresh_without_rotation() {
    storm_of_one_session(false).await;
}

/// `n` clients, each logged in as its own user with a near-expiry token.
async fn logged_in_clients(h: &Harness, n: usize) -> Vec<Client> {
    let mut clients = Vec::new();
    for i in 0..n {
        let client = h.client();
        h.login(&client, &format!("user{i}")).await;
        clients.push(client);
    }
    clients
}

/// One request per client, all at once; (status, body) of each.
async fn one_request_each(h: &Harness, clients: &[Client]) -> Vec<(StatusCode, String)> {
    let requests = clients.iter().enumerate().map(|(i, client)| {
        let client = client.clone();
        let url = h.at(&format!("/p/{i}"));
        tokio::spawn(async move {
            let response = get(&client, url, JSON).await;
            (response.status(), response.text().await.unwrap())
        })
    });
    join_all(requests)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_of_different_sessions_run_in_parallel() {
    let h = short_lived("").await;
    let clients = logged_in_clients(&h, 50).await;
    let controls = h.idp.controls();
    controls.set_access_ttl(LONG);
    // Signing an ID token costs the dev provider ~100 ms of CPU in a debug build on a busy
    // machine; this test measures waiting, not signing (identity updates are tested below).
    controls.set_issue_id_token_on_refresh(false);
    controls.set_token_fault(Some(TokenFault::Delay(Duration::from_millis(500))));

    let started = Instant::now();
    let results = one_request_each(&h, &clients).await;
    let elapsed = started.elapsed();

    let mut users = Vec::new();
    for (status, body) in results {
        assert_eq!(status, StatusCode::OK, "{body}");
        let echo = Echo(serde_json::from_str(&body).unwrap());
        users.push(echo.header("x-forwarded-user").unwrap());
    }
    users.sort();
    users.dedup();
    assert_eq!(users.len(), 50, "each request forwarded as its own user");
    assert_eq!(controls.refresh_calls(), 50);
    // One after another would take 50 x 500 ms = 25 s.
    assert!(
        elapsed < Duration::from_secs(10),
        "50 refreshes took {elapsed:?}: serialized?"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_of_different_sessions_are_in_flight_together() {
    // The same property without a clock: with a token endpoint that never answers, the
    // refresh calls of 10 sessions all reach it while none has finished.
    let h = short_lived("[oidc]\nrefresh_timeout = \"30s\"").await;
    let clients = logged_in_clients(&h, 10).await;
    let controls = h.idp.controls();
    controls.set_token_fault(Some(TokenFault::Hang));
    let requests = tokio::spawn({
        let url = h.url.clone();
        let clients = clients.clone();
        async move {
            let requests = clients
                .iter()
                .enumerate()
                .map(|(i, client)| get(client, format!("{url}/p/{i}"), JSON));
            join_all(requests).await.len()
        }
    });
    assert!(
        support::eventually(Duration::from_secs(15), || async {
            controls.refresh_calls() == 10
        })
        .await,
        "only {} of 10 refreshes reached the provider: serialized?",
        controls.refresh_calls()
    );
    assert!(!requests.is_finished());
    requests.abort();
}

#[tokio::test]
async fn hanging_refresh_never_blocks_other_sessions() {
    let h = Harness::builder()
        .config("[oidc]\nrefresh_timeout = \"5s\"")
        .start()
        .await;
    let controls = h.idp.controls();
    let bob = h.client();
    h.login(&bob, "bob").await; // 300 s token: never refreshed here
    controls.set_access_ttl(Duration::from_secs(8));
    let alice = h.client();
    h.login(&alice, "alice").await; // 8 s token: refreshed at once, and still valid
    controls.set_access_ttl(LONG);
    controls.push_token_fault(TokenFault::Hang);

    let alice_request = tokio::spawn({
        let url = h.at("/alice");
        let alice = alice.clone();
        async move { get(&alice, url, JSON).await.status() }
    });
    assert!(
        support::eventually(Duration::from_secs(5), || async {
            controls.refresh_calls() == 1
        })
        .await,
        "alice's refresh reached the provider"
    );

    let started = Instant::now();
    let echo = h.echo(&bob, "/bob").await;
    let elapsed = started.elapsed();
    assert_eq!(echo.header("x-forwarded-user").as_deref(), Some("bob"));
    assert!(elapsed < Duration::from_secs(2), "bob waited {elapsed:?}");
    assert!(
        !alice_request.is_finished(),
        "alice's refresh is still hanging"
    );
    assert_eq!(controls.refresh_calls(), 1);

    // Alice's refresh times out (transient) while her token is valid: forwarded.
    assert_eq!(alice_request.await.unwrap(), StatusCode::OK);
}

// --- rotation ---

#[tokio::test]
async fn rotation_used_refresh_token_is_never_sent_again() {
    // Every token is issued near expiry: each request refreshes.
    let h = short_lived("").await;
    let controls = h.idp.controls();
    let client = h.client();
    h.login(&client, "alice").await;
    let mut sent = Vec::new();
    let mut bearers = Vec::new();
    for i in 1..=5 {
        let echo = h.echo(&client, &format!("/cycle/{i}")).await;
        assert_eq!(controls.refresh_calls(), i, "one refresh per cycle");
        let form = controls.last_token_request_form();
        assert_eq!(form["grant_type"], ["refresh_token"]);
        sent.push(form["refresh_token"][0].clone());
        bearers.push(echo.bearer().unwrap());
    }
    let (mut s, mut b) = (sent.clone(), bearers.clone());
    s.sort();
    s.dedup();
    b.sort();
    b.dedup();
    assert_eq!(s.len(), 5, "a used refresh token was sent again: {sent:?}");
    assert_eq!(b.len(), 5, "every cycle forwards a new access token");
    // A reuse would have revoked the grant; the session still works.
    assert_eq!(userinfo(&h, &client).await["sub"], "alice");
}

/// A client gives up (timeout: HTTP/1 closes the connection, HTTP/2 resets the stream)
/// while its request waits on a refresh; the refresh still completes and is stored.
async fn abandoned_refresh(http2: bool) {
    let h = short_lived("").await; // rotation on
    let controls = h.idp.controls();
    let cookie = h.login(&h.client(), "alice").await;
    let old = stored_token(&h, &cookie).await;
    controls.set_access_ttl(LONG);
    controls.push_token_fault(TokenFault::Delay(Duration::from_secs(1)));

    let mut builder = Client::builder().timeout(Duration::from_secs(20));
    if http2 {
        builder = builder.http2_prior_knowledge();
    }
    let client = builder.build().unwrap();
    let request = |path: &str| {
        client
            .get(h.at(path))
            .header(header::ACCEPT, JSON)
            .header(header::COOKIE, format!("authgate_session={cookie}"))
    };
    let gave_up = request("/impatient")
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(gave_up.is_err(), "the client must have timed out");
    assert_eq!(controls.refresh_calls(), 1);

    // Stored without any further request driving it (the provider answers after 1 s).
    assert!(
        support::eventually(Duration::from_secs(5), || async {
            stored_token(&h, &cookie).await != old
        })
        .await,
        "the abandoned refresh was never stored"
    );
    let response = request("/next").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let expected = if http2 {
        reqwest::Version::HTTP_2
    } else {
        reqwest::Version::HTTP_11
    };
    assert_eq!(response.version(), expected);
    let new = Echo(response.json().await.unwrap()).bearer().unwrap();
    assert_ne!(new, old, "the abandoned refresh was stored");
    assert_eq!(
        controls.refresh_calls(),
        1,
        "no second refresh (with rotation it would have spent the old token twice)"
    );
    assert_eq!(stored_token(&h, &cookie).await, new);
}

#[tokio::test]
async fn refresh_completes_when_an_http1_client_disconnects() {
    abandoned_refresh(false).await;
}

#[tokio::test]
async fn refresh_completes_when_an_http2_client_resets_its_stream() {
    abandoned_refresh(true).await;
}

// --- definitive rejection ---

#[tokio::test]
async fn invalid_grant_ends_the_session() {
    let h = short_lived("").await;
    let controls = h.idp.controls();

    // A browser navigation: 302 to login, landing back on the same URL; cookie cleared.
    let browser = h.client();
    let cookie = h.login(&browser, "alice").await;
    controls.push_token_fault(TokenFault::InvalidGrant);
    let response = get(&browser, h.at("/some/page?a=1&b=two"), HTML).await;
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(
        location(&response),
        h.at("/oauth2/start?rd=%2Fsome%2Fpage%3Fa%3D1%26b%3Dtwo")
    );
    let cleared = set_cookie_line(&response, "authgate_session").expect("cookie cleared");
    assert!(cleared.starts_with("authgate_session=;"), "{cleared}");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!(controls.refresh_calls(), 1);

    // The session is gone: the old cookie is unauthenticated without another refresh.
    assert!(stored(&h, &cookie).await.is_none());
    let again = get_with_cookie(&h, &cookie, "/some/page").await;
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(controls.refresh_calls(), 1);

    // An API request (grant revoked at the provider): 401 JSON, cookie cleared.
    let api = h.client();
    let cookie_b = h.login(&api, "bob").await;
    controls.revoke_grants_of("bob");
    let response = get(&api, h.at("/api/things"), JSON).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().get(header::LOCATION).is_none());
    assert_eq!(
        set_cookie(&response, "authgate_session").as_deref(),
        Some("")
    );
    let body: Value = response.json().await.unwrap();
    assert!(body["login_url"].as_str().is_some(), "{body}");
    assert_eq!(controls.refresh_calls(), 2);
    assert!(stored(&h, &cookie_b).await.is_none());

    let text = h.metrics().await;
    assert_eq!(
        metric(&text, "authgate_refresh_total{outcome=\"rejected\"}"),
        2.0
    );
    assert_eq!(
        metric(&text, "authgate_sessions_ended_by_refresh_total"),
        2.0
    );
}

// --- transient failures ---

/// With `fault` on every refresh: forwarded with the current token while it is valid, 503
/// with `Retry-After` once it expired, the session kept; the fault cleared, the same cookie
/// works again with a new token.
async fn transient_failure(fault: TokenFault, config: &str) {
    let h = Harness::builder()
        .config(config)
        .idp_options(|o| o.access_ttl = Duration::from_secs(4))
        .start()
        .await;
    let controls = h.idp.controls();
    let client = h.client();
    let cookie = h.login(&client, "alice").await;
    let old = stored_token(&h, &cookie).await;
    controls.set_access_ttl(LONG);
    controls.set_token_fault(Some(fault));

    // Still valid: forwarded with the current token.
    let echo = h.echo(&client, "/while-valid").await;
    assert_eq!(echo.bearer().unwrap(), old);
    assert_eq!(controls.refresh_calls(), 1);
    assert!(stored(&h, &cookie).await.is_some(), "session kept");

    // Expired: 503 with Retry-After, cookie untouched, session kept.
    advance_past_token_expiry(&h, &client).await;
    let response = get(&client, h.at("/after-expiry"), JSON).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(retry_after(&response) >= 1);
    assert!(set_cookie(&response, "authgate_session").is_none());
    assert!(stored(&h, &cookie).await.is_some(), "session kept");
    // A browser is not sent to login either.
    let browser = get(&client, h.at("/after-expiry"), HTML).await;
    assert_eq!(browser.status(), StatusCode::SERVICE_UNAVAILABLE);

    let text = h.metrics().await;
    assert!(metric(&text, "authgate_refresh_total{outcome=\"transient\"}") >= 1.0);
    assert_eq!(
        metric(&text, "authgate_refresh_total{outcome=\"rejected\"}"),
        0.0
    );

    // The provider recovers: once the backoff passed, the same cookie works, no new login.
    controls.set_token_fault(None);
    let code_calls = controls.code_calls();
    let mut recovered = try_echo(&h, &client, "/recovered").await;
    for _ in 0..20 {
        if recovered.is_some() {
            break;
        }
        h.advance(Duration::from_millis(500)); // 10 s at most, in steps
        recovered = try_echo(&h, &client, "/recovered").await;
    }
    let echo = recovered.expect("the session recovered after the backoff");
    assert_ne!(echo.bearer().unwrap(), old);
    assert_eq!(controls.code_calls(), code_calls, "no new login");
}

#[tokio::test]
async fn transient_500_keeps_the_session() {
    transient_failure(TokenFault::Status(500, "oops".into()), "").await;
}

#[tokio::test]
async fn transient_html_502_keeps_the_session() {
    let body = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>";
    transient_failure(TokenFault::Status(502, body.into()), "").await;
}

#[tokio::test]
async fn transient_429_keeps_the_session() {
    transient_failure(TokenFault::Status(429, "Too Many Requests".into()), "").await;
}

#[tokio::test]
async fn transient_503_oauth_error_keeps_the_session() {
    let body = r#"{"error":"temporarily_unavailable"}"#;
    transient_failure(TokenFault::Status(503, body.into()), "").await;
}

#[tokio::test]
async fn transient_non_json_200_keeps_the_session() {
    transient_failure(TokenFault::Status(200, "surely not json".into()), "").await;
}

#[tokio::test]
async fn transient_hanging_token_endpoint_keeps_the_session() {
    transient_failure(TokenFault::Hang, "[oidc]\nrefresh_timeout = \"1s\"").await;
}

#[tokio::test]
async fn transient_failure_backs_off_one_second_then_doubles() {
    let h = Harness::builder()
        .idp_options(|o| o.access_ttl = Duration::from_secs(9))
        .start()
        .await;
    let controls = h.idp.controls();
    let client = h.client();
    h.login(&client, "alice").await;
    controls.set_access_ttl(LONG);
    controls.set_token_fault(Some(TokenFault::Status(500, "oops".into())));

    // The backoff is counted in whole seconds: start just past one, so that the first
    // failure's second has (almost) all of it left. Real time keeps flowing on top of the
    // moves below; each check allows 180 ms of it.
    h.align_to_second(); // s + 0.02
    // First failure: an immediate second request does not call the provider again.
    h.echo(&client, "/1").await;
    assert_eq!(controls.refresh_calls(), 1);
    h.echo(&client, "/2").await;
    assert_eq!(controls.refresh_calls(), 1, "inside the 1 s backoff");
    h.advance(Duration::from_millis(800)); // s + 0.82
    h.echo(&client, "/3").await;
    assert_eq!(
        controls.refresh_calls(),
        1,
        "inside the 1 s backoff, 0.8 s on"
    );
    // After the backoff a request does.
    h.advance(Duration::from_millis(400)); // s + 1.22
    h.echo(&client, "/4").await;
    assert_eq!(controls.refresh_calls(), 2, "retried after the 1 s backoff");

    // Second failure (at s + 1): the backoff doubles to 2 s.
    h.echo(&client, "/5").await;
    assert_eq!(controls.refresh_calls(), 2, "inside the 2 s backoff");
    h.advance(Duration::from_millis(1500)); // s + 2.72
    h.echo(&client, "/6").await;
    assert_eq!(
        controls.refresh_calls(),
        2,
        "inside the 2 s backoff, 1.5 s on"
    );
    h.advance(Duration::from_millis(700)); // s + 3.42
    h.echo(&client, "/7").await;
    assert_eq!(controls.refresh_calls(), 3, "retried after the 2 s backoff");
}

// --- what a refresh response may leave out ---

#[tokio::test]
async fn refresh_without_refresh_token_keeps_the_old_one() {
    let h = short_lived("").await; // rotation on
    let controls = h.idp.controls();
    controls.set_refresh_returns_refresh_token(false);
    let client = h.client();
    h.login(&client, "alice").await;

    let first = h.echo(&client, "/1").await.bearer().unwrap();
    assert_eq!(controls.refresh_calls(), 1);
    let used = controls.last_token_request_form()["refresh_token"][0].clone();

    let second = h.echo(&client, "/2").await.bearer().unwrap();
    assert_eq!(
        controls.refresh_calls(),
        2,
        "the next refresh still happens"
    );
    assert_eq!(
        controls.last_token_request_form()["refresh_token"],
        [used],
        "the old refresh token is sent again"
    );
    assert_ne!(first, second);
}

#[tokio::test]
async fn jwt_exp_is_the_expiry_without_expires_in() {
    let h = Harness::start().await;
    let controls = h.idp.controls();
    controls.set_access_token_format(AccessTokenFormat::Jwt);
    controls.set_omit_expires_in(true);

    // A long-lived JWT: its exp is the session's expiry, no refresh.
    let client = h.client();
    h.login(&client, "alice").await;
    let bearer = h.echo(&client, "/a").await.bearer().unwrap();
    let exp = jwt_claims(&bearer)["exp"].as_u64().unwrap();
    assert_eq!(userinfo(&h, &client).await["access_token_expires_at"], exp);
    assert_eq!(controls.refresh_calls(), 0);

    // A JWT with exp 5 s away: refreshed before it, and the new exp is taken over.
    controls.set_access_ttl(SHORT);
    let other = h.client();
    let cookie = h.login(&other, "bob").await;
    let old = stored_token(&h, &cookie).await;
    controls.set_access_ttl(LONG);
    let bearer = h.echo(&other, "/b").await.bearer().unwrap();
    assert_ne!(bearer, old);
    assert_eq!(controls.refresh_calls(), 1);
    let exp = jwt_claims(&bearer)["exp"].as_u64().unwrap();
    assert_eq!(userinfo(&h, &other).await["access_token_expires_at"], exp);
}

#[tokio::test]
async fn opaque_token_without_expiry_is_never_refreshed() {
    let h = short_lived("").await;
    let controls = h.idp.controls();
    controls.set_omit_expires_in(true); // opaque tokens: no expires_in, no exp
    let client = h.client();
    let cookie = h.login(&client, "alice").await;
    let old = stored_token(&h, &cookie).await;
    assert_eq!(
        userinfo(&h, &client).await["access_token_expires_at"],
        Value::Null
    );
    for path in ["/a", "/b"] {
        assert_eq!(h.echo(&client, path).await.bearer().unwrap(), old);
    }
    assert_eq!(controls.refresh_calls(), 0);
}

#[tokio::test]
async fn max_token_age_bounds_a_token_without_expiry() {
    let h = Harness::builder()
        .config("[session]\nmax_token_age = \"12s\"")
        .start()
        .await;
    let controls = h.idp.controls();
    controls.set_omit_expires_in(true);
    let client = h.client();
    let before_login = unix_now(&h);
    let cookie = h.login(&client, "alice").await;
    let old = stored_token(&h, &cookie).await;
    let exp = userinfo(&h, &client).await["access_token_expires_at"]
        .as_u64()
        .expect("max_token_age gives an expiry");
    assert!(
        (before_login + 12..=unix_now(&h) + 12).contains(&exp),
        "{exp}"
    );
    assert_eq!(h.echo(&client, "/early").await.bearer().unwrap(), old);
    assert_eq!(controls.refresh_calls(), 0);

    h.advance_to(exp - 10); // enters the 10 s window 2 s after login
    let new = h.echo(&client, "/late").await.bearer().unwrap();
    assert_ne!(new, old);
    assert_eq!(controls.refresh_calls(), 1);
}

// --- identity from the refreshed ID token ---

#[tokio::test]
async fn refreshed_id_token_updates_identity_headers() {
    let h = short_lived("").await; // every request refreshes
    let controls = h.idp.controls();
    let client = h.client();
    h.login(&client, "alice").await;
    controls.set_user_claims(
        "alice",
        json!({ "email": "alice@new.test", "groups": ["admins", "ops"] }),
    );
    let echo = h.echo(&client, "/a").await;
    assert_eq!(controls.refresh_calls(), 1);
    assert_eq!(
        echo.header("x-forwarded-email").as_deref(),
        Some("alice@new.test")
    );
    assert_eq!(
        echo.header("x-forwarded-groups").as_deref(),
        Some("admins,ops")
    );
    assert_eq!(userinfo(&h, &client).await["email"], "alice@new.test");

    // Without an ID token in the refresh response the identity stays.
    controls.set_issue_id_token_on_refresh(false);
    controls.set_user_claims(
        "alice",
        json!({ "email": "alice@newer.test", "groups": ["nobody"] }),
    );
    let echo = h.echo(&client, "/b").await;
    assert_eq!(controls.refresh_calls(), 2);
    assert_eq!(
        echo.header("x-forwarded-email").as_deref(),
        Some("alice@new.test")
    );
    assert_eq!(
        echo.header("x-forwarded-groups").as_deref(),
        Some("admins,ops")
    );
}

// --- no refresh token ---

#[tokio::test]
async fn session_without_refresh_token_ends_when_the_token_expires() {
    let h = Harness::builder()
        .config("[oidc]\nscopes = [\"openid\", \"profile\", \"email\"]")
        .idp_options(|o| o.access_ttl = Duration::from_secs(3))
        .start()
        .await;
    let controls = h.idp.controls();
    let browser = h.client();
    let cookie = h.login(&browser, "alice").await;
    assert!(
        stored(&h, &cookie)
            .await
            .unwrap()
            .tokens
            .refresh_token
            .is_none(),
        "no offline_access: no refresh token"
    );
    let api = h.client();
    let cookie_b = h.login(&api, "bob").await;

    // Near expiry but valid: forwarded, nothing to refresh with.
    let old = stored_token(&h, &cookie).await;
    assert_eq!(h.echo(&browser, "/valid").await.bearer().unwrap(), old);
    assert_eq!(controls.refresh_calls(), 0);

    // Expired: ended like a rejected refresh.
    advance_past_token_expiry(&h, &browser).await;
    advance_past_token_expiry(&h, &api).await;
    let response = get(&browser, h.at("/page?x=1"), HTML).await;
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(
        location(&response),
        h.at("/oauth2/start?rd=%2Fpage%3Fx%3D1")
    );
    let cleared = set_cookie_line(&response, "authgate_session").expect("cookie cleared");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");

    let response = get(&api, h.at("/api"), JSON).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        set_cookie(&response, "authgate_session").as_deref(),
        Some("")
    );
    let again = get_with_cookie(&h, &cookie_b, "/api").await;
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(controls.refresh_calls(), 0);
}

// --- resource indicators ---

#[tokio::test]
async fn resource_is_sent_on_every_refresh() {
    let h = short_lived("[oidc]\nresource = [\"https://api.example.test\"]").await;
    let controls = h.idp.controls();
    controls.set_access_token_format(AccessTokenFormat::Jwt);
    let client = h.client();
    h.login(&client, "alice").await;
    assert_eq!(controls.token_requests_with_resource(), 1, "code exchange");
    for i in 1..=2 {
        let bearer = h.echo(&client, &format!("/r/{i}")).await.bearer().unwrap();
        assert_eq!(controls.refresh_calls(), i);
        let form = controls.last_token_request_form();
        assert_eq!(form["grant_type"], ["refresh_token"]);
        assert_eq!(form["resource"], ["https://api.example.test"]);
        assert_eq!(controls.token_requests_with_resource(), 1 + i);
        assert_eq!(jwt_claims(&bearer)["aud"], "https://api.example.test");
    }
}

// --- forward auth ---

#[tokio::test]
async fn forward_auth_refreshes_too() {
    let h = short_lived("[server]\ntrusted_proxies = [\"127.0.0.1/32\"]").await;
    let controls = h.idp.controls();
    let client = h.client();
    let cookie = h.login(&client, "alice").await;
    let old = stored_token(&h, &cookie).await;
    controls.set_access_ttl(LONG);

    let response = client
        .get(h.at("/oauth2/auth"))
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-uri", "/x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let authorization = response.headers()[header::AUTHORIZATION].to_str().unwrap();
    let new = authorization.strip_prefix("Bearer ").unwrap();
    assert_ne!(new, old);
    assert_eq!(controls.refresh_calls(), 1);
    assert_eq!(stored_token(&h, &cookie).await, new);
    assert_eq!(response.headers()["x-forwarded-user"], "alice");
}
