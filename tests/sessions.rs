//! Sessions: bad cookies, cookie secret rotation, identity header stripping, the session
//! cookie kept from the upstream, idle and absolute timeouts, capacity, pending-login floods.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod support;

use std::time::Duration;

use authgate::session::{CookieCodec, SessionStore, Store};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use reqwest::{StatusCode, header};
use sha2::Sha256;
use support::bare_client;
use support::{
    COOKIE_SECRET_A, COOKIE_SECRET_B, Harness, location, set_cookie_line, userinfo_status,
};

const SESSION: &str = "authgate_session";
/// base64 of 32 bytes of 0x03: configured nowhere.
const COOKIE_SECRET_C: &str = "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=";

// --- helpers ---

/// The documented cookie format: `b64url(id) "." b64url(HMAC-SHA256(key, context || id))`.
fn sign(secret_b64: &str, id: &[u8; 16]) -> String {
    let key = STANDARD.decode(secret_b64).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(b"authgate session v1\0");
    mac.update(id);
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(id),
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

fn id_of(cookie: &str) -> [u8; 16] {
    let (id, _) = cookie.split_once('.').unwrap();
    URL_SAFE_NO_PAD.decode(id).unwrap().try_into().unwrap()
}

/// An API GET of `/page` with exactly this session cookie.
async fn api_with(h: &Harness, cookie: &str) -> reqwest::Response {
    bare_client()
        .get(h.at("/page"))
        .header(header::ACCEPT, "application/json")
        .header(header::COOKIE, format!("{SESSION}={cookie}"))
        .send()
        .await
        .unwrap()
}

fn is_cleared(r: &reqwest::Response) -> bool {
    set_cookie_line(r, SESSION).is_some_and(|line| {
        line.starts_with(&format!("{SESSION}=;"))
            && line.split(';').map(str::trim).any(|a| a == "Max-Age=0")
    })
}

async fn sync_store(h: &Harness) -> u64 {
    let Store::Memory(m) = h.gateway.store().as_ref() else {
        panic!("these tests run on the memory store");
    };
    m.sync().await;
    h.gateway.store().live()
}

// --- bad cookies ---

#[tokio::test]
async fn bad_cookies_are_unauthenticated_never_5xx() {
    let h = Harness::start().await;
    let good = h.login(&h.client(), "alice").await;
    let id = id_of(&good);
    assert_eq!(sign(COOKIE_SECRET_A, &id), good, "the documented format");
    let (id_part, mac_part) = good.split_once('.').unwrap();
    let flip = |s: &str, at: usize| {
        let mut b = s.as_bytes().to_vec();
        b[at] = if b[at] == b'A' { b'B' } else { b'A' };
        String::from_utf8(b).unwrap()
    };
    let unknown_id = [0x5au8; 16];

    // (what, cookie value, signature valid)
    let cases: Vec<(&str, String, bool)> = vec![
        (
            "tampered mac",
            format!("{id_part}.{}", flip(mac_part, 5)),
            false,
        ),
        (
            "tampered id",
            format!("{}.{mac_part}", flip(id_part, 3)),
            false,
        ),
        ("truncated by one", good[..good.len() - 1].to_owned(), false),
        ("truncated to the id", format!("{id_part}."), false),
        ("id only", id_part.to_owned(), false),
        ("one char more", format!("{good}A"), false),
        ("foreign secret", sign(COOKIE_SECRET_C, &id), false),
        ("empty", String::new(), false),
        ("dot", ".".to_owned(), false),
        ("garbage", "not-a-cookie".to_owned(), false),
        ("long", "A".repeat(4000), false),
        (
            "bad base64",
            format!("{}.{}", "!".repeat(22), "?".repeat(43)),
            false,
        ),
        (
            "unknown id, valid signature",
            sign(COOKIE_SECRET_A, &unknown_id),
            true,
        ),
    ];
    for (what, cookie, signed) in &cases {
        let r = api_with(&h, cookie).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{what} (API)");
        assert_eq!(
            is_cleared(&r),
            *signed,
            "{what}: cleared iff signature valid"
        );

        let r = bare_client()
            .get(h.at("/page"))
            .header(header::ACCEPT, "text/html")
            .header(header::COOKIE, format!("{SESSION}={cookie}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FOUND, "{what} (browser)");
        assert!(location(&r).contains("/oauth2/start"), "{what}");
        assert_eq!(is_cleared(&r), *signed, "{what} (browser)");

        for path in ["/oauth2/userinfo", "/oauth2/auth"] {
            let r = bare_client()
                .get(h.at(path))
                .header(header::COOKIE, format!("{SESSION}={cookie}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{what} {path}");
        }
    }
    // The real cookie still works: the failures above were about the cookies.
    let r = api_with(&h, &good).await;
    assert_eq!(r.status(), StatusCode::OK);
}

// --- cookie secret rotation ---

fn codec(secrets: &[&str]) -> CookieCodec {
    let list: Vec<String> = secrets.iter().map(|s| format!("\"{s}\"")).collect();
    let cfg = support::config(
        "http://127.0.0.1:1",
        "http://127.0.0.1:2",
        "127.0.0.1:3".parse().unwrap(),
        &[format!("[session]\ncookie_secrets = [{}]", list.join(", "))],
    );
    CookieCodec::new(&cfg.session)
}

#[test]
fn cookie_secret_rotation_at_the_codec() {
    let old = codec(&[COOKIE_SECRET_A]);
    let rotated = codec(&[COOKIE_SECRET_B, COOKIE_SECRET_A]);
    let dropped = codec(&[COOKIE_SECRET_B]);
    let id = [7u8; 16];
    let by_a = old.encode(&id);
    assert_eq!(by_a, sign(COOKIE_SECRET_A, &id), "the documented format");
    assert_eq!(old.decode(&by_a), Some(id));
    assert_eq!(
        rotated.decode(&by_a),
        Some(id),
        "[B, A] verifies A's cookie"
    );
    assert_eq!(dropped.decode(&by_a), None, "[B] does not");
    let by_rotated = rotated.encode(&id);
    assert_eq!(
        by_rotated,
        sign(COOKIE_SECRET_B, &id),
        "the first secret signs"
    );
    assert_eq!(old.decode(&by_rotated), None);
    assert_eq!(dropped.decode(&by_rotated), Some(id));
}

#[tokio::test]
async fn gateway_with_rotated_secrets_accepts_a_live_session_signed_by_the_old_one() {
    let h = Harness::builder()
        .config(&format!(
            "[session]\ncookie_secrets = [\"{COOKIE_SECRET_B}\", \"{COOKIE_SECRET_A}\"]"
        ))
        .start()
        .await;
    let issued = h.login(&h.client(), "alice").await;
    let id = id_of(&issued);
    assert_eq!(issued, sign(COOKIE_SECRET_B, &id), "new cookies use B");
    // The same live session, as a browser that still holds a cookie signed by A would send it.
    let r = api_with(&h, &sign(COOKIE_SECRET_A, &id)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let echo: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echo["headers"]["x-forwarded-user"][0], "alice");
    // Signed by a secret the gateway does not have: refused, and not cleared.
    let r = api_with(&h, &sign(COOKIE_SECRET_C, &id)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(!is_cleared(&r));
}

// --- identity headers ---

const SPOOFS: [(&str, &str); 12] = [
    ("X-Forwarded-User", "mallory"),
    ("X_Forwarded_User", "mallory"),
    ("x_forwarded-user", "mallory"),
    ("X-Forwarded-Email", "mallory@evil.example"),
    ("X_Forwarded_Email", "mallory@evil.example"),
    ("X-Forwarded-Preferred-Username", "mallory"),
    ("X-Forwarded-Groups", "admin"),
    ("X_Forwarded_Groups", "admin"),
    ("X-Forwarded-Tenant", "evil-tenant"),
    ("X_Forwarded_Tenant", "evil-tenant"),
    ("Authorization", "Bearer forged"),
    ("X-Forwarded-Preferred_Username", "mallory"),
];

fn spoofed(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    SPOOFS
        .iter()
        .fold(request, |r, (name, value)| r.header(*name, *value))
        .header(header::ACCEPT, "application/json")
}

fn no_spoof_reached(echo: &serde_json::Value, what: &str) {
    let headers = echo["headers"].as_object().unwrap();
    for (name, values) in headers {
        for v in values.as_array().unwrap() {
            let v = v.as_str().unwrap();
            assert!(
                !v.contains("mallory") && !v.contains("evil") && !v.contains("forged"),
                "{what}: {name}: {v}"
            );
            assert_ne!(v, "admin", "{what}: {name}");
        }
        assert!(
            !name.contains('_'),
            "{what}: underscore spelling {name} reached the upstream"
        );
    }
}

#[tokio::test]
async fn spoofed_identity_headers_are_stripped_with_and_without_a_session() {
    let h = Harness::builder()
        .config(
            r#"
            [headers.claims]
            "X-Forwarded-Tenant" = "tenant_id"
            [[route]]
            path = "/public/"
            policy = "public"
            "#,
        )
        .start()
        .await;
    h.idp.controls().set_user_claims(
        "alice",
        serde_json::json!({"groups": ["a", "b"], "tenant_id": "t1"}),
    );

    // Public route, no session.
    let anonymous = h.client();
    let r = spoofed(anonymous.get(h.at("/public/x")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let echo: serde_json::Value = r.json().await.unwrap();
    no_spoof_reached(&echo, "public, anonymous");
    assert!(echo["headers"]["authorization"].is_null());
    assert!(echo["headers"]["x-forwarded-user"].is_null());

    // Public route with a session: still nothing (public never reads the session).
    let client = h.client();
    h.login(&client, "alice").await;
    let r = spoofed(client.get(h.at("/public/x"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let echo: serde_json::Value = r.json().await.unwrap();
    no_spoof_reached(&echo, "public, session");
    for name in ["authorization", "x-forwarded-user", "x-forwarded-tenant"] {
        assert!(echo["headers"][name].is_null(), "{name} on a public route");
    }

    // Authenticated route with a session: exactly the gateway's values, once each.
    let r = spoofed(client.get(h.at("/private"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let echo: serde_json::Value = r.json().await.unwrap();
    no_spoof_reached(&echo, "authenticated");
    let single = |name: &str| {
        let values = echo["headers"][name]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(values.len(), 1, "{name}: {values:?}");
        values[0].as_str().unwrap().to_owned()
    };
    assert_eq!(single("x-forwarded-user"), "alice");
    assert_eq!(single("x-forwarded-email"), "alice@example.test");
    assert_eq!(single("x-forwarded-preferred-username"), "alice");
    assert_eq!(single("x-forwarded-groups"), "a,b");
    assert_eq!(single("x-forwarded-tenant"), "t1");
    let bearer = single("authorization");
    assert!(
        bearer.starts_with("Bearer ") && bearer.len() > 20,
        "{bearer}"
    );

    // Without a session the authenticated route never reaches the upstream.
    let r = spoofed(anonymous.get(h.at("/private")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn empty_groups_and_absent_claims_set_no_header() {
    let h = Harness::builder()
        .config(
            r#"
            [headers.claims]
            "X-Forwarded-Tenant" = "tenant_id"
            "#,
        )
        .start()
        .await;
    let client = h.client();
    h.login(&client, "bob").await; // groups [] and no tenant_id
    let r = spoofed(client.get(h.at("/x"))).send().await.unwrap();
    let echo: serde_json::Value = r.json().await.unwrap();
    no_spoof_reached(&echo, "bob");
    assert!(echo["headers"]["x-forwarded-groups"].is_null(), "{echo}");
    assert!(echo["headers"]["x-forwarded-tenant"].is_null(), "{echo}");
    assert_eq!(echo["headers"]["x-forwarded-user"][0], "bob");
}

// --- cookies upstream ---

#[tokio::test]
async fn session_cookie_is_not_forwarded_other_cookies_are() {
    let h = Harness::start().await;
    let cookie = h.login(&h.client(), "alice").await;
    let r = bare_client()
        .get(h.at("/x"))
        .header(header::ACCEPT, "application/json")
        .header(
            header::COOKIE,
            format!("a=1; {SESSION}={cookie}; authgate_session_login=zzz; b=2"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let echo: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echo["headers"]["x-forwarded-user"][0], "alice");
    assert_eq!(echo["headers"]["cookie"], serde_json::json!(["a=1; b=2"]));

    // Only our cookie: no Cookie header at all upstream.
    let r = api_with(&h, &cookie).await;
    let echo: serde_json::Value = r.json().await.unwrap();
    assert!(echo["headers"]["cookie"].is_null(), "{echo}");
}

// --- timeouts ---

#[tokio::test]
async fn idle_timeout_is_reset_by_use_and_ends_an_unused_session() {
    let h = Harness::builder()
        .config(
            r#"[session]
            idle_timeout = "2s"
            absolute_timeout = "1h""#,
        )
        .start()
        .await;
    let client = h.client();
    let cookie = h.login(&client, "alice").await;
    // Used every half second (userinfo and proxied requests both count), it survives 4 s of
    // the gateway's clock (moved, not slept).
    for uses in 0..8 {
        h.advance(Duration::from_millis(500));
        let status = if uses % 2 == 0 {
            userinfo_status(&h, &client).await
        } else {
            api_with(&h, &cookie).await.status()
        };
        assert_eq!(
            status,
            StatusCode::OK,
            "use {uses} at {} ms",
            (uses + 1) * 500
        );
    }
    // Unused for 3 s: gone, and the signed cookie is cleared.
    h.advance(Duration::from_secs(3));
    let r = api_with(&h, &cookie).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(is_cleared(&r), "an expired session's cookie is cleared");
    let r = bare_client()
        .get(h.at("/page"))
        .header(header::ACCEPT, "text/html")
        .header(header::COOKIE, format!("{SESSION}={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(userinfo_status(&h, &client).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn absolute_timeout_ends_a_session_in_continuous_use() {
    let h = Harness::builder()
        .config(
            // absolute_timeout may not be shorter than idle_timeout: both 3 s, and the
            // session is used every 200 ms of the gateway's clock, so only the absolute
            // deadline can end it.
            r#"[session]
            idle_timeout = "3s"
            absolute_timeout = "3s"
            refresh_before_expiry = "1s""#,
        )
        .start()
        .await;
    let client = h.client();
    let cookie = h.login(&client, "alice").await;
    // Time moved since the login (real time adds a little on top).
    let mut moved = Duration::ZERO;
    let mut ok = 0;
    let ended_after = loop {
        let status = api_with(&h, &cookie).await.status();
        if status == StatusCode::UNAUTHORIZED {
            break moved;
        }
        assert_eq!(status, StatusCode::OK);
        ok += 1;
        assert!(
            moved < Duration::from_secs(10),
            "still alive after {moved:?}"
        );
        h.advance(Duration::from_millis(200));
        moved += Duration::from_millis(200);
    };
    // login_at has second precision: the session lives between 2 and 3 s.
    assert!(
        ended_after >= Duration::from_millis(1500),
        "ended too early: {ended_after:?}"
    );
    assert!(
        ended_after <= Duration::from_secs(3),
        "ended late: {ended_after:?}"
    );
    assert!(ok >= 3, "it was usable before: {ok} requests");
    assert_eq!(userinfo_status(&h, &client).await, StatusCode::UNAUTHORIZED);
}

// --- capacity ---

/// A full store drops the least recently used session, under real request timing: logins and requests back to back, as
/// browsers make them, and no help from the test (no store maintenance, no waiting): each
/// login that finds the store full drops the least recently used session at once.
#[tokio::test]
async fn capacity_drops_the_least_recently_used_sessions() {
    let h = Harness::builder()
        .config("[session]\nmax_sessions = 2")
        .start()
        .await;
    let mut cookies = Vec::new();
    for user in ["u1", "u2", "u3", "u4", "u5"] {
        let cookie = h.login(&h.client(), user).await;
        // Each user uses the session a little, as a browser landing after login would.
        assert_eq!(
            api_with(&h, &cookie).await.status(),
            StatusCode::OK,
            "{user}"
        );
        cookies.push(cookie);
    }
    // Newest first: a check of a live session is a use of it.
    let mut alive = Vec::new();
    for cookie in cookies.iter().rev() {
        alive.push(api_with(&h, cookie).await.status() == StatusCode::OK);
    }
    alive.reverse();
    assert_eq!(
        alive,
        [false, false, false, true, true],
        "the latest logins stay, the earliest are dropped"
    );
    let live = support::metric(&h.metrics().await, "authgate_sessions_live")
        .expect("authgate_sessions_live") as u64;
    assert!((1..=2).contains(&live), "authgate_sessions_live {live}");
}

/// The issue's reproduction: logins A and B, a request with A, login C, all within moka's
/// maintenance interval. B is the least recently used and goes; A stays.
#[tokio::test]
async fn capacity_keeps_a_recently_used_old_session() {
    let h = Harness::builder()
        .config("[session]\nmax_sessions = 2")
        .start()
        .await;
    for round in 0..3 {
        let a = h.login(&h.client(), "a").await;
        let b = h.login(&h.client(), "b").await;
        // a is older than b but used more recently.
        assert_eq!(api_with(&h, &a).await.status(), StatusCode::OK);
        let c = h.login(&h.client(), "c").await;
        for _ in 0..2 {
            assert_eq!(
                api_with(&h, &a).await.status(),
                StatusCode::OK,
                "round {round}: a was used last"
            );
            assert_eq!(
                api_with(&h, &c).await.status(),
                StatusCode::OK,
                "round {round}: c is new"
            );
            assert_eq!(
                api_with(&h, &b).await.status(),
                StatusCode::UNAUTHORIZED,
                "round {round}: b is the least recently used"
            );
            // Whatever maintenance comes later does not change the verdict.
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    }
}

// --- pending logins ---

#[tokio::test]
async fn pending_login_flood_does_not_touch_sessions() {
    let h = Harness::builder()
        .config("[session]\nmax_pending_logins = 10")
        .start()
        .await;
    let client = h.client();
    let cookie = h.login(&client, "alice").await;
    let flood = bare_client();
    for _ in 0..50 {
        let r = flood
            .get(h.at("/oauth2/start?rd=%2F"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FOUND);
    }
    assert_eq!(sync_store(&h).await, 1);
    assert_eq!(api_with(&h, &cookie).await.status(), StatusCode::OK);
    assert_eq!(userinfo_status(&h, &client).await, StatusCode::OK);
    // And a login after the flood works.
    let other = h.client();
    h.login(&other, "bob").await;
    assert_eq!(userinfo_status(&h, &other).await, StatusCode::OK);
}
