//! The rest of the front door, through real sockets: email rules (`require_email_domains`,
//! `require_emails`), a `public_url` with a base path (a whole login under `/app`),
//! `allowed_redirect_hosts` after login, and the Envoy / Istio `ext_authz` dialect at
//! `/oauth2/ext_authz/<original path>`, with requests shaped as Envoy sends them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use reqwest::{Client, Method, StatusCode, header};
use serde_json::{Value, json};
use support::{Harness, bind, location, raw};

// === email rules ===

const EMAIL_ROUTES: &str = r#"
[[route]]
path = "/mail/"
api = true
require_email_domains = ["Example.test"]

[[route]]
path = "/vip/"
api = true
require_emails = ["Alice@Example.TEST", "boss@corp.test"]
"#;

/// Status of GET `path` for a user logged in with these claims over the defaults.
async fn status_for(h: &Harness, user: &str, claims: Value, path: &str) -> StatusCode {
    h.idp.controls().set_user_claims(user, claims);
    let client = h.client();
    h.login(&client, user).await;
    client
        .get(h.at(path))
        .header(header::ACCEPT, "application/json")
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn email_rules_parse_the_claim_strictly() {
    let h = Harness::builder().config(EMAIL_ROUTES).start().await;
    const OK: StatusCode = StatusCode::OK;
    const NO: StatusCode = StatusCode::FORBIDDEN;
    for (i, (claims, mail, vip)) in [
        // The provider's default: <user>@example.test (here user0, not a listed address).
        (json!({}), OK, NO),
        (json!({"email": "alice@example.test"}), OK, OK),
        (json!({"email": "ALICE@EXAMPLE.TEST"}), OK, OK),
        (
            json!({"email": "alice@example.test", "email_verified": true}),
            OK,
            OK,
        ),
        (json!({"email": "carol@example.test"}), OK, NO),
        (json!({"email": "boss@corp.test"}), NO, OK),
        // email_verified false refuses (a non-boolean one fails the ID token's own checks
        // at login: the string forms are judged in the policy's unit tests).
        (
            json!({"email": "alice@example.test", "email_verified": false}),
            NO,
            NO,
        ),
        // Several `@` (oauth2-proxy CVE-2026-40574), quoted local parts holding one.
        (json!({"email": "attacker@evil.com@example.test"}), NO, NO),
        (json!({"email": "\"alice@example.test\"@evil.com"}), NO, NO),
        (json!({"email": "\"a@b\"@example.test"}), NO, NO),
        // Look-alike Unicode (Cyrillic а), full-width letters, other domains.
        (json!({"email": "alice@ex\u{0430}mple.test"}), NO, NO),
        (json!({"email": "alice@ｅxample.test"}), NO, NO),
        (json!({"email": "alice@sub.example.test"}), NO, NO),
        (json!({"email": "alice@badexample.test"}), NO, NO),
        (json!({"email": "alice@example.test.evil.com"}), NO, NO),
        // Not an address.
        (json!({"email": "example.test"}), NO, NO),
        (json!({"email": "@example.test"}), NO, NO),
        (json!({"email": "alice @example.test"}), NO, NO),
        (json!({"email": ""}), NO, NO),
    ]
    .into_iter()
    .enumerate()
    {
        let user = format!("user{i}");
        let got_mail = status_for(&h, &user, claims.clone(), "/mail/x").await;
        let got_vip = status_for(&h, &user, claims.clone(), "/vip/x").await;
        assert_eq!((got_mail, got_vip), (mail, vip), "{claims}");
    }
    // The refusal says why, and no other route is affected.
    let client = h.client();
    h.idp
        .controls()
        .set_user_claims("eve", json!({"email": "eve@evil.com"}));
    h.login(&client, "eve").await;
    let refused = client.get(h.at("/mail/x")).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(refused.text().await.unwrap().contains("email"));
    assert_eq!(h.echo(&client, "/other").await.path(), "/other");
}

// === base path ===

/// A gateway whose `public_url` is `http://<addr>/app`.
async fn under_app(extra: &str) -> Harness {
    let listener = bind().await;
    let addr = listener.local_addr().unwrap();
    let config = format!("[server]\npublic_url = \"http://{addr}/app\"\n{extra}");
    Harness::builder()
        .listener(listener)
        .config(&config)
        .start()
        .await
}

#[tokio::test]
async fn a_whole_login_works_under_a_base_path() {
    let h = under_app("").await;
    h.idp.controls().set_auto_login(Some("alice".into()));
    let client = h.client();
    // A browser navigation to a page below the base path goes to login...
    let page = client
        .get(h.at("/app/page?x=1"))
        .header(header::ACCEPT, "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::FOUND);
    let mut next = location(&page);
    // ... through /app/oauth2/start when the gateway sends the browser there (never a loop).
    let mut hops = 0;
    while !next.starts_with(&h.idp.issuer()) {
        assert!(next.contains("/app/oauth2/start"), "{next}");
        let url = if next.starts_with('/') {
            h.at(&next)
        } else {
            next
        };
        let start = client.get(url).send().await.unwrap();
        assert_eq!(start.status(), StatusCode::FOUND);
        next = location(&start);
        hops += 1;
        assert!(hops < 3, "login loops");
    }
    let query = support::query_of(&next);
    assert_eq!(
        support::one(&query, "redirect_uri"),
        h.at("/app/oauth2/callback")
    );
    let back = client.get(&next).send().await.unwrap();
    let callback = location(&back);
    assert!(
        callback.starts_with(&h.at("/app/oauth2/callback?")),
        "{callback}"
    );
    let done = client.get(&callback).send().await.unwrap();
    assert_eq!(done.status(), StatusCode::FOUND, "{:?}", done.text().await);
    assert_eq!(location(&done), "/app/page?x=1");
    // Logged in: the page, and userinfo below the base path.
    assert_eq!(h.echo(&client, "/app/page").await.path(), "/app/page");
    let info = client
        .get(h.at("/app/oauth2/userinfo"))
        .send()
        .await
        .unwrap();
    assert_eq!(info.status(), StatusCode::OK);
    // `/oauth2/...` at the root is an ordinary path of the upstream now.
    assert_eq!(
        h.echo(&client, "/oauth2/userinfo").await.path(),
        "/oauth2/userinfo"
    );
    // Probes stay at the root.
    let health = client.get(h.at("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    // Sign-out below the base path ends the session.
    let out = client
        .get(h.at("/app/oauth2/sign_out"))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::FOUND);
    let info = client
        .get(h.at("/app/oauth2/userinfo"))
        .send()
        .await
        .unwrap();
    assert_eq!(info.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn without_rd_a_login_lands_on_the_base_path() {
    let h = under_app("").await;
    h.idp.controls().set_auto_login(Some("alice".into()));
    let client = h.client();
    let start = client.get(h.at("/app/oauth2/start")).send().await.unwrap();
    let back = client.get(location(&start)).send().await.unwrap();
    let done = client.get(location(&back)).send().await.unwrap();
    assert_eq!(location(&done), "/app/");
}

// === allowed_redirect_hosts ===

#[tokio::test]
async fn login_may_land_on_an_allowed_host() {
    let h = Harness::builder()
        .config("[server]\nallowed_redirect_hosts = [\"b.example.test\", \".corp.test\"]")
        .start()
        .await;
    h.idp.controls().set_auto_login(Some("alice".into()));
    for (rd, landing) in [
        (
            "http://b.example.test/page?x=1",
            "http://b.example.test/page?x=1",
        ),
        ("http://wiki.corp.test/", "http://wiki.corp.test/"),
        ("http://corp.test/", "/"),
        ("http://badcorp.test/", "/"),
        ("http://b.example.test.evil.test/", "/"),
        ("http://b.example.test@evil.test/", "/"),
        ("//b.example.test/", "/"),
    ] {
        let client = h.client();
        let rd_enc: String = url::form_urlencoded::byte_serialize(rd.as_bytes()).collect();
        let start = client
            .get(h.at(&format!("/oauth2/start?rd={rd_enc}")))
            .send()
            .await
            .unwrap();
        let back = client.get(location(&start)).send().await.unwrap();
        let done = client.get(location(&back)).send().await.unwrap();
        assert_eq!(done.status(), StatusCode::FOUND);
        assert_eq!(location(&done), landing, "{rd}");
        // Sign-out follows the same rule (no end-session redirect without a session).
        let out = h
            .client()
            .get(h.at(&format!("/oauth2/sign_out?rd={rd_enc}")))
            .send()
            .await
            .unwrap();
        if !location(&out).starts_with(&h.idp.issuer()) {
            assert_eq!(location(&out), landing, "sign_out {rd}");
        }
    }
}

// === Envoy / Istio ext_authz ===

const EXT_ROUTES: &str = r#"
[server]
trusted_proxies = ["127.0.0.1/32"]

[[route]]
path = "/public/"
policy = "public"

[[route]]
path = "/admin/"
policy = "deny"

[[route]]
path = "/ops/"
require_groups = ["ops"]

[[route]]
path = "/api/"
methods = ["DELETE"]
policy = "deny"
"#;

/// A check as Envoy sends it: the original method, the prefix plus the original path and
/// query, the original Host, and the allowed headers (here the client's `Cookie`).
async fn check(h: &Harness, client: &Client, method: Method, original: &str) -> reqwest::Response {
    client
        .request(method, h.at(&format!("/oauth2/ext_authz{original}")))
        .header(header::HOST, "app.example.test")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn ext_authz_answers_in_envoys_dialect() {
    let h = Harness::builder().config(EXT_ROUTES).start().await;
    let anonymous = h.client();
    // Without a session: 401 with the login URL, never a redirect (even for a browser).
    let denied = check(&h, &anonymous, Method::GET, "/private/x?y=1").await;
    assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
    let body: Value = denied.json().await.unwrap();
    let login_url = body["login_url"].as_str().unwrap();
    assert!(login_url.contains("/oauth2/start"), "{body}");
    assert!(login_url.contains("private"), "{body}");
    // Public and denied routes, judged on the original path and method.
    assert_eq!(
        check(&h, &anonymous, Method::POST, "/public/form")
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        check(&h, &anonymous, Method::GET, "/admin/x")
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    // With a session: 200 and the headers the upstream would get, token included.
    let client = h.client();
    h.login(&client, "alice").await;
    let allowed = check(&h, &client, Method::GET, "/private/x?y=1").await;
    assert_eq!(allowed.status(), StatusCode::OK);
    let headers = allowed.headers();
    assert!(
        headers[header::AUTHORIZATION]
            .to_str()
            .unwrap()
            .starts_with("Bearer ")
    );
    assert_eq!(headers["x-forwarded-user"], "alice");
    assert!(headers.get(header::SET_COOKIE).is_none());
    // The method is the original one: a DELETE on /api/ is denied, a GET is not.
    assert_eq!(
        check(&h, &client, Method::DELETE, "/api/items/7")
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        check(&h, &client, Method::GET, "/api/items/7")
            .await
            .status(),
        StatusCode::OK
    );
    // Group rules apply: alice is not in `ops`.
    assert_eq!(
        check(&h, &client, Method::GET, "/ops/").await.status(),
        StatusCode::FORBIDDEN
    );
    // The root path of the app, and a path that normalizes into a denied one.
    assert_eq!(
        check(&h, &client, Method::GET, "/").await.status(),
        StatusCode::OK
    );
    let dotted = raw::get(h.addr, b"/oauth2/ext_authz/public/../admin/x", &[]).await;
    assert_eq!(dotted.status, 403, "{}", dotted.body);
    let encoded = raw::get(h.addr, b"/oauth2/ext_authz/%61dmin/x", &[]).await;
    assert_eq!(encoded.status, 403, "{}", encoded.body);
    // Paths that cannot be judged: 400, never judged as another.
    for target in [&b"/oauth2/ext_authz/a%2Fb"[..], b"/oauth2/ext_authz/x%00"] {
        let answer = raw::get(h.addr, target, &[]).await;
        assert_eq!(answer.status, 400, "{}", String::from_utf8_lossy(target));
    }
    // An encoded prefix is no check request: the reserved `/oauth2/` answers 404.
    let encoded_prefix = raw::get(h.addr, b"/oauth2/%65xt_authz/public/x", &[]).await;
    assert_eq!(encoded_prefix.status, 404);
    // Nothing of this reached the upstream.
    assert_eq!(h.upstream_hits(), 0);
}

#[tokio::test]
async fn ext_authz_answers_only_trusted_proxies() {
    let h = Harness::builder()
        .config("[server]\ntrusted_proxies = [\"10.9.9.9/32\"]\n[[route]]\npath = \"/public/\"\npolicy = \"public\"")
        .start()
        .await;
    let client = h.client();
    h.login(&client, "alice").await;
    for path in ["/public/x", "/private", "/"] {
        let answer = check(&h, &client, Method::GET, path).await;
        assert_eq!(answer.status(), StatusCode::FORBIDDEN, "{path}");
        assert!(answer.headers().get(header::AUTHORIZATION).is_none());
    }
}

#[tokio::test]
async fn ext_authz_judges_the_original_host() {
    let (billing, _hits, _task) = support::echo_upstream().await;
    let h = Harness::builder()
        .config(&format!(
            r#"
            [server]
            trusted_proxies = ["127.0.0.1/32"]
            [upstreams.billing]
            url = "http://{billing}"
            [[route]]
            host = "*.internal.test"
            path = "/"
            policy = "deny"
            [[route]]
            path = "/"
            policy = "public"
            "#
        ))
        .start()
        .await;
    let answer = |host: &'static str| {
        let url = h.at("/oauth2/ext_authz/x");
        async move {
            support::bare_client()
                .get(url)
                .header(header::HOST, host)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(answer("a.internal.test").await, StatusCode::FORBIDDEN);
    assert_eq!(answer("internal.test").await, StatusCode::OK);
    assert_eq!(answer("a.internal.test:443").await, StatusCode::FORBIDDEN);
    let bad = raw::get(
        h.addr,
        b"/oauth2/ext_authz/x",
        &[("Host", "a.internal.test")],
    )
    .await;
    assert_eq!(bad.status, 400, "two Host headers");
}
