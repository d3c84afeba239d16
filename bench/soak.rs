//! The soak (issue 14): the release gateway for 10 minutes at 80 % of the saturation
//! throughput measured at the start, with a realistic mix, sampled every 10 s.
//!
//! ```text
//! soak --authgate target/release/authgate --dir OUT [--seconds 600] [--sessions 1000]
//!      [--access-ttl 45] [--connections 64] [--gateway-cpu 0] [--sat-seconds 15]
//!      [--fraction 0.8] [--tunnels 4] [--streams 2] [--churn 2] [--warmup 120]
//! ```
//!
//! The mix: `--sessions` live sessions (each its own user, logged in through the code flow)
//! with `--access-ttl` s access tokens and rotating refresh tokens, so refreshes happen all
//! along; one request in 20 without a session (half browser navigations: 302, half API
//! calls: 401); `--churn` sign-outs per second, each followed by a new login; `--tunnels`
//! WebSocket tunnels held open, a message a second each; `--streams` tasks alternating a
//! streamed upload (5 s) and a streamed download (5 s). The gateway runs pinned to
//! `--gateway-cpu` with one worker thread; this program (provider, upstream, load) is
//! pinned by `bench/soak.sh` to the other core.
//!
//! Prints JSON lines on stdout: `machine`, `saturation`, one `sample` per interval, and the
//! `summary` with the slopes and the verdict.
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "robust/mod.rs"]
mod robust;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use devidp::idp::{DevIdp, DevIdpOptions};
use robust::*;
use serde_json::json;
use tokio::sync::watch;

fn main() -> std::process::ExitCode {
    run_driver("soak", soak())
}

#[derive(Default)]
struct Churn {
    sign_outs: AtomicU64,
    logins: AtomicU64,
    failures: AtomicU64,
}

async fn soak() -> Result<bool, String> {
    let a = args();
    let bin = PathBuf::from(a.get("authgate").ok_or("--authgate is required")?);
    let dir = PathBuf::from(a.get("dir").ok_or("--dir is required")?);
    let seconds: u64 = arg(&a, "seconds", 600);
    let sessions: usize = arg(&a, "sessions", 1000);
    let access_ttl: u64 = arg(&a, "access-ttl", 45);
    let connections: usize = arg(&a, "connections", 64);
    let gateway_cpu: String = arg(&a, "gateway-cpu", "0".to_owned());
    let sat_seconds: u64 = arg(&a, "sat-seconds", 15);
    let fraction: f64 = arg(&a, "fraction", 0.8);
    let tunnels: usize = arg(&a, "tunnels", 4);
    let streams: usize = arg(&a, "streams", 2);
    let churn_per_s: f64 = arg(&a, "churn", 2.0);
    let warmup: u64 = arg(&a, "warmup", 120).min(seconds / 3);
    let sample_every: u64 = arg(&a, "sample", 10);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;

    let idp_listener = bind().await.map_err(|e| e.to_string())?;
    let idp = DevIdp::start(
        idp_listener,
        DevIdpOptions {
            client_id: CLIENT_ID.into(),
            client_secret: Some(CLIENT_SECRET.into()),
            access_ttl: Duration::from_secs(access_ttl),
            rotate_refresh_tokens: true,
            banner: None,
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    let upstream = Upstream::start().await.map_err(|e| e.to_string())?;
    let port = free_port().map_err(|e| e.to_string())?;
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        gateway_toml(
            port,
            upstream.addr,
            &idp.issuer(),
            "refresh_before_expiry = \"10s\"",
            "",
        ),
    )
    .map_err(|e| e.to_string())?;
    let gateway = GatewayProc::spawn(
        &bin,
        &config,
        &dir.join("authgate.log"),
        port,
        Some(gateway_cpu.clone()),
        Some(1),
    )
    .map_err(|e| e.to_string())?;
    gateway.wait_ready(Duration::from_secs(20)).await?;
    let pid = gateway.pid().ok_or("no gateway pid")?;
    let version = std::process::Command::new(&bin)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    emit(&json!({
        "phase": "machine", "authgate": version, "driver_cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "load_before": load_avg(), "seconds": seconds, "sessions": sessions, "access_ttl_s": access_ttl,
        "refresh_before_expiry_s": 10, "connections": connections, "gateway_cpu": gateway_cpu,
        "gateway_worker_threads": 1, "tunnels": tunnels, "streams": streams, "churn_per_s": churn_per_s,
        "anonymous_share": 0.05, "sample_s": sample_every, "warmup_s": warmup,
    }));

    let pinned = tunnels + streams;
    let slots = Slots::new(sessions, pinned, "user");
    let started = Instant::now();
    // Logged in over one refresh period, so that the refreshes are spread over time.
    let spread = Duration::from_secs(access_ttl.saturating_sub(10).max(1));
    slots
        .login_all(std::slice::from_ref(&gateway.url), 8, spread)
        .await?;
    note(&format!(
        "{sessions} sessions logged in in {:.1} s",
        started.elapsed().as_secs_f64()
    ));

    let (stop_tx, stop) = watch::channel(false);
    let long = Arc::new(LongLived::default());
    let mut background = Vec::new();
    for t in 0..tunnels {
        background.push(tokio::spawn(tunnel_task(
            gateway.addr,
            slots.clone(),
            t,
            long.clone(),
            stop.clone(),
        )));
    }
    for s in 0..streams {
        background.push(tokio::spawn(streaming_task(
            gateway.url.clone(),
            slots.clone(),
            tunnels + s,
            long.clone(),
            stop.clone(),
        )));
    }

    // --- saturation: closed loop, the same mix
    let recorder = Arc::new(Recorder::default());
    let spec = LoadSpec {
        targets: vec![gateway.addr],
        rate: None,
        connections,
        anonymous_every: 20,
    };
    let (sat_stop_tx, sat_stop) = watch::channel(false);
    let sat = tokio::spawn(run_load(
        spec.clone(),
        slots.clone(),
        recorder.clone(),
        sat_stop,
    ));
    tokio::time::sleep(Duration::from_secs(3)).await; // warm-up: connections, pools
    recorder.take();
    let t0 = Instant::now();
    let c0 = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(sat_seconds)).await;
    let mut interval = recorder.take();
    let elapsed = t0.elapsed().as_secs_f64();
    let c1 = cpu_ticks(pid);
    sat_stop_tx.send_replace(true);
    let _ = sat.await;
    interval.latencies_us.sort_unstable();
    let sat_rps = interval.total() as f64 / elapsed;
    emit(&json!({
        "phase": "saturation", "rps": (sat_rps * 10.0).round() / 10.0, "requests": interval.total(),
        "seconds": elapsed, "connections": connections, "counts": interval.counts_json(),
        "p50_us": percentile(&interval.latencies_us, 50.0), "p99_us": percentile(&interval.latencies_us, 99.0),
        "gateway_cpu_share": (c1 - c0) as f64 / 100.0 / elapsed, "load": load_avg(),
    }));
    let rate = (sat_rps * fraction).round().max(1.0);
    note(&format!(
        "saturation {sat_rps:.0} req/s; soak at {rate} req/s for {seconds} s"
    ));

    // --- the soak
    recorder.take();
    let soak_spec = LoadSpec {
        rate: Some(rate),
        ..spec
    };
    let load = tokio::spawn(run_load(
        soak_spec,
        slots.clone(),
        recorder.clone(),
        stop.clone(),
    ));
    let churn = Arc::new(Churn::default());
    background.push(tokio::spawn(churn_task(
        gateway.url.clone(),
        slots.clone(),
        churn_per_s,
        churn.clone(),
        stop.clone(),
    )));
    let http = http_client();
    let soak_start = Instant::now();
    let mut samples: Vec<serde_json::Value> = Vec::new();
    let mut total = Interval::default();
    let mut first_minute = Interval::default();
    let mut minutes: Vec<Interval> = Vec::new(); // the last minute's intervals
    let mut refresh_before = idp.controls().refresh_calls();
    let mut churn_before = (0, 0);
    let per_minute = (60 / sample_every).max(1) as usize;
    let mut k = 0u64;
    while soak_start.elapsed() < Duration::from_secs(seconds) {
        k += 1;
        let due = soak_start + Duration::from_secs(k * sample_every);
        tokio::time::sleep_until(due.into()).await;
        let mut iv = recorder.take();
        let metrics = scrape(&http, &gateway.url).await;
        iv.latencies_us.sort_unstable();
        let refreshes = idp.controls().refresh_calls();
        let (so, li) = (
            churn.sign_outs.load(Ordering::Relaxed),
            churn.logins.load(Ordering::Relaxed),
        );
        let t = soak_start.elapsed().as_secs_f64();
        let sample = json!({
            "phase": "sample", "t_s": (t * 10.0).round() / 10.0,
            "rss_kib": rss_kib(pid), "fds": open_fds(pid),
            "upstream_conns": established_to(upstream.addr.port()),
            "upstream_conns_metric": metric(&metrics, "authgate_upstream_connections"),
            "client_conns_metric": metric(&metrics, "authgate_client_connections"),
            "sessions_live": metric(&metrics, "authgate_sessions_live"),
            "rps": (iv.total() as f64 / sample_every as f64).round(),
            "p50_us": percentile(&iv.latencies_us, 50.0), "p99_us": percentile(&iv.latencies_us, 99.0),
            "max_us": iv.latencies_us.last().copied().unwrap_or(0),
            "counts": iv.counts_json(), "refreshes": refreshes - refresh_before,
            "sign_outs": so - churn_before.0, "logins": li - churn_before.1,
            "tunnel_echoes": long.tunnel_echoes.load(Ordering::Relaxed),
            "uploads_ok": long.uploads_ok.load(Ordering::Relaxed),
            "downloads_ok": long.downloads_ok.load(Ordering::Relaxed),
            "load": load_avg(),
        });
        emit(&sample);
        samples.push(sample);
        refresh_before = refreshes;
        churn_before = (so, li);
        total.merge(&iv);
        if (k as usize) <= per_minute {
            first_minute.merge(&iv);
        }
        minutes.push(iv);
        if minutes.len() > per_minute {
            minutes.remove(0);
        }
    }
    stop_tx.send_replace(true);
    let _ = load.await;
    for t in background {
        t.abort();
    }

    // --- verdict
    let after: Vec<&serde_json::Value> = samples
        .iter()
        .filter(|s| s["t_s"].as_f64().unwrap_or(0.0) >= warmup as f64)
        .collect();
    let xs: Vec<f64> = after
        .iter()
        .map(|s| s["t_s"].as_f64().unwrap_or(0.0) / 60.0)
        .collect();
    let series = |name: &str| -> Vec<f64> {
        after
            .iter()
            .map(|s| s[name].as_f64().unwrap_or(0.0))
            .collect()
    };
    let rss = series("rss_kib");
    let fds = series("fds");
    let rss_slope = slope(&xs, &rss); // KiB per minute
    let fd_slope = slope(&xs, &fds);
    let span_min = xs.last().unwrap_or(&0.0) - xs.first().unwrap_or(&0.0);
    let rss_mean = rss.iter().sum::<f64>() / rss.len().max(1) as f64;
    let mut last_minute = Interval::default();
    for iv in &minutes {
        last_minute.merge(iv);
    }
    first_minute.latencies_us.sort_unstable();
    last_minute.latencies_us.sort_unstable();
    let p99_first = percentile(&first_minute.latencies_us, 99.0);
    let p99_last = percentile(&last_minute.latencies_us, 99.0);
    let errors: u64 = [
        Class::Logout,
        Class::S502,
        Class::S503,
        Class::S504,
        Class::Other5xx,
        Class::OtherStatus,
        Class::ConnError,
        Class::Timeout,
    ]
    .iter()
    .map(|c| total.count(*c))
    .sum();
    let long_failures = long.tunnel_failures.load(Ordering::Relaxed)
        + long.stream_failures.load(Ordering::Relaxed)
        + churn.failures.load(Ordering::Relaxed);
    // Flat: what the fitted slope adds over the measured span stays under 5 % of the mean
    // RSS (and under 8 MiB), and under 5 descriptors.
    let rss_growth = rss_slope * span_min;
    let rss_flat = rss_growth < (rss_mean * 0.05).min(8192.0);
    let fd_flat = fd_slope * span_min < 5.0;
    // Stable: the last minute's p99 at most twice the first minute's, or within 1 ms of it.
    let p99_stable =
        f64::from(p99_last) <= (2.0 * f64::from(p99_first)).max(f64::from(p99_first) + 1000.0);
    let pass = errors == 0 && long_failures == 0 && rss_flat && fd_flat && p99_stable;
    emit(&json!({
        "phase": "summary", "saturation_rps": (sat_rps * 10.0).round() / 10.0, "rate": rate,
        "seconds": soak_start.elapsed().as_secs_f64().round(), "requests": total.total(),
        "counts": total.counts_json(), "errors": errors,
        "first_other_status": total.first_other_status,
        "tunnels_opened": long.tunnels_opened.load(Ordering::Relaxed),
        "tunnel_echoes": long.tunnel_echoes.load(Ordering::Relaxed),
        "tunnel_failures": long.tunnel_failures.load(Ordering::Relaxed),
        "uploads_ok": long.uploads_ok.load(Ordering::Relaxed),
        "downloads_ok": long.downloads_ok.load(Ordering::Relaxed),
        "stream_failures": long.stream_failures.load(Ordering::Relaxed),
        "sign_outs": churn.sign_outs.load(Ordering::Relaxed), "logins": churn.logins.load(Ordering::Relaxed),
        "churn_failures": churn.failures.load(Ordering::Relaxed),
        "refreshes": idp.controls().refresh_calls(),
        "warmup_s": warmup, "rss_slope_kib_per_min": (rss_slope * 10.0).round() / 10.0,
        "rss_mean_kib": rss_mean.round(), "rss_growth_kib_over_span": rss_growth.round(),
        "fd_slope_per_min": (fd_slope * 100.0).round() / 100.0, "span_min": span_min,
        "p99_first_minute_us": p99_first, "p99_last_minute_us": p99_last,
        "p50_first_minute_us": percentile(&first_minute.latencies_us, 50.0),
        "p50_last_minute_us": percentile(&last_minute.latencies_us, 50.0),
        "rss_flat": rss_flat, "fd_flat": fd_flat, "p99_stable": p99_stable, "pass": pass,
        "load_after": load_avg(),
    }));
    drop(gateway);
    Ok(pass)
}

/// `per_s` times a second: a random unpinned session signs out, and its user logs in again.
async fn churn_task(
    gateway: String,
    slots: Arc<Slots>,
    per_s: f64,
    churn: Arc<Churn>,
    stop: watch::Receiver<bool>,
) {
    if per_s <= 0.0 {
        return;
    }
    let http = http_client();
    let pinned = slots.slots.iter().filter(|s| s.pinned).count();
    let free = slots.slots.len() - pinned;
    let period = Duration::from_secs_f64(1.0 / per_s);
    let mut next = Instant::now();
    while !*stop.borrow() && free > 0 {
        next += period;
        tokio::time::sleep_until(next.into()).await;
        let i = pinned + (rand::random::<u64>() as usize) % free;
        let Some((cookie, _)) = slots.cookie(i) else {
            continue;
        };
        slots.set_cookie(i, None);
        if sign_out(&http, &gateway, &cookie).await {
            churn.sign_outs.fetch_add(1, Ordering::Relaxed);
        } else {
            churn.failures.fetch_add(1, Ordering::Relaxed);
        }
        match login(&http, &gateway, &slots.slots[i].user).await {
            Ok(cookie) => {
                churn.logins.fetch_add(1, Ordering::Relaxed);
                slots.set_cookie(i, Some(cookie));
            }
            Err(e) => {
                note(&format!("churn login failed: {e}"));
                churn.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
