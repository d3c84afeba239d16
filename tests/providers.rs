//! Several providers: `[oidc]` (provider A, the harness's own development provider) and
//! `[providers.partners]` (provider B, a second instance). Each logs in on its own routes, a
//! session counts only on routes of its provider, a login finishes only at the callback of the
//! provider it started at (the mix-up defence: a code or an ID token of one provider is never
//! sent to, or accepted as, the other's), refresh and back-channel logout go by the session's
//! provider, and Redis records carry it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod support;

use std::sync::Arc;
use std::time::Duration;

use authgate::config::Config;
use devidp::idp::{DevIdp, IdTokenSigner, ResponseIss};
use figment::Figment;
use figment::providers::{Format, Toml};
use reqwest::{Client, StatusCode, header};
use serde_json::{Value, json};
use support::redis::RedisServer;
use support::{
    CLIENT_ID, CLIENT_SECRET, Harness, location, post_logout_token, set_cookie, start_idp,
    userinfo_status,
};

const SESSION: &str = "authgate_session";

fn partners_config(partners: &DevIdp) -> String {
    format!(
        r#"
        [providers.partners]
        issuer = "{}"
        client_id = "{CLIENT_ID}"
        client_secret = "{CLIENT_SECRET}"
        timeout = "5s"
        [[route]]
        path = "/partners"
        provider = "partners"
        "#,
        partners.issuer()
    )
}

/// A gateway with `[oidc]` = its own provider and `[providers.partners]` = the returned one.
async fn start() -> (Harness, Arc<DevIdp>) {
    let partners = partners_idp().await;
    let h = Harness::builder()
        .config(&partners_config(&partners))
        .start()
        .await;
    (h, partners)
}

/// The partners provider, with signing keys of its own (two default instances share theirs).
async fn partners_idp() -> Arc<DevIdp> {
    let partners = start_idp().await;
    partners.controls().use_second_key_only();
    partners
}

fn browser_get(client: &Client, url: String) -> reqwest::RequestBuilder {
    client.get(url).header(header::ACCEPT, "text/html")
}

/// From a gateway URL that answers 302 to login (or `/oauth2/start` itself) through the
/// provider (auto-login `user`): the callback URL the provider sends the browser to.
async fn callback_from(client: &Client, idp: &DevIdp, start_url: String, user: &str) -> String {
    idp.controls().set_auto_login(Some(user.to_owned()));
    let mut r = browser_get(client, start_url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    if location(&r).contains("/oauth2/start") {
        r = client.get(location(&r)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FOUND, "start");
    }
    let authorize = location(&r);
    assert!(authorize.starts_with(&idp.issuer()), "{authorize}");
    let back = client.get(&authorize).send().await.unwrap();
    assert_eq!(back.status(), StatusCode::FOUND, "authorize");
    location(&back)
}

/// Log `user` in at the partners provider from `/oauth2/start?provider=partners`.
async fn login_partner(h: &Harness, partners: &DevIdp, client: &Client, user: &str) -> String {
    let start = h.at("/oauth2/start?provider=partners&rd=%2Fpartners%2Fhome");
    let callback = callback_from(client, partners, start, user).await;
    assert!(
        callback.starts_with(&h.at("/oauth2/callback/partners?")),
        "{callback}"
    );
    let done = client.get(&callback).send().await.unwrap();
    assert_eq!(done.status(), StatusCode::FOUND, "{:?}", done.text().await);
    assert_eq!(location(&done), "/partners/home");
    set_cookie(&done, SESSION).expect("a session")
}

async fn api_status(client: &Client, url: String) -> StatusCode {
    let r = client.get(url).header(header::ACCEPT, "application/json");
    r.send().await.unwrap().status()
}

#[tokio::test]
async fn each_provider_logs_in_on_its_routes_and_a_session_counts_only_on_its_own() {
    let (h, partners) = start().await;
    // A browser on a partners route goes to login at the partners provider.
    let client = h.client();
    let r = browser_get(&client, h.at("/partners/x?a=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(
        location(&r),
        h.at("/oauth2/start?rd=%2Fpartners%2Fx%3Fa%3D1&provider=partners")
    );
    let callback = callback_from(&client, &partners, h.at("/partners/x?a=1"), "pat").await;
    assert!(callback.starts_with(&h.at("/oauth2/callback/partners?")));
    let done = client.get(&callback).send().await.unwrap();
    assert_eq!(done.status(), StatusCode::FOUND);
    assert_eq!(location(&done), "/partners/x?a=1");
    let echo = h.echo(&client, "/partners/x").await;
    assert_eq!(echo.header("x-forwarded-user").as_deref(), Some("pat"));
    assert_eq!(partners.controls().code_calls(), 1);
    assert_eq!(h.idp.controls().code_calls(), 0);
    // The partner's session is no session on a route of `[oidc]`: an API call gets 401, a
    // browser goes to login at `[oidc]`, and the cookie is not cleared.
    assert_eq!(
        api_status(&client, h.at("/app")).await,
        StatusCode::UNAUTHORIZED
    );
    let r = browser_get(&client, h.at("/app")).send().await.unwrap();
    assert_eq!(location(&r), h.at("/oauth2/start?rd=%2Fapp"));
    assert!(set_cookie(&r, SESSION).is_none(), "the cookie stays");
    let r = client.get(location(&r)).send().await.unwrap();
    assert!(location(&r).starts_with(&h.idp.issuer()), "login at [oidc]");
    h.echo(&client, "/partners/y").await;

    // And the other way round: an `[oidc]` session is none on a partners route.
    let employee = h.client();
    h.login(&employee, "erin").await;
    let echo = h.echo(&employee, "/app").await;
    assert_eq!(echo.header("x-forwarded-user").as_deref(), Some("erin"));
    assert_eq!(
        api_status(&employee, h.at("/partners/x")).await,
        StatusCode::UNAUTHORIZED
    );
    let r = browser_get(&employee, h.at("/partners/x"))
        .send()
        .await
        .unwrap();
    let r = employee.get(location(&r)).send().await.unwrap();
    assert!(location(&r).starts_with(&partners.issuer()), "login at B");
    partners.shutdown();
}

#[tokio::test]
async fn start_names_a_configured_provider_and_callbacks_exist_per_provider() {
    let (h, partners) = start().await;
    let client = h.client();
    let r = client
        .get(h.at("/oauth2/start?provider=nobody"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = client
        .get(h.at("/oauth2/start?provider=default"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = client
        .get(h.at("/oauth2/callback/nobody?code=c&state=s"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // The login URL sends `redirect_uri` = the partners callback.
    let r = client
        .get(h.at("/oauth2/start?provider=partners"))
        .send()
        .await
        .unwrap();
    let authorize = url::Url::parse(&location(&r)).unwrap();
    let redirect = authorize
        .query_pairs()
        .find(|(k, _)| k == "redirect_uri")
        .unwrap()
        .1
        .into_owned();
    assert_eq!(redirect, h.at("/oauth2/callback/partners"));
    assert!(location(&r).starts_with(&partners.issuer()));
    partners.shutdown();
}

/// The mix-up attack without RFC 9207's help (provider A sends no `iss`): a code of A's
/// delivered to B's callback is refused before it is redeemed anywhere.
#[tokio::test]
async fn a_code_of_a_at_bs_callback_is_refused_before_any_redemption() {
    // B does not advertise RFC 9207 (in the discovery the gateway reads at start), and A's
    // response carries no `iss`: the binding of the state to A is the only defence left.
    let partners = partners_idp().await;
    partners.controls().set_advertise_response_iss(false);
    let h = Harness::builder()
        .config(&partners_config(&partners))
        .start()
        .await;
    h.idp.controls().set_response_iss(ResponseIss::Omit);
    let client = h.client();
    let callback = callback_from(&client, &h.idp, h.at("/oauth2/start"), "alice").await;
    let query = callback.split_once('?').unwrap().1.to_owned();
    assert!(
        callback.starts_with(&h.at("/oauth2/callback?")),
        "{callback}"
    );
    let r = client
        .get(h.at(&format!("/oauth2/callback/partners?{query}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(set_cookie(&r, SESSION).is_none());
    assert_eq!(partners.controls().code_calls(), 0, "never sent to B");
    assert_eq!(h.idp.controls().code_calls(), 0, "nor redeemed at A");
    assert_eq!(userinfo_status(&h, &client).await, StatusCode::UNAUTHORIZED);
    partners.shutdown();
}

/// A state issued for a login at A, with a code of B (sent to B's callback): refused, and
/// B's code is not redeemed.
#[tokio::test]
async fn a_state_of_a_at_bs_callback_is_refused() {
    let (h, partners) = start().await;
    let victim = h.client();
    let a_callback = callback_from(&victim, &h.idp, h.at("/oauth2/start"), "alice").await;
    let a_state = support::query_of(&a_callback)["state"][0].clone();
    let other = h.client();
    let start = h.at("/oauth2/start?provider=partners");
    let b_callback = callback_from(&other, &partners, start, "mallory").await;
    let b = support::query_of(&b_callback);
    let forged: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("code", &b["code"][0])
        .append_pair("state", &a_state)
        .append_pair("iss", &b["iss"][0])
        .finish();
    let r = victim
        .get(h.at(&format!("/oauth2/callback/partners?{forged}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(partners.controls().code_calls(), 0);
    assert_eq!(h.idp.controls().code_calls(), 0);
    assert_eq!(userinfo_status(&h, &victim).await, StatusCode::UNAUTHORIZED);
    partners.shutdown();
}

/// B's token endpoint answers with an ID token of A (A's issuer, A's key, the right nonce and
/// client): B's login refuses it.
#[tokio::test]
async fn an_id_token_of_a_on_bs_flow_is_refused() {
    let (h, partners) = start().await;
    let a = h.idp.clone();
    let signer: IdTokenSigner = Arc::new(move |mut claims: Value| {
        claims["iss"] = json!(a.issuer());
        a.sign_jwt(&claims)
    });
    partners.controls().set_id_token_signer(Some(signer));
    let client = h.client();
    let start = h.at("/oauth2/start?provider=partners");
    let callback = callback_from(&client, &partners, start, "alice").await;
    let r = client.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(set_cookie(&r, SESSION).is_none());
    assert_eq!(userinfo_status(&h, &client).await, StatusCode::UNAUTHORIZED);
    // The same token signed by B's key (B's issuer kept): accepted, so the refusal above is
    // the issuer and key of A, not a broken flow.
    let b = partners.clone();
    let signer: IdTokenSigner = Arc::new(move |claims: Value| b.sign_jwt(&claims));
    partners.controls().set_id_token_signer(Some(signer));
    login_partner(&h, &partners, &client, "alice").await;
    partners.shutdown();
}

fn logout_by_sub(idp: &DevIdp, signer: &DevIdp, sub: &str, jti: &str) -> String {
    let now = authgate::session::unix_now();
    signer.sign_jwt(&json!({
        "iss": idp.issuer(),
        "aud": CLIENT_ID,
        "iat": now,
        "exp": now + 120,
        "jti": jti,
        "events": { "http://schemas.openid.net/event/backchannel-logout": {} },
        "sub": sub,
    }))
}

#[tokio::test]
async fn backchannel_logout_ends_only_the_sessions_of_the_provider_that_signed_it() {
    let (h, partners) = start().await;
    let employee = h.client();
    h.login(&employee, "alice").await;
    let partner = h.client();
    login_partner(&h, &partners, &partner, "alice").await;
    // The same `sub` at both providers: two different users.
    // A token naming A's issuer but signed by B's key: refused, nothing ends.
    let forged = logout_by_sub(&h.idp, &partners, "alice", "j1");
    assert_eq!(
        post_logout_token(&h, &forged).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(userinfo_status(&h, &employee).await, StatusCode::OK);
    assert_eq!(userinfo_status(&h, &partner).await, StatusCode::OK);
    // B's own token for `alice`: only B's alice.
    let token = logout_by_sub(&partners, &partners, "alice", "j2");
    assert_eq!(post_logout_token(&h, &token).await, StatusCode::OK);
    assert_eq!(
        userinfo_status(&h, &partner).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(userinfo_status(&h, &employee).await, StatusCode::OK);
    // And A's: A's alice.
    let token = logout_by_sub(&h.idp, &h.idp, "alice", "j3");
    assert_eq!(post_logout_token(&h, &token).await, StatusCode::OK);
    assert_eq!(
        userinfo_status(&h, &employee).await,
        StatusCode::UNAUTHORIZED
    );
    partners.shutdown();
}

#[tokio::test]
async fn a_partner_session_refreshes_and_signs_out_at_the_partners_provider_only() {
    let (h, partners) = start().await;
    let client = h.client();
    login_partner(&h, &partners, &client, "pat").await;
    let by = Duration::from_secs(400);
    h.advance(by);
    partners.controls().advance_clock(by);
    let echo = h.echo(&client, "/partners/x").await;
    assert_eq!(echo.header("x-forwarded-user").as_deref(), Some("pat"));
    assert_eq!(partners.controls().refresh_calls(), 1);
    assert_eq!(h.idp.controls().refresh_calls(), 0);
    let r = client.get(h.at("/oauth2/sign_out")).send().await.unwrap();
    assert!(
        location(&r).starts_with(&partners.issuer()),
        "end-session at B"
    );
    assert_eq!(partners.controls().revocations(), 1);
    assert_eq!(h.idp.controls().revocations(), 0);
    assert_eq!(h.idp.controls().end_session_calls(), 0);
    partners.shutdown();
}

/// Two replicas sharing a real Redis: a partner session written by one reads back on the
/// other as the partners provider's (a route of `[oidc]` does not take it).
#[tokio::test]
async fn redis_records_carry_the_provider() {
    let redis = RedisServer::start();
    let partners = partners_idp().await;
    let store = format!(
        r#"
        [session]
        store = "redis"
        redis_url = "{}"
        redis_key_prefix = "ag:"
        "#,
        redis.url()
    );
    let idp = start_idp().await;
    let replica = |idp: Arc<DevIdp>| {
        Harness::builder()
            .idp(idp)
            .config(&partners_config(&partners))
            .config(&store)
            .start()
    };
    let one = replica(idp.clone()).await;
    let two = replica(idp.clone()).await;
    let cookie = login_partner(&one, &partners, &one.client(), "pat").await;
    let get = |h: &Harness, path: &str| {
        support::bare_client()
            .get(h.at(path))
            .header(header::ACCEPT, "application/json")
            .header(header::COOKIE, format!("{SESSION}={cookie}"))
            .send()
    };
    assert_eq!(
        get(&two, "/partners/x").await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        get(&two, "/app").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    partners.shutdown();
    idp.shutdown();
}

/// `/readyz` waits for every provider; the failures of each are counted under its name.
#[tokio::test]
async fn readiness_waits_for_every_provider() {
    let partners = partners_idp().await;
    partners.controls().set_discovery_unavailable(true);
    let h = Harness::builder()
        .config(&partners_config(&partners))
        .no_wait_ready()
        .start()
        .await;
    let failed = support::eventually(Duration::from_secs(10), || async {
        let text = h.metrics().await;
        support::metric(
            &text,
            "authgate_provider_failures_total{kind=\"discovery\",provider=\"partners\"}",
        )
        .is_some_and(|n| n >= 1.0)
    })
    .await;
    assert!(failed, "the partners provider's failures are counted");
    let readyz = support::bare_client()
        .get(h.at("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(readyz.status(), StatusCode::SERVICE_UNAVAILABLE);
    let text = h.metrics().await;
    assert_eq!(
        support::metric(
            &text,
            "authgate_provider_failures_total{kind=\"discovery\",provider=\"default\"}"
        ),
        Some(0.0)
    );
    partners.controls().set_discovery_unavailable(false);
    let ready = support::eventually(Duration::from_secs(10), || async {
        let r = support::bare_client()
            .get(h.at("/readyz"))
            .send()
            .await
            .unwrap();
        r.status() == StatusCode::OK
    })
    .await;
    assert!(ready, "ready once the partners provider is discovered");
    partners.shutdown();
}

fn config_error(extra: &str) -> String {
    let base = r#"
        [server]
        public_url = "https://gw.example"
        [upstream]
        url = "http://127.0.0.1:9"
        [oidc]
        issuer = "https://a.example"
        client_id = "gw"
        [session]
        cookie_secrets = ["AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="]
    "#;
    let figment = Figment::from(Toml::string(base)).merge(Toml::string(extra));
    match Config::from_figment(figment) {
        Ok(_) => panic!("accepted:\n{extra}"),
        Err(e) => e.to_string(),
    }
}

/// `authgate check` prints every provider, its secret redacted, and each route's provider.
#[test]
fn check_prints_providers_with_secrets_redacted() {
    let toml = r#"
        [server]
        public_url = "https://gw.example"
        [upstream]
        url = "http://127.0.0.1:9"
        [oidc]
        issuer = "https://a.example"
        client_id = "gw"
        [providers.partners]
        issuer = "https://b.example"
        client_id = "gw"
        client_secret = "partner-secret-value"
        [session]
        cookie_secrets = ["AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="]
        [[route]]
        path = "/p"
        provider = "partners"
    "#;
    let config = Config::from_figment(Figment::from(Toml::string(toml))).unwrap();
    let printed = config.redacted_toml();
    assert!(!printed.contains("partner-secret-value"), "{printed}");
    assert!(printed.contains("[providers.partners]"), "{printed}");
    assert!(printed.contains("provider = \"partners\""), "{printed}");
    assert_eq!(
        config.routes[0].provider_id,
        authgate::config::ProviderId(1)
    );
}

#[test]
fn configuration_errors_name_the_provider() {
    let e = config_error(
        r#"
        [[route]]
        path = "/p"
        provider = "partnerz"
        "#,
    );
    assert!(
        e.contains("route[0].provider") && e.contains("\"partnerz\""),
        "{e}"
    );
    let e = config_error(
        r#"
        [providers.Partners]
        issuer = "https://b.example"
        client_id = "gw"
        "#,
    );
    assert!(
        e.contains("providers.Partners") && e.contains("provider name"),
        "{e}"
    );
    let e = config_error(
        r#"
        [providers.default]
        issuer = "https://b.example"
        client_id = "gw"
        "#,
    );
    assert!(e.contains("providers.default"), "{e}");
    let e = config_error(
        r#"
        [providers.again]
        issuer = "https://a.example/"
        client_id = "gw"
        "#,
    );
    assert!(e.contains("providers.again") && e.contains("[oidc]"), "{e}");
    let e = config_error(
        r#"
        [providers.partners]
        client_id = "gw"
        "#,
    );
    assert!(e.contains("providers.partners.issuer"), "{e}");
    let e = config_error(
        r#"
        [providers.partners]
        issuer = "https://b.example"
        client_id = "gw"
        [[route]]
        path = "/p"
        provider = "partners"
        bearer = "passthrough"
        "#,
    );
    assert!(e.contains("providers.partners.bearer_audiences"), "{e}");
}
