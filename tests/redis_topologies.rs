//! Gateway replicas on Redis Sentinel and on Redis Cluster, with real servers started by the
//! tests on loopback: a master killed under light load (Sentinel), a node killed (Cluster),
//! and the shared-store promises (one refresh per session, sign-out and back-channel logout
//! everywhere within 2 s) on every node.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use devidp::idp::DevIdp;
use reqwest::{Client, Response, StatusCode, header};
use support::redis::{ClusterGroup, SentinelGroup, wait_for};
use support::{CLIENT_ID, Harness, eventually, metric, start_idp};

fn list(urls: &[String]) -> String {
    let quoted: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

fn sentinel_config(group: &SentinelGroup) -> String {
    format!(
        r#"
        [session]
        store = "redis"
        redis_sentinels = {}
        redis_sentinel_master = "{}"
        redis_key_prefix = "ag:"
        "#,
        list(&group.sentinel_urls()),
        SentinelGroup::NAME
    )
}

fn cluster_config(cluster: &ClusterGroup) -> String {
    format!(
        r#"
        [session]
        store = "redis"
        redis_cluster_nodes = {}
        redis_key_prefix = "ag:"
        "#,
        list(&cluster.urls())
    )
}

async fn replica(config: &str, idp: &Arc<DevIdp>) -> Harness {
    Harness::builder()
        .idp(idp.clone())
        .config(config)
        .start()
        .await
}

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

async fn status(h: &Harness, cookie: &str) -> StatusCode {
    get(h, cookie, "/hello").await.status()
}

/// A back-channel logout token for every session of `sub`.
fn logout_by_sub(idp: &DevIdp, sub: &str) -> String {
    let now = authgate::session::unix_now();
    idp.sign_jwt(&serde_json::json!({
        "iss": idp.issuer(),
        "aud": CLIENT_ID,
        "iat": now,
        "exp": now + 120,
        "jti": format!("jti-sub-{sub}-{now}"),
        "events": { "http://schemas.openid.net/event/backchannel-logout": {} },
        "sub": sub,
    }))
}

/// Sentinel: sessions on two replicas, the master `kill -9`ed under light load. While no
/// master is known requests are 503 with `Retry-After`; after the promotion every session
/// works on both replicas (none lost, no logout), and the refresh each session needs is
/// still one token request across the failover.
#[tokio::test]
async fn sentinel_failover_keeps_every_session() {
    let mut group = SentinelGroup::start().await;
    let idp = start_idp().await;
    let config = sentinel_config(&group);
    let a = replica(&config, &idp).await;
    let b = replica(&config, &idp).await;
    // Tokens that need a refresh on their next use (< refresh_before_expiry).
    idp.controls().set_access_ttl(Duration::from_secs(5));
    let mut cookies = Vec::new();
    for i in 0..6 {
        let h = if i % 2 == 0 { &a } else { &b };
        cookies.push(h.login(&h.client(), &format!("user{i}")).await);
    }
    idp.controls().set_access_ttl(Duration::from_secs(300));
    let old_master = group.master_port().await.unwrap();
    assert_eq!(old_master, group.master.port);

    let killed = Instant::now();
    group.master.kill(); // SIGKILL
    // Light load: every session on both replicas, round after round, until every request
    // of a round succeeds after the promotion.
    let timeline: Arc<Mutex<Vec<(Duration, StatusCode)>>> = Arc::default();
    let mut clean_rounds = 0;
    while clean_rounds < 3 {
        assert!(killed.elapsed() < Duration::from_secs(40), "no promotion");
        let mut all_ok = true;
        let round = cookies
            .iter()
            .flat_map(|c| [(&a, c), (&b, c)])
            .map(|(h, c)| {
                let timeline = timeline.clone();
                async move {
                    let r = get(h, c, "/hello").await;
                    let code = r.status();
                    if code == StatusCode::SERVICE_UNAVAILABLE {
                        assert!(r.headers().contains_key(header::RETRY_AFTER), "Retry-After");
                    }
                    timeline.lock().unwrap().push((killed.elapsed(), code));
                    code
                }
            });
        for code in futures_util::future::join_all(round).await {
            assert!(
                code == StatusCode::OK || code == StatusCode::SERVICE_UNAVAILABLE,
                "only 200 or 503 across a failover, got {code}: {:?}",
                timeline.lock().unwrap()
            );
            all_ok &= code == StatusCode::OK;
        }
        clean_rounds = if all_ok { clean_rounds + 1 } else { 0 };
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let new_master = group.master_port().await.unwrap();
    assert_eq!(new_master, group.replica.port, "the replica was promoted");
    let timeline = timeline.lock().unwrap().clone();
    let unavailable: Vec<Duration> = (timeline.iter())
        .filter(|(_, c)| *c == StatusCode::SERVICE_UNAVAILABLE)
        .map(|(t, _)| *t)
        .collect();
    let first_ok_after = (timeline.iter())
        .filter(|(t, c)| *c == StatusCode::OK && unavailable.last().is_some_and(|l| t > l))
        .map(|(t, _)| *t)
        .min();
    eprintln!(
        "sentinel failover timeline: {} requests, {} answered 503, first 503 at {:?}, last 503 at {:?}, \
         first 200 after it at {:?}, sessions lost: 0",
        timeline.len(),
        unavailable.len(),
        unavailable.first(),
        unavailable.last(),
        first_ok_after
    );
    // Every session on both replicas (the rounds above checked it three times).
    for cookie in &cookies {
        assert_eq!(status(&a, cookie).await, StatusCode::OK);
        assert_eq!(status(&b, cookie).await, StatusCode::OK);
    }
    assert_eq!(
        idp.controls().refresh_calls(),
        cookies.len(),
        "one refresh per session across the failover"
    );
    assert_eq!(idp.controls().revoked_tokens().len(), 0);
    assert_eq!(idp.controls().code_calls(), cookies.len(), "no new login");
    let metrics = a.metrics().await;
    assert_eq!(
        metric(&metrics, "authgate_store_failovers_total"),
        Some(1.0)
    );
    assert!(
        metrics.contains("authgate_store_info{topology=\"sentinel\"} 1"),
        "{metrics}"
    );
}

/// Cluster: two replicas, sessions spread over three masters. One refresh per session
/// cluster-wide; sign-out and back-channel logout by `sub` reach sessions on every node, on
/// both replicas, within 2 s; a master killed makes only its slots' sessions 503 until it
/// returns (with its data: AOF), the others go on.
#[tokio::test]
async fn cluster_sessions_refresh_logout_and_a_node_down() {
    let mut cluster = ClusterGroup::start().await;
    let idp = start_idp().await;
    let config = cluster_config(&cluster);
    let a = replica(&config, &idp).await;
    let b = replica(&config, &idp).await;
    idp.controls().set_access_ttl(Duration::from_secs(5));
    let mut sessions = Vec::new();
    for i in 0..12 {
        let h = if i % 2 == 0 { &a } else { &b };
        let user = if i < 4 {
            "alice".to_owned()
        } else {
            format!("user{i}")
        };
        sessions.push((user.clone(), h.login(&h.client(), &user).await));
    }
    idp.controls().set_access_ttl(Duration::from_secs(300));
    // Records per node: spread over the slots.
    let mut per_node = Vec::new();
    for node in &cluster.nodes {
        let mut conn = node.conn().await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("ag:{*}s:*")
            .query_async(&mut conn)
            .await
            .unwrap();
        per_node.push(keys.len());
    }
    assert_eq!(
        per_node.iter().sum::<usize>(),
        sessions.len(),
        "{per_node:?}"
    );
    assert!(
        per_node.iter().filter(|n| **n > 0).count() >= 2,
        "spread: {per_node:?}"
    );

    // One refresh per session, cluster-wide: every session on both replicas at once.
    let all = sessions.iter().flat_map(|(_, c)| [(&a, c), (&b, c)]);
    let codes = futures_util::future::join_all(all.map(|(h, c)| status(h, c))).await;
    assert!(codes.iter().all(|c| *c == StatusCode::OK), "{codes:?}");
    assert_eq!(idp.controls().refresh_calls(), sessions.len());

    // Back-channel logout by sub on B: alice's 4 sessions (wherever they live) end on both
    // replicas within 2 s; nobody else's.
    let token = logout_by_sub(&idp, "alice");
    assert_eq!(support::post_logout_token(&b, &token).await, StatusCode::OK);
    let done = Instant::now();
    for (user, cookie) in &sessions {
        for h in [&a, &b] {
            if user == "alice" {
                let ended = eventually(Duration::from_secs(2), || async {
                    status(h, cookie).await == StatusCode::UNAUTHORIZED
                })
                .await;
                assert!(ended, "alice still in after {:?}", done.elapsed());
            } else {
                assert_eq!(status(h, cookie).await, StatusCode::OK, "{user}");
            }
        }
    }
    // Sign-out on A ends the session on B within 2 s.
    let (_, cookie) = &sessions[5];
    let out = bare_client()
        .post(a.at("/oauth2/sign_out"))
        .header(header::COOKIE, format!("authgate_session={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::FOUND);
    assert!(
        eventually(Duration::from_secs(2), || async {
            status(&b, cookie).await == StatusCode::UNAUTHORIZED
        })
        .await,
        "sign-out reaches the other replica"
    );

    // The node holding the most remaining sessions goes down.
    let live: Vec<&String> = sessions[4..]
        .iter()
        .filter(|(_, c)| c != cookie)
        .map(|(_, c)| c)
        .collect();
    let mut per_node = Vec::new();
    for node in &cluster.nodes {
        let mut conn = node.conn().await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("ag:{*}s:*")
            .query_async(&mut conn)
            .await
            .unwrap();
        per_node.push(keys.len());
    }
    let down = (0..per_node.len()).max_by_key(|i| per_node[*i]).unwrap();
    assert!(per_node[down] > 0);
    cluster.nodes[down].kill();
    tokio::time::sleep(Duration::from_millis(1200)).await; // past the local read cache
    let mut unavailable = 0;
    for cookie in &live {
        let (on_a, on_b) = (status(&a, cookie).await, status(&b, cookie).await);
        assert_eq!(on_a, on_b);
        assert!(
            on_a == StatusCode::OK || on_a == StatusCode::SERVICE_UNAVAILABLE,
            "{on_a}"
        );
        unavailable += usize::from(on_a == StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(
        unavailable, per_node[down],
        "exactly the sessions on the dead node are 503: {per_node:?}"
    );
    cluster.nodes[down].restart();
    let url = cluster.nodes[down].url();
    wait_for(Duration::from_secs(20), "the node to rejoin", || {
        let url = url.clone();
        async move {
            support::redis::cluster_info(&url)
                .await
                .contains("cluster_state:ok")
        }
    })
    .await;
    for cookie in &live {
        let back = eventually(Duration::from_secs(10), || async {
            status(&a, cookie).await == StatusCode::OK && status(&b, cookie).await == StatusCode::OK
        })
        .await;
        assert!(back, "a session of the node that came back");
    }
    assert_eq!(idp.controls().code_calls(), sessions.len(), "no new login");
    let metrics = a.metrics().await;
    assert!(
        metrics.contains("authgate_store_info{topology=\"cluster\"} 1"),
        "{metrics}"
    );
}

/// The hot path on Sentinel and on Cluster (a valid session, no refresh), as the single-Redis
/// benchmark in `redis_gateway.rs` measures it: req/s, CPU per request, Redis commands per
/// request, with the local cache answering (hit) and emptied before every request (miss).
/// `bench/redis_store.sh` runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: bench/redis_store.sh"]
async fn bench_hot_path_sentinel_and_cluster() {
    let requests: u64 = std::env::var("BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let group = SentinelGroup::start().await;
    let cluster = ClusterGroup::start().await;
    let idp = start_idp().await;
    for (topology, config) in [
        ("sentinel", sentinel_config(&group)),
        ("cluster", cluster_config(&cluster)),
    ] {
        let h = replica(&config, &idp).await;
        let servers: Vec<&support::redis::RedisServer> = if topology == "sentinel" {
            vec![&group.master]
        } else {
            cluster.nodes.iter().collect()
        };
        let cookie = h.login(&h.client(), "bench").await;
        for uncached in [false, true] {
            for i in 0..50 {
                assert_eq!(status(&h, &cookie).await, StatusCode::OK, "warm {i}");
            }
            let mut before = 0;
            for s in &servers {
                before += s.commands().await;
            }
            let mut overhead = 0;
            for s in &servers {
                overhead += s.commands().await;
            }
            let overhead = overhead - before;
            let cpu = process_cpu();
            let started = Instant::now();
            let client = bare_client();
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
            let mut after = 0;
            for s in &servers {
                after += s.commands().await;
            }
            let commands = after - before - 2 * overhead;
            let label = format!(
                "{topology}, cache {}",
                if uncached { "miss" } else { "hit" }
            );
            println!(
                "{label:>20}: {requests} requests in {elapsed:?}: {:.0} req/s, {:.0} µs CPU/request \
                 (whole test process), {:.3} Redis commands/request",
                requests as f64 / elapsed.as_secs_f64(),
                cpu.as_secs_f64() * 1e6 / requests as f64,
                commands as f64 / requests as f64
            );
        }
    }
}

/// User + system CPU of this process (Linux `/proc/self/stat`, clock ticks of 10 ms).
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

/// A failover the gateway does not see fail: forced with `SENTINEL FAILOVER`, the old master
/// lives on, demoted to a replica. The Sentinels' `+switch-master` moves both replicas of the
/// gateway to the new master before any request lands on the demoted one: no 503 at all.
#[tokio::test]
async fn sentinel_forced_failover_switches_on_the_announcement() {
    let group = SentinelGroup::start().await;
    let idp = start_idp().await;
    let config = sentinel_config(&group);
    let a = replica(&config, &idp).await;
    let b = replica(&config, &idp).await;
    let mut cookies = Vec::new();
    for i in 0..4 {
        let h = if i % 2 == 0 { &a } else { &b };
        cookies.push(h.login(&h.client(), &format!("forced{i}")).await);
    }
    for cookie in &cookies {
        assert_eq!(status(&a, cookie).await, StatusCode::OK);
        assert_eq!(status(&b, cookie).await, StatusCode::OK);
    }
    let mut sentinel = support::redis::RedisServer::connect(&group.sentinel_urls()[0]).await;
    let _: () = redis::cmd("SENTINEL")
        .arg("FAILOVER")
        .arg(SentinelGroup::NAME)
        .query_async(&mut sentinel)
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(20),
        "the old master demoted",
        || async {
            support::redis::info(&group.master.url(), "replication")
                .await
                .contains("role:slave")
        },
    )
    .await;
    assert_eq!(group.master_port().await, Some(group.replica.port));
    tokio::time::sleep(Duration::from_millis(1200)).await; // past the local read cache
    for cookie in &cookies {
        assert_eq!(status(&a, cookie).await, StatusCode::OK, "on A");
        assert_eq!(status(&b, cookie).await, StatusCode::OK, "on B");
    }
    for h in [&a, &b] {
        let metrics = h.metrics().await;
        assert_eq!(
            metric(&metrics, "authgate_store_failovers_total"),
            Some(1.0)
        );
    }
}

/// Cluster, the admin API on both replicas: a revoke by `sub` takes alice's records from
/// whichever nodes hold them and revokes exactly their current refresh tokens at the provider
/// (one of them rotated by a refresh); a revoke by `sid` (slot tag + hash) likewise; dead on
/// the other replica within 2 s.
#[tokio::test]
async fn cluster_admin_revoke_revokes_the_current_refresh_tokens() {
    let cluster = ClusterGroup::start().await;
    let idp = start_idp().await;
    let config = cluster_config(&cluster);
    let token = "admin-token-for-the-cluster-test-0123";
    let admin = || {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let file = std::env::temp_dir().join(format!(
            "authgate-cluster-admin-{}-{}",
            std::process::id(),
            addr.port()
        ));
        std::fs::write(&file, token).unwrap();
        let lines = format!(
            "[server]\nadmin_listen = \"{addr}\"\nadmin_token_file = \"{}\"",
            file.display()
        );
        (lines, format!("http://{addr}/admin/sessions/revoke"))
    };
    let ((admin_a, revoke_a), (admin_b, _)) = (admin(), admin());
    let with_admin = |lines: String| {
        let (config, idp) = (config.clone(), idp.clone());
        async move {
            Harness::builder()
                .idp(idp)
                .config(&config)
                .config(&lines)
                .start()
                .await
        }
    };
    let a = with_admin(admin_a).await;
    let b = with_admin(admin_b).await;
    let current = |h: &Harness, cookie: &str| {
        let key = h.gateway.cookies().decode(cookie).unwrap();
        let store = h.gateway.store().clone();
        async move {
            use authgate::session::SessionStore;
            let s = store.load(&key).await.unwrap().unwrap();
            s.tokens.refresh_token.as_deref().unwrap().to_owned()
        }
    };
    let mut alice = Vec::new();
    for i in 0..4 {
        let h = if i % 2 == 0 { &a } else { &b };
        alice.push(h.login(&h.client(), "alice").await);
    }
    let bob = a.login(&a.client(), "bob").await;
    for c in alice.iter().chain([&bob]) {
        assert_eq!(status(&b, c).await, StatusCode::OK);
    }
    // One of alice's sessions refreshes on A; its refresh token rotates.
    let used_up = current(&a, &alice[0]).await;
    a.advance(Duration::from_secs(295));
    assert_eq!(status(&a, &alice[0]).await, StatusCode::OK);
    assert_eq!(idp.controls().refresh_calls(), 1);
    let mut expected = Vec::new();
    for c in &alice {
        expected.push(current(&a, c).await);
    }
    assert!(!expected.contains(&used_up));
    let revoke = |body: serde_json::Value| {
        let url = revoke_a.clone();
        async move {
            let r = bare_client()
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (s, body) = revoke(serde_json::json!({"sub": "alice"})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        body,
        serde_json::json!({"revoked": 4, "revoked_at_provider": 4})
    );
    let mut revoked = idp.controls().revoked_tokens();
    revoked.sort();
    expected.sort();
    assert_eq!(revoked, expected);
    for c in &alice {
        let dead = eventually(Duration::from_secs(2), || async {
            status(&b, c).await == StatusCode::UNAUTHORIZED
        })
        .await;
        assert!(dead, "alive on B");
    }
    // By id: bob's record, named by its slot tag and hash.
    let bob_token = current(&b, &bob).await;
    let key = a.gateway.cookies().decode(&bob).unwrap();
    let name = a.gateway.store().redis().unwrap().session_name(&key);
    let (tag, hash) = name
        .strip_prefix("ag:{")
        .unwrap()
        .split_once("}s:")
        .unwrap();
    let (s, body) = revoke(serde_json::json!({"sid": format!("{tag}{hash}")})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        body,
        serde_json::json!({"revoked": 1, "revoked_at_provider": 1})
    );
    assert_eq!(idp.controls().revoked_tokens().last(), Some(&bob_token));
    assert!(
        eventually(Duration::from_secs(2), || async {
            status(&b, &bob).await == StatusCode::UNAUTHORIZED
        })
        .await
    );
}
