//! Refresh storm benchmark: many sessions whose tokens all need a refresh at the same moment,
//! each hit by several concurrent requests. Asserts one token-endpoint call per session
//! (single flight holds under load) and that every request of a session carries the same
//! new token; prints wall time, peak RSS and request latencies of the storm phase.
//!
//! Ignored by default; run it in release:
//!
//! ```text
//! STORM_SESSIONS=10000 STORM_FANOUT=4 \
//!   cargo test --release --test refresh_storm -- --ignored --nocapture
//! ```
//!
//! Knobs (environment): `STORM_SESSIONS` (default 10000), `STORM_FANOUT` concurrent requests
//! per session (default 4), `STORM_CONCURRENCY` sessions stormed at once by the client
//! (default 500: 500 x 4 client connections plus the gateway's own stay under the usual
//! 20k file-descriptor limit), `STORM_LOGIN_CONCURRENCY` (default 64), `STORM_ID_TOKEN=1` to
//! have the provider sign an ID token on every refresh (off by default: the in-process
//! provider's RSA signing would be measured instead of the gateway).
//!
//! Sessions are created through the real login flow (start, provider auto-login, callback),
//! which is not measured. All of them are logged in with 5 s access tokens, inside the
//! harness's 10 s `refresh_before_expiry`, so every one needs a refresh when the storm
//! starts; the provider then issues 1 h tokens, so each session refreshes exactly once.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::future::join_all;
use reqwest::{Client, StatusCode, header};
use serde_json::Value;
use support::{Harness, location};
use tokio::sync::Semaphore;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
        })
        .unwrap_or(default)
}

/// `VmHWM` / `VmRSS` of this process, in KiB.
fn proc_status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// `name=value` of every cookie a response sets.
fn cookie_pairs(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_owned())
        .collect()
}

/// The real code flow with a cookie-less shared client: the login-state cookie of
/// `/oauth2/start` is carried to the callback by hand. Returns the session cookie pair.
async fn login(h: &Harness, client: &Client) -> String {
    let start = client
        .get(h.at("/oauth2/start?rd=%2F"))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), StatusCode::FOUND, "start");
    let state_cookies = cookie_pairs(&start).join("; ");
    let authorize = client.get(location(&start)).send().await.unwrap();
    assert_eq!(authorize.status(), StatusCode::FOUND, "authorize");
    let callback = client
        .get(location(&authorize))
        .header(header::COOKIE, state_cookies)
        .send()
        .await
        .unwrap();
    assert_eq!(callback.status(), StatusCode::FOUND, "callback");
    cookie_pairs(&callback)
        .into_iter()
        .find(|c| c.starts_with("authgate_session=") && c.len() > "authgate_session=".len())
        .expect("session cookie")
}

/// One storm request: (status, bearer the upstream saw, latency).
async fn hit(client: &Client, url: String, cookie: &str) -> (StatusCode, Option<String>, Duration) {
    let started = Instant::now();
    let response = client
        .get(url)
        .header(header::ACCEPT, "application/json")
        .header(header::COOKIE, cookie)
        .send()
        .await;
    let Ok(response) = response else {
        return (StatusCode::IM_A_TEAPOT, None, started.elapsed()); // transport error
    };
    let status = response.status();
    let body: Option<Value> = response.json().await.ok();
    let elapsed = started.elapsed();
    let bearer = body
        .as_ref()
        .and_then(|b| b["headers"]["authorization"][0].as_str())
        .map(str::to_owned);
    (status, bearer, elapsed)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run explicitly (see the file's header)"]
async fn refresh_storm() {
    let sessions = env_usize("STORM_SESSIONS", 10_000);
    let fanout = env_usize("STORM_FANOUT", 4).max(1);
    let concurrency = env_usize("STORM_CONCURRENCY", 500).max(1);
    let login_concurrency = env_usize("STORM_LOGIN_CONCURRENCY", 64).max(1);
    let id_token = std::env::var("STORM_ID_TOKEN").is_ok_and(|v| v == "1");

    let h = Harness::builder()
        .config(
            r#"
            [upstream]
            timeout = "120s"
            [oidc]
            timeout = "120s"
            "#,
        )
        .idp_options(|o| o.access_ttl = Duration::from_secs(5))
        .start()
        .await;
    let controls = h.idp.controls();
    controls.set_auto_login(Some("storm".into()));
    let client = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(usize::MAX)
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap();

    // Log in (not measured).
    let login_started = Instant::now();
    let cookies: Vec<String> = futures_util::stream::iter(0..sessions)
        .map(|_| login(&h, &client))
        .buffer_unordered(login_concurrency)
        .collect()
        .await;
    assert_eq!(cookies.len(), sessions);
    println!(
        "logged in {sessions} sessions in {:.1?} (not measured)",
        login_started.elapsed()
    );
    assert_eq!(controls.refresh_calls(), 0, "no refresh during logins");

    // The storm: every session needs a refresh; the new tokens last an hour.
    controls.set_access_ttl(Duration::from_secs(3600));
    controls.set_issue_id_token_on_refresh(id_token);
    let rss_before_kib = proc_status_kib("VmRSS");
    let gate = Arc::new(Semaphore::new(concurrency));
    let started = Instant::now();
    let tasks = cookies.into_iter().enumerate().map(|(i, cookie)| {
        let client = client.clone();
        let gate = gate.clone();
        let url = h.at(&format!("/storm/{i}"));
        tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.unwrap();
            let requests = (0..fanout).map(|_| hit(&client, url.clone(), &cookie));
            join_all(requests).await
        })
    });
    let per_session: Vec<_> = join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let wall = started.elapsed();

    let mut latencies = Vec::with_capacity(sessions * fanout);
    let mut failed = 0usize;
    let mut split_sessions = 0usize;
    for results in &per_session {
        let first = results[0].1.clone();
        if results.iter().any(|(_, bearer, _)| *bearer != first) {
            split_sessions += 1;
        }
        for (status, _, latency) in results {
            if *status != StatusCode::OK {
                failed += 1;
            }
            latencies.push(*latency);
        }
    }
    latencies.sort();
    let metrics = h.metrics().await;
    let coalesced = metric(&metrics, "authgate_refresh_coalesced_total");

    println!("--- refresh storm ---");
    println!(
        "sessions {sessions}, fanout {fanout}, client concurrency {concurrency} sessions, \
         ID token on refresh: {id_token}"
    );
    println!("requests {}, failed {failed}", latencies.len());
    println!(
        "token-endpoint refresh calls {} (sessions {sessions}), coalesced requests {coalesced}",
        controls.refresh_calls()
    );
    println!(
        "wall {wall:.2?}, {:.0} requests/s, {:.0} refreshes/s",
        latencies.len() as f64 / wall.as_secs_f64(),
        sessions as f64 / wall.as_secs_f64()
    );
    println!(
        "latency of storm requests (each waited on its session's refresh): p50 {:.1?}, \
         p99 {:.1?}, max {:.1?}",
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        percentile(&latencies, 100.0)
    );
    println!(
        "peak RSS (VmHWM, whole test process: gateway + provider + client) {} MiB; \
         VmRSS before storm {} MiB, after {} MiB",
        proc_status_kib("VmHWM") / 1024,
        rss_before_kib / 1024,
        proc_status_kib("VmRSS") / 1024
    );

    assert_eq!(failed, 0, "every storm request succeeds");
    assert_eq!(
        split_sessions, 0,
        "all requests of a session carry one token"
    );
    assert_eq!(
        controls.refresh_calls(),
        sessions,
        "exactly one token-endpoint call per session"
    );
}

fn metric(text: &str, series: &str) -> f64 {
    support::metric(text, series).unwrap_or(0.0)
}
