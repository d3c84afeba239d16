//! The fault run (issue 14): steady load over live sessions while faults are injected in
//! turn, each for `--window` seconds, counting per fault the sessions lost, the logouts that
//! should not have happened, the 5xx answers other than 502/503/504, and the time until
//! every session works again.
//!
//! ```text
//! faults --authgate target/release/authgate --dir OUT [--sessions 300] [--rate 300]
//!        [--window 20] [--access-ttl 20] [--observe 90] [--only name,name]
//! ```
//!
//! Sessions: `--sessions` users logged in through the code flow, `--access-ttl` s access
//! tokens refreshed 5 s before expiry with rotating refresh tokens (each grant spends the
//! previous refresh token, as Logto does), so every session needs a refresh inside every
//! window. Load: `--rate` requests a second, one in 20 without a session, the others
//! cycling through the sessions (each one about once a second). A login is attempted every
//! 2 s during each window too. Nothing in this program ends a session: a session request
//! answered 302/401 is a logout the user did not ask for while their grant was good.
//!
//! Faults (in order): `none` (the control), `token_500`, `token_hang`, `token_close`,
//! `jwks_down` (the JWKS answers 503 and the provider starts signing with a new key, so every
//! ID token from then on needs a JWKS fetch), `upstream_reset`, `gateway_sigterm` (SIGTERM,
//! down for the window, started again; memory store with `snapshot_file`), then with
//! `store = "redis"` and two replicas sharing the load: `redis_kill` (SIGKILL, down for the
//! window, started again on its append-only file).
//!
//! Prints one JSON line per fault and a `summary`.
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "robust/mod.rs"]
mod robust;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use devidp::idp::{DevIdp, DevIdpOptions, TokenFault};
use robust::*;
use serde_json::json;
use tokio::sync::watch;

/// The refresh backoff's cap (README, "Refresh failures": 1 s doubling up to 30 s).
const BACKOFF_CAP_S: f64 = 30.0;

fn main() -> std::process::ExitCode {
    run_driver("fault run", faults())
}

struct Run {
    idp: Arc<DevIdp>,
    upstream: Arc<Upstream>,
    window: Duration,
    observe: Duration,
    rows: Vec<serde_json::Value>,
}

/// One phase's moving parts: its gateways, its sessions and the load over them.
struct Phase {
    gateways: Vec<GatewayProc>,
    slots: Arc<Slots>,
    recorder: Arc<Recorder>,
    stop: watch::Sender<bool>,
    load: tokio::task::JoinHandle<()>,
}

async fn faults() -> Result<bool, String> {
    let a = args();
    let bin = PathBuf::from(a.get("authgate").ok_or("--authgate is required")?);
    let dir = PathBuf::from(a.get("dir").ok_or("--dir is required")?);
    let sessions: usize = arg(&a, "sessions", 300);
    let rate: f64 = arg(&a, "rate", 300.0);
    let window = Duration::from_secs(arg(&a, "window", 20));
    let access_ttl: u64 = arg(&a, "access-ttl", 20);
    let observe = Duration::from_secs(arg(&a, "observe", 90));
    let only: Option<Vec<String>> = a
        .get("only")
        .map(|s| s.split(',').map(str::to_owned).collect());
    let wanted = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|n| n == name));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;

    let idp = DevIdp::start(
        bind().await.map_err(|e| e.to_string())?,
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
    let version = std::process::Command::new(&bin)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    emit(&json!({
        "phase": "machine", "authgate": version, "load_before": load_avg(), "sessions": sessions,
        "rate": rate, "window_s": window.as_secs(), "access_ttl_s": access_ttl,
        "refresh_before_expiry_s": 5, "rotation": true, "backoff_cap_s": BACKOFF_CAP_S,
        "oidc_timeout_s": 10, "redis": redis_version(),
    }));
    let mut run = Run {
        idp: idp.clone(),
        upstream: upstream.clone(),
        window,
        observe,
        rows: Vec::new(),
    };
    let spread = Duration::from_secs(access_ttl.saturating_sub(5).max(1));

    // --- memory store with a snapshot file, one gateway
    let memory_faults = [
        "none",
        "token_500",
        "token_hang",
        "token_close",
        "jwks_down",
        "upstream_reset",
        "gateway_sigterm",
    ];
    if memory_faults.iter().any(|f| wanted(f)) {
        let port = free_port().map_err(|e| e.to_string())?;
        let config = dir.join("gateway-memory.toml");
        let snapshot = dir.join("sessions.snapshot");
        std::fs::write(
            &config,
            gateway_toml(
                port,
                upstream.addr,
                &idp.issuer(),
                &format!(
                    "refresh_before_expiry = \"5s\"\nsnapshot_file = \"{}\"",
                    snapshot.display()
                ),
                "",
            ),
        )
        .map_err(|e| e.to_string())?;
        let gw = GatewayProc::spawn(
            &bin,
            &config,
            &dir.join("authgate-memory.log"),
            port,
            None,
            None,
        )
        .map_err(|e| e.to_string())?;
        gw.wait_ready(Duration::from_secs(20)).await?;
        let mut phase = start_phase(vec![gw], sessions, "user", rate, spread).await?;
        for name in memory_faults {
            if wanted(name) {
                run.fault(name, &mut phase, None).await?;
            }
        }
        phase.stop.send_replace(true);
        let _ = phase.load.await;
    }

    // --- Redis store, two replicas sharing the load
    if wanted("redis_kill") {
        let redis_dir = dir.join("redis");
        let _ = std::fs::remove_dir_all(&redis_dir);
        std::fs::create_dir_all(&redis_dir).map_err(|e| e.to_string())?;
        let mut redis = RedisProc::spawn(free_port().map_err(|e| e.to_string())?, &redis_dir)
            .map_err(|e| e.to_string())?;
        redis.wait_up(Duration::from_secs(10)).await?;
        let mut gateways = Vec::new();
        for replica in ["a", "b"] {
            let port = free_port().map_err(|e| e.to_string())?;
            let config = dir.join(format!("gateway-redis-{replica}.toml"));
            std::fs::write(
                &config,
                gateway_toml(
                    port,
                    upstream.addr,
                    &idp.issuer(),
                    &format!(
                        "refresh_before_expiry = \"5s\"\nstore = \"redis\"\nredis_url = \"redis://127.0.0.1:{}\"",
                        redis.port
                    ),
                    "",
                ),
            )
            .map_err(|e| e.to_string())?;
            let gw = GatewayProc::spawn(
                &bin,
                &config,
                &dir.join(format!("authgate-redis-{replica}.log")),
                port,
                None,
                None,
            )
            .map_err(|e| e.to_string())?;
            gw.wait_ready(Duration::from_secs(20)).await?;
            gateways.push(gw);
        }
        let mut phase = start_phase(gateways, sessions, "r-user", rate, spread).await?;
        run.fault("redis_kill", &mut phase, Some(&mut redis))
            .await?;
        phase.stop.send_replace(true);
        let _ = phase.load.await;
    }

    let pass = run.rows.iter().all(|r| r["pass"].as_bool() == Some(true));
    emit(&json!({
        "phase": "summary", "faults": run.rows.len(), "pass": pass, "load_after": load_avg(),
        "refresh_calls": idp.controls().refresh_calls(), "code_calls": idp.controls().code_calls(),
    }));
    Ok(pass)
}

fn redis_version() -> String {
    std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

async fn start_phase(
    gateways: Vec<GatewayProc>,
    sessions: usize,
    prefix: &str,
    rate: f64,
    spread: Duration,
) -> Result<Phase, String> {
    let urls: Vec<String> = gateways.iter().map(|g| g.url.clone()).collect();
    let slots = Slots::new(sessions, 0, prefix);
    let started = Instant::now();
    slots.login_all(&urls, 8, spread).await?;
    note(&format!(
        "{sessions} sessions logged in through {} gateway(s) in {:.1} s",
        urls.len(),
        started.elapsed().as_secs_f64()
    ));
    let recorder = Arc::new(Recorder::default());
    let (stop, stop_rx) = watch::channel(false);
    let spec = LoadSpec {
        targets: gateways.iter().map(|g| g.addr).collect(),
        rate: Some(rate),
        connections: 32,
        anonymous_every: 20,
    };
    let load = tokio::spawn(run_load(spec, slots.clone(), recorder.clone(), stop_rx));
    // Settle: every session used once at least before the first window.
    tokio::time::sleep(Duration::from_secs(5)).await;
    Ok(Phase {
        gateways,
        slots,
        recorder,
        stop,
        load,
    })
}

/// `authgate_refresh_total` by outcome (ok, transient, rejected), summed over the phase's
/// gateways. A gateway restarted during the fault starts from 0 again: its counts before
/// the restart are lost, so the row shows the ones after it.
async fn refresh_outcomes(phase: &Phase) -> [i64; 3] {
    let http = http_client();
    let mut out = [0i64; 3];
    for gw in &phase.gateways {
        let text = scrape(&http, &gw.url).await;
        for (i, outcome) in ["ok", "transient", "rejected"].iter().enumerate() {
            out[i] += metric_exact(
                &text,
                &format!("authgate_refresh_total{{outcome=\"{outcome}\"}}"),
            ) as i64;
        }
    }
    out
}

/// Logins attempted while a fault is on, and after.
#[derive(Default)]
struct Logins {
    ok: AtomicU64,
    failed: AtomicU64,
    /// How the failed ones failed (the step and the status).
    reasons: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

/// Tries a login through `gateway` every 2 s until `stop`.
async fn login_prober(
    gateway: String,
    prefix: String,
    logins: Arc<Logins>,
    stop: watch::Receiver<bool>,
) {
    let http = http_client();
    let mut n = 0u64;
    while !*stop.borrow() {
        n += 1;
        match tokio::time::timeout(
            REQUEST_TIMEOUT,
            login(&http, &gateway, &format!("{prefix}-{n}")),
        )
        .await
        {
            Ok(Ok(cookie)) => {
                logins.ok.fetch_add(1, Ordering::Relaxed);
                let _ = sign_out(&http, &gateway, &cookie).await;
            }
            failed => {
                logins.failed.fetch_add(1, Ordering::Relaxed);
                let reason = match failed {
                    Ok(Err(e)) => e.chars().take(60).collect(),
                    _ => "timeout".to_owned(),
                };
                *lock(&logins.reasons).entry(reason).or_default() += 1;
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

impl Run {
    async fn inject(
        &self,
        name: &str,
        phase: &mut Phase,
        redis: &mut Option<&mut RedisProc>,
    ) -> Result<serde_json::Value, String> {
        let c = self.idp.controls();
        Ok(match name {
            "none" => json!(null),
            "token_500" => {
                c.set_token_fault(Some(TokenFault::Status(500, "internal error".into())));
                json!(null)
            }
            "token_hang" => {
                c.set_token_fault(Some(TokenFault::Hang));
                json!(null)
            }
            "token_close" => {
                c.set_token_fault(Some(TokenFault::Close));
                json!(null)
            }
            "jwks_down" => {
                c.set_jwks_unavailable(true);
                c.rotate_signing_key();
                json!(null)
            }
            "upstream_reset" => {
                self.upstream.set_resetting(true);
                json!(null)
            }
            "gateway_sigterm" => {
                let gw = phase.gateways.first_mut().ok_or("no gateway")?;
                let t = Instant::now();
                let code = gw.terminate(Duration::from_secs(15)).await;
                json!({"exit_code": code, "exit_after_s": t.elapsed().as_secs_f64()})
            }
            "redis_kill" => {
                if let Some(r) = redis.as_mut() {
                    r.kill9();
                }
                json!(null)
            }
            other => return Err(format!("unknown fault {other}")),
        })
    }

    async fn clear(
        &self,
        name: &str,
        phase: &mut Phase,
        redis: &mut Option<&mut RedisProc>,
    ) -> Result<serde_json::Value, String> {
        let c = self.idp.controls();
        Ok(match name {
            "token_500" | "token_hang" | "token_close" => {
                c.set_token_fault(None);
                json!(null)
            }
            "jwks_down" => {
                c.set_jwks_unavailable(false);
                json!(null)
            }
            "upstream_reset" => {
                self.upstream.set_resetting(false);
                json!(null)
            }
            "gateway_sigterm" => {
                let gw = phase.gateways.first_mut().ok_or("no gateway")?;
                let t = Instant::now();
                gw.start().map_err(|e| e.to_string())?;
                gw.wait_ready(Duration::from_secs(30)).await?;
                json!({"ready_after_start_s": t.elapsed().as_secs_f64()})
            }
            "redis_kill" => {
                let t = Instant::now();
                if let Some(r) = redis.as_mut() {
                    r.start().map_err(|e| e.to_string())?;
                    r.wait_up(Duration::from_secs(30)).await?;
                }
                json!({"redis_up_after_start_s": t.elapsed().as_secs_f64()})
            }
            _ => json!(null),
        })
    }

    /// One fault: inject, hold for the window, clear, then watch until every session
    /// answered 200 again (or `observe` passed). Emits and keeps its row; logs the lost
    /// sessions in again so that the next fault starts whole.
    async fn fault(
        &mut self,
        name: &str,
        phase: &mut Phase,
        mut redis: Option<&mut RedisProc>,
    ) -> Result<(), String> {
        note(&format!("fault {name}: on"));
        let slots = phase.slots.clone();
        let refresh0 = self.idp.controls().refresh_calls();
        let outcomes0 = refresh_outcomes(phase).await;
        let resets0 = self.upstream.resets.load(Ordering::Relaxed);
        phase.recorder.take();
        let logins = Arc::new(Logins::default());
        let (probe_stop, probe_rx) = watch::channel(false);
        let prober = tokio::spawn(login_prober(
            phase.gateways[0].url.clone(),
            format!("probe-{name}"),
            logins.clone(),
            probe_rx,
        ));
        let t_on = Instant::now();
        let injected = self.inject(name, phase, &mut redis).await?;
        tokio::time::sleep_until((t_on + self.window).into()).await;
        let during = phase.recorder.take();
        let logins_during = (
            logins.ok.swap(0, Ordering::Relaxed),
            logins.failed.swap(0, Ordering::Relaxed),
        );
        let cleared = self.clear(name, phase, &mut redis).await?;
        let t_off_ms = slots.ms();
        slots.mark();
        note(&format!("fault {name}: off"));
        let t_off = Instant::now();
        let (mut ok, mut live, mut latest) = slots.recovered();
        while t_off.elapsed() < self.observe {
            tokio::time::sleep(Duration::from_millis(200)).await;
            (ok, live, latest) = slots.recovered();
            if ok == live {
                break;
            }
        }
        // a little more traffic after the recovery, counted with the fault
        tokio::time::sleep(Duration::from_secs(2)).await;
        probe_stop.send_replace(true);
        let _ = prober.await;
        let outcomes1 = refresh_outcomes(phase).await;
        let mut total = phase.recorder.take();
        total.merge(&during);
        let lost = slots.logged_out();
        let recovered = ok == live;
        let recovery_s = recovered.then(|| latest.saturating_sub(t_off_ms) as f64 / 1000.0);
        let expected_down = matches!(name, "gateway_sigterm");
        let unexpected = total.count(Class::Other5xx)
            + total.count(Class::OtherStatus)
            + total.count(Class::Timeout)
            + if expected_down {
                0
            } else {
                total.count(Class::ConnError)
            };
        let within_cap = recovery_s.is_some_and(|r| r <= BACKOFF_CAP_S);
        let pass =
            lost.is_empty() && total.count(Class::Logout) == 0 && unexpected == 0 && within_cap;
        let row = json!({
            "phase": "fault", "fault": name, "window_s": self.window.as_secs(),
            "requests": total.total(), "counts": total.counts_json(),
            "during_window": during.counts_json(),
            "sessions": live + lost.len(), "sessions_lost": lost.len(),
            "spurious_logouts": total.count(Class::Logout),
            "s502": total.count(Class::S502), "s503": total.count(Class::S503), "s504": total.count(Class::S504),
            "other_5xx": total.count(Class::Other5xx), "first_other_status": total.first_other_status,
            "conn_errors": total.count(Class::ConnError), "timeouts": total.count(Class::Timeout),
            "unexpected": unexpected, "recovered": recovered, "recovered_sessions": ok,
            "recovery_s": recovery_s, "backoff_cap_s": BACKOFF_CAP_S, "within_cap": within_cap,
            "refresh_calls": self.idp.controls().refresh_calls() - refresh0,
            "gateway_refreshes": {
                "ok": outcomes1[0] - outcomes0[0], "transient": outcomes1[1] - outcomes0[1],
                "rejected": outcomes1[2] - outcomes0[2],
            },
            "upstream_resets": self.upstream.resets.load(Ordering::Relaxed) - resets0,
            "logins_during": {"ok": logins_during.0, "failed": logins_during.1},
            "logins_after": {"ok": logins.ok.load(Ordering::Relaxed), "failed": logins.failed.load(Ordering::Relaxed)},
            "login_failures": lock(&logins.reasons).clone(),
            "injected": injected, "cleared": cleared, "pass": pass, "load": load_avg(),
        });
        emit(&row);
        self.rows.push(row);
        // Whatever was lost is logged in again: the next fault starts with every session.
        let http = http_client();
        for i in lost {
            let gw = &phase.gateways[i % phase.gateways.len()].url;
            let cookie = login(&http, gw, &slots.slots[i].user).await?;
            slots.set_cookie(i, Some(cookie));
        }
        Ok(())
    }
}
