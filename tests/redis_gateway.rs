//! Several gateway replicas sharing one Redis store (a real `redis-server` started by the
//! test) behind one provider: sessions and pending logins work on any replica, sign-out
//! reaches every replica within 2 s, one refresh per session cluster-wide (also when the
//! replica doing it dies mid-call), Redis outages answer 503 and lose nothing, and nothing
//! readable sits in Redis.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use authgate::session::SessionStore;
use devidp::idp::{DevIdp, TokenFault};
use reqwest::{Client, Response, StatusCode, header};
use support::redis::RedisServer;
use support::{Echo, Harness, eventually, location, metric, set_cookie, start_idp};

fn redis_config(redis: &RedisServer) -> String {
    format!(
        r#"
        [session]
        store = "redis"
        redis_url = "{}"
        redis_key_prefix = "ag:"
        [[route]]
        path = "/public/"
        policy = "public"
        "#,
        redis.url()
    )
}

async fn replica(redis: &RedisServer, idp: &Arc<DevIdp>) -> Harness {
    Harness::builder()
        .idp(idp.clone())
        .config(&redis_config(redis))
        .start()
        .await
}

/// A client without a cookie jar: the session cookie is sent explicitly, so which replica
/// gets which cookie is up to the test (a jar ignores ports).
fn bare_client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn get(h: &Harness, cookie: &str, path: &str) -> Response {
    bare_client()
        .get(h.at(path))
        .header(header::ACCEPT, "application/json")
        .header(header::COOKIE, format!("authgate_session={cookie}"))
        .send()
        .await
        .unwrap()
}

async fn echo(h: &Harness, cookie: &str, path: &str) -> Echo {
    let response = get(h, cookie, path).await;
    let status = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "GET {path} on {}: {body}", h.url);
    Echo(serde_json::from_str(&body).unwrap())
}

fn store_metrics(h: &Harness) -> &authgate::metrics::StoreMetrics {
    h.gateway.store().metrics().expect("a Redis store")
}

#[tokio::test]
async fn session_is_shared_and_sign_out_reaches_every_replica() {
    let redis = RedisServer::start();
    let idp = start_idp().await;
    let mut a = replica(&redis, &idp).await;
    let b = replica(&redis, &idp).await;
    let cookie = a.login(&a.client(), "alice").await;
    let on_a = echo(&a, &cookie, "/hello").await;
    let on_b = echo(&b, &cookie, "/hello").await;
    assert_eq!(on_b.header("x-forwarded-user").as_deref(), Some("alice"));
    assert_eq!(on_b.bearer(), on_a.bearer());
    assert!(on_b.bearer().is_some());

    // A replica restarted with the same configuration serves the session, no new login.
    a.stop().await;
    drop(a);
    let a = replica(&redis, &idp).await;
    assert_eq!(echo(&a, &cookie, "/hello").await.bearer(), on_a.bearer());
    assert_eq!(idp.controls().refresh_calls(), 0);

    // Sign out on B while A has the session in its local cache: dead on A within 2 s.
    let out = bare_client()
        .post(b.at("/oauth2/sign_out"))
        .header(header::COOKIE, format!("authgate_session={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::FOUND);
    assert_eq!(
        get(&b, &cookie, "/hello").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let signed_out = Instant::now();
    let dead_on_a = eventually(Duration::from_secs(2), || async {
        get(&a, &cookie, "/hello").await.status() == StatusCode::UNAUTHORIZED
    })
    .await;
    assert!(
        dead_on_a,
        "still alive on A {:?} after sign-out",
        signed_out.elapsed()
    );
}

/// The provider redirects back to whichever replica the load balancer picks: a login
/// started on A completes on B, once (the state is single-use cluster-wide).
#[tokio::test]
async fn pending_login_started_on_one_replica_completes_on_another() {
    let redis = RedisServer::start();
    let idp = start_idp().await;
    let a = replica(&redis, &idp).await;
    // Replicas share `public_url` (the redirect_uri must match): B claims A's.
    let b = Harness::builder()
        .idp(idp.clone())
        .config(&redis_config(&redis))
        .config(&format!("[server]\npublic_url = \"{}\"", a.url))
        .start()
        .await;
    idp.controls().set_auto_login(Some("dave".into()));
    let client = a.client(); // its jar carries the login binding cookie to B (same host)
    let start = client
        .get(a.at("/oauth2/start?rd=%2Flanding"))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), StatusCode::FOUND);
    let back = client.get(location(&start)).send().await.unwrap();
    let callback = location(&back);
    let on_b = callback.replacen(&a.url, &b.url, 1);
    assert_ne!(on_b, callback);
    let done = client.get(&on_b).send().await.unwrap();
    assert_eq!(done.status(), StatusCode::FOUND, "{:?}", done.text().await);
    assert_eq!(location(&done), "/landing");
    let cookie = set_cookie(&done, "authgate_session").expect("session cookie");
    let replay = client.get(&callback).send().await.unwrap();
    assert_eq!(
        replay.status(),
        StatusCode::BAD_REQUEST,
        "state reused on A"
    );
    let seen = echo(&a, &cookie, "/x").await;
    assert_eq!(seen.header("x-forwarded-user").as_deref(), Some("dave"));
}

/// 50 concurrent requests, spread over two replicas, on a session whose token must be
/// refreshed: one call to the token endpoint, and every request gets the new token.
#[tokio::test]
async fn one_refresh_across_replicas() {
    let redis = RedisServer::start();
    let idp = start_idp().await;
    let a = replica(&redis, &idp).await;
    let b = replica(&redis, &idp).await;
    idp.controls().set_access_ttl(Duration::from_secs(5)); // < refresh_before_expiry (10s)
    let cookie = a.login(&a.client(), "erin").await;
    idp.controls().set_access_ttl(Duration::from_secs(300));
    // A slow provider: the flights of both replicas overlap.
    idp.controls()
        .push_token_fault(TokenFault::Delay(Duration::from_millis(1500)));
    let requests = (0..50).map(|i| {
        let h = if i % 2 == 0 { &a } else { &b };
        let cookie = cookie.clone();
        async move { echo(h, &cookie, &format!("/r/{i}")).await.bearer().unwrap() }
    });
    let bearers = futures_util::future::join_all(requests).await;
    assert_eq!(
        idp.controls().refresh_calls(),
        1,
        "one refresh cluster-wide"
    );
    let first = &bearers[0];
    assert!(
        bearers.iter().all(|b| b == first),
        "every request: the new token"
    );
    let waits = store_metrics(&a).lease_waits() + store_metrics(&b).lease_waits();
    assert!(waits >= 1, "the other replica waited for the lease");
    assert_eq!(idp.controls().revoked_tokens().len(), 0);
}

/// An ended session stays ended on the shared store: a sign-out on another replica, or a back-channel
/// logout on the refreshing replica itself, that lands while the provider is slow to answer
/// a refresh stays final. The flight's compare-and-set finds the record gone and writes
/// nothing: no replica serves the session again, and Redis holds no record of it.
#[tokio::test]
async fn a_logout_during_a_refresh_stays_final_on_every_replica() {
    let redis = RedisServer::start();
    let idp = start_idp().await;
    let a = replica(&redis, &idp).await;
    let b = replica(&redis, &idp).await;
    for sign_out_on_b in [true, false] {
        let what = if sign_out_on_b {
            "sign-out on B"
        } else {
            "back-channel logout on A"
        };
        idp.controls().set_access_ttl(Duration::from_secs(5)); // < refresh_before_expiry
        let cookie = a.login(&a.client(), "grace").await;
        let sid = idp.controls().last_issued_sid().unwrap();
        // The refreshed token lasts: a session brought back would not refresh again.
        idp.controls().set_access_ttl(Duration::from_secs(300));
        idp.controls()
            .push_token_fault(TokenFault::SlowAnswer(Duration::from_secs(3)));
        let calls = idp.controls().refresh_calls();
        let in_flight = tokio::spawn({
            let (url, cookie) = (a.at("/hello"), cookie.clone());
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
        assert!(
            eventually(Duration::from_secs(5), || async {
                idp.controls().refresh_calls() == calls + 1
            })
            .await,
            "{what}: A is refreshing"
        );
        if sign_out_on_b {
            let out = bare_client()
                .post(b.at("/oauth2/sign_out"))
                .header(header::COOKIE, format!("authgate_session={cookie}"))
                .send()
                .await
                .unwrap();
            assert_eq!(out.status(), StatusCode::FOUND, "{what}");
        } else {
            let token = support::logout_token(&idp, &sid);
            assert_eq!(
                support::post_logout_token(&a, &token).await,
                StatusCode::OK,
                "{what}"
            );
        }
        let status = tokio::time::timeout(Duration::from_secs(10), in_flight)
            .await
            .expect("the request in flight is answered")
            .unwrap();
        // Past the local read caches (1 s, by each replica's clock): what each replica serves
        // now comes from Redis.
        support::advance_all(&[&a, &b], Duration::from_millis(1200));
        for (name, h) in [("A", &a), ("B", &b)] {
            for _ in 0..2 {
                assert_eq!(
                    get(h, &cookie, "/hello").await.status(),
                    StatusCode::UNAUTHORIZED,
                    "{what}: the refresh brought the session back on {name}"
                );
            }
        }
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{what}: request in flight"
        );
        let records: Vec<String> = (redis.dump().await.into_iter())
            .map(|(name, _)| name)
            .filter(|name| name.starts_with("ag:s:"))
            .collect();
        assert!(records.is_empty(), "{what}: records left: {records:?}");
    }
}

/// On the shared store a logout token used on one replica is a replay
/// on every other one.
#[tokio::test]
async fn a_logout_token_is_used_once_cluster_wide() {
    let redis = RedisServer::start();
    let idp = start_idp().await;
    let a = replica(&redis, &idp).await;
    let b = replica(&redis, &idp).await;
    a.login(&a.client(), "ivan").await;
    let sid = idp.controls().last_issued_sid().unwrap();
    let token = support::logout_token(&idp, &sid);
    assert_eq!(support::post_logout_token(&a, &token).await, StatusCode::OK);
    assert_eq!(
        support::post_logout_token(&b, &token).await,
        StatusCode::BAD_REQUEST,
        "replayed on another replica"
    );
    assert_eq!(
        support::post_logout_token(&a, &token).await,
        StatusCode::BAD_REQUEST,
        "replayed on the same replica"
    );
    let fresh = support::logout_token(&idp, &sid);
    assert_eq!(support::post_logout_token(&b, &fresh).await, StatusCode::OK);
    // Remembered as a hash of issuer and jti, with an expiry, under the prefix.
    let mut conn = redis.conn().await;
    let once: Vec<String> = redis::cmd("KEYS")
        .arg("ag:once:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(once.len(), 2, "{once:?}");
    for name in &once {
        assert!(!name.contains("jti"), "{name}");
        let ttl: i64 = redis::cmd("PTTL")
            .arg(name)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 600_000 && ttl <= 720_000, "{name}: {ttl}");
    }
}

/// The replica holding the lease dies while the provider has not answered: the lease is no
/// longer renewed, expires, and another replica refreshes; the user stays logged in.
#[tokio::test]
async fn lease_holder_dying_mid_refresh_hands_over() {
    let redis = RedisServer::start();
    let idp = start_idp().await;
    // A runs on its own runtime, so that it can die with every task it has (its refresh
    // flight and the lease renewal included), as a killed process would.
    let (runtime_a, a) = {
        let (idp, config) = (idp.clone(), redis_config(&redis));
        tokio::task::spawn_blocking(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let h = rt.block_on(Harness::builder().idp(idp).config(&config).start());
            (rt, h)
        })
        .await
        .unwrap()
    };
    let b = replica(&redis, &idp).await;
    idp.controls().set_access_ttl(Duration::from_secs(5));
    let cookie = a.login(&a.client(), "frank").await;
    idp.controls().set_access_ttl(Duration::from_secs(300));
    idp.controls().push_token_fault(TokenFault::Hang);
    let on_a = tokio::spawn({
        let cookie = cookie.clone();
        let url = a.at("/hello");
        async move {
            bare_client()
                .get(url)
                .header(header::ACCEPT, "application/json")
                .header(header::COOKIE, format!("authgate_session={cookie}"))
                .send()
                .await
        }
    });
    assert!(
        eventually(Duration::from_secs(10), || async {
            idp.controls().refresh_calls() == 1
        })
        .await,
        "A is refreshing"
    );
    runtime_a.shutdown_background(); // A dies mid-call
    let orphan = on_a.await.unwrap();
    assert!(orphan.is_err(), "A's request died with A: {orphan:?}");
    let started = Instant::now();
    let seen = echo(&b, &cookie, "/hello").await;
    assert_eq!(seen.header("x-forwarded-user").as_deref(), Some("frank"));
    assert_eq!(idp.controls().refresh_calls(), 2, "B refreshed once");
    assert_eq!(store_metrics(&b).lease_waits(), 1, "B waited for A's lease");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "B took over within lease + refresh timeout: {:?}",
        started.elapsed()
    );
    drop(a);
}

/// Redis killed: authenticated requests answer 503 with `Retry-After` (never a logout),
/// public routes still work, and the replica stays ready (`/readyz` 200, its body and
/// `authgate_store_up` say the store is down): an outage must not empty the Service of
/// endpoints. Redis back: the same session works again.
#[tokio::test]
async fn redis_outage_is_503_then_sessions_survive() {
    let mut redis = RedisServer::start_persistent();
    let idp = start_idp().await;
    let h = replica(&redis, &idp).await;
    let cookie = h.login(&h.client(), "grace").await;
    let before = echo(&h, &cookie, "/hello").await.bearer();
    redis.kill();
    let unavailable = eventually(Duration::from_secs(10), || async {
        get(&h, &cookie, "/hello").await.status() == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    assert!(unavailable, "503 while Redis is down");
    let r = get(&h, &cookie, "/hello").await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "still down");
    assert!(
        r.headers().contains_key(header::RETRY_AFTER),
        "Retry-After on the 503"
    );
    let ready = bare_client().get(h.at("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK, "still ready");
    let body = ready.text().await.unwrap();
    assert!(body.contains("session store answering=false"), "{body}");
    let public = get(&h, &cookie, "/public/page").await;
    assert_eq!(
        public.status(),
        StatusCode::OK,
        "public routes need no store"
    );
    let metrics = h.metrics().await;
    assert_eq!(metric(&metrics, "authgate_store_up"), Some(0.0));
    assert!(
        !metrics.contains("authgate_store_errors_total{kind=\"error\"} 0")
            || !metrics.contains("authgate_store_errors_total{kind=\"timeout\"} 0"),
        "errors counted"
    );
    redis.restart();
    let back = eventually(Duration::from_secs(15), || async {
        let r = bare_client().get(h.at("/readyz")).send().await.unwrap();
        r.status() == StatusCode::OK
            && (r.text().await.unwrap()).contains("session store answering=true")
    })
    .await;
    assert!(back, "the store answers again once Redis is back");
    assert_eq!(metric(&h.metrics().await, "authgate_store_up"), Some(1.0));
    assert_eq!(echo(&h, &cookie, "/hello").await.bearer(), before);
    assert_eq!(idp.controls().code_calls(), 1, "no new login");
}

/// Redis answering too slowly (`CLIENT PAUSE`): 503 within the timeout, not a logout.
#[tokio::test]
async fn slow_redis_is_503_not_logout() {
    let redis = RedisServer::start();
    let idp = start_idp().await;
    let h = replica(&redis, &idp).await;
    let cookie = h.login(&h.client(), "heidi").await;
    echo(&h, &cookie, "/hello").await;
    let mut conn = redis.conn().await;
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(2500)
        .arg("ALL")
        .query_async(&mut conn)
        .await
        .unwrap();
    h.gateway.store().redis().unwrap().clear_local_cache();
    let started = Instant::now();
    let r = get(&h, &cookie, "/hello").await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().contains_key(header::RETRY_AFTER));
    assert!(
        started.elapsed() < Duration::from_millis(2400),
        "bounded by redis_timeout"
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            get(&h, &cookie, "/hello").await.status() == StatusCode::OK
        })
        .await,
        "the session is intact after the pause"
    );
}

/// Everything in Redis, at every step of a session's life: no access, refresh or ID token,
/// no user name, and no key that contains the session id.
#[tokio::test]
async fn redis_holds_no_token_and_no_session_id() {
    let redis = RedisServer::start();
    let idp = start_idp().await;
    let h = replica(&redis, &idp).await;
    idp.controls().set_access_ttl(Duration::from_secs(5)); // every request refreshes
    let cookie = h.login(&h.client(), "ivan").await;
    let mut snapshots = vec![redis.dump().await];
    let mut secrets = Vec::new();
    for i in 0..2 {
        let seen = echo(&h, &cookie, &format!("/step/{i}")).await;
        secrets.push(seen.bearer().unwrap());
        let form = idp.controls().last_token_request_form();
        secrets.push(form["refresh_token"][0].clone());
        snapshots.push(redis.dump().await);
    }
    assert_eq!(idp.controls().refresh_calls(), 2);
    let id_b64 = cookie.split('.').next().unwrap().to_owned();
    let key = h.gateway.cookies().decode(&cookie).unwrap();
    let id_hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let mut names = 0;
    for snapshot in &snapshots {
        for (name, value) in snapshot {
            names += 1;
            assert!(name.starts_with("ag:"), "{name}");
            assert!(!name.contains(&id_b64) && !name.contains(&id_hex), "{name}");
            assert!(!name.contains("ivan"), "{name}");
            let text = String::from_utf8_lossy(value);
            for needle in secrets.iter().map(String::as_str).chain(["ivan"]) {
                assert!(!text.contains(needle), "{needle} readable in {name}");
            }
        }
    }
    assert!(names >= 9, "the snapshots hold the records: {names}");
    assert!(h.gateway.store().load(&key).await.unwrap().is_some());
}

/// Not CI: requests per second and CPU per request on the hot path (a valid session, no
/// refresh), Redis store against memory store, and Redis commands per request.
/// `bench/redis_store.sh` runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: bench/redis_store.sh"]
async fn bench_hot_path_redis_vs_memory() {
    let requests: u64 = std::env::var("BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let redis = RedisServer::start();
    let idp = start_idp().await;
    // "redis, cache miss": the local 1 s cache emptied before every request, the worst case
    // (each request a session this replica has not seen within the last second).
    for store in ["memory", "redis", "redis, cache miss"] {
        let h = match store {
            "memory" => Harness::builder().idp(idp.clone()).start().await,
            _ => replica(&redis, &idp).await,
        };
        let uncached = store.ends_with("miss");
        let cookie = h.login(&h.client(), "bench").await;
        let client = bare_client();
        for i in 0..50 {
            echo(&h, &cookie, &format!("/warm/{i}")).await;
        }
        // Opening the inspection connection costs commands too: measure that, subtract it.
        let overhead = redis.commands().await;
        let commands = redis.commands().await;
        let overhead = commands - overhead;
        let cpu = process_cpu();
        let started = Instant::now();
        for i in 0..requests {
            if uncached {
                h.gateway.store().redis().unwrap().clear_local_cache();
            }
            let r = client
                .get(h.at(&format!("/b/{i}")))
                .header(header::COOKIE, format!("authgate_session={cookie}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.bytes().await.unwrap();
        }
        let elapsed = started.elapsed();
        let cpu = process_cpu() - cpu;
        let round_trips = redis.commands().await - commands - overhead;
        println!(
            "{store:>17}: {requests} requests in {elapsed:?}: {:.0} req/s, {:.0} µs CPU/request \
             (whole test process), {:.3} Redis commands/request (a script's GET and PEXPIRE counted too: a cache miss is one round trip)",
            requests as f64 / elapsed.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / requests as f64,
            round_trips as f64 / requests as f64
        );
    }
}

/// User + system CPU of this process (Linux `/proc/self/stat`, clock ticks of 10 ms).
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

/// Sign-out while Redis is down: 503 with `Retry-After`, the cookie is not cleared, and the
/// session is still there once Redis is back (the user is never told "signed out" while the
/// session lives on); a sign-out then ends it.
#[tokio::test]
async fn sign_out_while_redis_is_down_is_503_not_a_false_success() {
    let mut redis = RedisServer::start_persistent();
    let idp = start_idp().await;
    let h = replica(&redis, &idp).await;
    let cookie = h.login(&h.client(), "heidi").await;
    echo(&h, &cookie, "/hello").await;
    redis.kill();
    // Past the 1 s local read cache (by the gateway's clock), so the store itself is asked.
    h.advance(Duration::from_millis(1200));
    let out = bare_client()
        .get(h.at("/oauth2/sign_out"))
        .header(header::COOKIE, format!("authgate_session={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(out.headers().contains_key(header::RETRY_AFTER));
    assert!(
        out.headers().get(header::SET_COOKIE).is_none(),
        "the cookie is kept: the session was not ended"
    );
    redis.restart();
    let back = eventually(Duration::from_secs(15), || async {
        get(&h, &cookie, "/hello").await.status() == StatusCode::OK
    })
    .await;
    assert!(back, "the session survived the failed sign-out");
    let out = bare_client()
        .get(h.at("/oauth2/sign_out"))
        .header(header::COOKIE, format!("authgate_session={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::FOUND);
    assert_eq!(
        get(&h, &cookie, "/hello").await.status(),
        StatusCode::UNAUTHORIZED
    );
}
