//! The admin API on `server.admin_listen`: bearer token (401 without it), listing a user's
//! sessions (never a token), revoking by user or by session id (refresh tokens revoked at
//! the provider), strict request parsing, the configuration rules, and two replicas on
//! Redis (a revoke is dead on the other replica within 2 s).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use authgate::config::Config;
use authgate::session::SessionStore;
use devidp::idp::DevIdp;
use figment::Figment;
use figment::providers::{Format, Toml};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use support::redis::RedisServer;
use support::{Harness, bare_client, eventually, start_idp};

pub const TOKEN: &str = "admin-token-for-the-tests-0123456789";

/// A token file (unique path) holding `token`.
pub fn token_file(token: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "authgate-admin-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::write(&path, format!("{token}\n")).unwrap();
    path
}

/// A free local port (bound, then released).
pub fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// `[server]` lines that turn the admin API on; its base URL.
fn admin_config() -> (String, String) {
    let addr = free_addr();
    let config = format!(
        "[server]\nadmin_listen = \"{addr}\"\nadmin_token_file = \"{}\"",
        token_file(TOKEN).display()
    );
    (config, format!("http://{addr}"))
}

struct Admin {
    h: Harness,
    base: String,
}

async fn start(extra: &str) -> Admin {
    let (config, base) = admin_config();
    let h = Harness::builder()
        .config(&config)
        .config(extra)
        .start()
        .await;
    Admin { h, base }
}

async fn list(base: &str, sub: &str) -> (StatusCode, Value) {
    let r = bare_client()
        .get(format!("{base}/admin/sessions"))
        .query(&[("sub", sub)])
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn revoke(base: &str, body: &Value) -> (StatusCode, Value) {
    let r = bare_client()
        .post(format!("{base}/admin/sessions/revoke"))
        .bearer_auth(TOKEN)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn status(h: &Harness, cookie: &str) -> StatusCode {
    bare_client()
        .get(h.at("/app"))
        .header(header::ACCEPT, "application/json")
        .header(header::COOKIE, format!("authgate_session={cookie}"))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn every_call_needs_the_admin_token() {
    let a = start("").await;
    let url = format!("{}/admin/sessions?sub=alice", a.base);
    let client = bare_client();
    let no_token = client.get(&url).send().await.unwrap();
    assert_eq!(no_token.status(), StatusCode::UNAUTHORIZED);
    for wrong in [
        "Bearer wrong-token-wrong-token-wrong",
        &format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]),
        &format!("Bearer {TOKEN}x"),
        &format!("Basic {TOKEN}"),
        TOKEN,
        "Bearer ",
    ] {
        let r = client
            .get(&url)
            .header(header::AUTHORIZATION, wrong)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{wrong}");
    }
    let r = client
        .post(format!("{}/admin/sessions/revoke", a.base))
        .json(&json!({"sub": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let ok = client.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    // Never on the gateway's own listener.
    let main = client
        .get(a.h.at("/admin/sessions?sub=alice"))
        .bearer_auth(TOKEN)
        .header(header::ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(
        main.status(),
        StatusCode::UNAUTHORIZED,
        "proxied, needs a session"
    );
}

#[tokio::test]
async fn list_shows_a_users_sessions_without_tokens() {
    let a = start("").await;
    let h = &a.h;
    let before = authgate::session::unix_now();
    let alice1 = h.login(&h.client(), "alice").await;
    let alice2 = h.login(&h.client(), "alice").await;
    h.login(&h.client(), "bob").await;
    let (s, body) = list(&a.base, "alice").await;
    assert_eq!(s, StatusCode::OK);
    let sessions = body["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{body}");
    for session in sessions {
        let id = session["id"].as_str().unwrap();
        assert_eq!(id.len(), 16, "{session}");
        let login_at = session["login_at"].as_u64().unwrap();
        assert!(login_at >= before && login_at <= before + 5, "{session}");
        assert!(session["last_used_at"].as_u64().unwrap() >= login_at);
        assert!(session["expires_at"].as_u64().unwrap() > login_at);
        assert_eq!(session.as_object().unwrap().len(), 4, "{session}");
    }
    let text = body.to_string();
    for cookie in [&alice1, &alice2] {
        let id = cookie.split('.').next().unwrap();
        assert!(!text.contains(id), "a cookie value in the listing");
    }
    let (s, body) = list(&a.base, "nobody").await;
    assert_eq!((s, body), (StatusCode::OK, json!({"sessions": []})));
    for query in [
        "",
        "?sub=",
        "?user=alice",
        "?sub=alice&sub=bob",
        "?sub=alice&x=1",
    ] {
        let r = bare_client()
            .get(format!("{}/admin/sessions{query}", a.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{query}");
    }
}

#[tokio::test]
async fn revoke_by_sub_ends_every_session_of_the_user_and_revokes_at_the_provider() {
    let a = start("").await;
    let h = &a.h;
    let alice1 = h.login(&h.client(), "alice").await;
    let alice2 = h.login(&h.client(), "alice").await;
    let bob = h.login(&h.client(), "bob").await;
    let (s, body) = revoke(&a.base, &json!({"sub": "alice"})).await;
    assert_eq!(
        (s, body),
        (
            StatusCode::OK,
            json!({"revoked": 2, "revoked_at_provider": 2})
        )
    );
    assert_eq!(status(h, &alice1).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status(h, &alice2).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status(h, &bob).await, StatusCode::OK);
    assert_eq!(h.idp.controls().revocations(), 2, "refresh tokens revoked");
    let (_, body) = revoke(&a.base, &json!({"sub": "alice"})).await;
    assert_eq!(body, json!({"revoked": 0, "revoked_at_provider": 0}));
}

#[tokio::test]
async fn revoke_by_sid_ends_that_session_only() {
    let a = start("").await;
    let h = &a.h;
    let first = h.login(&h.client(), "alice").await;
    let (_, body) = list(&a.base, "alice").await;
    let first_id = body["sessions"][0]["id"].as_str().unwrap().to_owned();
    let second = h.login(&h.client(), "alice").await;
    let (s, body) = revoke(&a.base, &json!({"sid": first_id})).await;
    assert_eq!(
        (s, body),
        (
            StatusCode::OK,
            json!({"revoked": 1, "revoked_at_provider": 1})
        )
    );
    assert_eq!(status(h, &first).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status(h, &second).await, StatusCode::OK);
    let (_, body) = list(&a.base, "alice").await;
    assert_eq!(body["sessions"].as_array().unwrap().len(), 1);
    assert_ne!(body["sessions"][0]["id"], json!(first_id));
}

#[tokio::test]
async fn revoke_requests_are_parsed_strictly() {
    let a = start("").await;
    for bad in [
        json!({}),
        json!({"sub": "alice", "sid": "0123456789abcdef"}),
        json!({"sub": "alice", "extra": 1}),
        json!({"sub": ""}),
        json!({"sub": 5}),
        json!({"sid": "not-hex"}),
        json!({"sid": "0123456789ABCDEF"}),
        json!(["alice"]),
    ] {
        let (s, _) = revoke(&a.base, &bad).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
    }
    let client = bare_client();
    let url = format!("{}/admin/sessions/revoke", a.base);
    let big = format!("{{\"sub\": \"{}\"}}", "a".repeat(8192));
    let r = (client.post(&url).bearer_auth(TOKEN))
        .header(header::CONTENT_TYPE, "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let r = (client.post(&url).bearer_auth(TOKEN))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body("sub=alice")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = client.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    let r = (client.get(format!("{}/other", a.base)).bearer_auth(TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

fn config_errors(server: &str) -> String {
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:4180"
public_url = "https://app.example.com"
{server}
[upstream]
url = "http://127.0.0.1:8080"
[oidc]
issuer = "https://idp.example.com/oidc"
client_id = "client-1"
[session]
cookie_secrets = ["{}"]
"#,
        support::COOKIE_SECRET_A
    );
    match Config::from_figment(Figment::from(Toml::string(&toml))) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn admin_listen_needs_a_token_file_and_its_own_address() {
    let token = token_file(TOKEN);
    let token = token.display();
    let e = config_errors("admin_listen = \"127.0.0.1:9091\"");
    assert!(
        e.contains("server.admin_token_file") && e.contains("required"),
        "{e}"
    );
    let e = config_errors(&format!("admin_token_file = \"{token}\""));
    assert!(
        e.contains("server.admin_listen") && e.contains("required"),
        "{e}"
    );
    let e = config_errors(&format!(
        "admin_listen = \"127.0.0.1:4180\"\nadmin_token_file = \"{token}\""
    ));
    assert!(e.contains("must differ from server.listen"), "{e}");
    let e = config_errors(&format!(
        "metrics_listen = \"127.0.0.1:9091\"\nadmin_listen = \"127.0.0.1:9091\"\nadmin_token_file = \"{token}\""
    ));
    assert!(e.contains("must differ from server.metrics_listen"), "{e}");
    let short = token_file("short");
    let e = config_errors(&format!(
        "admin_listen = \"127.0.0.1:9091\"\nadmin_token_file = \"{}\"",
        short.display()
    ));
    assert!(e.contains("at least 16 characters"), "{e}");
    assert!(!e.contains("short\""), "the token is not quoted: {e}");
    let e = config_errors(&format!(
        "admin_listen = \"127.0.0.1:9091\"\nadmin_token_file = \"{token}\""
    ));
    assert_eq!(e, "");
}

/// Two replicas on one Redis: a revoke on A is dead on B within 2 s; listing works there too.
#[tokio::test]
async fn revoke_on_one_replica_is_dead_on_another_within_two_seconds() {
    let redis = RedisServer::start();
    let idp = start_idp().await;
    let store = format!(
        "[session]\nstore = \"redis\"\nredis_url = \"{}\"\nredis_key_prefix = \"ag:\"",
        redis.url()
    );
    let (admin, base) = admin_config();
    let a = Harness::builder()
        .idp(idp.clone())
        .config(&admin)
        .config(&store)
        .start()
        .await;
    let b = Harness::builder()
        .idp(idp.clone())
        .config(&store)
        .start()
        .await;
    let alice1 = a.login(&a.client(), "alice").await;
    let alice2 = b.login(&b.client(), "alice").await;
    let bob = a.login(&a.client(), "bob").await;
    // Both replicas have the sessions in their local caches.
    for h in [&a, &b] {
        for c in [&alice1, &alice2, &bob] {
            assert_eq!(status(h, c).await, StatusCode::OK);
        }
    }
    let (s, body) = list(&base, "alice").await;
    assert_eq!(s, StatusCode::OK);
    let sessions = body["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{body}");
    assert_eq!(sessions[0]["id"].as_str().unwrap().len(), 64);

    let (s, by_sid) = revoke(&base, &json!({"sid": sessions[1]["id"]})).await;
    assert_eq!((s, &by_sid["revoked"]), (StatusCode::OK, &json!(1)));
    let (s, by_sub) = revoke(&base, &json!({"sub": "alice"})).await;
    assert_eq!((s, &by_sub["revoked"]), (StatusCode::OK, &json!(1)));
    // B runs without the admin API: its record carries no revocation envelope, so only the
    // session A wrote has its refresh token revoked at the provider.
    let at_provider = |b: &Value| b["revoked_at_provider"].as_u64().unwrap();
    assert_eq!(at_provider(&by_sid) + at_provider(&by_sub), 1);
    assert_eq!(idp.controls().revocations(), 1);
    let revoked = Instant::now();
    assert_eq!(status(&a, &alice1).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status(&a, &alice2).await, StatusCode::UNAUTHORIZED);
    let dead_on_b = eventually(Duration::from_secs(2), || async {
        status(&b, &alice1).await == StatusCode::UNAUTHORIZED
            && status(&b, &alice2).await == StatusCode::UNAUTHORIZED
    })
    .await;
    let latency = revoked.elapsed();
    assert!(dead_on_b, "still alive on B {latency:?} after the revoke");
    eprintln!("revoke reached the other replica after {latency:?}");
    assert_eq!(status(&b, &bob).await, StatusCode::OK);
}

// --- Redis: refresh tokens revoked at the provider through the revocation envelopes --------

/// `[session]` lines for the Redis store at `redis`.
fn redis_store(redis: &RedisServer) -> String {
    format!(
        "[session]\nstore = \"redis\"\nredis_url = \"{}\"\nredis_key_prefix = \"ag:\"",
        redis.url()
    )
}

/// A replica on `redis` with the admin API on (`extra`: more configuration).
async fn redis_replica(redis: &RedisServer, idp: &Arc<DevIdp>, extra: &str) -> Admin {
    let (admin, base) = admin_config();
    let h = Harness::builder()
        .idp(idp.clone())
        .config(&admin)
        .config(&redis_store(redis))
        .config(extra)
        .start()
        .await;
    Admin { h, base }
}

/// The session of `cookie` as the store holds it now.
async fn session_of(h: &Harness, cookie: &str) -> Arc<authgate::session::Session> {
    let key = h.gateway.cookies().decode(cookie).unwrap();
    h.gateway.store().load(&key).await.unwrap().unwrap()
}

/// The refresh token the session of `cookie` holds now.
async fn refresh_token_of(h: &Harness, cookie: &str) -> String {
    let session = session_of(h, cookie).await;
    session.tokens.refresh_token.as_deref().unwrap().to_owned()
}

/// The Redis key of the session of `cookie`, and its admin API id.
fn record_of(h: &Harness, cookie: &str) -> (String, String) {
    let key = h.gateway.cookies().decode(cookie).unwrap();
    let name = h.gateway.store().redis().unwrap().session_name(&key);
    let id = name.strip_prefix("ag:s:").unwrap().to_owned();
    (name, id)
}

/// The raw value Redis holds under `name`.
async fn raw(redis: &RedisServer, name: &str) -> Vec<u8> {
    let mut conn = redis.conn().await;
    ::redis::cmd("GET")
        .arg(name)
        .query_async::<Option<Vec<u8>>>(&mut conn)
        .await
        .unwrap()
        .unwrap()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Refresh the session of `cookie` once on `h` (its access token near expiry by `h`'s clock,
/// and its provider's); the refresh token rotates.
async fn refresh_once(h: &Harness, cookie: &str) {
    let before = h.idp.controls().refresh_calls();
    let old = refresh_token_of(h, cookie).await;
    h.advance(Duration::from_secs(295));
    assert_eq!(status(h, cookie).await, StatusCode::OK);
    assert_eq!(h.idp.controls().refresh_calls(), before + 1, "one refresh");
    assert_ne!(refresh_token_of(h, cookie).await, old, "rotated");
}

/// Both sessions of `cookies` are dead on `h` within 2 s.
async fn dead_within_two_seconds(h: &Harness, cookies: &[&String]) {
    let dead = eventually(Duration::from_secs(2), || async {
        for c in cookies {
            if status(h, c).await != StatusCode::UNAUTHORIZED {
                return false;
            }
        }
        true
    })
    .await;
    assert!(
        dead,
        "still alive on the other replica 2 s after the revoke"
    );
}

/// Two replicas on one Redis, the admin API on: a revoke by `sub` on A revokes at the
/// provider exactly the CURRENT refresh token of each of alice's sessions (the rotated one,
/// never the one a refresh used up), and the sessions are dead on B within 2 s.
#[tokio::test]
async fn redis_revoke_by_sub_revokes_the_current_refresh_tokens_at_the_provider() {
    let redis = RedisServer::start();
    let idp = start_idp().await;
    let a = redis_replica(&redis, &idp, "").await;
    let b = redis_replica(&redis, &idp, "").await;
    let alice1 = a.h.login(&a.h.client(), "alice").await;
    let alice2 = b.h.login(&b.h.client(), "alice").await;
    let bob = a.h.login(&a.h.client(), "bob").await;
    for c in [&alice1, &alice2, &bob] {
        assert_eq!(status(&b.h, c).await, StatusCode::OK, "in B's local cache");
    }
    let first = refresh_token_of(&a.h, &alice1).await;
    refresh_once(&a.h, &alice1).await;
    let current = vec![
        refresh_token_of(&a.h, &alice1).await,
        refresh_token_of(&b.h, &alice2).await,
    ];
    assert_eq!(idp.controls().revocations(), 0);
    // Records with an envelope list as before (their deadline stays where Redis reads it).
    let (s, body) = list(&b.base, "alice").await;
    assert_eq!(s, StatusCode::OK);
    let now = authgate::session::unix_now();
    for session in body["sessions"].as_array().unwrap() {
        let login_at = session["login_at"].as_u64().unwrap();
        assert!(login_at.abs_diff(now) < 600, "{body}");
        assert!(session["expires_at"].as_u64().unwrap() > now, "{body}");
    }
    assert_eq!(body["sessions"].as_array().unwrap().len(), 2);

    let (s, body) = revoke(&a.base, &json!({"sub": "alice"})).await;
    let revoked = Instant::now();
    assert_eq!(
        (s, body),
        (
            StatusCode::OK,
            json!({"revoked": 2, "revoked_at_provider": 2})
        )
    );
    let at_provider = idp.controls().revoked_tokens();
    assert_eq!(sorted(at_provider.clone()), sorted(current));
    assert!(
        !at_provider.contains(&first),
        "the used-up token is not sent"
    );
    dead_within_two_seconds(&b.h, &[&alice1, &alice2]).await;
    eprintln!(
        "redis revoke by sub: dead on B after {:?}",
        revoked.elapsed()
    );
    assert_eq!(status(&a.h, &alice1).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status(&b.h, &bob).await, StatusCode::OK);
    let (_, body) = revoke(&b.base, &json!({"sub": "alice"})).await;
    assert_eq!(body, json!({"revoked": 0, "revoked_at_provider": 0}));
}

/// The same by `sid`: each revoke sends that session's current refresh token only.
#[tokio::test]
async fn redis_revoke_by_sid_revokes_that_sessions_current_refresh_token() {
    let redis = RedisServer::start();
    let idp = start_idp().await;
    let a = redis_replica(&redis, &idp, "").await;
    let b = redis_replica(&redis, &idp, "").await;
    let alice1 = a.h.login(&a.h.client(), "alice").await;
    let alice2 = a.h.login(&a.h.client(), "alice").await;
    for c in [&alice1, &alice2] {
        assert_eq!(status(&b.h, c).await, StatusCode::OK, "in B's local cache");
    }
    let first = refresh_token_of(&b.h, &alice1).await;
    refresh_once(&b.h, &alice1).await; // rotated by the other replica this time
    let current1 = refresh_token_of(&b.h, &alice1).await;
    let (_, id1) = record_of(&a.h, &alice1);
    let (_, id2) = record_of(&a.h, &alice2);

    let (s, body) = revoke(&a.base, &json!({"sid": id1})).await;
    assert_eq!(
        (s, body),
        (
            StatusCode::OK,
            json!({"revoked": 1, "revoked_at_provider": 1})
        )
    );
    assert_eq!(idp.controls().revoked_tokens(), vec![current1.clone()]);
    assert_ne!(current1, first);
    dead_within_two_seconds(&b.h, &[&alice1]).await;
    assert_eq!(status(&b.h, &alice2).await, StatusCode::OK, "the other one");

    let current2 = refresh_token_of(&b.h, &alice2).await;
    let (s, body) = revoke(&b.base, &json!({"sid": id2})).await;
    assert_eq!(
        (s, body),
        (
            StatusCode::OK,
            json!({"revoked": 1, "revoked_at_provider": 1})
        )
    );
    assert_eq!(idp.controls().revoked_tokens(), vec![current1, current2]);
    dead_within_two_seconds(&a.h, &[&alice2]).await;
}

/// With the admin API off, a Redis record is the sealed record alone (layout 1: first byte
/// 1), read straight from Redis; with it on, the value starts with 2 (record after its
/// envelope). Back-channel logout still ends the admin-off replica's sessions.
#[tokio::test]
async fn without_the_admin_api_redis_records_carry_no_envelope() {
    let redis = RedisServer::start();
    let idp = start_idp().await;
    let off = Harness::builder()
        .idp(idp.clone())
        .config(&redis_store(&redis))
        .start()
        .await;
    let on = redis_replica(&redis, &idp, "").await;
    let dave = off.login(&off.client(), "dave").await;
    let sid = idp.controls().last_issued_sid().unwrap();
    let erin = on.h.login(&on.h.client(), "erin").await;
    let (dave_name, _) = record_of(&off, &dave);
    let (erin_name, _) = record_of(&on.h, &erin);
    let (dave_raw, erin_raw) = (raw(&redis, &dave_name).await, raw(&redis, &erin_name).await);
    assert_eq!(dave_raw[0], 1, "admin API off: the record alone");
    assert_eq!(
        erin_raw[0], 2,
        "admin API on: the record after its envelope"
    );
    eprintln!(
        "record value: {} bytes without an envelope, {} with one",
        dave_raw.len(),
        erin_raw.len()
    );
    // The refresh tokens are nowhere in either value.
    for (value, cookie, h) in [(&dave_raw, &dave, &off), (&erin_raw, &erin, &on.h)] {
        let rt = refresh_token_of(h, cookie).await;
        assert!(!value.windows(rt.len()).any(|w| w == rt.as_bytes()));
    }
    // Records without an envelope (admin API off, or written before envelopes existed) read
    // on a replica that writes them.
    assert_eq!(status(&on.h, &dave).await, StatusCode::OK);
    // A revoke path of the admin-off replica: back-channel logout.
    let logout = support::post_logout_token(&off, &support::logout_token(&idp, &sid)).await;
    assert!(logout.is_success(), "{logout}");
    assert_eq!(status(&off, &dave).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status(&on.h, &erin).await, StatusCode::OK);
}

/// A record whose envelope is garbage, or sealed under another cookie secret: the revoke
/// deletes and counts it, sends nothing to the provider, and never fails.
#[tokio::test]
async fn redis_revoke_with_a_bad_envelope_deletes_and_counts_without_revoking() {
    let redis = RedisServer::start();
    let idp = start_idp().await;
    let a = redis_replica(&redis, &idp, "").await;
    let other_secret = format!(
        "[session]\ncookie_secrets = [\"{}\"]",
        support::COOKIE_SECRET_B
    );
    let c = redis_replica(&redis, &idp, &other_secret).await;
    let garbled = a.h.login(&a.h.client(), "alice").await;
    let intact = a.h.login(&a.h.client(), "alice").await;
    let carol = c.h.login(&c.h.client(), "carol").await;
    let intact_token = refresh_token_of(&a.h, &intact).await;

    // Garbage over the envelope (it starts after the 9-byte header and its 4-byte length).
    let (name, _) = record_of(&a.h, &garbled);
    let mut conn = redis.conn().await;
    let _: i64 = ::redis::cmd("SETRANGE")
        .arg(&name)
        .arg(20)
        .arg(&b"garbage!garbage!"[..])
        .query_async(&mut conn)
        .await
        .unwrap();
    let (s, body) = revoke(&a.base, &json!({"sub": "alice"})).await;
    assert_eq!(
        (s, body),
        (
            StatusCode::OK,
            json!({"revoked": 2, "revoked_at_provider": 1})
        )
    );
    assert_eq!(idp.controls().revoked_tokens(), vec![intact_token]);
    assert!(
        redis.dump().await.iter().all(|(k, _)| k != &name),
        "deleted"
    );

    // Sealed under another secret: A cannot open it, but deletes it by its id.
    let (carol_name, carol_id) = record_of(&c.h, &carol);
    let (s, body) = revoke(&a.base, &json!({"sid": carol_id})).await;
    assert_eq!(
        (s, body),
        (
            StatusCode::OK,
            json!({"revoked": 1, "revoked_at_provider": 0})
        )
    );
    assert_eq!(idp.controls().revocations(), 1, "nothing more sent");
    assert!(redis.dump().await.iter().all(|(k, _)| k != &carol_name));
    dead_within_two_seconds(&c.h, &[&carol]).await;
}

/// Secret rotation: envelopes are sealed with the current secret and opened with any
/// configured one. A replica whose secrets are `[B, A]` revokes at the provider the sessions a
/// replica on `[A]` wrote.
#[tokio::test]
async fn redis_revoke_after_a_secret_rotation_still_revokes_at_the_provider() {
    let redis = RedisServer::start();
    let idp = start_idp().await;
    let old = redis_replica(&redis, &idp, "").await;
    let rotated = format!(
        "[session]\ncookie_secrets = [\"{}\", \"{}\"]",
        support::COOKIE_SECRET_B,
        support::COOKIE_SECRET_A
    );
    let new = redis_replica(&redis, &idp, &rotated).await;
    let alice = old.h.login(&old.h.client(), "alice").await;
    let token = refresh_token_of(&old.h, &alice).await;
    let (s, body) = revoke(&new.base, &json!({"sub": "alice"})).await;
    assert_eq!(
        (s, body),
        (
            StatusCode::OK,
            json!({"revoked": 1, "revoked_at_provider": 1})
        )
    );
    assert_eq!(idp.controls().revoked_tokens(), vec![token]);
    dead_within_two_seconds(&old.h, &[&alice]).await;
}

/// A revoke while the session's refresh is at the provider (the grant done, rotating the
/// refresh token, the answer not yet back): the envelope's token (the one the refresh used
/// up) is revoked by the admin API, and the new one the refresh brings back, never stored, is
/// revoked by the gateway: no live refresh token is left at the provider.
#[tokio::test]
async fn redis_revoke_during_a_refresh_leaves_no_live_refresh_token() {
    let redis = RedisServer::start();
    let idp = start_idp().await;
    let a = redis_replica(&redis, &idp, "").await;
    let controls = idp.controls();
    controls.set_access_ttl(Duration::from_secs(5)); // < refresh_before_expiry: refreshes
    let alice = a.h.login(&a.h.client(), "alice").await;
    controls.set_access_ttl(Duration::from_secs(300));
    let used_up = refresh_token_of(&a.h, &alice).await;
    controls.push_token_fault(devidp::idp::TokenFault::SlowAnswer(Duration::from_secs(2)));
    let in_flight = tokio::spawn({
        let (url, cookie) = (a.h.at("/app"), alice.clone());
        async move {
            bare_client()
                .get(url)
                .header(header::ACCEPT, "application/json")
                .header(header::COOKIE, format!("authgate_session={cookie}"))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    let at_provider = eventually(Duration::from_secs(5), || async {
        controls.refresh_calls() == 1
    })
    .await;
    assert!(at_provider, "the refresh reached the provider");
    let (s, body) = revoke(&a.base, &json!({"sub": "alice"})).await;
    assert_eq!(
        (s, body),
        (
            StatusCode::OK,
            json!({"revoked": 1, "revoked_at_provider": 1})
        )
    );
    assert_eq!(controls.revoked_tokens(), vec![used_up.clone()]);
    let status = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("the request in flight is answered")
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the session stays ended");
    let revoked = controls.revoked_tokens();
    assert_eq!(revoked.len(), 2, "{revoked:?}");
    assert_ne!(revoked[1], used_up, "the refresh's new token");
}

// --- authgate sessions ---------------------------------------------------------------------

/// `authgate sessions <args>` with `config` (a file holding `server`'s lines on top of a
/// valid configuration): exit code, stdout, stderr.
fn cli(server: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:1"
public_url = "http://127.0.0.1:1"
{server}
[upstream]
url = "http://127.0.0.1:9"
[oidc]
issuer = "http://127.0.0.1:9/oidc"
client_id = "cli-test-client"
[session]
cookie_secrets = ["{}"]
cookie_secure = false
"#,
        support::COOKIE_SECRET_A
    );
    let path = token_file(&toml);
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_authgate"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("AUTHGATE_") {
            cmd.env_remove(key);
        }
    }
    let output = cmd
        .arg("sessions")
        .args(args)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(path);
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_sessions_command_lists_and_revokes_through_the_admin_api() {
    let (admin, base) = admin_config();
    let h = Harness::builder().config(&admin).start().await;
    let admin = admin.replace("[server]\n", "");
    let alice = h.login(&h.client(), "alice").await;
    let bob = h.login(&h.client(), "bob").await;
    let cli_async = |args: &'static [&'static str], server: String| {
        tokio::task::spawn_blocking(move || cli(&server, args))
    };

    let (code, out, err) = cli_async(&["list", "--sub", "alice"], admin.clone())
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed, list(&base, "alice").await.1);
    assert_eq!(listed["sessions"].as_array().unwrap().len(), 1);
    let id = listed["sessions"][0]["id"].as_str().unwrap().to_owned();

    let (code, out, err) = cli_async(&["revoke", "--sub", "bob"], admin.clone())
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({"revoked": 1, "revoked_at_provider": 1})
    );
    assert_eq!(status(&h, &bob).await, StatusCode::UNAUTHORIZED);
    let server = admin.clone();
    let (code, out, err) =
        tokio::task::spawn_blocking(move || cli(&server, &["revoke", "--sid", &id]))
            .await
            .unwrap();
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({"revoked": 1, "revoked_at_provider": 1})
    );
    assert_eq!(status(&h, &alice).await, StatusCode::UNAUTHORIZED);

    // The wrong token: exit 1, saying so (and never printing either token).
    let addr = base.trim_start_matches("http://");
    let wrong = format!(
        "admin_listen = \"{addr}\"\nadmin_token_file = \"{}\"",
        token_file("another-token-entirely-0123456789").display()
    );
    let (code, _, err) = cli_async(&["list", "--sub", "alice"], wrong).await.unwrap();
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("refused the token (401)"), "{err}");
    assert!(
        !err.contains(TOKEN) && !err.contains("another-token"),
        "{err}"
    );
}

#[test]
fn the_sessions_command_says_when_the_admin_api_is_off_or_unreachable() {
    let (code, _, err) = cli("", &["list", "--sub", "alice"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("the admin API is off"), "{err}");
    let nobody = format!(
        "admin_listen = \"{}\"\nadmin_token_file = \"{}\"",
        free_addr(),
        token_file(TOKEN).display()
    );
    let (code, _, err) = cli(&nobody, &["revoke", "--sub", "alice"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cannot reach the admin API"), "{err}");
    let (code, _, err) = cli(&nobody, &["revoke"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, _, err) = cli(&nobody, &["revoke", "--sub", "a", "--sid", "b"]);
    assert_eq!(code, Some(2), "{err}");
}
